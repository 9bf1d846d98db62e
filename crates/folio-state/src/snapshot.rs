//! State-machine snapshots as files. A snapshot is a consistent dump of every state-machine column
//! family taken from a RocksDB snapshot, so building one never blocks applying entries.
//!
//! Format 2, the only one this build writes and reads (integers little-endian):
//! - `FOLIOSN2`, then the format version as a u16 (2); later formats keep the magic and change
//!   the version;
//! - u32 metadata length, metadata (`SnapshotMeta`, encoded by [`folio_raft::codec`]);
//! - u8 count of column families, then each one's name (u8 length, UTF-8). Records name their
//!   column family by its position in this list, so adding column families to the state machine
//!   leaves the format as it is: a snapshot without a column family installs it empty, and one
//!   naming a column family this build does not know is refused;
//! - records: u8 column family position, u32 key length, key, u32 value length, value;
//! - `0xFF`, then an xxh3-64 checksum of everything before it.
//!
//! Format 1 (`FOLIOSN1`, no version field) held the state machine as it was before history moved
//! to the object store: it is refused, never installed.
//!
//! openraft sends the file to followers in chunks (`snapshot_max_chunk_size`). A follower installs
//! it off the async runtime, streaming: a first pass checks the checksum and the framing and
//! writes nothing; then the file becomes the current snapshot; then a second pass replaces the
//! state machine in batches of [`BATCH_BYTES`]. A marker in the state machine's metadata spans
//! the batches, and [`recover_at_open`] finishes an install a crash interrupted.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use folio_raft::codec::{decode, encode};
use folio_raft::keys::cf;
use folio_raft::RaftNode;
use openraft::storage::Snapshot;
use openraft::{
    AnyError, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};

use crate::db::{corrupt, StoreError};
use crate::keys::{CF_SM_META, META_APPLIED, META_MEMBERSHIP, SM_CFS};
use crate::machine::{load_meta, SErr};
use crate::{metrics, StateMachine, TypeConfig};

const MAGIC: &[u8; 8] = b"FOLIOSN2";
const MAGIC_FORMAT_1: &[u8; 8] = b"FOLIOSN1";
/// The snapshot format this build writes and reads.
pub const FORMAT: u16 = 2;
const END: u8 = 0xFF;
const EXT: &str = "snap";
/// The file a snapshot from the leader is received into; openraft receives one at a time.
const RECEIVING: &str = "receiving.part";
/// Key in `CF_SM_META` while a snapshot is being installed; its value is the snapshot id.
pub(crate) const META_INSTALLING: &[u8] = b"installing";
/// Keys and values written per batch while installing a snapshot.
pub const BATCH_BYTES: usize = 4 << 20;
/// Largest encoded metadata a snapshot may hold (a membership of a few nodes is far smaller).
const META_BYTES_MAX: usize = 1 << 20;
/// Largest key or value a snapshot record may hold.
const RECORD_BYTES_MAX: usize = 64 << 20;
/// Buffer for reading and writing snapshot files.
const IO_BUF_BYTES: usize = 1 << 20;

// A record's column family position is a u8 below the end marker.
const _: () = assert!(SM_CFS.len() < END as usize);

pub type Meta = SnapshotMeta<u64, RaftNode>;

/// Builds snapshots; serialised with installs by a shared lock.
pub struct Builder {
    pub(crate) db: Arc<DB>,
    pub(crate) dir: PathBuf,
    pub(crate) lock: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    #[error("{}", unsupported(.0))]
    Unsupported(u16),
}

fn unsupported(format: &u16) -> String {
    if *format < FORMAT {
        format!(
            "snapshot format {format} is not readable by this version, which reads format \
             {FORMAT}: the state machine's contents changed (history moved to the object \
             store), so a snapshot written by an older Folio cannot be installed; upgrade every \
             node of the group, then let a new snapshot be built"
        )
    } else {
        format!(
            "snapshot format {format} is not readable by this version, which reads format \
             {FORMAT}: it was written by a newer Folio"
        )
    }
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
    let last_membership: StoredMembership<u64, RaftNode> = match get(META_MEMBERSHIP)? {
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
    let file = File::create(&tmp)?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(IO_BUF_BYTES, file),
        hasher: xxhash_rust::xxh3::Xxh3::new(),
    };
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT.to_le_bytes())?;
    let m = encode(&meta);
    if m.len() > META_BYTES_MAX {
        return Err(malformed(format!("metadata of {} bytes", m.len())));
    }
    w.write_all(&(m.len() as u32).to_le_bytes())?;
    w.write_all(&m)?;
    w.write_all(&[SM_CFS.len() as u8])?;
    for name in SM_CFS.iter() {
        let len = u8::try_from(name.len())
            .map_err(|_| malformed(format!("column family name {name:?} is too long")))?;
        w.write_all(&[len])?;
        w.write_all(name.as_bytes())?;
    }
    for (i, name) in SM_CFS.iter().enumerate() {
        for item in view.iterator_cf(cf(db, name), IteratorMode::Start) {
            let (k, v) = item?;
            if *name == CF_SM_META && *k == *META_INSTALLING {
                continue;
            }
            if k.len() > RECORD_BYTES_MAX || v.len() > RECORD_BYTES_MAX {
                return Err(malformed(format!(
                    "a record of {name} is larger than {RECORD_BYTES_MAX} bytes"
                )));
            }
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
    // A snapshot being received stays: the install that follows needs it.
    remove_others(dir, &path, true)?;
    Ok(meta)
}

struct HashingWriter<W: Write> {
    inner: W,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes every byte read through it, for the checksum of everything before it.
struct HashingReader<R: Read> {
    inner: R,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes every file in `dir` but `keep` (and the file being received, if `keep_receiving`).
fn remove_others(dir: &Path, keep: &Path, keep_receiving: bool) -> io::Result<()> {
    let receiving = receiving_path(dir);
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p != keep && !(keep_receiving && p == receiving) {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(())
}

/// Path for a snapshot being received from the leader.
pub fn receiving_path(dir: &Path) -> PathBuf {
    dir.join(RECEIVING)
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<(), SnapshotError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => malformed("truncated"),
        _ => e.into(),
    })
}

fn read_u8<R: Read>(r: &mut R) -> Result<u8, SnapshotError> {
    let mut b = [0u8; 1];
    read_exact(r, &mut b)?;
    Ok(b[0])
}

fn read_u16<R: Read>(r: &mut R) -> Result<u16, SnapshotError> {
    let mut b = [0u8; 2];
    read_exact(r, &mut b)?;
    Ok(u16::from_le_bytes(b))
}

/// A u32 length, refused above `max`.
fn read_len<R: Read>(r: &mut R, max: usize, what: &str) -> Result<usize, SnapshotError> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b)?;
    let n = u32::from_le_bytes(b) as usize;
    if n > max {
        return Err(malformed(format!("{what} of {n} bytes, more than {max}")));
    }
    Ok(n)
}

/// What precedes the records.
#[derive(Debug)]
struct Header {
    meta: Meta,
    cfs: Vec<String>,
}

fn read_header<R: Read>(r: &mut R) -> Result<Header, SnapshotError> {
    let mut magic = [0u8; 8];
    read_exact(r, &mut magic)?;
    if &magic == MAGIC_FORMAT_1 {
        return Err(SnapshotError::Unsupported(1));
    }
    if &magic != MAGIC {
        return Err(malformed("not a Folio snapshot (bad magic)"));
    }
    let format = read_u16(r)?;
    if format != FORMAT {
        return Err(SnapshotError::Unsupported(format));
    }
    let mut m = vec![0u8; read_len(r, META_BYTES_MAX, "metadata")?];
    read_exact(r, &mut m)?;
    let meta = decode(&m).map_err(|e| malformed(format!("metadata: {e}")))?;
    let count = read_u8(r)?;
    let mut cfs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut name = vec![0u8; read_u8(r)? as usize];
        read_exact(r, &mut name)?;
        let name =
            String::from_utf8(name).map_err(|_| malformed("a column family name is not UTF-8"))?;
        if !SM_CFS.contains(&name.as_str()) {
            return Err(malformed(format!(
                "column family {name:?} is not one this version knows"
            )));
        }
        cfs.push(name);
    }
    Ok(Header { meta, cfs })
}

/// Reads the next record into `key` and `value` (or past them, when `skip`). Returns its column
/// family's position in the header, or `None` at the end marker.
fn read_record<R: Read>(
    r: &mut R,
    cf_count: usize,
    key: &mut Vec<u8>,
    value: &mut Vec<u8>,
    skip: bool,
) -> Result<Option<usize>, SnapshotError> {
    let tag = read_u8(r)?;
    if tag == END {
        return Ok(None);
    }
    let i = tag as usize;
    if i >= cf_count {
        return Err(malformed(format!(
            "a record names column family {i}; the header lists {cf_count}"
        )));
    }
    for buf in [key, value] {
        let n = read_len(r, RECORD_BYTES_MAX, "a record")?;
        if skip {
            if io::copy(&mut r.by_ref().take(n as u64), &mut io::sink())? < n as u64 {
                return Err(malformed("truncated"));
            }
        } else {
            buf.resize(n, 0);
            read_exact(r, buf)?;
        }
    }
    Ok(Some(i))
}

/// Reads a file from its start, hashing what it reads.
fn reader(file: &File) -> io::Result<HashingReader<BufReader<&File>>> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    Ok(HashingReader {
        inner: BufReader::with_capacity(IO_BUF_BYTES, file),
        hasher: xxhash_rust::xxh3::Xxh3::new(),
    })
}

/// After the end marker: checks the checksum, and that nothing follows it.
fn finish<R: Read>(r: HashingReader<R>) -> Result<(), SnapshotError> {
    let HashingReader { mut inner, hasher } = r;
    let mut sum = [0u8; 8];
    read_exact(&mut inner, &mut sum)?;
    if u64::from_le_bytes(sum) != hasher.digest() {
        return Err(malformed("checksum mismatch"));
    }
    if inner.read(&mut [0u8; 1])? != 0 {
        return Err(malformed("bytes after the checksum"));
    }
    Ok(())
}

/// Reads a whole snapshot file, checking its format, framing and checksum, without holding it in
/// memory or writing anything. Returns its metadata.
pub fn verify(file: &File) -> Result<Meta, SnapshotError> {
    let mut r = reader(file)?;
    let header = read_header(&mut r)?;
    let (mut k, mut v) = (Vec::new(), Vec::new());
    while read_record(&mut r, header.cfs.len(), &mut k, &mut v, true)?.is_some() {}
    finish(r)?;
    Ok(header.meta)
}

/// Adds to `batch` the deletion of every key of column family `name`.
fn clear(db: &DB, batch: &mut WriteBatch, name: &str) -> Result<(), rocksdb::Error> {
    let h = cf(db, name);
    if let Some(item) = db.iterator_cf(h, IteratorMode::End).next() {
        let (last, _) = item?;
        let mut end = last.to_vec();
        end.push(0);
        batch.delete_range_cf(h, &[][..], &end[..]);
    }
    Ok(())
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

/// Replaces the state machine with the snapshot in `file`, which [`verify`] accepted, writing
/// batches of about `batch_bytes`. First a synced batch clears every state-machine column family
/// and sets the install marker; then the records go in unsynced batches, except the
/// state-machine metadata (applied log id, membership, group state: a few small keys, held until
/// the end), which goes in a last synced batch that also clears the marker. A crash in between
/// leaves the marker and no applied log id, and [`recover_at_open`] installs the snapshot again.
fn apply(db: &DB, file: &File, batch_bytes: usize) -> Result<Meta, SnapshotError> {
    let mut r = reader(file)?;
    let header = read_header(&mut r)?;
    let handles: Vec<_> = header
        .cfs
        .iter()
        .map(|name| (name.as_str() == CF_SM_META, cf(db, name)))
        .collect();
    let meta_cf = cf(db, CF_SM_META);

    let mut batch = WriteBatch::default();
    for name in SM_CFS.iter() {
        clear(db, &mut batch, name)?;
    }
    batch.put_cf(meta_cf, META_INSTALLING, header.meta.snapshot_id.as_bytes());
    db.write_opt(batch, &synced())?;

    let mut batch = WriteBatch::default();
    let mut pending = 0;
    let mut sm_meta = Vec::new();
    let (mut k, mut v) = (Vec::new(), Vec::new());
    while let Some(i) = read_record(&mut r, handles.len(), &mut k, &mut v, false)? {
        let (is_meta, h) = handles[i];
        if is_meta {
            sm_meta.push((k.clone(), v.clone()));
            continue;
        }
        batch.put_cf(h, &k, &v);
        pending += k.len() + v.len();
        if pending >= batch_bytes {
            db.write(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    // Checked again: the file was read a second time.
    finish(r)?;
    for (k, v) in &sm_meta {
        batch.put_cf(meta_cf, k, v);
    }
    batch.delete_cf(meta_cf, META_INSTALLING);
    db.write_opt(batch, &synced())?;
    Ok(header.meta)
}

pub async fn read_all(mut f: Box<tokio::fs::File>) -> io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    f.seek(SeekFrom::Start(0)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    Ok(buf)
}

/// Snapshot ids become file names, and a follower gets them from its leader: only a short run of
/// ASCII letters, digits and `-` is accepted.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn snapshot_path(dir: &Path, snapshot_id: &str) -> io::Result<PathBuf> {
    if !valid_id(snapshot_id) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad snapshot id {snapshot_id:?}"),
        ));
    }
    Ok(dir.join(format!("{snapshot_id}.{EXT}")))
}

/// Whether `file` is the file at `path`.
#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, _: &Path) -> bool {
    false
}

/// Stores a received snapshot as the current one and removes every other file: the received file
/// itself, renamed, when it is the one [`receiving_path`] names, else a streamed copy. Returns
/// the snapshot's path.
pub fn persist(dir: &Path, snapshot_id: &str, received: &File) -> io::Result<PathBuf> {
    let path = snapshot_path(dir, snapshot_id)?;
    let receiving = receiving_path(dir);
    if same_file(received, &receiving) {
        received.sync_all()?;
        std::fs::rename(&receiving, &path)?;
    } else {
        let tmp = dir.join(format!("{snapshot_id}.installing"));
        let mut out = File::create(&tmp)?;
        let mut src = received;
        src.seek(SeekFrom::Start(0))?;
        io::copy(&mut src, &mut out)?;
        out.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    sync_dir(dir)?;
    remove_others(dir, &path, false)?;
    Ok(path)
}

/// The newest snapshot in `dir` by last log id, from each file's header only (the checksum is
/// checked when a snapshot is installed, and was when it was built). Unreadable files are skipped.
fn newest(dir: &Path) -> io::Result<Option<(Meta, PathBuf)>> {
    let mut best: Option<(Meta, PathBuf)> = None;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) != Some(EXT) {
            continue;
        }
        let header = File::open(&p)
            .map_err(SnapshotError::from)
            .and_then(|f| read_header(&mut BufReader::new(f)));
        let meta = match header {
            Ok(h) => h.meta,
            Err(e) => {
                tracing::warn!(path = %p.display(), error = %e, "ignoring unreadable snapshot file");
                continue;
            }
        };
        if best
            .as_ref()
            .is_none_or(|(b, _)| meta.last_log_id > b.last_log_id)
        {
            best = Some((meta, p));
        }
    }
    Ok(best)
}

/// The current snapshot, if any: the newest complete `.snap` file.
pub async fn current(dir: &Path) -> io::Result<Option<Snapshot<TypeConfig>>> {
    let d = dir.to_path_buf();
    let best = tokio::task::spawn_blocking(move || newest(&d))
        .await
        .map_err(io::Error::other)??;
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

/// Which step of installing a received snapshot failed.
#[derive(Debug)]
enum InstallError {
    Read(SnapshotError),
    Persist(io::Error),
    Apply(SnapshotError),
}

/// Installs a snapshot received from the leader: checks it whole and against the metadata
/// openraft sent with it, keeps it as the current snapshot, then replaces the state machine with
/// it. Returns the file's size.
fn install_received(db: &DB, dir: &Path, want: &Meta, file: File) -> Result<u64, InstallError> {
    let meta = verify(&file).map_err(InstallError::Read)?;
    if meta != *want {
        return Err(InstallError::Read(malformed(
            "snapshot body does not match its metadata",
        )));
    }
    // The file first: a crash before the state machine is replaced leaves a current snapshot
    // newer than the applied state, which `recover_at_open` installs. The reverse order could
    // leave an older snapshot current while the log below the new one is purged.
    let path = persist(dir, &meta.snapshot_id, &file).map_err(InstallError::Persist)?;
    drop(file);
    let file = File::open(&path).map_err(InstallError::Persist)?;
    let size = file.metadata().map_err(InstallError::Persist)?.len();
    apply(db, &file, BATCH_BYTES).map_err(InstallError::Apply)?;
    Ok(size)
}

/// Brings the state machine up to its persisted snapshot when a node opens its store, before
/// anything reads the state machine: finishes an install a crash interrupted (the marker is
/// set), or installs the newest persisted snapshot if it is newer than the applied log id (a
/// crash lost the install, or unsynced applies after the snapshot was built). Also removes files
/// a crash left half-written.
pub(crate) fn recover_at_open(db: &DB, dir: &Path) -> Result<(), StoreError> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("building" | "installing" | "part")
        ) {
            std::fs::remove_file(&p)?;
        }
    }
    let meta_cf = cf(db, CF_SM_META);
    let path = match db.get_cf(meta_cf, META_INSTALLING)? {
        Some(id) => {
            let id = String::from_utf8(id).map_err(|e| corrupt(CF_SM_META, e))?;
            let path = snapshot_path(dir, &id).map_err(|e| corrupt(CF_SM_META, e))?;
            tracing::warn!(snapshot = %id, "finishing a snapshot install a crash interrupted");
            path
        }
        None => {
            let applied: Option<LogId<u64>> = match db.get_cf(meta_cf, META_APPLIED)? {
                Some(b) => decode(&b).map_err(|e| corrupt(CF_SM_META, e))?,
                None => None,
            };
            match newest(dir)? {
                Some((meta, path)) if meta.last_log_id > applied => {
                    tracing::info!(
                        snapshot = %meta.snapshot_id, ?applied,
                        "installing the persisted snapshot, newer than the applied state"
                    );
                    path
                }
                _ => return Ok(()),
            }
        }
    };
    let refused = |e: SnapshotError| {
        StoreError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "cannot install snapshot {}, which this replica's state machine needs: {e}",
                path.display()
            ),
        ))
    };
    let file = File::open(&path).map_err(|e| refused(e.into()))?;
    verify(&file).map_err(refused)?;
    apply(db, &file, BATCH_BYTES).map_err(refused)?;
    Ok(())
}

impl StateMachine {
    /// Replaces this replica's state with a snapshot received from the leader, after checking
    /// its checksum and that its body matches the metadata openraft sent with it. Runs off the
    /// async runtime.
    pub(crate) async fn install(
        &mut self,
        meta: &SnapshotMeta<u64, folio_raft::RaftNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        let _guard = self.snapshot_lock.lock().await;
        let sig = Some(meta.signature());
        let file = (*snapshot).into_std().await;
        let (db, dir, want) = (self.db.clone(), self.snapshots.clone(), meta.clone());
        // Readers refuse to read while the column families are being replaced batch by batch.
        let _installing = InstallingGuard::new(self.installs.clone());
        let bytes = tokio::task::spawn_blocking(move || install_received(&db, &dir, &want, file))
            .await
            .map_err(|e| StorageIOError::write_state_machine(AnyError::error(e)))?
            .map_err(|e| match e {
                InstallError::Read(e) => StorageIOError::read_snapshot(sig, AnyError::error(e)),
                InstallError::Persist(e) => StorageIOError::write_snapshot(sig, &e),
                InstallError::Apply(e) => StorageIOError::write_state_machine(AnyError::error(e)),
            })?;
        self.meta = folio_raft::blocking::in_place(|| load_meta(&self.db))
            .map_err(|e| StorageIOError::read_state_machine(AnyError::error(e)))?;
        self.publish();
        self.volumes.raise_all();
        metrics::SNAPSHOTS_INSTALLED.inc();
        tracing::info!(snapshot = %meta.snapshot_id, bytes, "installed snapshot from leader");
        Ok(())
    }
}

/// Marks an install in progress (the counter is odd) until dropped.
struct InstallingGuard(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl InstallingGuard {
    fn new(c: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InstallingGuard(c)
    }
}

impl Drop for InstallingGuard {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
    use std::collections::BTreeSet;

    use openraft::{CommittedLeaderId, Membership};
    use rocksdb::{ColumnFamilyDescriptor, Options};

    use super::*;
    use crate::keys::all_cfs;

    #[test]
    fn snapshot_ids_from_peers_cannot_name_other_files() {
        assert!(valid_id("3-1-2041-1763784000000000000"));
        for bad in ["", "../../etc/passwd", "a/b", "x.snap", &"9".repeat(129)] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let received = tempfile::tempfile().unwrap();
        assert!(persist(dir.path(), "../escape", &received).is_err());
        assert!(std::fs::read_dir(dir.path().parent().unwrap())
            .unwrap()
            .all(|e| e.unwrap().file_name() != "escape.snap"));
    }

    /// A node's database and snapshot directory, opened as `open_store` opens them.
    struct Node {
        db: DB,
        snapshots: PathBuf,
        _dir: tempfile::TempDir,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = all_cfs().map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir.path().join("db"), cfs).unwrap();
        let snapshots = dir.path().join("snapshots");
        std::fs::create_dir_all(&snapshots).unwrap();
        Node {
            db,
            snapshots,
            _dir: dir,
        }
    }

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(2, 1), index)
    }

    /// Records in every state-machine column family, `seed` varying their content, and the
    /// state-machine metadata at `applied`.
    fn fill(db: &DB, applied: u64, seed: u8) {
        for (i, name) in SM_CFS.iter().enumerate() {
            if *name == CF_SM_META {
                continue;
            }
            for j in 0..40u32 {
                let key = [&[i as u8, seed][..], &j.to_be_bytes()].concat();
                let value = vec![seed ^ j as u8; 50 + 37 * j as usize];
                db.put_cf(cf(db, name), key, value).unwrap();
            }
        }
        let members = Membership::new(vec![BTreeSet::from([1, 2, 3])], None);
        let membership: StoredMembership<u64, RaftNode> =
            StoredMembership::new(Some(log_id(1)), members);
        let meta = cf(db, CF_SM_META);
        db.put_cf(meta, META_APPLIED, encode(&Some(log_id(applied))))
            .unwrap();
        db.put_cf(meta, META_MEMBERSHIP, encode(&membership))
            .unwrap();
    }

    /// Every state-machine record, by column family.
    fn dump(db: &DB) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for name in SM_CFS.iter() {
            for item in db.iterator_cf(cf(db, name), IteratorMode::Start) {
                let (k, v) = item.unwrap();
                out.push((*name, k.to_vec(), v.to_vec()));
            }
        }
        out
    }

    fn snapshot_file(n: &Node, meta: &Meta) -> PathBuf {
        n.snapshots.join(format!("{}.{EXT}", meta.snapshot_id))
    }

    #[test]
    fn build_then_install_into_a_fresh_database_round_trips() {
        let a = node();
        fill(&a.db, 10, 1);
        let meta = build(&a.db, &a.snapshots).unwrap();
        assert_eq!(meta.last_log_id, Some(log_id(10)));
        let (current, path) = newest(&a.snapshots).unwrap().unwrap();
        assert_eq!(
            (current, path.clone()),
            (meta.clone(), snapshot_file(&a, &meta))
        );

        // The replica has other state, including keys past everything the snapshot holds.
        let b = node();
        fill(&b.db, 3, 2);
        for name in SM_CFS.iter() {
            b.db.put_cf(cf(&b.db, name), [0xFF; 300], b"stale").unwrap();
        }
        let file = File::open(&path).unwrap();
        assert_eq!(verify(&file).unwrap(), meta);
        // Small batches, so the install takes many.
        assert_eq!(apply(&b.db, &file, 1000).unwrap(), meta);
        assert_eq!(dump(&b.db), dump(&a.db));
        assert_eq!(load_meta(&b.db).unwrap().applied, Some(log_id(10)));

        // A snapshot of the installed replica holds the same records.
        let again = build(&b.db, &b.snapshots).unwrap();
        let c = node();
        apply(
            &c.db,
            &File::open(snapshot_file(&b, &again)).unwrap(),
            BATCH_BYTES,
        )
        .unwrap();
        assert_eq!(dump(&c.db), dump(&a.db));
    }

    #[test]
    fn a_received_file_is_kept_by_rename_and_any_other_by_copy() {
        let a = node();
        fill(&a.db, 10, 1);
        let meta = build(&a.db, &a.snapshots).unwrap();
        let bytes = std::fs::read(snapshot_file(&a, &meta)).unwrap();

        let b = node();
        std::fs::write(receiving_path(&b.snapshots), &bytes).unwrap();
        std::fs::write(b.snapshots.join("old.snap"), b"old").unwrap();
        let received = File::open(receiving_path(&b.snapshots)).unwrap();
        let path = persist(&b.snapshots, &meta.snapshot_id, &received).unwrap();
        assert!(same_file(&received, &path), "renamed, not copied");
        let names: Vec<_> = std::fs::read_dir(&b.snapshots)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(names, std::slice::from_ref(&path));

        // The file openraft hands over may be another node's, as its storage suite does.
        let c = node();
        let other = File::open(snapshot_file(&a, &meta)).unwrap();
        let path = persist(&c.snapshots, &meta.snapshot_id, &other).unwrap();
        assert!(!same_file(&other, &path));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_corrupt_snapshot_is_refused_before_anything_is_written() {
        let a = node();
        fill(&a.db, 10, 1);
        let meta = build(&a.db, &a.snapshots).unwrap();
        let good = std::fs::read(snapshot_file(&a, &meta)).unwrap();
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0xFF;
        let truncated = good[..good.len() - 5].to_vec();
        let mut trailing = good.clone();
        trailing.push(0);

        for (bad, want) in [
            (flipped, "checksum mismatch"),
            (truncated, "truncated"),
            (trailing, "bytes after the checksum"),
        ] {
            let b = node();
            fill(&b.db, 3, 2);
            let before = dump(&b.db);
            std::fs::write(receiving_path(&b.snapshots), &bad).unwrap();
            let file = File::open(receiving_path(&b.snapshots)).unwrap();
            let Err(InstallError::Read(e)) = install_received(&b.db, &b.snapshots, &meta, file)
            else {
                panic!("{want}: refused on reading")
            };
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(dump(&b.db), before);
            assert!(newest(&b.snapshots).unwrap().is_none());
        }

        // A body whose metadata differs from what the leader announced is refused too.
        let b = node();
        let mut other = meta.clone();
        other.snapshot_id = "1-1-1-1".into();
        let file = File::open(snapshot_file(&a, &meta)).unwrap();
        assert!(matches!(
            install_received(&b.db, &b.snapshots, &other, file),
            Err(InstallError::Read(_))
        ));
        assert!(dump(&b.db).is_empty());
    }

    #[test]
    fn format_1_and_unknown_column_families_are_refused() {
        let n = node();
        let v1 = n.snapshots.join("1-1-5-0.snap");
        std::fs::write(&v1, [&MAGIC_FORMAT_1[..], &[0u8; 64]].concat()).unwrap();
        let e = verify(&File::open(&v1).unwrap()).unwrap_err();
        assert!(matches!(e, SnapshotError::Unsupported(1)));
        let msg = e.to_string();
        assert!(
            msg.starts_with("snapshot format 1 is not readable by this version"),
            "{msg}"
        );
        // A leftover format-1 file is no current snapshot, and no reason to fail at open.
        assert!(newest(&n.snapshots).unwrap().is_none());
        recover_at_open(&n.db, &n.snapshots).unwrap();

        let future = [&MAGIC[..], &(FORMAT + 1).to_le_bytes()].concat();
        let e = read_header(&mut &future[..]).unwrap_err();
        assert!(e.to_string().contains("written by a newer Folio"), "{e}");

        // A column family this version does not know: rename the first one in the header.
        let a = node();
        fill(&a.db, 10, 1);
        let meta = build(&a.db, &a.snapshots).unwrap();
        let mut bytes = std::fs::read(snapshot_file(&a, &meta)).unwrap();
        let meta_len = u32::from_le_bytes(bytes[10..14].try_into().unwrap()) as usize;
        bytes[14 + meta_len + 2] = b'X';
        let e = read_header(&mut &bytes[..]).unwrap_err();
        assert!(
            e.to_string().contains("is not one this version knows"),
            "{e}"
        );
    }

    #[test]
    fn recover_at_open_finishes_an_interrupted_install() {
        let a = node();
        fill(&a.db, 10, 1);
        let meta = build(&a.db, &a.snapshots).unwrap();
        let bytes = std::fs::read(snapshot_file(&a, &meta)).unwrap();

        // The install's first batch and part of the records made it; the last batch did not.
        let b = node();
        fill(&b.db, 3, 2);
        std::fs::write(snapshot_file(&b, &meta), &bytes).unwrap();
        std::fs::write(b.snapshots.join("x.installing"), b"half").unwrap();
        let mut batch = WriteBatch::default();
        for name in SM_CFS.iter() {
            clear(&b.db, &mut batch, name).unwrap();
        }
        let meta_cf = cf(&b.db, CF_SM_META);
        batch.put_cf(meta_cf, META_INSTALLING, meta.snapshot_id.as_bytes());
        for (name, k, v) in dump(&a.db).into_iter().take(50) {
            if name != CF_SM_META {
                batch.put_cf(cf(&b.db, name), k, v);
            }
        }
        b.db.write(batch).unwrap();
        assert!(load_meta(&b.db).unwrap().applied.is_none());

        recover_at_open(&b.db, &b.snapshots).unwrap();
        assert_eq!(dump(&b.db), dump(&a.db));
        assert!(b.db.get_cf(meta_cf, META_INSTALLING).unwrap().is_none());
        assert!(!b.snapshots.join("x.installing").exists());

        // Opening again changes nothing: the applied state is the snapshot's.
        recover_at_open(&b.db, &b.snapshots).unwrap();
        assert_eq!(dump(&b.db), dump(&a.db));
    }

    #[test]
    fn recover_at_open_installs_a_snapshot_newer_than_the_applied_state_only() {
        let a = node();
        fill(&a.db, 10, 1);
        let meta = build(&a.db, &a.snapshots).unwrap();
        let bytes = std::fs::read(snapshot_file(&a, &meta)).unwrap();

        // Behind the snapshot (a crash lost the install, or applies after the build): installed.
        let b = node();
        fill(&b.db, 3, 2);
        std::fs::write(snapshot_file(&b, &meta), &bytes).unwrap();
        recover_at_open(&b.db, &b.snapshots).unwrap();
        assert_eq!(dump(&b.db), dump(&a.db));

        // Ahead of it: left as it is.
        let c = node();
        fill(&c.db, 20, 3);
        std::fs::write(snapshot_file(&c, &meta), &bytes).unwrap();
        let before = dump(&c.db);
        recover_at_open(&c.db, &c.snapshots).unwrap();
        assert_eq!(dump(&c.db), before);

        // Behind a snapshot that is corrupt: opening fails rather than run without it.
        let d = node();
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xFF;
        std::fs::write(snapshot_file(&d, &meta), &bad).unwrap();
        let e = recover_at_open(&d.db, &d.snapshots).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
    }
}
