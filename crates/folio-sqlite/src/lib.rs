//! SQLite on a Folio volume.
//!
//! A database is a volume, opened as `file:VOLUME?vfs=folio` (with `addr=host:port,...` or
//! `registry=host:port,...`, or the `FOLIO_ADDR` / `FOLIO_REGISTRY` environment variables).
//! Pages are read lazily through the client's cache and prefetcher; a write transaction is one
//! CAS commit, and a commit that loses a race to another client's fails with
//! `SQLITE_BUSY_SNAPSHOT` (the app rolls back and retries). `docs/rfcs/0006-sqlite-vfs.md` has
//! the model and the README's "SQLite" section the parameters and pragmas. The VFS itself is
//! reached only through SQLite: its `xOpen` reads the URI parameters that follow the name SQLite
//! passes, which a Rust caller could not supply.
//!
//! Two ways in:
//! - the loadable extension `libfolio_sqlite.so` (`.load` in the `sqlite3` shell,
//!   `load_extension` in Python), whose entry point is [`sqlite3_foliosqlite_init`];
//! - [`register`], for Rust programs whose SQLite is linked in (rusqlite's `bundled`).

use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;

use sqlite_plugin::vars;
use sqlite_plugin::vfs::RegisterOpts;

pub mod config;
mod rt;
mod vfs;

pub use config::{Config, SyncMode};
use vfs::FolioVfs;

/// The VFS's name in SQLite.
pub const VFS_NAME: &str = "folio";

/// Whether this copy of the VFS is registered (registering twice would shadow the first).
static REGISTERED: Mutex<bool> = Mutex::new(false);

fn vfs_name() -> std::ffi::CString {
    std::ffi::CString::new(VFS_NAME).expect("the name has no NUL")
}

/// Registers the `folio` VFS with the SQLite this program links (rusqlite's bundled one, for
/// example); not as the default VFS, so databases name it (`vfs=folio`). Safe to call again.
/// Returns SQLite's error code on failure.
pub fn register() -> Result<(), i32> {
    let mut done = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    let logger = sqlite_plugin::vfs::register_static(
        vfs_name(),
        FolioVfs::new(),
        RegisterOpts {
            make_default: false,
        },
    )?;
    vfs::set_logger(logger);
    *done = true;
    Ok(())
}

/// The loadable extension's entry point (SQLite derives the name from `libfolio_sqlite.so`).
/// Registers the `folio` VFS and stays loaded after the connection that loaded it closes.
///
/// # Safety
/// Called by SQLite's extension loader with its API routines.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_foliosqlite_init(
    _db: *mut c_void,
    _err: *mut *mut c_char,
    api: *mut sqlite_plugin::sqlite3_api_routines,
) -> c_int {
    let mut done = REGISTERED.lock().unwrap_or_else(|p| p.into_inner());
    if !*done {
        // SAFETY: `api` is the routine table SQLite passes to every extension's entry point.
        let r = unsafe {
            sqlite_plugin::vfs::register_dynamic(
                api,
                vfs_name(),
                FolioVfs::new(),
                RegisterOpts {
                    make_default: false,
                },
            )
        };
        match r {
            Ok(logger) => vfs::set_logger(logger),
            Err(code) => return code,
        }
        *done = true;
    }
    vars::SQLITE_OK_LOAD_PERMANENTLY
}
