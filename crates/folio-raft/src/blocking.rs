//! Synchronous disk work called from async code. A RocksDB read or write usually answers from
//! memory in microseconds, but on a slow or busy disk it can wait for milliseconds; run inline on
//! an async worker, that wait would also hold up every other task queued on the worker (Raft
//! heartbeats and replication among them).

/// Runs `f`, which may wait on the disk, without stalling the other tasks of this async worker.
///
/// On a multi-threaded runtime the worker first hands its queue of tasks to another thread
/// (`tokio::task::block_in_place`), then runs `f` on its own thread: no data moves and the
/// caller's task does not wait to be scheduled again, which keeps the cost well below a
/// `spawn_blocking` round trip. Calls made while the queue is already handed off (several reads in
/// a row) run at once. Where there is nothing to hand off, `f` simply runs: on a blocking thread,
/// outside any runtime, and on a current-thread runtime (where tokio forbids handing off; such a
/// runtime has no other worker to protect anyway).
pub fn in_place<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::in_place;

    #[test]
    fn runs_outside_a_runtime() {
        assert_eq!(in_place(|| 7), 7);
    }

    #[tokio::test]
    async fn runs_on_a_current_thread_runtime() {
        assert_eq!(in_place(|| 7), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn other_tasks_run_while_it_blocks() {
        // Both tasks start on the only worker. Were the first to block the worker inline, the
        // second could not run until it returned, and the wait would end without an answer.
        let blocked = tokio::spawn(async {
            let (tx, rx) = std::sync::mpsc::channel();
            let other = tokio::spawn(async move { tx.send(()).unwrap() });
            let got = in_place(|| rx.recv_timeout(std::time::Duration::from_secs(10)));
            other.await.unwrap();
            got
        });
        assert!(
            blocked.await.unwrap().is_ok(),
            "the other task ran meanwhile"
        );
        // From a blocking thread of the same runtime, it just runs.
        let n = tokio::task::spawn_blocking(|| in_place(|| 7))
            .await
            .unwrap();
        assert_eq!(n, 7);
    }
}
