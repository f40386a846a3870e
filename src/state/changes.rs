//! The change log: every state event the tracker applies, as a small copyable [`Change`] in a
//! bounded ring that readers (the HTTP stream) follow by sequence number.
//!
//! Appending copies 48 bytes into a ring allocated once, under the aggregates' lock the
//! tracker already holds, so it costs ingestion nothing measurable and never waits for a
//! reader. The ring forgets its oldest change when full; a reader whose next sequence number
//! was forgotten learns it (and by how much) instead of silently skipping.

use std::collections::VecDeque;

use crate::model::event::RunKind;
use crate::model::time::Micros;
use crate::state::names::StateId;
use crate::state::record::RunKey;

/// Changes held for readers that fall behind or resume (`Last-Event-ID`).
pub const HISTORY: usize = 8192;

/// One applied state event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// Its position in the log (0 for the first change since start).
    pub seq: u64,
    /// The run's kind.
    pub kind: RunKind,
    /// The run's key.
    pub key: RunKey,
    /// Whether the run's resource id is the canonical one of `key`.
    pub canonical: bool,
    /// The state left (`None`: a new run).
    pub from: Option<StateId>,
    /// The state entered.
    pub to: StateId,
    /// The event's `occurred`.
    pub occurred: Micros,
    /// Whether the run entered `to` (false: the event is older than the run's state when it
    /// arrived, as Prefect's events are not delivered in `occurred` order; it is counted as an
    /// entry all the same, but the run stayed where it was).
    pub current: bool,
}

/// The bounded ring of changes.
#[derive(Debug)]
pub struct ChangeLog {
    ring: VecDeque<Change>,
    capacity: usize,
    next: u64,
}

/// A reader asked for changes the ring no longer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forgotten {
    /// The oldest sequence number still held (where reading can go on).
    pub oldest: u64,
}

impl ChangeLog {
    /// An empty log holding at most `capacity` changes (allocated at the first append).
    pub fn new(capacity: usize) -> ChangeLog {
        ChangeLog {
            ring: VecDeque::new(),
            capacity: capacity.max(1),
            next: 0,
        }
    }

    /// Appends a change, forgetting the oldest when full.
    pub(super) fn push(&mut self, mut change: Change) {
        if self.ring.capacity() == 0 {
            self.ring.reserve_exact(self.capacity);
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        change.seq = self.next;
        self.next += 1;
        self.ring.push_back(change);
    }

    /// The sequence number the next change will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The oldest sequence number held (equal to [`ChangeLog::next_seq`] when empty).
    pub fn oldest_seq(&self) -> u64 {
        self.next - self.ring.len() as u64
    }

    /// The changes from sequence number `from` on, oldest first; `Err` when some of them
    /// were forgotten.
    pub fn since(&self, from: u64) -> Result<impl Iterator<Item = &Change>, Forgotten> {
        let oldest = self.oldest_seq();
        if from < oldest {
            return Err(Forgotten { oldest });
        }
        let skip = usize::try_from(from - oldest).unwrap_or(usize::MAX);
        Ok(self.ring.iter().skip(skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: RunKey) -> Change {
        Change {
            seq: 0,
            kind: RunKind::FlowRun,
            key,
            canonical: true,
            from: None,
            to: StateId(1),
            occurred: 0,
            current: true,
        }
    }

    #[test]
    fn readers_follow_by_sequence_and_learn_what_was_forgotten() {
        let mut log = ChangeLog::new(3);
        assert_eq!((log.oldest_seq(), log.next_seq()), (0, 0));
        assert_eq!(log.since(0).unwrap().count(), 0);
        for key in 0..5 {
            log.push(change(key));
        }
        assert_eq!((log.oldest_seq(), log.next_seq()), (2, 5));
        let keys: Vec<(u64, RunKey)> = log.since(3).unwrap().map(|c| (c.seq, c.key)).collect();
        assert_eq!(keys, vec![(3, 3), (4, 4)]);
        assert_eq!(log.since(5).unwrap().count(), 0);
        assert_eq!(log.since(1).err(), Some(Forgotten { oldest: 2 }));
    }

    #[test]
    fn a_change_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Change>(), 48);
    }
}
