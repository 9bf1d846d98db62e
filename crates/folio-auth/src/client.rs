//! The client side: where a caller's bearer token comes from. A token is fixed, read from a file
//! (re-read when the file changes, as a mounted Kubernetes secret or a refreshing sidecar
//! rewrites it), or produced by a function the application supplies (its own refresh).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

/// How often a token file is checked for changes, at most.
pub const TOKEN_FILE_RECHECK: Duration = Duration::from_secs(1);

/// Where the token sent with every call comes from.
#[derive(Clone)]
pub struct TokenSource(Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource")
    }
}

struct FileState {
    checked: Option<Instant>,
    modified: Option<SystemTime>,
    token: Option<String>,
}

impl TokenSource {
    /// The same token for every call.
    pub fn fixed(token: impl Into<String>) -> TokenSource {
        let t = token.into().trim().to_string();
        TokenSource(Arc::new(move || Some(t.clone())))
    }

    /// The token in a file, re-read whenever its modification time changes (checked at most
    /// once a second).
    pub fn file(path: impl Into<PathBuf>) -> TokenSource {
        let path = path.into();
        let state = Mutex::new(FileState {
            checked: None,
            modified: None,
            token: None,
        });
        TokenSource(Arc::new(move || {
            let mut s = state.lock().expect("token file lock is never poisoned");
            if s.checked.is_none_or(|c| c.elapsed() >= TOKEN_FILE_RECHECK) {
                s.checked = Some(Instant::now());
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                if modified != s.modified || s.token.is_none() {
                    s.modified = modified;
                    match std::fs::read_to_string(&path) {
                        Ok(t) => s.token = Some(t.trim().to_string()),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot read token file");
                        }
                    }
                }
            }
            s.token.clone()
        }))
    }

    /// Tokens from the application's own function (called once per call; keep it cheap).
    pub fn from_fn(f: impl Fn() -> Option<String> + Send + Sync + 'static) -> TokenSource {
        TokenSource(Arc::new(f))
    }

    /// The current token.
    pub fn token(&self) -> Option<String> {
        (self.0)()
    }

    /// The `authorization` header value for the current token.
    pub fn header(&self) -> Option<HeaderValue> {
        let t = self.token()?;
        HeaderValue::from_str(&format!("Bearer {t}")).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "one\n").unwrap();
        let s = TokenSource::file(&p);
        assert_eq!(s.token().as_deref(), Some("one"));
        std::fs::write(&p, "two").unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        std::thread::sleep(TOKEN_FILE_RECHECK + Duration::from_millis(50));
        assert_eq!(s.token().as_deref(), Some("two"));
        assert_eq!(
            TokenSource::fixed(" t ").header().unwrap(),
            HeaderValue::from_static("Bearer t")
        );
    }
}
