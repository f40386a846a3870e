//! The related names of runs (flow, deployment, work pool, work queue, tags), each distinct
//! set stored once and shared by id, with a count of the runs holding it: a set no run holds
//! any more is freed and its id reused, so memory follows the runs in memory.

use std::borrow::Cow;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use crate::model::event::RelatedNames;
use crate::state::labels::Interner;
use crate::state::FastMap;

/// The id of a set of related names; [`LabelsId::NONE`] is the empty set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LabelsId(pub u32);

impl LabelsId {
    /// No related names.
    pub const NONE: LabelsId = LabelsId(0);
}

/// Names of a run's related resources.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RunLabels {
    /// Flow name.
    pub flow: Option<Arc<str>>,
    /// Deployment name.
    pub deployment: Option<Arc<str>>,
    /// Work pool name.
    pub work_pool: Option<Arc<str>>,
    /// Work queue name.
    pub work_queue: Option<Arc<str>>,
    /// Tag names.
    pub tags: Box<[Arc<str>]>,
}

/// Whether an event names any related resource.
pub fn has_labels(related: &RelatedNames<'_>) -> bool {
    related.flow.is_some()
        || related.deployment.is_some()
        || related.work_pool.is_some()
        || related.work_queue.is_some()
        || !related.tags.is_empty()
}

/// The distinct sets of related names, by id, with a count of holders each.
#[derive(Debug)]
pub struct LabelSets {
    sets: Vec<(RunLabels, u32)>,
    free: Vec<u32>,
    index: FastMap<u64, Vec<LabelsId>>,
    hasher: foldhash::fast::RandomState,
    strings: Interner,
}

impl LabelSets {
    /// No sets but the empty one; label strings are shared up to `string_cap` distinct ones.
    pub fn new(string_cap: usize) -> LabelSets {
        LabelSets {
            sets: vec![(RunLabels::default(), 0)],
            free: Vec::new(),
            index: FastMap::default(),
            hasher: foldhash::fast::RandomState::default(),
            strings: Interner::new(string_cap),
        }
    }

    /// The names of `id`.
    pub fn get(&self, id: LabelsId) -> &RunLabels {
        &self.sets[id.0 as usize].0
    }

    /// Takes a hold on the set of `related` (adding it when new) and returns its id.
    pub fn acquire(&mut self, related: &RelatedNames<'_>) -> LabelsId {
        if !has_labels(related) {
            return LabelsId::NONE;
        }
        let hash = self.hash(
            related.flow.as_deref(),
            related.deployment.as_deref(),
            related.work_pool.as_deref(),
            related.work_queue.as_deref(),
            related.tags.iter().map(Cow::as_ref),
        );
        let found = self.index.get(&hash).and_then(|ids| {
            ids.iter()
                .copied()
                .find(|&id| same(&self.sets[id.0 as usize].0, related))
        });
        let id = match found {
            Some(id) => id,
            None => {
                let labels = self.share(related);
                let id = self.insert(labels);
                self.index.entry(hash).or_default().push(id);
                id
            }
        };
        self.sets[id.0 as usize].1 += 1;
        id
    }

    /// Takes one more hold on `id` (restoring a run).
    pub fn acquire_id(&mut self, id: LabelsId) {
        if id != LabelsId::NONE {
            self.sets[id.0 as usize].1 += 1;
        }
    }

    /// Takes a hold on saved names (a state file) and returns their id.
    pub fn acquire_saved(&mut self, labels: &RunLabels) -> LabelsId {
        let related = RelatedNames {
            flow: labels.flow.as_deref().map(Cow::Borrowed),
            deployment: labels.deployment.as_deref().map(Cow::Borrowed),
            work_pool: labels.work_pool.as_deref().map(Cow::Borrowed),
            work_queue: labels.work_queue.as_deref().map(Cow::Borrowed),
            tags: labels
                .tags
                .iter()
                .map(|t| Cow::Borrowed(t.as_ref()))
                .collect(),
        };
        self.acquire(&related)
    }

    /// Gives up a hold on `id`; the set is freed when no run holds it.
    pub fn release(&mut self, id: LabelsId) {
        if id == LabelsId::NONE {
            return;
        }
        let slot = &mut self.sets[id.0 as usize];
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 > 0 {
            return;
        }
        let labels = std::mem::take(&mut slot.0);
        let hash = self.hash(
            labels.flow.as_deref(),
            labels.deployment.as_deref(),
            labels.work_pool.as_deref(),
            labels.work_queue.as_deref(),
            labels.tags.iter().map(AsRef::as_ref),
        );
        if let Some(ids) = self.index.get_mut(&hash) {
            ids.retain(|&held| held != id);
            if ids.is_empty() {
                self.index.remove(&hash);
            }
        }
        self.free.push(id.0);
    }

    /// Sets held by at least one run.
    pub fn len(&self) -> usize {
        self.sets.len() - 1 - self.free.len()
    }

    /// Whether no run holds any set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&mut self, labels: RunLabels) -> LabelsId {
        match self.free.pop() {
            Some(i) => {
                self.sets[i as usize] = (labels, 0);
                LabelsId(i)
            }
            None => {
                self.sets.push((labels, 0));
                LabelsId(u32::try_from(self.sets.len() - 1).unwrap_or(u32::MAX))
            }
        }
    }

    fn share(&mut self, related: &RelatedNames<'_>) -> RunLabels {
        let strings = &mut self.strings;
        let tags = related.tags.iter().map(|t| strings.share(t)).collect();
        let mut share = |name: &Option<Cow<'_, str>>| name.as_deref().map(|n| strings.share(n));
        RunLabels {
            flow: share(&related.flow),
            deployment: share(&related.deployment),
            work_pool: share(&related.work_pool),
            work_queue: share(&related.work_queue),
            tags,
        }
    }

    fn hash<'s>(
        &self,
        flow: Option<&str>,
        deployment: Option<&str>,
        work_pool: Option<&str>,
        work_queue: Option<&str>,
        tags: impl Iterator<Item = &'s str>,
    ) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        (flow, deployment, work_pool, work_queue).hash(&mut hasher);
        for tag in tags {
            tag.hash(&mut hasher);
        }
        hasher.finish()
    }
}

/// Whether `held` are the names of `related`.
fn same(held: &RunLabels, related: &RelatedNames<'_>) -> bool {
    let eq = |a: &Option<Arc<str>>, b: &Option<Cow<'_, str>>| a.as_deref() == b.as_deref();
    eq(&held.flow, &related.flow)
        && eq(&held.deployment, &related.deployment)
        && eq(&held.work_pool, &related.work_pool)
        && eq(&held.work_queue, &related.work_queue)
        && held.tags.len() == related.tags.len()
        && held
            .tags
            .iter()
            .zip(&related.tags)
            .all(|(a, b)| a.as_ref() == b.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn related(deployment: &str) -> RelatedNames<'_> {
        RelatedNames {
            deployment: Some(Cow::Borrowed(deployment)),
            tags: vec![Cow::Borrowed("t")],
            ..RelatedNames::default()
        }
    }

    #[test]
    fn sets_are_shared_while_held_and_freed_after() {
        let mut sets = LabelSets::new(100);
        assert_eq!(sets.acquire(&RelatedNames::default()), LabelsId::NONE);
        let a = sets.acquire(&related("a"));
        assert_eq!(sets.acquire(&related("a")), a);
        let b = sets.acquire(&related("b"));
        assert_ne!(a, b);
        assert_eq!(sets.get(a).deployment.as_deref(), Some("a"));
        assert_eq!(sets.len(), 2);
        sets.release(a);
        assert_eq!(sets.len(), 2, "still held once");
        sets.release(a);
        assert_eq!(sets.len(), 1);
        let c = sets.acquire(&related("c"));
        assert_eq!(c, a, "the freed id is reused");
        assert_eq!(sets.get(c).deployment.as_deref(), Some("c"));
        assert_eq!(sets.acquire(&related("a")).0, 3, "a is new again");
    }
}
