//! Entries into states per minute, by state type and kind, for the newest hour of events:
//! the history behind `/api/v1/history` and the live page's sparkline.
//!
//! Minutes are those of the events' `occurred` (so a replay shows the recording's shape), in
//! a ring of [`MINUTES`] fixed-size rows allocated once: counting an entry is a comparison and
//! an increment. An entry older than the oldest minute held is not kept.

use std::collections::VecDeque;

use crate::model::event::{RunKind, StateType};
use crate::model::time::Micros;

/// Minutes held.
pub const MINUTES: usize = 60;

const MINUTE: Micros = 60_000_000;

/// Entries of one minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Minute {
    /// When it starts.
    pub start: Micros,
    /// Entries by [`RunKind::index`], then [`StateType::index`].
    pub entries: [[u64; 9]; 2],
}

/// The ring of minutes, oldest first, without gaps.
#[derive(Clone, Debug, Default)]
pub struct MinuteHistory {
    minutes: VecDeque<Minute>,
}

impl MinuteHistory {
    /// Counts an entry of a run of `kind` into a state of type `ty`, which occurred at `at`.
    pub(super) fn count(&mut self, kind: RunKind, ty: StateType, at: Micros) {
        let start = at.div_euclid(MINUTE) * MINUTE;
        let newest = self.minutes.back().map(|m| m.start);
        if newest.is_none_or(|n| start > n) {
            self.advance(start);
        }
        let Some(oldest) = self.minutes.front().map(|m| m.start) else {
            return;
        };
        if start < oldest {
            return;
        }
        let index = usize::try_from((start - oldest) / MINUTE).unwrap_or(usize::MAX);
        if let Some(minute) = self.minutes.get_mut(index) {
            minute.entries[kind.index()][ty.index()] += 1;
        }
    }

    /// Makes `start` the newest minute, adding the empty minutes in between.
    fn advance(&mut self, start: Micros) {
        if self.minutes.capacity() == 0 {
            self.minutes.reserve_exact(MINUTES);
        }
        let mut next = match self.minutes.back() {
            Some(newest) if start - newest.start < MINUTE * MINUTES as Micros => {
                newest.start + MINUTE
            }
            _ => {
                self.minutes.clear();
                start
            }
        };
        while next <= start {
            if self.minutes.len() == MINUTES {
                self.minutes.pop_front();
            }
            self.minutes.push_back(Minute {
                start: next,
                entries: [[0; 9]; 2],
            });
            next += MINUTE;
        }
    }

    /// The minutes held, oldest first.
    pub fn minutes(&self) -> impl Iterator<Item = &Minute> {
        self.minutes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_fill_gaps_drop_the_oldest_and_ignore_entries_before_them() {
        let mut history = MinuteHistory::default();
        let flow = RunKind::FlowRun;
        history.count(flow, StateType::Completed, 10 * MINUTE + 5);
        history.count(flow, StateType::Completed, 10 * MINUTE + 59_999_999);
        history.count(flow, StateType::Failed, 12 * MINUTE);
        let rows: Vec<(Micros, u64, u64)> = history
            .minutes()
            .map(|m| {
                (
                    m.start / MINUTE,
                    m.entries[0][StateType::Completed.index()],
                    m.entries[0][StateType::Failed.index()],
                )
            })
            .collect();
        assert_eq!(rows, vec![(10, 2, 0), (11, 0, 0), (12, 0, 1)]);
        history.count(flow, StateType::Running, 70 * MINUTE);
        assert_eq!(history.minutes().count(), MINUTES);
        assert_eq!(history.minutes().next().unwrap().start, 11 * MINUTE);
        history.count(flow, StateType::Running, 10 * MINUTE);
        let total: u64 = history
            .minutes()
            .map(|m| m.entries[0].iter().sum::<u64>())
            .sum();
        assert_eq!(total, 2, "an entry older than the hour held is not kept");
        history.count(flow, StateType::Running, 500 * MINUTE);
        assert_eq!(
            history.minutes().count(),
            1,
            "a jump past the hour starts over"
        );
    }
}
