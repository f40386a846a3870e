//! Bounded label tables: shared strings, state names, and group-by label sets.
//!
//! Every label value that reaches Prometheus passes through here, so a stream of hostile
//! values cannot grow memory or series without bound: past the caps, new values fold into
//! [`OTHER`] and the fold is counted.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use crate::model::event::{RelatedNames, StateKey, StateType};
use crate::model::group_by::GroupBy;

/// The value new state names and label sets fold into once a cap is reached.
pub const OTHER: &str = "__other__";

/// A set of shared strings with a cap on distinct entries.
#[derive(Debug)]
pub struct Interner {
    set: HashSet<Arc<str>, foldhash::fast::RandomState>,
    cap: usize,
}

impl Interner {
    /// An empty interner holding at most `cap` strings.
    pub fn new(cap: usize) -> Interner {
        Interner {
            set: HashSet::default(),
            cap,
        }
    }

    /// The shared copy of `text`, or `None` when it is new and the interner is full.
    pub fn get_or_insert(&mut self, text: &str) -> Option<Arc<str>> {
        if let Some(found) = self.set.get(text) {
            return Some(found.clone());
        }
        if self.set.len() >= self.cap {
            return None;
        }
        let shared: Arc<str> = Arc::from(text);
        self.set.insert(shared.clone());
        Some(shared)
    }

    /// The shared copy of `text`, added even past the cap (restoring saved names, which
    /// were within the cap when they were first seen).
    pub fn insert_uncapped(&mut self, text: &str) -> Arc<str> {
        if let Some(found) = self.set.get(text) {
            return found.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.set.insert(shared.clone());
        shared
    }

    /// The shared copy of `text`, or a private copy when the interner is full.
    pub fn share(&mut self, text: &str) -> Arc<str> {
        self.get_or_insert(text).unwrap_or_else(|| Arc::from(text))
    }

    /// How many distinct strings are held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no string is held.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// State names, folded to [`OTHER`] past the cap.
#[derive(Debug)]
pub struct StateNames {
    names: Interner,
    other: Arc<str>,
    folded: u64,
}

impl StateNames {
    /// A table holding at most `cap` distinct names (plus [`OTHER`]).
    pub fn new(cap: usize) -> StateNames {
        let mut names = Interner::new(cap.saturating_add(StateType::ALL.len()));
        for ty in StateType::ALL {
            names.share(ty.default_name());
        }
        StateNames {
            names,
            other: Arc::from(OTHER),
            folded: 0,
        }
    }

    /// The counted key of a state.
    pub fn key(&mut self, ty: StateType, name: &str) -> StateKey {
        let name = match self.names.get_or_insert(name) {
            Some(shared) => shared,
            None => {
                self.folded += 1;
                self.other.clone()
            }
        };
        StateKey { ty, name }
    }

    /// The key of a saved state (a state file): never folded, since it was counted under
    /// this name; [`OTHER`] stays the folded key.
    pub fn restore_key(&mut self, ty: StateType, name: &str) -> StateKey {
        let name = if name == OTHER {
            self.other.clone()
        } else {
            self.names.insert_uncapped(name)
        };
        StateKey { ty, name }
    }

    /// The default-named key of a type (`COMPLETED`/`Completed`).
    pub fn default_key(&mut self, ty: StateType) -> StateKey {
        self.key(ty, ty.default_name())
    }

    /// State events whose name was folded into [`OTHER`].
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Sets the folded count (restoring a state file).
    pub fn set_folded(&mut self, folded: u64) {
        self.folded = folded;
    }
}

/// The index of a label set in a [`SeriesTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId(pub u32);

/// One group-by label set: a value per dimension.
pub type LabelSet = Arc<[Arc<str>]>;

/// Group-by label sets, each stored once, capped at `--max-series`.
#[derive(Debug)]
pub struct SeriesTable {
    dims: Vec<GroupBy>,
    sets: Vec<Arc<[Arc<str>]>>,
    index: HashMap<u64, Vec<SeriesId>, foldhash::fast::RandomState>,
    hasher: foldhash::fast::RandomState,
    strings: Interner,
    cap: usize,
    other: Option<SeriesId>,
    folded: u64,
    scratch: String,
}

impl SeriesTable {
    /// A table for `dims` holding at most `cap` label sets.
    pub fn new(dims: Vec<GroupBy>, cap: usize) -> SeriesTable {
        SeriesTable {
            dims,
            sets: Vec::new(),
            index: HashMap::default(),
            hasher: foldhash::fast::RandomState::default(),
            strings: Interner::new(cap.saturating_mul(GroupBy::ALL.len()).max(64)),
            cap: cap.max(1),
            other: None,
            folded: 0,
            scratch: String::new(),
        }
    }

    /// The group-by dimensions, in label order.
    pub fn dims(&self) -> &[GroupBy] {
        &self.dims
    }

    /// The label values of a set, in [`SeriesTable::dims`] order.
    pub fn values(&self, id: SeriesId) -> &[Arc<str>] {
        &self.sets[id.0 as usize]
    }

    /// How many label sets exist.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// Whether no label set exists yet.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Events whose label set was folded into [`OTHER`].
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// The label sets in id order, and the id of the [`OTHER`] set if it exists.
    pub fn sets(&self) -> (&[LabelSet], Option<SeriesId>) {
        (&self.sets, self.other)
    }

    /// Rebuilds a table from saved label sets (same ids, same order) and its folded count.
    /// `None` when a set does not match the dimensions or `other` is out of range.
    pub fn restore(
        dims: Vec<GroupBy>,
        cap: usize,
        sets: Vec<Vec<String>>,
        other: Option<u32>,
        folded: u64,
    ) -> Option<SeriesTable> {
        let mut table = SeriesTable::new(dims, cap);
        if other.is_some_and(|o| o as usize >= sets.len()) {
            return None;
        }
        for (i, values) in sets.into_iter().enumerate() {
            if values.len() != table.dims.len() {
                return None;
            }
            let set: Arc<[Arc<str>]> = values.iter().map(|v| table.strings.share(v)).collect();
            let id = SeriesId(u32::try_from(i).ok()?);
            if other != Some(id.0) {
                let hash = table.hash_values(set.iter().map(AsRef::as_ref));
                table.index.entry(hash).or_default().push(id);
            }
            table.sets.push(set);
        }
        table.other = other.map(SeriesId);
        table.folded = folded;
        Some(table)
    }

    /// The label set of a run with these related names.
    pub fn id_for(&mut self, related: &RelatedNames<'_>) -> SeriesId {
        let mut scratch = std::mem::take(&mut self.scratch);
        let id = self.lookup(related, &mut scratch);
        self.scratch = scratch;
        id
    }

    fn lookup(&mut self, related: &RelatedNames<'_>, scratch: &mut String) -> SeriesId {
        if self.dims.contains(&GroupBy::Tag) {
            joined_tags(related, scratch);
        }
        let value = |dim: GroupBy| -> &str {
            match dim {
                GroupBy::Deployment => related.deployment.as_deref().unwrap_or(""),
                GroupBy::Flow => related.flow.as_deref().unwrap_or(""),
                GroupBy::WorkPool => related.work_pool.as_deref().unwrap_or(""),
                GroupBy::WorkQueue => related.work_queue.as_deref().unwrap_or(""),
                GroupBy::Tag => scratch.as_str(),
            }
        };
        let hash = self.hash_values(self.dims.iter().map(|&d| value(d)));
        if let Some(candidates) = self.index.get(&hash) {
            for &id in candidates {
                let set = &self.sets[id.0 as usize];
                if set
                    .iter()
                    .zip(&self.dims)
                    .all(|(v, &d)| v.as_ref() == value(d))
                {
                    return id;
                }
            }
        }
        if self.sets.len() >= self.cap {
            self.folded += 1;
            return self.other_id();
        }
        let set: Arc<[Arc<str>]> = self
            .dims
            .iter()
            .map(|&d| self.strings.share(value(d)))
            .collect();
        let id = SeriesId(self.sets.len() as u32);
        self.sets.push(set);
        self.index.entry(hash).or_default().push(id);
        id
    }

    fn hash_values<'v>(&self, values: impl Iterator<Item = &'v str>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        for value in values {
            value.hash(&mut hasher);
        }
        hasher.finish()
    }

    fn other_id(&mut self) -> SeriesId {
        if let Some(id) = self.other {
            return id;
        }
        let set: Arc<[Arc<str>]> = self.dims.iter().map(|_| Arc::from(OTHER)).collect();
        let id = SeriesId(self.sets.len() as u32);
        self.sets.push(set);
        self.other = Some(id);
        id
    }
}

/// Writes the run's tags, sorted and joined with `,`, into `out`.
fn joined_tags(related: &RelatedNames<'_>, out: &mut String) {
    out.clear();
    let mut tags: Vec<&str> = related.tags.iter().map(|t| t.as_ref()).collect();
    tags.sort_unstable();
    tags.dedup();
    for (i, tag) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn related<'a>(deployment: Option<&'a str>, pool: Option<&'a str>) -> RelatedNames<'a> {
        RelatedNames {
            deployment: deployment.map(Cow::Borrowed),
            work_pool: pool.map(Cow::Borrowed),
            ..RelatedNames::default()
        }
    }

    #[test]
    fn same_labels_same_series() {
        let mut t = SeriesTable::new(vec![GroupBy::Deployment, GroupBy::WorkPool], 10);
        let a = t.id_for(&related(Some("d"), Some("p")));
        let b = t.id_for(&related(Some("d"), Some("p")));
        let c = t.id_for(&related(Some("d"), None));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            t.values(c)[1].as_ref(),
            "",
            "a missing name is the empty string"
        );
    }

    #[test]
    fn series_past_the_cap_fold_into_other() {
        let mut t = SeriesTable::new(vec![GroupBy::Deployment], 2);
        t.id_for(&related(Some("a"), None));
        t.id_for(&related(Some("b"), None));
        let c = t.id_for(&related(Some("c"), None));
        let d = t.id_for(&related(Some("d"), None));
        assert_eq!(c, d);
        assert_eq!(t.values(c)[0].as_ref(), OTHER);
        assert_eq!(t.folded(), 2);
        assert_eq!(
            t.id_for(&related(Some("a"), None)),
            SeriesId(0),
            "known sets still resolve"
        );
    }

    #[test]
    fn tags_are_sorted_and_joined() {
        let mut t = SeriesTable::new(vec![GroupBy::Tag], 10);
        let r = RelatedNames {
            tags: vec![Cow::Borrowed("b"), Cow::Borrowed("a")],
            ..RelatedNames::default()
        };
        let id = t.id_for(&r);
        assert_eq!(t.values(id)[0].as_ref(), "a,b");
    }

    #[test]
    fn state_names_fold_past_the_cap() {
        let mut names = StateNames::new(1);
        assert_eq!(
            names.key(StateType::Scheduled, "Late").name.as_ref(),
            "Late"
        );
        assert_eq!(names.key(StateType::Running, "Custom").name.as_ref(), OTHER);
        assert_eq!(
            names.key(StateType::Completed, "Completed").name.as_ref(),
            "Completed"
        );
        assert_eq!(names.folded(), 1);
    }
}
