//! Per-volume change signals, for WatchVolume and for reads waiting until their volume reaches
//! an LSN. A watcher waits on its own volume's signal, which the apply path raises only when
//! that volume's head changes (a commit, a deletion, a new retention horizon), instead of waking
//! on every entry the group applies. Only volumes with a live watcher have a signal: the map
//! holds at most one entry per watched volume, and a node serves a bounded number of watch
//! streams and of requests at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use folio_core::VolumeId;
use tokio::sync::watch;

type Signals = HashMap<VolumeId, watch::Sender<u64>>;

/// The signals of the volumes that have watchers on this replica.
#[derive(Clone, Default)]
pub struct VolumeSignals(Arc<Mutex<Signals>>);

impl VolumeSignals {
    fn lock(&self) -> MutexGuard<'_, Signals> {
        self.0.lock().expect("no panic holds the signal lock")
    }

    /// A watch on `volume`'s changes from now on.
    pub fn subscribe(&self, volume: VolumeId) -> VolumeWatch {
        let rx = self
            .lock()
            .entry(volume)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        VolumeWatch {
            volume,
            rx,
            signals: self.clone(),
        }
    }

    /// Raises the signal of each of `volumes` that has a watcher. Called once the change is
    /// written, so a woken watcher reads it.
    pub(crate) fn raise<'a>(&self, volumes: impl IntoIterator<Item = &'a VolumeId>) {
        let m = self.lock();
        if m.is_empty() {
            return;
        }
        for v in volumes {
            if let Some(tx) = m.get(v) {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Raises every signal: the whole state changed at once (a snapshot was installed).
    pub(crate) fn raise_all(&self) {
        for tx in self.lock().values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Volumes with a signal (a watcher) now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One watcher's view of its volume's signal. Dropping the last watch of a volume drops the
/// volume's signal.
pub struct VolumeWatch {
    volume: VolumeId,
    rx: watch::Receiver<u64>,
    signals: VolumeSignals,
}

impl VolumeWatch {
    /// Marks every change so far as seen: [`VolumeWatch::changed`] waits for a later one. Call it
    /// before reading the volume's state, so that no change between the read and the wait is
    /// missed.
    pub fn mark_seen(&mut self) {
        self.rx.borrow_and_update();
    }

    /// Waits for a change after the last [`VolumeWatch::mark_seen`].
    pub async fn changed(&mut self) {
        // The sender lives in the map as long as this watch does, so this never fails.
        let _ = self.rx.changed().await;
    }
}

impl Drop for VolumeWatch {
    fn drop(&mut self) {
        let mut m = self.signals.lock();
        // Under the lock no watch of this volume can be made or dropped meanwhile; this one
        // still counts as a receiver.
        if m.get(&self.volume)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            m.remove(&self.volume);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn vol(n: u8) -> VolumeId {
        VolumeId::from_slice(&[n; 16]).expect("16 bytes")
    }

    async fn woken(w: &mut VolumeWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(50), w.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_watcher_wakes_for_its_volume_only() {
        let s = VolumeSignals::default();
        let (mut a, mut b) = (s.subscribe(vol(1)), s.subscribe(vol(2)));
        a.mark_seen();
        b.mark_seen();
        s.raise([&vol(1), &vol(3)]);
        assert!(woken(&mut a).await);
        assert!(!woken(&mut b).await, "another volume's change woke it");
        // A change raised before the next wait is not lost.
        a.mark_seen();
        s.raise([&vol(1)]);
        assert!(woken(&mut a).await);
        s.raise_all();
        assert!(woken(&mut b).await);
    }

    #[tokio::test]
    async fn signals_live_only_while_their_volume_has_watchers() {
        let s = VolumeSignals::default();
        let a = s.subscribe(vol(1));
        let a2 = s.subscribe(vol(1));
        let b = s.subscribe(vol(2));
        assert_eq!(s.len(), 2);
        drop(a);
        assert_eq!(s.len(), 2, "volume 1 still has a watcher");
        drop(a2);
        assert_eq!(s.len(), 1);
        drop(b);
        assert!(s.is_empty());
        // Raising a volume nobody watches keeps nothing.
        s.raise([&vol(9)]);
        assert!(s.is_empty());
    }
}
