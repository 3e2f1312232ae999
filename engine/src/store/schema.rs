//! Tables, record encodings and the schema version.
//!
//! Every value starts with a format byte so a record can always be recognised; the store
//! as a whole carries a schema version in the `meta` table. Opening a store runs the
//! migrations from its version to [`CURRENT`] in one transaction, and refuses a store
//! written by a newer Rivet rather than guess.

use redb::{ReadableDatabase, TableDefinition, WriteTransaction};

use super::StoreError;

/// The schema this build writes.
pub const CURRENT: u32 = 1;

pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Host id → `[HOST_V1][JSON of Host]`.
pub(super) const HOSTS: TableDefinition<u128, &[u8]> = TableDefinition::new("hosts");
/// Host id → sealed JSON of `HostSecrets`.
pub(super) const SECRETS: TableDefinition<u128, &[u8]> = TableDefinition::new("secrets");
/// Host id → `[HARDWARE_V1][JSON of HardwareDetails]`.
pub(super) const HARDWARE: TableDefinition<u128, &[u8]> = TableDefinition::new("hardware");
/// (host id, sequence) → `[TIMELINE_V1][JSON of TimelineEntry]`.
pub(super) const TIMELINE: TableDefinition<(u128, u64), &[u8]> = TableDefinition::new("timeline");

pub(super) const HOST_V1: u8 = 1;
pub(super) const HARDWARE_V1: u8 = 1;
pub(super) const TIMELINE_V1: u8 = 1;

pub(super) const SCHEMA_KEY: &str = "schema-version";
/// A value sealed with the store's key, to tell a wrong key file apart from damage.
pub(super) const KEY_CHECK: &str = "key-check";
pub(super) const KEY_CHECK_PLAINTEXT: &[u8] = b"rivet store key check";
pub(super) const KEY_CHECK_CONTEXT: u128 = 0;

/// One step of the schema's history: rewrites a store at `from` into `from + 1`.
pub(super) type Migration = fn(&WriteTransaction) -> Result<(), StoreError>;

/// The migrations of this build, index `i` taking schema `i + 1` to `i + 2`. Schema 1 is
/// the first, so there are none yet; the machinery is exercised by the tests.
pub(super) const MIGRATIONS: &[Migration] = &[];

/// Prefixes `json` with its format byte.
pub(super) fn encode(format: u8, value: &impl serde::Serialize) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![format];
    serde_json::to_writer(&mut bytes, value).map_err(|err| StoreError::Encode(err.to_string()))?;
    Ok(bytes)
}

/// Decodes a record written by [`encode`] with `format`.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    format: u8,
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&found, json)) if found == format => serde_json::from_slice(json)
            .map_err(|err| StoreError::Corrupt(format!("{what}: {err}"))),
        Some((&found, _)) => Err(StoreError::Corrupt(format!(
            "{what}: unknown record format {found}"
        ))),
        None => Err(StoreError::Corrupt(format!("{what}: empty record"))),
    }
}

/// The schema version recorded in the store, `None` for a store never written.
pub(super) fn version(db: &redb::Database) -> Result<Option<u32>, StoreError> {
    let read = db.begin_read().map_err(redb::Error::from)?;
    let meta = match read.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(err) => return Err(redb::Error::from(err).into()),
    };
    let Some(value) = meta.get(SCHEMA_KEY).map_err(redb::Error::from)? else {
        return Ok(None);
    };
    let bytes: [u8; 4] = value
        .value()
        .try_into()
        .map_err(|_| StoreError::Corrupt("schema version is not 4 bytes".into()))?;
    Ok(Some(u32::from_le_bytes(bytes)))
}

/// Brings the store to `target`, running `migrations` from its current version, all in one
/// transaction: a crash midway leaves the old schema intact.
pub(super) fn migrate(
    db: &redb::Database,
    target: u32,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    let found = version(db)?;
    match found {
        Some(found) if found > target => {
            return Err(StoreError::NewerSchema {
                found,
                supported: target,
            });
        }
        Some(found) if found == target => return Ok(()),
        _ => {}
    }
    let mut txn = db.begin_write().map_err(redb::Error::from)?;
    txn.set_quick_repair(true);
    // A store never written starts at the current schema: there is nothing to migrate.
    let start = found.unwrap_or(target);
    for from in start..target {
        let index = usize::try_from(from - 1).unwrap_or(usize::MAX);
        let migration = migrations.get(index).ok_or_else(|| {
            StoreError::Corrupt(format!("no migration from schema {from} to {}", from + 1))
        })?;
        migration(&txn)?;
        tracing::info!(from, to = from + 1, "migrated the store's schema");
    }
    {
        // Create every table so that readers never meet a missing one.
        let mut meta = txn.open_table(META).map_err(redb::Error::from)?;
        meta.insert(SCHEMA_KEY, target.to_le_bytes().as_slice())
            .map_err(redb::Error::from)?;
        txn.open_table(HOSTS).map_err(redb::Error::from)?;
        txn.open_table(SECRETS).map_err(redb::Error::from)?;
        txn.open_table(HARDWARE).map_err(redb::Error::from)?;
        txn.open_table(TIMELINE).map_err(redb::Error::from)?;
    }
    txn.commit().map_err(redb::Error::from)?;
    Ok(())
}
