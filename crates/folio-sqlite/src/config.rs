//! Where a database's volume is served and how the VFS behaves: from the environment, then from
//! the database URI's parameters (`file:VOLUME?vfs=folio&addr=...`), which win.

use std::path::PathBuf;
use std::time::Duration;

use folio_client::{Client, RetryPolicy, RouterOptions};

/// When a connection's view of the volume is brought up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncMode {
    /// At the start of every transaction (one `PullChanges` call): a transaction sees every
    /// commit acknowledged before it began, as with a local SQLite file. The default.
    Begin,
    /// Only on `PRAGMA folio_sync` and after a commit loses a race: transactions start at once
    /// on the local view, with no call to the group.
    Manual,
    /// A background `WatchVolume` stream keeps the view current: no call at transaction start,
    /// and other clients' commits show up within a round trip.
    Follow,
}

impl SyncMode {
    fn parse(s: &str) -> Result<SyncMode, String> {
        match s.to_ascii_lowercase().as_str() {
            "begin" => Ok(SyncMode::Begin),
            "manual" => Ok(SyncMode::Manual),
            "follow" => Ok(SyncMode::Follow),
            other => Err(format!("sync={other:?}: expected begin, manual or follow")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Begin => "begin",
            SyncMode::Manual => "manual",
            SyncMode::Follow => "follow",
        }
    }
}

/// Default page cache per volume: 64 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;
/// Largest in-memory journal or temporary file: 512 MiB (a journal holds at most one
/// transaction's worth of original pages, and a transaction is at most 64 MiB of pages).
pub const MEM_FILE_LIMIT: usize = 512 << 20;

/// How one database is reached and synced.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    /// A group's members (`host:port`), when not going through the registry.
    pub addrs: Vec<String>,
    /// The volume registry's members; used when `addrs` is empty.
    pub registry: Vec<String>,
    /// Region for volumes created through the registry.
    pub region: Option<String>,
    /// CA certificate (PEM): speak TLS and trust it.
    pub ca: Option<PathBuf>,
    /// Speak TLS trusting the system's roots (without `ca`).
    pub tls: bool,
    /// A bearer token (environment only: URIs end up in logs).
    pub token: Option<String>,
    /// A file holding the bearer token, re-read when it changes.
    pub token_file: Option<PathBuf>,
    pub sync: SyncMode,
    pub cache_bytes: u64,
    pub prefetch: bool,
    /// Deadline for one call to the group, retries included.
    pub timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addrs: Vec::new(),
            registry: Vec::new(),
            region: None,
            ca: None,
            tls: false,
            token: None,
            token_file: None,
            sync: SyncMode::Begin,
            cache_bytes: DEFAULT_CACHE_BYTES,
            prefetch: true,
            timeout_ms: 20_000,
        }
    }
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect()
}

fn flag(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(format!("{key}={v:?}: expected 1 or 0")),
    }
}

impl Config {
    /// The configuration the environment gives: `FOLIO_ADDR`, `FOLIO_REGISTRY`, `FOLIO_REGION`,
    /// `FOLIO_CA`, `FOLIO_TOKEN`, `FOLIO_TOKEN_FILE`, `FOLIO_SQLITE_SYNC`, `FOLIO_SQLITE_CACHE_MB`.
    pub fn from_env() -> Result<Config, String> {
        let mut c = Config::default();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(v) = var("FOLIO_ADDR") {
            c.set("addr", &v)?;
        }
        if let Some(v) = var("FOLIO_REGISTRY") {
            c.set("registry", &v)?;
        }
        if let Some(v) = var("FOLIO_REGION") {
            c.set("region", &v)?;
        }
        if let Some(v) = var("FOLIO_CA") {
            c.set("ca", &v)?;
        }
        if let Some(v) = var("FOLIO_TOKEN_FILE") {
            c.set("token_file", &v)?;
        }
        c.token = var("FOLIO_TOKEN");
        if let Some(v) = var("FOLIO_SQLITE_SYNC") {
            c.set("sync", &v)?;
        }
        if let Some(v) = var("FOLIO_SQLITE_CACHE_MB") {
            c.set("cache_mb", &v)?;
        }
        Ok(c)
    }

    /// Applies one URI parameter. Parameters that are SQLite's own (`vfs`, `mode`, `cache`,
    /// `immutable`, ...) are left to SQLite.
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        match key {
            "addr" => self.addrs = list(v),
            "registry" => self.registry = list(v),
            "region" => self.region = Some(v.to_string()).filter(|r| !r.is_empty()),
            "ca" => self.ca = Some(PathBuf::from(v)),
            "tls" => self.tls = flag(key, v)?,
            "token_file" => self.token_file = Some(PathBuf::from(v)),
            "sync" => self.sync = SyncMode::parse(v)?,
            "cache_mb" => {
                let mb: u64 = v
                    .parse()
                    .map_err(|_| format!("cache_mb={v:?}: expected a number of MiB"))?;
                self.cache_bytes = mb.clamp(1, 1 << 20) << 20;
            }
            "prefetch" => self.prefetch = flag(key, v)?,
            "timeout_ms" => {
                self.timeout_ms = v
                    .parse::<u64>()
                    .map_err(|_| format!("timeout_ms={v:?}: expected milliseconds"))?
                    .clamp(100, 600_000)
            }
            _ => {}
        }
        Ok(())
    }

    /// A client for this configuration.
    pub fn client(&self) -> Result<Client, String> {
        let security = folio_client::security_from(
            self.ca.as_deref(),
            self.tls,
            self.token.clone(),
            self.token_file.clone(),
        )?;
        let total = Duration::from_millis(self.timeout_ms);
        let policy = RetryPolicy {
            total_timeout: total,
            attempt_timeout: total.min(Duration::from_secs(5)),
            ..RetryPolicy::default()
        };
        if !self.addrs.is_empty() {
            Client::secured(self.addrs.clone(), policy, security).map_err(|e| e.to_string())
        } else if !self.registry.is_empty() {
            Client::with_registry(
                self.registry.clone(),
                policy,
                RouterOptions {
                    default_region: self.region.clone(),
                    security,
                    ..RouterOptions::default()
                },
            )
            .map_err(|e| e.to_string())
        } else {
            Ok(Client::secured(["127.0.0.1:7070"], policy, security).map_err(|e| e.to_string())?)
        }
    }

    /// What decides which connections of a process share a volume's view, page cache and lock
    /// table: the client, and the settings of the view.
    pub fn volume_key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.client_key(),
            self.sync.name(),
            self.cache_bytes,
            self.prefetch
        )
    }

    /// What decides which client a database uses (everything but the per-database knobs).
    pub fn client_key(&self) -> String {
        format!(
            "{:?}|{:?}|{:?}|{:?}|{}|{}|{:?}|{}",
            self.addrs,
            self.registry,
            self.region,
            self.ca,
            self.tls,
            self.token.is_some(),
            self.token_file,
            self.timeout_ms
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_parameters_override_and_are_checked() {
        let mut c = Config::default();
        c.set("addr", "a:1, b:2,").unwrap();
        assert_eq!(c.addrs, vec!["a:1", "b:2"]);
        c.set("sync", "FOLLOW").unwrap();
        assert_eq!(c.sync, SyncMode::Follow);
        assert!(c.set("sync", "sometimes").unwrap_err().contains("begin"));
        c.set("cache_mb", "8").unwrap();
        assert_eq!(c.cache_bytes, 8 << 20);
        assert!(c.set("cache_mb", "lots").is_err());
        assert!(c.set("prefetch", "maybe").is_err());
        c.set("prefetch", "0").unwrap();
        assert!(!c.prefetch);
        // SQLite's own parameters are not ours to judge.
        c.set("mode", "ro").unwrap();
        c.set("timeout_ms", "1").unwrap();
        assert_eq!(c.timeout_ms, 100, "clamped");
    }

    #[test]
    fn the_client_key_tells_connections_apart() {
        let a = Config::default();
        let mut b = a.clone();
        assert_eq!(a.client_key(), b.client_key());
        b.sync = SyncMode::Manual;
        assert_eq!(a.client_key(), b.client_key(), "one client serves both");
        assert_ne!(a.volume_key(), b.volume_key(), "but not one view");
        b.addrs = vec!["x:1".into()];
        assert_ne!(a.client_key(), b.client_key());
    }
}
