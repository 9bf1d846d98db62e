//! The recorded history of a run: one line of JSON per event, in the order the runner saw them.
//! Every operation is an `invoke` by a logical process followed by exactly one completion by the
//! same process: `ok` (it happened, with what it returned), `fail` (it certainly did not happen)
//! or `info` (unknown: it timed out or the connection broke, so it may or may not have happened).
//! A process never has two operations open at once; after an `info` the worker carries on as a
//! new process, as in Jepsen, because the old operation may still take effect at any later time.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How an operation ended, or `Invoke` for its start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// One micro-operation of a list-append transaction. `Read` carries the list it read on
/// completion (`None` at invocation); `Append` adds one element, unique in the whole run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "lowercase")]
pub enum Mop {
    Read { key: u64, list: Option<Vec<u64>> },
    Append { key: u64, elem: u64 },
}

/// What an operation does. `key` is the register (CAS workload) or the volume (others); fields
/// that are only known at completion are `None` at invocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Body {
    /// A linearizable read of a register: GetSnapshot, then the page at that LSN. `value` 0 is a
    /// page never written.
    Read {
        key: u64,
        lsn: Option<u64>,
        value: Option<u64>,
    },
    /// A single-page commit with `expected_lsn = expected`, writing `new` (never 0, unique per
    /// register); `lsn` is the LSN the commit was acknowledged at.
    Cas {
        key: u64,
        expected: u64,
        new: u64,
        lsn: Option<u64>,
    },
    /// A list-append transaction on one volume: reads at a snapshot, appends committed on top of
    /// it with `expected_lsn` (keys are page indexes of volume `key`). `lsn` is the snapshot of a
    /// read-only transaction, or the commit's LSN.
    Txn {
        key: u64,
        mops: Vec<Mop>,
        lsn: Option<u64>,
    },
    /// A blind write of one page (the durability and watch workloads): the page holds `tag`.
    Write {
        key: u64,
        page: u32,
        tag: u64,
        lsn: Option<u64>,
    },
}

impl Body {
    /// The register or volume the operation is on.
    pub fn key(&self) -> u64 {
        match self {
            Body::Read { key, .. }
            | Body::Cas { key, .. }
            | Body::Txn { key, .. }
            | Body::Write { key, .. } => *key,
        }
    }

    /// Whether the operation changes state when it happens (what the availability figures count).
    pub fn is_write(&self) -> bool {
        match self {
            Body::Read { .. } => false,
            Body::Cas { .. } | Body::Write { .. } => true,
            Body::Txn { mops, .. } => mops.iter().any(|m| matches!(m, Mop::Append { .. })),
        }
    }
}

/// One event of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history, from 0.
    pub index: usize,
    /// Nanoseconds since the run started.
    pub time: u64,
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: OpType,
    #[serde(flatten)]
    pub body: Body,
    /// Why a `fail` or `info` ended so.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// An invocation paired with its completion.
#[derive(Clone, Debug)]
pub struct Pair<'a> {
    pub invoke: &'a Op,
    pub complete: &'a Op,
}

impl Pair<'_> {
    pub fn kind(&self) -> OpType {
        self.complete.kind
    }
}

/// Pairs every invocation with its completion (by process, in order). An invocation without a
/// completion (a history cut short) is paired with itself as if it ended `info` at the end.
pub fn pairs(history: &[Op]) -> Vec<Pair<'_>> {
    let mut open: std::collections::HashMap<u64, usize> = Default::default();
    let mut out: Vec<Pair<'_>> = Vec::new();
    for op in history {
        match op.kind {
            OpType::Invoke => {
                open.insert(op.process, out.len());
                out.push(Pair {
                    invoke: op,
                    complete: op,
                });
            }
            _ => {
                if let Some(i) = open.remove(&op.process) {
                    out[i].complete = op;
                }
            }
        }
    }
    out
}

/// Events a run records at most: past this, workers stop invoking (about 300 MB of history in
/// memory, and what the checkers' bounds are sized for), however long `--time` is.
pub const MAX_EVENTS: usize = 2_000_000;

/// The shared, append-only history of a running workload.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder {
            start,
            ops: Arc::default(),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Appends an event, stamping its index and time.
    pub fn record(&self, process: u64, kind: OpType, body: Body, error: Option<String>) {
        let mut ops = self.ops.lock().expect("history lock is never poisoned");
        let index = ops.len();
        ops.push(Op {
            index,
            time: self.now(),
            process,
            kind,
            body,
            error,
        });
    }

    /// Events recorded so far.
    pub fn len(&self) -> usize {
        self.ops.lock().expect("history lock").len()
    }

    pub fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }
}

/// Writes records (a history, the leader observations) as JSON lines.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, records: &[T]) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for r in records {
        serde_json::to_writer(&mut f, r)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

/// Reads a history written by [`write_jsonl`].
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Op>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}
