//! The set of event ids a dedup window remembers: 16 bytes an id in open-addressing tables of
//! four-slot groups (one cache line each), sized for the window's capacity at most, so a
//! full window of 4 M ids takes about 75 MB (a `HashSet<u128>` sized in powers of two took up
//! to twice that, and twice again while it grew).
//!
//! A slot is a 128-bit id, empty (`0`) or removed (`1`); the two ids with those values are
//! held in flags. Slots never move while an id is held, so callers keep slot numbers; a
//! rebuild is the only thing that moves them, and it rewrites the numbers it is handed. The
//! ids are spread over [`PARTS`] tables by hash, each rebuilt on its own, so growing never
//! holds two copies of more than a sixteenth of the ids.

use std::hash::BuildHasher;

/// Tables the ids are spread over.
pub const PARTS: usize = 16;
/// Slots per group.
const GROUP: usize = 4;
/// The slot values meaning "never used" and "used, then removed".
const EMPTY: [u64; 2] = [0, 0];
const REMOVED: [u64; 2] = [0, 1];
/// A slot number is `part << PART_SHIFT | slot in the part`.
const PART_SHIFT: u32 = 28;
const LOCAL: u32 = (1 << PART_SHIFT) - 1;
/// Slot numbers standing for the ids that equal [`EMPTY`] and [`REMOVED`].
const SLOT_OF_ZERO: u32 = u32::MAX;
const SLOT_OF_ONE: u32 = u32::MAX - 1;
/// Live plus removed slots above this share of a table start its rebuild.
const MAX_USED: f64 = 0.9;
/// A rebuild sizes a table for its live ids at this share (up to the capacity's size).
const TARGET_LOAD: f64 = 0.6;
/// At capacity, live ids fill this share of the largest tables.
const FULL_LOAD: f64 = 0.85;

fn pack(id: u128) -> [u64; 2] {
    [(id >> 64) as u64, id as u64]
}

fn unpack(slot: [u64; 2]) -> u128 {
    (u128::from(slot[0]) << 64) | u128::from(slot[1])
}

/// What [`Part::insert`] found.
enum Found {
    New(u32),
    Present,
    Full,
}

/// One table: groups of four slots, probed group after group.
#[derive(Debug)]
struct Part {
    slots: Vec<[u64; 2]>,
    groups: usize,
    live: usize,
    removed: usize,
}

impl Part {
    fn with_groups(groups: usize) -> Part {
        let groups = groups.max(1);
        Part {
            slots: vec![EMPTY; groups * GROUP],
            groups,
            live: 0,
            removed: 0,
        }
    }

    fn first_group(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.groups as u128) >> 64) as usize
    }

    fn find(&self, hash: u64, wanted: [u64; 2]) -> Option<u32> {
        let mut group = self.first_group(hash);
        for _ in 0..self.groups {
            let base = group * GROUP;
            for (i, slot) in self.slots[base..base + GROUP].iter().enumerate() {
                if *slot == wanted {
                    return Some((base + i) as u32);
                }
                if *slot == EMPTY {
                    return None;
                }
            }
            group = if group + 1 == self.groups {
                0
            } else {
                group + 1
            };
        }
        None
    }

    fn insert(&mut self, hash: u64, wanted: [u64; 2]) -> Found {
        if (self.live + self.removed + 1) as f64 > self.slots.len() as f64 * MAX_USED {
            return Found::Full;
        }
        let mut group = self.first_group(hash);
        let mut free = None;
        for _ in 0..self.groups {
            let base = group * GROUP;
            for i in base..base + GROUP {
                let slot = self.slots[i];
                if slot == wanted {
                    return Found::Present;
                }
                if slot == REMOVED && free.is_none() {
                    free = Some(i);
                }
                if slot == EMPTY {
                    let at = free.unwrap_or(i);
                    if at != i {
                        self.removed -= 1;
                    }
                    self.slots[at] = wanted;
                    self.live += 1;
                    return Found::New(at as u32);
                }
            }
            group = if group + 1 == self.groups {
                0
            } else {
                group + 1
            };
        }
        Found::Full
    }

    fn remove(&mut self, local: u32) {
        self.slots[local as usize] = REMOVED;
        self.removed += 1;
        self.live -= 1;
    }
}

/// What [`IdSet::insert`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// The id was new; this is its slot number.
    New(u32),
    /// The id was there already.
    Present,
    /// The id's table must be rebuilt first ([`IdSet::rebuild`] with this part).
    Full(usize),
}

/// A set of 128-bit ids with stable slot numbers.
#[derive(Debug)]
pub struct IdSet {
    parts: Vec<Part>,
    max_groups: usize,
    specials: [bool; 2],
    hasher: foldhash::fast::RandomState,
}

impl IdSet {
    /// An empty set that will hold at most `capacity` ids.
    pub fn new(capacity: usize) -> IdSet {
        let per_part = capacity.div_ceil(PARTS);
        let max_groups = ((per_part as f64 / FULL_LOAD) as usize / GROUP + 1).max(1);
        IdSet {
            parts: (0..PARTS)
                .map(|_| Part::with_groups(4.min(max_groups)))
                .collect(),
            max_groups,
            specials: [false; 2],
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn place(&self, id: u128) -> (usize, u64) {
        let hash = self.hasher.hash_one(id);
        ((hash as usize) % PARTS, hash)
    }

    /// The slot number of `id`, if held.
    pub fn find(&self, id: u128) -> Option<u32> {
        match id {
            0 => self.specials[0].then_some(SLOT_OF_ZERO),
            1 => self.specials[1].then_some(SLOT_OF_ONE),
            _ => {
                let (part, hash) = self.place(id);
                let local = self.parts[part].find(hash, pack(id))?;
                Some((part as u32) << PART_SHIFT | local)
            }
        }
    }

    /// Adds `id` unless held.
    pub fn insert(&mut self, id: u128) -> Inserted {
        if id <= 1 {
            let s = id as usize;
            if self.specials[s] {
                return Inserted::Present;
            }
            self.specials[s] = true;
            return Inserted::New([SLOT_OF_ZERO, SLOT_OF_ONE][s]);
        }
        let (part, hash) = self.place(id);
        match self.parts[part].insert(hash, pack(id)) {
            Found::New(local) => Inserted::New((part as u32) << PART_SHIFT | local),
            Found::Present => Inserted::Present,
            Found::Full => Inserted::Full(part),
        }
    }

    /// Removes the id at slot number `slot`.
    pub fn remove(&mut self, slot: u32) {
        match slot {
            SLOT_OF_ZERO => self.specials[0] = false,
            SLOT_OF_ONE => self.specials[1] = false,
            slot => self.parts[(slot >> PART_SHIFT) as usize].remove(slot & LOCAL),
        }
    }

    /// The id at slot number `slot`.
    #[cfg(test)]
    fn id_at(&self, slot: u32) -> u128 {
        match slot {
            SLOT_OF_ZERO => 0,
            SLOT_OF_ONE => 1,
            slot => {
                unpack(self.parts[(slot >> PART_SHIFT) as usize].slots[(slot & LOCAL) as usize])
            }
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.live).sum::<usize>()
            + self.specials.iter().filter(|&&s| s).count()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rebuilds table `part` (sized for its ids, up to the capacity's size), rewriting the
    /// slot numbers among `slots` that point into it (`slots` must hold every held id's).
    pub fn rebuild<'s>(&mut self, part: usize, slots: impl Iterator<Item = &'s mut u32>) {
        let old = &self.parts[part];
        // Sized for the live ids at the target load, up to what the capacity needs; but never
        // so small that the ids held now leave no room (a part can get more than its share).
        let wanted = ((old.live + 1) as f64 / TARGET_LOAD) as usize / GROUP + 1;
        let needed = ((old.live + 1) as f64 / FULL_LOAD) as usize / GROUP + 1;
        let groups = wanted.min(self.max_groups).max(needed);
        let mut new = Part::with_groups(groups);
        let tag = part as u32;
        for slot in slots {
            if *slot >= SLOT_OF_ONE || *slot >> PART_SHIFT != tag {
                continue;
            }
            let id = unpack(old.slots[(*slot & LOCAL) as usize]);
            if let Found::New(local) = new.insert(self.hasher.hash_one(id), pack(id)) {
                *slot = tag << PART_SHIFT | local;
            }
        }
        self.parts[part] = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_including_the_two_special_values_are_held_and_removed() {
        let mut t = IdSet::new(64);
        let ids = [0u128, 1, 2, u128::MAX, 1 << 64];
        let mut slots = Vec::new();
        for id in ids {
            match t.insert(id) {
                Inserted::New(slot) => slots.push(slot),
                other => panic!("{id}: {other:?}"),
            }
            assert_eq!(t.insert(id), Inserted::Present);
        }
        assert_eq!(t.len(), 5);
        for (&slot, id) in slots.iter().zip(ids) {
            assert_eq!(t.id_at(slot), id);
            assert_eq!(t.find(id), Some(slot));
        }
        t.remove(slots[0]);
        t.remove(slots[2]);
        assert_eq!(t.find(0), None);
        assert_eq!(t.find(2), None);
        assert_eq!(t.find(u128::MAX), Some(slots[3]));
        assert!(matches!(t.insert(2), Inserted::New(_)));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_rebuild_moves_a_part_and_rewrites_its_slot_numbers() {
        let mut t = IdSet::new(100_000);
        let mut slots: Vec<u32> = Vec::new();
        let mut ids = Vec::new();
        for id in 10u128..5_000 {
            let slot = loop {
                match t.insert(id) {
                    Inserted::New(slot) => break slot,
                    Inserted::Full(part) => t.rebuild(part, slots.iter_mut()),
                    Inserted::Present => unreachable!(),
                }
            };
            slots.push(slot);
            ids.push(id);
        }
        assert_eq!(t.len(), ids.len());
        for (&slot, &id) in slots.iter().zip(&ids) {
            assert_eq!(t.id_at(slot), id);
            assert_eq!(t.find(id), Some(slot));
        }
    }
}
