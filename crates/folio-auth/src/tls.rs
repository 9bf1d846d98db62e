//! TLS settings: what a node's `[tls]` section names (its certificate and key, and the CA that
//! signs every node's certificate), loaded once and turned into tonic's server and client
//! configurations and a rustls configuration for the HTTP endpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::identity::NodeIdentity;

/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes aws-lc-rs the process's rustls provider (once; later calls do nothing). rustls is built
/// with more than one provider in this tree, so it cannot pick one by itself.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A node's `[tls]` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The node's certificate chain (PEM), leaf first. Its URI SAN names the node
    /// (`spiffe://folio/group/<g>/node/<n>` or `spiffe://folio/registry/node/<n>`), and its DNS or
    /// IP SANs the addresses peers and clients dial.
    pub cert: PathBuf,
    /// The certificate's private key (PEM).
    pub key: PathBuf,
    /// The CA that signs every node's certificate (PEM): it verifies peers' client certificates
    /// and the servers this node calls (peers, the registry, the leader it forwards to).
    pub ca: PathBuf,
}

/// A node's TLS material, read and checked.
#[derive(Clone)]
pub struct TlsMaterial {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
    /// The identity the node's own certificate names.
    pub identity: Option<NodeIdentity>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("tls.{what}: read {}: {e}", path.display()))
}

fn certs(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.{what}: not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("tls.{what}: no certificate in the file"));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Reads the files and checks that they parse.
    pub fn load(&self) -> Result<TlsMaterial, String> {
        let cert_pem = read("cert", &self.cert)?;
        let key_pem = read("key", &self.key)?;
        let ca_pem = read("ca", &self.ca)?;
        let chain = certs("cert", &cert_pem)?;
        certs("ca", &ca_pem)?;
        PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("tls.key: not a PEM private key: {e}"))?;
        Ok(TlsMaterial {
            identity: NodeIdentity::from_cert(&chain[0]),
            cert_pem,
            key_pem,
            ca_pem,
        })
    }
}

impl TlsMaterial {
    /// From PEM text already in memory (tests, `folio dev --secure`).
    pub fn from_pem(cert: &str, key: &str, ca: &str) -> Result<TlsMaterial, String> {
        let chain = certs("cert", cert.as_bytes())?;
        certs("ca", ca.as_bytes())?;
        Ok(TlsMaterial {
            identity: NodeIdentity::from_cert(&chain[0]),
            cert_pem: cert.as_bytes().to_vec(),
            key_pem: key.as_bytes().to_vec(),
            ca_pem: ca.as_bytes().to_vec(),
        })
    }

    /// Checks that the certificate names `want`, so a node never starts with another's.
    pub fn check_identity(&self, want: NodeIdentity) -> Result<(), String> {
        match self.identity {
            Some(id) if id == want => Ok(()),
            Some(id) => Err(format!(
                "tls.cert names {id}, but this node is {want}: use this node's own certificate"
            )),
            None => Err(format!(
                "tls.cert names no Folio node: its subject alternative names need the URI {want}"
            )),
        }
    }

    /// The gRPC server's TLS: this node's certificate; client certificates are asked for and
    /// checked against the CA when presented (peers present one, clients with tokens need not).
    pub fn server(&self) -> ServerTlsConfig {
        install_crypto();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The peer listener's TLS (`peer_listen_addr`): as [`TlsMaterial::server`], but a client
    /// certificate signed by the CA is required for the handshake itself.
    pub fn peer_server(&self) -> ServerTlsConfig {
        self.server().client_auth_optional(false)
    }

    /// TLS for this node's own calls (peers, the registry, the leader): the CA verifies the
    /// server, and this node's certificate is its client certificate.
    pub fn client(&self) -> ClientTlsConfig {
        install_crypto();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .assume_http2(true)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// A rustls server configuration for the HTTP endpoint (`/metrics`, `/livez`, `/readyz`):
    /// this node's certificate, no client certificates.
    pub fn http_server(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        install_crypto();
        let chain = certs("cert", &self.cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| format!("tls.key: not a PEM private key: {e}"))?;
        let mut cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("tls: certificate and key do not match: {e}"))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// TLS as a client (the SDK, the CLI) sees it: the CA to trust (else the system's roots), and an
/// optional client certificate.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// CA certificate(s), PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl ClientTls {
    /// Trusts the CA in the PEM file at `path`.
    pub fn with_ca_file(path: &Path) -> Result<ClientTls, String> {
        let pem = std::fs::read(path).map_err(|e| format!("read CA {}: {e}", path.display()))?;
        certs("ca", &pem)?;
        Ok(ClientTls {
            ca_pem: Some(pem),
            identity: None,
        })
    }

    pub fn config(&self) -> ClientTlsConfig {
        install_crypto();
        let mut c = ClientTlsConfig::new()
            .assume_http2(true)
            .timeout(HANDSHAKE_TIMEOUT);
        c = match &self.ca_pem {
            Some(ca) => c.ca_certificate(Certificate::from_pem(ca)),
            None => c.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            c = c.identity(Identity::from_pem(cert, key));
        }
        c
    }
}

/// Accepts any server certificate. Only for probes: they send nothing secret and learn only
/// whether a node is live or ready, as Kubernetes' HTTPS probes do without verifying.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client for a node's HTTPS endpoint (`folio probe`): it trusts the CA in `ca_pem`,
/// or, without one, any certificate (see [`AnyServer`]).
pub fn http_client(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    install_crypto();
    let builder = rustls::ClientConfig::builder();
    let mut cfg = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs("ca", pem)? {
                roots
                    .add(c)
                    .map_err(|e| format!("ca: not a usable CA certificate: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
                .with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

impl From<&TlsMaterial> for ClientTls {
    fn from(m: &TlsMaterial) -> ClientTls {
        ClientTls {
            ca_pem: Some(m.ca_pem.clone()),
            identity: Some((m.cert_pem.clone(), m.key_pem.clone())),
        }
    }
}
