//! The VFS is called synchronously, on whatever thread runs SQLite; folio-client is async. Calls
//! run on a small runtime the VFS owns and the SQLite thread waits for them, which works from
//! any thread, including one inside another tokio runtime (where `block_on` would panic).

use std::future::Future;
use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

pub fn handle() -> tokio::runtime::Handle {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("folio-sqlite")
                .enable_all()
                .build()
                .expect("start the folio-sqlite runtime")
        })
        .handle()
        .clone()
}

/// Runs `f` on the VFS's runtime and waits for it; an error only if `f` panicked.
pub fn block<F>(f: F) -> Result<F::Output, String>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .map_err(|_| "a call to the group panicked (a bug in folio-sqlite)".to_string())
}
