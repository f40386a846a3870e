//! One exporter per consumer group. Two exporters reading one group would split the stream
//! between them and both count wrong, so each process reads under a name of its own
//! ([`consumer_name`]), which it also gives its connection (`CLIENT SETNAME`), and, before it
//! reads or claims anything, looks at the group's other consumers (`XINFO CONSUMERS`). One is
//! live when a connection of its name sent a command less than [`LIVE_IDLE`] ago (`CLIENT
//! LIST`; a reading exporter blocks at most a second per `XREADGROUP`). The consumer's own
//! `idle` in `XINFO CONSUMERS` cannot tell: before Redis 7.2 it is the time since entries
//! were last delivered to it, which grows on a quiet stream while the reader is well (measured
//! on 7.0.15: blocking and history reads do not reset it). Where `CLIENT LIST` is not allowed
//! (an ACL without `@admin`), that `idle` stands in, with a warning: then a reader of a quiet
//! stream can look gone.
//!
//! A killed predecessor's connection closes with its process, but a hung one (or one cut off by
//! the network) is listed until Redis notices, so a live-looking consumer is re-checked for
//! [`GRACE`], by when a dead one has idled past the threshold. One still live after that
//! refuses the group: the exporter reads and claims nothing, `/readyz` says why, naming
//! `--redis-group`, an ERROR is logged once, and the check repeats; when the other goes, the
//! exporter proceeds. While reading, the check repeats every [`CHECK_EVERY`] (and on each
//! reconnect): two exporters that got past it together (started at the same moment) both see
//! the other, and the one whose name sorts later yields, so exactly one keeps the group. An
//! exporter that starts later is refused by its own check and never joins the group, so the
//! one reading is not disturbed.
//!
//! Consumers that are gone (idle past the threshold) are deleted (`XGROUP DELCONSUMER`) once
//! their pending entries are claimed (`XAUTOCLAIM` takes them from any consumer), so the
//! group does not collect a name per restart.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::model::untrusted::{escape, SHOWN_CHARS};
use crate::source::redis::reply::{self, ConsumerInfo};
use crate::source::redis::{protocol, Session};
use crate::source::{StreamError, StreamObserver};

/// A consumer that read less than this long ago is live.
pub const LIVE_IDLE: Duration = Duration::from_secs(5);
/// How long a live-looking consumer is re-checked before the group is refused: long enough
/// for one killed just before the check to idle past [`LIVE_IDLE`].
pub const GRACE: Duration = Duration::from_secs(6);
/// Re-check period within the grace.
const GRACE_POLL: Duration = Duration::from_millis(250);
/// Re-check period while refused.
const REFUSED_POLL: Duration = Duration::from_secs(2);
/// How often a reading exporter looks at the group's other consumers.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// This process's consumer name: `prefect-events-exporter-<hostname>-<pid>-<random>`,
/// unique per process (and per host, for operators reading `XINFO CONSUMERS`).
pub fn consumer_name() -> String {
    format!(
        "prefect-events-exporter-{}-{}-{:08x}",
        hostname(),
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The host's name, reduced to `[A-Za-z0-9._-]` (at most 64 characters), or `host`.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "host".to_owned()
    } else {
        clean
    }
}

/// What tells a live consumer from a gone one.
#[derive(Debug)]
pub enum Clients {
    /// The connected clients by name, with the fewest seconds since one sent a command
    /// (`CLIENT LIST`).
    Listed(HashMap<String, u64>),
    /// `CLIENT LIST` is not allowed: the consumers' own `idle` stands in.
    Unlisted,
}

impl Clients {
    fn is_live(&self, consumer: &ConsumerInfo) -> bool {
        match self {
            Clients::Listed(clients) => clients
                .get(&consumer.name)
                .is_some_and(|idle_s| Duration::from_secs(*idle_s) < LIVE_IDLE),
            Clients::Unlisted => Duration::from_millis(consumer.idle_ms) < LIVE_IDLE,
        }
    }

    /// Another live consumer of the group (the first by name), if any.
    pub fn live_other<'a>(
        &self,
        consumers: &'a [ConsumerInfo],
        me: &str,
    ) -> Option<&'a ConsumerInfo> {
        consumers
            .iter()
            .filter(|c| c.name != me && self.is_live(c))
            .min_by(|a, b| a.name.cmp(&b.name))
    }

    /// While reading: the live consumer this one yields the group to, the first by name
    /// when it sorts before `me` (the other sees the same set and keeps reading).
    pub fn yields_to<'a>(
        &self,
        consumers: &'a [ConsumerInfo],
        me: &str,
    ) -> Option<&'a ConsumerInfo> {
        self.live_other(consumers, me)
            .filter(|other| other.name.as_str() < me)
    }

    /// Other consumers that are gone.
    fn departed<'a>(
        &'a self,
        consumers: &'a [ConsumerInfo],
        me: &'a str,
    ) -> impl Iterator<Item = &'a ConsumerInfo> {
        consumers
            .iter()
            .filter(move |c| c.name != me && !self.is_live(c))
    }
}

/// Why the group is refused: one line naming the other consumer and `--redis-group`.
pub fn refusal(other: &str, group: &str, stream: &str) -> String {
    format!(
        "another consumer ({}) is reading group '{}' of stream '{}': give each exporter its own --redis-group",
        escape(other, SHOWN_CHARS),
        escape(group, SHOWN_CHARS),
        escape(stream, SHOWN_CHARS),
    )
}

/// Whether the group is refused now, so the ERROR is logged once per refusal, not per check.
#[derive(Debug, Default)]
pub struct Refusal {
    refused: bool,
    /// `CLIENT LIST` was refused and that was logged.
    unlisted: bool,
}

impl Refusal {
    /// The group is refused for `reason`: unready, not connected, logged once.
    pub fn refuse(&mut self, reason: &str, observer: &dyn StreamObserver) {
        if !self.refused {
            error!("{reason}");
        }
        self.refused = true;
        observer.exclusive(Some(reason));
    }

    /// The group is free again (or never was refused).
    fn clear(&mut self, observer: &dyn StreamObserver) {
        if self.refused {
            info!("No other consumer reads the group any more; reading it.");
            observer.exclusive(None);
        }
        self.refused = false;
    }
}

/// What the periodic check found.
pub enum Check {
    /// Keep reading.
    Alone,
    /// Another live consumer keeps the group; this one stops reading.
    Yield(String),
}

impl Session<'_> {
    /// Names this connection after the consumer, so other exporters see it is live. A server
    /// that refuses is logged, not fatal (the consumer's own `idle` then speaks for it).
    pub async fn name_connection(&mut self) -> Result<(), StreamError> {
        let mut cmd = ::redis::cmd("CLIENT");
        cmd.arg("SETNAME").arg(self.consumer);
        match self.query(&cmd).await {
            Ok(_) => Ok(()),
            Err(StreamError::Protocol(text)) => {
                warn!(error = %text, "Cannot name the Redis connection; other exporters judge this one by its reads only.");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The group's consumers (none when the stream or the group does not exist yet), and
    /// what tells which of them are live.
    async fn consumers(
        &mut self,
        refusal: &mut Refusal,
    ) -> Result<(Vec<ConsumerInfo>, Clients), StreamError> {
        let consumers = self.group_consumers().await?;
        if consumers.iter().all(|c| c.name == self.consumer) {
            return Ok((consumers, Clients::Listed(HashMap::new())));
        }
        let mut cmd = ::redis::cmd("CLIENT");
        cmd.arg("LIST").arg("TYPE").arg("normal");
        let clients = match self.query(&cmd).await {
            Ok(value) => Clients::Listed(reply::client_list(&value).map_err(protocol)?),
            Err(StreamError::Protocol(text)) => {
                if !refusal.unlisted {
                    warn!(error = %text, "CLIENT LIST is not allowed: another exporter in the group is judged by its reads only, and one reading a quiet stream can look gone.");
                }
                refusal.unlisted = true;
                Clients::Unlisted
            }
            Err(e) => return Err(e),
        };
        Ok((consumers, clients))
    }

    /// `XINFO CONSUMERS` (none when the stream or the group does not exist yet).
    async fn group_consumers(&mut self) -> Result<Vec<ConsumerInfo>, StreamError> {
        let mut cmd = ::redis::cmd("XINFO");
        cmd.arg("CONSUMERS")
            .arg(&self.config.stream)
            .arg(&self.config.group);
        match self.query(&cmd).await {
            Ok(value) => reply::consumers(value).map_err(protocol),
            Err(StreamError::Protocol(text))
                if text.contains("no such key") || text.contains("NOGROUP") =>
            {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Waits until no other consumer of the group is live, refusing the group (through
    /// `refusal`) while one stays live past the grace. `Ok(false)` at shutdown.
    pub async fn wait_alone(
        &mut self,
        refusal: &mut Refusal,
        shutdown: &CancellationToken,
    ) -> Result<bool, StreamError> {
        let started = Instant::now();
        loop {
            let (consumers, clients) = self.consumers(refusal).await?;
            let Some(other) = clients.live_other(&consumers, self.consumer) else {
                refusal.clear(self.observer);
                return Ok(true);
            };
            if started.elapsed() >= GRACE {
                let reason = refusal_text(&other.name, self);
                refusal.refuse(&reason, self.observer);
            }
            let wait = if started.elapsed() >= GRACE {
                REFUSED_POLL
            } else {
                GRACE_POLL
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Deletes the consumers that are gone and hold no pending entry (they were claimed).
    pub async fn forget_departed(&mut self, refusal: &mut Refusal) -> Result<(), StreamError> {
        let (consumers, clients) = self.consumers(refusal).await?;
        let gone: Vec<ConsumerInfo> = clients
            .departed(&consumers, self.consumer)
            .filter(|c| c.pending == 0)
            .cloned()
            .collect();
        for gone in gone {
            let mut cmd = ::redis::cmd("XGROUP");
            cmd.arg("DELCONSUMER")
                .arg(&self.config.stream)
                .arg(&self.config.group)
                .arg(&gone.name);
            self.query(&cmd).await?;
            info!(
                consumer = %escape(&gone.name, SHOWN_CHARS),
                idle_s = gone.idle_ms / 1000,
                "Removed a departed consumer from the group."
            );
        }
        Ok(())
    }

    /// The check while reading: yield to another live consumer whose name sorts first;
    /// alone, claim what departed consumers left pending and forget them.
    pub async fn check_group(
        &mut self,
        position: &mut super::Position,
        refusal: &mut Refusal,
    ) -> Result<Check, StreamError> {
        let (consumers, clients) = self.consumers(refusal).await?;
        if let Some(other) = clients.yields_to(&consumers, self.consumer) {
            warn!(
                other = %escape(&other.name, SHOWN_CHARS),
                "Another exporter reads the same consumer group; this one stops reading."
            );
            return Ok(Check::Yield(refusal_text(&other.name, self)));
        }
        if clients.live_other(&consumers, self.consumer).is_some() {
            // The other yields at its own check; its pending entries are its own until then.
            return Ok(Check::Alone);
        }
        let mut departed = clients.departed(&consumers, self.consumer).peekable();
        if departed.peek().is_none() {
            return Ok(Check::Alone);
        }
        if departed.any(|c| c.pending > 0) {
            self.claim_pending(position).await?;
        }
        self.forget_departed(refusal).await?;
        Ok(Check::Alone)
    }
}

fn refusal_text(other: &str, session: &Session<'_>) -> String {
    refusal(other, &session.config.group, &session.config.stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(name: &str, idle_ms: u64) -> ConsumerInfo {
        ConsumerInfo {
            name: name.to_owned(),
            pending: 0,
            idle_ms,
        }
    }

    #[test]
    fn names_are_unique_per_process_and_plain() {
        let (a, b) = (consumer_name(), consumer_name());
        assert_ne!(a, b);
        let prefix = format!(
            "prefect-events-exporter-{}-{}-",
            hostname(),
            std::process::id()
        );
        assert!(a.starts_with(&prefix), "{a}");
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')));
    }

    fn listed(clients: &[(&str, u64)]) -> Clients {
        Clients::Listed(clients.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect())
    }

    #[test]
    fn a_consumer_is_live_while_a_connection_of_its_name_sends_commands() {
        let me = "m";
        let threshold = LIVE_IDLE.as_secs();
        // Delivery idle says nothing here: "q" reads a quiet stream, "k" was killed.
        let group = [
            consumer("m", 0),
            consumer("q", 600_000),
            consumer("k", 0),
            consumer("h", 0),
        ];
        let clients = listed(&[("m", 0), ("q", 1), ("h", threshold)]);
        assert_eq!(
            clients.live_other(&group, me).map(|c| c.name.as_str()),
            Some("q")
        );
        let gone: Vec<&str> = clients
            .departed(&group, me)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(gone, ["k", "h"], "killed (no connection) and hung (silent)");
        assert_eq!(listed(&[("m", 0)]).live_other(&group[..1], me), None);
    }

    #[test]
    fn without_client_list_the_consumers_own_idle_stands_in() {
        let live_ms = u64::try_from(LIVE_IDLE.as_millis()).unwrap() - 1;
        let group = [
            consumer("m", 0),
            consumer("z", live_ms),
            consumer("a", 5_000),
        ];
        let clients = Clients::Unlisted;
        assert_eq!(
            clients.live_other(&group, "m").map(|c| c.name.as_str()),
            Some("z")
        );
        let gone: Vec<&str> = clients
            .departed(&group, "m")
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(gone, ["a"]);
    }

    #[test]
    fn of_two_live_readers_exactly_one_yields() {
        let group = [consumer("exporter-a", 100), consumer("exporter-b", 200)];
        let clients = listed(&[("exporter-a", 0), ("exporter-b", 1)]);
        assert_eq!(clients.yields_to(&group, "exporter-a"), None);
        assert_eq!(
            clients
                .yields_to(&group, "exporter-b")
                .map(|c| c.name.as_str()),
            Some("exporter-a")
        );
    }

    #[test]
    fn the_refusal_names_the_flag_and_escapes_what_redis_sent() {
        let text = refusal("x\u{1b}[31m", "g", "events");
        assert!(text.contains("--redis-group"), "{text}");
        assert!(text.contains("group 'g' of stream 'events'"), "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
