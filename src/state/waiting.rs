//! The index of runs waiting in non-terminal states, ordered by when they entered them: the
//! oldest-age gauges and stuck-run lists read its first entries instead of scanning every run.

use std::collections::BTreeSet;

use crate::model::time::Micros;
use crate::state::names::StateId;
use crate::state::record::RunKey;
use crate::state::FastMap;

/// Tracked runs in non-terminal states, ordered by when they entered the state.
#[derive(Clone, Debug, Default)]
pub struct Waiting {
    by_state: FastMap<StateId, BTreeSet<(Micros, Key)>>,
}

/// A run key as two words: 24-byte entries instead of 32 (a `u128` aligns to 16).
type Key = [u64; 2];

fn split(key: RunKey) -> Key {
    [(key >> 64) as u64, key as u64]
}

fn join(key: Key) -> RunKey {
    (u128::from(key[0]) << 64) | u128::from(key[1])
}

impl Waiting {
    /// Notes that run `key` moved from `old` (state, since) to `new`; the caller passes
    /// `None` for a terminal state (they are not indexed).
    pub fn moved(
        &mut self,
        key: RunKey,
        old: Option<(StateId, Micros)>,
        new: Option<(StateId, Micros)>,
    ) {
        if old == new {
            return;
        }
        if let Some((state, since)) = old {
            if let Some(set) = self.by_state.get_mut(&state) {
                set.remove(&(since, split(key)));
                if set.is_empty() {
                    self.by_state.remove(&state);
                }
            }
        }
        if let Some((state, since)) = new {
            self.by_state
                .entry(state)
                .or_default()
                .insert((since, split(key)));
        }
    }

    /// When the longest-waiting run of each non-terminal state entered it.
    pub fn oldest(&self) -> impl Iterator<Item = (StateId, Micros)> + '_ {
        self.by_state
            .iter()
            .filter_map(|(&state, set)| set.first().map(|&(since, _)| (state, since)))
    }

    /// Runs in `state` that entered it at or before `before`, longest waiting first.
    pub fn entered_before(
        &self,
        state: StateId,
        before: Micros,
    ) -> impl Iterator<Item = (Micros, RunKey)> + '_ {
        self.by_state
            .get(&state)
            .into_iter()
            .flat_map(move |set| set.range(..=(before, [u64::MAX; 2])))
            .map(|&(since, key)| (since, join(key)))
    }
}
