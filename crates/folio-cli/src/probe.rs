//! `folio probe`: asks a node's HTTP listener whether it is ready (`/readyz`) or live (`/livez`)
//! and exits 0 only on a 200. Container health checks run it, so images need no shell or curl.
//! A node with `[tls]` serves the endpoint only over HTTPS: `--https` (or `--ca`) speaks it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::ServerName;

/// Longest a probe waits to connect, and then for the answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The most of the answer a probe reads (the status line and a one-line reason).
const ANSWER_BYTES_MAX: u64 = 4096;

/// How the probe speaks to the node.
pub enum Scheme<'a> {
    Http,
    /// HTTPS, verifying the node's certificate against this CA when given (else not at all: the
    /// probe sends nothing secret and learns only live or ready).
    Https {
        ca: Option<&'a Path>,
    },
}

/// Reads at most [`ANSWER_BYTES_MAX`] until the node closes. A TLS peer that closes without
/// close_notify ends the answer as well: the probe only needs the status line.
fn read_answer(mut r: impl Read) -> std::io::Result<String> {
    let mut buf = Vec::new();
    match r.by_ref().take(ANSWER_BYTES_MAX).read_to_end(&mut buf) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// GETs `path` from `addr` over HTTP/1.0 (in TLS for [`Scheme::Https`]) and returns the status
/// code and the body.
fn get(addr: &str, path: &str, scheme: &Scheme) -> anyhow::Result<(u16, String)> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let mut s =
        TcpStream::connect_timeout(&sock, TIMEOUT).with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let answer = match scheme {
        Scheme::Http => {
            s.write_all(request.as_bytes())?;
            read_answer(&mut s)
        }
        Scheme::Https { ca } => {
            let ca_pem = match ca {
                Some(p) => {
                    folio_auth::ClientTls::with_ca_file(p)
                        .map_err(anyhow::Error::msg)?
                        .ca_pem
                }
                None => None,
            };
            let cfg =
                folio_auth::tls::http_client(ca_pem.as_deref()).map_err(anyhow::Error::msg)?;
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_string())
                .with_context(|| format!("{host:?} is not a server name"))?;
            let conn = rustls::ClientConnection::new(cfg, name)
                .with_context(|| format!("TLS to {addr}"))?;
            let mut tls = rustls::StreamOwned::new(conn, s);
            tls.write_all(request.as_bytes())
                .with_context(|| format!("TLS handshake with {addr}"))?;
            read_answer(&mut tls)
        }
    }
    .with_context(|| format!("read the answer from {addr}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| match scheme {
            Scheme::Http => {
                format!("{addr} answered no HTTP status (a node with [tls] needs --https)")
            }
            Scheme::Https { .. } => format!("{addr} answered no HTTP status"),
        })?;
    Ok((code, body.trim().to_string()))
}

pub fn run(addr: &str, live: bool, scheme: Scheme) -> anyhow::Result<()> {
    let path = if live { "/livez" } else { "/readyz" };
    let (code, body) = get(addr, path, &scheme)?;
    if code != 200 {
        bail!("{addr}{path}: HTTP {code}: {body}");
    }
    println!("{body}");
    Ok(())
}
