//! The small per-run collections, kept inline in the record: the last few transitions, in
//! order, and the per-transition counts. Each holds its common size inline and moves to the
//! heap only when a run outgrows it, so a typical run allocates nothing for them.

use crate::model::event::EventId;
use crate::model::time::Micros;
use crate::state::names::StateId;

/// How many of a run's transitions its record keeps, newest last.
pub const RECENT_TRANSITIONS: usize = 5;

/// Transitions kept inline before moving to the heap: four covers a deployment's run
/// (Scheduled, Pending, Running, a final state). With three, such a run spilled 64 bytes to
/// the heap, and its counts as many: 379 B per run against 287 B with four, measured by
/// `bench-e2e.sh --only memory` (runs-only peak RSS at 200,000 and 1,000,000 runs).
const RECENT_INLINE: usize = 4;

/// Distinct transitions counted inline before moving to the heap (four, as above).
const COUNTS_INLINE: usize = 4;

/// `StateId` of "no state" (the `from` of a new run).
const NO_STATE: u16 = u16::MAX;

fn pack(state: Option<StateId>) -> u16 {
    state.map_or(NO_STATE, |s| s.0)
}

fn unpack(raw: u16) -> Option<StateId> {
    (raw != NO_STATE).then_some(StateId(raw))
}

/// One of a run's last transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentTransition {
    /// The state left, `None` for a new run.
    pub from: Option<StateId>,
    /// The state entered.
    pub to: StateId,
    /// The state timestamp of the event.
    pub at: Micros,
    /// The event.
    pub event: EventId,
}

impl RecentTransition {
    /// The ordering of transitions in a run: by state timestamp, then event id.
    pub fn order(&self) -> (Micros, EventId) {
        (self.at, self.event)
    }
}

/// A [`RecentTransition`] in 28 bytes aligned to 4 (times and ids as 32-bit words).
#[derive(Clone, Copy, Debug, Default)]
struct Packed {
    from: u16,
    to: u16,
    at: [u32; 2],
    event: [u32; 4],
}

impl From<RecentTransition> for Packed {
    fn from(t: RecentTransition) -> Packed {
        let at = t.at as u64;
        let e = t.event.0;
        Packed {
            from: pack(t.from),
            to: t.to.0,
            at: [at as u32, (at >> 32) as u32],
            event: [
                e as u32,
                (e >> 32) as u32,
                (e >> 64) as u32,
                (e >> 96) as u32,
            ],
        }
    }
}

impl From<Packed> for RecentTransition {
    fn from(p: Packed) -> RecentTransition {
        let at = u64::from(p.at[0]) | (u64::from(p.at[1]) << 32);
        let e = p.event;
        let event = u128::from(e[0])
            | (u128::from(e[1]) << 32)
            | (u128::from(e[2]) << 64)
            | (u128::from(e[3]) << 96);
        RecentTransition {
            from: unpack(p.from),
            to: StateId(p.to),
            at: at as Micros,
            event: EventId(event),
        }
    }
}

/// Transitions kept beyond the inline ones, on the heap.
const RECENT_SPILL: usize = RECENT_TRANSITIONS - RECENT_INLINE;

/// A run's history as its record keeps it: the last [`RECENT_TRANSITIONS`] transitions,
/// oldest first, and the per-transition counts in the order each was first seen. The common
/// sizes are inline; a run with more moves the rest to the heap.
#[derive(Clone, Debug, Default)]
pub struct History {
    recent: [Packed; RECENT_INLINE],
    counts: [PackedCount; COUNTS_INLINE],
    recent_spill: Option<Box<[Packed; RECENT_SPILL]>>,
    #[allow(
        clippy::box_collection,
        reason = "8 bytes in every record instead of 24: most runs never spill"
    )]
    counts_spill: Option<Box<Vec<PackedCount>>>,
    recent_len: u8,
    counts_len: u8,
}

impl History {
    /// How many transitions are kept.
    pub fn recent_len(&self) -> usize {
        usize::from(self.recent_len)
    }

    fn slot(&self, i: usize) -> Packed {
        match i.checked_sub(RECENT_INLINE) {
            None => self.recent[i],
            Some(j) => self
                .recent_spill
                .as_ref()
                .map_or_else(Packed::default, |s| s[j]),
        }
    }

    /// The last transitions, oldest first.
    pub fn recent(&self) -> impl Iterator<Item = RecentTransition> + '_ {
        (0..self.recent_len()).map(|i| self.slot(i).into())
    }

    /// The newest transition.
    pub fn last(&self) -> Option<RecentTransition> {
        self.recent_len()
            .checked_sub(1)
            .map(|i| self.slot(i).into())
    }

    /// Keeps `transition` in order of ([`RecentTransition::order`]); when full, the oldest
    /// goes, and a transition older than all of a full ring is not kept.
    pub fn remember(&mut self, transition: RecentTransition) {
        let order = transition.order();
        let len = self.recent_len();
        let position = (0..len)
            .rposition(|i| RecentTransition::from(self.slot(i)).order() <= order)
            .map_or(0, |p| p + 1);
        if position == 0 && len >= RECENT_TRANSITIONS {
            return;
        }
        let mut all = [Packed::default(); RECENT_TRANSITIONS + 1];
        for (i, slot) in all.iter_mut().enumerate().take(len) {
            *slot = self.slot(i);
        }
        all.copy_within(position..len, position + 1);
        all[position] = transition.into();
        let kept = &all[..len + 1];
        self.store(&kept[kept.len().saturating_sub(RECENT_TRANSITIONS)..]);
    }

    /// Replaces the transitions (oldest first, at most [`RECENT_TRANSITIONS`]).
    pub fn set_recent(&mut self, transitions: impl IntoIterator<Item = RecentTransition>) {
        let mut all = [Packed::default(); RECENT_TRANSITIONS];
        let mut len = 0;
        for t in transitions.into_iter().take(RECENT_TRANSITIONS) {
            all[len] = t.into();
            len += 1;
        }
        self.store(&all[..len]);
    }

    fn store(&mut self, kept: &[Packed]) {
        self.recent_len = kept.len() as u8;
        let inline = kept.len().min(RECENT_INLINE);
        self.recent[..inline].copy_from_slice(&kept[..inline]);
        if kept.len() > RECENT_INLINE {
            let spill = self
                .recent_spill
                .get_or_insert_with(|| Box::new([Packed::default(); RECENT_SPILL]));
            spill[..kept.len() - RECENT_INLINE].copy_from_slice(&kept[RECENT_INLINE..]);
        }
    }

    /// The counts, in the order each transition was first seen.
    pub fn counts(&self) -> impl Iterator<Item = TransitionCount> + '_ {
        self.counts[..usize::from(self.counts_len)]
            .iter()
            .chain(self.counts_spill.iter().flat_map(|s| s.iter()))
            .map(|p| TransitionCount {
                from: unpack(p.from),
                to: StateId(p.to),
                count: p.count,
            })
    }

    /// Counts one more event carrying `from` -> `to`.
    pub fn count(&mut self, from: Option<StateId>, to: StateId) {
        self.add_count(from, to, 1);
    }

    /// Adds `count` events carrying `from` -> `to` (restoring a state file).
    pub fn add_count(&mut self, from: Option<StateId>, to: StateId, count: u32) {
        let (from, to) = (pack(from), to.0);
        let len = usize::from(self.counts_len);
        let held = self.counts[..len]
            .iter_mut()
            .chain(self.counts_spill.iter_mut().flat_map(|s| s.iter_mut()))
            .find(|p| p.from == from && p.to == to);
        match held {
            Some(p) => p.count = p.count.saturating_add(count),
            None if len < COUNTS_INLINE => {
                self.counts[len] = PackedCount { from, to, count };
                self.counts_len += 1;
            }
            None => self
                .counts_spill
                .get_or_insert_with(Default::default)
                .push(PackedCount { from, to, count }),
        }
    }
}

/// How often a run made one transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransitionCount {
    /// The state left, `None` for a new run.
    pub from: Option<StateId>,
    /// The state entered.
    pub to: StateId,
    /// Events carrying this transition.
    pub count: u32,
}

#[derive(Clone, Copy, Debug, Default)]
struct PackedCount {
    from: u16,
    to: u16,
    count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(at: Micros, event: u128) -> RecentTransition {
        RecentTransition {
            from: None,
            to: StateId(1),
            at,
            event: EventId(event),
        }
    }

    #[test]
    fn recent_keeps_the_newest_five_in_order() {
        let mut r = History::default();
        for (at, id) in [(5, 1), (1, 2), (3, 3), (9, 4), (7, 5), (2, 6)] {
            r.remember(t(at, id));
        }
        let ats: Vec<Micros> = r.recent().map(|t| t.at).collect();
        assert_eq!(ats, vec![2, 3, 5, 7, 9], "the oldest (1) went");
        r.remember(t(0, 7));
        assert_eq!(r.recent_len(), 5, "older than all of a full ring: not kept");
        assert_eq!(r.last().unwrap().event, EventId(4));
        r.remember(t(8, 8));
        let ats: Vec<Micros> = r.recent().map(|t| t.at).collect();
        assert_eq!(ats, vec![3, 5, 7, 8, 9]);
        let mut small = History::default();
        small.remember(t(-1, u128::MAX));
        assert_eq!(
            small.last(),
            Some(t(-1, u128::MAX)),
            "round trip of extreme values"
        );
    }

    #[test]
    fn counts_keep_first_seen_order_and_spill_past_the_inline_ones() {
        let mut c = History::default();
        for to in [3, 1, 3, 4, 5, 6, 1] {
            c.count(Some(StateId(0)), StateId(to));
        }
        c.count(None, StateId(1));
        let seen: Vec<(u16, u32)> = c.counts().map(|t| (t.to.0, t.count)).collect();
        assert_eq!(seen, vec![(3, 2), (1, 2), (4, 1), (5, 1), (6, 1), (1, 1)]);
    }
}
