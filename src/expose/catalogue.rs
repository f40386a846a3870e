//! Every metric family of the state and the exporter's own condition: name, help text, type
//! and labels, in one place. (The HTTP server defines its own families beside it, in
//! `web::metrics`.)

use crate::expose::exposition::Kind;
use crate::model::event::RunKind;

/// One metric family's definition.
pub struct Def {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) kind: Kind,
    pub(crate) labels: Vec<String>,
}

impl Def {
    /// A family `name` of `kind` with `help` text and these label names, in order.
    pub fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: Kind,
        labels: &[&str],
    ) -> Def {
        Def {
            name: name.into(),
            help: help.into(),
            kind,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn with_labels(mut self, extra: &[String]) -> Def {
        self.labels.extend(extra.iter().cloned());
        self
    }
}

/// The family definitions of one run kind.
pub(crate) struct KindDefs {
    pub(crate) runs: Def,
    pub(crate) entries: Def,
    pub(crate) transitions: Def,
    pub(crate) self_transitions: Def,
    pub(crate) active: Def,
    pub(crate) oldest_age: Def,
    pub(crate) durations: Def,
}

impl KindDefs {
    pub(crate) fn new(kind: RunKind, group_by: &[String]) -> KindDefs {
        let stem = kind.metric_stem();
        let what = match kind {
            RunKind::FlowRun => "flow runs",
            RunKind::TaskRun => "task runs",
        };
        let state = ["state_type", "state_name"];
        KindDefs {
            runs: Def::new(
                format!("prefect_{stem}s"),
                format!("Number of {what} currently in each state (all runs the server knows)."),
                Kind::Gauge,
                &state,
            ),
            entries: Def::new(
                format!("prefect_{stem}_state_entries_total"),
                format!("Entries of {what} into a state (self-transitions excluded)."),
                Kind::Counter,
                &state,
            )
            .with_labels(group_by),
            transitions: Def::new(
                format!("prefect_{stem}_transitions_total"),
                format!(
                    "State transitions of {what} by type (from_state_type is empty for new runs)."
                ),
                Kind::Counter,
                &["from_state_type", "to_state_type"],
            ),
            self_transitions: Def::new(
                format!("prefect_{stem}_self_transitions_total"),
                format!("State events of {what} whose state equals the previous one."),
                Kind::Counter,
                &state,
            ),
            active: Def::new(
                format!("prefect_{stem}s_active"),
                format!("Tracked {what} in a non-terminal state."),
                Kind::Gauge,
                &state,
            )
            .with_labels(group_by),
            oldest_age: Def::new(
                format!("prefect_{stem}_oldest_state_age_seconds"),
                format!("Age of the oldest tracked {what} in each non-terminal state."),
                Kind::Gauge,
                &state,
            ),
            durations: Def::new(
                format!("prefect_{stem}_state_duration_seconds"),
                format!("Time {what} spent in a state, observed when they leave it."),
                Kind::Histogram,
                &state,
            ),
        }
    }
}

/// The exporter's own family definitions.
pub(crate) struct ExporterDefs {
    pub(crate) received: Def,
    pub(crate) duplicates: Def,
    pub(crate) rejected: Def,
    pub(crate) connected: Def,
    pub(crate) reconnects: Def,
    pub(crate) last_event: Def,
    pub(crate) delay: Def,
    pub(crate) chain_gaps: Def,
    pub(crate) tracked: Def,
    pub(crate) dedup_ids: Def,
    pub(crate) dedup_evicted: Def,
    pub(crate) retired: Def,
    pub(crate) evicted: Def,
    pub(crate) folded: Def,
    pub(crate) windows: Def,
    pub(crate) repaired: Def,
    pub(crate) repair_truncated: Def,
    pub(crate) deficit: Def,
    pub(crate) corrections: Def,
    pub(crate) drift: Def,
    pub(crate) reconciliations: Def,
    pub(crate) backfill_gaps: Def,
    pub(crate) state_writes: Def,
    pub(crate) state_bytes: Def,
    pub(crate) state_write_seconds: Def,
    pub(crate) state_pause_seconds: Def,
}

impl ExporterDefs {
    pub(crate) fn new() -> ExporterDefs {
        ExporterDefs {
            received: Def::new(
                "prefect_exporter_events_received_total",
                "Frames decoded as events, by kind (state or other); duplicates included.",
                Kind::Counter,
                &["kind"],
            ),
            duplicates: Def::new(
                "prefect_exporter_events_duplicate_total",
                "Events dropped because their id was already seen.",
                Kind::Counter,
                &[],
            ),
            rejected: Def::new(
                "prefect_exporter_events_rejected_total",
                "Frames rejected as unusable, by reason; each is skipped.",
                Kind::Counter,
                &["reason"],
            ),
            connected: Def::new(
                "prefect_exporter_stream_connected",
                "1 while the events stream is subscribed.",
                Kind::Gauge,
                &[],
            ),
            reconnects: Def::new(
                "prefect_exporter_stream_reconnects_total",
                "Reconnections of the events stream, by reason.",
                Kind::Counter,
                &["reason"],
            ),
            last_event: Def::new(
                "prefect_exporter_last_event_timestamp_seconds",
                "Newest occurred timestamp applied (Unix seconds).",
                Kind::Gauge,
                &[],
            ),
            delay: Def::new(
                "prefect_exporter_event_delay_seconds",
                "Wall-clock time between an event's occurred timestamp and applying it.",
                Kind::Histogram,
                &[],
            ),
            chain_gaps: Def::new(
                "prefect_exporter_chain_gaps_total",
                "State events of tracked runs whose follows names an event never seen (a drop).",
                Kind::Counter,
                &[],
            ),
            tracked: Def::new(
                "prefect_exporter_tracked_resources",
                "Runs held in memory.",
                Kind::Gauge,
                &[],
            ),
            dedup_ids: Def::new(
                "prefect_exporter_dedup_ids",
                "Event ids held by the deduplication window.",
                Kind::Gauge,
                &[],
            ),
            dedup_evicted: Def::new(
                "prefect_exporter_dedup_evicted_total",
                "Event ids dropped from a full deduplication window before aging out.",
                Kind::Counter,
                &[],
            ),
            retired: Def::new(
                "prefect_exporter_runs_retired_total",
                "Terminal runs dropped from memory after the retention period (their counts stay).",
                Kind::Counter,
                &[],
            ),
            evicted: Def::new(
                "prefect_exporter_runs_evicted_total",
                "Runs dropped from memory because --max-tracked-runs were held; their contribution to the totals stays.",
                Kind::Counter,
                &[],
            ),
            folded: Def::new(
                "prefect_exporter_series_folded_total",
                "Events whose state name or label set was folded into __other__ by the series cap.",
                Kind::Counter,
                &["what"],
            ),
            windows: Def::new(
                "prefect_exporter_verify_windows_total",
                "Closed windows of events compared with the server's stored events, by result.",
                Kind::Counter,
                &["result"],
            ),
            repaired: Def::new(
                "prefect_exporter_events_repaired_total",
                "Events recovered by repair that the live stream had dropped.",
                Kind::Counter,
                &[],
            ),
            repair_truncated: Def::new(
                "prefect_exporter_repair_truncated_total",
                "Re-fetches of a window's stored events stopped at a page limit (per window, or per verification interval) before the server's last page.",
                Kind::Counter,
                &["limit"],
            ),
            deficit: Def::new(
                "prefect_exporter_runs_deficit",
                "Runs by which a state's total is below zero (a lost or late event); the exposed totals hold at zero until verification or reconciliation settles it.",
                Kind::Gauge,
                &["kind", "state_type"],
            ),
            corrections: Def::new(
                "prefect_exporter_reconcile_corrections_total",
                "Runs moved by reconciliation with the server's REST counts, by state type.",
                Kind::Counter,
                &["state_type"],
            ),
            drift: Def::new(
                "prefect_exporter_reconcile_last_drift",
                "Server count minus exporter count at the last reconciliation, by state type.",
                Kind::Gauge,
                &["state_type"],
            ),
            reconciliations: Def::new(
                "prefect_exporter_reconciliations_total",
                "Reconciliations applied (the first is the start-up baseline).",
                Kind::Counter,
                &[],
            ),
            backfill_gaps: Def::new(
                "prefect_exporter_backfill_gaps_total",
                "Stream outages longer than the server's 15-minute backfill, or Redis stream entries lost before they were read.",
                Kind::Counter,
                &[],
            ),
            state_writes: Def::new(
                "prefect_exporter_state_file_writes_total",
                "State-file writes, by result (ok or error); only with --state-file.",
                Kind::Counter,
                &["result"],
            ),
            state_bytes: Def::new(
                "prefect_exporter_state_file_bytes",
                "Size of the last state file written.",
                Kind::Gauge,
                &[],
            ),
            state_write_seconds: Def::new(
                "prefect_exporter_state_file_write_seconds",
                "Duration of the last state-file write (on the writer thread, not the ingestion path).",
                Kind::Gauge,
                &[],
            ),
            state_pause_seconds: Def::new(
                "prefect_exporter_state_file_pause_seconds",
                "How long ingestion paused to hand the last snapshot to the writer.",
                Kind::Gauge,
                &[],
            ),
        }
    }
}
