//! The client API (`folio.volume.v1.VolumeService`). Requests are validated on whichever node
//! receives them, then run on the leader: writes through the group-commit batcher, reads after a
//! read-index check so they are linearizable.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use folio_core::limits::{MAX_CLIENT_MESSAGE_BYTES, MAX_LIST_COMMITS, MAX_LIST_VOLUMES};
use folio_core::{CommitArgs, Durability, Lsn, SegmentId, VolumeId, WritePagesArgs};
use folio_proto::convert::{self, InvalidRequest};
use folio_proto::volume::v1 as pb;
use folio_proto::volume::v1::volume_service_client::VolumeServiceClient;
use folio_proto::volume::v1::volume_service_server::{VolumeService, VolumeServiceServer};
use folio_raft::state::VolumeHead;
use folio_raft::{Command, CommandResult};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::metrics;
use crate::route::{forwarded, internal, not_leader, rejection_status, Route, Shared};

/// Page locations in one ListCommits answer (about 2 MiB encoded).
pub const LIST_COMMITS_PAGES_MAX: usize = 65_536;

pub struct VolumeSvc {
    shared: Arc<Shared>,
}

impl VolumeSvc {
    pub fn server(shared: Arc<Shared>) -> VolumeServiceServer<VolumeSvc> {
        VolumeServiceServer::new(VolumeSvc { shared })
            .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
    }

    fn span(&self, method: &'static str) -> tracing::Span {
        tracing::info_span!(
            "rpc",
            method,
            node = self.shared.id,
            term = self.shared.term(),
            volume = tracing::field::Empty
        )
    }

    /// Waits until this node, as leader, has applied everything committed before the call.
    async fn read_index(&self) -> Result<(), Status> {
        match self.shared.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(not_leader(
                f.leader_id.map(|l| (l, f.leader_node.map(|n| n.addr))),
                "leadership changed during the read",
            )),
            Err(e) => Err(Status::unavailable(format!(
                "read-index check failed: {e}; retry"
            ))),
        }
    }

    /// The volume's head as of now: a read-index check, then the local applied state.
    async fn linearizable_head(&self, volume: VolumeId) -> Result<VolumeHead, Status> {
        self.read_index().await?;
        self.shared
            .reader
            .volume(volume)
            .map_err(|e| internal("read volume head", e))?
            .ok_or_else(|| Status::not_found(format!("volume {volume} does not exist")))
    }

    /// Ends a volume call: records its latency and outcome, and turns a NOT_FOUND for a volume
    /// that another group serves into a redirect there.
    async fn finish<T>(
        &self,
        method: &'static str,
        started: Instant,
        volume_id: &[u8],
        res: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        observe(method, started, &res);
        self.elsewhere(volume_id, res).await.map(Response::new)
    }

    /// A NOT_FOUND for a volume that another group serves becomes a redirect there (when the
    /// group is linked to the registry).
    async fn elsewhere<T>(&self, volume_id: &[u8], res: Result<T, Status>) -> Result<T, Status> {
        match (res, &self.shared.registry) {
            (Err(s), Some(link)) if s.code() == tonic::Code::NotFound => {
                match VolumeId::from_slice(volume_id) {
                    Ok(v) => Err(link.redirect(self.shared.group, v, s).await),
                    Err(_) => Err(s),
                }
            }
            (res, _) => res,
        }
    }

    async fn write(&self, cmd: Command) -> Result<CommandResult, Status> {
        // Backpressure: the buffer is bounded. Bytes admitted but not applied yet count too, so
        // concurrent writers cannot all pass the check before the buffer moves. A write into an
        // empty buffer is always admitted, so no single request is refused forever.
        let incoming = cmd.page_bytes();
        let _reservation = if incoming > 0 {
            let buffered = self.shared.reader.group_state().buffered_bytes;
            let max = self.shared.flush.buffer_bytes_max;
            let reserved = self
                .shared
                .buffer_reserved
                .fetch_add(incoming, Ordering::SeqCst);
            let guard = Reservation(&self.shared.buffer_reserved, incoming);
            let pending = buffered + reserved;
            if pending > 0 && pending + incoming > max {
                metrics::WRITES_REFUSED_BUFFER_FULL.inc();
                return Err(Status::unavailable(format!(
                    "the write buffer is full ({pending} of {max} bytes wait for the object \
                     store, which is unreachable or slow); nothing was written; retry with backoff"
                )));
            }
            Some(guard)
        } else {
            None
        };
        match self.shared.batcher.submit(cmd).await? {
            CommandResult::Rejected(r) => Err(rejection_status(r)),
            ok => Ok(ok),
        }
    }
}

/// Page indexes in one ReadPages call.
pub const MAX_READ_PAGES: usize = folio_core::limits::MAX_PAGES_PER_REQUEST;
/// Commits buffered for one WatchVolume subscriber before the server waits for it to read.
pub const WATCH_BUFFER: usize = 64;
/// WatchVolume streams one node serves at once.
pub const WATCH_STREAMS_MAX: usize = 10_000;

impl VolumeSvc {
    /// Waits (at most `wait`) until this replica has applied `volume` up to `lsn`; returns
    /// whether it has.
    async fn wait_applied(
        &self,
        volume: VolumeId,
        lsn: Lsn,
        wait: Duration,
    ) -> Result<bool, Status> {
        let mut rx = self.shared.reader.watch_group();
        let reached = || -> Result<bool, Status> {
            Ok(self
                .shared
                .reader
                .volume(volume)
                .map_err(|e| internal("read volume head", e))?
                .is_some_and(|h| h.lsn >= lsn))
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            rx.borrow_and_update();
            if reached()? {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return reached();
            }
        }
    }

    /// Waits until every one of `segments` is in the object store, for `OBJECT_STORE`
    /// durability. The commit has already committed; a timeout says so.
    async fn wait_flushed(&self, lsn: Lsn, segments: &[SegmentId]) -> Result<(), Status> {
        let mut rx = self.shared.reader.watch_group();
        let _demand = self.shared.flush_demand.wait();
        let timeout = Duration::from_millis(self.shared.flush.object_store_ack_timeout_ms);
        let wait = async {
            loop {
                if segments
                    .iter()
                    .all(|s| rx.borrow_and_update().is_flushed(*s))
                {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The node is shutting down.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            Status::unavailable(format!(
                "committed at LSN {lsn} (durable in the group's quorum), but its segment did not \
                 reach the object store within {timeout:?}; retry with the same idempotency key \
                 to wait again"
            ))
        })
    }
}

fn page_idxs(raw: &[u32]) -> Result<Vec<folio_core::PageIdx>, Status> {
    if raw.len() > MAX_READ_PAGES {
        return Err(Status::resource_exhausted(format!(
            "the request reads {} pages; the limit is {MAX_READ_PAGES}",
            raw.len()
        )));
    }
    raw.iter()
        .map(|i| {
            if *i > folio_core::limits::MAX_PAGE_IDX {
                Err(Status::out_of_range(format!(
                    "page index {i} is above the maximum {}",
                    folio_core::limits::MAX_PAGE_IDX
                )))
            } else {
                Ok(folio_core::PageIdx(*i))
            }
        })
        .collect()
}

fn future_lsn(what: &str, lsn: u64, head: Lsn) -> Status {
    Status::out_of_range(format!(
        "{what} {lsn} is in the future: the volume's latest LSN is {head}"
    ))
}

fn client(ch: Channel) -> VolumeServiceClient<Channel> {
    VolumeServiceClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}

/// Where a validated write goes.
enum Target<P> {
    Local,
    Forward(Channel, P),
    Refused(Status),
}

/// Validates a write on whichever node receives it, so bad input gets its own status even from a
/// follower or a node without a leader. The request is copied only when it must be forwarded:
/// on the leader the pages move straight into the command.
fn validate<P: Clone, A: TryFrom<P, Error = InvalidRequest>>(
    route: Result<Route, Status>,
    msg: P,
) -> Result<(A, Target<P>), Status> {
    Ok(match route {
        Ok(Route::Local) => (A::try_from(msg)?, Target::Local),
        Ok(Route::Forward(ch)) => (A::try_from(msg.clone())?, Target::Forward(ch, msg)),
        Err(s) => (A::try_from(msg)?, Target::Refused(s)),
    })
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

/// Records latency and errors for one call.
fn observe<T>(method: &'static str, started: Instant, res: &Result<T, Status>) {
    metrics::REQUEST_SECONDS
        .with_label_values(&[method])
        .observe(started.elapsed().as_secs_f64());
    if let Err(s) = res {
        metrics::REQUEST_ERRORS
            .with_label_values(&[method, &format!("{:?}", s.code())])
            .inc();
    }
}

fn unexpected(r: CommandResult) -> Status {
    internal("unexpected state machine result", format!("{r:?}"))
}

/// Bytes a write holds in `Shared::buffer_reserved` until its command has been applied (or
/// failed).
struct Reservation<'a>(&'a std::sync::atomic::AtomicU64, u64);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::SeqCst);
    }
}

/// Holds one of the node's WatchVolume slots and counts the stream while it lives.
struct WatchSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Drop for WatchSlot {
    fn drop(&mut self) {
        metrics::WATCHERS.dec();
    }
}

fn record_volume(v: &VolumeId) {
    tracing::Span::current().record("volume", tracing::field::display(v));
}

#[tonic::async_trait]
impl VolumeService for VolumeSvc {
    type WatchVolumeStream = ReceiverStream<Result<pb::WatchVolumeEvent, Status>>;

    async fn pull_changes(
        &self,
        req: Request<pb::PullChangesRequest>,
    ) -> Result<Response<pb::PullChangesResponse>, Status> {
        let started = Instant::now();
        let vid = req.get_ref().volume_id.clone();
        let res = async {
            let volume = convert::volume_id(&req.get_ref().volume_id)?;
            record_volume(&volume);
            if let Route::Forward(ch) = self.shared.route(req.metadata())? {
                return client(ch)
                    .pull_changes(forwarded(req.into_inner()))
                    .await
                    .map(Response::into_inner);
            }
            let head = self.linearizable_head(volume).await?;
            let since = req.get_ref().since_lsn;
            if since > head.lsn.0 {
                return Err(future_lsn("since_lsn", since, head.lsn));
            }
            let reader = self.shared.reader.clone();
            let set = tokio::task::spawn_blocking(move || {
                reader.changed_pages(volume, Lsn(since + 1), head.lsn)
            })
            .await
            .map_err(|e| internal("changed pages task", e))?
            .map_err(|e| internal("read changed pages", e))?;
            let mut bytes = Vec::with_capacity(set.serialized_size());
            set.serialize_into(&mut bytes)
                .map_err(|e| internal("encode bitmap", e))?;
            Ok(pb::PullChangesResponse {
                lsn: head.lsn.0,
                changed_pages: Bytes::from(bytes),
                changed_count: set.len(),
            })
        }
        .instrument(self.span("PullChanges"))
        .await;
        self.finish("PullChanges", started, &vid, res).await
    }

    async fn read_pages(
        &self,
        req: Request<pb::ReadPagesRequest>,
    ) -> Result<Response<pb::ReadPagesResponse>, Status> {
        let started = Instant::now();
        let vid = req.get_ref().volume_id.clone();
        let res = async {
            let volume = convert::volume_id(&req.get_ref().volume_id)?;
            record_volume(&volume);
            let idxs = page_idxs(&req.get_ref().page_idx)?;
            let lsn = Lsn(req.get_ref().lsn);
            // Snapshots are immutable: any replica that has applied `lsn` answers. The leader
            // knows the latest LSN for sure (after a read-index check); a follower that has not
            // applied `lsn` waits briefly, then hands the call to the leader.
            let mut local = self.wait_applied(volume, lsn, Duration::ZERO).await?;
            if !local {
                if self.shared.is_leader() {
                    let head = self.linearizable_head(volume).await?;
                    if lsn > head.lsn {
                        return Err(future_lsn("lsn", lsn.0, head.lsn));
                    }
                    local = true;
                } else {
                    let wait = Duration::from_millis(self.shared.read.replica_wait_ms);
                    local = self.wait_applied(volume, lsn, wait).await?;
                }
            }
            if !local {
                return match self.shared.route(req.metadata())? {
                    Route::Forward(ch) => client(ch)
                        .read_pages(forwarded(req.into_inner()))
                        .await
                        .map(Response::into_inner),
                    Route::Local => Err(Status::unavailable(
                        "leadership changed during the read; retry",
                    )),
                };
            }
            let pages = self
                .shared
                .pages
                .read(volume, lsn, &idxs)
                .await
                .map_err(|e| match e {
                    crate::pages::ReadError::Store(s) if s.is_retryable() => {
                        Status::unavailable(format!("object store: {s}; retry"))
                    }
                    other => internal("read pages", other),
                })?;
            metrics::PAGES_READ.inc_by(pages.len() as u64);
            Ok(pb::ReadPagesResponse {
                lsn: lsn.0,
                pages: pages
                    .into_iter()
                    .map(|p| pb::PageData {
                        page_idx: p.idx.0,
                        data: p.data,
                        written_lsn: p.written.0,
                    })
                    .collect(),
            })
        }
        .instrument(self.span("ReadPages"))
        .await;
        self.finish("ReadPages", started, &vid, res).await
    }

    async fn watch_volume(
        &self,
        req: Request<pb::WatchVolumeRequest>,
    ) -> Result<Response<Self::WatchVolumeStream>, Status> {
        let volume = convert::volume_id(&req.get_ref().volume_id)?;
        let since = Lsn(req.get_ref().since_lsn);
        let reader = self.shared.reader.clone();
        // Any replica streams its applied history in order. One that does not know the volume
        // yet is not the place to ask: the leader answers NOT_FOUND for sure.
        let head = reader
            .volume(volume)
            .map_err(|e| internal("read volume head", e))?;
        let head = match head {
            Some(h) => h,
            None if self.shared.is_leader() => match self.linearizable_head(volume).await {
                Ok(h) => h,
                Err(e) => {
                    return Err(self
                        .elsewhere::<()>(volume.as_bytes(), Err(e))
                        .await
                        .unwrap_err())
                }
            },
            None => {
                return Err(crate::route::not_leader(
                    self.shared.leader(),
                    "this replica does not know the volume yet",
                ))
            }
        };
        if since.0 == u64::MAX {
            return Err(future_lsn("since_lsn", since.0, head.lsn));
        }
        if since > head.lsn && self.shared.is_leader() {
            // A new leader may not have applied its predecessor's last entries yet.
            let head = self.linearizable_head(volume).await?;
            if since > head.lsn {
                return Err(future_lsn("since_lsn", since.0, head.lsn));
            }
        }
        let permit = self
            .shared
            .watch_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                "this node already serves {WATCH_STREAMS_MAX} WatchVolume streams; retry later or \
                 on another member"
            ))
            })?;
        metrics::WATCHERS.inc();
        let slot = WatchSlot(permit);
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(async move {
            let _slot = slot;
            let mut changes = reader.watch_group();
            let mut next = since.next();
            loop {
                changes.borrow_and_update();
                let batch = match reader.commits(volume, next, WATCH_BUFFER) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = tx.send(Err(internal("read commits", e))).await;
                        return;
                    }
                };
                for c in &batch {
                    let mut idxs: Vec<u32> = c.pages.iter().map(|p| p.idx.0).collect();
                    idxs.sort_unstable();
                    let ev = pb::WatchVolumeEvent {
                        lsn: c.lsn.0,
                        committed_at_ms: c.committed_at_ms,
                        page_idx: idxs,
                    };
                    if tx.send(Ok(ev)).await.is_err() {
                        return; // the subscriber went away
                    }
                    next = c.lsn.next();
                }
                if batch.len() < WATCH_BUFFER {
                    // Caught up: wait for the next applied entry (or notice a gone subscriber).
                    tokio::select! {
                        r = changes.changed() => if r.is_err() { return },
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn create_volume(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        let started = Instant::now();
        let res = async {
            let route = self.shared.route(req.metadata())?;
            let msg = req.into_inner();
            let volume = if msg.volume_id.is_empty() {
                VolumeId::new_random()
            } else {
                convert::volume_id(&msg.volume_id)?
            };
            record_volume(&volume);
            if let Route::Forward(ch) = route {
                let fwd = pb::CreateVolumeRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                };
                return client(ch)
                    .create_volume(forwarded(fwd))
                    .await
                    .map(Response::into_inner);
            }
            match self.write(Command::CreateVolume { volume }).await? {
                CommandResult::VolumeCreated { volume } => {
                    tracing::info!("volume created");
                    Ok(pb::CreateVolumeResponse {
                        volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                        lsn: 0,
                    })
                }
                other => Err(unexpected(other)),
            }
        }
        .instrument(self.span("CreateVolume"))
        .await;
        observe("CreateVolume", started, &res);
        res.map(Response::new)
    }

    async fn get_snapshot(
        &self,
        req: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::GetSnapshotResponse>, Status> {
        let started = Instant::now();
        let vid = req.get_ref().volume_id.clone();
        let res = async {
            let volume = convert::volume_id(&req.get_ref().volume_id)?;
            record_volume(&volume);
            if let Route::Forward(ch) = self.shared.route(req.metadata())? {
                return client(ch)
                    .get_snapshot(forwarded(req.into_inner()))
                    .await
                    .map(Response::into_inner);
            }
            let head = self.linearizable_head(volume).await?;
            Ok(pb::GetSnapshotResponse {
                volume_id: req.into_inner().volume_id,
                lsn: head.lsn.0,
            })
        }
        .instrument(self.span("GetSnapshot"))
        .await;
        self.finish("GetSnapshot", started, &vid, res).await
    }

    async fn write_pages(
        &self,
        req: Request<pb::WritePagesRequest>,
    ) -> Result<Response<pb::WritePagesResponse>, Status> {
        let started = Instant::now();
        let vid = req.get_ref().volume_id.clone();
        let res = async {
            let (args, target) =
                validate::<_, WritePagesArgs>(self.shared.route(req.metadata()), req.into_inner())?;
            record_volume(&args.volume);
            match target {
                Target::Local => {}
                Target::Refused(s) => return Err(s),
                Target::Forward(ch, msg) => {
                    return client(ch)
                        .write_pages(forwarded(msg))
                        .await
                        .map(Response::into_inner)
                }
            }
            match self.write(Command::WritePages { args }).await? {
                CommandResult::PagesWritten { pages } => Ok(pb::WritePagesResponse {
                    pages: pages.into_iter().map(Into::into).collect(),
                }),
                other => Err(unexpected(other)),
            }
        }
        .instrument(self.span("WritePages"))
        .await;
        self.finish("WritePages", started, &vid, res).await
    }

    async fn commit(
        &self,
        req: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let started = Instant::now();
        let vid = req.get_ref().volume_id.clone();
        let res = async {
            let (args, target) =
                validate::<_, CommitArgs>(self.shared.route(req.metadata()), req.into_inner())?;
            record_volume(&args.volume);
            let durability = args.durability;
            match target {
                Target::Local => {}
                Target::Refused(s) => return Err(s),
                Target::Forward(ch, msg) => {
                    return client(ch)
                        .commit(forwarded(msg))
                        .await
                        .map(Response::into_inner)
                }
            }
            match self.write(Command::commit(args)).await? {
                CommandResult::Committed {
                    lsn,
                    pages,
                    deduplicated,
                    segment,
                } => {
                    tracing::debug!(lsn = lsn.0, pages = pages.len(), deduplicated, "committed");
                    if durability == Durability::ObjectStore {
                        let mut segments: Vec<SegmentId> =
                            pages.iter().map(|p| p.segment).collect();
                        segments.push(segment);
                        segments.sort_unstable();
                        segments.dedup();
                        self.wait_flushed(lsn, &segments).await?;
                    }
                    Ok(pb::CommitResponse {
                        lsn: lsn.0,
                        pages: pages.into_iter().map(Into::into).collect(),
                        deduplicated,
                    })
                }
                other => Err(unexpected(other)),
            }
        }
        .instrument(self.span("Commit"))
        .await;
        if res.is_ok() {
            metrics::COMMIT_SECONDS.observe(started.elapsed().as_secs_f64());
        }
        self.finish("Commit", started, &vid, res).await
    }

    async fn list_commits(
        &self,
        req: Request<pb::ListCommitsRequest>,
    ) -> Result<Response<pb::ListCommitsResponse>, Status> {
        let started = Instant::now();
        let vid = req.get_ref().volume_id.clone();
        let res = async {
            let volume = convert::volume_id(&req.get_ref().volume_id)?;
            record_volume(&volume);
            if let Route::Forward(ch) = self.shared.route(req.metadata())? {
                return client(ch)
                    .list_commits(forwarded(req.into_inner()))
                    .await
                    .map(Response::into_inner);
            }
            let head = self.linearizable_head(volume).await?;
            let msg = req.into_inner();
            let limit = list_limit(msg.limit, MAX_LIST_COMMITS);
            let mut commits = self
                .shared
                .reader
                .commits(volume, Lsn(msg.from_lsn.max(1)), limit)
                .map_err(|e| internal("read commits", e))?;
            // Bound the answer by size too: stop after LIST_COMMITS_PAGES_MAX page locations
            // (always at least one commit, which is within the message limit on its own).
            let mut pages = 0;
            let keep = commits
                .iter()
                .position(|c| {
                    pages += c.pages.len();
                    pages > LIST_COMMITS_PAGES_MAX
                })
                .unwrap_or(commits.len())
                .max(1);
            commits.truncate(keep);
            Ok(pb::ListCommitsResponse {
                head_lsn: head.lsn.0,
                commits: commits
                    .into_iter()
                    .map(|c| pb::CommitRecord {
                        lsn: c.lsn.0,
                        idempotency_key: c.idempotency_key,
                        committed_at_ms: c.committed_at_ms,
                        pages: c.pages.into_iter().map(Into::into).collect(),
                    })
                    .collect(),
            })
        }
        .instrument(self.span("ListCommits"))
        .await;
        self.finish("ListCommits", started, &vid, res).await
    }

    async fn list_volumes(
        &self,
        req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        let started = Instant::now();
        let res = async {
            let after = match req.get_ref().start_after.is_empty() {
                true => None,
                false => Some(convert::volume_id(&req.get_ref().start_after).map_err(|e| {
                    Status::from(InvalidRequest::VolumeId(format!("start_after: {e}")))
                })?),
            };
            if let Route::Forward(ch) = self.shared.route(req.metadata())? {
                return client(ch)
                    .list_volumes(forwarded(req.into_inner()))
                    .await
                    .map(Response::into_inner);
            }
            self.read_index().await?;
            let limit = list_limit(req.get_ref().limit, MAX_LIST_VOLUMES);
            let vols = self
                .shared
                .reader
                .volumes(after, limit)
                .map_err(|e| internal("list volumes", e))?;
            Ok(pb::ListVolumesResponse {
                volumes: vols
                    .into_iter()
                    .map(|(id, h)| pb::VolumeInfo {
                        volume_id: Bytes::copy_from_slice(id.as_bytes()),
                        lsn: h.lsn.0,
                        created_at_ms: h.created_at_ms,
                    })
                    .collect(),
            })
        }
        .instrument(self.span("ListVolumes"))
        .await;
        observe("ListVolumes", started, &res);
        res.map(Response::new)
    }
}
