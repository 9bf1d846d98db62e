//! What Folio's security costs in CPU, measured in-process so that the network and the disk do
//! not hide it: checking one bearer token (the gRPC edge does this on every call; a token seen
//! before comes from a cache), and one full
//! mutual-TLS 1.3 handshake with P-256 certificates (once per connection; channels are long-lived).
//!
//! `cargo run --release -p folio-auth --example security_cost`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use folio_auth::dev::Ca;
use folio_auth::scope::parse_scopes;
use folio_auth::token::{generate_key, Signer, Verifier, DEFAULT_AUDIENCE};
use folio_auth::NodeIdentity;
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

/// Median and 99th percentile, in microseconds, of `rounds` batches of `batch` calls of `f`.
fn time(rounds: usize, batch: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut per: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..batch {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / batch as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    (per[rounds / 2], per[rounds * 99 / 100])
}

/// Moves whatever `from` has to send into `to`, which processes it.
fn pump(from: &mut Connection, to: &mut Connection, buf: &mut Vec<u8>) {
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).expect("a TLS record is written");
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("a TLS record is read");
        to.process_new_packets().expect("the peer is accepted");
    }
}

fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) {
    let name = ServerName::try_from("127.0.0.1").expect("an IP address is a server name");
    let mut c = Connection::from(ClientConnection::new(client.clone(), name).expect("client"));
    let mut s = Connection::from(ServerConnection::new(server.clone()).expect("server"));
    let mut buf = Vec::with_capacity(16 << 10);
    while c.is_handshaking() || s.is_handshaking() {
        pump(&mut c, &mut s, &mut buf);
        pump(&mut s, &mut c, &mut buf);
    }
}

fn main() -> Result<(), String> {
    folio_auth::tls::install_crypto();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();

    // Tokens: Ed25519 signature, JSON claims, scope grammar, as the edge checks them.
    let (private, _) = generate_key()?;
    let signer = Signer::from_pem("k1", &private)?;
    let verifier = Verifier::new(
        HashMap::from([("k1".to_string(), signer.public_key())]),
        DEFAULT_AUDIENCE,
    );
    for scopes in [
        "write:*",
        "read:volume/3f2a* write:region/eu create:region/eu metrics",
    ] {
        let parsed = parse_scopes(scopes).map_err(|e| e.to_string())?;
        // First sight of a token: distinct tokens (subjects differ), each checked once.
        let fresh: Vec<String> = (0..40_000)
            .map(|i| {
                signer.issue_for(
                    Some(&format!("app-{i}")),
                    DEFAULT_AUDIENCE,
                    &parsed,
                    now,
                    3600,
                )
            })
            .collect();
        let mut next = fresh.iter();
        let (p50, p99) = time(200, 200, || {
            let t = next.next().expect("enough tokens");
            verifier.verify(t, now).expect("the token verifies");
        });
        println!(
            "token check, first sight ({} bytes, scopes {scopes:?}): median {p50:.1} us, p99 {p99:.1} us",
            fresh[0].len()
        );
        // The same token again, as a client sends it on every call: the cache answers.
        let (p50, p99) = time(200, 200, || {
            verifier.verify(&fresh[0], now).expect("the token verifies");
        });
        println!("token check, seen before: median {p50:.1} us, p99 {p99:.1} us");
    }
    let token = signer.issue_for(None, DEFAULT_AUDIENCE, &[], now, 3600);
    let (p50, _) = time(200, 200, || {
        let _ = std::hint::black_box(signer.issue_for(None, DEFAULT_AUDIENCE, &[], now, 60));
    });
    println!("token issue: median {p50:.1} us ({} bytes)", token.len());

    // Mutual TLS 1.3 as between peers: both sides present P-256 node certificates from one CA.
    let ca = Ca::new("cost")?;
    let hosts = ["127.0.0.1".to_string()];
    let a = ca.issue(Some(NodeIdentity::Member { group: 1, node: 1 }), &hosts)?;
    let b = ca.issue(Some(NodeIdentity::Member { group: 1, node: 2 }), &hosts)?;
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let roots = Arc::new(roots);
    let chain = |pem: &str| {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())
    };
    let key = |pem: &str| PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| e.to_string());
    let client_verifier = WebPkiClientVerifier::builder(roots.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let server = Arc::new(
        ServerConfig::builder()
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain(&a.cert_pem)?, key(&a.key_pem)?)
            .map_err(|e| e.to_string())?,
    );
    let mut client = ClientConfig::builder()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain(&b.cert_pem)?, key(&b.key_pem)?)
        .map_err(|e| e.to_string())?;
    client.resumption = Resumption::disabled();
    let client = Arc::new(client);
    let (p50, p99) = time(60, 10, || handshake(&client, &server));
    println!("mutual TLS 1.3 handshake, full, P-256 (both sides' CPU): median {p50:.0} us, p99 {p99:.0} us");
    let server_only = Arc::new(
        ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain(&a.cert_pem)?, key(&a.key_pem)?)
            .map_err(|e| e.to_string())?,
    );
    let mut plain_client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    plain_client.resumption = Resumption::disabled();
    let plain_client = Arc::new(plain_client);
    let (p50, p99) = time(60, 10, || handshake(&plain_client, &server_only));
    println!("server-only TLS 1.3 handshake (a client with a token): median {p50:.0} us, p99 {p99:.0} us");
    Ok(())
}
