//! The HTTP server's own metric families: open, shed and refused connections, refused
//! requests.
//! Registered in the exporter's [`Metrics`](crate::expose::collect::Metrics) when the API
//! starts.

use std::sync::Arc;

use crate::expose::catalogue::Def;
use crate::expose::collect::{counter, gauge, Collector, Family, Text};
use crate::expose::exposition::Kind;
use crate::web::limits::{HttpStats, Rejection};

/// The HTTP server's families: open, shed and refused connections, refused requests.
pub struct HttpCollector {
    stats: Arc<HttpStats>,
    open: Def,
    refused: Def,
    shed: Def,
    rejected: Def,
}

impl HttpCollector {
    /// The families of the server counting into `stats`.
    pub fn new(stats: Arc<HttpStats>) -> HttpCollector {
        let open = Def::new(
            "prefect_exporter_http_connections_open",
            "HTTP connections open now.",
            Kind::Gauge,
            &[],
        );
        let refused = Def::new(
            "prefect_exporter_http_connections_refused_total",
            "HTTP connections closed at once because --web-max-connections were open and all had sent a request.",
            Kind::Counter,
            &[],
        );
        let shed = Def::new(
            "prefect_exporter_http_connections_shed_total",
            "HTTP connections that had sent no request, closed at --web-max-connections to admit a newer one.",
            Kind::Counter,
            &[],
        );
        let rejected = Def::new(
            "prefect_exporter_http_requests_rejected_total",
            "HTTP requests refused before routing, by reason (unauthorized, body_too_large, body_timeout).",
            Kind::Counter,
            &["reason"],
        );
        HttpCollector {
            stats,
            open,
            refused,
            shed,
            rejected,
        }
    }
}

impl Collector for HttpCollector {
    fn families(&self) -> Vec<Family<'_>> {
        let stats = &self.stats;
        vec![
            Family::new(
                &self.open,
                [(Vec::<Text>::new(), gauge(stats.open() as f64))],
            ),
            Family::new(
                &self.refused,
                [(Vec::<Text>::new(), counter(stats.refused() as f64))],
            ),
            Family::new(
                &self.shed,
                [(Vec::<Text>::new(), counter(stats.shed() as f64))],
            ),
            Family::new(
                &self.rejected,
                Rejection::ALL.map(|r| {
                    (
                        vec![r.label().to_owned()],
                        counter(stats.rejected(r) as f64),
                    )
                }),
            ),
        ]
    }
}
