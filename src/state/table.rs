//! The run records of one kind: sharded, each shard a slab of records (in fixed-size chunks,
//! so growing never copies or doubles) and a hash index of slot numbers (4 bytes a run; the
//! key lives in the record). Readers lock one shard at a time, briefly; the tracker writes a
//! shard under its write lock, always after the aggregates' lock (never the other way).

use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::HashTable;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::state::record::{RunKey, RunRecord};
use crate::state::FastMap;

/// Shards of a table: enough that readers and the writer rarely meet.
const SHARDS: usize = 16;
/// Records per slab chunk.
const CHUNK: usize = 1024;

/// The runs of one kind, keyed by [`RunKey`].
#[derive(Debug)]
pub(super) struct RunTable {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
    len: AtomicUsize,
}

/// One shard: the records, their index, and the resource ids that are not canonical.
#[derive(Debug, Default)]
pub(super) struct Shard {
    index: HashTable<u32>,
    slots: Slots,
    odd_ids: FastMap<RunKey, Box<str>>,
}

/// Records in fixed-size chunks, with the numbers of free slots.
#[derive(Debug, Default)]
struct Slots {
    chunks: Vec<Box<[Option<RunRecord>]>>,
    free: Vec<u32>,
}

impl Slots {
    fn get(&self, slot: u32) -> Option<&RunRecord> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?[slot % CHUNK].as_ref()
    }

    fn get_mut(&mut self, slot: u32) -> Option<&mut RunRecord> {
        let slot = slot as usize;
        self.chunks.get_mut(slot / CHUNK)?[slot % CHUNK].as_mut()
    }

    fn put(&mut self, record: RunRecord) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let chunk: Box<[Option<RunRecord>]> = (0..CHUNK).map(|_| None).collect();
                self.chunks.push(chunk);
                let first = (self.chunks.len() - 1) * CHUNK;
                self.free
                    .extend((first + 1..first + CHUNK).rev().map(|s| s as u32));
                first as u32
            }
        };
        self.chunks[slot as usize / CHUNK][slot as usize % CHUNK] = Some(record);
        slot
    }

    fn take(&mut self, slot: u32) -> Option<RunRecord> {
        let taken = self.chunks[slot as usize / CHUNK][slot as usize % CHUNK].take();
        self.free.push(slot);
        taken
    }

    fn iter(&self) -> impl Iterator<Item = &RunRecord> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().flatten())
    }
}

impl Shard {
    /// The record of `key`.
    pub(super) fn get(&self, hash: u64, key: RunKey) -> Option<&RunRecord> {
        let slots = &self.slots;
        let slot = self.index.find(hash, |&s| matches(slots, s, key))?;
        slots.get(*slot)
    }

    /// The record of `key`, to change.
    pub(super) fn get_mut(&mut self, hash: u64, key: RunKey) -> Option<&mut RunRecord> {
        let slots = &self.slots;
        let slot = *self.index.find(hash, |&s| matches(slots, s, key))?;
        self.slots.get_mut(slot)
    }

    /// The resource id of `key` when it is not canonical.
    pub(super) fn odd_id(&self, key: RunKey) -> Option<&str> {
        self.odd_ids.get(&key).map(AsRef::as_ref)
    }

    /// Every record.
    pub(super) fn records(&self) -> impl Iterator<Item = &RunRecord> + '_ {
        self.slots.iter()
    }
}

/// Whether slot `slot` holds the record of `key`.
fn matches(slots: &Slots, slot: u32, key: RunKey) -> bool {
    slots.get(slot).is_some_and(|r| r.key() == key)
}

impl Default for RunTable {
    fn default() -> RunTable {
        RunTable {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            len: AtomicUsize::new(0),
        }
    }
}

impl RunTable {
    /// The hash of `key` (it also picks the shard).
    pub(super) fn hash(&self, key: RunKey) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn shard_of(&self, hash: u64) -> &RwLock<Shard> {
        &self.shards[(hash >> 40) as usize % SHARDS]
    }

    /// The shard holding `key` (by its hash), to read.
    pub(super) fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard> {
        self.shard_of(hash).read()
    }

    /// The shard holding `key` (by its hash), to write.
    pub(super) fn write(&self, hash: u64) -> RwLockWriteGuard<'_, Shard> {
        self.shard_of(hash).write()
    }

    /// Every shard, one at a time, to read.
    pub(super) fn for_each_shard(&self, mut visit: impl FnMut(&Shard)) {
        for shard in self.shards.iter() {
            visit(&shard.read());
        }
    }

    /// Runs held.
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Adds a record (its key must be absent), with its resource id when not canonical.
    pub(super) fn insert(
        &self,
        shard: &mut Shard,
        hash: u64,
        record: RunRecord,
        odd_id: Option<Box<str>>,
    ) {
        let key = record.key();
        let slot = shard.slots.put(record);
        let Shard {
            index,
            slots,
            odd_ids,
        } = shard;
        index.insert_unique(hash, slot, |&s| {
            slots.get(s).map_or(0, |r| self.hash(r.key()))
        });
        if let Some(id) = odd_id {
            odd_ids.insert(key, id);
        }
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes the record of `key` when `keep` says no; returns it.
    pub(super) fn remove_unless(
        &self,
        shard: &mut Shard,
        hash: u64,
        key: RunKey,
        keep: impl FnOnce(&RunRecord) -> bool,
    ) -> Option<RunRecord> {
        let Shard {
            index,
            slots,
            odd_ids,
        } = shard;
        let entry = index.find_entry(hash, |&s| matches(slots, s, key)).ok()?;
        let slot = *entry.get();
        if keep(slots.get(slot)?) {
            return None;
        }
        entry.remove();
        odd_ids.remove(&key);
        self.len.fetch_sub(1, Ordering::Relaxed);
        slots.take(slot)
    }
}
