//! Durable leases in a redb file, written in group commits.
//!
//! Each commit is one redb write transaction with `Durability::Immediate` and quick-repair
//! (two-phase commit, instant recovery after a crash), holding every lease change that
//! queued up while the previous commit was being synced. One fsync pair thus covers many
//! clients, which is what lets durable leasing keep up with thousands of exchanges per
//! second; each client's ACK leaves only after the commit holding its lease returns.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::leases::{ClientId, Lease, LeaseRecord, LeaseState};

/// Leases by IPv4 address (as a u32). Values are versioned (see [`encode`]).
const LEASES: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("dhcp_leases");

/// The value format's version byte.
const FORMAT_V1: u8 = 1;

/// Why the lease store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the lease database {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("lease database {path}: {source}")]
    Database {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("lease database {path}: the record for {address} is corrupt ({reason})")]
    Corrupt {
        path: PathBuf,
        address: Ipv4Addr,
        reason: &'static str,
    },
}

/// The lease database.
#[derive(Debug)]
pub struct LeaseStore {
    path: PathBuf,
    db: Database,
}

impl LeaseStore {
    /// Opens (or creates) the database and reads every lease in it.
    pub fn open(path: &Path) -> Result<(Self, Vec<LeaseRecord>), StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                path: path.to_owned(),
                source: Box::new(err.into()),
            })?;
        }
        let db = Database::create(path).map_err(|err| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(err.into()),
        })?;
        let store = Self {
            path: path.to_owned(),
            db,
        };
        let records = store.read_all()?;
        Ok((store, records))
    }

    fn db_error(&self, err: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.path.clone(),
            source: Box::new(err.into()),
        }
    }

    fn read_all(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        let read = self.db.begin_read().map_err(|err| self.db_error(err))?;
        let table = match read.open_table(LEASES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(self.db_error(err)),
        };
        let mut records = Vec::new();
        for entry in table.iter().map_err(|err| self.db_error(err))? {
            let (key, value) = entry.map_err(|err| self.db_error(err))?;
            let address = Ipv4Addr::from(key.value());
            let lease = decode(value.value()).map_err(|reason| StoreError::Corrupt {
                path: self.path.clone(),
                address,
                reason,
            })?;
            records.push(LeaseRecord { address, lease });
        }
        Ok(records)
    }

    /// Writes `records` (later ones win) in one durable transaction.
    pub fn commit(&self, records: &[LeaseRecord]) -> Result<(), StoreError> {
        let mut write = self.db.begin_write().map_err(|err| self.db_error(err))?;
        write
            .set_durability(Durability::Immediate)
            .map_err(|err| self.db_error(err))?;
        write.set_quick_repair(true);
        {
            let mut table = write.open_table(LEASES).map_err(|err| self.db_error(err))?;
            let mut value = Vec::with_capacity(64);
            for record in records {
                value.clear();
                encode(&record.lease, &mut value);
                table
                    .insert(u32::from(record.address), value.as_slice())
                    .map_err(|err| self.db_error(err))?;
            }
        }
        write.commit().map_err(|err| self.db_error(err))
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `[version][state][expires: u64 BE][client id length: u8][client id]`.
fn encode(lease: &Lease, out: &mut Vec<u8>) {
    let state = match lease.state {
        // Offers are never persisted, but encode them faithfully if asked to.
        LeaseState::Offered => 0,
        LeaseState::Bound => 1,
        LeaseState::Released => 2,
        LeaseState::Declined => 3,
    };
    out.push(FORMAT_V1);
    out.push(state);
    out.extend_from_slice(&lease.expires.to_be_bytes());
    // Identifiers are at most ClientId::MAX_LEN (255) bytes, or 17 from chaddr.
    let id = lease.client.as_bytes();
    let id = &id[..id.len().min(ClientId::MAX_LEN)];
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(id);
}

fn decode(bytes: &[u8]) -> Result<Lease, &'static str> {
    let (&version, rest) = bytes.split_first().ok_or("empty")?;
    if version != FORMAT_V1 {
        return Err("unknown format version");
    }
    let (&state, rest) = rest.split_first().ok_or("truncated")?;
    let state = match state {
        0 => LeaseState::Offered,
        1 => LeaseState::Bound,
        2 => LeaseState::Released,
        3 => LeaseState::Declined,
        _ => return Err("unknown lease state"),
    };
    let expires: [u8; 8] = rest
        .get(..8)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("truncated")?;
    let (&id_len, id) = rest[8..].split_first().ok_or("truncated")?;
    if id.len() != usize::from(id_len) {
        return Err("client identifier length mismatch");
    }
    Ok(Lease {
        client: ClientId::from_option(id),
        state,
        expires: u64::from_be_bytes(expires),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(last: u8, state: LeaseState, expires: u64) -> LeaseRecord {
        LeaseRecord {
            address: Ipv4Addr::new(10, 0, 0, last),
            lease: Lease {
                client: ClientId::from_hardware(1, &[0x52, 0x54, 0, 0, 0, last]),
                state,
                expires,
            },
        }
    }

    #[test]
    fn committed_leases_are_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/leases.redb");
        {
            let (store, records) = LeaseStore::open(&path).unwrap();
            assert!(records.is_empty());
            store
                .commit(&[
                    record(1, LeaseState::Bound, 100),
                    record(2, LeaseState::Declined, 200),
                ])
                .unwrap();
            // A later record for the same address replaces the earlier one.
            store
                .commit(&[record(1, LeaseState::Released, 150)])
                .unwrap();
        }
        let (_, mut records) = LeaseStore::open(&path).unwrap();
        records.sort_by_key(|record| record.address);
        assert_eq!(
            records,
            [
                record(1, LeaseState::Released, 150),
                record(2, LeaseState::Declined, 200)
            ]
        );
    }

    #[test]
    fn values_round_trip_and_corruption_is_named() {
        let lease = record(9, LeaseState::Bound, u64::MAX).lease;
        let mut bytes = Vec::new();
        encode(&lease, &mut bytes);
        assert_eq!(decode(&bytes).unwrap(), lease);
        assert_eq!(decode(&[]), Err("empty"));
        assert_eq!(decode(&[2]), Err("unknown format version"));
        assert_eq!(decode(&[1, 9]), Err("unknown lease state"));
        assert_eq!(decode(&[1, 1, 0, 0]), Err("truncated"));
        bytes.push(0);
        assert_eq!(decode(&bytes), Err("client identifier length mismatch"));
    }

    #[test]
    fn an_unopenable_path_is_a_clear_error() {
        let err = LeaseStore::open(Path::new("/proc/rivet/leases.redb")).unwrap_err();
        assert!(err.to_string().contains("/proc/rivet/leases.redb"), "{err}");
    }
}
