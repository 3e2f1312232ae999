use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};
use rivet_model::{Cpu, HardwareDetails};

use super::schema::{self, META, SCHEMA_KEY};
use super::*;
use crate::lifecycle::{BmcSpec, HostSpec, TimelineEvent, Timestamp};
use crate::metrics::Metrics;

fn sealer(byte: u8) -> Sealer {
    Sealer::from_key(&[byte; 32]).unwrap()
}

fn host(n: u8) -> Host {
    let spec = HostSpec::new(
        Some(BmcSpec {
            address: format!("sim://m{n}"),
            disable_certificate_verification: false,
        }),
        None,
    );
    Host::new(
        HostId::from_random([n; 16]),
        format!("h{n}"),
        spec,
        Timestamp::from_millis(5),
    )
}

fn secrets(password: &str) -> HostSecrets {
    HostSecrets {
        bmc_username: "admin".into(),
        bmc_password: password.into(),
        user_data: Some("#cloud-config".into()),
        ..HostSecrets::default()
    }
}

fn entry(seq: u64) -> TimelineEntry {
    TimelineEntry {
        seq,
        at: Timestamp::from_millis(seq),
        event: TimelineEvent::Enrolled,
    }
}

#[test]
fn a_committed_batch_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rivet.redb");
    let (a, b) = (host(1), host(2));
    {
        let store = Store::open(&path, sealer(1), 1 << 20).unwrap();
        let mut batch = Batch::default();
        batch.hosts.insert(a.id, a.clone());
        batch.hosts.insert(b.id, b.clone());
        batch.secrets.insert(a.id, secrets("pw-a-0123456789"));
        let hardware = HardwareDetails {
            cpu: Some(Cpu {
                count: Some(8),
                ..Cpu::default()
            }),
            ..HardwareDetails::default()
        };
        batch.hardware.insert(a.id, Box::new(hardware));
        batch
            .timeline
            .extend([(a.id, entry(1)), (a.id, entry(2)), (b.id, entry(1))]);
        store.commit(&batch).unwrap();
    }
    let store = Store::open(&path, sealer(1), 1 << 20).unwrap();
    let loaded = store.load().unwrap();
    let mut hosts = loaded.hosts;
    hosts.sort_by_key(|h| h.name.clone());
    assert_eq!(hosts, [a.clone(), b.clone()]);
    assert_eq!(loaded.secrets[&a.id], secrets("pw-a-0123456789"));
    assert!(!loaded.secrets.contains_key(&b.id));
    assert_eq!(
        store.hardware(a.id).unwrap().unwrap().cpu.unwrap().count,
        Some(8)
    );
    assert_eq!(store.hardware(b.id).unwrap(), None);
    assert_eq!(store.timeline(a.id, 0, 10).unwrap(), [entry(1), entry(2)]);
    assert_eq!(store.timeline(a.id, 1, 10).unwrap(), [entry(2)]);
    assert_eq!(store.timeline(b.id, 0, 10).unwrap(), [entry(1)]);
    drop(store);
    let file = std::fs::read(&path).unwrap();
    assert!(
        !file.windows(15).any(|w| w == b"pw-a-0123456789"),
        "the password is in the file in clear"
    );
    assert!(
        !file.windows(13).any(|w| w == b"#cloud-config"),
        "user data in clear"
    );
}

#[test]
fn another_key_is_refused_before_anything_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rivet.redb");
    Store::open(&path, sealer(1), 1 << 20).unwrap();
    let err = Store::open(&path, sealer(2), 1 << 20).unwrap_err();
    assert!(matches!(err, StoreError::WrongKey), "{err}");
    assert!(err.to_string().contains("another key"));
}

#[test]
fn a_store_from_a_newer_rivet_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rivet.redb");
    drop(Store::open(&path, sealer(1), 1 << 20).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, 99u32.to_le_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path, sealer(1), 1 << 20).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                supported: SCHEMA_VERSION
            }
        ),
        "{err}"
    );
}

/// A migration for the test: schema 1 → 2 renames every host.
fn rename_hosts(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut table = txn.open_table(schema::HOSTS).map_err(redb::Error::from)?;
    let mut renamed = Vec::new();
    for row in table.iter().map_err(redb::Error::from)? {
        let (key, value) = row.map_err(redb::Error::from)?;
        let mut host: Host = schema::decode(schema::HOST_V1, "host", value.value())?;
        host.name = format!("{}-v2", host.name);
        renamed.push((key.value(), schema::encode(schema::HOST_V1, &host)?));
    }
    for (key, bytes) in renamed {
        table
            .insert(key, bytes.as_slice())
            .map_err(redb::Error::from)?;
    }
    Ok(())
}

#[test]
fn migrations_run_in_order_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rivet.redb");
    let store = Store::open(&path, sealer(1), 1 << 20).unwrap();
    let mut batch = Batch::default();
    batch.hosts.insert(host(1).id, host(1));
    store.commit(&batch).unwrap();
    let db = Arc::try_unwrap(store.db).unwrap();
    schema::migrate(&db, 2, &[rename_hosts]).unwrap();
    assert_eq!(schema::version(&db).unwrap(), Some(2));
    {
        let read = db.begin_read().unwrap();
        let table = read.open_table(schema::HOSTS).unwrap();
        let (_, value) = table.first().unwrap().unwrap();
        let migrated: Host = schema::decode(schema::HOST_V1, "host", value.value()).unwrap();
        assert_eq!(migrated.name, "h1-v2");
    }
    // Already there: nothing runs again.
    schema::migrate(&db, 2, &[rename_hosts]).unwrap();
    // A gap in the history is an error, not a silent skip.
    let err = schema::migrate(&db, 4, &[rename_hosts]).unwrap_err();
    assert!(
        err.to_string().contains("no migration from schema 2 to 3"),
        "{err}"
    );
    assert_eq!(
        schema::version(&db).unwrap(),
        Some(2),
        "a failed migration changes nothing"
    );
}

#[test]
fn damaged_records_are_reported_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rivet.redb");
    drop(Store::open(&path, sealer(1), 1 << 20).unwrap());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(schema::HOSTS)
            .unwrap()
            .insert(7u128, [9u8, b'{'].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path, sealer(1), 1 << 20).unwrap();
    let err = store.load().unwrap_err();
    assert!(err.to_string().contains("unknown record format 9"), "{err}");
}

#[test]
fn timelines_keep_a_window_and_forget_drops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s"), sealer(1), 1 << 20)
        .unwrap()
        .with_timeline_limit(3);
    let a = host(1);
    for seq in 1..=5 {
        let mut batch = Batch::default();
        batch.hosts.insert(a.id, a.clone());
        batch.timeline.push((a.id, entry(seq)));
        store.commit(&batch).unwrap();
    }
    let seqs: Vec<u64> = store
        .timeline(a.id, 0, 100)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let mut batch = Batch::default();
    batch.secrets.insert(a.id, secrets("x"));
    batch.hardware.insert(a.id, Box::default());
    store.commit(&batch).unwrap();
    let batch = Batch {
        forget: vec![a.id],
        ..Batch::default()
    };
    store.commit(&batch).unwrap();
    let loaded = store.load().unwrap();
    assert!(loaded.hosts.is_empty() && loaded.secrets.is_empty());
    assert!(store.timeline(a.id, 0, 100).unwrap().is_empty());
    assert_eq!(store.hardware(a.id).unwrap(), None);
}

#[test]
fn later_batches_win_when_absorbed() {
    let mut first = Batch::default();
    let mut a = host(1);
    first.hosts.insert(a.id, a.clone());
    first.secrets.insert(a.id, secrets("old"));
    let mut second = Batch::default();
    a.name = "renamed".into();
    second.hosts.insert(a.id, a.clone());
    first.absorb(second);
    assert_eq!(first.hosts[&a.id].name, "renamed");
    let forget = Batch {
        forget: vec![a.id],
        ..Batch::default()
    };
    first.absorb(forget);
    assert!(first.hosts.is_empty() && first.secrets.is_empty());
    assert_eq!(first.forget, [a.id]);
}

#[tokio::test]
async fn the_writer_commits_concurrent_batches_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s"), sealer(1), 1 << 20).unwrap();
    let metrics = Arc::new(Metrics::default());
    let writer = writer::Writer::spawn(store.clone(), metrics.clone()).unwrap();
    let receivers: Vec<_> = (0..50u8)
        .map(|n| {
            let mut batch = Batch::default();
            batch.hosts.insert(host(n).id, host(n));
            writer.submit(batch)
        })
        .collect();
    for receiver in receivers {
        receiver.await.unwrap().unwrap();
    }
    assert_eq!(store.load().unwrap().hosts.len(), 50);
    let text = metrics.render(&crate::metrics::Summary::default());
    assert!(text.contains("rivet_committed_hosts_total 50"), "{text}");
}
