//! The verification ledger: how many distinct events of each name the exporter holds, per
//! second of `occurred`, for the event names it subscribes to. Verification compares a
//! window of it with the server's stored counts.

use std::collections::{BTreeMap, HashMap};

use crate::model::time::{Micros, SECOND};
use crate::state::FastMap;

/// Distinct events of one second, by event name.
pub type Names = FastMap<Box<str>, u32>;

/// Distinct events per second of `occurred`, by event name.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    prefixes: Vec<&'static str>,
    seconds: BTreeMap<i64, Names>,
}

impl Ledger {
    /// A ledger of events whose names start with one of `prefixes`.
    pub fn new(prefixes: Vec<&'static str>) -> Ledger {
        Ledger {
            prefixes,
            seconds: BTreeMap::new(),
        }
    }

    /// A ledger of `prefixes` holding saved per-second counts.
    pub fn from_seconds(prefixes: Vec<&'static str>, seconds: BTreeMap<i64, Names>) -> Ledger {
        Ledger { prefixes, seconds }
    }

    /// The per-second counts, oldest first.
    pub fn seconds(&self) -> &BTreeMap<i64, Names> {
        &self.seconds
    }

    /// The prefixes it counts.
    pub fn prefixes(&self) -> &[&'static str] {
        &self.prefixes
    }

    /// Counts one distinct event (call only for events dedup saw for the first time).
    pub fn record(&mut self, name: &str, occurred: Micros) {
        if !self.prefixes.iter().any(|p| name.starts_with(p)) {
            return;
        }
        let bucket = self.seconds.entry(occurred.div_euclid(SECOND)).or_default();
        match bucket.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                bucket.insert(name.into(), 1);
            }
        }
    }

    /// Events held with `occurred` in `[from, to)` (whole seconds), by name.
    pub fn window(&self, from: Micros, to: Micros) -> HashMap<String, u64> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for bucket in self
            .seconds
            .range(from.div_euclid(SECOND)..to.div_euclid(SECOND))
            .map(|(_, b)| b)
        {
            for (name, n) in bucket {
                *out.entry(name.to_string()).or_default() += u64::from(*n);
            }
        }
        out
    }

    /// Forgets seconds before `before`.
    pub fn prune(&mut self, before: Micros) {
        let keep = self.seconds.split_off(&before.div_euclid(SECOND));
        self.seconds = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_sum_by_name_and_ignore_other_prefixes() {
        let mut ledger = Ledger::new(vec!["prefect.flow-run."]);
        ledger.record("prefect.flow-run.Running", 10 * SECOND + 5);
        ledger.record("prefect.flow-run.Running", 11 * SECOND);
        ledger.record("prefect.flow-run.Completed", 12 * SECOND);
        ledger.record("prefect.deployment.ready", 11 * SECOND);
        let w = ledger.window(10 * SECOND, 12 * SECOND);
        assert_eq!(w.len(), 1);
        assert_eq!(w["prefect.flow-run.Running"], 2);
        ledger.prune(11 * SECOND);
        assert_eq!(ledger.window(0, 20 * SECOND)["prefect.flow-run.Running"], 1);
    }
}
