//! Bounded in-memory history of each polled series, for learning (adaptive thresholds,
//! seasonal forecasts).
//!
//! A [`SeriesRing`] keeps one point per minute for a fixed window (e.g. 7 days), the last
//! value seen in each minute, as an `f32` plus one presence bit (a minute without a value is a
//! gap, never a 0).
//!
//! **Size**: one day is 1,440 points: 1,440 × 4 B values + 1,440 bits of presence (180 B) =
//! **5,940 B per series per day** (≈ 5.8 KiB; 7 days ≈ 41 KiB), plus ~64 B of fixed overhead,
//! allocated once at creation and never grown. The collector keeps one ring per *distinct*
//! query, so targets sharing a query share its history.
//!
//! At start the rings of Prometheus queries are backfilled with a range query over the window
//! ([`backfill`]), so that what was learned survives a restart of ebb.

use std::time::Duration;

use crate::source::{Result, Source};

/// Seconds per point.
pub const STEP_SECONDS: i64 = 60;
/// Bytes of one series' history per day (see the module doc).
pub const BYTES_PER_SERIES_PER_DAY: usize = 1440 * 4 + 1440 / 8;

/// A fixed-capacity ring of 1-minute points.
#[derive(Debug, Clone)]
pub struct SeriesRing {
    /// Value of minute `m` at slot `m % capacity`.
    values: Box<[f32]>,
    /// Bit `slot` set when `values[slot]` holds a point.
    present: Box<[u64]>,
    /// The newest minute (Unix minutes) the ring has reached; `None` while empty.
    newest: Option<i64>,
}

impl SeriesRing {
    /// A ring holding `minutes` points (at least 1).
    pub fn new(minutes: usize) -> Self {
        let minutes = minutes.max(1);
        Self {
            values: vec![0.0; minutes].into_boxed_slice(),
            present: vec![0; minutes.div_ceil(64)].into_boxed_slice(),
            newest: None,
        }
    }

    /// A ring covering `window` (rounded up to whole minutes).
    pub fn with_window(window: Duration) -> Self {
        Self::new(window.as_secs().div_ceil(STEP_SECONDS as u64) as usize)
    }

    /// How many minutes the ring spans.
    pub fn capacity(&self) -> usize {
        self.values.len()
    }

    /// Heap bytes held (values and presence bits).
    pub fn heap_bytes(&self) -> usize {
        self.values.len() * std::mem::size_of::<f32>() + self.present.len() * 8
    }

    fn slot(&self, minute: i64) -> usize {
        minute.rem_euclid(self.values.len() as i64) as usize
    }

    fn set_present(&mut self, slot: usize, on: bool) {
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        if on {
            self.present[word] |= bit;
        } else {
            self.present[word] &= !bit;
        }
    }

    fn is_present(&self, slot: usize) -> bool {
        self.present[slot / 64] & (1u64 << (slot % 64)) != 0
    }

    /// Records `value` at `unix_seconds`; the last value pushed within a minute wins. Points
    /// older than the window, and non-finite values, are ignored. Moving forward clears the
    /// minutes skipped over (they become gaps).
    pub fn push(&mut self, unix_seconds: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let minute = unix_seconds.div_euclid(STEP_SECONDS);
        let capacity = self.values.len() as i64;
        match self.newest {
            Some(newest) if minute > newest => {
                // Clear what the ring moves over, at most one full turn.
                let first = (newest + 1).max(minute - capacity + 1);
                for m in first..=minute {
                    let slot = self.slot(m);
                    self.set_present(slot, false);
                }
                self.newest = Some(minute);
            }
            Some(newest) if minute <= newest - capacity => return,
            Some(_) => {}
            None => self.newest = Some(minute),
        }
        let slot = self.slot(minute);
        self.values[slot] = value as f32;
        self.set_present(slot, true);
    }

    /// Records many points (e.g. a backfill); returns how many were within the window.
    pub fn extend(&mut self, points: impl IntoIterator<Item = (i64, f64)>) -> usize {
        let mut kept = 0;
        for (t, v) in points {
            self.push(t, v);
            if self.contains_minute(t.div_euclid(STEP_SECONDS)) {
                kept += 1;
            }
        }
        kept
    }

    fn contains_minute(&self, minute: i64) -> bool {
        self.newest.is_some_and(|newest| {
            minute <= newest
                && minute > newest - self.values.len() as i64
                && self.is_present(self.slot(minute))
        })
    }

    /// The points held, oldest first, as (Unix seconds of the minute's start, value).
    pub fn iter(&self) -> impl Iterator<Item = (i64, f32)> + '_ {
        let capacity = self.values.len() as i64;
        let newest = self.newest.unwrap_or(0);
        let minutes = if self.newest.is_some() { capacity } else { 0 };
        (newest - minutes + 1..=newest).filter_map(move |m| {
            let slot = self.slot(m);
            self.is_present(slot)
                .then(|| (m * STEP_SECONDS, self.values[slot]))
        })
    }

    /// How many points are held.
    pub fn len(&self) -> usize {
        if self.newest.is_none() {
            return 0;
        }
        self.present.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True when no point is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest point.
    pub fn latest(&self) -> Option<(i64, f32)> {
        let newest = self.newest?;
        let slot = self.slot(newest);
        self.is_present(slot)
            .then(|| (newest * STEP_SECONDS, self.values[slot]))
    }
}

/// Fetches the points to backfill a ring spanning `window` that ends at `now` (Unix seconds)
/// from `source`'s own history (a Prometheus range query at 1-minute steps). `Ok(None)` when
/// the source keeps no history (RabbitMQ).
pub async fn backfill(
    source: &dyn Source,
    window: Duration,
    now: i64,
) -> Result<Option<Vec<(i64, f64)>>> {
    backfill_at(
        source,
        window,
        now,
        Duration::from_secs(STEP_SECONDS as u64),
    )
    .await
}

/// [`backfill`] at another `step` (whole seconds, at least 1), e.g. a polling interval: the
/// points of `window` ending at `now` on the grid of multiples of the step, so that two calls
/// at different times see the same points where they overlap.
pub async fn backfill_at(
    source: &dyn Source,
    window: Duration,
    now: i64,
    step: Duration,
) -> Result<Option<Vec<(i64, f64)>>> {
    let step = step.as_secs().max(1) as i64;
    let end = now.div_euclid(step) * step;
    let start = end - (window.as_secs() as i64).max(step) + step;
    match source.history(start, end, Duration::from_secs(step as u64)) {
        Some(fetch) => fetch.await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_per_day_matches_the_doc() {
        let ring = SeriesRing::with_window(Duration::from_secs(86_400));
        assert_eq!(ring.capacity(), 1440);
        assert_eq!(ring.heap_bytes(), BYTES_PER_SERIES_PER_DAY + 4); // 23 words of bits
        assert_eq!(BYTES_PER_SERIES_PER_DAY, 5940);
    }

    #[test]
    fn keeps_the_last_value_per_minute_and_leaves_gaps() {
        let mut ring = SeriesRing::new(10);
        ring.push(600, 1.0);
        ring.push(630, 2.0); // same minute: replaces
        ring.push(720, 3.0); // minute 12; minute 11 is a gap
        assert_eq!(
            ring.iter().collect::<Vec<_>>(),
            vec![(600, 2.0), (720, 3.0)]
        );
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.latest(), Some((720, 3.0)));
        ring.push(700, f64::NAN);
        assert_eq!(ring.len(), 2);
    }

    #[test]
    fn wraps_around_and_drops_what_falls_out_of_the_window() {
        let mut ring = SeriesRing::new(5);
        for m in 0..8 {
            ring.push(m * 60, m as f64);
        }
        let minutes: Vec<i64> = ring.iter().map(|(t, _)| t / 60).collect();
        assert_eq!(minutes, vec![3, 4, 5, 6, 7]);
        // Too old for the window: ignored.
        ring.push(60, 99.0);
        assert_eq!(ring.len(), 5);
        // A jump beyond a full turn clears everything before it.
        ring.push(100 * 60, 1.0);
        assert_eq!(ring.iter().collect::<Vec<_>>(), vec![(6000, 1.0)]);
    }

    #[test]
    fn a_backfill_out_of_order_fills_the_gaps() {
        let mut ring = SeriesRing::new(60);
        ring.push(3600, 10.0);
        let kept = ring.extend((0..60).map(|m| (m * 60, m as f64)));
        // Minutes 0 is out of the window ending at minute 60: 59 kept.
        assert_eq!(kept, 59);
        assert_eq!(ring.len(), 60);
        assert_eq!(ring.iter().next(), Some((60, 1.0)));
    }
}
