//! Group commit. Write commands wait in a bounded queue; a single task takes whatever is waiting
//! (up to `batch_requests_max` commands and `batch_bytes_max` bytes) and proposes it as one Raft
//! entry, so one fsync on each replica serves every writer in the batch. A lone request is
//! proposed at once: the batcher never waits for company. At most `inflight_batches_max` entries
//! are in flight; while they are, new requests queue up and form the next batch.

use std::sync::Arc;

use folio_state::{Command, CommandResult, Raft, Request};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::Limits;
use crate::metrics;
use crate::now_ms;

/// Longest a proposal may wait for its entry to commit. A leader cut off from its followers keeps
/// believing it leads until it hears otherwise; without this bound its batches, and the in-flight
/// permits they hold, would wait forever. The write may still commit later: clients retry with
/// the same idempotency key and learn the outcome.
pub const PROPOSAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Why a command got no result from the state machine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<(u64, String)> },
    #[error("the write queue is full ({0} requests waiting); retry")]
    QueueFull(usize),
    #[error("raft is unavailable: {0}")]
    Unavailable(String),
    /// The write was proposed, but this node stopped leading before it committed: a later
    /// leader may still commit it.
    #[error(
        "this node lost the leadership of term {term} before the write committed, so its outcome \
         is unknown; retry with the same idempotency key"
    )]
    LeadershipLost {
        term: u64,
        leader: Option<(u64, Option<String>)>,
    },
}

struct Pending {
    cmd: Command,
    bytes: usize,
    reply: oneshot::Sender<Result<CommandResult, WriteError>>,
}

/// Handle for submitting commands to the batcher.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
    queue_max: usize,
}

impl Batcher {
    /// `leaders`: the node's [`folio_raft::leader_watch`].
    pub fn start(raft: Raft, leaders: Leaders, limits: Limits) -> Batcher {
        let (tx, rx) = mpsc::channel(limits.write_queue_max);
        tokio::spawn(run(raft, leaders, limits.clone(), rx));
        Batcher {
            tx,
            queue_max: limits.write_queue_max,
        }
    }

    /// Proposes `cmd` and waits for its result.
    pub async fn submit(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        let (reply, rx) = oneshot::channel();
        let bytes = cmd.size_bytes();
        self.tx
            .try_send(Pending { cmd, bytes, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => WriteError::QueueFull(self.queue_max),
                mpsc::error::TrySendError::Closed(_) => {
                    WriteError::Unavailable("node is shutting down".into())
                }
            })?;
        rx.await
            .map_err(|_| WriteError::Unavailable("the batch was dropped".into()))?
    }
}

/// How a proposal ended.
// Lives for one await on the stack; boxing the large variant would allocate once per batch.
#[allow(clippy::large_enum_variant)]
enum Proposed {
    /// openraft answered, or the proposal timed out (`Err`).
    Done(Result<Written, tokio::time::error::Elapsed>),
    /// This node stopped leading the term it proposed at before openraft answered.
    Lost(u64),
}

/// Proposes `req` and waits for openraft's answer, for at most [`PROPOSAL_TIMEOUT`], and no
/// longer than this node leads the term it proposed at: a leader that steps down (check-quorum,
/// or a higher term) keeps its pending entries in openraft until a later leader commits or
/// overwrites them, which may be only when a partition heals.
async fn propose_while_leading(raft: &Raft, me: u64, leaders: &Leaders, req: Request) -> Proposed {
    let mut leaders = leaders.clone();
    let view = *leaders.borrow_and_update();
    let write = tokio::time::timeout(PROPOSAL_TIMEOUT, raft.client_write(req));
    if view.leader != Some(me) {
        // Not leading: openraft answers at once, naming the leader it knows.
        return Proposed::Done(write.await);
    }
    tokio::select! {
        biased;
        r = write => Proposed::Done(r),
        _ = leaders.wait_for(|v| *v != view) => Proposed::Lost(view.term),
    }
}

/// The node's [`folio_raft::leader_watch`].
pub type Leaders = tokio::sync::watch::Receiver<folio_raft::LeaderView>;

/// openraft's answer to a proposal.
type Written = Result<
    openraft::raft::ClientWriteResponse<folio_state::TypeConfig>,
    RaftError<u64, ClientWriteError<u64, folio_raft::RaftNode>>,
>;

async fn run(raft: Raft, leading: Leaders, limits: Limits, mut rx: mpsc::Receiver<Pending>) {
    let me = raft.metrics().borrow().id;
    let inflight = Arc::new(Semaphore::new(limits.inflight_batches_max));
    // A request taken from the queue that did not fit in the previous batch.
    let mut carry: Option<Pending> = None;
    loop {
        let permit = inflight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < limits.batch_requests_max {
            match rx.try_recv() {
                Ok(p) if bytes + p.bytes > limits.batch_bytes_max => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    bytes += p.bytes;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        metrics::BATCH_REQUESTS.observe(batch.len() as f64);
        metrics::BATCH_BYTES.observe(bytes as f64);
        let raft = raft.clone();
        let leading = leading.clone();
        let segment_bytes_max = limits.segment_bytes_max;
        tokio::spawn(async move {
            let (commands, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
            let req = Request {
                time_ms: now_ms(),
                segment_bytes_max,
                commands,
            };
            let res = match propose_while_leading(&raft, me, &leading, req).await {
                Proposed::Done(r) => r,
                Proposed::Lost(term) => {
                    drop(permit);
                    let err = WriteError::LeadershipLost {
                        term,
                        leader: folio_raft::leader_of(&raft),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                    return;
                }
            };
            drop(permit);
            match res {
                Err(_) => {
                    let err = WriteError::Unavailable(format!(
                        "the write did not commit within {PROPOSAL_TIMEOUT:?} and its outcome is \
                         unknown; retry with the same idempotency key"
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
                Ok(Ok(resp)) => {
                    let results = resp.data.results;
                    debug_assert_eq!(results.len(), replies.len());
                    for (reply, r) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Ok(Err(e)) => {
                    let err = match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                            WriteError::NotLeader {
                                leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                            }
                        }
                        other => WriteError::Unavailable(other.to_string()),
                    };
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}

/// Proposes one command straight to Raft, not through the client write queue: the background
/// tasks' entries (Seal, Flushed, Checkpointed, Restore) do not wait behind client writes, so a
/// busy group cannot starve its own flushes and checkpoints. Stamped like a client batch.
pub async fn propose(
    raft: &Raft,
    segment_bytes_max: u64,
    cmd: Command,
) -> Result<CommandResult, WriteError> {
    let req = Request {
        time_ms: now_ms(),
        segment_bytes_max,
        commands: vec![cmd],
    };
    match tokio::time::timeout(PROPOSAL_TIMEOUT, raft.client_write(req)).await {
        Err(_) => Err(WriteError::Unavailable("proposal timed out".into())),
        Ok(Err(e)) => Err(WriteError::Unavailable(e.to_string())),
        Ok(Ok(resp)) => resp
            .data
            .results
            .into_iter()
            .next()
            .ok_or_else(|| WriteError::Unavailable("empty response".into())),
    }
}
