//! The eviction order of a dedup window: per second of `occurred`, what was admitted, in
//! admission order. Ids leave when their second falls out of the window of the newest
//! `occurred` seen (event time), and past the capacity, oldest second first.
//!
//! Generic over what is kept per admission: the dedup window keeps 4-byte slot numbers of its
//! id table, the state file's writer keeps the 16-byte ids themselves. Pushing the same
//! admissions in the same order into two of them evicts the same ones, which is what lets
//! the writer keep a copy of the window from the ids the pipeline admitted.

use std::collections::BTreeMap;

use crate::model::time::{Micros, SECOND};

/// Admissions by second of `occurred`, with the window's limits.
#[derive(Clone, Debug)]
pub struct Buckets<T> {
    by_second: BTreeMap<i64, Vec<T>>,
    len: usize,
    window: Micros,
    capacity: usize,
    newest: Option<Micros>,
    evicted_by_capacity: u64,
}

/// The dedup window's ids as the state file keeps them.
pub type IdBuckets = Buckets<u128>;

impl<T: Copy> Buckets<T> {
    /// Nothing held, for a window of `window` event-time micros and at most `capacity` ids.
    pub fn new(window: Micros, capacity: usize) -> Buckets<T> {
        Buckets {
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
        by_second: BTreeMap<i64, Vec<T>>,
    ) -> Buckets<T> {
        let mut buckets = Buckets::new(window, capacity);
        buckets.len = by_second.values().map(Vec::len).sum();
        buckets.by_second = by_second;
        buckets.newest = newest;
        buckets.evicted_by_capacity = evicted_by_capacity;
        buckets.evict(true, |_| {});
        buckets
    }

    /// Appends an admission at `occurred`; `evicted` hears every one that leaves.
    pub fn push(&mut self, item: T, occurred: Micros, evicted: impl FnMut(T)) {
        let second = occurred.div_euclid(SECOND);
        self.by_second.entry(second).or_default().push(item);
        self.len += 1;
        let expire = self.newest.is_none_or(|n| occurred > n);
        if expire {
            let previous = self.newest.map(|n| n.div_euclid(SECOND));
            self.newest = Some(occurred);
            if previous.is_some_and(|p| p < second) {
                // A second two behind the newest rarely grows again: give back its spare
                // capacity.
                if let Some(old) = self.by_second.get_mut(&(second - 2)) {
                    old.shrink_to_fit();
                }
            }
        }
        self.evict(expire, evicted);
    }

    /// The window, in event-time micros.
    pub fn window(&self) -> Micros {
        self.window
    }

    /// The most held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The newest `occurred` seen.
    pub fn newest(&self) -> Option<Micros> {
        self.newest
    }

    /// Admissions dropped because the window was full.
    pub fn evicted_by_capacity(&self) -> u64 {
        self.evicted_by_capacity
    }

    /// The buckets, oldest second first.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[T])> + '_ {
        self.by_second.iter().map(|(s, ids)| (*s, ids.as_slice()))
    }

    /// Every admission, to rewrite in place (the dedup window's table moved its ids).
    pub fn items_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.by_second
            .values_mut()
            .flat_map(|bucket| bucket.iter_mut())
    }

    /// Drops admissions past the capacity and, when `expire`, those older than the window.
    fn evict(&mut self, expire: bool, mut evicted: impl FnMut(T)) {
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
                let Some(item) = bucket.pop() else { break };
                evicted(item);
                self.len -= 1;
                self.evicted_by_capacity += 1;
            }
            if bucket.is_empty() {
                entry.remove();
            }
        }
    }
}
