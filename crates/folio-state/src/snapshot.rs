//! State-machine snapshots as files. A snapshot is a consistent dump of every state-machine column
//! family taken from a RocksDB snapshot, so building one never blocks applying entries.
//!
//! Format: `FOLIOSN1`, u32 metadata length, metadata (MessagePack `SnapshotMeta`), records
//! (`u8` column family index, `u32` key length, key, `u32` value length, value), `0xFF`, and an
//! xxh3-64 checksum of everything before it. The checksum is verified before anything is
//! installed. openraft sends the file to followers in chunks (`snapshot_max_chunk_size`).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use folio_raft::codec::{decode, encode};
use folio_raft::keys::cf;
use openraft::storage::Snapshot;
use openraft::{
    AnyError, BasicNode, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use rocksdb::{IteratorMode, WriteBatch, DB};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::keys::{CF_SM_META, META_APPLIED, META_MEMBERSHIP, SM_CFS};
use crate::machine::{load_meta, SErr};
use crate::{metrics, StateMachine, TypeConfig};

const MAGIC: &[u8; 8] = b"FOLIOSN1";
const END: u8 = 0xFF;
const EXT: &str = "snap";
/// Larger than every state-machine key: the exclusive end of a whole-column-family range delete.
const KEY_END: [u8; 256] = [0xFF; 256];

pub type Meta = SnapshotMeta<u64, BasicNode>;

/// Builds snapshots; serialised with installs by a shared lock.
pub struct Builder {
    pub(crate) db: Arc<DB>,
    pub(crate) dir: PathBuf,
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("malformed snapshot: {0}")]
    Malformed(String),
}

fn malformed(s: impl Into<String>) -> SnapshotError {
    SnapshotError::Malformed(s.into())
}

/// Dumps the state machine into a new snapshot file in `dir` and removes older ones.
pub fn build(db: &DB, dir: &Path) -> Result<Meta, SnapshotError> {
    let view = db.snapshot();
    let get = |k: &[u8]| view.get_cf(cf(db, CF_SM_META), k);
    let last_log_id: Option<LogId<u64>> = match get(META_APPLIED)? {
        Some(b) => decode(&b).map_err(|e| malformed(e.to_string()))?,
        None => None,
    };
    let last_membership: StoredMembership<u64, BasicNode> = match get(META_MEMBERSHIP)? {
        Some(b) => decode(&b).map_err(|e| malformed(e.to_string()))?,
        None => StoredMembership::default(),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let snapshot_id = match &last_log_id {
        Some(l) => format!(
            "{}-{}-{}-{nanos}",
            l.leader_id.term, l.leader_id.node_id, l.index
        ),
        None => format!("0-0-0-{nanos}"),
    };
    let meta = Meta {
        last_log_id,
        last_membership,
        snapshot_id,
    };

    let tmp = dir.join(format!("{}.building", meta.snapshot_id));
    let file = std::fs::File::create(&tmp)?;
    let mut w = HashingWriter {
        inner: BufWriter::new(file),
        hasher: xxhash_rust::xxh3::Xxh3::new(),
    };
    w.write_all(MAGIC)?;
    let m = encode(&meta);
    w.write_all(&(m.len() as u32).to_le_bytes())?;
    w.write_all(&m)?;
    for (i, name) in SM_CFS.iter().enumerate() {
        for item in view.iterator_cf(cf(db, name), IteratorMode::Start) {
            let (k, v) = item?;
            w.write_all(&[i as u8])?;
            w.write_all(&(k.len() as u32).to_le_bytes())?;
            w.write_all(&k)?;
            w.write_all(&(v.len() as u32).to_le_bytes())?;
            w.write_all(&v)?;
        }
    }
    w.write_all(&[END])?;
    let sum = w.hasher.digest();
    let mut inner = w.inner;
    inner.write_all(&sum.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let path = dir.join(format!("{}.{EXT}", meta.snapshot_id));
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    remove_others(dir, &path)?;
    Ok(meta)
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn remove_others(dir: &Path, keep: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p != keep {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(())
}

/// Path for a snapshot being received from the leader.
pub fn receiving_path(dir: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!("receiving-{nanos}.part"))
}

/// Checks the checksum and framing and returns the metadata and the record section.
fn parse(bytes: &[u8]) -> Result<(Meta, &[u8]), SnapshotError> {
    if bytes.len() < MAGIC.len() + 4 + 1 + 8 || &bytes[..8] != MAGIC {
        return Err(malformed("bad magic or too short"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    let want = u64::from_le_bytes(sum.try_into().expect("8 bytes"));
    if xxhash_rust::xxh3::xxh3_64(body) != want {
        return Err(malformed("checksum mismatch"));
    }
    let mlen = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let records = body
        .get(12 + mlen..)
        .ok_or_else(|| malformed("metadata past end"))?;
    let meta: Meta = decode(&body[12..12 + mlen]).map_err(|e| malformed(e.to_string()))?;
    Ok((meta, records))
}

/// Fills `batch` with writes that replace the whole state machine with the snapshot's content.
/// The caller writes the batch, so the replacement is atomic.
pub fn decode_into(db: &DB, bytes: &[u8], batch: &mut WriteBatch) -> Result<Meta, SnapshotError> {
    let (meta, mut rest) = parse(bytes)?;
    for name in SM_CFS {
        batch.delete_range_cf(cf(db, name), [].as_slice(), KEY_END.as_slice());
    }
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], SnapshotError> {
        if rest.len() < n {
            return Err(malformed("truncated record"));
        }
        let (a, b) = rest.split_at(n);
        *rest = b;
        Ok(a)
    }
    fn len(rest: &mut &[u8]) -> Result<usize, SnapshotError> {
        Ok(u32::from_le_bytes(take(rest, 4)?.try_into().expect("4 bytes")) as usize)
    }
    loop {
        let tag = take(&mut rest, 1)?[0];
        if tag == END {
            break;
        }
        let name = SM_CFS
            .get(tag as usize)
            .ok_or_else(|| malformed("unknown column family"))?;
        let kl = len(&mut rest)?;
        let k = take(&mut rest, kl)?;
        let vl = len(&mut rest)?;
        let v = take(&mut rest, vl)?;
        batch.put_cf(cf(db, name), k, v);
    }
    if !rest.is_empty() {
        return Err(malformed("bytes after end marker"));
    }
    Ok(meta)
}

pub async fn read_all(mut f: Box<tokio::fs::File>) -> std::io::Result<Vec<u8>> {
    f.seek(std::io::SeekFrom::Start(0)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    Ok(buf)
}

/// Snapshot ids become file names, and a follower gets them from its leader: only a short run of
/// ASCII letters, digits and `-` is accepted.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Stores an installed snapshot as the current one.
pub fn persist(dir: &Path, snapshot_id: &str, bytes: &[u8]) -> std::io::Result<()> {
    if !valid_id(snapshot_id) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad snapshot id {snapshot_id:?}"),
        ));
    }
    let tmp = dir.join(format!("{snapshot_id}.installing"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    let path = dir.join(format!("{snapshot_id}.{EXT}"));
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    remove_others(dir, &path)
}

/// The current snapshot, if any: the newest complete `.snap` file.
pub async fn current(dir: &Path) -> std::io::Result<Option<Snapshot<TypeConfig>>> {
    let mut best: Option<(Meta, PathBuf)> = None;
    let mut rd = tokio::fs::read_dir(dir).await?;
    while let Some(e) = rd.next_entry().await? {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some(EXT) {
            continue;
        }
        let bytes = tokio::fs::read(&p).await?;
        let Ok((meta, _)) = parse(&bytes) else {
            tracing::warn!(path = %p.display(), "ignoring unreadable snapshot file");
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(b, _)| meta.last_log_id > b.last_log_id)
        {
            best = Some((meta, p));
        }
    }
    match best {
        None => Ok(None),
        Some((meta, p)) => {
            let f = tokio::fs::File::open(&p).await?;
            Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(f),
            }))
        }
    }
}

impl StateMachine {
    /// Replaces this replica's state with a snapshot received from the leader, after checking
    /// its checksum and that its body matches the metadata openraft sent with it.
    pub(crate) async fn install(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        let _guard = self.snapshot_lock.lock().await;
        let sig = Some(meta.signature());
        let bytes = read_all(snapshot)
            .await
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        let mut batch = WriteBatch::default();
        let decoded = decode_into(&self.db, &bytes, &mut batch)
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), AnyError::error(e)))?;
        if decoded != *meta {
            return Err(StorageIOError::read_snapshot(
                sig,
                AnyError::error("snapshot body does not match its metadata"),
            )
            .into());
        }
        // The file first: a crash between the two leaves a current snapshot that is installed
        // again on restart. The reverse order could leave an older snapshot current while the
        // log below the new one is purged.
        persist(&self.snapshots, &meta.snapshot_id, &bytes)
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.meta = load_meta(&self.db)
            .map_err(|e| StorageIOError::read_state_machine(AnyError::error(e)))?;
        self.publish();
        metrics::SNAPSHOTS_INSTALLED.inc();
        tracing::info!(snapshot = %meta.snapshot_id, bytes = bytes.len(), "installed snapshot from leader");
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let _guard = self.lock.lock().await;
        let db = self.db.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || build(&db, &dir))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?;
        metrics::SNAPSHOTS_BUILT.inc();
        current(&self.dir)
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
            .ok_or_else(|| {
                StorageIOError::read_snapshot(None, AnyError::error("snapshot vanished")).into()
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_from_peers_cannot_name_other_files() {
        assert!(valid_id("3-1-2041-1763784000000000000"));
        for bad in ["", "../../etc/passwd", "a/b", "x.snap", &"9".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(persist(dir.path(), "../escape", b"x").is_err());
        assert!(std::fs::read_dir(dir.path().parent().unwrap())
            .unwrap()
            .all(|e| e.unwrap().file_name() != "escape.snap"));
    }
}
