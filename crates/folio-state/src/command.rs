//! What a group replicates: a [`Request`] is one Raft entry holding a batch of client commands
//! (group commit), and a [`Response`] holds one result per command, in order.

use bytes::Bytes;
use folio_core::{CommitArgs, Lsn, PageIdx, PageLocation, SegmentId, VolumeId, WritePagesArgs};
use serde::{Deserialize, Serialize};

use crate::state::{ManifestRef, Retention, VolumeHead};

/// One Raft entry's payload. The leader stamps it with its clock and the group's segment size
/// limit, so every replica makes the same segment decisions whatever its own clock or config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub time_ms: u64,
    pub segment_bytes_max: u64,
    pub commands: Vec<Command>,
}

/// A client command, already validated at the gRPC edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateVolume {
        volume: VolumeId,
    },
    /// A CAS commit. `fingerprint` identifies the request's content, so a retry that reuses an
    /// idempotency key with different content is refused instead of answered with the wrong
    /// result.
    Commit {
        args: CommitArgs,
        fingerprint: u128,
    },
    WritePages {
        args: WritePagesArgs,
    },
    /// Close the open segment if it is still `segment` (the flusher's time-based seal; a segment
    /// that filled up was already sealed by the state machine).
    Seal {
        segment: SegmentId,
    },
    /// `segment` is in the object store: every replica drops its pages from the buffer.
    Flushed {
        segment: SegmentId,
    },
    // A log entry names its command by variant name: never rename or remove one (see
    // `folio_raft::codec`).
    /// Manifest version `seq` is in the object store and its runs hold the index and commit
    /// records of every segment up to and including `through`: every replica drops those from
    /// its own column families (reads then go through the manifest). Applied only as the next
    /// version in sequence, and only when every segment up to `through` is flushed.
    Checkpointed {
        seq: u64,
        through: SegmentId,
    },
    /// One step of rebuilding an empty group's state from the bucket (`folio server --restore`).
    Restore {
        step: RestoreStep,
    },
    /// Raise volumes' retention horizons: snapshots below a volume's horizon are refused from
    /// then on, so a later checkpoint may drop what only they could see. A horizon only moves
    /// forward and never past the volume's head.
    Retain {
        horizons: Vec<(VolumeId, Lsn)>,
        /// For each horizon, the volume's own retention it was computed under (`None`: the
        /// group's default). A volume whose retention changed since is left alone: a round that
        /// began before a longer retention was set must not act on the shorter one. Empty in
        /// entries written before it existed (no check).
        #[serde(default)]
        under: Vec<Option<Retention>>,
    },
    /// Delete a volume: it answers NOT_FOUND from then on, later checkpoints drop its history,
    /// and its id is never given to a new volume.
    DeleteVolume {
        volume: VolumeId,
    },
    /// Create `volume` as a fork of `source` at LSN `at` (its head when `None`): the new
    /// volume's LSN 0 holds the source's pages as of `at`, shared, not copied. Writes to either
    /// never show in the other.
    ForkVolume {
        volume: VolumeId,
        source: VolumeId,
        at: Option<Lsn>,
    },
    /// Give a volume its own retention, or (`None`) return it to the group's default. Raising
    /// it never brings back what an earlier, shorter retention already dropped.
    SetRetention {
        volume: VolumeId,
        retention: Option<Retention>,
    },
}

/// The steps of a rebuild, proposed in order by the leader that runs it. Each step is safe to
/// propose again (a new leader restarts the rebuild from `Begin`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreStep {
    /// Starts a rebuild of an empty group: the checkpoint found in the bucket, and where segment
    /// numbering continues so new segment ids sort after every id already in the bucket.
    Begin {
        manifest: Option<ManifestRef>,
        last_time_ms: u64,
        next_segment_seq: u32,
    },
    /// Volume heads as of the newest flushed commit.
    Volumes { heads: Vec<(VolumeId, VolumeHead)> },
    /// Commit records: those of flushed segments after the checkpoint (`indexed`: kept in the
    /// node's index until the next checkpoint covers them) and, for the idempotency window, older
    /// ones (only their keys are kept).
    Commits { records: Vec<RestoredCommit> },
    /// The rebuild is complete: client writes are accepted again.
    End,
}

/// A commit record read back from the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredCommit {
    pub volume: VolumeId,
    pub lsn: Lsn,
    pub committed_at_ms: u64,
    pub idempotency_key: Bytes,
    pub fingerprint: u128,
    pub pages: Vec<PageLocation>,
    /// The segment that carried the record.
    pub segment: SegmentId,
    pub indexed: bool,
}

impl Command {
    pub fn commit(args: CommitArgs) -> Self {
        let fingerprint = commit_fingerprint(&args);
        Command::Commit { args, fingerprint }
    }

    /// Bytes this command adds to a Raft entry, for batch limits.
    pub fn size_bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        match self {
            Command::CreateVolume { .. } => OVERHEAD,
            Command::Commit { args, .. } => {
                OVERHEAD
                    + args.idempotency_key.len()
                    + args.pages.len() * (folio_core::PAGE_SIZE + 8)
                    + args.refs.len() * 32
            }
            Command::WritePages { args } => {
                OVERHEAD + args.pages.len() * (folio_core::PAGE_SIZE + 8)
            }
            Command::Seal { .. }
            | Command::Flushed { .. }
            | Command::Checkpointed { .. }
            | Command::DeleteVolume { .. }
            | Command::ForkVolume { .. }
            | Command::SetRetention { .. } => OVERHEAD,
            Command::Retain { horizons, under } => {
                OVERHEAD + horizons.len() * 32 + under.len() * 24
            }
            Command::Restore { step } => {
                OVERHEAD
                    + match step {
                        RestoreStep::Begin { .. } | RestoreStep::End => 0,
                        RestoreStep::Volumes { heads } => heads.len() * 40,
                        RestoreStep::Commits { records } => records
                            .iter()
                            .map(|r| 96 + r.idempotency_key.len() + r.pages.len() * 32)
                            .sum(),
                    }
            }
        }
    }

    /// Page bytes this command adds to the buffer.
    pub fn page_bytes(&self) -> u64 {
        let pages = match self {
            Command::Commit { args, .. } => args.pages.len(),
            Command::WritePages { args } => args.pages.len(),
            _ => 0,
        };
        (pages * folio_core::PAGE_SIZE) as u64
    }
}

/// A content hash of the pages a commit writes. It leaves out `expected_lsn` on purpose: a client
/// that rebases a retry onto a newer LSN with the same key must get the original result if the
/// first attempt did commit; only reusing a key for different pages is refused.
pub fn commit_fingerprint(args: &CommitArgs) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(args.volume.as_bytes());
    for p in &args.pages {
        h.update(&p.idx.0.to_le_bytes());
        h.update(p.page.bytes());
    }
    h.update(&[0xff]);
    for r in &args.refs {
        h.update(&r.idx.0.to_le_bytes());
        h.update(r.segment.as_bytes());
        h.update(&r.offset.to_le_bytes());
    }
    h.digest128()
}

/// Results of one entry's commands, in command order. Membership and blank entries have none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<CommandResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    VolumeCreated {
        volume: VolumeId,
    },
    Committed {
        lsn: Lsn,
        pages: Vec<PageLocation>,
        deduplicated: bool,
        /// The segment that carries the commit record.
        segment: SegmentId,
    },
    PagesWritten {
        pages: Vec<PageLocation>,
    },
    /// Whether the segment was still open and is now sealed.
    Sealed(bool),
    /// Buffer bytes dropped (0 when the segment was already flushed).
    Flushed(u64),
    Rejected(Rejection),
    /// Whether the checkpoint was applied (false: stale, already applied or out of order).
    Checkpointed(bool),
    /// A rebuild step was applied.
    Restored,
    /// How many volumes' horizons moved.
    Retained(u64),
    /// The volume is deleted; `already`: an earlier DeleteVolume had deleted it.
    VolumeDeleted {
        volume: VolumeId,
        already: bool,
    },
    VolumeForked {
        volume: VolumeId,
        source: VolumeId,
        at: Lsn,
    },
    RetentionSet {
        volume: VolumeId,
    },
}

/// Why the state machine refused a command. Refusals are deterministic: every replica refuses
/// the same command for the same reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("volume {0} does not exist")]
    UnknownVolume(VolumeId),
    #[error("volume {0} already exists")]
    VolumeExists(VolumeId),
    #[error("volume {volume} is at LSN {current}, not at the expected LSN {expected}")]
    Conflict {
        volume: VolumeId,
        expected: Lsn,
        current: Lsn,
    },
    #[error(
        "idempotency key was already used for LSN {lsn} of volume {volume} with different content"
    )]
    KeyReused { volume: VolumeId, lsn: Lsn },
    #[error("segment ref for page {idx}: {reason}")]
    BadRef { idx: PageIdx, reason: String },
    #[error("the group is being rebuilt from the object store; writes resume when it completes")]
    Restoring,
    #[error("cannot rebuild: {0}")]
    RestoreRefused(String),
    #[error("volume {0} was deleted")]
    Deleted(VolumeId),
    #[error(
        "volume id {0} belonged to a volume that was deleted; ids are never reused, choose another"
    )]
    IdRetired(VolumeId),
    #[error("cannot fork volume {source_volume} at LSN {at}: {reason}")]
    ForkPoint {
        source_volume: VolumeId,
        at: Lsn,
        reason: String,
    },
    #[error(
        "cannot fork volume {0}: it is already a fork {depth} levels deep, the most allowed",
        depth = crate::state::MAX_FORK_DEPTH
    )]
    ForkTooDeep(VolumeId),
}

/// An idempotency key with the volume it belongs to, as stored.
pub type IdemKey = (VolumeId, Bytes);
