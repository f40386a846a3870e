//! The index of runs waiting in non-terminal states, ordered by when they entered them: the
//! oldest-age gauges and stuck-run lists read its first entries instead of scanning every run.

use std::collections::BTreeSet;

use crate::model::event::StateKey;
use crate::model::time::Micros;
use crate::state::record::RunKey;
use crate::state::FastMap;

/// Tracked runs in non-terminal states, ordered by when they entered the state.
#[derive(Clone, Debug, Default)]
pub struct Waiting {
    by_state: FastMap<StateKey, BTreeSet<(Micros, RunKey)>>,
}

impl Waiting {
    /// Notes that run `key` moved from `old` (state, since) to `new`; terminal states are
    /// not indexed.
    pub fn moved(
        &mut self,
        key: RunKey,
        old: Option<(&StateKey, Micros)>,
        new: Option<(&StateKey, Micros)>,
    ) {
        if old == new {
            return;
        }
        if let Some((state, since)) = old.filter(|(s, _)| !s.ty.is_terminal()) {
            if let Some(set) = self.by_state.get_mut(state) {
                set.remove(&(since, key));
                if set.is_empty() {
                    self.by_state.remove(state);
                }
            }
        }
        if let Some((state, since)) = new.filter(|(s, _)| !s.ty.is_terminal()) {
            self.by_state
                .entry(state.clone())
                .or_default()
                .insert((since, key));
        }
    }

    /// When the longest-waiting run of each non-terminal state entered it.
    pub fn oldest(&self) -> impl Iterator<Item = (&StateKey, Micros)> + '_ {
        self.by_state
            .iter()
            .filter_map(|(state, set)| set.first().map(|&(since, _)| (state, since)))
    }

    /// Runs in `state` that entered it at or before `before`, longest waiting first.
    pub fn entered_before(
        &self,
        state: &StateKey,
        before: Micros,
    ) -> impl Iterator<Item = (Micros, RunKey)> + '_ {
        self.by_state
            .get(state)
            .into_iter()
            .flat_map(move |set| set.range(..=(before, RunKey::MAX)).copied())
    }
}
