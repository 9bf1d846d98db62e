//! What a token allows: scopes, and the check of a call's need against them.
//!
//! A token's `scope` claim is a space-separated list (as in OAuth 2.0):
//!
//! | scope | allows |
//! |---|---|
//! | `admin` | everything, including the admin API, registry status and `/metrics` |
//! | `read:<volumes>` | snapshots, page reads, commit lists, change pulls and watches |
//! | `write:<volumes>` | all of `read`, and commits, page uploads, deletes, forks, retention |
//! | `create:<region>` | creating volumes (and the target of a fork) in that region |
//! | `metrics` | `/metrics` only |
//!
//! `<volumes>` is `*` (every volume), `volume/<32 hex digits>` (one volume),
//! `volume/<hex digits>*` (volumes whose id starts so) or `region/<name>` (the volumes of that
//! region's groups). `<region>` is `*` or `region/<name>`.

use std::fmt;
use std::str::FromStr;

/// Which volumes a read or write scope covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Volumes {
    All,
    /// One volume, by its id in lowercase hex.
    One(String),
    /// Volumes whose id (lowercase hex) starts with this.
    Prefix(String),
    Region(String),
}

/// One scope of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Metrics,
    Read(Volumes),
    Write(Volumes),
    /// Create volumes in a region; `None` is every region.
    Create(Option<String>),
}

/// A scope string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad scope {scope:?}: {why}")]
pub struct ScopeError {
    pub scope: String,
    pub why: &'static str,
}

/// Longest scope string (a region name is at most 64 bytes).
const SCOPE_BYTES_MAX: usize = 128;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FromStr for Volumes {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            return Ok(Volumes::All);
        }
        if let Some(r) = s.strip_prefix("region/") {
            return if valid_name(r) {
                Ok(Volumes::Region(r.into()))
            } else {
                Err("a region is 1-64 letters, digits, '-', '_' or '.'")
            };
        }
        let Some(id) = s.strip_prefix("volume/") else {
            return Err(
                "volumes are '*', 'volume/<id>', 'volume/<hex prefix>*' or 'region/<name>'",
            );
        };
        if let Some(p) = id.strip_suffix('*') {
            if p.is_empty() || p.len() > 32 || !hex(p) {
                return Err("a volume prefix is 1-32 lowercase hex digits before '*'");
            }
            return Ok(Volumes::Prefix(p.into()));
        }
        if id.len() != 32 || !hex(id) {
            return Err("a volume id is 32 lowercase hex digits");
        }
        Ok(Volumes::One(id.into()))
    }
}

impl fmt::Display for Volumes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Volumes::All => f.write_str("*"),
            Volumes::One(v) => write!(f, "volume/{v}"),
            Volumes::Prefix(p) => write!(f, "volume/{p}*"),
            Volumes::Region(r) => write!(f, "region/{r}"),
        }
    }
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why| ScopeError {
            scope: s.chars().take(SCOPE_BYTES_MAX).collect(),
            why,
        };
        if s.len() > SCOPE_BYTES_MAX {
            return Err(bad("longer than 128 bytes"));
        }
        match s {
            "admin" => return Ok(Scope::Admin),
            "metrics" => return Ok(Scope::Metrics),
            _ => {}
        }
        let Some((verb, rest)) = s.split_once(':') else {
            return Err(bad(
                "expected admin, metrics, read:<volumes>, write:<volumes> or create:<region>",
            ));
        };
        match verb {
            "read" => rest.parse().map(Scope::Read).map_err(bad),
            "write" => rest.parse().map(Scope::Write).map_err(bad),
            "create" => match rest.parse().map_err(bad)? {
                Volumes::All => Ok(Scope::Create(None)),
                Volumes::Region(r) => Ok(Scope::Create(Some(r))),
                _ => Err(bad("create takes '*' or 'region/<name>'")),
            },
            _ => Err(bad("the verb is read, write or create")),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Admin => f.write_str("admin"),
            Scope::Metrics => f.write_str("metrics"),
            Scope::Read(v) => write!(f, "read:{v}"),
            Scope::Write(v) => write!(f, "write:{v}"),
            Scope::Create(None) => f.write_str("create:*"),
            Scope::Create(Some(r)) => write!(f, "create:region/{r}"),
        }
    }
}

/// Parses a space-separated scope list; at most [`SCOPES_MAX`] scopes.
pub fn parse_scopes(s: &str) -> Result<Vec<Scope>, ScopeError> {
    let scopes: Vec<&str> = s.split_ascii_whitespace().collect();
    if scopes.len() > SCOPES_MAX {
        return Err(ScopeError {
            scope: s.chars().take(SCOPE_BYTES_MAX).collect(),
            why: "more than 64 scopes",
        });
    }
    scopes.into_iter().map(str::parse).collect()
}

/// Most scopes in one token.
pub const SCOPES_MAX: usize = 64;

/// A volume as a call names it: its id in lowercase hex and the region of the group that serves
/// it (when the node answering knows it).
#[derive(Clone, Copy, Debug)]
pub struct VolumeRef<'a> {
    pub id: &'a str,
    pub region: Option<&'a str>,
}

/// What a call needs.
#[derive(Clone, Copy, Debug)]
pub enum Need<'a> {
    Read(VolumeRef<'a>),
    Write(VolumeRef<'a>),
    /// Create a volume in this region.
    Create(&'a str),
    /// List the volumes of a group of this region: `read` on the region or on every volume.
    List(&'a str),
    Metrics,
    Admin,
}

/// Reading or writing a volume, before the volume is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeOp {
    Read,
    Write,
}

impl VolumeOp {
    /// What this operation needs on `v`.
    pub fn on(self, v: VolumeRef<'_>) -> Need<'_> {
        match self {
            VolumeOp::Read => Need::Read(v),
            VolumeOp::Write => Need::Write(v),
        }
    }
}

impl fmt::Display for Need<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Read(v) => write!(f, "read on volume {}", v.id),
            Need::Write(v) => write!(f, "write on volume {}", v.id),
            Need::Create(r) => write!(f, "create in region {r}"),
            Need::List(r) => write!(f, "read on region {r}"),
            Need::Metrics => f.write_str("metrics"),
            Need::Admin => f.write_str("admin"),
        }
    }
}

impl Volumes {
    fn covers(&self, v: &VolumeRef<'_>) -> bool {
        match self {
            Volumes::All => true,
            Volumes::One(id) => id == v.id,
            Volumes::Prefix(p) => v.id.starts_with(p.as_str()),
            Volumes::Region(r) => v.region == Some(r.as_str()),
        }
    }
}

impl Scope {
    /// Whether this scope alone allows `need`.
    pub fn allows(&self, need: &Need<'_>) -> bool {
        match (self, need) {
            (Scope::Admin, _) => true,
            (Scope::Metrics, Need::Metrics) => true,
            (Scope::Read(vs), Need::Read(v)) => vs.covers(v),
            (Scope::Write(vs), Need::Read(v) | Need::Write(v)) => vs.covers(v),
            (Scope::Read(vs) | Scope::Write(vs), Need::List(r)) => match vs {
                Volumes::All => true,
                Volumes::Region(x) => x == r,
                _ => false,
            },
            (Scope::Create(None), Need::Create(_)) => true,
            (Scope::Create(Some(x)), Need::Create(r)) => x == r,
            _ => false,
        }
    }
}

/// Whether any of `scopes` allows `need`.
pub fn allows(scopes: &[Scope], need: &Need<'_>) -> bool {
    scopes.iter().any(|s| s.allows(need))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn scopes_round_trip() {
        for s in [
            "admin",
            "metrics",
            "read:*",
            "write:volume/0123456789abcdef0123456789abcdef",
            "read:volume/01ab*",
            "write:region/eu-west",
            "create:*",
            "create:region/us",
        ] {
            let p: Scope = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
    }

    #[test]
    fn bad_scopes_are_refused() {
        for s in [
            "",
            "root",
            "read",
            "read:",
            "read:volume/",
            "read:volume/0123",
            "read:volume/0123456789ABCDEF0123456789ABCDEF",
            "read:volume/*",
            "read:volume/xyz*",
            "read:region/",
            "read:region/a b",
            "create:volume/01*",
            "delete:*",
        ] {
            assert!(s.parse::<Scope>().is_err(), "{s:?}");
        }
        assert!(parse_scopes(&"admin ".repeat(65)).is_err());
    }

    #[test]
    fn needs_are_matched() {
        let v = VolumeRef {
            id: V,
            region: Some("eu"),
        };
        let other = VolumeRef {
            id: "ff23456789abcdef0123456789abcdef",
            region: Some("us"),
        };
        let s = parse_scopes("read:volume/0123* write:region/us create:region/eu").unwrap();
        assert!(allows(&s, &Need::Read(v)));
        assert!(!allows(&s, &Need::Write(v)));
        assert!(allows(&s, &Need::Write(other)));
        assert!(allows(&s, &Need::Read(other)));
        assert!(allows(&s, &Need::Create("eu")));
        assert!(!allows(&s, &Need::Create("us")));
        assert!(allows(&s, &Need::List("us")));
        assert!(!allows(&s, &Need::List("eu")));
        assert!(!allows(&s, &Need::Admin));
        assert!(!allows(&s, &Need::Metrics));
        // A region scope does not cover a volume whose region the node does not know.
        let unknown = VolumeRef {
            id: other.id,
            region: None,
        };
        assert!(!allows(&s, &Need::Write(unknown)));
        let admin = parse_scopes("admin").unwrap();
        assert!(allows(&admin, &Need::Admin) && allows(&admin, &Need::Write(v)));
        assert!(allows(&parse_scopes("metrics").unwrap(), &Need::Metrics));
    }
}
