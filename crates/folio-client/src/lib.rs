//! Folio's Rust client. It talks to any member of a group, follows the leader hints that
//! non-leaders return, and retries retryable failures with bounded, jittered backoff. Commits
//! carry an idempotency key, so retrying one never commits twice. With the registry
//! ([`Client::with_registry`]) it finds each volume's group itself, caches where volumes live,
//! and follows redirects from groups that do not serve a volume.
//!
//! This crate depends on neither RocksDB nor openraft.

pub mod registry;
mod retry;
mod router;
pub mod volume;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use bytes::Bytes;
pub use folio_auth::{ClientTls, TokenSource};
use folio_core::limits::MAX_CLIENT_MESSAGE_BYTES;
use folio_core::{Lsn, VolumeId};
use folio_proto::admin::v1 as admin;
use folio_proto::admin::v1::admin_service_client::AdminServiceClient;
use folio_proto::channels::ChannelCache;
pub use folio_proto::channels::{Channel, Security};
use folio_proto::meta;
use folio_proto::volume::v1 as pb;
use folio_proto::volume::v1::volume_service_client::VolumeServiceClient;
pub use tonic::Code;
use tonic::Status;

use retry::{Failed, LastFailure};

pub use registry::Registry;
pub use retry::RetryPolicy;
use router::Router;
pub use router::RouterOptions;
pub use volume::{Transaction, TxCommitted, TxError, Volume};

/// How a client reaches secured nodes, from what a user names: TLS trusting the CA in `ca`, or
/// the system's roots with `system_roots` (plaintext with neither); a bearer token given
/// directly, or read from `token_file` (re-read when it changes). The error names a CA file
/// that cannot be read.
pub fn security_from(
    ca: Option<&std::path::Path>,
    system_roots: bool,
    token: Option<String>,
    token_file: Option<std::path::PathBuf>,
) -> std::result::Result<Security, String> {
    let tls = match (ca, system_roots) {
        (Some(ca), _) => Some(ClientTls::with_ca_file(ca)?.config()),
        (None, true) => Some(ClientTls::default().config()),
        (None, false) => None,
    };
    let token = match (token, token_file) {
        (Some(t), _) => Some(TokenSource::fixed(t)),
        (None, Some(f)) => Some(TokenSource::file(f)),
        (None, None) => None,
    };
    Ok(Security { tls, token })
}

/// What went wrong, sorted by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The volume is not at the expected LSN: rebase on `current` and retry.
    #[error("conflict: {message}")]
    Conflict { current: Lsn, message: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The request is malformed or over a limit; retrying will not help.
    #[error("invalid request ({code:?}): {message}")]
    Invalid { code: Code, message: String },
    /// Retries ran out; the group may be down or electing for longer than the retry budget.
    #[error("unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    #[error("bad endpoint {0:?}")]
    Endpoint(String),
    #[error("{0}")]
    Other(Status),
}

impl Error {
    pub fn from_status(s: Status) -> Error {
        let message = s.message().to_string();
        match s.code() {
            Code::Aborted => {
                let current = s
                    .metadata()
                    .get(meta::CURRENT_LSN)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .map(Lsn)
                    .unwrap_or_default();
                Error::Conflict { current, message }
            }
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::InvalidArgument
            | Code::OutOfRange
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::Unimplemented => Error::Invalid {
                code: s.code(),
                message,
            },
            _ => Error::Other(s),
        }
    }

    /// The error as a status again, to pass on (the registry relays groups' refusals).
    pub fn into_status(self) -> Status {
        match self {
            Error::Other(s) => s,
            e => Status::new(e.code().unwrap_or(Code::Unknown), e.to_string()),
        }
    }

    /// The gRPC code behind this error, where there is one.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Conflict { .. } => Some(Code::Aborted),
            Error::NotFound(_) => Some(Code::NotFound),
            Error::AlreadyExists(_) => Some(Code::AlreadyExists),
            Error::Invalid { code, .. } => Some(*code),
            Error::Unavailable { .. } => Some(Code::Unavailable),
            Error::Other(s) => Some(s.code()),
            Error::Endpoint(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Most addresses one connection remembers (given ones plus leaders it was sent to).
const ADDRS_MAX: usize = 64;

/// A channel to one node for a one-off call: connected now, every call bounded by `timeout`.
pub(crate) async fn connect_once(
    addr: &str,
    timeout: Duration,
    security: &Security,
) -> Result<Channel> {
    let ch = folio_proto::channels::endpoint(addr, security, timeout, Some(timeout))
        .map_err(Error::Endpoint)?
        .connect()
        .await
        .map_err(|e| Error::Unavailable {
            attempts: 1,
            last: format!("connect to {addr}: {e}"),
        })?;
    Ok(Channel::new(ch, security.token.clone()))
}

fn volume_client(ch: Channel) -> VolumeServiceClient<Channel> {
    VolumeServiceClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}

impl Conn {
    pub(crate) fn new(
        addrs: impl IntoIterator<Item = impl Into<String>>,
        policy: RetryPolicy,
        channels: Arc<ChannelCache>,
    ) -> Result<Conn> {
        let addrs: Vec<String> = addrs.into_iter().map(Into::into).collect();
        if addrs.is_empty() {
            return Err(Error::Endpoint("no addresses given".into()));
        }
        Ok(Conn {
            endpoints: Mutex::new(Endpoints { addrs, current: 0 }),
            channels,
            policy,
        })
    }

    fn channel(&self) -> std::result::Result<(String, Channel), (String, Error)> {
        let addr = {
            let e = self
                .endpoints
                .lock()
                .expect("endpoint lock is never poisoned");
            e.addrs[e.current].clone()
        };
        match self.channels.get(&addr) {
            Ok(c) => Ok((addr, c)),
            Err(e) => Err((addr, Error::Endpoint(e))),
        }
    }

    fn addr_count(&self) -> usize {
        self.endpoints
            .lock()
            .expect("endpoint lock is never poisoned")
            .addrs
            .len()
    }

    /// After a failure at `addr`: go to the leader it named, or to the next address.
    fn redirect(&self, failed: &str, leader: Option<String>) {
        let mut e = self
            .endpoints
            .lock()
            .expect("endpoint lock is never poisoned");
        if let Some(l) = leader {
            match e.addrs.iter().position(|a| *a == l) {
                Some(i) => e.current = i,
                // Bounded: past ADDRS_MAX, a new leader's address takes the failed one's place.
                None if e.addrs.len() >= ADDRS_MAX => {
                    let i = e.current;
                    e.addrs[i] = l;
                }
                None => {
                    e.addrs.push(l);
                    e.current = e.addrs.len() - 1;
                }
            }
        } else if e.addrs[e.current] == failed {
            e.current = (e.current + 1) % e.addrs.len();
        }
    }

    /// The address to try next. Unusable ones (say, a bad leader hint) are skipped, each skip
    /// counting as an attempt; once every address has proved unusable the call fails for good.
    /// `busy` (an address with an attempt of this call still in flight) is passed over once
    /// when there is another address to go to.
    fn pick(
        &self,
        attempt: &mut u32,
        bad_addrs: &mut usize,
        busy: Option<&str>,
    ) -> std::result::Result<(String, Channel), Failed> {
        let mut passed_busy = false;
        loop {
            match self.channel() {
                Ok((addr, _)) if !passed_busy && busy == Some(addr.as_str()) => {
                    passed_busy = true;
                    self.redirect(&addr, None);
                }
                Ok(x) => return Ok(x),
                Err((addr, e)) => {
                    *bad_addrs += 1;
                    if *bad_addrs >= self.addr_count() {
                        return Err(Failed {
                            addr,
                            status: Status::invalid_argument(e.to_string()),
                            attempt: *attempt,
                            leader: None,
                        });
                    }
                    self.redirect(&addr, None);
                    *attempt += 1;
                }
            }
        }
    }

    /// Runs `call` until it succeeds, fails for good, or the retry budget runs out: at most
    /// `max_attempts` attempts, each bounded by `attempt_timeout`, and no retry once
    /// `total_timeout` has passed since the call began. A retryable failure moves on to the
    /// leader the node named (tried at once) or to the next address (after the policy's backoff).
    /// An attempt with no answer after `hedge_after` stays in flight while the call moves on to
    /// the next address; the first success of either ends the call.
    pub(crate) async fn retrying<T, F, Fut>(
        &self,
        mut call: F,
    ) -> std::result::Result<T, (Status, u32)>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Status>>,
    {
        let policy = &self.policy;
        let started = tokio::time::Instant::now();
        let mut attempt = 0u32;
        let mut bad_addrs = 0usize;
        let mut last = LastFailure::default();
        let mut waits = policy.backoff().build();
        // The hedged attempt, once one has been: the address it went to and its answer to come.
        let mut straggler = None;
        loop {
            attempt += 1;
            let busy = straggler.as_ref().map(|(a, _): &(String, _)| a.clone());
            let (addr, ch) = match self.pick(&mut attempt, &mut bad_addrs, busy.as_deref()) {
                Ok(x) => x,
                Err(f) => return Err((f.status, f.attempt)),
            };
            let mut current = Box::pin(timed(
                addr.clone(),
                call(ch),
                policy.attempt_timeout,
                attempt,
            ));
            // A hedge is one more attempt: only within the budget, and only with somewhere else
            // to send it.
            let hedge_at = policy
                .hedge_after
                .map(|d| tokio::time::Instant::now() + d)
                .filter(|at| {
                    attempt < policy.max_attempts
                        && *at < started + policy.total_timeout
                        && self.addr_count() > 1
                });
            let failed = loop {
                let event = tokio::select! {
                    biased;
                    r = &mut current => Event::Answer(r),
                    r = straggling(&mut straggler) => Event::Straggler(r),
                    _ = until(hedge_at), if straggler.is_none() => Event::Hedge,
                };
                match event {
                    Event::Answer(Ok(v)) | Event::Straggler(Ok(v)) => return Ok(v),
                    Event::Answer(Err(f)) => break Some(f),
                    Event::Straggler(Err(f)) => {
                        straggler = None;
                        if retry::retryable(f.status.code()) {
                            last.record(&f.status);
                        }
                    }
                    Event::Hedge => break None,
                }
            };
            let Some(f) = failed else {
                tracing::debug!(%addr, attempt, "no answer yet; trying the next member as well");
                self.redirect(&addr, None);
                straggler = Some((addr, current));
                continue;
            };
            if !retry::retryable(f.status.code()) {
                return Err((f.status, f.attempt));
            }
            self.redirect(&f.addr, f.leader.clone());
            last.record(&f.status);
            let wait = match waits.next() {
                Some(_) if f.leader.is_some() => Duration::ZERO,
                Some(w) => w,
                None => return Err((last.or(f.status), f.attempt)),
            };
            if f.attempt >= policy.max_attempts || started.elapsed() >= policy.total_timeout {
                return Err((last.or(f.status), f.attempt));
            }
            tracing::debug!(
                addr = %f.addr,
                code = ?f.status.code(),
                message = f.status.message(),
                attempt = f.attempt,
                ?wait,
                "retrying"
            );
            // The wait between attempts still takes the straggler's answer, should it come.
            let resume = tokio::time::Instant::now() + wait;
            while !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep_until(resume) => break,
                    r = straggling(&mut straggler) => match r {
                        Ok(v) => return Ok(v),
                        Err(f) => {
                            straggler = None;
                            if retry::retryable(f.status.code()) {
                                last.record(&f.status);
                            }
                        }
                    },
                }
            }
        }
    }
}

/// What ended one wait of [`Conn::retrying`].
enum Event<T> {
    /// The latest attempt answered.
    Answer(std::result::Result<T, Failed>),
    /// The hedged attempt answered.
    Straggler(std::result::Result<T, Failed>),
    /// The latest attempt has been waiting for `hedge_after`.
    Hedge,
}

/// One attempt at `addr`: its answer, or DEADLINE_EXCEEDED after `timeout`. A failure names
/// the leader the node named, when that is another node.
async fn timed<T>(
    addr: String,
    answer: impl std::future::Future<Output = std::result::Result<T, Status>>,
    timeout: Duration,
    attempt: u32,
) -> std::result::Result<T, Failed> {
    let status = match tokio::time::timeout(timeout, answer).await {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(s)) => retry::classify(s),
        Err(_) => Status::deadline_exceeded(format!("no answer from {addr} within {timeout:?}")),
    };
    let leader = status
        .metadata()
        .get(meta::LEADER_ADDR)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .filter(|l| *l != addr);
    Err(Failed {
        addr,
        status,
        attempt,
        leader,
    })
}

/// The answer of the hedged attempt, if there is one in flight; otherwise never.
async fn straggling<A, F: std::future::Future + Unpin>(s: &mut Option<(A, F)>) -> F::Output {
    match s {
        Some((_, f)) => f.await,
        None => std::future::pending().await,
    }
}

/// Waits until `at`, or forever when there is no `at`.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The outcome of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub lsn: Lsn,
    pub pages: Vec<pb::PageRef>,
    /// The server answered from its idempotency record: an earlier attempt had committed.
    pub deduplicated: bool,
}

/// A Folio client: either connected to one group directly ([`Client::new`]), or routed through
/// the volume registry ([`Client::with_registry`]), which says which group serves each volume.
/// In registry mode every volume call goes to the volume's group, resolutions are cached, and a
/// group that does not serve a volume redirects the call.
pub struct Client {
    /// The group, in direct mode.
    conn: Option<Arc<Conn>>,
    /// The registry and the resolution cache, in registry mode.
    router: Option<Router>,
}

/// The members of one group (or of the registry) and which of them to try next.
pub(crate) struct Conn {
    endpoints: Mutex<Endpoints>,
    channels: Arc<ChannelCache>,
    policy: RetryPolicy,
}

struct Endpoints {
    addrs: Vec<String>,
    current: usize,
}

impl Client {
    /// A client for the group reachable at any of `addrs` (`host:port`). Connections are made
    /// lazily, on first use.
    pub fn new(
        addrs: impl IntoIterator<Item = impl Into<String>>,
        policy: RetryPolicy,
    ) -> Result<Client> {
        Self::secured(addrs, policy, Security::default())
    }

    /// [`Client::new`] with TLS and a bearer token as `security` says.
    pub fn secured(
        addrs: impl IntoIterator<Item = impl Into<String>>,
        policy: RetryPolicy,
        security: Security,
    ) -> Result<Client> {
        let channels = Arc::new(ChannelCache::secured(
            Duration::from_secs(1),
            None,
            security,
        ));
        Ok(Client {
            conn: Some(Arc::new(Conn::new(addrs, policy, channels)?)),
            router: None,
        })
    }

    /// A client that finds each volume's group through the registry at any of `registry`
    /// (`host:port`), caching what it learns (see [`RouterOptions`]).
    pub fn with_registry(
        registry: impl IntoIterator<Item = impl Into<String>>,
        policy: RetryPolicy,
        options: RouterOptions,
    ) -> Result<Client> {
        Ok(Client {
            conn: None,
            router: Some(Router::new(registry, policy, options)?),
        })
    }

    /// The registry, in registry mode.
    pub fn registry(&self) -> Option<&Registry> {
        self.router.as_ref().map(|r| &r.registry)
    }

    /// Seeds the resolution cache (registry mode) with a location learned elsewhere, for
    /// example a `CreateVolume` answer handed over by another process. A wrong location costs
    /// one redirect, never a wrong answer: groups refuse volumes they do not serve.
    pub async fn remember(
        &self,
        volume: VolumeId,
        location: registry::pb::VolumeLocation,
    ) -> Result<()> {
        if let Some(r) = &self.router {
            r.learn(volume, location).await?;
        }
        Ok(())
    }

    fn direct(&self) -> std::result::Result<&Conn, (Status, u32)> {
        self.conn.as_deref().ok_or_else(|| {
            (
                Status::failed_precondition(
                    "this call needs a group's address: the client was made with the registry",
                ),
                0,
            )
        })
    }

    /// Runs a group-level call (not about one volume) on the directly connected group.
    async fn retrying<T, F, Fut>(&self, call: F) -> std::result::Result<T, (Status, u32)>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Status>>,
    {
        self.direct()?.retrying(call).await
    }

    /// Runs a call about `volume` on the group that serves it. In registry mode, a group that
    /// answers NOT_FOUND with the volume's home sends the call there; a plain NOT_FOUND for a
    /// cached resolution is checked with the registry once.
    async fn on_volume<T, F, Fut>(
        &self,
        volume: VolumeId,
        mut call: F,
    ) -> std::result::Result<T, (Status, u32)>
    where
        F: FnMut(Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Status>>,
    {
        let Some(router) = &self.router else {
            return self.direct()?.retrying(call).await;
        };
        let mut hops = 0;
        loop {
            let (conn, cached) = router.conn_for(volume).await?;
            match conn.retrying(&mut call).await {
                Err((s, n)) if s.code() == Code::NotFound && hops < router::REDIRECTS_MAX => {
                    hops += 1;
                    if let Some(loc) = router::home_from_status(&s, volume) {
                        tracing::debug!(%volume, group = loc.group_id, "redirected to the volume's home");
                        // home_from_status only returns locations with members.
                        if let Err(e) = router.learn(volume, loc).await {
                            return Err((Status::internal(e.to_string()), n));
                        }
                    } else if cached {
                        router.forget(volume).await;
                    } else {
                        return Err((s, n));
                    }
                }
                other => return other,
            }
        }
    }

    pub(crate) fn finish<T>(r: std::result::Result<T, (Status, u32)>) -> Result<T> {
        r.map_err(|(s, attempts)| {
            if retry::retryable(s.code()) {
                Error::Unavailable {
                    attempts,
                    last: format!("{:?}: {}", s.code(), s.message()),
                }
            } else {
                Error::from_status(s)
            }
        })
    }

    /// Creates a volume. The id is chosen here, so a retried create is recognised: an
    /// "already exists" after an attempt whose answer was lost means the volume is ours.
    /// In registry mode the registry places it, in the router's default region (see
    /// [`Client::create_volume_in`] to name one).
    pub async fn create_volume(&self, id: Option<VolumeId>) -> Result<VolumeId> {
        let id = id.unwrap_or_else(VolumeId::new_random);
        if let Some(router) = &self.router {
            let region = router.default_region().ok_or_else(|| Error::Invalid {
                code: Code::InvalidArgument,
                message: "no region: this client routes through the registry and has no default \
                          region; use create_volume_in"
                    .into(),
            })?;
            return self.create_volume_in(&region, Some(id)).await.map(|_| id);
        }
        let mut ambiguous = false;
        let r = self
            .retrying(|ch| {
                let was_ambiguous = ambiguous;
                ambiguous = true;
                async move {
                    let req = pb::CreateVolumeRequest {
                        volume_id: Bytes::copy_from_slice(id.as_bytes()),
                    };
                    match volume_client(ch).create_volume(req).await {
                        Err(s) if s.code() == Code::AlreadyExists && was_ambiguous => Ok(()),
                        Err(s) => Err(s),
                        Ok(_) => Ok(()),
                    }
                }
            })
            .await;
        Self::finish(r).map(|_| id)
    }

    /// Creates a volume in `region` through the registry, which places it on one of the region's
    /// groups. The id is chosen here (or given), so a retried create is recognised.
    pub async fn create_volume_in(
        &self,
        region: &str,
        id: Option<VolumeId>,
    ) -> Result<registry::pb::VolumeLocation> {
        let router = self.router.as_ref().ok_or_else(|| Error::Invalid {
            code: Code::FailedPrecondition,
            message: "creating a volume in a region needs the registry: this client is \
                      connected to one group"
                .into(),
        })?;
        let id = id.unwrap_or_else(VolumeId::new_random);
        let loc = router.registry.create_volume(region, id).await?;
        router.learn(id, loc.clone()).await?;
        Ok(loc)
    }

    /// Deletes a volume: it answers NOT_FOUND from then on, its pages are reclaimed by garbage
    /// collection, and its id is never used again. In registry mode the registry also retires
    /// its placement. Safe to retry; returns whether it had been deleted already.
    pub async fn delete_volume(&self, volume: VolumeId) -> Result<bool> {
        if let Some(router) = &self.router {
            let already = router.registry.delete_volume(volume).await?;
            router.forget(volume).await;
            return Ok(already);
        }
        let r = self
            .on_volume(volume, |ch| async move {
                let req = pb::DeleteVolumeRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                };
                volume_client(ch)
                    .delete_volume(req)
                    .await
                    .map(|r| r.into_inner().already_deleted)
            })
            .await;
        Self::finish(r)
    }

    /// Gives `volume` its own history retention, or (`None`) returns it to its group's
    /// default. The group's next lifecycle round applies it; history a shorter retention
    /// already dropped does not come back. Safe to retry.
    pub async fn set_retention(
        &self,
        volume: VolumeId,
        retention: Option<pb::Retention>,
    ) -> Result<()> {
        let r = self
            .on_volume(volume, |ch| async move {
                let req = pb::SetRetentionRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                    retention,
                };
                volume_client(ch).set_retention(req).await.map(|_| ())
            })
            .await;
        Self::finish(r)
    }

    /// Forks `source` at LSN `at` (its latest when `None`) into a new volume (id chosen here
    /// unless given) that shares the source's pages instead of copying them. Returns the new
    /// volume and the LSN it was forked at. In registry mode the registry places the fork on
    /// the source's group.
    pub async fn fork_volume(
        &self,
        source: VolumeId,
        at: Option<Lsn>,
        id: Option<VolumeId>,
    ) -> Result<(VolumeId, Lsn)> {
        let id = id.unwrap_or_else(VolumeId::new_random);
        if let Some(router) = &self.router {
            let (loc, at) = router.registry.fork_volume(source, at, id).await?;
            router.learn(id, loc).await?;
            return Ok((id, at));
        }
        let r = self
            .on_volume(source, |ch| async move {
                let req = pb::ForkVolumeRequest {
                    source_volume_id: Bytes::copy_from_slice(source.as_bytes()),
                    at_lsn: at.map(|l| l.0),
                    volume_id: Bytes::copy_from_slice(id.as_bytes()),
                };
                volume_client(ch)
                    .fork_volume(req)
                    .await
                    .map(|r| Lsn(r.into_inner().at_lsn))
            })
            .await;
        Self::finish(r).map(|at| (id, at))
    }

    /// The volume's latest LSN (linearizable).
    pub async fn snapshot(&self, volume: VolumeId) -> Result<Lsn> {
        let r = self
            .on_volume(volume, |ch| async move {
                let req = pb::GetSnapshotRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                };
                volume_client(ch)
                    .get_snapshot(req)
                    .await
                    .map(|r| Lsn(r.into_inner().lsn))
            })
            .await;
        Self::finish(r)
    }

    /// Sends a commit request as is (pages inline and/or refs), retrying on retryable failures.
    pub async fn commit_request(&self, req: pb::CommitRequest) -> Result<Committed> {
        let volume = VolumeId::from_slice(&req.volume_id).map_err(|e| Error::Invalid {
            code: Code::InvalidArgument,
            message: format!("volume_id: {e}"),
        })?;
        let r = self
            .on_volume(volume, |ch| {
                let req = req.clone();
                async move { volume_client(ch).commit(req).await.map(|r| r.into_inner()) }
            })
            .await;
        Self::finish(r).map(|r| Committed {
            lsn: Lsn(r.lsn),
            pages: r.pages,
            deduplicated: r.deduplicated,
        })
    }

    /// Commits `pages` (page index, 4096 bytes) on top of `expected`, with `key` as idempotency key.
    pub async fn commit(
        &self,
        volume: VolumeId,
        expected: Lsn,
        pages: Vec<(u32, Bytes)>,
        key: impl Into<Bytes>,
    ) -> Result<Committed> {
        self.commit_request(pb::CommitRequest {
            volume_id: Bytes::copy_from_slice(volume.as_bytes()),
            expected_lsn: expected.0,
            idempotency_key: key.into(),
            durability: pb::Durability::Quorum as i32,
            pages: pages
                .into_iter()
                .map(|(page_idx, data)| pb::PageWrite { page_idx, data })
                .collect(),
            refs: vec![],
        })
        .await
    }

    /// Uploads pages for a later commit; returns where each landed.
    pub async fn write_pages(
        &self,
        volume: VolumeId,
        pages: Vec<(u32, Bytes)>,
    ) -> Result<Vec<pb::PageRef>> {
        let req = pb::WritePagesRequest {
            volume_id: Bytes::copy_from_slice(volume.as_bytes()),
            pages: pages
                .into_iter()
                .map(|(page_idx, data)| pb::PageWrite { page_idx, data })
                .collect(),
        };
        let r = self
            .on_volume(volume, |ch| {
                let req = req.clone();
                async move {
                    volume_client(ch)
                        .write_pages(req)
                        .await
                        .map(|r| r.into_inner().pages)
                }
            })
            .await;
        Self::finish(r)
    }

    /// One page of a volume's history, from `from` on.
    pub async fn list_commits(
        &self,
        volume: VolumeId,
        from: Lsn,
        limit: u32,
    ) -> Result<pb::ListCommitsResponse> {
        let r = self
            .on_volume(volume, |ch| async move {
                let req = pb::ListCommitsRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                    from_lsn: from.0,
                    limit,
                };
                volume_client(ch)
                    .list_commits(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        Self::finish(r)
    }

    /// A volume's whole history, oldest first.
    pub async fn all_commits(&self, volume: VolumeId) -> Result<Vec<pb::CommitRecord>> {
        let mut out = Vec::new();
        let mut from = Lsn(1);
        loop {
            let page = self.list_commits(volume, from, 0).await?;
            let n = page.commits.len();
            if let Some(last) = page.commits.last() {
                from = Lsn(last.lsn + 1);
            }
            out.extend(page.commits);
            if n == 0 || from.0 > page.head_lsn {
                return Ok(out);
            }
        }
    }

    /// The latest LSN and every page changed after `since` (0: every page ever written).
    pub async fn pull_changes(
        &self,
        volume: VolumeId,
        since: Lsn,
    ) -> Result<(Lsn, roaring::RoaringBitmap)> {
        let r = self
            .on_volume(volume, |ch| async move {
                let req = pb::PullChangesRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                    since_lsn: since.0,
                };
                volume_client(ch)
                    .pull_changes(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        let resp = Self::finish(r)?;
        let set =
            roaring::RoaringBitmap::deserialize_from(&resp.changed_pages[..]).map_err(|e| {
                Error::Other(Status::internal(format!("server sent a bad bitmap: {e}")))
            })?;
        Ok((Lsn(resp.lsn), set))
    }

    /// Pages as of snapshot `lsn`, in the order asked (at most 1024 per call).
    pub async fn read_pages(
        &self,
        volume: VolumeId,
        lsn: Lsn,
        pages: &[u32],
    ) -> Result<Vec<pb::PageData>> {
        let r = self
            .on_volume(volume, |ch| async move {
                let req = pb::ReadPagesRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                    lsn: lsn.0,
                    page_idx: pages.to_vec(),
                };
                volume_client(ch)
                    .read_pages(req)
                    .await
                    .map(|r| r.into_inner().pages)
            })
            .await;
        let got = Self::finish(r)?;
        // Callers index into these bytes: a short page or a missing answer is the server's
        // error, reported as such, never a panic in the application.
        let well_formed = got.len() == pages.len()
            && got
                .iter()
                .zip(pages)
                .all(|(p, want)| p.page_idx == *want && p.data.len() == folio_core::PAGE_SIZE);
        if !well_formed {
            return Err(Error::Other(Status::internal(
                "the server's ReadPages answer does not match the request (page order, count or size)",
            )));
        }
        Ok(got)
    }

    /// A stream of the volume's commits after `since`, in order, as they are applied. The stream
    /// ends on an error (for example the serving node going away); resume with the last LSN seen.
    pub async fn watch(
        &self,
        volume: VolumeId,
        since: Lsn,
    ) -> Result<tonic::Streaming<pb::WatchVolumeEvent>> {
        let r = self
            .on_volume(volume, |ch| async move {
                let req = pb::WatchVolumeRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                    since_lsn: since.0,
                };
                volume_client(ch)
                    .watch_volume(req)
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        Self::finish(r)
    }

    /// Volumes the group serves, after `after`.
    pub async fn list_volumes(
        &self,
        after: Option<VolumeId>,
        limit: u32,
    ) -> Result<Vec<pb::VolumeInfo>> {
        let r = self
            .retrying(|ch| async move {
                let req = pb::ListVolumesRequest {
                    start_after: after
                        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
                        .unwrap_or_default(),
                    limit,
                };
                volume_client(ch)
                    .list_volumes(req)
                    .await
                    .map(|r| r.into_inner().volumes)
            })
            .await;
        Self::finish(r)
    }

    /// Status of the node at `addr` (no retries, no redirects: it is that node's own view).
    pub async fn node_status(addr: &str, timeout: Duration) -> Result<admin::StatusResponse> {
        Self::node_status_secured(addr, timeout, &Security::default()).await
    }

    /// [`Client::node_status`] with TLS and a token.
    pub async fn node_status_secured(
        addr: &str,
        timeout: Duration,
        security: &Security,
    ) -> Result<admin::StatusResponse> {
        let ch = connect_once(addr, timeout, security).await?;
        AdminServiceClient::new(ch)
            .status(admin::StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(Error::from_status)
    }

    /// Adds a node to the group as a voter (runs on the leader).
    pub async fn add_member(&self, node_id: u64, addr: &str) -> Result<admin::MembershipResponse> {
        self.add_member_with_peer(node_id, addr, None).await
    }

    /// [`Client::add_member`] for a node with its own peer listener: peers send it Raft traffic
    /// at `peer_addr` (its `peer_listen_addr`, as they dial it).
    pub async fn add_member_with_peer(
        &self,
        node_id: u64,
        addr: &str,
        peer_addr: Option<&str>,
    ) -> Result<admin::MembershipResponse> {
        let r = self
            .retrying(|ch| {
                let req = admin::AddMemberRequest {
                    node_id,
                    addr: addr.to_string(),
                    peer_addr: peer_addr.unwrap_or_default().to_string(),
                };
                async move {
                    AdminServiceClient::new(ch)
                        .add_member(req)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await;
        Self::finish(r)
    }

    /// The group's storage as its leader's last lifecycle round found it.
    pub async fn storage(&self) -> Result<admin::StorageResponse> {
        let r = self
            .retrying(|ch| async move {
                AdminServiceClient::new(ch)
                    .storage(admin::StorageRequest {})
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        Self::finish(r)
    }

    /// Removes a node from the group (runs on the leader).
    pub async fn remove_member(&self, node_id: u64) -> Result<admin::MembershipResponse> {
        let r = self
            .retrying(|ch| async move {
                AdminServiceClient::new(ch)
                    .remove_member(admin::RemoveMemberRequest { node_id })
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        Self::finish(r)
    }
}
