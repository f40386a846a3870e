//! The window of remembered event ids: is this event new?
//!
//! Ids are kept while their `occurred` is within the window of the newest `occurred` seen
//! (event time, not wall time, so a replay of old recordings behaves like the live stream),
//! up to a hard capacity; the oldest go first. Ids are 128-bit integers in a hash set, and the
//! eviction order is kept in one `Vec` of ids per second of `occurred`.

use std::collections::{BTreeMap, HashSet};

use crate::event::EventId;
use crate::timestamp::{Micros, SECOND};

/// Hasher for id sets: fast and randomly seeded, so crafted ids cannot force collisions.
pub type IdHasher = foldhash::fast::RandomState;

/// The dedup window.
#[derive(Debug)]
pub struct Dedup {
    ids: HashSet<u128, IdHasher>,
    by_second: BTreeMap<i64, Vec<u128>>,
    window: Micros,
    capacity: usize,
    newest: Option<Micros>,
    evicted_by_capacity: u64,
}

/// What [`Dedup::check_and_insert`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// First time: the id is now remembered.
    New,
    /// Already in the window.
    Duplicate,
}

impl Dedup {
    /// An empty window of `window` event-time micros holding at most `capacity` ids.
    pub fn new(window: Micros, capacity: usize) -> Dedup {
        Dedup {
            ids: HashSet::with_hasher(IdHasher::default()),
            by_second: BTreeMap::new(),
            window,
            capacity: capacity.max(1),
            newest: None,
            evicted_by_capacity: 0,
        }
    }

    /// Remembers `id` (occurred at `occurred`) and says whether it was new.
    pub fn check_and_insert(&mut self, id: EventId, occurred: Micros) -> Seen {
        if !self.ids.insert(id.0) {
            return Seen::Duplicate;
        }
        self.by_second
            .entry(occurred.div_euclid(SECOND))
            .or_default()
            .push(id.0);
        if self.newest.is_none_or(|n| occurred > n) {
            self.newest = Some(occurred);
            self.evict_expired();
        }
        if self.ids.len() > self.capacity {
            self.evict_oldest(self.ids.len() - self.capacity);
        }
        Seen::New
    }

    /// Whether `id` is in the window (without inserting it).
    pub fn contains(&self, id: EventId) -> bool {
        self.ids.contains(&id.0)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Ids dropped because the window was full (not because they aged out).
    pub fn evicted_by_capacity(&self) -> u64 {
        self.evicted_by_capacity
    }

    /// The newest `occurred` seen.
    pub fn newest(&self) -> Option<Micros> {
        self.newest
    }

    fn evict_expired(&mut self) {
        let Some(newest) = self.newest else { return };
        let cutoff_second = (newest - self.window).div_euclid(SECOND);
        while let Some(entry) = self.by_second.first_entry() {
            if *entry.key() >= cutoff_second {
                break;
            }
            for id in entry.remove() {
                self.ids.remove(&id);
            }
        }
    }

    fn evict_oldest(&mut self, mut count: usize) {
        while count > 0 {
            let Some(mut entry) = self.by_second.first_entry() else {
                return;
            };
            let bucket = entry.get_mut();
            while count > 0 {
                let Some(id) = bucket.pop() else { break };
                self.ids.remove(&id);
                self.evicted_by_capacity += 1;
                count -= 1;
            }
            if bucket.is_empty() {
                entry.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Micros = 60 * SECOND;

    #[test]
    fn second_sight_is_a_duplicate() {
        let mut d = Dedup::new(30 * MINUTE, 100);
        assert_eq!(d.check_and_insert(EventId(1), 0), Seen::New);
        assert_eq!(d.check_and_insert(EventId(1), 0), Seen::Duplicate);
        assert_eq!(d.check_and_insert(EventId(1), 5 * MINUTE), Seen::Duplicate);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn ids_age_out_by_event_time() {
        let mut d = Dedup::new(30 * MINUTE, 100);
        d.check_and_insert(EventId(1), 0);
        d.check_and_insert(EventId(2), 29 * MINUTE);
        assert!(
            d.contains(EventId(1)),
            "still within 30 minutes of the newest"
        );
        d.check_and_insert(EventId(3), 31 * MINUTE);
        assert!(!d.contains(EventId(1)), "older than the window");
        assert!(d.contains(EventId(2)));
        assert_eq!(d.len(), 2);
        assert_eq!(d.evicted_by_capacity(), 0);
    }

    #[test]
    fn late_arrivals_do_not_move_the_window_back() {
        let mut d = Dedup::new(30 * MINUTE, 100);
        d.check_and_insert(EventId(1), 40 * MINUTE);
        d.check_and_insert(EventId(2), 20 * MINUTE);
        assert_eq!(d.newest(), Some(40 * MINUTE));
        assert!(d.contains(EventId(2)));
    }

    #[test]
    fn capacity_evicts_oldest_first_and_counts() {
        let mut d = Dedup::new(30 * MINUTE, 3);
        for (i, t) in [(1, 0), (2, SECOND), (3, 2 * SECOND), (4, 3 * SECOND)] {
            d.check_and_insert(EventId(i), t);
        }
        assert_eq!(d.len(), 3);
        assert!(!d.contains(EventId(1)));
        assert!(d.contains(EventId(4)));
        assert_eq!(d.evicted_by_capacity(), 1);
    }
}
