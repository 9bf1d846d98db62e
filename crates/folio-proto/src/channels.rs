//! Lazily connected gRPC channels, one per `host:port`, shared by every caller: peer traffic,
//! calls forwarded to the leader, and clients. Every channel has TCP_NODELAY (small replies must
//! not wait for delayed ACKs), a connect timeout, and HTTP/2 keep-alives that notice dead peers.
//! With [`Security`], channels speak TLS and every call carries the caller's bearer token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use folio_auth::TokenSource;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// How a caller proves who it is and checks whom it talks to.
#[derive(Clone, Debug, Default)]
pub struct Security {
    /// TLS for every channel (`https`); plaintext when `None`.
    pub tls: Option<ClientTlsConfig>,
    /// The bearer token sent with every call that does not carry one already.
    pub token: Option<TokenSource>,
}

impl Security {
    /// TLS with `tls`, no token (a node's own calls: its certificate speaks for it).
    pub fn tls(tls: ClientTlsConfig) -> Security {
        Security {
            tls: Some(tls),
            token: None,
        }
    }
}

/// A gRPC channel that adds the caller's token to every request without one. Forwarded calls
/// keep the token of the client that sent them.
#[derive(Clone, Debug)]
pub struct Channel {
    inner: tonic::transport::Channel,
    token: Option<TokenSource>,
}

impl Channel {
    /// `inner` with `token` added to each call.
    pub fn new(inner: tonic::transport::Channel, token: Option<TokenSource>) -> Channel {
        Channel { inner, token }
    }

    /// This channel with `authorization` (a header value, as received) on every call: a call
    /// forwarded on behalf of a client keeps the client's credentials.
    pub fn with_authorization(&self, authorization: &[u8]) -> Channel {
        let v = http::HeaderValue::from_bytes(authorization).ok();
        Channel {
            inner: self.inner.clone(),
            token: v.map(|v| {
                TokenSource::from_fn(move || {
                    v.to_str()
                        .ok()
                        .and_then(|s| s.split_once(' '))
                        .map(|(_, t)| t.to_string())
                })
            }),
        }
    }
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Channel {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = <tonic::transport::Channel as tower_service::Service<
        http::Request<tonic::body::Body>,
    >>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(t) = &self.token {
            if !req.headers().contains_key(http::header::AUTHORIZATION) {
                if let Some(v) = t.header() {
                    req.headers_mut().insert(http::header::AUTHORIZATION, v);
                }
            }
        }
        self.inner.call(req)
    }
}

pub struct ChannelCache {
    channels: Mutex<HashMap<String, Channel>>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    security: Security,
}

impl ChannelCache {
    /// `request_timeout` bounds every call on these channels, if given. Plaintext, no token.
    pub fn new(connect_timeout: Duration, request_timeout: Option<Duration>) -> Self {
        Self::secured(connect_timeout, request_timeout, Security::default())
    }

    /// [`ChannelCache::new`] with TLS and a token as `security` says.
    pub fn secured(
        connect_timeout: Duration,
        request_timeout: Option<Duration>,
        security: Security,
    ) -> Self {
        ChannelCache {
            channels: Mutex::default(),
            connect_timeout,
            request_timeout,
            security,
        }
    }

    /// The security these channels use.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The channel for `addr`, created on first use (no connection is made until a call).
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        let mut map = self
            .channels
            .lock()
            .expect("channel map lock is never poisoned");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let c = Channel::new(
            endpoint(
                addr,
                &self.security,
                self.connect_timeout,
                self.request_timeout,
            )?
            .connect_lazy(),
            self.security.token.clone(),
        );
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// The endpoint for `addr` (`host:port`) with Folio's transport settings and `security`'s TLS.
pub fn endpoint(
    addr: &str,
    security: &Security,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<Endpoint, String> {
    let scheme = if security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| format!("bad address {addr:?}: {e}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    if let Some(t) = request_timeout {
        ep = ep.timeout(t);
    }
    if let Some(tls) = &security.tls {
        ep = ep
            .tls_config(tls.clone())
            .map_err(|e| format!("TLS settings for {addr}: {e}"))?;
    }
    Ok(ep)
}
