//! Status conditions: set by type, keeping `lastTransitionTime` while the status stays.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::crd::ScaledTargetStatus;

/// A condition with the current time as its transition time (kept by [`Conditions::set`] when
/// the status did not change).
pub fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Time(Timestamp::now()),
        observed_generation: None,
    }
}

/// The conditions being written, seeded from the current status.
pub struct Conditions {
    old: Vec<Condition>,
    new: Vec<Condition>,
}

impl Conditions {
    /// Starts from the object's current conditions.
    pub fn from_status(status: Option<&ScaledTargetStatus>) -> Self {
        let old = status.map(|s| s.conditions.clone()).unwrap_or_default();
        Self {
            new: old.clone(),
            old,
        }
    }

    /// Sets a condition by type.
    pub fn set(&mut self, mut c: Condition) {
        if let Some(prev) = self.old.iter().find(|o| o.type_ == c.type_)
            && prev.status == c.status
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
        match self.new.iter_mut().find(|o| o.type_ == c.type_) {
            Some(slot) => *slot = c,
            None => self.new.push(c),
        }
    }

    /// The conditions to write.
    pub fn into_vec(self) -> Vec<Condition> {
        self.new
    }
}

/// How long a status with only fresher metric timestamps may go unwritten. Any change is
/// written at once; this only refreshes the timestamps of values that did not move. At 5,000
/// targets a refresh a minute alone would be 83 writes per second; every 5 minutes it is 17.
const REFRESH: Duration = Duration::from_secs(300);

/// Whether `new` says something `old` does not (metric timestamps aside), or `old` is stale.
pub fn worth_writing(old: Option<&ScaledTargetStatus>, new: &ScaledTargetStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &ScaledTargetStatus| {
        let mut s = s.clone();
        for m in &mut s.metrics {
            m.timestamp = None;
        }
        s
    };
    if strip(old) != strip(new) {
        return true;
    }
    let oldest = old
        .metrics
        .iter()
        .filter_map(|m| m.timestamp.as_ref())
        .map(|t| t.0)
        .min();
    oldest.is_none_or(|t| Timestamp::now().duration_since(t).unsigned_abs() >= REFRESH)
}
