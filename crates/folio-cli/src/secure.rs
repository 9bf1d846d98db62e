//! How the CLI reaches secured nodes (`--ca`, `--token`, `--token-file`), and the CA,
//! certificates, signing key and admin token `folio dev --secure` makes for itself.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;
use folio_auth::dev::Ca;
use folio_auth::token::{AuthConfig, KeyRef, Signer};
use folio_auth::{NodeIdentity, TlsConfig};
use folio_client::Security;

/// How every client command connects: TLS and a bearer token, when the nodes need them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConnArgs {
    /// Speak TLS to the nodes and trust this CA certificate (PEM).
    #[arg(long, global = true, env = "FOLIO_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Speak TLS to the nodes, trusting the system's root certificates.
    #[arg(long, global = true)]
    tls: bool,
    /// Bearer token sent with every call.
    #[arg(
        long,
        global = true,
        env = "FOLIO_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// File holding the bearer token, re-read when it changes.
    #[arg(long, global = true, env = "FOLIO_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

static SECURITY: OnceLock<Security> = OnceLock::new();

impl ConnArgs {
    /// The CA given with --ca (or FOLIO_CA).
    pub fn ca(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// Reads the CA and sets what [`security`] answers for the rest of the process.
    pub fn install(&self) -> anyhow::Result<()> {
        let s = folio_client::security_from(
            self.ca.as_deref(),
            self.tls,
            self.token.clone(),
            self.token_file.clone(),
        )
        .map_err(anyhow::Error::msg)?;
        let _ = SECURITY.set(s);
        Ok(())
    }
}

/// How this process's client commands connect (plaintext without a token unless the command
/// line said otherwise).
pub fn security() -> Security {
    SECURITY.get().cloned().unwrap_or_default()
}

/// What `folio dev --secure` made: the nodes' `[tls]` and `[auth]`, and the files to print.
pub struct DevSecurity {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub node_tls: TlsConfig,
    pub registry_tls: TlsConfig,
    pub auth: AuthConfig,
    pub signing_key: PathBuf,
    pub admin_token: PathBuf,
}

/// The id of the signing key `folio dev --secure` makes.
const DEV_KEY_ID: &str = "dev";
/// How long the dev admin token lives; a restart mints a new one.
const DEV_TOKEN_TTL_S: u64 = 7 * 24 * 3600;

/// Makes (once: a restart reuses them) a CA, a certificate for the dev group's node and one for
/// the registry, and a token signing key under `dir`; mints a fresh admin token each time.
pub fn dev_material(dir: &Path) -> anyhow::Result<DevSecurity> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let ca_path = dir.join("ca.pem");
    let node = NodeIdentity::Member { group: 1, node: 1 };
    let registry = NodeIdentity::Registry { node: 1 };
    let tls = |name: &str| TlsConfig {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        ca: ca_path.clone(),
    };
    let (node_tls, registry_tls) = (tls("node"), tls("registry"));
    if !ca_path.exists() {
        // Every file is made anew with the CA: certificates of an older CA would not verify.
        for t in [&node_tls, &registry_tls] {
            let _ = std::fs::remove_file(&t.cert);
            let _ = std::fs::remove_file(&t.key);
        }
        let ca = Ca::new("folio dev CA").map_err(anyhow::Error::msg)?;
        let hosts = ["localhost".to_string(), "127.0.0.1".to_string()];
        for (t, id) in [(&node_tls, node), (&registry_tls, registry)] {
            let c = ca.issue(Some(id), &hosts).map_err(anyhow::Error::msg)?;
            crate::token::write_new(&t.cert, &c.cert_pem, false)?;
            crate::token::write_new(&t.key, &c.key_pem, true)?;
        }
        // The CA's key is not kept: nothing else is ever signed with it.
        crate::token::write_new(&ca_path, &ca.cert_pem(), false)?;
    }
    let signing_key = dir.join(format!("{DEV_KEY_ID}.key"));
    let public_key = dir.join(format!("{DEV_KEY_ID}.pub"));
    if !signing_key.exists() {
        let _ = std::fs::remove_file(&public_key);
        crate::token::keygen(DEV_KEY_ID, dir)?;
    }
    let signer = Signer::from_file(DEV_KEY_ID, &signing_key).map_err(anyhow::Error::msg)?;
    let scopes = folio_auth::scope::parse_scopes("admin metrics write:* create:*")
        .expect("the dev admin scopes parse");
    let token = signer.issue_for(
        Some("folio dev admin"),
        folio_auth::token::DEFAULT_AUDIENCE,
        &scopes,
        folio_auth::layer::now_s(),
        DEV_TOKEN_TTL_S,
    );
    let admin_token = dir.join("admin.token");
    let _ = std::fs::remove_file(&admin_token);
    crate::token::write_new(&admin_token, &token, true)?;
    Ok(DevSecurity {
        dir: dir.to_path_buf(),
        ca: ca_path,
        node_tls,
        registry_tls,
        auth: AuthConfig {
            audience: None,
            keys: vec![KeyRef {
                id: DEV_KEY_ID.into(),
                public_key,
            }],
        },
        signing_key,
        admin_token,
    })
}

impl DevSecurity {
    /// How to reach the secured dev node, for its banner.
    pub fn usage(&self, addr: &str) -> String {
        let (ca, token, key) = (
            self.ca.display(),
            self.admin_token.display(),
            self.signing_key.display(),
        );
        format!(
            "folio dev: TLS and client tokens on; certificates and keys in {dir}\n\
             folio dev: an admin token (7 days) is in {token}. Use it with:\n\
             \x20 export FOLIO_CA={ca} FOLIO_TOKEN_FILE={token}\n\
             \x20 folio volume create\n\
             \x20 grpcurl -cacert {ca} -H \"authorization: Bearer $(cat {token})\" {addr} list\n\
             folio dev: mint narrower tokens with\n\
             \x20 folio token issue --key {key} --scope 'read:*' --ttl 1h",
            dir = self.dir.display(),
        )
    }
}
