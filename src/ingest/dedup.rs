//! The window of remembered event ids: is this event new?
//!
//! Ids are kept while their `occurred` is within the window of the newest `occurred` seen
//! (event time, not wall time, so a replay of old recordings behaves like the live stream),
//! up to a hard capacity; the oldest go first. Ids are 128-bit integers in a hash set, and the
//! eviction order is kept in [`IdBuckets`]: one `Vec` of ids per second of `occurred`.
//! [`IdBuckets`] alone (without the set) is what the state file keeps and replays.

use std::collections::{BTreeMap, HashSet};

use crate::model::event::EventId;
use crate::model::time::{Micros, SECOND};

/// Hasher for id sets: fast and randomly seeded, so crafted ids cannot force collisions.
pub type IdHasher = foldhash::fast::RandomState;

/// The dedup window.
#[derive(Debug)]
pub struct Dedup {
    ids: HashSet<u128, IdHasher>,
    buckets: IdBuckets,
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
        Dedup::from_buckets(IdBuckets::new(window, capacity))
    }

    /// A window holding the ids of `buckets` (restored from a state file).
    pub fn from_buckets(buckets: IdBuckets) -> Dedup {
        let mut ids = HashSet::with_capacity_and_hasher(buckets.len(), IdHasher::default());
        for (_, bucket) in buckets.iter() {
            ids.extend(bucket.iter().copied());
        }
        Dedup { ids, buckets }
    }

    /// Remembers `id` (occurred at `occurred`) and says whether it was new.
    pub fn check_and_insert(&mut self, id: EventId, occurred: Micros) -> Seen {
        if !self.ids.insert(id.0) {
            return Seen::Duplicate;
        }
        let ids = &mut self.ids;
        self.buckets.push(id.0, occurred, |old| {
            ids.remove(&old);
        });
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
        self.buckets.evicted_by_capacity
    }

    /// The newest `occurred` seen.
    pub fn newest(&self) -> Option<Micros> {
        self.buckets.newest
    }
}

/// The ids of a window in eviction order: per second of `occurred`, in insertion order.
///
/// Pushing the same ids in the same order into two `IdBuckets` leaves both identical, which
/// lets the state-file writer keep a copy of the window from the ids the pipeline admitted.
#[derive(Clone, Debug)]
pub struct IdBuckets {
    by_second: BTreeMap<i64, Vec<u128>>,
    len: usize,
    window: Micros,
    capacity: usize,
    newest: Option<Micros>,
    evicted_by_capacity: u64,
}

impl IdBuckets {
    /// No ids, for a window of `window` event-time micros and at most `capacity` ids.
    pub fn new(window: Micros, capacity: usize) -> IdBuckets {
        IdBuckets {
            by_second: BTreeMap::new(),
            len: 0,
            window,
            capacity: capacity.max(1),
            newest: None,
            evicted_by_capacity: 0,
        }
    }

    /// Rebuilds a window from its parts (a state file), then applies this window's own
    /// limits, in case they are smaller than the ones it was saved with.
    pub fn from_parts(
        window: Micros,
        capacity: usize,
        newest: Option<Micros>,
        evicted_by_capacity: u64,
        by_second: BTreeMap<i64, Vec<u128>>,
    ) -> IdBuckets {
        let mut buckets = IdBuckets::new(window, capacity);
        buckets.len = by_second.values().map(Vec::len).sum();
        buckets.by_second = by_second;
        buckets.newest = newest;
        buckets.evicted_by_capacity = evicted_by_capacity;
        buckets.evict(true, |_| {});
        buckets
    }

    /// Appends an id not yet in the window; `evicted` hears every id that leaves.
    pub fn push(&mut self, id: u128, occurred: Micros, evicted: impl FnMut(u128)) {
        self.by_second
            .entry(occurred.div_euclid(SECOND))
            .or_default()
            .push(id);
        self.len += 1;
        let expire = self.newest.is_none_or(|n| occurred > n);
        if expire {
            self.newest = Some(occurred);
        }
        self.evict(expire, evicted);
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest `occurred` seen.
    pub fn newest(&self) -> Option<Micros> {
        self.newest
    }

    /// Ids dropped because the window was full.
    pub fn evicted_by_capacity(&self) -> u64 {
        self.evicted_by_capacity
    }

    /// The buckets, oldest second first.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[u128])> + '_ {
        self.by_second.iter().map(|(s, ids)| (*s, ids.as_slice()))
    }

    /// Drops ids past the capacity and, when `expire`, ids older than the window.
    fn evict(&mut self, expire: bool, mut evicted: impl FnMut(u128)) {
        if let Some(newest) = self.newest.filter(|_| expire) {
            let cutoff_second = (newest - self.window).div_euclid(SECOND);
            while let Some(entry) = self.by_second.first_entry() {
                if *entry.key() >= cutoff_second {
                    break;
                }
                let bucket = entry.remove();
                self.len -= bucket.len();
                bucket.into_iter().for_each(&mut evicted);
            }
        }
        while self.len > self.capacity {
            let Some(mut entry) = self.by_second.first_entry() else {
                return;
            };
            let bucket = entry.get_mut();
            while self.len > self.capacity {
                let Some(id) = bucket.pop() else { break };
                evicted(id);
                self.len -= 1;
                self.evicted_by_capacity += 1;
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
