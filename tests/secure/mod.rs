//! Shared by the security tests and the Python client's test: a group whose members have
//! `[tls]` certificates from one CA and accept tokens signed by two keys, and raw TLS channels
//! to its nodes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use folio_auth::dev::{Ca, Issued};
pub use folio_auth::layer::now_s as now;
use folio_auth::scope::parse_scopes;
use folio_auth::token::{generate_key, Signer, DEFAULT_AUDIENCE};
use folio_auth::{ClientTls, NodeIdentity};
use folio_proto::admin::v1::admin_service_client::AdminServiceClient;
use folio_proto::admin::v1::StatusRequest;
use folio_proto::volume::v1 as pb;
use folio_proto::volume::v1::volume_service_client::VolumeServiceClient;
use folio_system_tests::folio_bin;
use folio_testkit::{Cluster, Options};
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

pub const GROUP: u64 = 7;

pub fn msg(e: String) -> anyhow::Error {
    anyhow::Error::msg(e)
}

pub fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `msg` with `token` as its bearer token.
pub fn bearer<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("a token is ASCII"),
        );
    }
    r
}

/// A secured group, its CA and the two signing keys its nodes accept (`k1`, `k2`).
pub struct Secured {
    pub cluster: Cluster,
    pub ca: Ca,
    /// The CA certificate's file.
    pub ca_path: PathBuf,
    pub k1: Signer,
    pub k2: Signer,
    /// How many nodes the group has.
    pub n: u64,
    _dir: tempfile::TempDir,
}

impl Secured {
    /// Starts `n` nodes (ids 1..=n) as one secured group.
    pub fn start(n: u64) -> anyhow::Result<Secured> {
        Self::start_with(n, false)
    }

    /// Like [`Secured::start`]; with `peer_listeners`, every node takes Raft traffic on its own
    /// peer listener.
    pub fn start_with(n: u64, peer_listeners: bool) -> anyhow::Result<Secured> {
        let dir = tempfile::tempdir()?;
        let ca = Ca::new("folio test CA").map_err(msg)?;
        let ca_path = write(dir.path(), "ca.pem", &ca.cert_pem())?;
        let mut opts = Options {
            group_id: Some(GROUP),
            sections: "[auth]\n".into(),
            peer_listeners,
            ..Default::default()
        };
        let mut signers = Vec::new();
        for kid in ["k1", "k2"] {
            let (private, public) = generate_key().map_err(msg)?;
            let p = write(dir.path(), &format!("{kid}.pub"), &public)?;
            opts.sections.push_str(&format!(
                "[[auth.keys]]\nid = \"{kid}\"\npublic_key = \"{}\"\n",
                p.display()
            ));
            signers.push(Signer::from_pem(kid, &private).map_err(msg)?);
        }
        for id in 1..=n {
            let node = member_cert(&ca, GROUP, id)?;
            let cert = write(dir.path(), &format!("node-{id}.pem"), &node.cert_pem)?;
            let key = write(dir.path(), &format!("node-{id}.key"), &node.key_pem)?;
            opts.node_sections.insert(
                id,
                format!(
                    "[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n",
                    cert.display(),
                    key.display(),
                    ca_path.display()
                ),
            );
        }
        let cluster = Cluster::start_opts(folio_bin(), n, opts)?;
        let k2 = signers.pop().expect("two keys");
        let k1 = signers.pop().expect("two keys");
        Ok(Secured {
            cluster,
            ca,
            ca_path,
            k1,
            k2,
            n,
            _dir: dir,
        })
    }

    /// A token signed with `k1` for `scopes`, valid for ten minutes.
    pub fn token(&self, scopes: &str) -> String {
        issue(&self.k1, scopes, now(), 600)
    }

    /// A TLS channel to node `id` trusting the CA, presenting `identity` if given.
    pub async fn channel(&self, id: u64, identity: Option<&Issued>) -> anyhow::Result<Channel> {
        self.channel_to(&self.cluster.node(id).addr, identity).await
    }

    /// A TLS channel to `addr` trusting the CA, presenting `identity` if given.
    pub async fn channel_to(
        &self,
        addr: &str,
        identity: Option<&Issued>,
    ) -> anyhow::Result<Channel> {
        let tls = ClientTls {
            ca_pem: Some(self.ca.cert_pem().into_bytes()),
            identity: identity.map(|i| {
                (
                    i.cert_pem.clone().into_bytes(),
                    i.key_pem.clone().into_bytes(),
                )
            }),
        };
        Ok(Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls.config())?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?)
    }

    /// Creates a volume through node `id` with `token`; returns its id.
    pub async fn create_volume(&self, id: u64, token: &str) -> anyhow::Result<bytes::Bytes> {
        let mut api = VolumeServiceClient::new(self.channel(id, None).await?);
        let created = api
            .create_volume(bearer(
                pb::CreateVolumeRequest {
                    volume_id: bytes::Bytes::new(),
                },
                Some(token),
            ))
            .await?
            .into_inner();
        Ok(created.volume_id)
    }

    /// The group's (leader id, term), once every node names the same leader in the same term.
    pub async fn agreed(&self, admin: &str) -> anyhow::Result<(u64, u64)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = Vec::new();
            for id in 1..=self.n {
                let Ok(ch) = self.channel(id, None).await else {
                    break;
                };
                let Ok(s) = AdminServiceClient::new(ch)
                    .status(bearer(StatusRequest {}, Some(admin)))
                    .await
                else {
                    break;
                };
                let s = s.into_inner();
                seen.push((s.leader_id, s.term));
            }
            if seen.len() as u64 == self.n && seen[0].0 != 0 && seen.iter().all(|x| *x == seen[0]) {
                return Ok(seen[0]);
            }
            if tokio::time::Instant::now() >= deadline {
                self.cluster.dump_logs();
                anyhow::bail!("no agreed leader and term within 30 s: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A certificate from `ca` for node `node` of group `group`, answering to 127.0.0.1.
pub fn member_cert(ca: &Ca, group: u64, node: u64) -> anyhow::Result<Issued> {
    ca.issue(
        Some(NodeIdentity::Member { group, node }),
        &["127.0.0.1".into()],
    )
    .map_err(msg)
}

pub fn issue(signer: &Signer, scopes: &str, now: u64, ttl_s: u64) -> String {
    let scopes = parse_scopes(scopes).expect("the test's scopes parse");
    signer.issue_for(Some("test"), DEFAULT_AUDIENCE, &scopes, now, ttl_s)
}
