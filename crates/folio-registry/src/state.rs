//! The registry's state machine: group registrations and volume placements, kept in memory for
//! reads and written through to RocksDB with the applied log id in the same batch (so a restart
//! resumes from a consistent point and openraft re-applies the rest of the durable log).
//! Snapshots are the whole state, MessagePack-encoded, kept in RocksDB.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, RwLock};

use folio_raft::codec::{decode, encode};
use folio_raft::keys::{cf, CF_LOG, CF_RAFT_META};
use folio_raft::{LogStore, RaftNode};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use crate::{RegCommand, RegResponse, RegTypes};

type SErr = StorageError<u64>;

/// Applied position, membership and the current snapshot.
const CF_REG_META: &str = "reg_meta";
/// Group id (big-endian) → group record.
const CF_REG_GROUPS: &str = "reg_groups";
/// Volume id → group id (big-endian), then a flags byte (bit 0: retired) once the volume is
/// deleted; placements written before deletion existed have no flags byte.
const CF_REG_VOLUMES: &str = "reg_volumes";

const META_APPLIED: &[u8] = b"applied";
const META_MEMBERSHIP: &[u8] = b"membership";
const META_SNAPSHOT: &[u8] = b"snapshot";

/// A registered group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub region: String,
    /// (node id, address), sorted by node id.
    pub members: Vec<(u64, String)>,
}

/// Everything the registry knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryState {
    pub groups: BTreeMap<u64, GroupRecord>,
    pub volumes: BTreeMap<[u8; 16], u64>,
    /// Placed volumes that were deleted since (their placement stays, as a tombstone).
    pub retired: BTreeSet<[u8; 16]>,
    /// Live volumes placed on each group (derived from `volumes` and `retired`).
    pub volume_counts: BTreeMap<u64, u64>,
    pub applied: Option<LogId<u64>>,
    pub membership: StoredMembership<u64, RaftNode>,
}

/// The snapshot body: the replicated part of [`RegistryState`].
#[derive(Serialize, Deserialize)]
struct Body {
    applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, RaftNode>,
    groups: Vec<(u64, GroupRecord)>,
    volumes: Vec<([u8; 16], u64)>,
    #[serde(default)]
    retired: Vec<[u8; 16]>,
}

/// A placement's value in RocksDB.
fn placement_value(group: u64, retired: bool) -> Vec<u8> {
    let mut v = group.to_be_bytes().to_vec();
    if retired {
        v.push(1);
    }
    v
}

impl RegistryState {
    /// Applies one command to memory and records the change in `batch`.
    fn apply(&mut self, db: &DB, batch: &mut WriteBatch, cmd: &RegCommand) -> RegResponse {
        let refused = |m: String| RegResponse { refused: Some(m) };
        match cmd {
            RegCommand::RegisterGroup {
                group,
                region,
                members,
            } => {
                if let Some(g) = self.groups.get(group) {
                    if g.region != *region {
                        return refused(format!(
                            "group {group} is registered in region {:?}; a group cannot move to \
                             region {region:?} (its volumes would move with it)",
                            g.region
                        ));
                    }
                }
                let mut members = members.clone();
                members.sort();
                let rec = GroupRecord {
                    region: region.clone(),
                    members,
                };
                batch.put_cf(cf(db, CF_REG_GROUPS), group.to_be_bytes(), encode(&rec));
                self.groups.insert(*group, rec);
                RegResponse::default()
            }
            RegCommand::AssignVolume { volume, group } => {
                if let Some(g) = self.volumes.get(volume) {
                    return refused(format!("the volume is already placed on group {g}"));
                }
                if !self.groups.contains_key(group) {
                    return refused(format!("group {group} is not registered"));
                }
                batch.put_cf(
                    cf(db, CF_REG_VOLUMES),
                    volume,
                    placement_value(*group, false),
                );
                self.volumes.insert(*volume, *group);
                *self.volume_counts.entry(*group).or_default() += 1;
                RegResponse::default()
            }
            RegCommand::RetireVolume { volume } => {
                let Some(&group) = self.volumes.get(volume) else {
                    return refused("the volume is not placed".into());
                };
                if self.retired.insert(*volume) {
                    batch.put_cf(cf(db, CF_REG_VOLUMES), volume, placement_value(group, true));
                    if let Some(n) = self.volume_counts.get_mut(&group) {
                        *n = n.saturating_sub(1);
                    }
                }
                RegResponse::default()
            }
        }
    }

    fn body(&self) -> Body {
        Body {
            applied: self.applied,
            membership: self.membership.clone(),
            groups: self.groups.iter().map(|(k, v)| (*k, v.clone())).collect(),
            volumes: self.volumes.iter().map(|(k, v)| (*k, *v)).collect(),
            retired: self.retired.iter().copied().collect(),
        }
    }

    fn from_body(b: Body) -> RegistryState {
        let mut s = RegistryState {
            groups: b.groups.into_iter().collect(),
            volumes: b.volumes.into_iter().collect(),
            retired: b.retired.into_iter().collect(),
            applied: b.applied,
            membership: b.membership,
            ..Default::default()
        };
        s.recount();
        s
    }

    fn recount(&mut self) {
        self.volume_counts.clear();
        for (v, g) in &self.volumes {
            if !self.retired.contains(v) {
                *self.volume_counts.entry(*g).or_default() += 1;
            }
        }
    }
}

fn publish(s: &RegistryState) {
    crate::metrics::GROUPS.set(s.groups.len() as i64);
    crate::metrics::VOLUMES.set((s.volumes.len() - s.retired.len()) as i64);
}

/// Read access to the registry state for the service.
pub type SharedState = Arc<RwLock<RegistryState>>;

/// The registry's state machine on RocksDB.
pub struct RegistryStore {
    db: Arc<DB>,
    state: SharedState,
    /// Held while a snapshot is built or installed: openraft runs builds in a task of their own,
    /// and a build must not store an older snapshot over one just installed.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Opens (or creates) a registry node's store in `dir`: the Raft log store (the write tier's; its
/// vote in RocksDB at `dir/db`, its entries in `dir/raft-log`) and the registry state machine.
pub fn open(dir: &Path) -> anyhow::Result<(LogStore<RegTypes>, RegistryStore)> {
    std::fs::create_dir_all(dir)?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_total_wal_size(64 << 20);
    let cfs = [
        CF_LOG,
        CF_RAFT_META,
        CF_REG_META,
        CF_REG_GROUPS,
        CF_REG_VOLUMES,
    ]
    .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&opts, dir.join("db"), cfs)?);
    let state = load(&db)?;
    publish(&state);
    // The registry's entries are small: segments of 4 MiB keep its disk footprint small.
    let log = LogStore::open_with(db.clone(), &dir.join("raft-log"), 4 << 20)?;
    Ok((
        log,
        RegistryStore {
            db,
            state: Arc::new(RwLock::new(state)),
            snapshot_lock: Arc::default(),
        },
    ))
}

fn load(db: &DB) -> anyhow::Result<RegistryState> {
    let meta = cf(db, CF_REG_META);
    let mut s = RegistryState {
        applied: match db.get_cf(meta, META_APPLIED)? {
            Some(b) => decode(&b)?,
            None => None,
        },
        membership: match db.get_cf(meta, META_MEMBERSHIP)? {
            Some(b) => decode(&b)?,
            None => StoredMembership::default(),
        },
        ..Default::default()
    };
    for item in db.iterator_cf(cf(db, CF_REG_GROUPS), IteratorMode::Start) {
        let (k, v) = item?;
        let id = u64::from_be_bytes(
            k.as_ref()
                .try_into()
                .map_err(|_| anyhow::anyhow!("bad group key in {CF_REG_GROUPS}"))?,
        );
        s.groups.insert(id, decode(&v)?);
    }
    for item in db.iterator_cf(cf(db, CF_REG_VOLUMES), IteratorMode::Start) {
        let (k, v) = item?;
        let vol: [u8; 16] = k
            .as_ref()
            .try_into()
            .map_err(|_| anyhow::anyhow!("bad volume key in {CF_REG_VOLUMES}"))?;
        let (g, flags) = match v.len() {
            8 => (&v[..], 0),
            9 => (&v[..8], v[8]),
            n => anyhow::bail!("a placement of {n} bytes in {CF_REG_VOLUMES}"),
        };
        let g = u64::from_be_bytes(g.try_into().expect("8 bytes"));
        s.volumes.insert(vol, g);
        if flags & 1 != 0 {
            s.retired.insert(vol);
        }
    }
    s.recount();
    Ok(s)
}

impl RegistryStore {
    /// A handle on the in-memory state, for serving reads.
    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }

    fn write_meta(&self, batch: &mut WriteBatch, s: &RegistryState) {
        let meta = cf(&self.db, CF_REG_META);
        batch.put_cf(meta, META_APPLIED, encode(&s.applied));
        batch.put_cf(meta, META_MEMBERSHIP, encode(&s.membership));
    }
}

/// A snapshot as stored: its metadata and body.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, RaftNode>,
    body: Vec<u8>,
}

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

impl RaftStateMachine<RegTypes> for RegistryStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, RaftNode>), SErr> {
        let s = self.state.read().expect("registry state lock");
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<RegResponse>, SErr>
    where
        I: IntoIterator<Item = Entry<RegTypes>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let mut out = Vec::new();
        // In place, under the write lock (no await while it is held). If the write below fails,
        // memory is ahead of disk (readers may have seen it: nothing is lost, as the log holds
        // every applied entry); openraft treats a storage error as fatal and stops this
        // node, and a restart loads the state from disk again.
        let mut s = self.state.write().expect("registry state lock");
        for entry in entries {
            s.applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => RegResponse::default(),
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(entry.log_id), m);
                    RegResponse::default()
                }
                EntryPayload::Normal(cmd) => s.apply(&self.db, &mut batch, &cmd),
            });
        }
        self.write_meta(&mut batch, &s);
        publish(&s);
        // Readers wait on the lock, so it is not held across the disk write (which may queue
        // behind a synced log append sharing the WAL).
        drop(s);
        folio_raft::blocking::in_place(|| self.db.write(batch))
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            state: self.state.clone(),
            lock: self.snapshot_lock.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, RaftNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let _guard = self.snapshot_lock.lock().await;
        let sig = Some(meta.signature());
        let bytes = snapshot.into_inner();
        let body: Body = decode(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), AnyError::error(e)))?;
        if body.applied != meta.last_log_id {
            return Err(StorageIOError::read_snapshot(
                sig,
                AnyError::error("snapshot body does not match its metadata"),
            )
            .into());
        }
        let next = RegistryState::from_body(body);
        let db = &self.db;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(db, CF_REG_GROUPS), &[][..], &[0xffu8; 9][..]);
        batch.delete_range_cf(cf(db, CF_REG_VOLUMES), &[][..], &[0xffu8; 17][..]);
        for (id, g) in &next.groups {
            batch.put_cf(cf(db, CF_REG_GROUPS), id.to_be_bytes(), encode(g));
        }
        for (v, g) in &next.volumes {
            let retired = next.retired.contains(v);
            batch.put_cf(cf(db, CF_REG_VOLUMES), v, placement_value(*g, retired));
        }
        self.write_meta(&mut batch, &next);
        batch.put_cf(
            cf(db, CF_REG_META),
            META_SNAPSHOT,
            encode(&StoredSnapshot {
                meta: meta.clone(),
                body: bytes,
            }),
        );
        folio_raft::blocking::in_place(|| db.write_opt(batch, &synced()))
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        publish(&next);
        *self.state.write().expect("registry state lock") = next;
        tracing::info!(snapshot = %meta.snapshot_id, "installed registry snapshot from leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<RegTypes>>, SErr> {
        let _guard = self.snapshot_lock.lock().await;
        Ok(stored_snapshot(&self.db)?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.body)),
        }))
    }
}

/// Builds a snapshot of the whole registry state.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    state: SharedState,
    lock: Arc<tokio::sync::Mutex<()>>,
}

fn stored_snapshot(db: &DB) -> Result<Option<StoredSnapshot>, SErr> {
    let b = folio_raft::blocking::in_place(|| db.get_cf(cf(db, CF_REG_META), META_SNAPSHOT))
        .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
    b.map(|b| {
        decode(&b).map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e)).into())
    })
    .transpose()
}

impl RaftSnapshotBuilder<RegTypes> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<RegTypes>, SErr> {
        let _guard = self.lock.lock().await;
        // Copy under the read lock (cheap next to encoding), encode without it.
        let (body, applied, membership) = {
            let s = self.state.read().expect("registry state lock");
            (s.body(), s.applied, s.membership.clone())
        };
        let body = encode(&body);
        if let Some(current) = stored_snapshot(&self.db)? {
            if current.meta.last_log_id >= applied {
                // An installed snapshot is at least as new: keep it.
                return Ok(Snapshot {
                    meta: current.meta,
                    snapshot: Box::new(Cursor::new(current.body)),
                });
            }
        }
        let snapshot_id = match applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            body: body.clone(),
        };
        // Synced: openraft purges the log behind a snapshot it was told is built.
        let db = &self.db;
        folio_raft::blocking::in_place(|| {
            db.put_cf_opt(
                cf(db, CF_REG_META),
                META_SNAPSHOT,
                encode(&stored),
                &synced(),
            )
        })
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(body)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_tmp() -> (tempfile::TempDir, RegistryStore) {
        let dir = tempfile::tempdir().unwrap();
        let (_, sm) = open(dir.path()).unwrap();
        (dir, sm)
    }

    fn apply(sm: &RegistryStore, cmd: RegCommand) -> RegResponse {
        let mut batch = WriteBatch::default();
        let mut s = sm.state.write().unwrap();
        let r = s.apply(&sm.db, &mut batch, &cmd);
        sm.db.write(batch).unwrap();
        r
    }

    #[test]
    fn placements_survive_reopen_and_snapshots_round_trip() {
        let (dir, sm) = open_tmp();
        let reg = |g: u64, region: &str| RegCommand::RegisterGroup {
            group: g,
            region: region.into(),
            members: vec![(2, "b:1".into()), (1, "a:1".into())],
        };
        assert_eq!(apply(&sm, reg(1, "eu")), RegResponse::default());
        assert_eq!(apply(&sm, reg(2, "us")), RegResponse::default());
        // A group never changes region.
        assert!(apply(&sm, reg(1, "us")).refused.is_some());
        let v = [7u8; 16];
        assert!(apply(
            &sm,
            RegCommand::AssignVolume {
                volume: v,
                group: 9
            }
        )
        .refused
        .is_some());
        assert_eq!(
            apply(
                &sm,
                RegCommand::AssignVolume {
                    volume: v,
                    group: 1
                }
            ),
            RegResponse::default()
        );
        assert!(apply(
            &sm,
            RegCommand::AssignVolume {
                volume: v,
                group: 2
            }
        )
        .refused
        .is_some());
        apply(
            &sm,
            RegCommand::AssignVolume {
                volume: [8; 16],
                group: 1,
            },
        );
        apply(
            &sm,
            RegCommand::AssignVolume {
                volume: [9; 16],
                group: 1,
            },
        );
        // A deleted volume's placement stays as a tombstone; it no longer counts.
        assert_eq!(
            apply(&sm, RegCommand::RetireVolume { volume: [9; 16] }),
            RegResponse::default()
        );
        assert!(apply(&sm, RegCommand::RetireVolume { volume: [6; 16] })
            .refused
            .is_some());
        let before = sm.state.read().unwrap().clone();
        assert!(before.retired.contains(&[9; 16]));
        assert_eq!(before.volume_counts.get(&1), Some(&2));
        assert_eq!(before.groups[&1].members[0], (1, "a:1".to_string()));
        drop(sm);
        let (_, again) = open(dir.path()).unwrap();
        assert_eq!(*again.state.read().unwrap(), before);
        let round = RegistryState::from_body(decode(&encode(&before.body())).unwrap());
        assert_eq!(round, before);
    }
}
