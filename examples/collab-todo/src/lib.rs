//! A shared todo list: one SQLite database in a Folio volume, opened by any number of processes
//! on any nodes of the group. Each change is a SQLite transaction; when two processes change the
//! list at once, one commit wins and the other gets `SQLITE_BUSY` (its snapshot is stale), rolls
//! back and runs again on the fresh list. That retry loop is all an app adds to plain SQLite.

use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

/// Opens the list in `volume`, creating the volume and the table on first use. `params` are the
/// VFS's URI parameters (`addr=host:port,...` or `registry=...`; `sync=follow` to keep the view
/// current in the background).
pub fn open(volume: &str, params: &str) -> anyhow::Result<Connection> {
    folio_sqlite::register().map_err(|c| anyhow::anyhow!("register the folio VFS: code {c}"))?;
    let db = Connection::open_with_flags(
        format!("file:{volume}?vfs=folio&{params}"),
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Between processes there is no lock to wait for: a lost race is retried by `change`.
    db.busy_timeout(Duration::ZERO)?;
    change(&db, |tx| {
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS todo(
                 id INTEGER PRIMARY KEY,
                 title TEXT NOT NULL,
                 who TEXT NOT NULL,
                 done INTEGER NOT NULL DEFAULT 0)",
        )?;
        Ok(())
    })?;
    Ok(db)
}

/// Most attempts at one change before giving up (each lost race means another writer got in).
pub const MAX_ATTEMPTS: u32 = 100;

/// Runs `f` in a write transaction, again on a fresh snapshot whenever another process's commit
/// got in first. Returns `f`'s result and the attempts it took.
pub fn change<T>(
    db: &Connection,
    mut f: impl FnMut(&Transaction<'_>) -> rusqlite::Result<T>,
) -> anyhow::Result<(T, u32)> {
    for attempt in 1..=MAX_ATTEMPTS {
        let r = (|| {
            let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
            let v = f(&tx)?;
            tx.commit()?;
            Ok(v)
        })();
        match r {
            Ok(v) => return Ok((v, attempt)),
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::DatabaseBusy => {
                // A lost race at COMMIT rolls back by itself; a BUSY before it may leave the
                // transaction open.
                if !db.is_autocommit() {
                    db.execute_batch("ROLLBACK")?;
                }
                // Back off a little, more with each loss, so that two writers stop colliding.
                std::thread::sleep(Duration::from_millis(
                    (attempt as u64 * 3).min(50) + rand_jitter(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("gave up after {MAX_ATTEMPTS} attempts: the list kept changing")
}

fn rand_jitter() -> u64 {
    // Enough randomness for backoff without a dependency.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.subsec_nanos() % 7) as u64)
        .unwrap_or(0)
}

/// Adds an item; returns its id and the attempts it took.
pub fn add(db: &Connection, who: &str, title: &str) -> anyhow::Result<(i64, u32)> {
    change(db, |tx| {
        tx.execute("INSERT INTO todo(title, who) VALUES (?1, ?2)", (title, who))?;
        Ok(tx.last_insert_rowid())
    })
}

/// Marks an item done; false if there is no such item.
pub fn done(db: &Connection, id: i64) -> anyhow::Result<bool> {
    Ok(change(db, |tx| {
        Ok(tx.execute("UPDATE todo SET done = 1 WHERE id = ?1", [id])? == 1)
    })?
    .0)
}

/// One item of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: i64,
    pub title: String,
    pub who: String,
    pub done: bool,
}

/// The whole list, oldest first.
pub fn list(db: &Connection) -> anyhow::Result<Vec<Item>> {
    let mut q = db.prepare("SELECT id, title, who, done FROM todo ORDER BY id")?;
    let items = q
        .query_map([], |r| {
            Ok(Item {
                id: r.get(0)?,
                title: r.get(1)?,
                who: r.get(2)?,
                done: r.get::<_, i64>(3)? != 0,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(items)
}

/// The LSN the connection reads at (to notice changes cheaply).
pub fn lsn(db: &Connection) -> anyhow::Result<u64> {
    let s: String = db.query_row("PRAGMA folio_lsn", [], |r| r.get(0))?;
    Ok(s.parse()?)
}
