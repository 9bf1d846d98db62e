//! The checkpointer: on the leader, moves the page index and commit records of flushed segments
//! from the nodes to the object store, so no node's state grows with the length of history.
//!
//! One checkpoint, version `seq`:
//! 1. plan: the flushed segments no checkpoint covers yet, as a prefix in segment order (a
//!    segment still open or waiting for upload ends it), cut at `checkpoint.entries_max`;
//! 2. build their index run from the replicated state and check it decodes;
//! 3. upload it as `runs/{seq}-{nonce}` (a fresh nonce per attempt, so attempts never collide);
//! 4. merge the newest runs while the older is at most twice the newer (LSM-style, so the number
//!    of runs grows with the logarithm of history), each merge a new run object;
//! 5. write manifest `seq` with a conditional put: the runs, newest first, and the last segment
//!    they cover;
//! 6. propose `Checkpointed { seq, through }`: every replica drops what the runs now hold.
//!
//! Every step is safe to repeat or abandon. Runs are invisible until a manifest names them, a
//! manifest until the replicated state points to it. When manifest `seq` already exists (a
//! previous leader wrote it and lost leadership before step 6), it is adopted as it is: it was
//! complete when written, and what it covers stays flushed. The state machine applies
//! `Checkpointed` only as the next version and only over flushed segments.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use folio_core::{GroupId, SegmentId};
use folio_objstore::{ObjectKey, ObjectStore, PutOutcome, StoreError};
use folio_segment::manifest::{Identity, Manifest, RunRef};
use folio_segment::table::{merge, Table};
use folio_state::{CheckpointPlan, Command, CommandResult, PlanCounts, Raft, StateReader};

use crate::config::{CheckpointConfig, LifecycleConfig};
use crate::history::History;
use crate::lifecycle::{LifecycleState, SharedReport};
use crate::metrics;
use crate::now_ms;

/// Longest pause between attempts after failures.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often the leader looks for work.
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("object store: {0}")]
    Store(#[from] StoreError),
    #[error("local state: {0}")]
    Local(String),
    #[error("{0}")]
    Invalid(String),
    #[error("propose Checkpointed: {0}")]
    Propose(String),
}

impl CheckpointError {
    fn reason(&self) -> &'static str {
        match self {
            CheckpointError::Store(_) => "store",
            CheckpointError::Local(_) => "local",
            CheckpointError::Invalid(_) => "invalid",
            CheckpointError::Propose(_) => "propose",
        }
    }
}

pub(crate) fn local(e: impl ToString) -> CheckpointError {
    CheckpointError::Local(e.to_string())
}

pub struct Checkpointer {
    pub node_id: u64,
    pub group: GroupId,
    pub raft: Raft,
    pub history: Arc<History>,
    pub store: Arc<dyn ObjectStore>,
    pub cfg: CheckpointConfig,
    pub lifecycle: LifecycleConfig,
    pub report: SharedReport,
    pub segment_bytes_max: u64,
}

impl Checkpointer {
    pub(crate) fn reader(&self) -> &StateReader {
        self.history.state()
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// Runs until the node shuts down (the task is aborted).
    pub async fn run(self) {
        let interval = Duration::from_millis(self.cfg.interval_ms);
        // The first segment of the pending plan and when this node first saw it pending.
        let mut pending: Option<(SegmentId, Instant)> = None;
        let mut wait = TICK;
        let lifecycle_every = Duration::from_millis(self.lifecycle.interval_ms);
        let mut next_round = Instant::now() + lifecycle_every;
        let mut lifecycle = LifecycleState::default();
        // What earlier plans counted, so that a plan reads only what was flushed since.
        let mut counts = PlanCounts::default();
        loop {
            tokio::time::sleep(wait).await;
            wait = TICK;
            if !self.is_leader() || self.reader().group_state().restoring {
                pending = None;
                counts = PlanCounts::default();
                continue;
            }
            if Instant::now() >= next_round {
                match self.lifecycle_round(&mut lifecycle).await {
                    Ok(()) => metrics::LIFECYCLE_ROUNDS.with_label_values(&["ok"]).inc(),
                    Err(e) => {
                        metrics::LIFECYCLE_ROUNDS
                            .with_label_values(&["error"])
                            .inc();
                        tracing::warn!(error = %e, "lifecycle round failed; will retry");
                    }
                }
                next_round = Instant::now() + lifecycle_every;
            }
            let (planned, counted) = self.plan(counts).await;
            counts = counted;
            let plan = match planned {
                Ok(Some(p)) => p,
                Ok(None) => {
                    pending = None;
                    metrics::CHECKPOINT_PENDING_ENTRIES.set(0);
                    metrics::CHECKPOINT_AGE_SECONDS.set(0.0);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "checkpoint plan failed");
                    continue;
                }
            };
            let since = match pending {
                Some((first, t)) if first == plan.first => t,
                _ => {
                    let t = Instant::now();
                    pending = Some((plan.first, t));
                    t
                }
            };
            metrics::CHECKPOINT_PENDING_ENTRIES.set(plan.entries as i64);
            metrics::CHECKPOINT_AGE_SECONDS.set(since.elapsed().as_secs_f64());
            if plan.entries < self.cfg.entries_max && since.elapsed() < interval {
                continue;
            }
            let started = Instant::now();
            match self.checkpoint(plan).await {
                Ok(applied) => {
                    if applied {
                        metrics::CHECKPOINT_SECONDS.observe(started.elapsed().as_secs_f64());
                        pending = None;
                    }
                }
                Err(e) => {
                    metrics::CHECKPOINT_ERRORS
                        .with_label_values(&[e.reason()])
                        .inc();
                    tracing::warn!(error = %e, "checkpoint failed; will retry");
                    wait = (since.elapsed() / 4).clamp(TICK, RETRY_MAX);
                }
            }
        }
    }

    /// The next checkpoint's plan, and `counts` with what it counted (empty if the plan
    /// failed: the next one counts afresh).
    async fn plan(
        &self,
        mut counts: PlanCounts,
    ) -> (Result<Option<CheckpointPlan>, CheckpointError>, PlanCounts) {
        let reader = self.reader().clone();
        let max = self.cfg.entries_max;
        let planned = tokio::task::spawn_blocking(move || {
            let plan = reader.checkpoint_plan_counted(max, &mut counts);
            (plan, counts)
        })
        .await;
        match planned {
            Ok((Ok(plan), counts)) => (Ok(plan), counts),
            Ok((Err(e), _)) => (Err(local(e)), PlanCounts::default()),
            Err(e) => (Err(local(e)), PlanCounts::default()),
        }
    }

    /// Writes and proposes the checkpoint `plan` describes. Ok(false) when the state moved on
    /// (nothing to do, or another checkpoint got there first).
    pub async fn checkpoint(&self, plan: CheckpointPlan) -> Result<bool, CheckpointError> {
        let seq = plan.base.map_or(1, |m| m.seq + 1);
        let key = ObjectKey::Manifest {
            group: self.group,
            seq,
        };
        // A manifest with this version may exist already: adopt it.
        if self.store.head(&key).await?.is_some() {
            let existing = self.history.manifest(seq).await.map_err(local)?;
            tracing::info!(seq, through = %existing.through, "adopting a manifest written by an earlier attempt");
            return self.propose(seq, existing.through).await;
        }
        let reader = self.reader().clone();
        let through = plan.through;
        let Some(built) = tokio::task::spawn_blocking(move || reader.build_run(through))
            .await
            .map_err(local)?
            .map_err(local)?
        else {
            return Ok(false);
        };
        if built.base != plan.base {
            return Ok(false);
        }
        let incarnation = self.incarnation().await?;
        let prev: Vec<RunRef> = match plan.base {
            Some(m) => self
                .history
                .manifest(m.seq)
                .await
                .map_err(local)?
                .runs
                .clone(),
            None => Vec::new(),
        };
        let table = decode(built.bytes.clone()).await?;
        let mut runs = vec![
            self.upload_run(seq, plan.first, built.through, &table, built.bytes)
                .await?,
        ];
        runs.extend(prev);
        self.compact(seq, &mut runs).await?;
        let manifest = Manifest {
            group: self.group,
            incarnation,
            seq,
            through: built.through,
            created_ms: now_ms(),
            runs,
        };
        let through = match self.store.put_if_absent(&key, manifest.encode()).await? {
            PutOutcome::Created => {
                metrics::CHECKPOINT_RUNS.set(manifest.runs.len() as i64);
                metrics::CHECKPOINT_RUN_BYTES
                    .set(manifest.runs.iter().map(|r| r.bytes).sum::<u64>() as i64);
                built.through
            }
            // Another leader's attempt won the race for this version: adopt it.
            PutOutcome::AlreadyExists => self.history.manifest(seq).await.map_err(local)?.through,
        };
        self.propose(seq, through).await
    }

    /// The group's incarnation, from its identity object.
    pub(crate) async fn incarnation(&self) -> Result<u128, CheckpointError> {
        let key = ObjectKey::Identity { group: self.group };
        let bytes = self.store.get(&key).await?;
        let id = Identity::decode(&bytes).map_err(|e| CheckpointError::Invalid(e.to_string()))?;
        Ok(id.incarnation)
    }

    pub(crate) async fn upload_run(
        &self,
        seq: u64,
        first: SegmentId,
        last: SegmentId,
        table: &Table,
        bytes: Bytes,
    ) -> Result<RunRef, CheckpointError> {
        let nonce: u64 = rand::random();
        let key = ObjectKey::Run {
            group: self.group,
            seq,
            nonce,
        };
        let len = bytes.len() as u64;
        if self.store.put_if_absent(&key, bytes).await? == PutOutcome::AlreadyExists {
            return Err(CheckpointError::Invalid(format!(
                "run {key} exists already (a nonce collision)"
            )));
        }
        Ok(RunRef {
            seq,
            nonce,
            first,
            last,
            entries: table.entries(),
            bytes: len,
        })
    }

    /// Merges the newest runs while the older of the two newest holds at most twice the newer's
    /// entries and the result stays under `run_bytes_max`.
    async fn compact(&self, seq: u64, runs: &mut Vec<RunRef>) -> Result<(), CheckpointError> {
        while runs.len() >= 2
            && runs[1].entries <= 2 * runs[0].entries
            && runs[0].bytes + runs[1].bytes <= self.cfg.run_bytes_max
        {
            let newer = self.fetch_run(&runs[0]).await?;
            let older = self.fetch_run(&runs[1]).await?;
            let bytes = tokio::task::spawn_blocking(move || merge(&newer, &older))
                .await
                .map_err(local)?
                .map_err(|e| CheckpointError::Invalid(e.to_string()))?;
            let table = decode(bytes.clone()).await?;
            let merged = self
                .upload_run(seq, runs[1].first, runs[0].last, &table, bytes)
                .await?;
            runs.drain(0..2);
            runs.insert(0, merged);
            metrics::CHECKPOINT_MERGES.inc();
        }
        Ok(())
    }

    pub(crate) async fn fetch_run(&self, run: &RunRef) -> Result<Table, CheckpointError> {
        let key = ObjectKey::Run {
            group: self.group,
            seq: run.seq,
            nonce: run.nonce,
        };
        decode(self.store.get(&key).await?).await
    }

    pub(crate) async fn propose(
        &self,
        seq: u64,
        through: SegmentId,
    ) -> Result<bool, CheckpointError> {
        let cmd = Command::Checkpointed { seq, through };
        match crate::batcher::propose(&self.raft, self.segment_bytes_max, cmd)
            .await
            .map_err(|e| CheckpointError::Propose(e.to_string()))?
        {
            CommandResult::Checkpointed(applied) => {
                if applied {
                    metrics::CHECKPOINTS.inc();
                    tracing::info!(seq, %through, "checkpoint applied");
                }
                Ok(applied)
            }
            other => Err(CheckpointError::Propose(format!(
                "unexpected result {other:?}"
            ))),
        }
    }
}

/// Decodes a run, checking every checksum, off the async runtime.
pub(crate) async fn decode(bytes: Bytes) -> Result<Table, CheckpointError> {
    tokio::task::spawn_blocking(move || Table::decode(bytes))
        .await
        .map_err(local)?
        .map_err(|e| CheckpointError::Invalid(format!("run does not decode: {e}")))
}
