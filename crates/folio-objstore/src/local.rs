//! An object store in a local directory: the embedded default of `folio dev`. Objects are files
//! named by their key. A conditional put writes and fsyncs a temporary file, then hard-links it
//! to the key's path: `link` fails if the path exists, which makes the create atomic, and readers
//! only ever see complete files.

use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{check_range, check_size, Listed, ObjectKey, ObjectStore, PutOutcome, StoreError};

const TMP_DIR: &str = ".tmp";

pub struct LocalDirStore {
    root: PathBuf,
    next_tmp: AtomicU64,
}

fn io_err(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Other(format!("{what}: {e}"))
}

/// A temporary file this old belongs to a write that will never finish.
const STALE_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

impl LocalDirStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(root.join(TMP_DIR))
            .map_err(|e| io_err("create store directory", e))?;
        // Temporary files of a crashed process are garbage. Several processes may share the
        // directory (every node of a group on one machine, or a shared mount) and each writes
        // through a temporary file, so only files far older than any write are removed.
        if let Ok(rd) = std::fs::read_dir(root.join(TMP_DIR)) {
            for e in rd.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_TMP_AGE);
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(LocalDirStore {
            root,
            next_tmp: AtomicU64::new(0),
        })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.to_string())
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<Listed>) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if rel.is_empty() && name == TMP_DIR {
            continue;
        }
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if e.file_type()?.is_dir() {
            walk(&e.path(), &child, out)?;
        } else {
            // A file removed since read_dir listed it is simply not listed.
            match e.metadata() {
                Ok(m) => out.push(Listed {
                    key: child,
                    size: m.len(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalDirStore {
    async fn put_if_absent(&self, key: &ObjectKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        check_size(&bytes)?;
        let path = self.path(key);
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(format!("{}-{n}", std::process::id()));
        Self::blocking(move || {
            let parent = path.parent().expect("object paths have a parent");
            std::fs::create_dir_all(parent).map_err(|e| io_err("create object directory", e))?;
            let mut f =
                std::fs::File::create(&tmp).map_err(|e| io_err("create temporary object", e))?;
            f.write_all(&bytes).map_err(|e| io_err("write object", e))?;
            f.sync_all().map_err(|e| io_err("sync object", e))?;
            drop(f);
            let res = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match res {
                Ok(()) => {
                    sync_dir(parent).map_err(|e| io_err("sync object directory", e))?;
                    Ok(PutOutcome::Created)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Ok(PutOutcome::AlreadyExists)
                }
                Err(e) => Err(io_err("link object", e)),
            }
        })
        .await
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StoreError> {
        let path = self.path(key);
        let name = key.to_string();
        Self::blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound(name)),
            Err(e) => Err(io_err("read object", e)),
        })
        .await
    }

    async fn get_range(&self, key: &ObjectKey, range: Range<u64>) -> Result<Bytes, StoreError> {
        let path = self.path(key);
        let key = key.clone();
        Self::blocking(move || {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::NotFound(key.to_string()))
                }
                Err(e) => return Err(io_err("open object", e)),
            };
            let len = f.metadata().map_err(|e| io_err("stat object", e))?.len();
            check_range(&key, &range, len)?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            f.seek(SeekFrom::Start(range.start))
                .map_err(|e| io_err("seek object", e))?;
            f.read_exact(&mut buf)
                .map_err(|e| io_err("read object range", e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<u64>, StoreError> {
        let path = self.path(key);
        Self::blocking(move || match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat object", e)),
        })
        .await
    }

    async fn list_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        // Walk only the deepest directory the prefix names in full.
        let dir_part = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        let root = self.root.join(dir_part);
        let (prefix, start_after) = (prefix.to_string(), start_after.map(str::to_string));
        let dir_part = dir_part.to_string();
        Self::blocking(move || {
            let mut keys = Vec::new();
            walk(&root, &dir_part, &mut keys).map_err(|e| io_err("list objects", e))?;
            keys.retain(|l| {
                l.key.starts_with(&prefix) && start_after.as_ref().is_none_or(|s| &l.key > s)
            });
            keys.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            keys.truncate(limit);
            Ok(keys)
        })
        .await
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StoreError> {
        let path = self.path(key);
        Self::blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete object", e)),
        })
        .await
    }
}
