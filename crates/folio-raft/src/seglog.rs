//! A segment log: the Raft log's entries in files of their own, built so that making an append
//! durable costs one fdatasync of bytes already allocated on disk.
//!
//! # Why
//!
//! An fdatasync that must also journal a file's new size costs about 1.7× one that does not
//! (`folio-bench log-disk`, RFC 0009: 301 against 173 µs at p50), and RocksDB's WAL grows on every
//! synced write. Here entries go into segments that were written in full (with zeros) before
//! their first use and are reused after a purge, so an append overwrites allocated blocks and its
//! fdatasync flushes only data.
//!
//! # Format (version 1)
//!
//! A segment file starts with a 64-byte header: the magic `FOLIOSEG`, the format version (u16),
//! the index of the segment's first record (u64), the segment's sequence number (u64; a later
//! segment has a larger one), a random nonce (u64), and a crc32c of those bytes. Records follow
//! back to back: length of the payload (u32), crc32c (u32), log index (u64), payload. The crc
//! covers the segment's nonce, the length, the index and the payload. Integers are little-endian.
//!
//! # What recovery trusts
//!
//! A segment's records are read from its header onwards while each has the next index and a crc
//! that checks; the first that does not ends the segment. Because the crc includes the nonce,
//! which is drawn anew each time a file is (re)used, bytes left in a reused file by an earlier
//! life never read as records, and because a segment is only ever appended to within one life
//! (an append after a truncation or a restart opens a new segment), stale bytes of the same life
//! cannot follow a record either.
//!
//! Segments are replayed in sequence order. A segment whose first index is at or below the end
//! read so far replaces everything from that index on: that is how a truncation is made durable
//! (a new segment starting at the truncation point, fsync'd before `truncate` returns). A
//! segment that starts past the end is either the log restarting after a purge beyond its end
//! (the gap lies wholly at or below the purge point) or the tail of an append that never
//! completed (an earlier segment's records did not all reach the disk); then it and every later
//! segment are discarded. That is safe because an append is reported durable only after every
//! file it wrote to was fsync'd, in order.
//!
//! # Bounded
//!
//! The log holds entries from the purge point to its end, in segments of `segment_bytes` (a
//! record larger than that gets a segment of its own size). Dead segments (wholly purged, or
//! wholly truncated away) become spares, up to [`MAX_SPARES`]; the rest are deleted. The
//! in-memory index holds an offset and a length per live entry.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 8] = b"FOLIOSEG";
/// Bytes of a segment header; records start here.
pub const HEADER_BYTES: u64 = 64;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: u64 = 16;
/// Largest payload a record may carry: far above any Raft entry Folio writes (a peer message
/// is bounded well below it), so a larger length read back is corruption, not data.
pub const MAX_RECORD_BYTES: u64 = 1 << 30;
/// Dead segments kept for reuse; more are deleted.
pub const MAX_SPARES: usize = 2;
/// Default size of a segment.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// A segment file in use: its number (the file name), its header fields, and the open file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    seq: u64,
    nonce: u64,
    first: u64,
    /// The file's size: the segment's capacity.
    capacity: u64,
}

/// A contiguous run of live entries in one segment: indexes `first..first + locs.len()`.
#[derive(Debug)]
struct Run {
    seg: Arc<Segment>,
    first: u64,
    /// (offset of the record header, payload length), per entry.
    locs: VecDeque<(u64, u32)>,
}

impl Run {
    fn end(&self) -> u64 {
        self.first + self.locs.len() as u64
    }
}

/// The live log: runs in index order, each following the previous without a gap.
#[derive(Debug, Default)]
struct Index {
    runs: VecDeque<Run>,
}

impl Index {
    /// One past the last live index, if any entry is live.
    fn end(&self) -> Option<u64> {
        self.runs.back().map(Run::end)
    }

    fn first(&self) -> Option<u64> {
        self.runs.front().map(|r| r.first)
    }

    /// Keeps entries below `index`; returns the segments left without a live entry.
    fn truncate(&mut self, index: u64) -> Vec<Arc<Segment>> {
        let mut dead = Vec::new();
        while let Some(r) = self.runs.back_mut() {
            if r.first >= index {
                dead.push(self.runs.pop_back().expect("back exists").seg);
            } else {
                let keep = (index - r.first) as usize;
                r.locs.truncate(keep);
                break;
            }
        }
        dead
    }

    /// Drops entries at or below `index`; returns the segments left without a live entry.
    fn purge(&mut self, index: u64) -> Vec<Arc<Segment>> {
        let mut dead = Vec::new();
        while let Some(r) = self.runs.front_mut() {
            if r.end() <= index + 1 {
                dead.push(self.runs.pop_front().expect("front exists").seg);
            } else {
                let drop = (index + 1).saturating_sub(r.first) as usize;
                r.locs.drain(..drop);
                r.first += drop as u64;
                break;
            }
        }
        dead
    }
}

/// Where appends go: the segment being written and its next free byte.
#[derive(Debug, Default)]
struct Writer {
    active: Option<(Arc<Segment>, u64)>,
}

/// Files kept for reuse, and whether one is being prepared.
#[derive(Debug, Default)]
struct Spares {
    files: Mutex<Vec<PathBuf>>,
    preparing: AtomicBool,
    /// Set when the log is dropped: a spare being written stops and is removed.
    cancel: AtomicBool,
    /// The thread writing a spare, joined when the log is dropped, so that a log reopened in
    /// the same process never meets a file its predecessor is still writing.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Spares {
    /// Keeps `path`, a file without a valid header, as a spare if it has a segment's full size
    /// (`segment_bytes`; it was written in full when made) and there is room, else deletes it.
    fn keep_or_delete(&self, path: PathBuf, capacity: u64, segment_bytes: u64) -> io::Result<()> {
        let mut files = self.files.lock().expect("spares lock");
        if capacity == segment_bytes && files.len() < MAX_SPARES {
            files.push(path);
            Ok(())
        } else {
            std::fs::remove_file(&path)
        }
    }

    fn take(&self) -> Option<PathBuf> {
        self.files.lock().expect("spares lock").pop()
    }

    fn is_empty(&self) -> bool {
        self.files.lock().expect("spares lock").is_empty()
    }
}

/// The segment log. Appends, truncations and purges take the writer lock; reads take only the
/// index lock, briefly, and read the files outside it.
#[derive(Debug)]
pub struct SegLog {
    dir: PathBuf,
    segment_bytes: u64,
    writer: Mutex<Writer>,
    index: RwLock<Index>,
    spares: Arc<Spares>,
    next_seq: AtomicU64,
    next_file: AtomicU64,
    /// fdatasyncs completed: what a test watches to see an append reported only after one.
    syncs: AtomicU64,
    /// Set when a write or fdatasync of an append failed: what reached the disk is then
    /// unknown (a failed fdatasync may have dropped the dirty pages it could not write), so no
    /// later append may be reported durable on top of it. Cleared only by reopening.
    failed: AtomicBool,
    /// Held across an append's fdatasyncs, so that an append never reports success on the
    /// strength of an fdatasync that ran after another one had failed (Linux reports a
    /// write-back error to one fdatasync of a file, not to every one after it).
    sync: Mutex<()>,
}

/// What recovery found, for the opener to log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub entries: u64,
    /// Segments dropped because they followed a gap past the purge point: the tail of an
    /// append that never completed.
    pub discarded_segments: usize,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn header_bytes(first: u64, seq: u64, nonce: u64) -> [u8; HEADER_BYTES as usize] {
    let mut h = [0u8; HEADER_BYTES as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[10..18].copy_from_slice(&first.to_le_bytes());
    h[18..26].copy_from_slice(&seq.to_le_bytes());
    h[26..34].copy_from_slice(&nonce.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..34]);
    h[34..38].copy_from_slice(&crc.to_le_bytes());
    h
}

/// (first, seq, nonce) of a valid header; `None` for anything else (a spare's zeroed header, a
/// torn one). A valid header of an unknown version is an error: a newer build's log.
fn parse_header(h: &[u8]) -> io::Result<Option<(u64, u64, u64)>> {
    if h.len() < HEADER_BYTES as usize || &h[0..8] != MAGIC {
        return Ok(None);
    }
    let crc = u32::from_le_bytes(h[34..38].try_into().expect("4 bytes"));
    if crc32c::crc32c(&h[0..34]) != crc {
        return Ok(None);
    }
    let version = u16::from_le_bytes(h[8..10].try_into().expect("2 bytes"));
    if version != FORMAT_VERSION {
        return Err(invalid(format!(
            "log segment has format version {version}, this build reads {FORMAT_VERSION}"
        )));
    }
    let u = |r: std::ops::Range<usize>| u64::from_le_bytes(h[r].try_into().expect("8 bytes"));
    Ok(Some((u(10..18), u(18..26), u(26..34))))
}

fn record_crc(nonce: u64, len: u32, index: u64, payload: &[u8]) -> u32 {
    let mut c = crc32c::crc32c(&nonce.to_le_bytes());
    c = crc32c::crc32c_append(c, &len.to_le_bytes());
    c = crc32c::crc32c_append(c, &index.to_le_bytes());
    crc32c::crc32c_append(c, payload)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn file_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".seg")
        .or_else(|| name.strip_suffix(".tmp"))?;
    stem.parse().ok()
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

/// Reads one segment's records from its header on, while each checks; returns their locations.
fn scan(seg: &Segment) -> io::Result<VecDeque<(u64, u32)>> {
    let mut locs = VecDeque::new();
    let mut off = HEADER_BYTES;
    let mut hdr = [0u8; RECORD_HEADER_BYTES as usize];
    let mut payload = Vec::new();
    let mut expect = seg.first;
    while off + RECORD_HEADER_BYTES <= seg.capacity {
        seg.file.read_exact_at(&mut hdr, off)?;
        let len = u32::from_le_bytes(hdr[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(hdr[4..8].try_into().expect("4 bytes"));
        let index = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
        let body = off + RECORD_HEADER_BYTES;
        if index != expect || len as u64 > MAX_RECORD_BYTES || body + len as u64 > seg.capacity {
            break;
        }
        payload.resize(len as usize, 0);
        seg.file.read_exact_at(&mut payload, body)?;
        if record_crc(seg.nonce, len, index, &payload) != crc {
            break;
        }
        locs.push_back((off, len));
        off = body + len as u64;
        expect += 1;
    }
    Ok(locs)
}

impl SegLog {
    /// Opens (or creates) the log in `dir` and recovers it. `first` is the lowest index still
    /// wanted (one past the purge point, 0 for a log never purged): entries below it are
    /// dropped, and a segment starting after a gap is accepted only if the gap ends below it.
    pub fn open(dir: &Path, segment_bytes: u64, first: u64) -> io::Result<(Self, Recovery)> {
        std::fs::create_dir_all(dir)?;
        let log = SegLog {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(HEADER_BYTES + RECORD_HEADER_BYTES + 1),
            writer: Mutex::default(),
            index: RwLock::default(),
            spares: Arc::default(),
            next_seq: AtomicU64::new(1),
            next_file: AtomicU64::new(1),
            syncs: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            sync: Mutex::new(()),
        };
        let rec = log.recover(first)?;
        Ok((log, rec))
    }

    fn recover(&self, first: u64) -> io::Result<Recovery> {
        let mut segments = Vec::new();
        let mut max_file = 0;
        for ent in std::fs::read_dir(&self.dir)? {
            let path = ent?.path();
            let Some(n) = file_number(&path) else {
                continue;
            };
            max_file = max_file.max(n);
            if path.extension().is_some_and(|e| e == "tmp") {
                // A spare whose preparation did not finish.
                std::fs::remove_file(&path)?;
                continue;
            }
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let capacity = file.metadata()?.len();
            let mut h = [0u8; HEADER_BYTES as usize];
            let header = if capacity >= HEADER_BYTES {
                file.read_exact_at(&mut h, 0)?;
                parse_header(&h)?
            } else {
                None
            };
            match header {
                Some((first, seq, nonce)) => segments.push(Segment {
                    path,
                    file,
                    seq,
                    nonce,
                    first,
                    capacity,
                }),
                None => self
                    .spares
                    .keep_or_delete(path, capacity, self.segment_bytes)?,
            }
        }
        self.next_file.store(max_file + 1, Ordering::Relaxed);
        segments.sort_by_key(|s| s.seq);
        let max_seq = segments.last().map_or(0, |s| s.seq);
        self.next_seq.store(max_seq + 1, Ordering::Relaxed);

        let mut rec = Recovery {
            segments: segments.len(),
            ..Recovery::default()
        };
        let mut index = Index::default();
        let mut dead = Vec::new();
        let segments: Vec<Arc<Segment>> = segments.into_iter().map(Arc::new).collect();
        for (k, seg) in segments.iter().enumerate() {
            // Where the log read so far ends, counting everything at or below the purge point
            // as present: a segment may start anywhere up to here.
            let reach = index.end().unwrap_or(0).max(first);
            if seg.first > reach {
                if segments[k + 1..].iter().any(|s| s.first <= reach) {
                    // A later segment cuts the log at or below here, so this one's records are
                    // cut too: it is a segment a truncation made dead, and the crash came while
                    // dead segments were being retired, after some before it had gone.
                    dead.push(seg.clone());
                    continue;
                }
                // Past a gap above the purge point, with nothing later reaching back: the
                // tail of an append that never completed (an earlier segment's records did
                // not all reach the disk). It and every later segment go.
                rec.discarded_segments = segments.len() - k;
                dead.extend(segments[k..].iter().cloned());
                break;
            }
            match index.end() {
                // A truncation's segment (or the next one of an append): it replaces the log
                // from its first index on.
                Some(end) if seg.first <= end => dead.extend(index.truncate(seg.first)),
                // The log restarted after a purge beyond its end: everything before is purged.
                Some(_) => dead.extend(index.truncate(0)),
                None => {}
            }
            // An empty run stays: a segment without records still marks where a truncation
            // cut the log, and must outlive the cut segments' stale records.
            let locs = scan(seg)?;
            index.runs.push_back(Run {
                seg: seg.clone(),
                first: seg.first,
                locs,
            });
        }
        if first > 0 {
            dead.extend(index.purge(first - 1));
        }
        rec.entries = index.runs.iter().map(|r| r.locs.len() as u64).sum();
        *self.index.write().expect("index lock") = index;
        // Nothing is appended to a recovered segment: the next append opens a new one, so
        // stale bytes after a recovered segment's last record can never follow a new record.
        self.retire(dead)?;
        Ok(rec)
    }

    /// Turns dead segments into spares (their headers zeroed, so they no longer read as
    /// segments) or deletes them, lowest sequence number first, each zeroing fsync'd before the
    /// next. A purged segment's stale records above the purge point are overridden only by a
    /// later segment (a truncation's), so whatever subset of purged segments survives a crash
    /// must be the later ones. Segments a truncation made dead may survive in any subset: the
    /// truncation's own segment, durable before they are retired, cuts them all, and recovery
    /// skips a gap that a later segment reaches back across.
    /// A spare gets a new header and nonce, fsync'd, before its first record counts.
    fn retire(&self, mut dead: Vec<Arc<Segment>>) -> io::Result<()> {
        dead.sort_by_key(|s| s.seq);
        for seg in dead {
            {
                // A dead segment takes no more appends: the next one opens a new segment.
                let mut w = self.writer.lock().expect("writer lock");
                if w.active.as_ref().is_some_and(|(a, _)| Arc::ptr_eq(a, &seg)) {
                    w.active = None;
                }
            }
            seg.file.write_all_at(&[0u8; HEADER_BYTES as usize], 0)?;
            seg.file.sync_data()?;
            self.spares
                .keep_or_delete(seg.path.clone(), seg.capacity, self.segment_bytes)?;
        }
        Ok(())
    }

    /// The first live index and one past the last, if any entry is live.
    pub fn bounds(&self) -> Option<(u64, u64)> {
        let idx = self.index.read().expect("index lock");
        let (first, end) = (idx.first()?, idx.end()?);
        (first < end).then_some((first, end))
    }

    /// fdatasyncs completed so far.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Acquire)
    }

    /// Payloads of the live entries in `from..to`, in order; stops at the log's end.
    pub fn read(&self, from: u64, to: u64) -> io::Result<Vec<Vec<u8>>> {
        let mut want = Vec::new();
        {
            let idx = self.index.read().expect("index lock");
            for r in &idx.runs {
                if r.end() <= from || r.first >= to {
                    continue;
                }
                let lo = from.max(r.first);
                let hi = to.min(r.end());
                for i in lo..hi {
                    let (off, len) = r.locs[(i - r.first) as usize];
                    want.push((r.seg.clone(), i, off, len));
                }
            }
        }
        let mut out = Vec::with_capacity(want.len());
        for (seg, i, off, len) in want {
            let mut buf = vec![0u8; RECORD_HEADER_BYTES as usize + len as usize];
            seg.file.read_exact_at(&mut buf, off)?;
            let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
            // One read for header and payload; the header is dropped in place, not by
            // allocating and copying a second buffer (this is the replication read path).
            let mut payload = buf;
            payload.drain(..RECORD_HEADER_BYTES as usize);
            if record_crc(seg.nonce, len, i, &payload) != crc {
                return Err(invalid(format!(
                    "log entry {i} in {} fails its checksum",
                    seg.path.display()
                )));
            }
            out.push(payload);
        }
        Ok(out)
    }

    /// Appends `entries` (index, payload), which must follow the log's last entry (or start it
    /// anew when the log is empty), and returns once they are durable: every file written to
    /// was fdatasync'd, in order. The entries are readable from the moment they are written.
    pub fn append<P: AsRef<[u8]>>(&self, entries: &[(u64, P)]) -> io::Result<()> {
        let Some(&(first, _)) = entries.first() else {
            return Ok(());
        };
        let mut w = self.writer.lock().expect("writer lock");
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "an earlier write to the log failed; reopen it to recover what is on disk",
            ));
        }
        if let Some(end) = self.index.read().expect("index lock").end() {
            if first != end {
                return Err(invalid(format!(
                    "append at {first} would leave a hole or overlap: the log ends before {end}"
                )));
            }
        }
        let mut written: Vec<Arc<Segment>> = Vec::new();
        let mut rest = entries;
        while !rest.is_empty() {
            let next_index = rest[0].0;
            // Records that fit in the active segment from its head, if it continues here.
            let (seg, head) = match &w.active {
                Some((seg, head))
                    if self
                        .index
                        .read()
                        .expect("index lock")
                        .runs
                        .back()
                        .is_some_and(|r| Arc::ptr_eq(&r.seg, seg) && r.end() == next_index)
                        && head + RECORD_HEADER_BYTES + rest[0].1.as_ref().len() as u64
                            <= seg.capacity =>
                {
                    (seg.clone(), *head)
                }
                _ => {
                    let need = HEADER_BYTES + RECORD_HEADER_BYTES + rest[0].1.as_ref().len() as u64;
                    let seg = self.start_segment(next_index, need)?;
                    w.active = Some((seg.clone(), HEADER_BYTES));
                    self.index.write().expect("index lock").runs.push_back(Run {
                        seg: seg.clone(),
                        first: next_index,
                        locs: VecDeque::new(),
                    });
                    (seg, HEADER_BYTES)
                }
            };
            // Sized once for what can go into this segment: no regrowth (and copy) of the
            // buffer as records are added, on every append.
            let wanted: u64 = rest
                .iter()
                .map(|(_, p)| RECORD_HEADER_BYTES + p.as_ref().len() as u64)
                .sum();
            let room = seg.capacity - head;
            let mut buf = Vec::with_capacity(wanted.min(room) as usize);
            let mut locs = Vec::with_capacity(rest.len());
            let mut n = 0;
            for (i, payload) in rest {
                let payload = payload.as_ref();
                let len = u32::try_from(payload.len())
                    .ok()
                    .filter(|l| u64::from(*l) <= MAX_RECORD_BYTES)
                    .ok_or_else(|| invalid(format!("log entry {i} is too large to store")))?;
                let at = head + buf.len() as u64;
                if at + RECORD_HEADER_BYTES + u64::from(len) > seg.capacity {
                    break;
                }
                buf.extend_from_slice(&len.to_le_bytes());
                buf.extend_from_slice(&record_crc(seg.nonce, len, *i, payload).to_le_bytes());
                buf.extend_from_slice(&i.to_le_bytes());
                buf.extend_from_slice(payload);
                locs.push((at, len));
                n += 1;
            }
            seg.file
                .write_all_at(&buf, head)
                .inspect_err(|_| self.failed.store(true, Ordering::Release))?;
            w.active = Some((seg.clone(), head + buf.len() as u64));
            {
                let mut idx = self.index.write().expect("index lock");
                let run = idx.runs.back_mut().expect("the active segment has a run");
                run.locs.extend(locs);
            }
            if !written.iter().any(|s| Arc::ptr_eq(s, &seg)) {
                written.push(seg.clone());
            }
            rest = &rest[n..];
            if head + buf.len() as u64 > seg.capacity / 8 {
                self.prepare_spare();
            }
        }
        drop(w);
        let _sync = self.sync.lock().expect("sync lock");
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "an earlier fdatasync of the log failed; these entries may not be durable",
            ));
        }
        for seg in &written {
            seg.file
                .sync_data()
                .inspect_err(|_| self.failed.store(true, Ordering::Release))?;
        }
        self.syncs.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Removes every entry from `index` on, durably: the next segment starts at `index` and its
    /// header is fsync'd before this returns, so a restart replays the cut.
    pub fn truncate(&self, index: u64) -> io::Result<()> {
        let mut w = self.writer.lock().expect("writer lock");
        let dead = {
            let mut idx = self.index.write().expect("index lock");
            if idx.end().is_none_or(|end| index >= end) {
                return Ok(());
            }
            idx.truncate(index)
        };
        let seg = self.start_segment(index, HEADER_BYTES + RECORD_HEADER_BYTES)?;
        self.index.write().expect("index lock").runs.push_back(Run {
            seg: seg.clone(),
            first: index,
            locs: VecDeque::new(),
        });
        w.active = Some((seg, HEADER_BYTES));
        drop(w);
        self.retire(dead)
    }

    /// Drops every entry at or below `index`. Not durable by itself: the caller records the
    /// purge point first, and recovery drops entries at or below it.
    pub fn purge(&self, index: u64) -> io::Result<()> {
        let dead = self.index.write().expect("index lock").purge(index);
        self.retire(dead)
    }

    /// Opens a segment whose first record will be `first`, from a spare when one fits, else a
    /// new file, with its header durable: a spare was written in full and its directory entry
    /// made durable when it was prepared; a new file's size and entry are fsync'd here.
    fn start_segment(&self, first: u64, need: u64) -> io::Result<Arc<Segment>> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let nonce: u64 = rand::random();
        let header = header_bytes(first, seq, nonce);
        let spare = if need <= self.segment_bytes {
            self.spares.take()
        } else {
            None
        };
        let (path, file, capacity) = match spare {
            Some(path) => {
                let file = OpenOptions::new().read(true).write(true).open(&path)?;
                file.write_all_at(&header, 0)?;
                file.sync_data()?;
                (path, file, self.segment_bytes)
            }
            None => {
                let n = self.next_file.fetch_add(1, Ordering::Relaxed);
                let path = segment_path(&self.dir, n);
                let capacity = self.segment_bytes.max(need);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                file.set_len(capacity)?;
                file.write_all_at(&header, 0)?;
                file.sync_all()?;
                fsync_dir(&self.dir)?;
                // Sparse: appends into it allocate blocks as they go, as a growing file's do,
                // until the spare prepared once it is an eighth full takes over. Writing it in
                // full here would cost a new node a segment of writes before its first entry.
                (path, file, capacity)
            }
        };
        Ok(Arc::new(Segment {
            path,
            file,
            seq,
            nonce,
            first,
            capacity,
        }))
    }

    /// Writes a spare in the background when none is ready and none is being written: a file of
    /// the segment size, all zeros, fsync'd with its directory entry, so that appends into it
    /// overwrite allocated blocks.
    fn prepare_spare(&self) {
        if !self.spares.is_empty() || self.spares.preparing.swap(true, Ordering::AcqRel) {
            return;
        }
        let n = self.next_file.fetch_add(1, Ordering::Relaxed);
        let (dir, size) = (self.dir.clone(), self.segment_bytes);
        // The thread holds the spares list, not the log; dropping the log cancels and joins it.
        let spares = self.spares.clone();
        let mut slot = self.spares.writer.lock().expect("spare writer lock");
        if let Some(done) = slot.take() {
            // The previous preparation has finished (`preparing` was clear): reap its thread.
            let _ = done.join();
        }
        *slot = Some(std::thread::spawn(move || {
            match write_spare(&dir, n, size, &spares.cancel) {
                Ok(path) => {
                    if let Err(e) = spares.keep_or_delete(path, size, size) {
                        tracing::warn!(error = %e, "could not file a prepared log segment");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => tracing::warn!(error = %e, "could not prepare a log segment"),
            }
            spares.preparing.store(false, Ordering::Release);
        }));
    }
}

impl Drop for SegLog {
    /// Stops a spare being written (it is removed; at most one 1 MiB write is waited for).
    fn drop(&mut self) {
        self.spares.cancel.store(true, Ordering::Release);
        let writer = self.spares.writer.lock().expect("spare writer lock").take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

/// Writes a zero-filled segment-sized file as `n.tmp`, fsyncs it, links it as `n.seg` (a link,
/// not a rename, so that it can never replace a file of that name) and fsyncs the directory.
/// A failure (a full disk) or a cancellation removes the partial file at once, so the space it
/// took goes back to the log's appends.
fn write_spare(dir: &Path, n: u64, size: u64, cancel: &AtomicBool) -> io::Result<PathBuf> {
    let tmp = dir.join(format!("{n:08}.tmp"));
    let written = fill_spare(&tmp, size, cancel).and_then(|()| {
        let path = segment_path(dir, n);
        std::fs::hard_link(&tmp, &path)?;
        fsync_dir(dir)?;
        Ok(path)
    });
    let _ = std::fs::remove_file(&tmp);
    written
}

fn fill_spare(tmp: &Path, size: u64, cancel: &AtomicBool) -> io::Result<()> {
    let f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    let zeros = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < size {
        if cancel.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "the log was closed",
            ));
        }
        let n = (size - off).min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off)?;
        off += n as u64;
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::FileExt;
    use std::path::Path;
    use std::process::{Command, Stdio};

    use super::*;

    /// A payload that says which index it belongs to, of a length that varies with it.
    fn payload(i: u64, salt: u8) -> Vec<u8> {
        let mut p = i.to_le_bytes().to_vec();
        p.resize(100 + (i % 7) as usize * 50, salt);
        p
    }

    fn batch(from: u64, to: u64, salt: u8) -> Vec<(u64, Vec<u8>)> {
        (from..to).map(|i| (i, payload(i, salt))).collect()
    }

    fn open(dir: &Path, first: u64) -> (SegLog, Recovery) {
        SegLog::open(dir, 4096, first).unwrap()
    }

    fn assert_holds(log: &SegLog, from: u64, to: u64, salt: u8) {
        assert_eq!(log.bounds(), Some((from, to)));
        let got = log.read(from, to).unwrap();
        let want: Vec<_> = (from..to).map(|i| payload(i, salt)).collect();
        assert_eq!(got, want);
    }

    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn entries_survive_a_reopen_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, rec) = open(dir.path(), 0);
            assert_eq!(rec, Recovery::default());
            for k in 0..20 {
                log.append(&batch(k * 10, k * 10 + 10, 1)).unwrap();
            }
            assert_holds(&log, 0, 200, 1);
            assert_eq!(log.read(195, u64::MAX).unwrap().len(), 5);
        }
        let (log, rec) = open(dir.path(), 0);
        assert!(rec.segments > 10, "small segments roll: {rec:?}");
        assert_eq!(rec.entries, 200);
        assert_holds(&log, 0, 200, 1);
        // Appends go on after a reopen, into a new segment.
        log.append(&batch(200, 210, 1)).unwrap();
        drop(log);
        let (log, _) = open(dir.path(), 0);
        assert_holds(&log, 0, 210, 1);
    }

    #[test]
    fn an_append_must_follow_the_last_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), 0);
        log.append(&batch(0, 5, 1)).unwrap();
        let err = log.append(&batch(6, 7, 1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let err = log.append(&batch(4, 6, 1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_holds(&log, 0, 5, 1);
    }

    #[test]
    fn a_truncation_is_durable_with_or_without_a_later_append() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path(), 0);
            log.append(&batch(0, 60, 1)).unwrap();
            log.truncate(30).unwrap();
            assert_holds(&log, 0, 30, 1);
        }
        {
            // The cut entries do not come back, though their bytes are still on disk.
            let (log, _) = open(dir.path(), 0);
            assert_holds(&log, 0, 30, 1);
            log.append(&batch(30, 45, 2)).unwrap();
            // A second cut below the first, into an older segment.
            log.truncate(10).unwrap();
            log.append(&batch(10, 20, 3)).unwrap();
        }
        let (log, _) = open(dir.path(), 0);
        assert_eq!(
            log.read(0, 10).unwrap(),
            (0..10).map(|i| payload(i, 1)).collect::<Vec<_>>()
        );
        assert_eq!(
            log.read(10, 20).unwrap(),
            (10..20).map(|i| payload(i, 3)).collect::<Vec<_>>()
        );
        assert_eq!(log.bounds(), Some((0, 20)));
    }

    #[test]
    fn purged_segments_are_reused_and_the_files_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open(dir.path(), 0);
        let mut most = 0;
        for round in 0..30u64 {
            let from = round * 20;
            log.append(&batch(from, from + 20, 1)).unwrap();
            // Keep the last 5 entries, as a snapshot policy would.
            log.purge(from + 14).unwrap();
            most = most.max(files(dir.path()));
        }
        assert_holds(&log, 595, 600, 1);
        // About 9 entries fill a 4 KiB segment: a round spans 3 or 4 segments, plus spares.
        assert!(most <= 8, "files grew to {most}");
        drop(log);
        // Spares hold old records; reused with a new nonce, none of them reads as an entry.
        let (log, rec) = open(dir.path(), 595);
        assert_eq!(rec.discarded_segments, 0);
        assert_holds(&log, 595, 600, 1);
    }

    #[test]
    fn a_log_reopened_at_once_keeps_what_it_appended() {
        // Each round's append passes an eighth of its segment, so a spare is being written
        // when the log is dropped and opened again: the dropped log's spare must never land on
        // a file the reopened log has started using.
        let dir = tempfile::tempdir().unwrap();
        let mut end = 0;
        for round in 0..30u64 {
            let (log, _) = SegLog::open(dir.path(), 256 << 10, 0).unwrap();
            assert_eq!(log.bounds().map_or(0, |b| b.1), end, "round {round}");
            log.append(&batch(end, end + 200, 1)).unwrap();
            end += 200;
        }
        let (log, _) = SegLog::open(dir.path(), 256 << 10, 0).unwrap();
        assert_holds(&log, 0, end, 1);
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| e
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")),
            "no partial spare is left behind"
        );
    }

    #[test]
    fn a_purge_beyond_the_end_restarts_the_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path(), 0);
            log.append(&batch(0, 10, 1)).unwrap();
            log.purge(99).unwrap();
            assert_eq!(log.bounds(), None);
            log.append(&batch(100, 105, 1)).unwrap();
        }
        let (log, _) = open(dir.path(), 100);
        assert_holds(&log, 100, 105, 1);
    }

    #[test]
    fn a_log_whose_purge_was_not_applied_restarts_at_the_purge_point() {
        // The purge point was recorded, then the process died before the segments went: the
        // old segments and the new one (after a gap at or below the purge point) both remain.
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path(), 0);
            log.append(&batch(0, 10, 1)).unwrap();
            // What purge(99) then append(100..) writes, without dropping the old segments.
            log.index.write().unwrap().runs.clear();
            log.append(&batch(100, 105, 1)).unwrap();
        }
        let (log, rec) = open(dir.path(), 100);
        assert_eq!(rec.discarded_segments, 0);
        assert_holds(&log, 100, 105, 1);
    }

    /// The path of the segment holding `index`.
    fn segment_of(log: &SegLog, index: u64) -> PathBuf {
        let idx = log.index.read().unwrap();
        let run = idx
            .runs
            .iter()
            .find(|r| r.first <= index && index < r.end())
            .unwrap();
        run.seg.path.clone()
    }

    #[test]
    fn a_crash_while_a_truncation_retires_segments_keeps_the_truncation() {
        // A truncation made several segments dead; the process died after the first was zeroed
        // and before the second was, then entries were appended after the cut and reported
        // durable. The surviving dead segment follows a gap, but the truncation's segment
        // reaches back across it: it must be skipped, not taken for a torn append's tail.
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path(), 0);
            log.append(&batch(0, 60, 1)).unwrap();
            let a = segment_of(&log, 5);
            let c = segment_of(&log, 50);
            let b = segment_of(&log, 20);
            assert!(a != b && b != c, "the entries span several segments");
            let c_bytes = std::fs::read(&c).unwrap();
            log.truncate(6).unwrap();
            log.append(&batch(6, 9, 2)).unwrap();
            drop(log);
            // Bring back a later dead segment (zeroed into a spare, or deleted), as if the crash
            // had come before its turn; the dead segments before it are gone.
            std::fs::write(&c, &c_bytes).unwrap();
        }
        let (log, rec) = open(dir.path(), 0);
        assert_eq!(rec.discarded_segments, 0, "{rec:?}");
        assert_eq!(log.bounds(), Some((0, 9)));
        assert_eq!(
            log.read(0, 9).unwrap(),
            (0..9)
                .map(|i| payload(i, if i < 6 { 1 } else { 2 }))
                .collect::<Vec<_>>()
        );
    }

    /// Flips the last byte of `index`'s record.
    fn corrupt_record(log: &SegLog, index: u64) {
        let idx = log.index.read().unwrap();
        let run = idx
            .runs
            .iter()
            .find(|r| r.first <= index && index < r.end())
            .unwrap();
        let (off, len) = run.locs[(index - run.first) as usize];
        let at = off + RECORD_HEADER_BYTES + u64::from(len) - 1;
        let mut b = [0u8; 1];
        run.seg.file.read_exact_at(&mut b, at).unwrap();
        run.seg.file.write_all_at(&[b[0] ^ 0xff], at).unwrap();
    }

    #[test]
    fn recovery_stops_at_a_record_that_does_not_check() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path(), 0);
            log.append(&batch(0, 5, 1)).unwrap();
            corrupt_record(&log, 3);
        }
        let (log, _) = open(dir.path(), 0);
        assert_holds(&log, 0, 3, 1);
        // Index 3 is written again, into a new segment; the bad bytes never count.
        log.append(&batch(3, 8, 2)).unwrap();
        drop(log);
        let (log, _) = open(dir.path(), 0);
        assert_eq!(log.bounds(), Some((0, 8)));
        assert_eq!(log.read(3, 4).unwrap(), vec![payload(3, 2)]);
    }

    #[test]
    fn segments_after_a_torn_one_are_discarded() {
        // An append spanning two segments died before the first was on disk: the second's
        // records follow a gap and were never reported durable.
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path(), 0);
            log.append(&batch(0, 30, 1)).unwrap();
            corrupt_record(&log, 2);
        }
        let (log, rec) = open(dir.path(), 0);
        assert!(rec.discarded_segments >= 1, "{rec:?}");
        assert_holds(&log, 0, 2, 1);
        drop(log);
        let (log, _) = open(dir.path(), 0);
        assert_holds(&log, 0, 2, 1);
    }

    #[test]
    fn a_segment_from_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (log, _) = open(dir.path(), 0);
            log.append(&batch(0, 3, 1)).unwrap();
        }
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut h = [0u8; HEADER_BYTES as usize];
        f.read_exact_at(&mut h, 0).unwrap();
        h[8..10].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..34]);
        h[34..38].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, 0).unwrap();
        let err = SegLog::open(dir.path(), 4096, 0).unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");
    }

    const CHILD_DIR: &str = "FOLIO_SEGLOG_CRASH_DIR";

    /// Not a test on its own: the process `a_killed_writer_loses_no_acknowledged_entry` runs
    /// and kills. Appends batches until killed (or for at most 60 s), printing the last index
    /// of each batch once `append` has returned.
    #[test]
    #[ignore]
    fn crash_child() {
        let Ok(dir) = std::env::var(CHILD_DIR) else {
            return;
        };
        let (log, _) = SegLog::open(Path::new(&dir), 64 << 10, 0).unwrap();
        let started = std::time::Instant::now();
        let mut next = log.bounds().map_or(0, |(_, end)| end);
        while started.elapsed() < std::time::Duration::from_secs(60) {
            let n = 1 + next % 5;
            log.append(&batch(next, next + n, 7)).unwrap();
            next += n;
            println!("{}", next - 1);
        }
    }

    /// Kills a process that is appending, three times over, and checks after each that every
    /// entry it was told was durable is there, whole, with nothing after it but whole entries.
    /// (A process kill keeps the page cache: this tests recovery from a write cut anywhere,
    /// not a power cut.)
    #[test]
    fn a_killed_writer_loses_no_acknowledged_entry() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        for round in 0..3 {
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "seglog::tests::crash_child",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD_DIR, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut acked = None;
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let mut seen = 0;
            while let Some(Ok(line)) = lines.next() {
                if let Ok(i) = line.trim().parse::<u64>() {
                    acked = Some(i);
                    seen += 1;
                    if seen == 400 {
                        break;
                    }
                }
            }
            child.kill().unwrap();
            child.wait().unwrap();
            let acked = acked.expect("the child appended");
            let (log, _) = SegLog::open(dir.path(), 64 << 10, 0).unwrap();
            let (first, end) = log.bounds().unwrap();
            assert_eq!(first, 0);
            assert!(
                end > acked,
                "round {round}: acknowledged {acked}, log ends before {end}"
            );
            assert_holds(&log, 0, end, 7);
        }
    }
}
