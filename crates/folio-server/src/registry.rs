//! The group's side of the volume registry: the leader's heartbeat, which registers the group
//! with its region and members and reports it alive, and the lookup of where a volume this group
//! does not serve lives (the edge turns that into a redirect, see `edge::status::elsewhere`).

use std::sync::Arc;
use std::time::Duration;

use folio_client::registry::pb;
use folio_client::{Registry, RetryPolicy};
use folio_core::{GroupId, VolumeId};
use folio_state::Raft;

/// Bounds on the interval the registry asks for.
const HEARTBEAT_MIN: Duration = Duration::from_millis(100);
const HEARTBEAT_MAX: Duration = Duration::from_secs(60);
/// Resolutions of volumes this node does not serve, cached for redirects.
const RESOLVE_CACHE_MAX: u64 = 100_000;

/// Calls to the registry from a group node.
pub struct RegistryLink {
    registry: Registry,
    region: String,
    /// Where volumes this node was asked about live: `None` when the registry does not know the
    /// volume either (kept only briefly, see [`Ttl`]).
    homes: moka::future::Cache<VolumeId, Option<Arc<pb::VolumeLocation>>>,
}

/// How long "the registry does not know this volume" is trusted: briefly, as the volume may be
/// being created right now.
const UNKNOWN_TTL: Duration = Duration::from_secs(2);

/// Found volumes for the configured TTL, unknown ones for [`UNKNOWN_TTL`].
struct Ttl(Duration);

impl moka::Expiry<VolumeId, Option<Arc<pb::VolumeLocation>>> for Ttl {
    fn expire_after_create(
        &self,
        _key: &VolumeId,
        value: &Option<Arc<pb::VolumeLocation>>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.0
        } else {
            UNKNOWN_TTL.min(self.0)
        })
    }
}

impl RegistryLink {
    /// `security`: how this node reaches the registry (TLS with its certificate, which the
    /// registry checks against the group a heartbeat speaks for).
    pub fn new(
        cfg: &crate::config::RegistryLink,
        region: String,
        security: folio_client::Security,
    ) -> anyhow::Result<Self> {
        // Heartbeats and lookups must not queue up behind a slow registry: a short budget, and
        // the next heartbeat tries again.
        let policy = RetryPolicy {
            total_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        Ok(RegistryLink {
            registry: Registry::secured(cfg.addrs.clone(), policy, security)?,
            region,
            homes: moka::future::Cache::builder()
                .max_capacity(RESOLVE_CACHE_MAX)
                .expire_after(Ttl(Duration::from_millis(cfg.resolve_cache_ttl_ms)))
                .build(),
        })
    }

    /// Runs for the node's life: while node `me` leads its group, it tells the registry the
    /// group's region, members and leader every interval.
    pub async fn heartbeat(
        self: Arc<Self>,
        raft: Raft,
        me: u64,
        group: GroupId,
        advertise: String,
    ) {
        let mut interval = Duration::from_secs(1);
        let mut warned = false;
        loop {
            if folio_raft::leader_of(&raft).is_some_and(|(l, _)| l == me) {
                let members = {
                    let m = raft.metrics();
                    let m = m.borrow();
                    m.membership_config
                        .membership()
                        .nodes()
                        .map(|(id, n)| pb::GroupMember {
                            node_id: *id,
                            addr: n.addr.clone(),
                        })
                        .collect::<Vec<_>>()
                };
                let req = pb::HeartbeatRequest {
                    group_id: group.0,
                    region: self.region.clone(),
                    members,
                    leader_addr: advertise.clone(),
                };
                match self.registry.heartbeat(req).await {
                    Ok(r) => {
                        interval = Duration::from_millis(r.interval_ms)
                            .clamp(HEARTBEAT_MIN, HEARTBEAT_MAX);
                        if warned {
                            tracing::info!("the registry answers heartbeats again");
                            warned = false;
                        }
                    }
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "heartbeat to the registry failed; retrying");
                            warned = true;
                        }
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Where `volume` lives, as the registry knows it: `None` when the registry does not know it
    /// either, or could not be asked (a redirect is a courtesy: the caller's status stands).
    pub async fn home(&self, volume: VolumeId) -> Option<Arc<pb::VolumeLocation>> {
        // Concurrent misses for one volume share one registry lookup.
        let lookup = self
            .homes
            .try_get_with(volume, async {
                match self.registry.resolve(volume).await {
                    Ok(l) => Ok(Some(Arc::new(l))),
                    Err(folio_client::Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await;
        match lookup {
            Ok(home) => home,
            Err(e) => {
                tracing::debug!(%volume, error = %e, "could not resolve a volume for a redirect");
                None
            }
        }
    }
}
