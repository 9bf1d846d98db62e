//! SQLite on Folio volumes against live groups of `folio server` processes: SQL scripts through
//! Debian's `sqlite3` shell with `.load`, Python's sqlite3 loading the extension, two clients on
//! two nodes editing one database (they see each other's rows, a write-write race gives BUSY and
//! a retry succeeds), a node killed in the middle of a transaction, import and export of
//! database files, and the refusals of what the VFS does not support.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context};
use folio_core::VolumeId;
use folio_testkit::{built, Cluster};
use rusqlite::{Connection, ErrorCode, OpenFlags};

fn folio() -> PathBuf {
    built("folio", "FOLIO_BIN").expect("the folio binary")
}

fn extension() -> PathBuf {
    built("libfolio_sqlite.so", "FOLIO_SQLITE_EXT").expect("the loadable extension")
}

fn cluster(n: u64) -> anyhow::Result<Cluster> {
    let c = Cluster::start(folio(), n)?;
    tokio::runtime::Runtime::new()?.block_on(c.wait_leader(Duration::from_secs(30)))?;
    Ok(c)
}

fn uri(volume: &str, params: &str) -> String {
    format!("file:{volume}?vfs=folio&{params}")
}

/// A connection through the statically registered VFS (rusqlite's bundled SQLite).
fn open(volume: &str, params: &str) -> rusqlite::Result<Connection> {
    folio_sqlite::register().expect("register the folio VFS");
    let c = Connection::open_with_flags(
        uri(volume, params),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::ZERO)?;
    Ok(c)
}

fn new_volume() -> String {
    VolumeId::new_random().to_string()
}

/// SQLite's extended code of a failed statement.
fn extended(e: &rusqlite::Error) -> Option<(ErrorCode, i32)> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some((f.code, f.extended_code)),
        _ => None,
    }
}

const SQLITE_BUSY_SNAPSHOT: i32 = 5 | (2 << 8);

#[test]
fn sql_scripts_through_the_sqlite3_shell_give_the_expected_output() -> anyhow::Result<()> {
    let c = cluster(1)?;
    let volume = new_volume();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    scripts.retain(|p| p.extension().is_some_and(|e| e == "sql"));
    scripts.sort();
    ensure!(scripts.len() >= 3, "scripts in {}", dir.display());
    // Each script is a new `sqlite3` process on the same volume: what one committed, the next
    // one reads.
    for script in scripts {
        let sql = std::fs::read_to_string(&script)?;
        let input = format!(
            ".bail on\n.load {}\n.open {}\n{sql}",
            extension().display(),
            uri(&volume, &format!("addr={}", c.addrs()[0]))
        );
        let mut child = Command::new("sqlite3")
            .arg("-batch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("run sqlite3 (Debian's sqlite3 package; scripts/setup.sh installs it)")?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, input.as_bytes())?;
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = std::fs::read_to_string(script.with_extension("out"))?;
        ensure!(
            out.status.success() && stderr.trim().is_empty(),
            "{}: sqlite3 failed: {}\n{stdout}\n{stderr}",
            script.display(),
            out.status
        );
        assert_eq!(stdout.trim(), want.trim(), "{}", script.display());
    }
    Ok(())
}

/// A python3 whose sqlite3 module can load extensions (Debian's can; some builds cannot).
fn python_with_extensions() -> anyhow::Result<PathBuf> {
    for p in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(p)
            .args([
                "-c",
                "import sqlite3,sys; sys.exit(0 if hasattr(sqlite3.Connection, 'enable_load_extension') else 1)",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(p.into());
        }
    }
    anyhow::bail!("no python3 whose sqlite3 module can load extensions (install Debian's python3)")
}

#[test]
fn python_loads_the_extension_and_commits_a_transaction() -> anyhow::Result<()> {
    let c = cluster(1)?;
    let volume = new_volume();
    let script = r#"
import sqlite3, sys
ext, uri = sys.argv[1], sys.argv[2]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
db = sqlite3.connect(uri, uri=True, isolation_level=None)
db.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT)")
db.execute("BEGIN")
for i in range(200):
    db.execute("INSERT INTO kv VALUES (?, ?)", (f"k{i}", f"v{i}" * 20))
db.execute("COMMIT")
lsn = int(db.execute("PRAGMA folio_lsn").fetchone()[0])
db.close()
again = sqlite3.connect(uri, uri=True)
n = again.execute("SELECT count(*) FROM kv").fetchone()[0]
v = again.execute("SELECT v FROM kv WHERE k = 'k42'").fetchone()[0]
print(n, v[:6], lsn >= 2, again.execute("PRAGMA integrity_check").fetchone()[0])
"#;
    let out = Command::new(python_with_extensions()?)
        .args(["-c", script])
        .arg(extension())
        .arg(uri(&volume, &format!("addr={}", c.addrs()[0])))
        .output()?;
    ensure!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 v42v42 True ok"
    );
    Ok(())
}

#[test]
fn two_clients_on_two_nodes_share_a_database_and_a_race_gives_busy() -> anyhow::Result<()> {
    let c = cluster(3)?;
    let volume = new_volume();
    let addr = |i: usize| format!("addr={}&sync=manual", c.addrs()[i]);
    let a = open(&volume, &addr(0))?;
    let b = open(&volume, &addr(1))?;
    a.execute_batch("CREATE TABLE note(id INTEGER PRIMARY KEY, who TEXT)")?;
    // In manual mode b sees a's commits after a sync.
    let synced: String = b.query_row("PRAGMA folio_sync", [], |r| r.get(0))?;
    assert_eq!(
        synced,
        a.query_row("PRAGMA folio_lsn", [], |r| r.get::<_, String>(0))?
    );
    assert_eq!(
        b.query_row("SELECT count(*) FROM note", [], |r| r.get::<_, i64>(0))?,
        0
    );
    b.execute("INSERT INTO note(who) VALUES ('b')", [])?;
    a.query_row("PRAGMA folio_sync", [], |r| r.get::<_, String>(0))?;
    a.execute("INSERT INTO note(who) VALUES ('a')", [])?;
    // b has not synced since a's insert: its commit loses the race, and nothing of it lands.
    let e = b
        .execute("INSERT INTO note(who) VALUES ('b2')", [])
        .expect_err("a write on a stale snapshot must not commit");
    assert_eq!(
        extended(&e),
        Some((ErrorCode::DatabaseBusy, SQLITE_BUSY_SNAPSHOT)),
        "{e}"
    );
    // The VFS pulled the winning commit: the retry succeeds.
    b.execute("INSERT INTO note(who) VALUES ('b2')", [])?;
    a.query_row("PRAGMA folio_sync", [], |r| r.get::<_, String>(0))?;
    let rows: Vec<String> = a
        .prepare("SELECT who FROM note ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    assert_eq!(rows, ["b", "a", "b2"]);
    // A third client on the third node, in the default mode, sees everything at once.
    let third = open(&volume, &format!("addr={}", c.addrs()[2]))?;
    assert_eq!(
        third.query_row("SELECT count(*) FROM note", [], |r| r.get::<_, i64>(0))?,
        3
    );
    let status: String = third.query_row("PRAGMA folio_status", [], |r| r.get(0))?;
    assert!(status.contains("sync=begin"), "{status}");
    let status: String = b.query_row("PRAGMA folio_status", [], |r| r.get(0))?;
    assert!(status.contains("conflicts=1"), "{status}");

    // Two connections of one process share its lock table: a second writer waits its turn.
    let x = open(&volume, &format!("addr={}", c.addrs()[0]))?;
    let y = open(&volume, &format!("addr={}", c.addrs()[0]))?;
    x.execute_batch("BEGIN IMMEDIATE; INSERT INTO note(who) VALUES ('x');")?;
    let e = y
        .execute_batch("BEGIN IMMEDIATE")
        .expect_err("one writer at a time");
    assert_eq!(
        extended(&e).map(|e| e.0),
        Some(ErrorCode::DatabaseBusy),
        "{e}"
    );
    x.execute_batch("COMMIT")?;
    // The refused BEGIN started nothing; now y's turn comes.
    assert!(y.is_autocommit());
    y.execute_batch("BEGIN IMMEDIATE; INSERT INTO note(who) VALUES ('y'); COMMIT;")?;
    assert_eq!(
        x.query_row("SELECT count(*) FROM note", [], |r| r.get::<_, i64>(0))?,
        5
    );
    assert_eq!(
        x.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?,
        "ok"
    );
    Ok(())
}

#[test]
fn a_node_killed_in_the_middle_of_a_transaction_leaves_the_database_intact() -> anyhow::Result<()> {
    let mut c = cluster(3)?;
    let rt = tokio::runtime::Runtime::new()?;
    let volume = new_volume();
    let all = format!("addr={}", c.addrs().join(","));
    let db = open(&volume, &all)?;
    db.execute_batch(
        "CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO t SELECT i, randomblob(500) FROM n;",
    )?;
    for round in 0..2 {
        db.execute_batch("BEGIN")?;
        db.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO t(v) SELECT randomblob(900) FROM n;
             UPDATE t SET v = zeroblob(10) WHERE k <= 50;",
        )?;
        let leader = rt.block_on(c.wait_leader(Duration::from_secs(30)))?;
        c.kill(leader);
        // The commit goes out after the kill: the client finds the new leader (or the outcome
        // is unknown and SQLite rolls back); either way the database is whole.
        let committed = db.execute_batch("COMMIT").is_ok();
        if !committed {
            let _ = db.execute_batch("ROLLBACK");
        }
        let n: i64 = db.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
        assert!(
            n == 100 + 300 * round + 300 || n == 100 + 300 * round,
            "round {round}: {n} rows is neither all nor none of the transaction"
        );
        assert!(
            committed,
            "round {round}: with two of three nodes up the commit goes through"
        );
        assert_eq!(
            db.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?,
            "ok"
        );
        c.restart(leader)?;
        rt.block_on(c.wait_leader(Duration::from_secs(30)))?;
    }
    // Another client, from scratch, reads the same database.
    let other = open(&volume, &format!("addr={}", c.addrs()[1]))?;
    assert_eq!(
        other.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))?,
        700
    );
    assert_eq!(
        other.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?,
        "ok"
    );
    Ok(())
}

#[test]
fn database_files_import_open_unchanged_and_export_back() -> anyhow::Result<()> {
    let c = cluster(1)?;
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("app.db");
    {
        let local = Connection::open(&file)?;
        let mode: String = local.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        assert_eq!(mode, "wal");
        local.execute_batch(
            "CREATE TABLE city(name TEXT PRIMARY KEY, pop INTEGER);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO city SELECT 'city' || i, i * 10 FROM n;",
        )?;
    }
    let volume = new_volume();
    let addr = c.addrs()[0].clone();
    let run = |args: &[&str]| -> anyhow::Result<std::process::Output> {
        Ok(Command::new(folio()).args(args).output()?)
    };
    let out = run(&["volume", "create", "--addr", &addr, "--id", &volume])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = file.to_string_lossy().to_string();
    let out = run(&["volume", "import", "--sqlite", "--addr", &addr, &volume, &f])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let db = open(&volume, &format!("addr={addr}"))?;
    assert_eq!(
        db.query_row("SELECT sum(pop) FROM city", [], |r| r.get::<_, i64>(0))?,
        10 * 2000 * 2001 / 2
    );
    assert_eq!(
        db.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))?,
        "delete"
    );
    db.execute("DELETE FROM city WHERE pop > 100", [])?;
    drop(db);

    let back = tmp.path().join("back.db");
    let b = back.to_string_lossy().to_string();
    let out = run(&["volume", "export", "--addr", &addr, &volume, &b])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local = Connection::open(&back)?;
    assert_eq!(
        local.query_row("SELECT count(*) FROM city", [], |r| r.get::<_, i64>(0))?,
        10
    );
    assert_eq!(
        local.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?,
        "ok"
    );

    // Other page sizes are refused with the way to convert them.
    let small = tmp.path().join("small.db");
    Connection::open(&small)?.execute_batch("PRAGMA page_size=1024; CREATE TABLE x(y);")?;
    let s = small.to_string_lossy().to_string();
    let out = run(&[
        "volume",
        "import",
        "--sqlite",
        "--addr",
        &addr,
        &new_volume(),
        &s,
    ])?;
    ensure!(
        !out.status.success(),
        "a 1 KiB-page database must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("VACUUM INTO"), "{err}");
    Ok(())
}

#[test]
fn what_the_vfs_does_not_support_is_refused_clearly() -> anyhow::Result<()> {
    let c = cluster(1)?;
    let volume = new_volume();
    let addr = format!("addr={}", c.addrs()[0]);
    let db = open(&volume, &addr)?;
    let msg = |r: rusqlite::Result<String>| match r {
        Ok(v) => panic!("accepted: {v}"),
        Err(e) => e.to_string(),
    };
    let e = msg(db.query_row("PRAGMA page_size = 8192", [], |r| r.get(0)));
    assert!(e.contains("4096"), "{e}");
    let e = msg(db.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)));
    assert!(e.contains("WAL"), "{e}");
    let e = msg(db.query_row("PRAGMA synchronous = OFF", [], |r| r.get(0)));
    assert!(e.contains("synchronous"), "{e}");
    let e = msg(db.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0)));
    assert!(e.contains("locking_mode"), "{e}");
    // The spellings SQLite also takes for them.
    let e = msg(db.query_row("PRAGMA synchronous = no", [], |r| r.get(0)));
    assert!(e.contains("synchronous"), "{e}");
    let e = msg(db.query_row("PRAGMA journal_mode = wa", [], |r| r.get(0)));
    assert!(e.contains("WAL"), "{e}");
    // Still a working database after the refusals.
    db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")?;
    assert_eq!(
        db.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))?,
        4096
    );
    // Exclusive locking inherited through ATTACH, where no pragma reaches the VFS: SQLite never
    // releases its lock between transactions. The second transaction fails loudly, or lands;
    // it is never acknowledged and lost.
    let other = new_volume();
    let main = Connection::open_in_memory()?;
    let _: String = main.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get(0))?;
    main.execute(&format!("ATTACH '{}' AS f", uri(&other, &addr)), [])?;
    main.execute_batch("CREATE TABLE f.t(x); INSERT INTO f.t VALUES (1);")
        .or_else(|e| {
            assert_eq!(
                extended(&e).map(|e| e.0),
                Some(ErrorCode::SystemIoFailure),
                "{e}"
            );
            Ok::<_, rusqlite::Error>(())
        })?;
    let second = main.execute("INSERT INTO f.t VALUES (2)", []);
    drop(main);
    let fresh = open(&other, &format!("{addr}&sync=begin"))?;
    let rows: i64 = fresh
        .query_row("SELECT count(*) FROM t WHERE x = 2", [], |r| r.get(0))
        .unwrap_or(0);
    match second {
        Ok(_) => assert_eq!(rows, 1, "an acknowledged insert must be in the volume"),
        Err(e) => {
            assert_eq!(
                extended(&e).map(|e| e.0),
                Some(ErrorCode::SystemIoFailure),
                "{e}"
            );
            assert_eq!(rows, 0);
        }
    }
    // A name that is not a volume id, and a volume that does not exist opened read-only.
    let e = open("not-a-volume", &addr).expect_err("not a volume id");
    assert_eq!(
        extended(&e).map(|e| e.0),
        Some(ErrorCode::CannotOpen),
        "{e}"
    );
    folio_sqlite::register().expect("registered");
    let e = Connection::open_with_flags(
        uri(&new_volume(), &addr),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .and_then(|c| {
        c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
    })
    .expect_err("no such volume");
    assert_eq!(
        extended(&e).map(|e| e.0),
        Some(ErrorCode::CannotOpen),
        "{e}"
    );
    Ok(())
}

#[test]
fn transactions_larger_than_the_page_cache_commit_whole_and_roll_back_to_nothing(
) -> anyhow::Result<()> {
    let c = cluster(1)?;
    let volume = new_volume();
    let db = open(&volume, &format!("addr={}", c.addrs()[0]))?;
    // A 20-page page cache: SQLite spills dirty pages to the file in the middle of these
    // transactions, and writes the originals back when one rolls back.
    db.execute_batch(
        "PRAGMA cache_size = 20;
         CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO t SELECT i, randomblob(800) FROM n;",
    )?;
    let lsn = |db: &Connection| -> anyhow::Result<u64> {
        Ok(db
            .query_row("PRAGMA folio_lsn", [], |r| r.get::<_, String>(0))?
            .parse()?)
    };
    let before = lsn(&db)?;
    let sum = |db: &Connection| -> rusqlite::Result<(i64, i64)> {
        db.query_row("SELECT count(*), sum(length(v)) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
    };
    assert_eq!(sum(&db)?, (1000, 800_000));
    // Grow, rewrite and shrink in one transaction, then roll it back: no commit is made.
    db.execute_batch(
        "BEGIN;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO t(v) SELECT randomblob(900) FROM n;
         UPDATE t SET v = zeroblob(100) WHERE k % 3 = 0;
         DELETE FROM t WHERE k % 2 = 0;
         ROLLBACK;",
    )?;
    assert_eq!(
        lsn(&db)?,
        before,
        "a rolled-back transaction commits nothing"
    );
    assert_eq!(sum(&db)?, (1000, 800_000));
    // The same, shrinking the file, committed: one commit, read back whole by a new client.
    db.execute_batch(
        "BEGIN;
         DELETE FROM t WHERE k > 100;
         COMMIT;
         VACUUM;",
    )?;
    assert_eq!(lsn(&db)?, before + 2, "DELETE and VACUUM: one commit each");
    let other = open(&volume, &format!("addr={}&cache_mb=1", c.addrs()[0]))?;
    for d in [&db, &other] {
        assert_eq!(sum(d)?, (100, 80_000));
        assert_eq!(
            d.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?,
            "ok"
        );
    }
    let pages: i64 = other.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    assert!(pages < 40, "VACUUM shrank the file to {pages} pages");
    Ok(())
}
