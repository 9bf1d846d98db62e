//! The group's side of the volume registry: the leader's heartbeat, which registers the group
//! with its region and members and reports it alive, and the lookup that turns a call for a
//! volume this group does not serve into a redirect to the group that does.

use std::sync::Arc;
use std::time::Duration;

use folio_client::registry::pb;
use folio_client::{Registry, RetryPolicy};
use folio_core::{GroupId, VolumeId};
use folio_proto::meta;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::route::Shared;

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
    pub fn new(cfg: &crate::config::RegistryLink, region: String) -> anyhow::Result<Self> {
        // Heartbeats and lookups must not queue up behind a slow registry: a short budget, and
        // the next heartbeat tries again.
        let policy = RetryPolicy {
            total_timeout: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        Ok(RegistryLink {
            registry: Registry::new(cfg.addrs.clone(), policy)?,
            region,
            homes: moka::future::Cache::builder()
                .max_capacity(RESOLVE_CACHE_MAX)
                .expire_after(Ttl(Duration::from_millis(cfg.resolve_cache_ttl_ms)))
                .build(),
        })
    }

    /// Runs for the node's life: while this node leads its group, it tells the registry the
    /// group's region, members and leader every interval.
    pub async fn heartbeat(self: Arc<Self>, shared: Arc<Shared>, advertise: String) {
        let mut interval = Duration::from_secs(1);
        let mut warned = false;
        loop {
            if shared.is_leader() {
                let members = {
                    let m = shared.raft.metrics();
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
                    group_id: shared.group.0,
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

    /// `status` as the caller should see it: a NOT_FOUND for a volume that lives in another
    /// group becomes a NOT_FOUND naming that group and carrying its members, so the client goes
    /// there. Anything else (and any failure to ask) passes through unchanged.
    pub async fn redirect(&self, my_group: GroupId, volume: VolumeId, status: Status) -> Status {
        if status.code() != Code::NotFound {
            return status;
        }
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
        let loc = match lookup {
            Ok(Some(l)) => l,
            Ok(None) => return status,
            Err(e) => {
                tracing::debug!(%volume, error = %e, "could not resolve a volume for a redirect");
                return status;
            }
        };
        if loc.group_id == my_group.0 {
            return status;
        }
        let addrs: Vec<&str> = loc.members.iter().map(|m| m.addr.as_str()).collect();
        let mut s = Status::not_found(format!(
            "volume {volume} is not served by group {my_group}: it lives in group {} (region \
             {}) at {}; resolve it through the registry",
            loc.group_id,
            loc.region,
            addrs.join(", ")
        ));
        let md = s.metadata_mut();
        md.insert(meta::HOME_GROUP, MetadataValue::from(loc.group_id));
        if let Ok(v) = loc.region.parse() {
            md.insert(meta::HOME_REGION, v);
        }
        if let Ok(v) = addrs.join(",").parse() {
            md.insert(meta::HOME_MEMBERS, v);
        }
        s
    }
}
