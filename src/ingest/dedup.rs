//! The window of remembered event ids: is this event new?
//!
//! Ids are kept while their `occurred` is within the window of the newest `occurred` seen
//! (event time, not wall time, so a replay of old recordings behaves like the live stream),
//! up to a hard capacity; the oldest go first. The ids themselves are in an [`IdSet`]
//! (16 bytes an id); the eviction order is a [`Buckets`] of their slot numbers (4 bytes an
//! id), one `Vec` per second of `occurred`.

use std::collections::BTreeMap;

use crate::ingest::buckets::Buckets;
pub use crate::ingest::buckets::IdBuckets;
use crate::ingest::id_table::{IdSet, Inserted};
use crate::model::event::EventId;
use crate::model::time::Micros;

/// The dedup window.
#[derive(Debug)]
pub struct Dedup {
    ids: IdSet,
    buckets: Buckets<u32>,
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
            ids: IdSet::new(capacity),
            buckets: Buckets::new(window, capacity),
        }
    }

    /// A window holding the ids of `saved` (restored from a state file), with its limits.
    pub fn from_buckets(saved: IdBuckets) -> Dedup {
        let mut dedup = Dedup::new(saved.window(), saved.capacity());
        let mut by_second: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        for (second, bucket) in saved.iter() {
            for &id in bucket {
                let slot = loop {
                    match dedup.ids.insert(id) {
                        Inserted::New(slot) => break Some(slot),
                        Inserted::Present => break None,
                        Inserted::Full(part) => {
                            dedup.ids.rebuild(part, by_second.values_mut().flatten())
                        }
                    }
                };
                by_second.entry(second).or_default().extend(slot);
            }
        }
        dedup.buckets = Buckets::from_parts(
            saved.window(),
            saved.capacity(),
            saved.newest(),
            saved.evicted_by_capacity(),
            by_second,
        );
        dedup
    }

    /// Remembers `id` (occurred at `occurred`) and says whether it was new.
    pub fn check_and_insert(&mut self, id: EventId, occurred: Micros) -> Seen {
        let slot = loop {
            match self.ids.insert(id.0) {
                Inserted::New(slot) => break slot,
                Inserted::Present => return Seen::Duplicate,
                Inserted::Full(part) => self.ids.rebuild(part, self.buckets.items_mut()),
            }
        };
        let ids = &mut self.ids;
        self.buckets.push(slot, occurred, |old| ids.remove(old));
        Seen::New
    }

    /// Whether `id` is in the window (without inserting it).
    pub fn contains(&self, id: EventId) -> bool {
        self.ids.find(id.0).is_some()
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
        self.buckets.evicted_by_capacity()
    }

    /// The newest `occurred` seen.
    pub fn newest(&self) -> Option<Micros> {
        self.buckets.newest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::time::SECOND;

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

    /// The window as it was before the id table: a set of ids and the same buckets of ids.
    struct Model {
        ids: std::collections::HashSet<u128>,
        buckets: IdBuckets,
    }

    impl Model {
        fn check_and_insert(&mut self, id: u128, occurred: Micros) -> Seen {
            if !self.ids.insert(id) {
                return Seen::Duplicate;
            }
            let ids = &mut self.ids;
            self.buckets.push(id, occurred, |old| {
                ids.remove(&old);
            });
            Seen::New
        }
    }

    #[test]
    fn the_id_table_remembers_exactly_what_a_set_would_through_rebuilds_and_evictions() {
        let (window, capacity) = (20 * SECOND, 3_000);
        let mut dedup = Dedup::new(window, capacity);
        let mut model = Model {
            ids: Default::default(),
            buckets: IdBuckets::new(window, capacity),
        };
        // A deterministic stream: ids repeat (duplicates), include 0 and 1, and occurred
        // jumps around (late events), so both eviction paths and rebuilds happen.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for step in 0..60_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = match x % 50 {
                0 => 0,
                1 => 1,
                r => u128::from(x % 9_000) << (r % 3 * 40),
            };
            let occurred = (step as i64 / 40) * SECOND / 10 - (x % 7) as i64 * SECOND;
            assert_eq!(
                dedup.check_and_insert(EventId(id), occurred),
                model.check_and_insert(id, occurred),
                "step {step}"
            );
            assert_eq!(dedup.len(), model.ids.len(), "step {step}");
        }
        for &id in &model.ids {
            assert!(dedup.contains(EventId(id)));
        }
        assert_eq!(
            dedup.evicted_by_capacity(),
            model.buckets.evicted_by_capacity()
        );
        assert!(dedup.evicted_by_capacity() > 0, "the capacity was reached");
    }
}
