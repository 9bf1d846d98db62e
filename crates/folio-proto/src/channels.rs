//! Lazily connected gRPC channels, one per `host:port`, shared by every caller: peer traffic,
//! calls forwarded to the leader, and clients. Every channel has TCP_NODELAY (small replies must
//! not wait for delayed ACKs), a connect timeout, and HTTP/2 keep-alives that notice dead peers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

pub struct ChannelCache {
    channels: Mutex<HashMap<String, Channel>>,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
}

impl ChannelCache {
    /// `request_timeout` bounds every call on these channels, if given.
    pub fn new(connect_timeout: Duration, request_timeout: Option<Duration>) -> Self {
        ChannelCache {
            channels: Mutex::default(),
            connect_timeout,
            request_timeout,
        }
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
        let mut ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad address {addr:?}: {e}"))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(t) = self.request_timeout {
            ep = ep.timeout(t);
        }
        let c = ep.connect_lazy();
        map.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}
