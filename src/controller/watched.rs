//! An index kept from a watch, usable once the first list is complete: what the replica counts
//! (`replicas.rs`) and the HPAs (`hpa_index.rs`) share.
//!
//! After every (re)start of the watch the objects are listed again into a fresh index, which
//! replaces the old one whole when the list is complete, so that objects deleted while the watch
//! was down do not linger. While the watch is down, [`Watched::read`] answers `None` and callers
//! ask the API server instead (which sees what the watch would miss).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::watcher;

/// What an index keeps of the watched objects.
pub trait Index<K> {
    /// An object was added or changed.
    fn apply(&mut self, obj: K);
    /// An object was deleted.
    fn delete(&mut self, obj: &K);
}

/// An index and whether it is complete.
pub struct Watched<I> {
    index: RwLock<I>,
    synced: AtomicBool,
}

impl<I> Watched<I> {
    /// An index not yet complete.
    pub fn new(index: I) -> Self {
        Self {
            index: RwLock::new(index),
            synced: AtomicBool::new(false),
        }
    }

    /// The index, while it is complete and the watch runs.
    pub fn read(&self) -> Option<RwLockReadGuard<'_, I>> {
        self.synced
            .load(Ordering::Acquire)
            .then(|| self.index.read().expect("index"))
    }

    /// The index, to record what the watch will also bring (a write's own answer).
    pub fn write(&self) -> RwLockWriteGuard<'_, I> {
        self.index.write().expect("index")
    }

    /// Keeps the index up to date from `events` until they end, or until an error that
    /// `refused` says will not pass by retrying (then the index stays unusable). Each
    /// relist starts from `empty()`.
    pub async fn follow<K>(
        &self,
        events: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
        empty: impl Fn() -> I,
        refused: impl Fn(&watcher::Error) -> bool,
        what: &str,
    ) where
        I: Index<K>,
    {
        let mut events = std::pin::pin!(events);
        let mut listing: Option<I> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => listing = Some(empty()),
                Ok(watcher::Event::InitApply(obj)) => {
                    if let Some(l) = listing.as_mut() {
                        l.apply(obj);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(l) = listing.take() {
                        *self.write() = l;
                    }
                    self.synced.store(true, Ordering::Release);
                }
                Ok(watcher::Event::Apply(obj)) => self.write().apply(obj),
                Ok(watcher::Event::Delete(obj)) => self.write().delete(&obj),
                Err(e) => {
                    self.synced.store(false, Ordering::Release);
                    if refused(&e) {
                        tracing::info!(%what, error = %e, "cannot watch: reading from the API server instead");
                        return;
                    }
                    tracing::debug!(%what, error = %e, "watch interrupted; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
