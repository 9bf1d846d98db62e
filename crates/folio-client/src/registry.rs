//! The volume registry's client: where volumes live, placing new ones in a region, the groups'
//! health, and the heartbeat groups send. Calls follow the registry leader's hints and retry like
//! group calls do.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use folio_core::{Lsn, VolumeId};
use folio_proto::channels::{Channel, ChannelCache, Security};
pub use folio_proto::registry::v1 as pb;
use folio_proto::registry::v1::registry_service_client::RegistryServiceClient;

use crate::{Client, Conn, Error, Result, RetryPolicy};

/// A connection to the registry group.
pub struct Registry {
    conn: Conn,
}

fn client(ch: Channel) -> RegistryServiceClient<Channel> {
    RegistryServiceClient::new(ch)
}

impl Registry {
    /// The registry reachable at any of `addrs` (`host:port`).
    pub fn new(
        addrs: impl IntoIterator<Item = impl Into<String>>,
        policy: RetryPolicy,
    ) -> Result<Registry> {
        Self::secured(addrs, policy, Security::default())
    }

    /// [`Registry::new`] with TLS and a token as `security` says.
    pub fn secured(
        addrs: impl IntoIterator<Item = impl Into<String>>,
        policy: RetryPolicy,
        security: Security,
    ) -> Result<Registry> {
        let channels = Arc::new(ChannelCache::secured(
            Duration::from_secs(1),
            None,
            security,
        ));
        Ok(Registry {
            conn: Conn::new(addrs, policy, channels)?,
        })
    }

    /// Where `volume` lives. [`Error::NotFound`] when the registry does not know it.
    pub async fn resolve(&self, volume: VolumeId) -> Result<pb::VolumeLocation> {
        let r = self
            .conn
            .retrying(|ch| async move {
                let req = pb::ResolveVolumeRequest {
                    volume_id: Bytes::copy_from_slice(volume.as_bytes()),
                };
                client(ch).resolve_volume(req).await.map(|r| r.into_inner())
            })
            .await;
        Client::finish(r)
    }

    /// Places volume `id` on a group of `region` and creates it there. Safe to retry with the
    /// same id: the registry answers with the placement it made.
    pub async fn create_volume(&self, region: &str, id: VolumeId) -> Result<pb::VolumeLocation> {
        let r = self
            .conn
            .retrying(|ch| {
                let req = pb::CreateVolumeRequest {
                    region: region.to_string(),
                    volume_id: Bytes::copy_from_slice(id.as_bytes()),
                };
                async move { client(ch).create_volume(req).await.map(|r| r.into_inner()) }
            })
            .await;
        Client::finish(r)?
            .location
            .ok_or_else(|| Error::Other(tonic::Status::internal("the registry sent no location")))
    }

    /// Deletes volume `id` on its group and retires its placement. Safe to retry; returns
    /// whether it had been deleted already.
    pub async fn delete_volume(&self, id: VolumeId) -> Result<bool> {
        let r = self
            .conn
            .retrying(|ch| {
                let req = pb::DeleteVolumeRequest {
                    volume_id: Bytes::copy_from_slice(id.as_bytes()),
                };
                async move {
                    client(ch)
                        .delete_volume(req)
                        .await
                        .map(|r| r.into_inner().already_deleted)
                }
            })
            .await;
        Client::finish(r)
    }

    /// Forks `source` at `at` into volume `id` on the source's group. Safe to retry with the
    /// same id.
    pub async fn fork_volume(
        &self,
        source: VolumeId,
        at: Option<Lsn>,
        id: VolumeId,
    ) -> Result<(pb::VolumeLocation, Lsn)> {
        let r = self
            .conn
            .retrying(|ch| {
                let req = pb::ForkVolumeRequest {
                    source_volume_id: Bytes::copy_from_slice(source.as_bytes()),
                    at_lsn: at.map(|l| l.0),
                    volume_id: Bytes::copy_from_slice(id.as_bytes()),
                };
                async move { client(ch).fork_volume(req).await.map(|r| r.into_inner()) }
            })
            .await;
        let r = Client::finish(r)?;
        let loc = r.location.ok_or_else(|| {
            Error::Other(tonic::Status::internal("the registry sent no location"))
        })?;
        Ok((loc, Lsn(r.at_lsn)))
    }

    /// Every region and group, with health and volume counts (the registry leader's view).
    pub async fn list_groups(&self) -> Result<pb::ListGroupsResponse> {
        let r = self
            .conn
            .retrying(|ch| async move {
                client(ch)
                    .list_groups(pb::ListGroupsRequest {})
                    .await
                    .map(|r| r.into_inner())
            })
            .await;
        Client::finish(r)
    }

    /// Registers a group and reports it alive (sent by a group's leader).
    pub async fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse> {
        let r = self
            .conn
            .retrying(|ch| {
                let req = req.clone();
                async move { client(ch).heartbeat(req).await.map(|r| r.into_inner()) }
            })
            .await;
        Client::finish(r)
    }

    /// The registry node at `addr`'s own view (no retries, no redirects).
    pub async fn node_status(addr: &str, timeout: Duration) -> Result<pb::StatusResponse> {
        Self::node_status_secured(addr, timeout, &Security::default()).await
    }

    /// [`Registry::node_status`] with TLS and a token.
    pub async fn node_status_secured(
        addr: &str,
        timeout: Duration,
        security: &Security,
    ) -> Result<pb::StatusResponse> {
        let ch = crate::connect_once(addr, timeout, security).await?;
        client(ch)
            .status(pb::StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(Error::from_status)
    }
}
