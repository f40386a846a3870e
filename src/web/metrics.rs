//! The HTTP server's own metric families (open and refused connections, refused requests):
//! every name, help text and label in [`HttpStats::new`]. They are `prometheus` library
//! metrics updated as connections come and go (a few atomic operations per connection, none
//! per event), registered in the exporter's registry
//! ([`Metrics::registry`](crate::expose::collect::Metrics::registry)) when the API starts.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::web::limits::Rejection;

/// What the HTTP server refused and holds: the HTTP families' values.
#[derive(Clone, Debug)]
pub struct HttpStats {
    open: IntGauge,
    refused: IntCounter,
    rejected_by_reason: IntCounterVec,
    /// The children of `rejected_by_reason`, by [`Rejection::ALL`] order.
    rejected: [IntCounter; 3],
}

impl HttpStats {
    /// The HTTP families, at zero and not registered anywhere yet.
    ///
    /// # Panics
    ///
    /// Never: the names and labels below are valid (every test that starts a server checks
    /// it).
    pub fn new() -> HttpStats {
        let open = IntGauge::new(
            "prefect_exporter_http_connections_open",
            "HTTP connections open now.",
        )
        .expect("valid name");
        let refused = IntCounter::new(
            "prefect_exporter_http_connections_refused_total",
            "HTTP connections closed at once because --web-max-connections were open.",
        )
        .expect("valid name");
        let rejected_by_reason = IntCounterVec::new(
            Opts::new(
                "prefect_exporter_http_requests_rejected_total",
                "HTTP requests refused before routing, by reason (unauthorized, body_too_large, body_timeout).",
            ),
            &["reason"],
        )
        .expect("valid name and label");
        let rejected = Rejection::ALL.map(|r| rejected_by_reason.with_label_values(&[r.label()]));
        HttpStats {
            open,
            refused,
            rejected_by_reason,
            rejected,
        }
    }

    /// Adds the HTTP families to `registry`; fails when their names are already there.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.open.clone()))?;
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.rejected_by_reason.clone()))
    }

    /// Counts a refused request.
    pub fn reject(&self, reason: Rejection) {
        self.counter(reason).inc();
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> i64 {
        self.open.get()
    }

    /// Connections closed at once because the cap was reached.
    #[cfg(test)]
    pub(crate) fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// Counts a connection admitted.
    pub(crate) fn opened(&self) {
        self.open.inc();
    }

    /// Counts an admitted connection closed.
    pub(crate) fn closed(&self) {
        self.open.dec();
    }

    /// Counts a connection refused at the cap.
    pub(crate) fn count_refused(&self) {
        self.refused.inc();
    }

    fn counter(&self, reason: Rejection) -> &IntCounter {
        let [unauthorized, body_too_large, body_timeout] = &self.rejected;
        match reason {
            Rejection::Unauthorized => unauthorized,
            Rejection::BodyTooLarge => body_too_large,
            Rejection::BodyTimeout => body_timeout,
        }
    }
}

impl Default for HttpStats {
    fn default() -> HttpStats {
        HttpStats::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expose::exposition::{Encoder, Format};

    #[test]
    fn registered_families_render_with_their_values() {
        let registry = Registry::new();
        let stats = HttpStats::new();
        stats.register(&registry).unwrap();
        stats.opened();
        stats.opened();
        stats.closed();
        stats.count_refused();
        stats.reject(Rejection::BodyTooLarge);
        stats.reject(Rejection::BodyTooLarge);
        assert_eq!((stats.open(), stats.refused()), (1, 1), "values read back");
        let mut encoder = Encoder::new(Format::Prometheus);
        for family in registry.gather() {
            encoder.gathered(&family);
        }
        let samples: Vec<String> = encoder
            .finish()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            samples,
            [
                "prefect_exporter_http_connections_open 1",
                "prefect_exporter_http_connections_refused_total 1",
                "prefect_exporter_http_requests_rejected_total{reason=\"body_timeout\"} 0",
                "prefect_exporter_http_requests_rejected_total{reason=\"body_too_large\"} 2",
                "prefect_exporter_http_requests_rejected_total{reason=\"unauthorized\"} 0",
            ]
        );
        assert!(
            stats.register(&registry).is_err(),
            "a second registration is refused"
        );
    }
}
