//! The HTTP server's own metric families: open and refused connections, refused requests,
//! stream clients connected and dropped.
//! Registered in the exporter's [`Metrics`](crate::expose::collect::Metrics) when the API
//! starts.

use std::sync::Arc;

use crate::expose::catalogue::Def;
use crate::expose::collect::{counter, gauge, Collector, Family, Text};
use crate::expose::exposition::Kind;
use crate::web::limits::{HttpStats, Rejection};
use crate::web::stream::StreamStats;

/// The HTTP server's families: open and refused connections, refused requests.
pub struct HttpCollector {
    stats: Arc<HttpStats>,
    streams: Arc<StreamStats>,
    open: Def,
    refused: Def,
    rejected: Def,
    stream_clients: Def,
    stream_dropped: Def,
}

impl HttpCollector {
    /// The families of the server counting into `stats`, and of its event stream.
    pub fn new(stats: Arc<HttpStats>, streams: Arc<StreamStats>) -> HttpCollector {
        let open = Def::new(
            "prefect_exporter_http_connections_open",
            "HTTP connections open now.",
            Kind::Gauge,
            &[],
        );
        let refused = Def::new(
            "prefect_exporter_http_connections_refused_total",
            "HTTP connections closed at once because --web-max-connections were open.",
            Kind::Counter,
            &[],
        );
        let rejected = Def::new(
            "prefect_exporter_http_requests_rejected_total",
            "HTTP requests refused before routing, by reason (unauthorized, body_too_large, body_timeout).",
            Kind::Counter,
            &["reason"],
        );
        let stream_clients = Def::new(
            "prefect_exporter_http_stream_clients",
            "Clients connected to /api/v1/stream now.",
            Kind::Gauge,
            &[],
        );
        let stream_dropped = Def::new(
            "prefect_exporter_http_stream_clients_dropped_total",
            "Stream clients closed with an overflow event because they read too slowly.",
            Kind::Counter,
            &[],
        );
        HttpCollector {
            stats,
            streams,
            open,
            refused,
            rejected,
            stream_clients,
            stream_dropped,
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
                &self.rejected,
                Rejection::ALL.map(|r| {
                    (
                        vec![r.label().to_owned()],
                        counter(stats.rejected(r) as f64),
                    )
                }),
            ),
            Family::new(
                &self.stream_clients,
                [(Vec::<Text>::new(), gauge(self.streams.open() as f64))],
            ),
            Family::new(
                &self.stream_dropped,
                [(Vec::<Text>::new(), counter(self.streams.dropped() as f64))],
            ),
        ]
    }
}
