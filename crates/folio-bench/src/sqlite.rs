//! `folio-bench sqlite`: SQLite through the Folio VFS against a local SQLite file on the same disk.
//!
//! - Insert transactions: `count` transactions of one row each, one after another, on a local
//!   file (rollback journal, `synchronous=FULL`, the durable default) and on a volume (`sync=begin`,
//!   which pulls at every transaction start, and `sync=manual`, which does not).
//! - Cold open of a large database: a `db-mb` MiB database (rows of 1000 bytes, indexed by key)
//!   is stored in a volume; then, with nothing cached, the time to open it and answer a point
//!   query (lazy: only the pages the query touches are fetched) and a full scan (the prefetcher
//!   reads ahead), against downloading every page to a local file first and querying that. Each
//!   round opens a new connection after the last one closed, so the VFS's page cache starts
//!   empty; the gRPC channel to the node stays open, in both variants.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use folio_client::{Client, RetryPolicy, Volume};
use folio_core::limits::{MAX_PAGES_PER_REQUEST, MAX_REFS_PER_COMMIT};
use folio_core::{VolumeId, PAGE_SIZE};
use rusqlite::{Connection, OpenFlags};

use crate::latency::{summarize, Latencies};

#[derive(clap::Args)]
pub struct SqliteArgs {
    /// Any member's address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: String,
    /// Insert transactions per variant.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Size of the database for the cold-open measurement, in MiB.
    #[arg(long, default_value_t = 100)]
    db_mb: u64,
    /// Cold opens per variant (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where the local SQLite files go (the same disk as the nodes' data, for a fair baseline).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
    #[arg(long)]
    json: bool,
}

fn open_folio(volume: &str, params: &str) -> anyhow::Result<Connection> {
    folio_sqlite::register().map_err(|c| anyhow::anyhow!("register the folio VFS: {c}"))?;
    Ok(Connection::open_with_flags(
        format!("file:{volume}?vfs=folio&{params}"),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?)
}

/// `count` one-row insert transactions; their latencies and the rate.
fn inserts(db: &Connection, count: usize) -> anyhow::Result<(Latencies, f64)> {
    db.execute_batch("CREATE TABLE IF NOT EXISTS ev(id INTEGER PRIMARY KEY, body TEXT)")?;
    let mut stmt = db.prepare("INSERT INTO ev(body) VALUES (?1)")?;
    let body = "x".repeat(100);
    // Warm-up: connections, caches, the first pages of the table.
    for _ in 0..20 {
        stmt.execute([&body])?;
    }
    let mut lat = Latencies::default();
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        stmt.execute([&body])?;
        lat.record(t.elapsed());
    }
    Ok((lat, count as f64 / start.elapsed().as_secs_f64()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Builds a `mb` MiB database file at `path`: rows of 1000 random bytes under an indexed key.
fn build_db(path: &Path, mb: u64) -> anyhow::Result<u64> {
    let db = Connection::open(path)?;
    let rows = mb * 1024;
    db.pragma_update(None, "page_size", PAGE_SIZE as i64)?;
    db.pragma_update(None, "journal_mode", "DELETE")?;
    db.execute_batch(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
         INSERT INTO t SELECT i, printf('key-%08d', i), randomblob(1000) FROM n;
         CREATE INDEX t_k ON t(k);"
    ))?;
    Ok(rows)
}

/// Stores a database file in a volume as the VFS reads it (page n of the file is page n).
async fn store(client: Arc<Client>, volume: VolumeId, path: &Path) -> anyhow::Result<u64> {
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(bytes.len() % PAGE_SIZE == 0, "not a whole number of pages");
    client.create_volume(Some(volume)).await?;
    let v = Volume::open(client, volume, 1 << 20).await?;
    let pages: Vec<&[u8]> = bytes.chunks(PAGE_SIZE).collect();
    // Page 0 (the header, which says how many pages there are) goes in the last commit.
    let mut order: Vec<usize> = (1..pages.len()).collect();
    order.push(0);
    for chunk in order.chunks(MAX_REFS_PER_COMMIT - 1) {
        let mut tx = v.begin();
        for &i in chunk {
            tx.write(i as u32, Bytes::copy_from_slice(pages[i]))?;
        }
        tx.commit().await?;
        v.sync().await?;
    }
    Ok(pages.len() as u64)
}

/// Downloads every page of `volume` into a local file (what a client without lazy reads does).
async fn download(client: &Client, volume: VolumeId, pages: u64, to: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let lsn = client.snapshot(volume).await?;
    let mut f = std::fs::File::create(to)?;
    let mut p = 0u64;
    while p < pages {
        let end = (p + MAX_PAGES_PER_REQUEST as u64).min(pages);
        let idxs: Vec<u32> = (p as u32..end as u32).collect();
        for page in client.read_pages(volume, lsn, &idxs).await? {
            f.write_all(&page.data)?;
        }
        p = end;
    }
    f.sync_all()?;
    Ok(())
}

fn point_query(db: &Connection, rows: u64) -> anyhow::Result<()> {
    let k = format!("key-{:08}", rows / 2 + 7);
    let n: i64 = db.query_row("SELECT length(v) FROM t WHERE k = ?1", [&k], |r| r.get(0))?;
    anyhow::ensure!(n == 1000, "row {k}");
    Ok(())
}

fn scan(db: &Connection, rows: u64) -> anyhow::Result<()> {
    let n: i64 = db.query_row("SELECT count(*) FROM t WHERE length(v) = 1000", [], |r| {
        r.get(0)
    })?;
    anyhow::ensure!(n as u64 == rows, "scan saw {n} rows");
    Ok(())
}

fn read_calls(db: &Connection) -> anyhow::Result<u64> {
    let s: String = db.query_row("PRAGMA folio_status", [], |r| r.get(0))?;
    s.split_whitespace()
        .find_map(|kv| kv.strip_prefix("read_calls="))
        .context("read_calls in folio_status")?
        .parse()
        .context("read_calls")
}

pub async fn run(a: SqliteArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.count > 0 && a.rounds > 0 && a.db_mb > 0,
        "counts must be positive"
    );
    let client = Arc::new(Client::new([a.addr.clone()], RetryPolicy::default())?);
    let work = tempfile::Builder::new()
        .prefix("folio-bench-sqlite.")
        .tempdir_in(&a.dir)?;
    let mut out = serde_json::Map::new();

    // Insert transactions.
    let (addr, count, dir) = (a.addr.clone(), a.count, work.path().to_path_buf());
    let results =
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(String, Latencies, f64)>> {
            let mut r = Vec::new();
            let local = Connection::open(dir.join("local.db"))?;
            local.pragma_update(None, "journal_mode", "DELETE")?;
            local.pragma_update(None, "synchronous", "FULL")?;
            let (l, rate) = inserts(&local, count)?;
            r.push(("local file, synchronous=FULL".to_string(), l, rate));
            for mode in ["begin", "manual"] {
                let vol = VolumeId::new_random().to_string();
                let db = open_folio(&vol, &format!("addr={addr}&sync={mode}"))?;
                let (l, rate) = inserts(&db, count)?;
                r.push((format!("folio volume, sync={mode}"), l, rate));
            }
            Ok(r)
        })
        .await??;
    println!("insert transactions (one row each, one writer):");
    let mut inserts_json = Vec::new();
    for (what, l, rate) in &results {
        let s = summarize(l)?;
        println!(
            "  {what:<32} {rate:>8.0} tx/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3
        );
        inserts_json.push(serde_json::json!({"variant": what, "tx_per_s": rate,
            "p50_ms": s.p50.as_secs_f64() * 1e3, "p99_ms": s.p99.as_secs_f64() * 1e3}));
    }
    out.insert("inserts".into(), inserts_json.into());

    // Cold open of a large database.
    let file = work.path().join("big.db");
    let rows = build_db(&file, a.db_mb)?;
    let volume = VolumeId::new_random();
    let pages = store(client.clone(), volume, &file).await?;
    let mb = pages as f64 * PAGE_SIZE as f64 / (1 << 20) as f64;
    println!(
        "cold open of a {mb:.0} MiB database ({pages} pages, {rows} rows), median of {}:",
        a.rounds
    );
    let mut open_json = Vec::new();
    type Query = fn(&Connection, u64) -> anyhow::Result<()>;
    let queries: [(&str, Query); 2] = [("point query", point_query), ("full scan", scan)];
    for (qname, q) in queries {
        for prefetch in [true, false] {
            if qname == "point query" && !prefetch {
                continue;
            }
            let mut times = Vec::new();
            let mut calls = 0;
            for _ in 0..a.rounds {
                let (addr, vol) = (a.addr.clone(), volume.to_string());
                let (t, c) =
                    tokio::task::spawn_blocking(move || -> anyhow::Result<(Duration, u64)> {
                        // The previous round's connection is closed, so this one starts with an empty
                        // page cache (the process's gRPC channel to the node stays open).
                        let p = if prefetch { 1 } else { 0 };
                        let t = Instant::now();
                        let db = open_folio(&vol, &format!("addr={addr}&prefetch={p}"))?;
                        q(&db, rows)?;
                        Ok((t.elapsed(), read_calls(&db)?))
                    })
                    .await??;
                times.push(t);
                calls = c;
            }
            let what = format!(
                "lazy, {qname}{}",
                if qname == "full scan" {
                    if prefetch {
                        ", prefetch on"
                    } else {
                        ", prefetch off"
                    }
                } else {
                    ""
                }
            );
            let m = median(times);
            println!(
                "  {what:<34} {:>9.1} ms   {calls} ReadPages calls",
                m.as_secs_f64() * 1e3
            );
            open_json.push(serde_json::json!({"variant": what, "ms": m.as_secs_f64() * 1e3, "read_calls": calls}));
        }
        let mut times = Vec::new();
        for i in 0..a.rounds {
            let to = work.path().join(format!("download-{i}.db"));
            let t = Instant::now();
            download(&client, volume, pages, &to).await?;
            let to2 = to.clone();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let db = Connection::open_with_flags(&to2, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                q(&db, rows)
            })
            .await??;
            times.push(t.elapsed());
            std::fs::remove_file(&to)?;
        }
        let what = format!("download whole, {qname}");
        let m = median(times);
        println!("  {what:<34} {:>9.1} ms", m.as_secs_f64() * 1e3);
        open_json.push(serde_json::json!({"variant": what, "ms": m.as_secs_f64() * 1e3}));
    }
    out.insert("cold_open".into(), open_json.into());
    out.insert("db_pages".into(), pages.into());
    if a.json {
        println!("{}", serde_json::Value::Object(out));
    }
    Ok(())
}
