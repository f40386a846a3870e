//! State names as small ids: every `(state type, state name)` counted gets a [`StateId`]
//! (a `u16`), so run records and the per-state aggregates hold two bytes instead of a key.
//!
//! Names are capped (`--max-series` distinct names): past the cap a new name folds into
//! [`OTHER`] and the fold is counted. Pairs of a type and a name are capped by the id space
//! too: past [`MAX_STATES`] pairs a new pair folds into `(type, __other__)` as well.

use std::sync::Arc;

use crate::model::event::{StateKey, StateType};
use crate::state::labels::{Interner, OTHER};
use crate::state::FastMap;

/// The id of a counted state (type and name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u16);

impl StateId {
    /// The default-named state of each type has the id of its type's index.
    pub fn default_of(ty: StateType) -> StateId {
        StateId(ty.index() as u16)
    }

    /// Position in a table indexed by id.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Most distinct (type, name) pairs: the id space less a margin.
pub const MAX_STATES: usize = u16::MAX as usize - 16;

/// The states counted so far, by id, and the lookup from type and name to id.
#[derive(Debug, Clone)]
pub struct StateTable {
    keys: Vec<StateKey>,
    by_type: [FastMap<Arc<str>, StateId>; 9],
    names: Interner,
    other: Arc<str>,
    folded: u64,
}

impl StateTable {
    /// A table holding at most `cap` distinct names (plus the nine default names and
    /// [`OTHER`]); the default-named state of each type has the id of its type's index.
    pub fn new(cap: usize) -> StateTable {
        let mut table = StateTable {
            keys: Vec::new(),
            by_type: Default::default(),
            names: Interner::new(cap.saturating_add(StateType::ALL.len())),
            other: Arc::from(OTHER),
            folded: 0,
        };
        for ty in StateType::ALL {
            let name = table.names.share(ty.default_name());
            table.add(ty, name);
        }
        table
    }

    /// The id of a state as an event names it, folding past the caps.
    pub fn id(&mut self, ty: StateType, name: &str) -> StateId {
        if let Some(&id) = self.by_type[ty.index()].get(name) {
            return id;
        }
        match self.names.get_or_insert(name) {
            Some(shared) if self.keys.len() < MAX_STATES => self.add(ty, shared),
            _ => {
                self.folded += 1;
                self.other_id(ty)
            }
        }
    }

    /// The id of a saved state (a state file or a REST count): never folded by the name cap,
    /// since it was counted under this name ([`OTHER`] stays the folded state).
    pub fn restore_id(&mut self, ty: StateType, name: &str) -> StateId {
        if name == OTHER {
            return self.other_id(ty);
        }
        if let Some(&id) = self.by_type[ty.index()].get(name) {
            return id;
        }
        if self.keys.len() >= MAX_STATES {
            return self.other_id(ty);
        }
        let shared = self.names.insert_uncapped(name);
        self.add(ty, shared)
    }

    /// The key of an id.
    pub fn key(&self, id: StateId) -> &StateKey {
        &self.keys[id.index()]
    }

    /// Every id, in order.
    pub fn ids(&self) -> impl Iterator<Item = StateId> + '_ {
        (0..self.keys.len()).map(|i| StateId(i as u16))
    }

    /// How many states exist.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no state exists (never: the defaults are always there).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// State events whose name was folded into [`OTHER`].
    pub fn folded(&self) -> u64 {
        self.folded
    }

    /// Sets the folded count (restoring a state file).
    pub fn set_folded(&mut self, folded: u64) {
        self.folded = folded;
    }

    fn other_id(&mut self, ty: StateType) -> StateId {
        if let Some(&id) = self.by_type[ty.index()].get(OTHER) {
            return id;
        }
        let other = self.other.clone();
        self.add(ty, other)
    }

    fn add(&mut self, ty: StateType, name: Arc<str>) -> StateId {
        let id = StateId(self.keys.len() as u16);
        self.by_type[ty.index()].insert(name.clone(), id);
        self.keys.push(StateKey { ty, name });
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_their_type_index_and_names_fold_past_the_cap() {
        let mut table = StateTable::new(1);
        for ty in StateType::ALL {
            assert_eq!(table.id(ty, ty.default_name()), StateId::default_of(ty));
        }
        let late = table.id(StateType::Scheduled, "Late");
        assert_eq!(table.key(late).name.as_ref(), "Late");
        let folded = table.id(StateType::Running, "Custom");
        assert_eq!(table.key(folded).name.as_ref(), OTHER);
        assert_eq!(table.key(folded).ty, StateType::Running);
        assert_eq!(
            table.id(StateType::Completed, "Completed"),
            StateId::default_of(StateType::Completed)
        );
        assert_eq!(
            table.id(StateType::Running, "Late"),
            table.id(StateType::Running, "Late"),
            "a known name with another type is a new pair, not a fold"
        );
        assert_eq!(table.folded(), 1);
        assert_eq!(
            table.restore_id(StateType::Failed, "Saved").0 as usize,
            table.len() - 1
        );
    }
}
