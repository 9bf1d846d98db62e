//! The one layer every gRPC call of a node passes first: it works out who is calling (a bearer
//! token, a node's client certificate, or anyone when authentication is off), refuses a call that
//! names no one it can trust with UNAUTHENTICATED, and leaves a [`Principal`] in the request's
//! extensions. The services then check what the call needs against it ([`Principal::check`]),
//! once each, at their edge.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::Either;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};

use crate::identity::NodeIdentity;
use crate::scope::Need;
use crate::token::{Grant, Verifier};

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Principal {
    /// Authentication is off on this node (loopback, or `insecure = true`).
    Anyone,
    /// A client with a verified token.
    Token(Arc<Grant>),
    /// A Folio node, by its client certificate.
    Node(NodeIdentity),
}

/// Where a call is answered, for the rights a node's certificate carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Here {
    /// A node of this write-tier group.
    Group(u64),
    /// A registry node.
    Registry,
}

/// Unix seconds now.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Principal {
    /// Whether this caller may do what a call needs, answered here: UNAUTHENTICATED when its
    /// token has expired since the call began, PERMISSION_DENIED when it lacks the right.
    ///
    /// Nodes act for clients whose tokens their own node checked: a member of this group holds
    /// every byte of its volumes already and may read and write them (forwarded calls); a
    /// registry node creates, deletes and forks volumes on groups and forwards to its leader;
    /// any node may resolve a volume at the registry. No node certificate carries admin rights.
    pub fn check(&self, need: &Need<'_>, here: Here) -> Result<(), Status> {
        let denied = |who: String| {
            Err(Status::permission_denied(format!(
                "{who} does not allow {need}"
            )))
        };
        match self {
            Principal::Anyone => Ok(()),
            Principal::Token(g) => {
                if now_s() > g.expires {
                    return Err(Status::unauthenticated("token expired"));
                }
                if crate::scope::allows(&g.scopes, need) {
                    Ok(())
                } else {
                    denied(format!(
                        "token of {} (scopes: {})",
                        g.subject.as_deref().unwrap_or("an unnamed subject"),
                        g.scopes
                            .iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ))
                }
            }
            Principal::Node(id) => {
                let data = matches!(
                    need,
                    Need::Read(_) | Need::Write(_) | Need::Create(_) | Need::List(_)
                );
                let ok = match (id, here) {
                    (NodeIdentity::Member { group, .. }, Here::Group(g)) => *group == g && data,
                    (NodeIdentity::Member { .. }, Here::Registry) => matches!(need, Need::Read(_)),
                    (NodeIdentity::Registry { .. }, _) => data,
                };
                if ok {
                    Ok(())
                } else {
                    denied(format!("the certificate of {id}"))
                }
            }
        }
    }

    /// When this caller's right to a stream ends (its token's expiry), if ever.
    pub fn expires(&self) -> Option<u64> {
        match self {
            Principal::Token(g) => Some(g.expires),
            _ => None,
        }
    }

    /// The principal a request carries (`found` in its extensions); a request that passed no
    /// [`Authenticator`] (a service used without the layer) is refused when `required`.
    pub fn of(found: Option<&Principal>, required: bool) -> Result<Principal, Status> {
        match found {
            Some(p) => Ok(p.clone()),
            None if !required => Ok(Principal::Anyone),
            None => Err(Status::unauthenticated("the call was not authenticated")),
        }
    }
}

/// What a node requires of its callers.
#[derive(Clone, Debug)]
pub struct Authenticator {
    /// Token verification, when client authentication is on.
    verifier: Option<Arc<Verifier>>,
    /// Whether peers must present a node certificate (TLS is on).
    peers_need_certs: bool,
}

/// How a gRPC path is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Health checks and reflection: anyone (load balancers, probes, grpcurl describe).
    Open,
    /// Raft peer traffic: a node's certificate.
    Peer,
    /// Everything else: a token (or a node's certificate).
    Client,
}

fn class(path: &str) -> Class {
    if path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.") {
        Class::Open
    } else if path.starts_with("/folio.raft.v1.") {
        Class::Peer
    } else {
        Class::Client
    }
}

/// The bearer token in an `authorization` header value, if it has one.
pub fn bearer(value: &http::HeaderValue) -> Result<&str, Status> {
    let v = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization header is not ASCII"))?;
    match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            Ok(t.trim())
        }
        _ => Err(Status::unauthenticated(
            "authorization header must be 'Bearer <token>'",
        )),
    }
}

/// The Folio node a connection's client certificate names, if it presented one.
pub fn peer_identity(ext: &http::Extensions) -> Option<NodeIdentity> {
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .and_then(|c| c.first().and_then(NodeIdentity::from_cert))
}

impl Authenticator {
    /// `verifier`: client tokens are required and checked with it (`None`: anyone may call).
    /// `peers_need_certs`: Raft peer calls need a node certificate (TLS is on).
    pub fn new(verifier: Option<Verifier>, peers_need_certs: bool) -> Authenticator {
        Authenticator {
            verifier: verifier.map(Arc::new),
            peers_need_certs,
        }
    }

    /// Whether client calls need a token.
    pub fn tokens_required(&self) -> bool {
        self.verifier.is_some()
    }

    /// The principal of a call with these headers and extensions on this path, or why none.
    pub fn authenticate(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        ext: &http::Extensions,
    ) -> Result<Option<Principal>, Status> {
        let node = || peer_identity(ext);
        match class(path) {
            Class::Open => Ok(None),
            Class::Peer => match node() {
                Some(id) => Ok(Some(Principal::Node(id))),
                None if self.peers_need_certs => Err(Status::unauthenticated(
                    "Raft peer calls need a Folio node certificate",
                )),
                None => Ok(Some(Principal::Anyone)),
            },
            Class::Client => {
                let Some(v) = &self.verifier else {
                    return Ok(Some(Principal::Anyone));
                };
                if let Some(h) = headers.get(http::header::AUTHORIZATION) {
                    let grant = v
                        .verify(bearer(h)?, now_s())
                        .map_err(|e| Status::unauthenticated(e.to_string()))?;
                    return Ok(Some(Principal::Token(grant)));
                }
                match node() {
                    Some(id) => Ok(Some(Principal::Node(id))),
                    None => Err(Status::unauthenticated(
                        "missing token: send the header 'authorization: Bearer <token>'",
                    )),
                }
            }
        }
    }

    /// The check of the HTTP endpoint's `/metrics`: a token with `metrics` or `admin`, when
    /// tokens are required.
    pub fn check_http(&self, headers: &http::HeaderMap, need: &Need<'_>) -> Result<(), Status> {
        let Some(v) = &self.verifier else {
            return Ok(());
        };
        let h = headers
            .get(http::header::AUTHORIZATION)
            .ok_or_else(|| Status::unauthenticated("missing token"))?;
        let grant = v
            .verify(bearer(h)?, now_s())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        Principal::Token(grant).check(need, Here::Registry)
    }
}

impl<S> tower_layer::Layer<S> for Authenticator {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            auth: self.clone(),
        }
    }
}

/// A service behind the [`Authenticator`].
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    auth: Authenticator,
}

type Reply = http::Response<tonic::body::Body>;

impl<S, B> tower_service::Service<http::Request<B>> for Authenticated<S>
where
    S: tower_service::Service<http::Request<B>, Response = Reply>,
{
    type Response = Reply;
    type Error = S::Error;
    type Future = Either<S::Future, std::future::Ready<Result<Reply, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self
            .auth
            .authenticate(req.uri().path(), req.headers(), req.extensions())
        {
            Ok(p) => {
                if let Some(p) = p {
                    req.extensions_mut().insert(p);
                }
                // Whoever the principal is, the node certificate (if any) stays on hand for
                // the calls only nodes make (registry heartbeats).
                if let Some(id) = peer_identity(req.extensions()) {
                    req.extensions_mut().insert(id);
                }
                Either::Left(self.inner.call(req))
            }
            Err(status) => {
                debug_assert_eq!(status.code(), Code::Unauthenticated);
                tracing::debug!(
                    path = req.uri().path(),
                    message = status.message(),
                    "refused"
                );
                Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{parse_scopes, VolumeRef};

    const V: &str = "0123456789abcdef0123456789abcdef";

    fn grant(scopes: &str, expires: u64) -> Principal {
        Principal::Token(Arc::new(Grant {
            subject: None,
            key_id: "k".into(),
            expires,
            scopes: parse_scopes(scopes).unwrap(),
        }))
    }

    #[test]
    fn principals_are_checked() {
        let v = VolumeRef {
            id: V,
            region: Some("eu"),
        };
        let later = now_s() + 3600;
        let code = |p: &Principal, n: Need, h| p.check(&n, h).err().map(|s| s.code());
        let here = Here::Group(1);
        assert_eq!(code(&grant("read:*", later), Need::Read(v), here), None);
        assert_eq!(
            code(&grant("read:*", later), Need::Write(v), here),
            Some(Code::PermissionDenied)
        );
        assert_eq!(
            code(&grant("write:*", 1), Need::Read(v), here),
            Some(Code::Unauthenticated)
        );
        let member = |group| Principal::Node(NodeIdentity::Member { group, node: 2 });
        assert_eq!(code(&member(1), Need::Write(v), here), None);
        assert_eq!(
            code(&member(2), Need::Write(v), here),
            Some(Code::PermissionDenied)
        );
        assert_eq!(
            code(&member(1), Need::Admin, here),
            Some(Code::PermissionDenied)
        );
        assert_eq!(code(&member(2), Need::Read(v), Here::Registry), None);
        assert_eq!(
            code(&member(2), Need::Create("eu"), Here::Registry),
            Some(Code::PermissionDenied)
        );
        let registry = Principal::Node(NodeIdentity::Registry { node: 1 });
        assert_eq!(code(&registry, Need::Create("eu"), here), None);
        assert_eq!(
            code(&registry, Need::Admin, here),
            Some(Code::PermissionDenied)
        );
        assert_eq!(code(&Principal::Anyone, Need::Admin, here), None);
    }

    #[test]
    fn paths_are_classed_and_bearer_headers_parsed() {
        assert_eq!(class("/grpc.health.v1.Health/Check"), Class::Open);
        assert_eq!(
            class("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Class::Open
        );
        assert_eq!(class("/folio.raft.v1.RaftService/Vote"), Class::Peer);
        assert_eq!(
            class("/folio.volume.v1.VolumeService/Commit"),
            Class::Client
        );
        assert_eq!(class("/folio.admin.v1.AdminService/Status"), Class::Client);
        let h = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer(&h("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&h("bearer  abc ")).unwrap(), "abc");
        for bad in ["abc", "Basic abc", "Bearer ", "Bearer"] {
            assert!(bearer(&h(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn calls_without_credentials_are_refused_when_tokens_are_required() {
        let (private, public) = crate::token::generate_key().unwrap();
        let key = crate::token::parse_public_key_pem(&public).unwrap();
        let verifier = Verifier::new([("k1".to_string(), key)].into(), "folio");
        let auth = Authenticator::new(Some(verifier), true);
        let ext = http::Extensions::new();
        let mut headers = http::HeaderMap::new();
        let path = "/folio.volume.v1.VolumeService/Commit";
        let err = auth.authenticate(path, &headers, &ext).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(auth
            .authenticate("/folio.raft.v1.RaftService/Vote", &headers, &ext)
            .is_err());
        assert!(auth
            .authenticate("/grpc.health.v1.Health/Check", &headers, &ext)
            .unwrap()
            .is_none());
        let signer = crate::token::Signer::from_pem("k1", &private).unwrap();
        let scopes = parse_scopes("read:*").unwrap();
        let t = signer.issue_for(None, "folio", &scopes, now_s(), 60);
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        assert!(matches!(
            auth.authenticate(path, &headers, &ext),
            Ok(Some(Principal::Token(_)))
        ));
        let open = Authenticator::new(None, false);
        assert!(matches!(
            open.authenticate(path, &http::HeaderMap::new(), &ext),
            Ok(Some(Principal::Anyone))
        ));
    }
}
