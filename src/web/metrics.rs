//! The HTTP server's counts (open, shed and refused connections, refused requests), kept in the
//! exporter's library metrics of [`HttpMetrics`] (names and help in the catalogue, registered
//! with the exporter's others): [`HttpStats`] is the server's handle on them.

use prometheus::{IntCounter, IntGauge};

use crate::expose::catalogue::HttpMetrics;
use crate::web::limits::Rejection;

/// What the HTTP server refused and holds: the HTTP families' values.
#[derive(Clone, Debug)]
pub struct HttpStats {
    open: IntGauge,
    refused: IntCounter,
    shed: IntCounter,
    /// The children of the rejected-requests family, by [`Rejection::ALL`] order.
    rejected: [IntCounter; 3],
}

impl HttpStats {
    /// The server's handle on `metrics` (the exporter's, from
    /// [`Metrics`](crate::expose::collect::Metrics)).
    pub(crate) fn new(metrics: &HttpMetrics) -> HttpStats {
        HttpStats {
            open: metrics.open.clone(),
            refused: metrics.refused.clone(),
            shed: metrics.shed.clone(),
            rejected: Rejection::ALL.map(|r| metrics.rejected.with_label_values(&[r.label()])),
        }
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

    /// Connections without a request closed to make room for a newcomer.
    #[cfg(test)]
    pub(crate) fn shed(&self) -> u64 {
        self.shed.get()
    }

    /// Counts a connection without a request closed to make room for a newcomer.
    pub(crate) fn count_shed(&self) {
        self.shed.inc();
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
    /// Counts kept in metrics no registry shows (for a server without an exporter's
    /// [`Metrics`](crate::expose::collect::Metrics), as in tests).
    ///
    /// # Panics
    ///
    /// Never: the catalogue's HTTP names and labels are valid (its tests check them).
    fn default() -> HttpStats {
        HttpStats::new(&HttpMetrics::new().expect("valid names and labels"))
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Registry;

    use super::*;
    use crate::expose::exposition::{Encoder, Format};

    #[test]
    fn registered_families_render_with_their_values() {
        let registry = Registry::new();
        let stats = HttpStats::new(&HttpMetrics::registered(&registry).unwrap());
        stats.opened();
        stats.opened();
        stats.closed();
        stats.count_refused();
        stats.count_shed();
        stats.reject(Rejection::BodyTooLarge);
        stats.reject(Rejection::BodyTooLarge);
        assert_eq!(
            (stats.open(), stats.refused(), stats.shed()),
            (1, 1, 1),
            "values read back"
        );
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
                "prefect_exporter_http_connections_shed_total 1",
                "prefect_exporter_http_requests_rejected_total{reason=\"body_timeout\"} 0",
                "prefect_exporter_http_requests_rejected_total{reason=\"body_too_large\"} 2",
                "prefect_exporter_http_requests_rejected_total{reason=\"unauthorized\"} 0",
                "prefect_exporter_http_stream_clients 0",
                "prefect_exporter_http_stream_clients_dropped_total 0",
            ]
        );
        assert!(
            HttpMetrics::registered(&registry).is_err(),
            "a second registration is refused"
        );
    }
}
