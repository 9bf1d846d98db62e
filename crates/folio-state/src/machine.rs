//! The write tier's state machine: what it holds in memory, how openraft drives it, and the read
//! handle it gives out. Applying commands is in [`crate::apply`], snapshots in
//! [`crate::snapshot`], reads in [`crate::reader`].
//!
//! Durability: state-machine writes are not synced. The applied log id is written in the same
//! atomic batch as the state it describes, so after a crash the state machine is consistent with
//! some earlier applied id and openraft re-applies the durable log from there. Applying runs off
//! the async worker's queue, like every RocksDB call ([`folio_raft::blocking::in_place`]).

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use folio_core::GroupId;
use folio_raft::codec::decode;
use folio_raft::keys::cf;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, LogId, OptionalSend, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use rocksdb::DB;
use tokio::sync::watch;

use crate::db::{corrupt, StoreError};
use crate::keys::{CF_SM_META, META_APPLIED, META_GROUP, META_MEMBERSHIP};
use crate::state::GroupState;
use crate::{metrics, snapshot, Response, StateReader, TypeConfig};

pub(crate) type SErr = StorageError<u64>;

/// Applied position and group state, kept in memory and written with every applied batch.
#[derive(Clone, Debug, Default)]
pub(crate) struct SmMeta {
    pub(crate) applied: Option<LogId<u64>>,
    pub(crate) membership: StoredMembership<u64, folio_raft::RaftNode>,
    pub(crate) group: GroupState,
}

/// The state machine. Reads for clients go through [`StateReader`], which shares the database.
pub struct StateMachine {
    pub(crate) db: Arc<DB>,
    pub(crate) group_id: GroupId,
    pub(crate) meta: SmMeta,
    pub(crate) snapshots: PathBuf,
    /// Serialises snapshot builds with installs, so a build never stores an older snapshot over
    /// one just installed.
    pub(crate) snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    shared: watch::Sender<Arc<GroupState>>,
    /// Bytes of commands applied since this node started (for byte-based snapshot triggers).
    pub(crate) applied_bytes: Arc<AtomicU64>,
    /// Odd while a snapshot is being installed; readers check it around every read.
    pub(crate) installs: Arc<AtomicU64>,
    /// Raised for each volume whose head an applied batch changed, for its watchers.
    pub(crate) volumes: crate::VolumeSignals,
}

impl StateMachine {
    pub(crate) fn open(
        db: Arc<DB>,
        group_id: GroupId,
        snapshots: PathBuf,
    ) -> Result<Self, StoreError> {
        // A node that restarts behind its persisted snapshot (or in the middle of installing
        // one) first brings its state machine up to it.
        snapshot::recover_at_open(&db, &snapshots)?;
        let meta = load_meta(&db)?;
        metrics::BUFFERED_BYTES.set(meta.group.buffered_bytes as i64);
        let (shared, _) = watch::channel(Arc::new(meta.group.clone()));
        Ok(StateMachine {
            db,
            group_id,
            meta,
            snapshots,
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
            shared,
            applied_bytes: Arc::new(AtomicU64::new(0)),
            installs: Arc::new(AtomicU64::new(0)),
            volumes: crate::VolumeSignals::default(),
        })
    }

    /// A read handle for serving clients.
    pub fn reader(&self) -> StateReader {
        StateReader::new(
            self.db.clone(),
            self.shared.clone(),
            self.applied_bytes.clone(),
            self.installs.clone(),
            self.volumes.clone(),
        )
    }

    /// Shows the group state to readers and metrics after every applied batch. Readers see the
    /// new state at once; waiters on [`StateReader::watch_group`] wake only when the segments
    /// changed (see [`GroupState::segments_differ`]), not on every commit's page bytes.
    pub(crate) fn publish(&self) {
        let g = &self.meta.group;
        metrics::BUFFERED_BYTES.set(g.buffered_bytes as i64);
        metrics::SEALED_SEGMENTS.set(g.sealed.len() as i64);
        self.shared.send_if_modified(|cur| {
            let wake = cur.segments_differ(g);
            *cur = Arc::new(g.clone());
            wake
        });
    }
}

pub(crate) fn load_meta(db: &DB) -> Result<SmMeta, StoreError> {
    let get = |k: &[u8]| db.get_cf(cf(db, CF_SM_META), k);
    let applied = match get(META_APPLIED)? {
        Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
        None => None,
    };
    let membership = match get(META_MEMBERSHIP)? {
        Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
        None => StoredMembership::default(),
    };
    let group = match get(META_GROUP)? {
        Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
        None => GroupState::default(),
    };
    Ok(SmMeta {
        applied,
        membership,
        group,
    })
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = snapshot::Builder;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<u64>>,
            StoredMembership<u64, folio_raft::RaftNode>,
        ),
        SErr,
    > {
        Ok((self.meta.applied, self.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Off the async worker's queue: a large batch, or a checkpoint dropping thousands of
        // index entries, must not hold up the tasks queued behind it (heartbeats among them).
        folio_raft::blocking::in_place(|| self.apply_entries(entries))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        snapshot::Builder {
            db: self.db.clone(),
            dir: self.snapshots.clone(),
            lock: self.snapshot_lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SErr> {
        let path = snapshot::receiving_path(&self.snapshots);
        let f = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(f))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, folio_raft::RaftNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        self.install(meta, snapshot).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let _guard = self.snapshot_lock.lock().await;
        snapshot::current(&self.snapshots)
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}
