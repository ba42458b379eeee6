//! When a replica may serve the external metrics API (`/readyz`): once its ScaledTarget watch
//! has listed in full and every ScaledTarget it knows has had its first reading (a value, or a
//! definite failure: no data, an unreachable source, a source that did not answer within the
//! reader's first-read wait). Before that the HPA would read a half-filled store and get
//! "metric not found" for the targets not yet read.
//!
//! The controller feeds it: the watch's initial list ([`Readiness::list_started`],
//! [`Readiness::listed`], [`Readiness::list_done`]), targets that appear or go while it is not yet
//! ready ([`Readiness::seen`], [`Readiness::gone`]), and every published reading
//! ([`Readiness::read`]). Ready is latched: a target created later is read within its first poll
//! and does not take every replica out of the Service at once.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness of the external metrics API. Targets are keyed `namespace/name`.
#[derive(Debug, Default)]
pub struct Readiness {
    ready: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The targets of the list in progress (between the watch's Init and InitDone).
    listing: Option<HashSet<String>>,
    /// Whether an initial list has completed.
    listed: bool,
    /// Known targets not read yet (meaningful once `listed`).
    waiting: HashSet<String>,
    /// Targets read so far (polls start while the list is still coming in).
    read: HashSet<String>,
}

/// Where readiness stands, for `/readyz`'s body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    /// The ScaledTarget watch has listed in full.
    pub listed: bool,
    /// Known targets without a first reading (0 before the list completes).
    pub waiting: usize,
    /// Targets read at least once.
    pub read: usize,
}

impl Readiness {
    /// Ready at once: for an API without a controller behind it (tests, benches).
    pub fn ready() -> Self {
        let r = Self::default();
        r.ready.store(true, Ordering::Release);
        r
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Runs `f` on the state unless already ready, then latches ready if it now is.
    fn update(&self, f: impl FnOnce(&mut State)) {
        if self.is_ready() {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        if s.listed && s.waiting.is_empty() {
            self.ready.store(true, Ordering::Release);
            // Nothing is consulted once ready.
            *s = State::default();
        }
    }

    /// The watch starts a (re)list.
    pub fn list_started(&self) {
        self.update(|s| s.listing = Some(HashSet::new()));
    }

    /// A target of the list in progress.
    pub fn listed(&self, key: &str) {
        self.update(|s| {
            if let Some(l) = s.listing.as_mut() {
                l.insert(key.to_string());
            }
        });
    }

    /// The list is complete: every target in it must be read before the replica is ready.
    pub fn list_done(&self) {
        self.update(|s| {
            let listing = s.listing.take().unwrap_or_default();
            s.waiting = listing
                .into_iter()
                .filter(|k| !s.read.contains(k))
                .collect();
            s.listed = true;
        });
    }

    /// A target created or changed after the list (while not ready): it must be read too.
    pub fn seen(&self, key: &str) {
        self.update(|s| {
            if s.listed && !s.read.contains(key) {
                s.waiting.insert(key.to_string());
            }
        });
    }

    /// A target deleted (or being deleted): nothing will be served for it.
    pub fn gone(&self, key: &str) {
        self.update(|s| {
            s.waiting.remove(key);
            if let Some(l) = s.listing.as_mut() {
                l.remove(key);
            }
        });
    }

    /// A target's reading was published (a value or a failure).
    pub fn read(&self, key: &str) {
        self.update(|s| {
            s.waiting.remove(key);
            s.read.insert(key.to_string());
        });
    }

    /// Where readiness stands.
    pub fn report(&self) -> ReadinessReport {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.is_ready();
        ReadinessReport {
            listed: ready || s.listed,
            waiting: s.waiting.len(),
            read: s.read.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_the_list_and_a_reading_of_every_listed_target() {
        let r = Readiness::default();
        r.list_started();
        r.listed("ns/a");
        r.read("ns/a"); // polls start while the list still comes in
        r.listed("ns/b");
        r.listed("ns/c");
        assert!(!r.is_ready(), "the list is not complete");
        r.list_done();
        assert!(!r.is_ready());
        assert_eq!(
            r.report(),
            ReadinessReport {
                listed: true,
                waiting: 2,
                read: 1
            }
        );
        r.read("ns/b");
        assert!(!r.is_ready(), "ns/c has not been read");
        r.read("ns/c");
        assert!(r.is_ready());
        // Latched: a target created later does not take the replica out of the Service.
        r.seen("ns/d");
        assert!(r.is_ready());
    }

    #[test]
    fn an_empty_list_is_ready_at_once_and_reads_before_the_list_do_not_count() {
        let r = Readiness::default();
        r.read("ns/a");
        assert!(!r.is_ready(), "no list yet");
        r.list_started();
        r.list_done();
        assert!(r.is_ready());
    }

    #[test]
    fn targets_appearing_or_going_before_ready_and_a_relist() {
        let r = Readiness::default();
        r.list_started();
        r.listed("ns/a");
        r.listed("ns/b");
        // The watch fails and lists again: b is gone meanwhile, c is new.
        r.list_started();
        r.listed("ns/a");
        r.listed("ns/c");
        r.list_done();
        r.read("ns/a");
        r.seen("ns/d");
        r.seen("ns/a"); // a status write of a target already read
        r.read("ns/c");
        assert!(!r.is_ready(), "ns/d appeared before ready");
        assert_eq!(r.report().waiting, 1);
        r.gone("ns/d");
        assert!(r.is_ready(), "a deleted target is not waited for");
    }
}
