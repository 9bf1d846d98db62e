//! The volume API's requests as the handlers see them: each request's proto → domain step, run
//! once by the edge (`edge::Validate`), on whichever node receives the call.

use folio_core::limits::{MAX_LIST_COMMITS, MAX_LIST_VOLUMES, MAX_PAGE_IDX};
use folio_core::{CommitArgs, Lsn, PageIdx, VolumeId, WritePagesArgs};
use folio_proto::convert::{self, InvalidRequest};
use folio_proto::volume::v1 as pb;
use folio_state::state::Retention;
use tonic::Status;

use crate::edge::{Validate, Wants};

/// Page indexes in one ReadPages call.
pub const MAX_READ_PAGES: usize = folio_core::limits::MAX_PAGES_PER_REQUEST;

impl Validate for pb::CommitRequest {
    type Args = CommitArgs;

    fn validate(self) -> Result<CommitArgs, Status> {
        Ok(CommitArgs::try_from(self)?)
    }

    fn volume(args: &CommitArgs) -> Option<VolumeId> {
        Some(args.volume)
    }

    fn wants(args: &CommitArgs) -> Wants {
        Wants::Write(args.volume)
    }
}

impl Validate for pb::WritePagesRequest {
    type Args = WritePagesArgs;

    fn validate(self) -> Result<WritePagesArgs, Status> {
        Ok(WritePagesArgs::try_from(self)?)
    }

    fn volume(args: &WritePagesArgs) -> Option<VolumeId> {
        Some(args.volume)
    }

    fn wants(args: &WritePagesArgs) -> Wants {
        Wants::Write(args.volume)
    }
}

/// The id is chosen before the call reaches the edge when the client left it empty, so a
/// forwarded create carries it.
impl Validate for pb::CreateVolumeRequest {
    type Args = VolumeId;

    fn validate(self) -> Result<VolumeId, Status> {
        Ok(convert::volume_id(&self.volume_id)?)
    }

    fn volume(v: &VolumeId) -> Option<VolumeId> {
        Some(*v)
    }

    fn wants(_: &VolumeId) -> Wants {
        Wants::Create
    }
}

impl Validate for pb::DeleteVolumeRequest {
    type Args = VolumeId;

    fn validate(self) -> Result<VolumeId, Status> {
        Ok(convert::volume_id(&self.volume_id)?)
    }

    fn volume(v: &VolumeId) -> Option<VolumeId> {
        Some(*v)
    }

    fn wants(v: &VolumeId) -> Wants {
        Wants::Write(*v)
    }
}

impl Validate for pb::SetRetentionRequest {
    type Args = (VolumeId, Option<Retention>);

    fn validate(self) -> Result<Self::Args, Status> {
        let volume = convert::volume_id(&self.volume_id)?;
        let retention = match self.retention {
            None => None,
            Some(r) if r.retain_commits == 0 => {
                return Err(Status::invalid_argument(
                    "retain_commits must be at least 1 (the latest snapshot is always kept)",
                ))
            }
            Some(r) => Some(Retention {
                ms: r.retention_ms,
                commits: r.retain_commits,
            }),
        };
        Ok((volume, retention))
    }

    fn volume((v, _): &Self::Args) -> Option<VolumeId> {
        Some(*v)
    }

    fn wants((v, _): &Self::Args) -> Wants {
        Wants::Write(*v)
    }
}

/// The new volume, the source and the fork point. The new id is filled in by the receiving node
/// before validation when the client left it empty, so a forwarded fork carries it.
impl Validate for pb::ForkVolumeRequest {
    type Args = (VolumeId, VolumeId, Option<Lsn>);

    fn validate(self) -> Result<Self::Args, Status> {
        let volume = convert::volume_id(&self.volume_id)?;
        let source = convert::volume_id(&self.source_volume_id)?;
        if volume == source {
            return Err(Status::invalid_argument(
                "a fork needs an id of its own, not its source's",
            ));
        }
        Ok((volume, source, self.at_lsn.map(Lsn)))
    }

    /// A group that does not serve the source redirects the fork to the one that does.
    fn volume((_, source, _): &Self::Args) -> Option<VolumeId> {
        Some(*source)
    }

    fn wants((_, source, _): &Self::Args) -> Wants {
        Wants::Fork { source: *source }
    }
}

impl Validate for pb::GetSnapshotRequest {
    type Args = VolumeId;

    fn validate(self) -> Result<VolumeId, Status> {
        Ok(convert::volume_id(&self.volume_id)?)
    }

    fn volume(v: &VolumeId) -> Option<VolumeId> {
        Some(*v)
    }

    fn wants(v: &VolumeId) -> Wants {
        Wants::Read(*v)
    }
}

/// The volume, and the LSN the client has seen (checked against the head on the leader).
impl Validate for pb::PullChangesRequest {
    type Args = (VolumeId, u64);

    fn validate(self) -> Result<(VolumeId, u64), Status> {
        Ok((convert::volume_id(&self.volume_id)?, self.since_lsn))
    }

    fn volume(args: &(VolumeId, u64)) -> Option<VolumeId> {
        Some(args.0)
    }

    fn wants(args: &(VolumeId, u64)) -> Wants {
        Wants::Read(args.0)
    }
}

/// The volume, the first LSN to list, and how many commits at most.
impl Validate for pb::ListCommitsRequest {
    type Args = (VolumeId, Lsn, usize);

    fn validate(self) -> Result<(VolumeId, Lsn, usize), Status> {
        Ok((
            convert::volume_id(&self.volume_id)?,
            Lsn(self.from_lsn.max(1)),
            list_limit(self.limit, MAX_LIST_COMMITS),
        ))
    }

    fn volume(args: &(VolumeId, Lsn, usize)) -> Option<VolumeId> {
        Some(args.0)
    }

    fn wants(args: &(VolumeId, Lsn, usize)) -> Wants {
        Wants::Read(args.0)
    }
}

/// The volume to list after, if any, and how many volumes at most.
impl Validate for pb::ListVolumesRequest {
    type Args = (Option<VolumeId>, usize);

    fn validate(self) -> Result<(Option<VolumeId>, usize), Status> {
        let after = match self.start_after.is_empty() {
            true => None,
            false => Some(convert::volume_id(&self.start_after).map_err(|e| {
                Status::from(InvalidRequest::VolumeId(format!("start_after: {e}")))
            })?),
        };
        Ok((after, list_limit(self.limit, MAX_LIST_VOLUMES)))
    }

    fn wants(_: &(Option<VolumeId>, usize)) -> Wants {
        Wants::List
    }
}

/// A validated ReadPages call.
pub struct ReadPages {
    pub volume: VolumeId,
    pub lsn: Lsn,
    pub idxs: Vec<PageIdx>,
    /// The request as received, forwarded when this replica cannot answer (checked by reference,
    /// so a replica that answers copies nothing).
    pub request: pb::ReadPagesRequest,
}

impl Validate for pb::ReadPagesRequest {
    type Args = ReadPages;

    fn validate(self) -> Result<ReadPages, Status> {
        let volume = convert::volume_id(&self.volume_id)?;
        let idxs = page_idxs(&self.page_idx)?;
        Ok(ReadPages {
            volume,
            lsn: Lsn(self.lsn),
            idxs,
            request: self,
        })
    }

    fn volume(args: &ReadPages) -> Option<VolumeId> {
        Some(args.volume)
    }

    fn wants(args: &ReadPages) -> Wants {
        Wants::Read(args.volume)
    }
}

/// The volume, and the LSN after which to stream its commits.
impl Validate for pb::WatchVolumeRequest {
    type Args = (VolumeId, Lsn);

    fn validate(self) -> Result<(VolumeId, Lsn), Status> {
        Ok((convert::volume_id(&self.volume_id)?, Lsn(self.since_lsn)))
    }

    fn volume(args: &(VolumeId, Lsn)) -> Option<VolumeId> {
        Some(args.0)
    }

    fn wants(args: &(VolumeId, Lsn)) -> Wants {
        Wants::Read(args.0)
    }
}

fn page_idxs(raw: &[u32]) -> Result<Vec<PageIdx>, Status> {
    if raw.len() > MAX_READ_PAGES {
        return Err(Status::resource_exhausted(format!(
            "the request reads {} pages; the limit is {MAX_READ_PAGES}",
            raw.len()
        )));
    }
    raw.iter()
        .map(|i| {
            if *i > MAX_PAGE_IDX {
                Err(Status::out_of_range(format!(
                    "page index {i} is above the maximum {MAX_PAGE_IDX}"
                )))
            } else {
                Ok(PageIdx(*i))
            }
        })
        .collect()
}

/// A requested list length: 0 means the maximum, and anything above the maximum is cut to it.
fn list_limit(requested: u32, max: u32) -> usize {
    let n = if requested == 0 {
        max
    } else {
        requested.min(max)
    };
    n as usize
}
