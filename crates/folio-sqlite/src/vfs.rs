//! The VFS: a database file is a volume, SQLite page `n` is Folio page `n - 1`, and a write
//! transaction is one CAS commit.
//!
//! - A read transaction (SQLite's SHARED lock) reads one snapshot, the LSN the connection's view
//!   was at when it began (after a pull, in the default `sync=begin` mode).
//! - A write transaction buffers the pages SQLite writes and sends them as one commit, with CAS on
//!   the snapshot and an idempotency key, when SQLite syncs the database file at commit. If any
//!   commit got in after the snapshot, the commit fails and SQLite gets `SQLITE_BUSY_SNAPSHOT`:
//!   it rolls back, and the app retries on a fresh snapshot. Nothing partial is ever visible.
//! - Journals and temporary files live in memory: a Folio commit is atomic, so a journal is only
//!   needed to roll back inside one process, and there is never a hot journal to recover.
//! - Locks are SQLite's usual five levels among the connections of this process; between
//!   processes and machines the CAS is the lock (optimistic concurrency, like WAL's snapshots).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, CStr};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use folio_client::{Client, Code, Error, TxError, Volume};
use folio_core::limits::MAX_REFS_PER_COMMIT;
use folio_core::{Lsn, VolumeId, PAGE_SIZE};
use sqlite_plugin::flags::{AccessFlags, CreateMode, LockLevel, OpenKind, OpenMode, OpenOpts};
use sqlite_plugin::logger::{SqliteLogLevel, SqliteLogger};
use sqlite_plugin::vars;
use sqlite_plugin::vfs::{Pragma, PragmaErr, Vfs, VfsHandle, VfsResult};

use crate::config::{Config, SyncMode, MEM_FILE_LIMIT};
use crate::rt;
use folio_core::sqlite::{self as header, Header};

const PAGE: u64 = PAGE_SIZE as u64;

static LOGGER: OnceLock<Mutex<SqliteLogger>> = OnceLock::new();

/// Keeps SQLite's log handle (`sqlite3_log`) for messages about failures the error codes alone
/// cannot explain.
pub(crate) fn set_logger(l: SqliteLogger) {
    let _ = LOGGER.set(Mutex::new(l));
}

/// Whether to copy the VFS's messages to stderr (`FOLIO_SQLITE_LOG=stderr`): the `sqlite3` shell
/// shows only SQLite's generic message ("unable to open database file"), not its log.
fn to_stderr() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("FOLIO_SQLITE_LOG").is_ok_and(|v| v == "stderr"))
}

fn log(msg: &str) {
    tracing::warn!("{msg}");
    if to_stderr() {
        eprintln!("folio-sqlite: {msg}");
    }
    if let Some(l) = LOGGER.get() {
        if let Ok(l) = l.lock() {
            // sqlite3_log truncates long lines; one call per line keeps them whole, and a NUL
            // would end the message early.
            for line in msg.replace('\0', " ").lines() {
                l.log(SqliteLogLevel::Warn, &format!("folio: {line}"));
            }
        }
    }
}

/// The Folio VFS. Register it with [`crate::register`] (static SQLite) or load the extension.
pub struct FolioVfs {
    defaults: Result<Config, String>,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    /// By the configuration's volume key: connections with the same settings share a view.
    volumes: Mutex<HashMap<(String, VolumeId), Weak<Shared>>>,
    next_handle: AtomicU64,
}

impl Default for FolioVfs {
    fn default() -> Self {
        Self::new()
    }
}

impl FolioVfs {
    pub fn new() -> FolioVfs {
        FolioVfs {
            defaults: Config::from_env(),
            clients: Mutex::new(HashMap::new()),
            volumes: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
        }
    }

    fn client(&self, cfg: &Config) -> Result<Arc<Client>, String> {
        let mut clients = self.clients.lock().map_err(|_| "poisoned lock")?;
        let key = cfg.client_key();
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        // One client per distinct configuration; a process names few of them.
        let c = Arc::new(cfg.client()?);
        clients.insert(key, c.clone());
        Ok(c)
    }

    /// The state every connection of this process to `id` shares: the volume's view and page
    /// cache, and the lock table.
    fn shared(&self, cfg: &Config, id: VolumeId, create: bool) -> Result<Arc<Shared>, String> {
        let key = (cfg.volume_key(), id);
        let mut volumes = self.volumes.lock().map_err(|_| "poisoned lock")?;
        volumes.retain(|_, w| w.strong_count() > 0);
        if let Some(s) = volumes.get(&key).and_then(Weak::upgrade) {
            return Ok(s);
        }
        let client = self.client(cfg)?;
        let cache = cfg.cache_bytes;
        let volume = rt::block(async move {
            match Volume::open(client.clone(), id, cache).await {
                Err(Error::NotFound(_)) if create => {
                    client.create_volume(Some(id)).await?;
                    Volume::open(client, id, cache).await
                }
                other => other,
            }
        })?
        .map_err(|e| match e {
            Error::NotFound(_) => format!(
                "volume {id} does not exist (open it read-write with SQLite's create flag, the \
                 default, to create it)"
            ),
            e => format!("open volume {id}: {e}"),
        })?;
        volume.set_prefetch(cfg.prefetch);
        let follow = (cfg.sync == SyncMode::Follow).then(|| {
            let v = volume.clone();
            rt::handle()
                .spawn(async move {
                    // Reconnects after errors with a pause; a sync catches up what the stream
                    // missed.
                    loop {
                        let _ = v.sync().await;
                        if let Err(e) = v.clone().follow().await {
                            tracing::debug!("watch on {} ended: {e}", v.id());
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                })
                .abort_handle()
        });
        let s = Arc::new(Shared {
            volume,
            locks: Mutex::new(Locks::default()),
            last_error: Mutex::new(None),
            follow,
            commits: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
        });
        volumes.insert(key, Arc::downgrade(&s));
        Ok(s)
    }
}

/// What the connections of one process to one volume share.
struct Shared {
    volume: Arc<Volume>,
    locks: Mutex<Locks>,
    last_error: Mutex<Option<String>>,
    follow: Option<tokio::task::AbortHandle>,
    commits: AtomicU64,
    conflicts: AtomicU64,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(f) = &self.follow {
            f.abort();
        }
    }
}

impl Shared {
    /// Logs `msg` and keeps it for `PRAGMA folio_status`.
    fn fail(&self, code: i32, msg: String) -> i32 {
        log(&msg);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(msg);
        }
        code
    }

    fn locks(&self) -> std::sync::MutexGuard<'_, Locks> {
        // The lock table is a few integers updated in place: it stays consistent even if a
        // holder panicked.
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// SQLite's locks among this process's connections to one volume.
#[derive(Default, Debug)]
struct Locks {
    /// Connections holding SHARED or more.
    readers: u32,
    /// The connection holding RESERVED, PENDING or EXCLUSIVE, and which.
    writer: Option<(u64, LockLevel)>,
}

/// An open file: the database (a volume), or a journal or temporary file in memory.
pub enum Handle {
    Db(Box<DbFile>),
    Mem(MemFile),
}

impl VfsHandle for Handle {
    fn readonly(&self) -> bool {
        match self {
            Handle::Db(d) => d.readonly,
            Handle::Mem(_) => false,
        }
    }

    fn in_memory(&self) -> bool {
        matches!(self, Handle::Mem(_))
    }
}

/// A journal or temporary file.
#[derive(Default)]
pub struct MemFile {
    data: Vec<u8>,
}

/// A connection's handle on a volume.
pub struct DbFile {
    shared: Arc<Shared>,
    id: u64,
    readonly: bool,
    sync: SyncMode,
    level: LockLevel,
    /// The LSN this connection reads at.
    snap: Lsn,
    /// The database's size at `snap`, from its header.
    base_size: u64,
    /// The header's change counter at `snap`: every SQLite commit writes page 0 with a new one.
    base_counter: [u8; 4],
    /// The file's size as SQLite has made it in this transaction (writes extend, truncates cut).
    size: u64,
    /// Pages written in this transaction, not yet committed.
    dirty: BTreeMap<u32, Bytes>,
    tx: TxState,
}

/// Where a write transaction is; back to `Open` when SQLite drops its lock below RESERVED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxState {
    /// Writes are buffered for the commit.
    Open,
    /// Its commit went in: SQLite must release its lock before it writes again.
    Committed,
    /// Its commit failed: SQLite is rolling back, and the journal's originals it writes now
    /// are dropped.
    Failed,
    /// The rollback's sync came: SQLite must release its lock before it writes again.
    RolledBack,
}

/// The change counter in a page 0 (bytes 24..28 of SQLite's header).
fn counter(page: &[u8]) -> [u8; 4] {
    let mut c = [0; 4];
    if let Some(b) = page.get(24..28) {
        c.copy_from_slice(b);
    }
    c
}

/// Whether a `PRAGMA synchronous` value means OFF, read as SQLite reads it: leading decimal
/// digits (so `0x1` is 0) or a keyword, then the level is `(n + 1) & 7` and OFF is 1.
fn synchronous_off(v: &str) -> bool {
    let v = v.trim();
    let n: u64 = if v.starts_with(|c: char| c.is_ascii_digit()) {
        let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    } else if ["no", "off", "false"].contains(&v.to_ascii_lowercase().as_str()) {
        0
    } else {
        1
    };
    (n.wrapping_add(1) & 7) == 1
}

/// Whether a `PRAGMA journal_mode` value means WAL: SQLite takes any prefix of a mode's name.
fn journal_wal(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    !v.is_empty() && "wal".starts_with(&v)
}

/// A page 0 SQLite is about to write that the VFS could not serve back: WAL mode or another
/// page size in the header (set through a route the pragma checks do not see, such as an
/// unqualified pragma applied to an attached volume).
fn header_refusal(page: &[u8]) -> Option<String> {
    if !page.starts_with(header::MAGIC) {
        return None;
    }
    if page[16..18] != (PAGE_SIZE as u16).to_be_bytes() {
        return Some(format!(
            "SQLite is writing a header with a page size other than {PAGE_SIZE}"
        ));
    }
    if page[header::JOURNAL_VERSION].contains(&2) {
        return Some(
            "SQLite is switching the database to WAL mode, which the Folio VFS does \
                     not support"
                .into(),
        );
    }
    None
}

fn code_of(e: &Error, otherwise: i32) -> i32 {
    match e.code() {
        Some(Code::PermissionDenied | Code::Unauthenticated) => vars::SQLITE_PERM,
        Some(Code::ResourceExhausted) => vars::SQLITE_FULL,
        _ => otherwise,
    }
}

impl DbFile {
    fn volume(&self) -> &Arc<Volume> {
        &self.shared.volume
    }

    /// Runs a call to the group on the VFS's runtime. A failure is logged, kept for
    /// `PRAGMA folio_status`, and answered as `code` (or what its gRPC status maps to).
    fn call<T: Send + 'static>(
        &self,
        code: i32,
        what: &str,
        f: impl Future<Output = folio_client::Result<T>> + Send + 'static,
    ) -> Result<T, i32> {
        match rt::block(f) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.shared.fail(
                code_of(&e, code),
                format!("{what} (volume {}): {e}", self.volume().id()),
            )),
            Err(e) => Err(self.shared.fail(code, e)),
        }
    }

    /// Pages `idxs` as of `lsn`. One page goes through the prefetcher, which reads ahead when
    /// SQLite scans; several (a read across pages, the pages a commit compares) go in one call.
    fn pages_at(&self, lsn: Lsn, idxs: Vec<u32>) -> Result<Vec<(u32, Bytes)>, i32> {
        if let [one] = idxs[..] {
            // A cache hit needs no call, so no hop to the runtime either.
            if let Some(b) = self.volume().read_cached(lsn, one) {
                return Ok(vec![(one, b)]);
            }
        }
        let v = self.volume().clone();
        let what = format!("read at LSN {lsn}");
        self.call(vars::SQLITE_IOERR_READ, &what, async move {
            match idxs[..] {
                [one] => Ok(vec![(one, v.read_at(lsn, one).await?)]),
                _ => v.read_many_at(lsn, &idxs).await,
            }
        })
    }

    /// The database's size in bytes at `lsn` and its change counter, from its header.
    fn header_at(&self, lsn: Lsn) -> Result<(u64, [u8; 4]), i32> {
        if lsn == Lsn(0) {
            return Ok((0, [0; 4]));
        }
        let page = self
            .pages_at(lsn, vec![0])?
            .pop()
            .map(|(_, p)| p)
            .unwrap_or_default();
        match header::parse(&page) {
            Ok(Header::Empty) => Ok((0, [0; 4])),
            Ok(Header::Database { pages }) => Ok((pages as u64 * PAGE, counter(&page))),
            Err(m) => Err(self.shared.fail(
                vars::SQLITE_NOTADB,
                format!("volume {}: {m}", self.volume().id()),
            )),
        }
    }

    /// Starts a read transaction: picks the snapshot (after a pull in `sync=begin`).
    fn begin_read(&mut self) -> Result<(), i32> {
        if self.sync == SyncMode::Begin {
            let v = self.volume().clone();
            self.call(
                vars::SQLITE_IOERR_LOCK,
                "sync",
                async move { v.sync().await },
            )?;
        }
        self.snap = self.volume().synced();
        (self.base_size, self.base_counter) = self.header_at(self.snap)?;
        self.size = self.base_size;
        Ok(())
    }

    fn lock(&mut self, level: LockLevel) -> VfsResult<()> {
        if level <= self.level {
            return Ok(());
        }
        if level == LockLevel::Shared {
            {
                let mut l = self.shared.locks();
                if matches!(l.writer, Some((w, wl)) if w != self.id && wl >= LockLevel::Pending) {
                    return Err(vars::SQLITE_BUSY);
                }
                l.readers += 1;
            }
            self.level = LockLevel::Shared;
            if let Err(code) = self.begin_read() {
                self.shared.locks().readers -= 1;
                self.level = LockLevel::Unlocked;
                return Err(code);
            }
            return Ok(());
        }
        if self.level < LockLevel::Shared {
            return Err(vars::SQLITE_INTERNAL);
        }
        if self.readonly {
            return Err(vars::SQLITE_READONLY);
        }
        if self.level == LockLevel::Shared && self.volume().synced() > self.snap {
            // The view moved past this transaction's snapshot (another connection here
            // committed, or the view followed the group): its commit could only fail.
            self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
            return Err(vars::SQLITE_BUSY_SNAPSHOT);
        }
        let mut l = self.shared.locks();
        if matches!(l.writer, Some((w, _)) if w != self.id) {
            return Err(vars::SQLITE_BUSY);
        }
        if level == LockLevel::Reserved {
            l.writer = Some((self.id, LockLevel::Reserved));
            self.level = LockLevel::Reserved;
            return Ok(());
        }
        // PENDING keeps new readers out while the ones already in finish.
        l.writer = Some((self.id, LockLevel::Pending));
        self.level = LockLevel::Pending;
        if level == LockLevel::Pending {
            return Ok(());
        }
        if l.readers > 1 {
            return Err(vars::SQLITE_BUSY);
        }
        l.writer = Some((self.id, LockLevel::Exclusive));
        self.level = LockLevel::Exclusive;
        Ok(())
    }

    fn unlock(&mut self, level: LockLevel) -> VfsResult<()> {
        if level >= self.level {
            return Ok(());
        }
        let mut l = self.shared.locks();
        if self.level >= LockLevel::Reserved && level <= LockLevel::Shared {
            // The transaction is over: committed at sync, or rolled back.
            if self.tx == TxState::Open && !self.dirty.is_empty() {
                // Written and never synced: a rollback with journal_mode=OFF, or a commit with
                // synchronous=OFF, which would be lost; say so.
                let n = self.dirty.len();
                self.shared.fail(
                    vars::SQLITE_WARNING,
                    format!(
                        "dropped {n} pages SQLite wrote without syncing the database: nothing was \
                         committed (with synchronous=OFF the Folio VFS cannot commit)"
                    ),
                );
            }
            self.dirty.clear();
            self.tx = TxState::Open;
            self.size = self.base_size;
            if matches!(l.writer, Some((w, _)) if w == self.id) {
                l.writer = None;
            }
        }
        if level == LockLevel::Unlocked && self.level >= LockLevel::Shared {
            l.readers = l.readers.saturating_sub(1);
        }
        self.level = level;
        Ok(())
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> VfsResult<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - offset) as usize;
        let first = (offset / PAGE) as u32;
        let last = ((offset + n as u64 - 1) / PAGE) as u32;
        let fetch: Vec<u32> = (first..=last)
            .filter(|i| !self.dirty.contains_key(i) && (*i as u64) * PAGE < self.base_size)
            .collect();
        let fetched: HashMap<u32, Bytes> = if fetch.is_empty() {
            HashMap::new()
        } else {
            self.pages_at(self.snap, fetch)?.into_iter().collect()
        };
        let zeros = [0u8; PAGE_SIZE];
        let mut done = 0usize;
        while done < n {
            let pos = offset + done as u64;
            let idx = (pos / PAGE) as u32;
            let within = (pos % PAGE) as usize;
            let page: &[u8] = match self.dirty.get(&idx).or_else(|| fetched.get(&idx)) {
                Some(b) => b,
                None => &zeros,
            };
            let take = (PAGE_SIZE - within).min(n - done);
            buf[done..done + take].copy_from_slice(&page[within..within + take]);
            done += take;
        }
        Ok(n)
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> VfsResult<usize> {
        if self.level < LockLevel::Reserved {
            return Err(vars::SQLITE_IOERR_WRITE);
        }
        if !offset.is_multiple_of(PAGE) || data.len() != PAGE_SIZE {
            return Err(self.shared.fail(
                vars::SQLITE_IOERR_WRITE,
                format!(
                    "SQLite wrote {} bytes at offset {offset}: Folio stores {PAGE_SIZE}-byte pages, \
                     so the database needs page_size={PAGE_SIZE}",
                    data.len()
                ),
            ));
        }
        match self.tx {
            TxState::Open => {}
            TxState::Failed => return Ok(data.len()),
            TxState::Committed | TxState::RolledBack => {
                return Err(self.shared.fail(
                    vars::SQLITE_IOERR_WRITE,
                    "SQLite wrote to the database after a commit without releasing its lock: \
                     locking_mode=EXCLUSIVE (set directly, or inherited by an attached volume) \
                     is not supported; use NORMAL"
                        .into(),
                ))
            }
        }
        if offset == 0 {
            if let Some(m) = header_refusal(data) {
                return Err(self.shared.fail(vars::SQLITE_IOERR_WRITE, m));
            }
        }
        let idx = u32::try_from(offset / PAGE).map_err(|_| vars::SQLITE_FULL)?;
        if idx > folio_core::limits::MAX_PAGE_IDX {
            return Err(self.shared.fail(
                vars::SQLITE_FULL,
                format!("page {idx} is past the largest page index Folio stores"),
            ));
        }
        if self.dirty.len() >= MAX_REFS_PER_COMMIT && !self.dirty.contains_key(&idx) {
            return Err(self.shared.fail(
                vars::SQLITE_FULL,
                format!(
                    "the transaction writes more than {MAX_REFS_PER_COMMIT} pages, Folio's limit \
                     for one commit: split it"
                ),
            ));
        }
        self.dirty.insert(idx, Bytes::copy_from_slice(data));
        self.size = self.size.max(offset + PAGE);
        Ok(data.len())
    }

    fn truncate(&mut self, size: u64) -> VfsResult<()> {
        let keep = size.div_ceil(PAGE);
        self.dirty.retain(|i, _| (*i as u64) < keep);
        self.size = size;
        Ok(())
    }

    /// SQLite's commit point: sends the transaction's pages as one CAS commit.
    fn commit(&mut self) -> VfsResult<()> {
        match self.tx {
            TxState::Open => {}
            TxState::Failed => {
                // The rollback's sync: what it wrote back was dropped.
                self.dirty.clear();
                self.tx = TxState::RolledBack;
                return Ok(());
            }
            // Writes are refused in these states, so nothing is buffered.
            TxState::Committed | TxState::RolledBack => return Ok(()),
        }
        // A rollback after a cache spill writes the originals back and syncs, which must not
        // become a commit: pages equal to the snapshot's are not sent. A commit always writes
        // page 0 with a new change counter, so the comparison (a call, unless every page is
        // cached) is made only when page 0 does not say "commit".
        let committing = self
            .dirty
            .get(&0)
            .is_some_and(|p| counter(p) != self.base_counter);
        let existing: Vec<u32> = self
            .dirty
            .keys()
            .copied()
            .filter(|i| !committing && (*i as u64) * PAGE < self.base_size)
            .collect();
        if !existing.is_empty() {
            for (idx, data) in self.pages_at(self.snap, existing)? {
                if self.dirty.get(&idx) == Some(&data) {
                    self.dirty.remove(&idx);
                }
            }
        }
        if self.dirty.is_empty() {
            return Ok(());
        }
        let base = self.snap;
        let mut tx = self.volume().begin_at(base).without_rebase();
        for (idx, data) in &self.dirty {
            if let Err(e) = tx.write(*idx, data.clone()) {
                self.tx = TxState::Failed;
                return Err(self.shared.fail(vars::SQLITE_FULL, e.to_string()));
            }
        }
        let written: Vec<(u32, Bytes)> = std::mem::take(&mut self.dirty).into_iter().collect();
        let new_counter = written
            .first()
            .filter(|(i, _)| *i == 0)
            .map(|(_, p)| counter(p));
        let id = self.volume().id();
        match rt::block(tx.commit()) {
            Ok(Ok(c)) => {
                self.volume().note_commit(base, c.lsn, written);
                self.snap = c.lsn;
                self.base_size = self.size;
                self.base_counter = new_counter.unwrap_or(self.base_counter);
                self.tx = TxState::Committed;
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(TxError::Conflict { head, .. })) => {
                self.tx = TxState::Failed;
                self.shared.conflicts.fetch_add(1, Ordering::Relaxed);
                // Bring the view forward so that the retry reads the commits that won.
                let v = self.volume().clone();
                let _ = rt::block(async move { v.sync().await });
                tracing::debug!(%id, %base, %head, "commit lost to a concurrent one");
                Err(vars::SQLITE_BUSY_SNAPSHOT)
            }
            Ok(Err(e)) => {
                self.tx = TxState::Failed;
                let code = match &e {
                    TxError::Client(c) => code_of(c, vars::SQLITE_IOERR_FSYNC),
                    TxError::TooLarge(_) => vars::SQLITE_FULL,
                    _ => vars::SQLITE_IOERR_FSYNC,
                };
                Err(self.shared.fail(
                    code,
                    format!("commit to volume {id} on LSN {base}: {e} (if the group was unreachable, the commit may or may not have happened)"),
                ))
            }
            Err(e) => {
                self.tx = TxState::Failed;
                Err(self.shared.fail(vars::SQLITE_IOERR_FSYNC, e))
            }
        }
    }

    fn status(&self) -> String {
        let v = self.volume();
        let last = self
            .shared
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_else(|| "none".into());
        format!(
            "volume={} lsn={} view={} sync={} commits={} conflicts={} cached_bytes={} read_calls={} last_error={}",
            v.id(),
            self.snap,
            v.synced(),
            self.sync.name(),
            self.shared.commits.load(Ordering::Relaxed),
            self.shared.conflicts.load(Ordering::Relaxed),
            v.cached_bytes(),
            v.read_rpcs(),
            last
        )
    }

    fn pragma(&mut self, p: Pragma<'_>) -> Result<Option<String>, PragmaErr> {
        let name = p.name.to_ascii_lowercase();
        let arg = p
            .arg
            .map(|a| a.trim().trim_matches(['\'', '"']).to_ascii_lowercase());
        let refuse = |m: String| Err(PragmaErr::Fail(vars::SQLITE_ERROR, Some(m)));
        match (name.as_str(), arg.as_deref()) {
            ("folio_status", _) => Ok(Some(self.status())),
            ("folio_lsn", _) => {
                let lsn = if self.level >= LockLevel::Shared {
                    self.snap
                } else {
                    self.volume().synced()
                };
                Ok(Some(lsn.0.to_string()))
            }
            ("folio_sync", _) => {
                let v = self.volume().clone();
                match rt::block(async move { v.sync().await }) {
                    Ok(Ok(lsn)) => Ok(Some(lsn.0.to_string())),
                    Ok(Err(e)) => refuse(format!("folio_sync: {e}")),
                    Err(e) => refuse(e),
                }
            }
            ("journal_mode", Some(m)) if journal_wal(m) => refuse(
                "the Folio VFS does not support WAL mode: a commit is already one atomic write \
                 to the group, and the rollback journal is kept in memory"
                    .into(),
            ),
            ("page_size", Some(a)) if a != PAGE_SIZE.to_string() => refuse(format!(
                "page_size={a}: Folio stores {PAGE_SIZE}-byte pages (SQLite's default)"
            )),
            ("locking_mode", Some("exclusive")) => refuse(
                "locking_mode=EXCLUSIVE keeps one snapshot across transactions, so another \
                 client's commit would fail every later one: use the default NORMAL"
                    .into(),
            ),
            ("synchronous", Some(v)) if synchronous_off(v) => refuse(
                "synchronous=OFF would skip the sync at which the Folio VFS commits: use NORMAL \
                 or FULL (they cost the same here)"
                    .into(),
            ),
            _ => Err(PragmaErr::NotFound),
        }
    }
}

impl MemFile {
    fn read(&self, offset: u64, buf: &mut [u8]) -> usize {
        let len = self.data.len() as u64;
        if offset >= len {
            return 0;
        }
        let n = (buf.len() as u64).min(len - offset) as usize;
        let o = offset as usize;
        buf[..n].copy_from_slice(&self.data[o..o + n]);
        n
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> VfsResult<usize> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= MEM_FILE_LIMIT as u64)
            .ok_or(vars::SQLITE_FULL)? as usize;
        if end > self.data.len() {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(data);
        Ok(data.len())
    }

    fn truncate(&mut self, size: u64) -> VfsResult<()> {
        if size > MEM_FILE_LIMIT as u64 {
            return Err(vars::SQLITE_FULL);
        }
        self.data.resize(size as usize, 0);
        Ok(())
    }
}

/// The database name SQLite hands to xOpen is followed by the URI's parameters:
/// `name\0key\0value\0...key\0value\0\0` (what `sqlite3_uri_parameter` walks).
///
/// # Safety
/// `name` must be the main database name exactly as SQLite passed it to xOpen (borrowed, not
/// copied).
unsafe fn uri_params(name: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // SAFETY: SQLite's buffer continues past the name's NUL with the parameter list, which ends
    // with an empty key.
    unsafe {
        let mut p = name.as_ptr().add(name.len() + 1) as *const c_char;
        // Bounded: a URI has few parameters.
        while out.len() < 64 {
            let k = CStr::from_ptr(p);
            if k.is_empty() {
                break;
            }
            p = p.add(k.to_bytes().len() + 1);
            let v = CStr::from_ptr(p);
            p = p.add(v.to_bytes().len() + 1);
            out.push((
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            ));
        }
    }
    out
}

impl FolioVfs {
    fn open_db(&self, name: &str, opts: OpenOpts) -> VfsResult<Handle> {
        let fail = |m: String| {
            log(&m);
            vars::SQLITE_CANTOPEN
        };
        let mut cfg = self.defaults.clone().map_err(&fail)?;
        // Only a name SQLite passed unchanged (ASCII, so not re-encoded) is followed by its
        // parameters.
        if name.is_ascii() {
            // SAFETY: `name` is SQLite's main database name, borrowed (see above).
            for (k, v) in unsafe { uri_params(name) } {
                cfg.set(&k, &v).map_err(|e| fail(format!("{name}: {e}")))?;
            }
        }
        let vol = name.trim_start_matches('/');
        let id: VolumeId = vol.parse().map_err(|_| {
            fail(format!(
                "{name:?} is not a volume id: open `file:VOLUME?vfs=folio` with a volume's 32 hex \
                 digits"
            ))
        })?;
        let readonly = opts.mode().is_readonly();
        let create = matches!(
            opts.mode(),
            OpenMode::ReadWrite {
                create: CreateMode::Create | CreateMode::MustCreate
            }
        );
        let shared = self.shared(&cfg, id, create).map_err(&fail)?;
        let mut db = DbFile {
            shared,
            id: self.next_handle.fetch_add(1, Ordering::Relaxed),
            readonly,
            sync: cfg.sync,
            level: LockLevel::Unlocked,
            snap: Lsn(0),
            base_size: 0,
            base_counter: [0; 4],
            size: 0,
            dirty: BTreeMap::new(),
            tx: TxState::Open,
        };
        // Refuse what cannot be served now, with the reason, rather than at the first read.
        db.snap = db.volume().synced();
        (db.base_size, db.base_counter) =
            db.header_at(db.snap).map_err(|_| vars::SQLITE_CANTOPEN)?;
        db.size = db.base_size;
        Ok(Handle::Db(Box::new(db)))
    }
}

impl Vfs for FolioVfs {
    type Handle = Handle;

    fn canonical_path<'a>(&self, path: Cow<'a, str>) -> VfsResult<Cow<'a, str>> {
        Ok(path)
    }

    fn open(&self, path: Option<&str>, opts: OpenOpts) -> VfsResult<Self::Handle> {
        match (opts.kind(), path) {
            (OpenKind::MainDb, Some(name)) => self.open_db(name, opts),
            (OpenKind::MainDb, None) => {
                log("the Folio VFS needs a volume id as the database name");
                Err(vars::SQLITE_CANTOPEN)
            }
            (OpenKind::Wal, _) => {
                log("the Folio VFS does not support WAL mode");
                Err(vars::SQLITE_CANTOPEN)
            }
            _ => Ok(Handle::Mem(MemFile::default())),
        }
    }

    fn delete(&self, _path: &str) -> VfsResult<()> {
        // Only journals are ever deleted, and they live in their handles.
        Ok(())
    }

    fn access(&self, _path: &str, _flags: AccessFlags) -> VfsResult<bool> {
        // No journal or WAL file outlives its handle, so SQLite never finds a hot journal.
        Ok(false)
    }

    fn file_size(&self, handle: &mut Handle) -> VfsResult<usize> {
        match handle {
            Handle::Db(d) => {
                let size = if d.level == LockLevel::Unlocked {
                    d.header_at(d.volume().synced())?.0
                } else {
                    d.size
                };
                usize::try_from(size).map_err(|_| vars::SQLITE_IOERR_FSTAT)
            }
            Handle::Mem(m) => Ok(m.data.len()),
        }
    }

    fn truncate(&self, handle: &mut Handle, size: usize) -> VfsResult<()> {
        match handle {
            Handle::Db(d) => d.truncate(size as u64),
            Handle::Mem(m) => m.truncate(size as u64),
        }
    }

    fn write(&self, handle: &mut Handle, offset: usize, data: &[u8]) -> VfsResult<usize> {
        match handle {
            Handle::Db(d) => d.write(offset as u64, data),
            Handle::Mem(m) => m.write(offset as u64, data),
        }
    }

    fn read(&self, handle: &mut Handle, offset: usize, data: &mut [u8]) -> VfsResult<usize> {
        match handle {
            Handle::Db(d) => d.read(offset as u64, data),
            Handle::Mem(m) => Ok(m.read(offset as u64, data)),
        }
    }

    fn lock(&self, handle: &mut Handle, level: LockLevel) -> VfsResult<()> {
        match handle {
            Handle::Db(d) => d.lock(level),
            Handle::Mem(_) => Ok(()),
        }
    }

    fn unlock(&self, handle: &mut Handle, level: LockLevel) -> VfsResult<()> {
        match handle {
            Handle::Db(d) => d.unlock(level),
            Handle::Mem(_) => Ok(()),
        }
    }

    fn check_reserved_lock(&self, handle: &mut Handle) -> VfsResult<bool> {
        match handle {
            Handle::Db(d) => Ok(d.shared.locks().writer.is_some()),
            Handle::Mem(_) => Ok(false),
        }
    }

    fn sync(&self, handle: &mut Handle) -> VfsResult<()> {
        match handle {
            Handle::Db(d) => d.commit(),
            Handle::Mem(_) => Ok(()),
        }
    }

    fn close(&self, mut handle: Handle) -> VfsResult<()> {
        if let Handle::Db(d) = &mut handle {
            d.unlock(LockLevel::Unlocked)?;
        }
        Ok(())
    }

    fn pragma(&self, handle: &mut Handle, pragma: Pragma<'_>) -> Result<Option<String>, PragmaErr> {
        match handle {
            Handle::Db(d) => d.pragma(pragma),
            Handle::Mem(_) => Err(PragmaErr::NotFound),
        }
    }

    fn device_characteristics(&self, _handle: &mut Handle) -> VfsResult<i32> {
        // Not IOCAP_ATOMIC: SQLite keeps its journal, which it needs to roll back in memory.
        Ok(vars::SQLITE_IOCAP_SAFE_APPEND
            | vars::SQLITE_IOCAP_SEQUENTIAL
            | vars::SQLITE_IOCAP_POWERSAFE_OVERWRITE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pragma_values_are_read_as_sqlite_reads_them() {
        for off in ["off", "OFF", "0", "no", "false", "8", "0x1", "00", "16"] {
            assert!(synchronous_off(off), "{off} is OFF to SQLite");
        }
        for on in [
            "normal", "full", "extra", "1", "2", "3", "yes", "on", "9", "bogus",
        ] {
            assert!(!synchronous_off(on), "{on} is not OFF to SQLite");
        }
        for wal in ["wal", "WAL", "wa", "w"] {
            assert!(journal_wal(wal), "{wal}");
        }
        for other in ["delete", "memory", "off", "", "walrus"] {
            assert!(!journal_wal(other), "{other}");
        }
    }

    #[test]
    fn headers_the_vfs_cannot_serve_are_refused_at_write() {
        let mut p = vec![0u8; PAGE_SIZE];
        assert_eq!(header_refusal(&p), None, "not a header");
        p[..16].copy_from_slice(header::MAGIC);
        p[16..18].copy_from_slice(&4096u16.to_be_bytes());
        p[18] = 1;
        p[19] = 1;
        assert_eq!(header_refusal(&p), None);
        p[18] = 2;
        p[19] = 2;
        assert!(header_refusal(&p).unwrap().contains("WAL"));
        p[18] = 1;
        p[19] = 1;
        p[16..18].copy_from_slice(&1024u16.to_be_bytes());
        assert!(header_refusal(&p).unwrap().contains("page size"));
    }
}
