//! The state's families (runs by state, entries, transitions, active runs, oldest ages,
//! durations), built at scrape time from a copy of the aggregates (names and help in
//! [`crate::expose::catalogue`]). They are the high-cardinality part of a scrape (one series
//! per state and label set), written straight to text by the encoder; the exporter's own
//! families are library metrics in the registry (`exporter_metrics`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::expose::catalogue::{Def, KindDefs};
use crate::expose::collect::{by_series, counter, gauge, histogram, sorted, Family, Text};
use crate::expose::report::shown_runs;
use crate::model::event::{RunKind, StateKey, StateType};
use crate::model::time::{as_seconds, Clock, Micros};
use crate::state::counts::KindCounts;
use crate::state::labels::{LabelSet, SeriesId};
use crate::state::Shared;

/// When the longest-waiting run of each non-terminal state entered it, by state.
type Oldest = Vec<(StateKey, Micros)>;

/// Builds the state's families from the shared state at scrape time.
pub struct StateCollector {
    shared: Arc<Shared>,
    clock: Clock,
    kinds: [KindDefs; 2],
}

impl StateCollector {
    /// A collector over `shared`, with ages measured by `clock`.
    pub fn new(shared: Arc<Shared>, clock: Clock, group_by: &[String]) -> StateCollector {
        let kinds = [
            KindDefs::new(RunKind::FlowRun, group_by),
            KindDefs::new(RunKind::TaskRun, group_by),
        ];
        StateCollector {
            shared,
            clock,
            kinds,
        }
    }

    /// Every definition, both run kinds (for the registry's descriptors).
    pub(crate) fn defs(&self) -> impl Iterator<Item = &Def> {
        self.kinds.iter().flat_map(KindDefs::all)
    }

    fn kind_families<'s>(
        &'s self,
        kind: RunKind,
        counts: &KindCounts,
        oldest: &[(StateKey, Micros)],
        series: &[LabelSet],
        dims: usize,
        out: &mut Vec<Family<'s>>,
    ) {
        let defs = &self.kinds[kind.index()];
        let state_labels = |s: &StateKey| -> Vec<Text> {
            vec![Text::Static(s.ty.as_str()), Text::Shared(s.name.clone())]
        };
        let with_series = |s: &StateKey, id: SeriesId| -> Vec<Text> {
            let mut labels = Vec::with_capacity(2 + dims);
            labels.push(Text::Static(s.ty.as_str()));
            labels.push(Text::Shared(s.name.clone()));
            match series.get(id.0 as usize) {
                Some(values) => labels.extend(values.iter().cloned().map(Text::Shared)),
                None => labels.extend((0..dims).map(|_| Text::Static(""))),
            }
            labels
        };

        let mut current: BTreeMap<&StateKey, i64> =
            counts.current.iter().map(|(k, v)| (k, *v)).collect();
        let defaults: Vec<StateKey> = StateType::ALL
            .iter()
            .map(|t| StateKey {
                ty: *t,
                name: Arc::from(t.default_name()),
            })
            .collect();
        for key in &defaults {
            current.entry(key).or_insert(0);
        }
        out.push(Family::new(
            &defs.runs,
            current
                .into_iter()
                .map(|(k, v)| (state_labels(k), gauge(shown_runs(v).0 as f64))),
        ));

        out.push(Family::new(
            &defs.entries,
            by_series(&counts.entries)
                .into_iter()
                .map(|((k, s), v)| (with_series(k, *s), counter(*v as f64))),
        ));

        let mut transitions = Vec::new();
        for (from_index, row) in counts.transitions.iter().enumerate() {
            let from = StateType::ALL.get(from_index).map_or("", |t| t.as_str());
            for (to_index, &n) in row.iter().enumerate() {
                if n > 0 {
                    transitions.push((
                        vec![
                            from.to_owned(),
                            StateType::ALL[to_index].as_str().to_owned(),
                        ],
                        counter(n as f64),
                    ));
                }
            }
        }
        out.push(Family::new(&defs.transitions, transitions));

        out.push(Family::new(
            &defs.self_transitions,
            sorted(&counts.self_transitions)
                .into_iter()
                .map(|(k, v)| (state_labels(k), counter(*v as f64))),
        ));

        out.push(Family::new(
            &defs.active,
            by_series(&counts.active)
                .into_iter()
                .map(|((k, s), v)| (with_series(k, *s), gauge(*v as f64))),
        ));

        let now = (self.clock)();
        out.push(Family::new(
            &defs.oldest_age,
            oldest
                .iter()
                .map(|(k, since)| (state_labels(k), gauge(as_seconds((now - since).max(0))))),
        ));

        out.push(Family::new(
            &defs.durations,
            sorted(&counts.durations)
                .into_iter()
                .map(|(k, h)| (state_labels(k), histogram(h))),
        ));
    }
}

impl StateCollector {
    /// Every family of the tracked run kinds, built from a copy of the aggregates.
    pub fn families(&self) -> Vec<Family<'_>> {
        let (kinds, series_values, dims) = self.shared.with_counts(|counts| {
            let kinds: Vec<(RunKind, KindCounts, Oldest)> = self
                .shared
                .kinds()
                .map(|k| (k, counts.kind_counts(k), counts.oldest_waiting(k)))
                .collect();
            let series_values = counts.series.sets().0.to_vec();
            (kinds, series_values, counts.series.dims().len())
        });
        let mut out = Vec::new();
        for (kind, counts, oldest) in &kinds {
            self.kind_families(*kind, counts, oldest, &series_values, dims, &mut out);
        }

        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::collect::Metrics;
    use crate::expose::exposition::Format;
    use crate::expose::resources::{ResourceList, ResourceQuery};
    use crate::model::time::SECOND;
    use crate::state::status::Status;
    use crate::state::test_support::{apply, at, tracker, waiting_runs};
    use StateType::Pending;

    /// The value of the sample `name` whose labels include `labels`, in Prometheus text.
    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, ""));
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                (n == name && all).then(|| value.parse().unwrap())
            })
    }

    #[test]
    fn ages_durations_and_stuck_lists_with_a_fixed_clock() {
        let mut t = tracker();
        apply(&mut t, &waiting_runs());
        let now = at(100);
        let clock: Clock = Arc::new(move || now);
        let metrics = Metrics::new(t.shared().clone(), Arc::new(Status::new()), clock);
        let families = metrics.render(Format::Prometheus);
        let age = |ty: &str, name: &str| {
            sample(
                &families,
                "prefect_flow_run_oldest_state_age_seconds",
                &[("state_type", ty), ("state_name", name)],
            )
        };
        assert_eq!(
            age("PENDING", "Pending"),
            Some(90.0),
            "run 1 entered PENDING 90 s ago"
        );
        assert_eq!(
            age("RUNNING", "Running"),
            Some(85.0),
            "run 3; run 4 completed"
        );
        assert_eq!(
            age("COMPLETED", "Completed"),
            None,
            "terminal states have no age"
        );

        let duration = "prefect_flow_run_state_duration_seconds";
        let histogram = |ty: &str, name: &str, le: &str| {
            let labels = [("state_type", ty), ("state_name", name)];
            let with_le = [labels[0], labels[1], ("le", le)];
            (
                sample(&families, &format!("{duration}_count"), &labels),
                sample(&families, &format!("{duration}_sum"), &labels),
                sample(&families, &format!("{duration}_bucket"), &with_le),
            )
        };
        assert_eq!(
            histogram("PENDING", "Pending", "10.0"),
            (Some(1.0), Some(30.0), Some(0.0))
        );
        assert_eq!(
            histogram("PENDING", "Pending", "30.0"),
            (Some(1.0), Some(30.0), Some(1.0))
        );
        assert_eq!(
            histogram("RUNNING", "Running", "30.0"),
            (Some(1.0), Some(60.0), Some(0.0))
        );
        assert_eq!(
            histogram("RUNNING", "Running", "60.0"),
            (Some(1.0), Some(60.0), Some(1.0))
        );

        let active = sample(
            &families,
            "prefect_flow_runs_active",
            &[("state_type", "PENDING")],
        );
        assert_eq!(active, Some(2.0));

        let query = ResourceQuery {
            kind: RunKind::FlowRun,
            state_type: Some(Pending),
            state_name: None,
            older_than: Some(85 * SECOND),
            limit: 100,
        };
        let stuck = ResourceList::build(t.shared(), &query, now);
        assert_eq!(stuck.total_matching, 1);
        assert_eq!(
            stuck.resources[0].id,
            "prefect.flow-run.00000000-0000-4000-8000-000000000001"
        );
        assert_eq!(stuck.resources[0].state.age_seconds, 90.0);
        let query = ResourceQuery {
            older_than: Some(60 * SECOND),
            ..query
        };
        let both: Vec<String> = ResourceList::build(t.shared(), &query, now)
            .resources
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(
            both,
            vec![
                "prefect.flow-run.00000000-0000-4000-8000-000000000001",
                "prefect.flow-run.00000000-0000-4000-8000-000000000002"
            ],
            "oldest first"
        );
    }
}
