//! What a node and the bucket hold, measured from outside the processes: the bytes under a
//! directory (a `du` of apparent sizes, each hard-linked file once), the bytes of a node's
//! snapshot files, a process's resident memory (`VmRSS` in `/proc/<pid>/status`), and, for an
//! S3 bucket this binary cannot list, an estimate from the nodes' `/metrics`.
//!
//! folio-bench does not link an S3 client, so an S3 bucket's bytes are estimated as the segment
//! bytes the nodes uploaded (`folio_segment_bytes_sum`, summed over nodes: only a leader uploads)
//! plus the index-run bytes the newest manifest lists (`folio_checkpoint_run_bytes`, the largest
//! over nodes: a node sets it when it writes a manifest). Runs merged away, manifests and claims
//! are not counted, so the estimate is a little low.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::Context;

/// Extension of a state-machine snapshot file in `<data_dir>/snapshots` (`folio-state`).
const SNAPSHOT_EXT: &str = "snap";
/// Deepest directory nesting walked (RocksDB and the local store nest a few levels at most).
const DEPTH_MAX: usize = 32;

/// Apparent bytes of the regular files under `dir`, each inode once; symbolic links are not
/// followed. Files that vanish during the walk (RocksDB compactions, temporary objects) are
/// skipped; a missing `dir` holds 0 bytes.
pub fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    Ok(dir_usage(dir)?.bytes)
}

/// What [`dir_bytes`] counts, and the number of those files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirUsage {
    pub bytes: u64,
    pub files: u64,
}

/// [`dir_bytes`], with the files counted too (each inode once).
pub fn dir_usage(dir: &Path) -> anyhow::Result<DirUsage> {
    let mut seen = HashSet::new();
    let mut total = DirUsage::default();
    walk(dir, 0, &mut seen, &mut total)?;
    Ok(total)
}

fn walk(
    dir: &Path,
    depth: usize,
    seen: &mut HashSet<(u64, u64)>,
    total: &mut DirUsage,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        depth <= DEPTH_MAX,
        "{} is nested deeper than {DEPTH_MAX}",
        dir.display()
    );
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
        };
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
        };
        if meta.is_dir() {
            walk(&path, depth + 1, seen, total)?;
        } else if meta.is_file() && (meta.nlink() <= 1 || seen.insert((meta.dev(), meta.ino()))) {
            total.bytes += meta.len();
            total.files += 1;
        }
    }
    Ok(())
}

/// Bytes of the snapshot files (`*.snap`) in a node's `<data_dir>/snapshots`; snapshots being
/// built or received under other names are not counted.
pub fn snapshot_bytes(data_dir: &Path) -> anyhow::Result<u64> {
    let dir = data_dir.join("snapshots");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("list {}", dir.display())),
    };
    let mut total = 0;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        if path.extension().and_then(|x| x.to_str()) != Some(SNAPSHOT_EXT) {
            continue;
        }
        // A snapshot replaced by a newer one may vanish between the listing and the stat.
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            if m.is_file() {
                total += m.len();
            }
        }
    }
    Ok(total)
}

/// Resident memory of process `pid` in bytes, or `None` if it cannot be read (the process is
/// gone).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| vm_rss(&s))
}

/// The `VmRSS:   1234 kB` line of a `/proc/<pid>/status`, in bytes (the kernel's kB are KiB).
pub fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let mut fields = line.split_whitespace();
    let kib: u64 = fields.next()?.parse().ok()?;
    match fields.next()? {
        "kB" => kib.checked_mul(1024),
        _ => None,
    }
}

/// The bucket's bytes estimated from the nodes' metrics (see the module comment), or `None`
/// with the reason when a node could not be scraped.
pub async fn bucket_bytes_from_metrics(metrics: &[String]) -> Result<u64, String> {
    // One client per estimate: its pooled connections close when it is dropped.
    let http = crate::probe::http_client();
    let (mut segments, mut runs) = (0.0f64, 0.0f64);
    for addr in metrics {
        let text = crate::probe::http_get(&http, addr, "/metrics")
            .await
            .map_err(|e| format!("read metrics from {addr}: {e:#}"))?;
        segments += sample_value(&text, "folio_segment_bytes_sum").unwrap_or(0.0);
        runs = runs.max(sample_value(&text, "folio_checkpoint_run_bytes").unwrap_or(0.0));
    }
    Ok((segments + runs).max(0.0) as u64)
}

/// The value of the unlabelled sample `name` in Prometheus text (`name value [timestamp]`).
pub fn sample_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != name {
            return None;
        }
        fields.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "folio-bench-footprint-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn sums_nested_files_once_per_inode() {
        let d = TempDir::new("du");
        let root = &d.0;
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("top"), vec![0u8; 100]).unwrap();
        std::fs::write(root.join("a/one"), vec![0u8; 10]).unwrap();
        std::fs::write(root.join("a/b/two"), vec![0u8; 1000]).unwrap();
        // A second name for a file, as the local store makes while it publishes an object.
        std::fs::hard_link(root.join("a/b/two"), root.join("a/two-link")).unwrap();
        // A link to outside is not followed.
        std::os::unix::fs::symlink("/proc/self/status", root.join("a/link")).unwrap();
        assert_eq!(dir_bytes(root).unwrap(), 1110);
        assert_eq!(dir_bytes(&root.join("missing")).unwrap(), 0);
        assert_eq!(
            dir_usage(root).unwrap(),
            DirUsage {
                bytes: 1110,
                files: 3
            }
        );
    }

    #[test]
    fn counts_only_complete_snapshots() {
        let d = TempDir::new("snap");
        assert_eq!(snapshot_bytes(&d.0).unwrap(), 0);
        let snaps = d.0.join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        std::fs::write(snaps.join("1-2-3.snap"), vec![0u8; 300]).unwrap();
        std::fs::write(snaps.join("1-2-4.snap"), vec![0u8; 20]).unwrap();
        std::fs::write(snaps.join("1-2-5.building"), vec![0u8; 4000]).unwrap();
        assert_eq!(snapshot_bytes(&d.0).unwrap(), 320);
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tfolio\nVmPeak:\t  900 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(vm_rss(status), Some(12345 * 1024));
        assert_eq!(vm_rss("Name:\tkthreadd\n"), None);
        assert_eq!(vm_rss("VmRSS:\tlots kB\n"), None);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn reads_unlabelled_samples() {
        let text = "# TYPE folio_segment_bytes histogram\n\
            folio_segment_bytes_bucket{le=\"4096\"} 1\n\
            folio_segment_bytes_sum 123456\n\
            folio_segment_bytes_sum_other 9\n\
            folio_checkpoint_run_bytes 789 1700000000000\n";
        assert_eq!(
            sample_value(text, "folio_segment_bytes_sum"),
            Some(123456.0)
        );
        assert_eq!(
            sample_value(text, "folio_checkpoint_run_bytes"),
            Some(789.0)
        );
        assert_eq!(sample_value(text, "folio_segment_bytes"), None);
    }
}
