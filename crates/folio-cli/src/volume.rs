//! `folio volume`: create, list, inspect, read, write, import and export volumes.
//!
//! A file imported with `folio volume import` is stored as pages: page 0 is a header
//! ("FOLIOFIL", format version u32, file length u64, little-endian, zero-padded), pages 1.. hold
//! the bytes, the last one zero-padded. `export` reads the header and writes exactly that many
//! bytes, so the round trip is byte-identical. `import --sqlite` stores a SQLite database as
//! the VFS reads it instead: SQLite page n is volume page n - 1, with no header of ours; `export`
//! recognises such a volume and writes the database's pages.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Subcommand;
use folio_client::{Client, RetryPolicy, RouterOptions, Volume};
use folio_core::limits::{MAX_PAGES_PER_REQUEST, MAX_REFS_PER_COMMIT};
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

const FILE_MAGIC: &[u8; 8] = b"FOLIOFIL";
const FILE_VERSION: u32 = 1;

#[derive(clap::Args, Clone)]
pub struct Target {
    /// A group's members' addresses, comma-separated (any one will do) [default: 127.0.0.1:7070,
    /// unless a registry is given].
    #[arg(long, value_delimiter = ',')]
    addr: Vec<String>,
    /// Go through the volume registry at these addresses (comma-separated) instead: each
    /// volume's group is looked up there. An explicit --addr wins.
    #[arg(long, env = "FOLIO_REGISTRY", value_delimiter = ',')]
    registry: Vec<String>,
    /// Machine-readable output (one JSON object).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Create an empty volume; prints its id.
    Create {
        #[command(flatten)]
        t: Target,
        /// Choose the id (32 hex digits) instead of letting Folio pick one.
        #[arg(long)]
        id: Option<VolumeId>,
        /// The region to place the volume in (with --registry): the registry picks one of the
        /// region's healthy groups.
        #[arg(long, requires = "registry")]
        region: Option<String>,
    },
    /// List the group's volumes.
    List {
        #[command(flatten)]
        t: Target,
    },
    /// A volume's latest LSN and history length.
    Info {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
    },
    /// A volume's commits, oldest first.
    Log {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// The latest LSN and the pages changed since an LSN.
    Pull {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Write one page's bytes (4096) to stdout or a file.
    Read {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
        #[arg(long)]
        page: u32,
        /// Snapshot to read [default: latest].
        #[arg(long)]
        lsn: Option<u64>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Commit one page from a file or stdin (at most 4096 bytes, zero-padded).
    Write {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
        #[arg(long)]
        page: u32,
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Store a file in a volume (header page 0, data from page 1), committed atomically in
    /// commits of up to 64 MiB.
    Import {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
        file: PathBuf,
        /// The file is a SQLite database (4096-byte pages): store its pages as they are, SQLite
        /// page n as volume page n - 1, so that the SQLite VFS opens the volume (`file:VOLUME?
        /// vfs=folio`). A database in WAL mode is stored in rollback-journal mode.
        #[arg(long)]
        sqlite: bool,
    },
    /// Delete a volume: it answers NOT_FOUND from then on, garbage collection reclaims its
    /// pages, and its id is never used again.
    Delete {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
    },
    /// Fork a volume: a new volume whose first snapshot is the source's at an LSN, sharing its
    /// pages instead of copying them; prints the new volume's id.
    Fork {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
        /// The source's snapshot to fork [default: latest].
        #[arg(long)]
        at: Option<u64>,
        /// Choose the new volume's id (32 hex digits).
        #[arg(long)]
        id: Option<VolumeId>,
    },
    /// Set how much of a volume's history stays readable, in place of its group's default;
    /// applied by the group's next lifecycle round. History a shorter retention already dropped
    /// does not come back.
    Retention {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
        /// Keep every snapshot for this long after it was replaced: a number with a unit (ms,
        /// s, m, h, d), e.g. 90s, 12h, 30d.
        #[arg(long, value_parser = parse_duration_ms, required_unless_present = "default")]
        time: Option<u64>,
        /// ... and always the latest this many snapshots.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        commits: u64,
        /// Return the volume to its group's default retention.
        #[arg(long, conflicts_with_all = ["time", "commits"])]
        default: bool,
    },
    /// Write a file stored with `import` back out, byte for byte (a database imported with
    /// `--sqlite` or written through the SQLite VFS: its pages, as a database file).
    Export {
        #[command(flatten)]
        t: Target,
        volume: VolumeId,
        file: PathBuf,
        #[arg(long)]
        lsn: Option<u64>,
    },
}

/// Milliseconds from a duration with a unit: `250ms`, `90s`, `15m`, `12h`, `30d`.
pub(crate) fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit (ms, s, m, h or d)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    let scale = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn client(t: &Target) -> anyhow::Result<Arc<Client>> {
    if t.addr.is_empty() && !t.registry.is_empty() {
        return Ok(Arc::new(Client::with_registry(
            t.registry.clone(),
            RetryPolicy::default(),
            RouterOptions {
                security: crate::secure::security(),
                ..RouterOptions::default()
            },
        )?));
    }
    let addrs = if t.addr.is_empty() {
        vec!["127.0.0.1:7070".to_string()]
    } else {
        t.addr.clone()
    };
    Ok(Arc::new(Client::secured(
        addrs,
        RetryPolicy::default(),
        crate::secure::security(),
    )?))
}

/// The import/export progress line: what, a 40-column bar, bytes done and total (binary units).
const PROGRESS_TEMPLATE: &str = "{prefix} [{bar:40}] {binary_bytes}/{binary_total_bytes}";

/// A one-line progress bar of `total` bytes on stderr. indicatif draws it only when stderr is a
/// terminal, so stdout (which scripts and tests parse) never changes; an empty file shows none.
fn progress_bar(what: &'static str, total: u64) -> ProgressBar {
    if total == 0 {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(PROGRESS_TEMPLATE)
        .expect("the progress template is a valid indicatif template")
        .progress_chars("## ");
    ProgressBar::new(total).with_style(style).with_prefix(what)
}

pub async fn run(cmd: VolumeCmd) -> anyhow::Result<()> {
    match cmd {
        VolumeCmd::Create { t, id, region } => {
            let c = client(&t)?;
            if c.registry().is_some() {
                let region = region.context(
                    "--region is needed to create a volume through the registry (see `folio \
                     admin groups` for the regions)",
                )?;
                let id = id.unwrap_or_else(VolumeId::new_random);
                let loc = c.create_volume_in(&region, Some(id)).await?;
                if t.json {
                    println!(
                        "{}",
                        json!({"volume_id": id.to_string(), "lsn": 0, "group_id": loc.group_id,
                               "region": loc.region})
                    );
                } else {
                    println!("{id}");
                    eprintln!("placed on group {} in region {}", loc.group_id, loc.region);
                }
                return Ok(());
            }
            let v = c.create_volume(id).await?;
            if t.json {
                println!("{}", json!({"volume_id": v.to_string(), "lsn": 0}));
            } else {
                println!("{v}");
            }
        }
        VolumeCmd::List { t } => {
            let c = client(&t)?;
            if c.registry().is_some() {
                bail!(
                    "volumes are listed per group: give a group with --addr (`folio admin \
                     groups` lists the groups and their members)"
                );
            }
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = c.list_volumes(after, 0).await?;
                let Some(last) = page.last() else { break };
                after = Some(VolumeId::from_slice(&last.volume_id)?);
                all.extend(page);
            }
            if t.json {
                let vols: Vec<_> = all
                    .iter()
                    .map(|v| {
                        let r = v.retention.map(|r| {
                            json!({"retention_ms": r.retention_ms,
                                   "retain_commits": r.retain_commits})
                        });
                        json!({"volume_id": hex(&v.volume_id), "lsn": v.lsn,
                               "oldest_lsn": v.oldest_lsn, "created_at_ms": v.created_at_ms,
                               "retention": r})
                    })
                    .collect();
                println!("{}", json!({ "volumes": vols }));
            } else {
                for v in all {
                    println!("{}  lsn {}", hex(&v.volume_id), v.lsn);
                }
            }
        }
        VolumeCmd::Delete { t, volume } => {
            let already = client(&t)?.delete_volume(volume).await?;
            if t.json {
                println!(
                    "{}",
                    json!({"volume_id": volume.to_string(), "already_deleted": already})
                );
            } else if already {
                println!("volume {volume} was already deleted");
            } else {
                println!("volume {volume} deleted");
            }
        }
        VolumeCmd::Retention {
            t,
            volume,
            time,
            commits,
            default,
        } => {
            let retention = (!default).then(|| folio_proto::volume::v1::Retention {
                retention_ms: time.expect("clap requires --time without --default"),
                retain_commits: commits,
            });
            client(&t)?.set_retention(volume, retention).await?;
            if t.json {
                let r = retention.map(
                    |r| json!({"retention_ms": r.retention_ms, "retain_commits": r.retain_commits}),
                );
                println!(
                    "{}",
                    json!({"volume_id": volume.to_string(), "retention": r})
                );
            } else if let Some(r) = retention {
                println!(
                    "volume {volume} keeps {} ms of history and at least {} snapshots",
                    r.retention_ms, r.retain_commits
                );
            } else {
                println!("volume {volume} keeps its group's default retention");
            }
        }
        VolumeCmd::Fork { t, volume, at, id } => {
            let (fork, at) = client(&t)?.fork_volume(volume, at.map(Lsn), id).await?;
            if t.json {
                println!(
                    "{}",
                    json!({"volume_id": fork.to_string(), "source": volume.to_string(),
                           "at_lsn": at.0})
                );
            } else {
                println!("{fork}");
                eprintln!("forked from {volume} at LSN {}", at.0);
            }
        }
        VolumeCmd::Info { t, volume } => {
            let c = client(&t)?;
            let lsn = c.snapshot(volume).await?;
            let (_, changed) = c.pull_changes(volume, Lsn(0)).await?;
            if t.json {
                println!(
                    "{}",
                    json!({"volume_id": volume.to_string(), "lsn": lsn.0,
                           "pages_written": changed.len()})
                );
            } else {
                println!(
                    "volume {volume}\nlsn {}\npages written {}",
                    lsn.0,
                    changed.len()
                );
            }
        }
        VolumeCmd::Log {
            t,
            volume,
            from,
            limit,
        } => {
            let r = client(&t)?.list_commits(volume, Lsn(from), limit).await?;
            if t.json {
                let commits: Vec<_> = r
                    .commits
                    .iter()
                    .map(|c| {
                        json!({"lsn": c.lsn, "committed_at_ms": c.committed_at_ms,
                               "pages": c.pages.iter().map(|p| p.page_idx).collect::<Vec<_>>()})
                    })
                    .collect();
                println!("{}", json!({"head_lsn": r.head_lsn, "commits": commits}));
            } else {
                for c in r.commits {
                    println!(
                        "lsn {:>8}  {} ms  {} page(s)",
                        c.lsn,
                        c.committed_at_ms,
                        c.pages.len()
                    );
                }
            }
        }
        VolumeCmd::Pull { t, volume, since } => {
            let (lsn, set) = client(&t)?.pull_changes(volume, Lsn(since)).await?;
            if t.json {
                println!(
                    "{}",
                    json!({"lsn": lsn.0, "changed_pages": set.iter().collect::<Vec<_>>()})
                );
            } else {
                println!(
                    "lsn {} ; {} page(s) changed since {since}",
                    lsn.0,
                    set.len()
                );
                for r in ranges(set.iter()) {
                    println!("  {r}");
                }
            }
        }
        VolumeCmd::Read {
            t,
            volume,
            page,
            lsn,
            out,
        } => {
            let c = client(&t)?;
            let lsn = match lsn {
                Some(l) => Lsn(l),
                None => c.snapshot(volume).await?,
            };
            let p = c.read_pages(volume, lsn, &[page]).await?;
            let data = &p.first().context("no page returned")?.data;
            match out {
                Some(path) => std::fs::write(&path, data)
                    .with_context(|| format!("write {}", path.display()))?,
                None => std::io::stdout().write_all(data)?,
            }
        }
        VolumeCmd::Write {
            t,
            volume,
            page,
            file,
        } => {
            let mut data = match file {
                Some(p) => std::fs::read(&p).with_context(|| format!("read {}", p.display()))?,
                None => {
                    let mut b = Vec::new();
                    std::io::stdin()
                        .take(PAGE_SIZE as u64 + 1)
                        .read_to_end(&mut b)?;
                    b
                }
            };
            if data.len() > PAGE_SIZE {
                bail!("a page holds {PAGE_SIZE} bytes; got more");
            }
            data.resize(PAGE_SIZE, 0);
            let v = Volume::open(client(&t)?, volume, 1 << 20).await?;
            let mut tx = v.begin();
            tx.write(page, Bytes::from(data))?;
            let r = tx.commit().await?;
            if t.json {
                println!("{}", json!({"lsn": r.lsn.0, "rebases": r.rebases}));
            } else {
                println!("committed lsn {}", r.lsn.0);
            }
        }
        VolumeCmd::Import {
            t,
            volume,
            file,
            sqlite,
        } => import(&t, volume, &file, sqlite).await?,
        VolumeCmd::Export {
            t,
            volume,
            file,
            lsn,
        } => export(&t, volume, &file, lsn).await?,
    }
    Ok(())
}

/// How a file's pages go into a volume: the page written last (in the last commit, so that a
/// reader never sees it promise pages that are not committed yet), and where file page `p` goes.
struct Layout {
    /// Volume page 0, written last.
    header: Vec<u8>,
    /// File pages before this one are in the header (SQLite's page 1 is the header).
    first_data: u64,
    /// Volume page = file page + shift.
    shift: u64,
}

/// Checks a SQLite database file for the VFS and reads its first page.
fn sqlite_layout(
    f: &mut std::fs::File,
    path: &std::path::Path,
    len: u64,
) -> anyhow::Result<Layout> {
    use folio_core::sqlite::{parse, Header, JOURNAL_VERSION};
    let mut first = vec![0u8; PAGE_SIZE];
    let have = (len as usize).min(PAGE_SIZE);
    f.read_exact(&mut first[..have])?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    if std::fs::metadata(&wal)
        .map(|m| m.len() > 0)
        .unwrap_or(false)
    {
        bail!(
            "{} has a write-ahead log beside it with changes not in the file yet: run \
             `sqlite3 {} 'PRAGMA wal_checkpoint(TRUNCATE)'` (or close every connection) first",
            path.display(),
            path.display()
        );
    }
    // A database in WAL mode imports as a rollback-journal one: the file itself is complete
    // once checkpointed, and the two header bytes are all that differ.
    let mut checked = first.clone();
    for b in &mut checked[JOURNAL_VERSION] {
        if *b == 2 {
            *b = 1;
        }
    }
    match parse(&checked) {
        Ok(Header::Database { pages }) if pages as u64 * PAGE_SIZE as u64 <= len => {}
        Ok(Header::Database { pages }) => bail!(
            "{} is shorter ({len} bytes) than its header's {pages} pages: it is not a complete \
             database",
            path.display()
        ),
        Ok(Header::Empty) => bail!("{} is not a SQLite database", path.display()),
        Err(e) => bail!("{}: {e}", path.display()),
    }
    Ok(Layout {
        header: checked,
        first_data: 1,
        shift: 0,
    })
}

async fn import(t: &Target, volume: VolumeId, path: &PathBuf, sqlite: bool) -> anyhow::Result<()> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut len = f.metadata()?.len();
    let layout = if sqlite {
        let l = sqlite_layout(&mut f, path, len)?;
        // What SQLite will read: the header's page count (a file may carry slack past it).
        let pages = u32::from_be_bytes(l.header[28..32].try_into()?) as u64;
        len = pages * PAGE_SIZE as u64;
        l
    } else {
        let mut header = vec![0u8; PAGE_SIZE];
        header[..8].copy_from_slice(FILE_MAGIC);
        header[8..12].copy_from_slice(&FILE_VERSION.to_le_bytes());
        header[12..20].copy_from_slice(&len.to_le_bytes());
        Layout {
            header,
            first_data: 0,
            shift: 1,
        }
    };
    let v = Volume::open(client(t)?, volume, 1 << 20).await?;
    let progress = progress_bar("import", len);
    // Up to MAX_REFS_PER_COMMIT pages per commit (64 MiB); the header goes in the last one.
    let pages = len.div_ceil(PAGE_SIZE as u64);
    let per_commit = MAX_REFS_PER_COMMIT as u64 - 1;
    let mut next = layout.first_data;
    let lsn = loop {
        let mut tx = v.begin();
        let end = (next + per_commit).min(pages);
        for p in next..end {
            let mut buf = vec![0u8; PAGE_SIZE];
            let want = (len - p * PAGE_SIZE as u64).min(PAGE_SIZE as u64) as usize;
            f.read_exact(&mut buf[..want])?;
            tx.write(page_for(p + layout.shift)?, Bytes::from(buf))?;
        }
        if end == pages {
            tx.write(0, Bytes::from(layout.header.clone()))?;
        }
        let lsn = tx.commit().await?.lsn;
        v.sync().await?;
        progress.set_position((end * PAGE_SIZE as u64).min(len));
        next = end;
        if next >= pages {
            break lsn;
        }
    };
    progress.finish();
    let stored = pages + layout.shift;
    if t.json {
        println!("{}", json!({"lsn": lsn.0, "bytes": len, "pages": stored}));
    } else {
        println!("imported {len} bytes as {stored} pages at lsn {}", lsn.0);
    }
    Ok(())
}

/// Volume page `p`, if a volume has it.
fn page_for(p: u64) -> anyhow::Result<u32> {
    u32::try_from(p)
        .ok()
        .filter(|p| *p <= folio_core::limits::MAX_PAGE_IDX)
        .context("file too large for one volume")
}

async fn export(
    t: &Target,
    volume: VolumeId,
    path: &PathBuf,
    lsn: Option<u64>,
) -> anyhow::Result<()> {
    let c = client(t)?;
    let lsn = match lsn {
        Some(l) => Lsn(l),
        None => c.snapshot(volume).await?,
    };
    let header = c.read_pages(volume, lsn, &[0]).await?;
    let h = &header.first().context("no header page")?.data;
    // A SQLite database (written through the VFS or imported with --sqlite) is its pages from
    // 0; a file is its header page and then its bytes.
    let (len, shift) = if h.starts_with(folio_core::sqlite::MAGIC) {
        match folio_core::sqlite::parse(h) {
            Ok(folio_core::sqlite::Header::Database { pages }) => {
                (pages as u64 * PAGE_SIZE as u64, 0)
            }
            Ok(folio_core::sqlite::Header::Empty) => bail!("volume {volume} has no page 0"),
            Err(e) => bail!("volume {volume} at LSN {}: {e}", lsn.0),
        }
    } else {
        if &h[..8] != FILE_MAGIC {
            bail!(
                "volume {volume} holds neither an imported file nor a SQLite database at LSN {}",
                lsn.0
            );
        }
        let version = u32::from_le_bytes(h[8..12].try_into()?);
        if version != FILE_VERSION {
            bail!("unsupported file format version {version}");
        }
        (u64::from_le_bytes(h[12..20].try_into()?), 1)
    };
    let pages = len.div_ceil(PAGE_SIZE as u64);
    let mut out =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let progress = progress_bar("export", len);
    let mut written = 0u64;
    let mut p = 0u64;
    while p < pages {
        let end = (p + MAX_PAGES_PER_REQUEST as u64).min(pages);
        let idxs: Vec<u32> = (p..end)
            .map(|p| page_for(p + shift))
            .collect::<anyhow::Result<_>>()?;
        for page in c.read_pages(volume, lsn, &idxs).await? {
            let take = (len - written).min(PAGE_SIZE as u64) as usize;
            out.write_all(&page.data[..take])?;
            written += take as u64;
        }
        progress.set_position(written);
        p = end;
    }
    progress.finish();
    out.sync_all()?;
    if t.json {
        println!("{}", json!({"lsn": lsn.0, "bytes": len}));
    } else {
        println!("exported {len} bytes from lsn {}", lsn.0);
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// "3", "5-9": runs of consecutive page indexes.
fn ranges(it: impl Iterator<Item = u32>) -> Vec<String> {
    let mut out = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    for p in it {
        run = match run {
            Some((a, b)) if p == b + 1 => Some((a, p)),
            Some((a, b)) => {
                out.push(if a == b {
                    format!("{a}")
                } else {
                    format!("{a}-{b}")
                });
                Some((p, p))
            }
            None => Some((p, p)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b {
            format!("{a}")
        } else {
            format!("{a}-{b}")
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_need_a_known_unit() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(parse_duration_ms("15m"), Ok(900_000));
        assert_eq!(parse_duration_ms("12h"), Ok(43_200_000));
        assert_eq!(parse_duration_ms("30d"), Ok(2_592_000_000));
        for bad in ["", "10", "h", "5w", "-1s", "99999999999999999999d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
