//! A TCP proxy in front of the object store that the nemesis can take down (every connection
//! closed, new ones refused) or slow down (every chunk held back before it is passed on, both
//! directions), without losing the store's contents.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    Down,
    /// Each chunk waits this long.
    Slow(Duration),
}

pub struct FaultProxy {
    pub addr: String,
    mode: watch::Sender<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on `listen` (`ip:port`, port 0 for any) and forwards to `target`.
    pub async fn start(listen: &str, target: String) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?.to_string();
        let (mode, _) = watch::channel(Mode::Up);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    // Out of descriptors, say: wait instead of spinning on the error.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let rx = modes.subscribe();
                if *rx.borrow() == Mode::Down {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let mut down = rx.clone();
                    tokio::select! {
                        _ = pump(ri, wo, rx.clone()) => {}
                        _ = pump(ro, wi, rx.clone()) => {}
                        _ = down.wait_for(|m| *m == Mode::Down) => {}
                    }
                });
            }
        });
        Ok(FaultProxy { addr, mode, task })
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Copies one direction, delaying each chunk while the mode says so.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = match *mode.borrow() {
            Mode::Slow(d) => Some(d),
            _ => None,
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
