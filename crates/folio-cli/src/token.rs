//! `folio token`: make a signing key pair (`keygen`) and mint scoped bearer tokens from a
//! private key file (`issue`). Nodes verify tokens with the public keys their `[auth]` section
//! lists; see the README's "Security" section.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use folio_auth::token::{generate_key, valid_key_id, Signer, DEFAULT_AUDIENCE};

#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Make an Ed25519 signing key: DIR/ID.key (private, mode 0600) and DIR/ID.pub (for the
    /// nodes' `[auth] keys`). Refuses to overwrite either.
    Keygen {
        /// The key's id: tokens name it (`kid`), and nodes list it in `[auth] keys`.
        #[arg(long)]
        id: String,
        /// Directory to write the two files into (created if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print a signed token for these scopes, valid for --ttl.
    Issue {
        /// The private key file (`folio token keygen`'s ID.key).
        #[arg(long)]
        key: PathBuf,
        /// The key's id [default: the key file's name without .key].
        #[arg(long)]
        kid: Option<String>,
        /// Space-separated scopes: `admin`, `metrics`, `read:<volumes>`, `write:<volumes>`
        /// (implies read), `create:*` or `create:region/<r>`, where <volumes> is `*`,
        /// `volume/<id>`, `volume/<id prefix>*` or `region/<r>`. May be repeated.
        #[arg(long, required = true)]
        scope: Vec<String>,
        /// How long the token is valid: `90s`, `15m`, `12h`, `30d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Who the token is for (`sub`), shown in refusals and logs.
        #[arg(long)]
        sub: Option<String>,
        /// The audience the nodes expect (`[auth] audience`).
        #[arg(long, default_value = DEFAULT_AUDIENCE)]
        audience: String,
    },
}

/// Writes `contents` to a new file at `path` (never over an existing one), readable only by
/// its owner when `private`.
pub fn write_new(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = o
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("write {}", path.display()))?;
    f.sync_all()
        .with_context(|| format!("sync {}", path.display()))?;
    Ok(())
}

/// Makes a key pair as `keygen` does and returns (private key path, public key path).
pub fn keygen(id: &str, out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    valid_key_id(id).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let (private, public) = generate_key().map_err(anyhow::Error::msg)?;
    let (kp, pp) = (out.join(format!("{id}.key")), out.join(format!("{id}.pub")));
    if kp.exists() || pp.exists() {
        bail!(
            "{} or {} exists already: keys are never overwritten",
            kp.display(),
            pp.display()
        );
    }
    write_new(&kp, &private, true)?;
    write_new(&pp, &public, false)?;
    Ok((kp, pp))
}

/// Seconds from a duration with a unit (`90s`, `15m`, `12h`, `30d`).
fn ttl_seconds(s: &str) -> anyhow::Result<u64> {
    let ms = crate::volume::parse_duration_ms(s).map_err(anyhow::Error::msg)?;
    if ms < 1_000 {
        bail!("--ttl {s}: a token must live at least a second");
    }
    Ok(ms / 1_000)
}

pub fn run(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Keygen { id, out } => {
            let (kp, pp) = keygen(&id, &out)?;
            println!("private key (keep it secret): {}", kp.display());
            println!(
                "public key (list it in the nodes' [auth] keys): {}",
                pp.display()
            );
            println!();
            println!("[[auth.keys]]");
            println!("id = {id:?}");
            println!("public_key = {:?}", pp.display().to_string());
            Ok(())
        }
        TokenCmd::Issue {
            key,
            kid,
            scope,
            ttl,
            sub,
            audience,
        } => {
            let kid = match kid {
                Some(k) => k,
                None => key
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
                    .context("give the key's id with --kid")?,
            };
            let scopes = folio_auth::scope::parse_scopes(&scope.join(" "))
                .map_err(|e| anyhow::anyhow!("--scope: {e}"))?;
            if scopes.is_empty() {
                bail!("--scope: give at least one scope");
            }
            let signer = Signer::from_file(&kid, &key).map_err(anyhow::Error::msg)?;
            let token = signer.issue_for(
                sub.as_deref(),
                &audience,
                &scopes,
                folio_auth::layer::now_s(),
                ttl_seconds(&ttl)?,
            );
            println!("{token}");
            Ok(())
        }
    }
}
