//! Workloads: clients that drive the group for a bounded time and record every operation.
//!
//! - `cas`: one register per volume (page 0); reads are GetSnapshot then ReadPages at that LSN,
//!   writes are single-page commits with `expected_lsn` set to the last LSN the worker saw.
//! - `append`: list-append transactions; each list is one page of a volume, a transaction reads
//!   some lists at a snapshot and commits its appends on top of it with `expected_lsn`.
//! - `durable`: blind single-page writes as fast as the group takes them (rebased on conflict).
//! - `watch`: the durable writers plus WatchVolume streams that resume where they broke off.
//!
//! Every workload's acknowledged writes are checked for durability afterwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_client::{Client, Error};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use crate::history::{Body, Mop, OpType, Recorder};

pub const WORKLOADS: &[&str] = &["cas", "append", "durable", "watch"];

/// What every worker shares.
pub struct Ctx {
    pub rec: Recorder,
    pub client: Arc<Client>,
    /// Nanoseconds since the start when workers stop invoking.
    pub until: u64,
    pub op_timeout: Duration,
    pub volumes: Vec<VolumeId>,
    next_process: AtomicU64,
    next_elem: AtomicU64,
    /// Appends so far per volume (moves the append workload's window of keys).
    appends: Vec<AtomicU64>,
}

impl Ctx {
    pub fn new(
        rec: Recorder,
        client: Arc<Client>,
        until: u64,
        op_timeout: Duration,
        volumes: Vec<VolumeId>,
    ) -> Arc<Ctx> {
        let appends = volumes.iter().map(|_| AtomicU64::new(0)).collect();
        Arc::new(Ctx {
            rec,
            client,
            until,
            op_timeout,
            volumes,
            next_process: AtomicU64::new(0),
            next_elem: AtomicU64::new(1),
            appends,
        })
    }

    pub fn process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether workers go on invoking: until the run's time is up or its history is full.
    fn running(&self) -> bool {
        self.rec.now() < self.until && self.rec.len() < crate::history::MAX_EVENTS
    }
}

/// How an error ends an operation: `fail` only when it certainly did not happen.
fn outcome(e: &Error) -> OpType {
    match e {
        Error::Conflict { .. }
        | Error::NotFound(_)
        | Error::AlreadyExists(_)
        | Error::Invalid { .. } => OpType::Fail,
        _ => OpType::Info,
    }
}

/// The bytes the register workload writes for `value`.
pub fn register_page(value: u64) -> Bytes {
    let mut p = vec![0u8; PAGE_SIZE];
    p[..8].copy_from_slice(&value.to_le_bytes());
    Bytes::from(p)
}

/// The value a register page holds. A page shorter than it should be (a server bug) reads as
/// zero-padded, so the checker reports a wrong value rather than the runner panicking.
pub fn register_value(page: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = page.len().min(8);
    b[..n].copy_from_slice(&page[..n]);
    u64::from_le_bytes(b)
}

/// Most elements a list page holds.
pub const LIST_MAX: usize = PAGE_SIZE / 4 - 1;

pub fn list_page(list: &[u64]) -> Bytes {
    let mut p = vec![0u8; PAGE_SIZE];
    p[..4].copy_from_slice(&(list.len() as u32).to_le_bytes());
    for (i, e) in list.iter().enumerate() {
        p[4 + 4 * i..8 + 4 * i].copy_from_slice(&(*e as u32).to_le_bytes());
    }
    Bytes::from(p)
}

/// The list a page holds, bounded by what the page can hold and by its actual length, so a short
/// or garbled page (a server bug) shows up as a wrong list for the checker, never a panic.
pub fn list_of(page: &[u8]) -> Vec<u64> {
    let word = |i: usize| -> Option<u32> {
        let b = page.get(4 * i..4 * i + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let n = word(0).unwrap_or(0) as usize;
    (1..=n.min(LIST_MAX))
        .map_while(word)
        .map(u64::from)
        .collect()
}

/// The durable workload's page for `tag`: every byte depends on the tag, so a page returned
/// from the wrong commit or torn shows.
pub fn tagged_page(tag: u64) -> Bytes {
    let mut p = vec![0u8; PAGE_SIZE];
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in p.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    p[..8].copy_from_slice(&tag.to_le_bytes());
    Bytes::from(p)
}

async fn timed<T>(
    ctx: &Ctx,
    f: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, (OpType, String)> {
    match tokio::time::timeout(ctx.op_timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err((outcome(&e), e.to_string())),
        Err(_) => Err((OpType::Info, "timed out".into())),
    }
}

/// A linearizable read of page 0: the snapshot LSN, then the page at it.
pub async fn read_register(ctx: &Ctx, v: VolumeId) -> Result<(u64, u64), Error> {
    let lsn = ctx.client.snapshot(v).await?;
    let pages = ctx.client.read_pages(v, lsn, &[0]).await?;
    Ok((lsn.0, register_value(&pages[0].data)))
}

/// One CAS-register worker on register `key`.
pub async fn cas_worker(ctx: Arc<Ctx>, key: usize, w: u64, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let v = ctx.volumes[key];
    let mut process = ctx.process();
    let mut last = 0u64;
    let mut seq = 0u64;
    while ctx.running() {
        let key64 = key as u64;
        if rng.random_bool(0.5) {
            let body = |lsn, value| Body::Read {
                key: key64,
                lsn,
                value,
            };
            ctx.rec
                .record(process, OpType::Invoke, body(None, None), None);
            match timed(&ctx, read_register(&ctx, v)).await {
                Ok((lsn, value)) => {
                    last = lsn;
                    ctx.rec
                        .record(process, OpType::Ok, body(Some(lsn), Some(value)), None);
                }
                Err((kind, e)) => {
                    ctx.rec.record(process, kind, body(None, None), Some(e));
                    if kind == OpType::Info {
                        process = ctx.process();
                    }
                }
            }
        } else {
            seq += 1;
            let new = (w + 1) << 32 | seq;
            let expected = last;
            let body = |lsn| Body::Cas {
                key: key64,
                expected,
                new,
                lsn,
            };
            let commit = ctx.client.commit(
                v,
                Lsn(last),
                vec![(0, register_page(new))],
                format!("cas-{w}-{seq}"),
            );
            record_commit(&ctx, &mut process, &mut last, commit, body).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
    }
}

/// Records the invocation of a single-page commit (`body(lsn)` describes it), runs it under the
/// deadline and records how it ended. `last` becomes the LSN the worker builds on next (the
/// commit's, or the current one a conflict names); after an indeterminate end the worker goes on
/// as a new `process`, since the old operation may still take effect.
async fn record_commit(
    ctx: &Ctx,
    process: &mut u64,
    last: &mut u64,
    commit: impl std::future::Future<Output = Result<folio_client::Committed, Error>>,
    body: impl Fn(Option<u64>) -> Body,
) {
    ctx.rec.record(*process, OpType::Invoke, body(None), None);
    let (kind, error) = match tokio::time::timeout(ctx.op_timeout, commit).await {
        Ok(Ok(c)) => {
            *last = c.lsn.0;
            ctx.rec
                .record(*process, OpType::Ok, body(Some(c.lsn.0)), None);
            return;
        }
        Ok(Err(e)) => {
            if let Error::Conflict { current, .. } = &e {
                *last = current.0;
            }
            (outcome(&e), e.to_string())
        }
        Err(_) => (OpType::Info, "timed out".to_string()),
    };
    ctx.rec.record(*process, kind, body(None), Some(error));
    if kind == OpType::Info {
        *process = ctx.process();
    }
}

/// Keys (pages) a list-append transaction may use now: a window that moves on as the volume's
/// lists fill, so no list outgrows its page.
fn window(ctx: &Ctx, vol: usize) -> std::ops::Range<u64> {
    let lo = ctx.appends[vol].load(Ordering::Relaxed) / 64;
    lo..lo + 5
}

/// One list-append worker on volume `vol`.
pub async fn append_worker(ctx: Arc<Ctx>, vol: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let v = ctx.volumes[vol];
    let mut process = ctx.process();
    while ctx.running() {
        let keys: Vec<u64> = window(&ctx, vol).collect();
        let read_only = rng.random_bool(0.2);
        let n_app = if read_only {
            0
        } else {
            rng.random_range(1..=2)
        };
        let n_read = rng.random_range(if read_only { 1 } else { 0 }..=2);
        let mut appends: Vec<u64> = keys.choose_multiple(&mut rng, n_app).copied().collect();
        appends.sort_unstable();
        let mut reads: Vec<u64> = appends.clone();
        for k in keys.choose_multiple(&mut rng, n_read) {
            if !reads.contains(k) {
                reads.push(*k);
            }
        }
        reads.sort_unstable();
        let elems: Vec<u64> = appends
            .iter()
            .map(|_| ctx.next_elem.fetch_add(1, Ordering::Relaxed))
            .collect();
        let mops = |lists: Option<&HashMap<u64, Vec<u64>>>| -> Vec<Mop> {
            reads
                .iter()
                .map(|k| Mop::Read {
                    key: *k,
                    list: lists.map(|l| l[k].clone()),
                })
                .chain(
                    appends
                        .iter()
                        .zip(&elems)
                        .map(|(k, e)| Mop::Append { key: *k, elem: *e }),
                )
                .collect()
        };
        let body = |lists: Option<&HashMap<u64, Vec<u64>>>, lsn| Body::Txn {
            key: vol as u64,
            mops: mops(lists),
            lsn,
        };
        ctx.rec
            .record(process, OpType::Invoke, body(None, None), None);
        let txn = async {
            let lsn = ctx.client.snapshot(v).await?;
            let idx: Vec<u32> = reads.iter().map(|k| *k as u32).collect();
            let pages = ctx.client.read_pages(v, lsn, &idx).await?;
            let lists: HashMap<u64, Vec<u64>> = reads
                .iter()
                .zip(&pages)
                .map(|(k, p)| (*k, list_of(&p.data)))
                .collect();
            if appends.is_empty() {
                return Ok((lists, lsn.0));
            }
            let mut writes = Vec::new();
            for (k, e) in appends.iter().zip(&elems) {
                let mut l = lists[k].clone();
                if l.len() >= LIST_MAX {
                    return Err(Error::Invalid {
                        code: folio_client::Code::OutOfRange,
                        message: format!("list {k} is full"),
                    });
                }
                l.push(*e);
                writes.push((*k as u32, list_page(&l)));
            }
            let key = format!("txn-{}", elems[0]);
            let c = ctx.client.commit(v, lsn, writes, key).await?;
            Ok((lists, c.lsn.0))
        };
        match timed(&ctx, txn).await {
            Ok((lists, lsn)) => {
                ctx.appends[vol].fetch_add(appends.len() as u64, Ordering::Relaxed);
                ctx.rec
                    .record(process, OpType::Ok, body(Some(&lists), Some(lsn)), None);
            }
            Err((kind, e)) => {
                ctx.rec.record(process, kind, body(None, None), Some(e));
                if kind == OpType::Info {
                    ctx.appends[vol].fetch_add(appends.len() as u64, Ordering::Relaxed);
                    process = ctx.process();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..10))).await;
    }
}

/// One blind writer on volume `vol`: each write is a new unique tag on a random page of 256,
/// committed on the last LSN the worker knows; a conflict is a definite failure and teaches it
/// the current LSN.
pub async fn write_worker(ctx: Arc<Ctx>, vol: usize, w: u64, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let v = ctx.volumes[vol];
    let mut process = ctx.process();
    let mut last = 0u64;
    let mut seq = 0u64;
    while ctx.running() {
        seq += 1;
        let tag = (w + 1) << 32 | seq;
        let page = rng.random_range(0..256u32);
        let body = |lsn| Body::Write {
            key: vol as u64,
            page,
            tag,
            lsn,
        };
        let commit = ctx.client.commit(
            v,
            Lsn(last),
            vec![(page, tagged_page(tag))],
            format!("w-{tag}"),
        );
        record_commit(&ctx, &mut process, &mut last, commit, body).await;
    }
}

/// What one watcher received: (nanoseconds since start, LSN, pages) per event, and how many
/// times its stream broke and was resumed.
#[derive(Debug, Default)]
pub struct WatchLog {
    pub volume: usize,
    pub since: u64,
    pub events: Vec<(u64, u64, Vec<u32>)>,
    pub resumes: u64,
}

/// Watches volume `vol` from LSN `since` until it has seen `stop` (once that is set above 0) or
/// `give_up` passes; resumes from the last LSN it saw whenever the stream ends.
pub async fn watcher(
    ctx: Arc<Ctx>,
    vol: usize,
    since: u64,
    stop: tokio::sync::watch::Receiver<u64>,
    give_up: tokio::time::Instant,
) -> WatchLog {
    use tokio_stream::StreamExt;
    let mut log = WatchLog {
        volume: vol,
        since,
        ..Default::default()
    };
    let v = ctx.volumes[vol];
    let mut last = since;
    let done = |last: u64| {
        let s = *stop.borrow();
        s > 0 && last >= s
    };
    while !done(last) && tokio::time::Instant::now() < give_up {
        let stream = tokio::time::timeout(ctx.op_timeout, ctx.client.watch(v, Lsn(last))).await;
        let Ok(Ok(mut stream)) = stream else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            log.resumes += 1;
            continue;
        };
        loop {
            if done(last) {
                break;
            }
            let next = tokio::time::timeout(Duration::from_secs(1), stream.next()).await;
            match next {
                Ok(Some(Ok(ev))) => {
                    last = last.max(ev.lsn);
                    log.events.push((ctx.rec.now(), ev.lsn, ev.page_idx));
                }
                Ok(Some(Err(_))) | Ok(None) => {
                    log.resumes += 1;
                    break;
                }
                // Quiet for a second: look at the stop signal and the clock again.
                Err(_) => {
                    if tokio::time::Instant::now() >= give_up {
                        break;
                    }
                }
            }
        }
    }
    log
}

/// After healing: one more read of every register or list, retried until it succeeds (30 s at
/// most), so the checkers see the final state. Returns what could not be read.
pub async fn final_reads(ctx: &Ctx, workload: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, v) in ctx.volumes.iter().enumerate() {
        let key = i as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let process = ctx.process();
            let done = match workload {
                "cas" => {
                    let body = |lsn, value| Body::Read { key, lsn, value };
                    ctx.rec
                        .record(process, OpType::Invoke, body(None, None), None);
                    match timed(ctx, read_register(ctx, *v)).await {
                        Ok((lsn, value)) => {
                            ctx.rec
                                .record(process, OpType::Ok, body(Some(lsn), Some(value)), None);
                            true
                        }
                        Err((kind, e)) => {
                            ctx.rec.record(process, kind, body(None, None), Some(e));
                            false
                        }
                    }
                }
                "append" => {
                    let keys: Vec<u64> = (0..window(ctx, i).end.min(1024)).collect();
                    let body = |lists: Option<&HashMap<u64, Vec<u64>>>, lsn| Body::Txn {
                        key,
                        mops: keys
                            .iter()
                            .map(|k| Mop::Read {
                                key: *k,
                                list: lists.map(|l| l[k].clone()),
                            })
                            .collect(),
                        lsn,
                    };
                    ctx.rec
                        .record(process, OpType::Invoke, body(None, None), None);
                    let read = async {
                        let lsn = ctx.client.snapshot(*v).await?;
                        let idx: Vec<u32> = keys.iter().map(|k| *k as u32).collect();
                        let pages = ctx.client.read_pages(*v, lsn, &idx).await?;
                        let lists: HashMap<u64, Vec<u64>> = keys
                            .iter()
                            .zip(&pages)
                            .map(|(k, p)| (*k, list_of(&p.data)))
                            .collect();
                        Ok((lists, lsn.0))
                    };
                    match timed(ctx, read).await {
                        Ok((lists, lsn)) => {
                            ctx.rec.record(
                                process,
                                OpType::Ok,
                                body(Some(&lists), Some(lsn)),
                                None,
                            );
                            true
                        }
                        Err((kind, e)) => {
                            ctx.rec.record(process, kind, body(None, None), Some(e));
                            false
                        }
                    }
                }
                _ => true,
            };
            if done {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                errors.push(format!("final read of volume {i} failed for 30 s"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_round_trip_and_short_pages_never_panic() {
        assert_eq!(register_value(&register_page(0xABCD)), 0xABCD);
        let list = vec![3, 1, 4, 1, 5];
        assert_eq!(list_of(&list_page(&list)), list);
        let full: Vec<u64> = (0..LIST_MAX as u64).collect();
        assert_eq!(list_of(&list_page(&full)), full);
        // A short page: what it holds, zero-padded or cut, never a panic.
        assert_eq!(register_value(&[7]), 7);
        assert_eq!(register_value(&[]), 0);
        let short = list_page(&list);
        assert_eq!(list_of(&short[..4 + 4 * 2]), vec![3, 1]);
        assert_eq!(list_of(&short[..2]), Vec::<u64>::new());
        // A garbled length is bounded by what a page can hold.
        let mut garbled = vec![0xFFu8; PAGE_SIZE];
        garbled[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(list_of(&garbled).len(), LIST_MAX);
    }
}
