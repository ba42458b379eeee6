//! Status conditions: set by type, keeping `lastTransitionTime` while the status stays.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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
