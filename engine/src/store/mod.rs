//! The durable store: one redb file holding hosts, their sealed secrets, inventories and
//! timelines.
//!
//! Writes go through a single writer ([`writer`]) that commits many hosts' changes in one
//! transaction — a group commit — so that a thousand transitions cost one fsync, not a
//! thousand. Every commit enables redb's quick-repair (which implies a two-phase commit), so
//! reopening after a crash is instant and never trusts a torn commit slot. Reads run in
//! their own read transactions, beside the writer.

mod schema;
pub mod seal;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use rivet_model::HardwareDetails;

use crate::lifecycle::{Host, HostId, TimelineEntry};
use crate::secrets::HostSecrets;
pub use schema::CURRENT as SCHEMA_VERSION;
use schema::{
    HARDWARE, HARDWARE_V1, HOST_V1, HOSTS, KEY_CHECK, KEY_CHECK_CONTEXT, KEY_CHECK_PLAINTEXT, META,
    SECRETS, TIMELINE, TIMELINE_V1,
};
pub use seal::{KeyError, Sealer};

/// A store that cannot be opened, read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot open the store {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(transparent)]
    Database(#[from] redb::Error),
    #[error(
        "the store was written by a newer Rivet (schema {found}); this build understands schema {supported} and older"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error(
        "the key file does not match the store: its secrets were sealed with another key \
         (restore the original key file, or start from an empty store)"
    )]
    WrongKey,
    #[error("the store holds a damaged record: {0}")]
    Corrupt(String),
    #[error("cannot encode a record: {0}")]
    Encode(String),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// How many timeline entries each host keeps; older ones are dropped as new ones arrive.
pub const DEFAULT_TIMELINE_LIMIT: u64 = 2000;

/// Everything the engine needs at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    pub hosts: Vec<Host>,
    pub secrets: BTreeMap<HostId, HostSecrets>,
}

/// Changes to commit together.
#[derive(Debug, Default)]
pub struct Batch {
    /// Host records to write.
    pub hosts: BTreeMap<HostId, Host>,
    /// Secrets to write.
    pub secrets: BTreeMap<HostId, HostSecrets>,
    pub hardware: BTreeMap<HostId, Box<HardwareDetails>>,
    pub timeline: Vec<(HostId, TimelineEntry)>,
    /// Hosts to drop with everything that belongs to them.
    pub forget: Vec<HostId>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.secrets.is_empty()
            && self.hardware.is_empty()
            && self.timeline.is_empty()
            && self.forget.is_empty()
    }

    /// Adds `later` to this batch; where both touch a host, `later` wins.
    pub fn absorb(&mut self, later: Batch) {
        for id in &later.forget {
            self.hosts.remove(id);
            self.secrets.remove(id);
            self.hardware.remove(id);
        }
        self.hosts.extend(later.hosts);
        self.secrets.extend(later.secrets);
        self.hardware.extend(later.hardware);
        self.timeline.extend(later.timeline);
        self.forget.extend(later.forget);
    }
}

/// The open store.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    sealer: Arc<Sealer>,
    timeline_limit: u64,
}

impl Store {
    /// Opens (or creates) the store at `path`, checks the key, and migrates the schema.
    pub fn open(path: &Path, sealer: Sealer, cache_bytes: usize) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                path: path.to_owned(),
                source: redb::DatabaseError::Storage(redb::StorageError::Io(err)),
            })?;
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        schema::migrate(&db, schema::CURRENT, schema::MIGRATIONS)?;
        let store = Self {
            db: Arc::new(db),
            sealer: Arc::new(sealer),
            timeline_limit: DEFAULT_TIMELINE_LIMIT,
        };
        store.check_key()?;
        Ok(store)
    }

    /// Keeps at most `limit` timeline entries per host (at least 1).
    pub fn with_timeline_limit(mut self, limit: u64) -> Self {
        self.timeline_limit = limit.max(1);
        self
    }

    /// Proves the key opens this store's secrets, sealing a check value on first use.
    fn check_key(&self) -> Result<(), StoreError> {
        let read = self.db.begin_read().map_err(redb::Error::from)?;
        let meta = read.open_table(META).map_err(redb::Error::from)?;
        if let Some(sealed) = meta.get(KEY_CHECK).map_err(redb::Error::from)? {
            let opened = self
                .sealer
                .open(KEY_CHECK_CONTEXT, sealed.value())
                .map_err(|_| StoreError::WrongKey)?;
            return if opened == KEY_CHECK_PLAINTEXT {
                Ok(())
            } else {
                Err(StoreError::WrongKey)
            };
        }
        drop(meta);
        drop(read);
        let sealed = self.sealer.seal(KEY_CHECK_CONTEXT, KEY_CHECK_PLAINTEXT)?;
        let mut txn = self.db.begin_write().map_err(redb::Error::from)?;
        txn.set_quick_repair(true);
        txn.open_table(META)
            .map_err(redb::Error::from)?
            .insert(KEY_CHECK, sealed.as_slice())
            .map_err(redb::Error::from)?;
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }

    /// Reads every host and its secrets.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let read = self.db.begin_read().map_err(redb::Error::from)?;
        let hosts_table = read.open_table(HOSTS).map_err(redb::Error::from)?;
        let capacity = usize::try_from(hosts_table.len().map_err(redb::Error::from)?).unwrap_or(0);
        let mut hosts = Vec::with_capacity(capacity);
        for entry in hosts_table.iter().map_err(redb::Error::from)? {
            let (key, value) = entry.map_err(redb::Error::from)?;
            let what = format!("host {}", HostId::from_u128(key.value()));
            hosts.push(schema::decode::<Host>(HOST_V1, &what, value.value())?);
        }
        let secrets_table = read.open_table(SECRETS).map_err(redb::Error::from)?;
        let mut secrets = BTreeMap::new();
        for entry in secrets_table.iter().map_err(redb::Error::from)? {
            let (key, value) = entry.map_err(redb::Error::from)?;
            let id = HostId::from_u128(key.value());
            let plain = self
                .sealer
                .open(id.as_u128(), value.value())
                .map_err(|_| StoreError::WrongKey)?;
            let parsed = serde_json::from_slice(&plain)
                .map_err(|err| StoreError::Corrupt(format!("secrets of host {id}: {err}")))?;
            secrets.insert(id, parsed);
        }
        Ok(Loaded { hosts, secrets })
    }

    /// Commits `batch` durably in one transaction.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(redb::Error::from)?;
        txn.set_quick_repair(true);
        {
            let mut hosts = txn.open_table(HOSTS).map_err(redb::Error::from)?;
            for (id, host) in &batch.hosts {
                let bytes = schema::encode(HOST_V1, host)?;
                hosts
                    .insert(id.as_u128(), bytes.as_slice())
                    .map_err(redb::Error::from)?;
            }
            let mut secrets = txn.open_table(SECRETS).map_err(redb::Error::from)?;
            for (id, host_secrets) in &batch.secrets {
                let plain = serde_json::to_vec(host_secrets)
                    .map_err(|err| StoreError::Encode(err.to_string()))?;
                let sealed = self.sealer.seal(id.as_u128(), &plain)?;
                secrets
                    .insert(id.as_u128(), sealed.as_slice())
                    .map_err(redb::Error::from)?;
            }
            let mut hardware = txn.open_table(HARDWARE).map_err(redb::Error::from)?;
            for (id, details) in &batch.hardware {
                let bytes = schema::encode(HARDWARE_V1, details)?;
                hardware
                    .insert(id.as_u128(), bytes.as_slice())
                    .map_err(redb::Error::from)?;
            }
            let mut timeline = txn.open_table(TIMELINE).map_err(redb::Error::from)?;
            for (id, entry) in &batch.timeline {
                let bytes = schema::encode(TIMELINE_V1, entry)?;
                let key = id.as_u128();
                timeline
                    .insert((key, entry.seq), bytes.as_slice())
                    .map_err(redb::Error::from)?;
                // Sequences are contiguous, so dropping one old entry per new one keeps
                // the window at `timeline_limit`.
                if entry.seq > self.timeline_limit {
                    timeline
                        .remove((key, entry.seq - self.timeline_limit))
                        .map_err(redb::Error::from)?;
                }
            }
            for id in &batch.forget {
                let key = id.as_u128();
                hosts.remove(key).map_err(redb::Error::from)?;
                secrets.remove(key).map_err(redb::Error::from)?;
                hardware.remove(key).map_err(redb::Error::from)?;
                timeline
                    .retain_in((key, 0)..=(key, u64::MAX), |_, _| false)
                    .map_err(redb::Error::from)?;
            }
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }

    /// Up to `limit` timeline entries of `id` with a sequence above `after`.
    pub fn timeline(
        &self,
        id: HostId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, StoreError> {
        let read = self.db.begin_read().map_err(redb::Error::from)?;
        let table = read.open_table(TIMELINE).map_err(redb::Error::from)?;
        let key = id.as_u128();
        let mut entries = Vec::new();
        let start = after.saturating_add(1);
        for entry in table
            .range((key, start)..=(key, u64::MAX))
            .map_err(redb::Error::from)?
            .take(limit)
        {
            let (_, value) = entry.map_err(redb::Error::from)?;
            entries.push(schema::decode(
                TIMELINE_V1,
                "timeline entry",
                value.value(),
            )?);
        }
        Ok(entries)
    }

    /// The stored inventory of `id`.
    pub fn hardware(&self, id: HostId) -> Result<Option<HardwareDetails>, StoreError> {
        let read = self.db.begin_read().map_err(redb::Error::from)?;
        let table = read.open_table(HARDWARE).map_err(redb::Error::from)?;
        let Some(value) = table.get(id.as_u128()).map_err(redb::Error::from)? else {
            return Ok(None);
        };
        schema::decode(HARDWARE_V1, "inventory", value.value()).map(Some)
    }
}

#[cfg(test)]
mod tests;
