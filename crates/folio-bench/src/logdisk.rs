//! What making one Raft log entry durable costs on this machine's disk, by each way a log could be
//! kept: a plain file, a preallocated (recycled) file, and RocksDB's WAL as Folio uses it, tuned
//! in the ways RFC 0009 weighs. One writer, one entry of a one-page commit's size per sample,
//! nothing else on the disk but what the variant itself adds (an apply stream, for two of them).
//!
//! It answers a design question (a log of its own, or RocksDB's with other settings) with
//! numbers from the machine at hand; it is not part of the suite's table.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use folio_raft::seglog::{SegLog, DEFAULT_SEGMENT_BYTES};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteOptions, DB};

use crate::latency::Latencies;
use crate::load::payload;

/// About the size of a one-page commit's log entry (the page and its command's framing).
pub const ENTRY_BYTES: usize = 4096 + 160;
/// Bytes of the preallocated file the recycled variant writes over, wrapping around.
const RECYCLED_FILE_BYTES: u64 = 64 << 20;
/// Memtable size of the recycled-WAL variant: small, so that the WAL rotates (and its old files
/// are reused) several times within a run.
const SMALL_MEMTABLE_BYTES: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Append to a growing file, then fdatasync (the suite's `disk-fsync` floor).
    #[value(name = "file-append")]
    FileAppend,
    /// Overwrite a preallocated, already written file in order, then fdatasync: no size or
    /// extent change for the file system to journal, as in a log of recycled segment files.
    #[value(name = "file-recycled")]
    FileRecycled,
    /// RocksDB as Folio opens it, one synced write per entry, nothing else writing.
    #[value(name = "rocksdb-synced")]
    RocksSynced,
    /// The same, while a second thread applies each entry after it is durable (an unsynced
    /// write of the page and the applied id, into the same database, as Folio does today).
    #[value(name = "rocksdb-shared-apply")]
    RocksSharedApply,
    /// The same apply stream into a second RocksDB instance: the log's WAL carries only the log.
    #[value(name = "rocksdb-split-apply")]
    RocksSplitApply,
    /// RocksDB with `recycle_log_file_num` and a small memtable, so most entries land in a
    /// reused WAL file.
    #[value(name = "rocksdb-recycled-wal")]
    RocksRecycledWal,
    /// RocksDB with `manual_wal_flush`: an unsynced write, then `flush_wal(true)` (the shape an
    /// append that returns before its fsync would take).
    #[value(name = "rocksdb-manual-flush")]
    RocksManualFlush,
    /// Folio's Raft log: `folio_raft::seglog::SegLog`, one append of one entry per sample, in
    /// segments of 64 MiB. Its first segment is filled before sampling starts, so the samples
    /// land in segments written in full beforehand, as a running node's do.
    #[value(name = "segment-log")]
    SegmentLog,
}

impl Variant {
    /// The variant's name on the command line and in the output.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// A scratch directory under `dir`, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(dir: &Path, what: &str) -> anyhow::Result<Scratch> {
        let p = dir.join(format!(".folio-logdisk-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).with_context(|| format!("create {}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fdatasync(f: &File) -> anyhow::Result<()> {
    // SAFETY: fdatasync on a file descriptor owned by `f`, open for the call.
    let rc = unsafe { libc::fdatasync(f.as_raw_fd()) };
    anyhow::ensure!(rc == 0, "fdatasync: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Samples of `variant`, up to `count` or for `limit`, in a scratch directory under `dir`.
pub fn samples(
    dir: &Path,
    variant: Variant,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Latencies> {
    let scratch = Scratch::new(dir, &variant.name())?;
    let entry = payload(11, ENTRY_BYTES);
    let deadline = Instant::now() + limit;
    let mut out = Latencies::default();
    let more = |out: &Latencies| out.count() < count && Instant::now() < deadline;
    match variant {
        Variant::FileAppend => {
            let mut f = File::create(scratch.0.join("log"))?;
            while more(&out) {
                let t = Instant::now();
                f.write_all(&entry)?;
                fdatasync(&f)?;
                out.record(t.elapsed());
            }
        }
        Variant::FileRecycled => {
            let f = File::create(scratch.0.join("log"))?;
            let zeros = vec![0u8; 1 << 20];
            for i in 0..RECYCLED_FILE_BYTES / zeros.len() as u64 {
                f.write_all_at(&zeros, i * zeros.len() as u64)?;
            }
            f.sync_all()?;
            let slots = RECYCLED_FILE_BYTES / ENTRY_BYTES as u64;
            let mut slot = 0u64;
            while more(&out) {
                let t = Instant::now();
                f.write_all_at(&entry, slot * ENTRY_BYTES as u64)?;
                fdatasync(&f)?;
                out.record(t.elapsed());
                slot = (slot + 1) % slots;
            }
        }
        Variant::SegmentLog => {
            let (log, _) = SegLog::open(&scratch.0, DEFAULT_SEGMENT_BYTES, 0)?;
            let mut index = 0u64;
            // Fill the first segment (made sparse, as a fresh node's is), in batches: after
            // it, appends go to spares written in full in the background.
            while index * (ENTRY_BYTES as u64) < DEFAULT_SEGMENT_BYTES {
                let batch: Vec<_> = (index..index + 256).map(|i| (i, entry.clone())).collect();
                log.append(&batch)?;
                index += 256;
            }
            while more(&out) {
                let t = Instant::now();
                log.append(&[(index, entry.clone())])?;
                out.record(t.elapsed());
                index += 1;
            }
        }
        Variant::RocksSynced | Variant::RocksRecycledWal | Variant::RocksManualFlush => {
            let mut opts = folio_like_options();
            if variant == Variant::RocksRecycledWal {
                opts.set_recycle_log_file_num(4);
                opts.set_write_buffer_size(SMALL_MEMTABLE_BYTES);
                opts.set_db_write_buffer_size(SMALL_MEMTABLE_BYTES);
            }
            let manual = variant == Variant::RocksManualFlush;
            opts.set_manual_wal_flush(manual);
            let db = open(&opts, &scratch.0.join("db"), &["log"])?;
            let log = db.cf_handle("log").context("log column family")?;
            let mut i = 0u64;
            while more(&out) {
                let t = Instant::now();
                if manual {
                    db.put_cf(log, i.to_be_bytes(), &entry)?;
                    db.flush_wal(true)?;
                } else {
                    db.put_cf_opt(log, i.to_be_bytes(), &entry, &synced())?;
                }
                out.record(t.elapsed());
                i += 1;
            }
        }
        Variant::RocksSharedApply | Variant::RocksSplitApply => {
            let opts = folio_like_options();
            let log_db = open(&opts, &scratch.0.join("db"), &["log", "sm"])?;
            let split = variant == Variant::RocksSplitApply;
            let sm_db = if split {
                open(&opts, &scratch.0.join("sm"), &["log", "sm"])?
            } else {
                log_db.clone()
            };
            let (tx, rx) = mpsc::sync_channel::<u64>(1024);
            let page = payload(12, 4096);
            let applier = {
                let sm_db = sm_db.clone();
                std::thread::spawn(move || -> anyhow::Result<()> {
                    let sm = sm_db.cf_handle("sm").context("sm column family")?;
                    for i in rx {
                        let mut b = rocksdb::WriteBatch::default();
                        b.put_cf(sm, i.to_be_bytes(), &page);
                        b.put_cf(sm, b"applied", i.to_be_bytes());
                        sm_db.write(b)?;
                    }
                    Ok(())
                })
            };
            let log = log_db.cf_handle("log").context("log column family")?;
            let mut i = 0u64;
            while more(&out) {
                let t = Instant::now();
                log_db.put_cf_opt(log, i.to_be_bytes(), &entry, &synced())?;
                out.record(t.elapsed());
                // Applied once durable, while the next entry is appended.
                if tx.send(i).is_err() {
                    break;
                }
                i += 1;
            }
            drop(tx);
            applier
                .join()
                .map_err(|_| anyhow::anyhow!("the apply thread panicked"))??;
        }
    }
    Ok(out)
}

fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

/// The options `folio_state::db::open_store` uses that bear on the write path.
fn folio_like_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_db_write_buffer_size(128 << 20);
    opts.set_max_total_wal_size(256 << 20);
    opts
}

fn open(opts: &Options, path: &Path, cfs: &[&str]) -> anyhow::Result<std::sync::Arc<DB>> {
    let cfs = cfs
        .iter()
        .map(|n| ColumnFamilyDescriptor::new(*n, Options::default()));
    let db = DB::open_cf_descriptors(opts, path, cfs)
        .with_context(|| format!("open RocksDB in {}", path.display()))?;
    Ok(std::sync::Arc::new(db))
}
