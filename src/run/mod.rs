//! The commands, wired from the layers below: `run` (one start-up and shutdown sequence in
//! [`service`], events from [`replay`] files or a [`live`] Prefect server), the offline
//! `replay` ([`offline`]) and `record` ([`record`]). Settings come in as plain values
//! ([`settings`]); `serve-replay` is the fake server's own.

pub(crate) mod live;
pub(crate) mod load;
pub mod offline;
pub mod record;
pub(crate) mod replay;
pub(crate) mod service;
pub mod settings;

use tokio_util::sync::CancellationToken;

use crate::error::Result;
use settings::{RunSettings, SourceSettings};

/// `run`: serves the counts until `shutdown`, with events from recorded files or a server.
pub async fn run(settings: RunSettings, shutdown: CancellationToken) -> Result<()> {
    match settings.source.clone() {
        SourceSettings::Replay(files) => replay::run(settings, files, shutdown).await,
        SourceSettings::Server(server) => live::run(settings, server, shutdown).await,
    }
}
