//! `folio probe`: asks a node's HTTP listener whether it is ready (`/readyz`) or live (`/livez`)
//! and exits 0 only on a 200. Container health checks run it, so images need no shell or curl.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

/// Longest a probe waits to connect, and then for the answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The most of the answer a probe reads (the status line and a one-line reason).
const ANSWER_BYTES_MAX: u64 = 4096;

/// GETs `path` from `addr` over HTTP/1.0 and returns the status code and the body.
fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolve {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to no address"))?;
    let mut s =
        TcpStream::connect_timeout(&sock, TIMEOUT).with_context(|| format!("connect to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    s.take(ANSWER_BYTES_MAX)
        .read_to_string(&mut answer)
        .with_context(|| format!("read the answer from {addr}"))?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{addr} answered no HTTP status"))?;
    Ok((code, body.trim().to_string()))
}

pub fn run(addr: &str, live: bool) -> anyhow::Result<()> {
    let path = if live { "/livez" } else { "/readyz" };
    let (code, body) = get(addr, path)?;
    if code != 200 {
        bail!("{addr}{path}: HTTP {code}: {body}");
    }
    println!("{body}");
    Ok(())
}
