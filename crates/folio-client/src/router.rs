//! Registry mode: which group serves each volume, cached with a TTL, and one connection per
//! group.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use folio_core::VolumeId;
use folio_proto::channels::ChannelCache;
use folio_proto::meta;
use tonic::Status;

use crate::registry::{pb, Registry};
use crate::{Conn, Error, Result, RetryPolicy};

/// Redirects followed for one call before giving up.
pub(crate) const REDIRECTS_MAX: u32 = 3;

/// How a registry-mode client caches resolutions.
#[derive(Clone, Debug)]
pub struct RouterOptions {
    /// How long a resolution is trusted without asking the registry again. Volumes do not move
    /// between groups today, so this mostly bounds how long a group's old member list is used.
    pub cache_ttl: Duration,
    /// Most volumes whose resolution is cached.
    pub cache_capacity: u64,
    /// Region for [`crate::Client::create_volume`] without one.
    pub default_region: Option<String>,
    /// TLS and the bearer token for the registry and every group.
    pub security: folio_proto::channels::Security,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 100_000,
            default_region: None,
            security: Default::default(),
        }
    }
}

struct Home {
    group: u64,
    conn: Arc<Conn>,
}

/// One connection per group, with the (sorted) member addresses it was made from.
type GroupConns = HashMap<u64, (Vec<String>, Arc<Conn>)>;

pub(crate) struct Router {
    pub(crate) registry: Registry,
    homes: moka::future::Cache<VolumeId, Arc<Home>>,
    groups: Mutex<GroupConns>,
    channels: Arc<ChannelCache>,
    policy: RetryPolicy,
    options: RouterOptions,
}

/// Most groups a client keeps connections for.
const GROUPS_MAX: usize = 4096;

impl Router {
    pub(crate) fn new(
        registry: impl IntoIterator<Item = impl Into<String>>,
        policy: RetryPolicy,
        options: RouterOptions,
    ) -> Result<Router> {
        Ok(Router {
            registry: Registry::secured(registry, policy.clone(), options.security.clone())?,
            homes: moka::future::Cache::builder()
                .max_capacity(options.cache_capacity)
                .time_to_live(options.cache_ttl)
                .build(),
            groups: Mutex::default(),
            channels: Arc::new(ChannelCache::secured(
                Duration::from_secs(1),
                None,
                options.security.clone(),
            )),
            policy,
            options,
        })
    }

    pub(crate) fn default_region(&self) -> Option<String> {
        self.options.default_region.clone()
    }

    /// The connection to `volume`'s group, and whether it came from the cache.
    pub(crate) async fn conn_for(
        &self,
        volume: VolumeId,
    ) -> std::result::Result<(Arc<Conn>, bool), (Status, u32)> {
        if let Some(h) = self.homes.get(&volume).await {
            return Ok((h.conn.clone(), true));
        }
        let loc = self.registry.resolve(volume).await.map_err(|e| {
            let status = match e {
                Error::NotFound(m) => Status::not_found(m),
                Error::Invalid { code, message } => Status::new(code, message),
                Error::Other(s) => s,
                other => Status::unavailable(format!("the registry is unreachable: {other}")),
            };
            (status, 1)
        })?;
        let home = self
            .learn(volume, loc)
            .await
            .map_err(|e| (Status::internal(format!("the registry's answer: {e}")), 1))?;
        Ok((home, false))
    }

    /// Records where `volume` lives; returns the connection to its group.
    /// Fails only for a location with no address at all.
    pub(crate) async fn learn(
        &self,
        volume: VolumeId,
        loc: pb::VolumeLocation,
    ) -> Result<Arc<Conn>> {
        let mut addrs: Vec<String> = Vec::new();
        if !loc.leader_hint.is_empty() {
            addrs.push(loc.leader_hint.clone());
        }
        for m in &loc.members {
            if !addrs.contains(&m.addr) {
                addrs.push(m.addr.clone());
            }
        }
        let mut members: Vec<String> = loc.members.iter().map(|m| m.addr.clone()).collect();
        members.sort();
        let conn = {
            let mut groups = self
                .groups
                .lock()
                .expect("group map lock is never poisoned");
            match groups.get(&loc.group_id) {
                Some((known, c)) if *known == members => c.clone(),
                _ => {
                    if groups.len() >= GROUPS_MAX {
                        groups.clear();
                    }
                    let c = Arc::new(Conn::new(
                        addrs,
                        self.policy.clone(),
                        self.channels.clone(),
                    )?);
                    groups.insert(loc.group_id, (members, c.clone()));
                    c
                }
            }
        };
        self.homes
            .insert(
                volume,
                Arc::new(Home {
                    group: loc.group_id,
                    conn: conn.clone(),
                }),
            )
            .await;
        Ok(conn)
    }

    pub(crate) async fn forget(&self, volume: VolumeId) {
        if let Some(h) = self.homes.remove(&volume).await {
            tracing::debug!(%volume, group = h.group, "dropped a cached resolution");
        }
    }
}

/// The volume's home, from a group's NOT_FOUND redirect, if the status carries one.
pub(crate) fn home_from_status(s: &Status, volume: VolumeId) -> Option<pb::VolumeLocation> {
    let md = s.metadata();
    let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok());
    let group: u64 = get(meta::HOME_GROUP)?.parse().ok()?;
    let members: Vec<pb::GroupMember> = get(meta::HOME_MEMBERS)?
        .split(',')
        .filter(|a| !a.is_empty())
        .map(|a| pb::GroupMember {
            node_id: 0,
            addr: a.to_string(),
        })
        .collect();
    if members.is_empty() {
        return None;
    }
    Some(pb::VolumeLocation {
        volume_id: bytes::Bytes::copy_from_slice(volume.as_bytes()),
        group_id: group,
        region: get(meta::HOME_REGION).unwrap_or_default().to_string(),
        members,
        leader_hint: String::new(),
    })
}
