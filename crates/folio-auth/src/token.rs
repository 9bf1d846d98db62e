//! Bearer tokens: JSON Web Tokens (RFC 7519) signed with Ed25519 (`alg: EdDSA`, RFC 8037), with
//! a key id (`kid`) so that keys rotate, an audience, an expiry and Folio scopes
//! ([`crate::scope`]).
//!
//! Why JWT: any language can mint one with a stock library (PyJWT, jose, go-jose), and operators
//! know how to read one. Why our own parser on aws-lc-rs rather than the `jsonwebtoken` crate:
//! versions before 10.3 have a claim type confusion (CVE-2026-25537), and 10.x needs either
//! aws-lc-rs's C build under a second name or RustCrypto's RSA (RUSTSEC-2023-0071, unfixed), for
//! algorithms Folio does not accept. Folio accepts exactly one algorithm, so the parser is
//! short: three base64url parts, a header that must say EdDSA and name a configured key, the
//! signature checked before the claims are even decoded, and claims with strict types. The
//! signature itself is aws-lc-rs's Ed25519, the library rustls already uses here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::scope::{parse_scopes, Scope};

/// Longest token accepted, in bytes: far more than any real one, and small enough that a header
/// full of garbage costs nothing to refuse.
pub const TOKEN_BYTES_MAX: usize = 8 * 1024;
/// Clock difference tolerated between the minter and a node, on `exp` and `nbf`.
pub const LEEWAY_S: u64 = 30;
/// The audience tokens carry unless a deployment configures its own.
pub const DEFAULT_AUDIENCE: &str = "folio";
/// Most verification keys one node accepts.
pub const KEYS_MAX: usize = 64;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token signed with unknown key id {0:?}")]
    UnknownKey(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token expired at {0} (unix seconds)")]
    Expired(u64),
    #[error("token not valid before {0} (unix seconds)")]
    NotYetValid(u64),
    #[error("token is for audience {got:?}, not {want:?}")]
    Audience { got: String, want: String },
}

/// `aud`: one audience or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, a: &str) -> bool {
        match self {
            Audience::One(x) => x == a,
            Audience::Many(xs) => xs.iter().any(|x| x == a),
        }
    }
}

/// A token's claims. Unknown claims are ignored; the known ones have strict types (an `exp` that
/// is not an integer makes the token malformed, never unlimited).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub aud: Audience,
    /// Expiry, unix seconds. Required.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Space-separated scopes.
    pub scope: String,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    /// Extensions the verifier must understand; Folio understands none.
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// What a verified token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub subject: Option<String>,
    pub key_id: String,
    /// Unix seconds after which the token (and any stream it opened) is refused.
    pub expires: u64,
    pub scopes: Vec<Scope>,
}

/// The `[auth]` section of a node's config: the keys tokens may be signed with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The audience a token must name; default "folio".
    #[serde(default)]
    pub audience: Option<String>,
    /// Verification keys by id. Removing one revokes every token signed with it.
    #[serde(default)]
    pub keys: Vec<KeyRef>,
}

/// A verification key: its id (the tokens' `kid`) and its Ed25519 public key file (PEM,
/// `PUBLIC KEY`, as `folio token keygen` writes it).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub id: String,
    pub public_key: PathBuf,
}

/// Tokens whose signature, audience and scopes were checked, kept so that a client sending the
/// same token on every call pays for the Ed25519 verification once (about 40 us, against about
/// 1 us for the digest and lookup; see RFC 0005). Bounded; entries live at most this long.
const VERIFIED_MAX: u64 = 10_000;
const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(300);

/// Checks tokens against a set of public keys.
#[derive(Clone, Debug)]
pub struct Verifier {
    keys: HashMap<String, [u8; 32]>,
    audience: String,
    /// SHA-256 of a token → what it grants. Only successes; the expiry is checked on every hit,
    /// and the cache belongs to this key set, so removing a key (a new verifier) revokes.
    verified: moka::sync::Cache<[u8; 32], Arc<Grant>>,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| TokenError::Malformed(format!("{what} is not base64url: {e}")))
}

impl Verifier {
    /// A verifier of tokens for `audience` signed by any of `keys` (id → raw Ed25519 public key).
    pub fn new(keys: HashMap<String, [u8; 32]>, audience: impl Into<String>) -> Verifier {
        Verifier {
            keys,
            audience: audience.into(),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_MAX)
                .time_to_live(VERIFIED_TTL)
                .build(),
        }
    }

    /// Loads the keys an `[auth]` section names.
    pub fn load(cfg: &AuthConfig) -> Result<Verifier, String> {
        if cfg.keys.is_empty() {
            return Err("auth.keys is empty: name at least one verification key".into());
        }
        if cfg.keys.len() > KEYS_MAX {
            return Err(format!("auth.keys: at most {KEYS_MAX} keys"));
        }
        let mut keys = HashMap::new();
        for k in &cfg.keys {
            valid_key_id(&k.id).map_err(|e| format!("auth.keys: {e}"))?;
            let key = read_public_key(&k.public_key)?;
            if keys.insert(k.id.clone(), key).is_some() {
                return Err(format!("auth.keys: key id {:?} is listed twice", k.id));
            }
        }
        let audience = cfg.audience.as_deref().unwrap_or(DEFAULT_AUDIENCE);
        Ok(Verifier::new(keys, audience))
    }

    /// The key ids this verifier accepts.
    pub fn key_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Checks `token` at time `now` (unix seconds): form, key, signature, audience and validity
    /// window, then the scopes. A token seen before is found by its digest, and then only its
    /// expiry is checked again.
    pub fn verify(&self, token: &str, now: u64) -> Result<Arc<Grant>, TokenError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::Malformed(format!(
                "longer than {TOKEN_BYTES_MAX} bytes"
            )));
        }
        let digest = digest_of(token);
        if let Some(g) = self.verified.get(&digest) {
            if now > g.expires {
                self.verified.invalidate(&digest);
                return Err(TokenError::Expired(g.expires.saturating_sub(LEEWAY_S)));
            }
            return Ok(g);
        }
        let g = Arc::new(self.check(token, now)?);
        self.verified.insert(digest, g.clone());
        Ok(g)
    }

    /// [`Verifier::verify`] without the cache.
    fn check(&self, token: &str, now: u64) -> Result<Grant, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "expected three dot-separated parts (a JWT)".into(),
            ));
        };
        let header: Header = serde_json::from_slice(&b64(h, "header")?)
            .map_err(|e| TokenError::Malformed(format!("header: {e}")))?;
        if header.alg != "EdDSA" {
            return Err(TokenError::Malformed(format!(
                "algorithm {:?}: only EdDSA is accepted",
                header.alg
            )));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "critical header extensions are not supported".into(),
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Malformed("header has no kid".into()))?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?;
        let sig = b64(s, "signature")?;
        let signed = &token.as_bytes()[..h.len() + 1 + c.len()];
        UnparsedPublicKey::new(&ED25519, key)
            .verify(signed, &sig)
            .map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = serde_json::from_slice(&b64(c, "claims")?)
            .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
        if !claims.aud.contains(&self.audience) {
            return Err(TokenError::Audience {
                got: format!("{:?}", claims.aud),
                want: self.audience.clone(),
            });
        }
        if now > claims.exp.saturating_add(LEEWAY_S) {
            return Err(TokenError::Expired(claims.exp));
        }
        if let Some(nbf) = claims.nbf {
            if now.saturating_add(LEEWAY_S) < nbf {
                return Err(TokenError::NotYetValid(nbf));
            }
        }
        let scopes = parse_scopes(&claims.scope)
            .map_err(|e| TokenError::Malformed(format!("scope: {e}")))?;
        Ok(Grant {
            subject: claims.sub,
            key_id: kid,
            expires: claims.exp.saturating_add(LEEWAY_S),
            scopes,
        })
    }
}

/// The key a verified token is cached under.
fn digest_of(token: &str) -> [u8; 32] {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// A key id: 1-64 letters, digits, '-', '_' or '.'.
pub fn valid_key_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "key id {id:?}: 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Signs tokens with one private key.
pub struct Signer {
    key_id: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Signer {
    /// A signer from a PKCS#8 `PRIVATE KEY` PEM (as `folio token keygen` writes it).
    pub fn from_pem(key_id: &str, pem: &str) -> Result<Signer, String> {
        use rustls_pki_types::pem::PemObject;
        valid_key_id(key_id)?;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("not a PKCS#8 private key PEM: {e}"))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| format!("not an Ed25519 private key: {e}"))?;
        Ok(Signer {
            key_id: key_id.into(),
            pair,
        })
    }

    /// [`Signer::from_pem`] from a file.
    pub fn from_file(key_id: &str, path: &Path) -> Result<Signer, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("read private key {}: {e}", path.display()))?;
        Signer::from_pem(key_id, &pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw Ed25519 public key of this signer.
    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        k.copy_from_slice(self.pair.public_key().as_ref());
        k
    }

    /// A signed token carrying `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        let header = Header {
            alg: "EdDSA".into(),
            kid: Some(self.key_id.clone()),
            typ: Some("JWT".into()),
            crit: None,
        };
        let enc = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        let mut t = format!(
            "{}.{}",
            enc(&serde_json::to_vec(&header).expect("a header always serializes")),
            enc(&serde_json::to_vec(claims).expect("claims always serialize"))
        );
        let sig = self.pair.sign(t.as_bytes());
        t.push('.');
        t.push_str(&enc(sig.as_ref()));
        t
    }

    /// A token for `scopes` valid for `ttl_s` seconds from `now`.
    pub fn issue_for(
        &self,
        subject: Option<&str>,
        audience: &str,
        scopes: &[Scope],
        now: u64,
        ttl_s: u64,
    ) -> String {
        self.issue(&Claims {
            sub: subject.map(str::to_string),
            aud: Audience::One(audience.into()),
            exp: now.saturating_add(ttl_s),
            nbf: None,
            iat: Some(now),
            scope: scopes
                .iter()
                .map(Scope::to_string)
                .collect::<Vec<_>>()
                .join(" "),
        })
    }
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the raw key follows it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A new Ed25519 key pair as (private key PEM, public key PEM).
pub fn generate_key() -> Result<(String, String), String> {
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "could not generate an Ed25519 key".to_string())?;
    let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).map_err(|e| e.to_string())?;
    let private = pem("PRIVATE KEY", doc.as_ref());
    Ok((private, public_key_pem(pair.public_key().as_ref())))
}

/// A raw Ed25519 public key as a `PUBLIC KEY` PEM.
pub fn public_key_pem(raw: &[u8]) -> String {
    let mut der = ED25519_SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    pem("PUBLIC KEY", &der)
}

/// The raw Ed25519 key in a `PUBLIC KEY` PEM.
pub fn parse_public_key_pem(text: &str) -> Result<[u8; 32], String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(text.as_bytes())
        .map_err(|e| format!("not a PUBLIC KEY PEM: {e}"))?;
    let der: &[u8] = der.as_ref();
    match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
        Some(raw) if raw.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(raw);
            Ok(k)
        }
        _ => Err("not an Ed25519 public key".into()),
    }
}

fn read_public_key(path: &Path) -> Result<[u8; 32], String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("read public key {}: {e}", path.display()))?;
    parse_public_key_pem(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `der` as a PEM block labelled `label`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn pair(kid: &str) -> (Signer, Verifier) {
        let (private, public) = generate_key().unwrap();
        let signer = Signer::from_pem(kid, &private).unwrap();
        let key = parse_public_key_pem(&public).unwrap();
        assert_eq!(key, signer.public_key());
        let v = Verifier::new(HashMap::from([(kid.to_string(), key)]), DEFAULT_AUDIENCE);
        (signer, v)
    }

    fn claims(exp: u64, scope: &str) -> Claims {
        Claims {
            sub: Some("app".into()),
            aud: Audience::One("folio".into()),
            exp,
            nbf: None,
            iat: Some(NOW),
            scope: scope.into(),
        }
    }

    fn forge(header: &str, claims: &str, signer: &Signer) -> String {
        let t = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let sig = signer.pair.sign(t.as_bytes());
        format!("{t}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    #[test]
    fn a_token_verifies_and_grants_its_scopes() {
        let (s, v) = pair("k1");
        let t = s.issue(&claims(NOW + 60, "read:* create:region/eu"));
        let g = v.verify(&t, NOW).unwrap();
        assert_eq!(g.key_id, "k1");
        assert_eq!(g.subject.as_deref(), Some("app"));
        assert_eq!(g.scopes.len(), 2);
        assert_eq!(g.expires, NOW + 60 + LEEWAY_S);
    }

    #[test]
    fn a_token_seen_before_is_served_from_the_cache_and_still_expires() {
        let (s, v) = pair("k1");
        let t = s.issue(&claims(NOW + 60, "write:*"));
        let first = v.verify(&t, NOW).unwrap();
        assert_eq!(v.verified.get(&digest_of(&t)), Some(first.clone()));
        assert_eq!(v.verify(&t, NOW + 60 + LEEWAY_S), Ok(first));
        assert_eq!(
            v.verify(&t, NOW + 61 + LEEWAY_S),
            Err(TokenError::Expired(NOW + 60))
        );
        assert_eq!(v.verified.get(&digest_of(&t)), None);
        // The same bytes with one signature character changed are a different token.
        let mut forged = t.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(v.verify(&forged, NOW), Err(TokenError::BadSignature));
        // Failures are not cached: a token refused once is checked in full the next time.
        assert_eq!(v.verified.get(&digest_of(&forged)), None);
    }

    #[test]
    fn every_way_a_token_can_be_wrong_is_refused() {
        let (s, v) = pair("k1");
        let (other, _) = pair("k1");
        let (k2, _) = pair("k2");
        let ok = s.issue(&claims(NOW + 60, "admin"));
        // Expired (past the leeway), not yet valid, wrong audience.
        let t = s.issue(&claims(NOW - LEEWAY_S - 1, "admin"));
        assert_eq!(
            v.verify(&t, NOW),
            Err(TokenError::Expired(NOW - LEEWAY_S - 1))
        );
        let mut c = claims(NOW + 60, "admin");
        c.nbf = Some(NOW + LEEWAY_S + 10);
        assert!(matches!(
            v.verify(&s.issue(&c), NOW),
            Err(TokenError::NotYetValid(_))
        ));
        let mut c = claims(NOW + 60, "admin");
        c.aud = Audience::Many(vec!["other".into()]);
        assert!(matches!(
            v.verify(&s.issue(&c), NOW),
            Err(TokenError::Audience { .. })
        ));
        // Signed by another key under the same id; by a key this verifier does not know.
        assert_eq!(
            v.verify(&other.issue(&claims(NOW + 60, "admin")), NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            v.verify(&k2.issue(&claims(NOW + 60, "admin")), NOW),
            Err(TokenError::UnknownKey("k2".into()))
        );
        // A claim changed after signing.
        let parts: Vec<&str> = ok.split('.').collect();
        let changed =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(NOW + 999_999, "admin")).unwrap());
        let t = format!("{}.{}.{}", parts[0], changed, parts[2]);
        assert_eq!(v.verify(&t, NOW), Err(TokenError::BadSignature));
        // Another algorithm; no key id; a critical extension; exp of the wrong type; no exp;
        // an unknown scope.
        for (h, c) in [
            (
                r#"{"alg":"none","kid":"k1"}"#,
                r#"{"aud":"folio","exp":1900000000,"scope":"admin"}"#,
            ),
            (
                r#"{"alg":"HS256","kid":"k1"}"#,
                r#"{"aud":"folio","exp":1900000000,"scope":"admin"}"#,
            ),
            (
                r#"{"alg":"EdDSA"}"#,
                r#"{"aud":"folio","exp":1900000000,"scope":"admin"}"#,
            ),
            (
                r#"{"alg":"EdDSA","kid":"k1","crit":["exp"]}"#,
                r#"{"aud":"folio","exp":1900000000,"scope":"admin"}"#,
            ),
            (
                r#"{"alg":"EdDSA","kid":"k1"}"#,
                r#"{"aud":"folio","exp":"1900000000","scope":"admin"}"#,
            ),
            (
                r#"{"alg":"EdDSA","kid":"k1"}"#,
                r#"{"aud":"folio","exp":1.9e9,"scope":"admin"}"#,
            ),
            (
                r#"{"alg":"EdDSA","kid":"k1"}"#,
                r#"{"aud":"folio","scope":"admin"}"#,
            ),
            (
                r#"{"alg":"EdDSA","kid":"k1"}"#,
                r#"{"aud":"folio","exp":1900000000,"scope":"root"}"#,
            ),
        ] {
            let t = forge(h, c, &s);
            assert!(
                matches!(v.verify(&t, NOW), Err(TokenError::Malformed(_))),
                "{h} {c}: {:?}",
                v.verify(&t, NOW)
            );
        }
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "....",
            &"x".repeat(TOKEN_BYTES_MAX + 1),
        ] {
            assert!(matches!(v.verify(t, NOW), Err(TokenError::Malformed(_))));
        }
    }

    #[test]
    fn keys_round_trip_through_pem() {
        let (private, public) = generate_key().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let s = Signer::from_pem("k", &private).unwrap();
        assert_eq!(parse_public_key_pem(&public).unwrap(), s.public_key());
        assert_eq!(public, public_key_pem(&s.public_key()));
        assert!(parse_public_key_pem(&private).is_err());
        assert!(Signer::from_pem("k", &public).is_err());
        assert!(Signer::from_pem("bad id", &private).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever bytes arrive, the parser answers (never panics), and nothing but the
        /// signer's own token verifies.
        #[test]
        fn the_parser_never_panics_and_never_accepts_garbage(t in ".{0,400}") {
            let (_, v) = pair("k1");
            prop_assert!(v.verify(&t, NOW).is_err());
        }

        /// Flipping any one byte of a good token makes it fail.
        #[test]
        fn any_changed_byte_is_refused(i in 0usize..10_000, b in 0u8..128) {
            let (s, v) = pair("k1");
            let t = s.issue(&claims(NOW + 60, "write:*"));
            let i = i % t.len();
            prop_assume!(t.as_bytes()[i] != b);
            let mut bytes = t.into_bytes();
            bytes[i] = b;
            if let Ok(t) = String::from_utf8(bytes) {
                prop_assert!(v.verify(&t, NOW).is_err());
            }
        }

        /// Tokens built from random claims and scopes verify exactly when the scopes parse.
        #[test]
        fn structured_tokens_verify_iff_scopes_parse(
            scope in prop::collection::vec(
                prop_oneof![
                    Just("admin".to_string()),
                    Just("read:*".to_string()),
                    "[a-z]{1,8}:[a-z/*]{0,12}",
                    "write:volume/[0-9a-f]{1,34}\\*?",
                ],
                0..6,
            ),
            ttl in 0u64..1000,
        ) {
            let (s, v) = pair("k1");
            let scope = scope.join(" ");
            let t = s.issue(&claims(NOW + ttl, &scope));
            prop_assert_eq!(v.verify(&t, NOW).is_ok(), parse_scopes(&scope).is_ok());
        }
    }
}
