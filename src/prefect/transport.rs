//! One bounded REST call to Prefect, for the endpoints of [`super::api`].
//!
//! Every call is bounded in what it may cost: a whole-request timeout; a size limit on the
//! response body, checked as the body streams in (an endless or huge body is cut off and
//! refused, never held); at most [`RETRIES`] retries of 429/502/503/504 and transport errors,
//! waiting the normal backoff or a sane `Retry-After` (a value that is not a finite,
//! non-negative number of seconds is ignored, and the wait is capped); and the shutdown
//! token, which ends a call and its retry waits at once.
//!
//! A server that cannot be reached is logged at once (once per distinct cause, with the URL
//! without credentials and the cause: connection refused, DNS, TLS…), and its recovery once;
//! an error the server answered is returned for the caller to log. Credentials
//! go only into the `Authorization` header, marked sensitive; text the server sent (error
//! bodies) is escaped before it is shown. Each attempt is counted with its outcome and
//! duration, when the client was given its metric handles ([`Transport::with_stats`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::secret::{display_url, Credentials};
use crate::model::untrusted::{escape, escape_bytes, SHOWN_CHARS};
use crate::prefect::accounting::{endpoint, ApiStats, Code};

/// Requests are retried this many times on retryable answers.
pub const RETRIES: u32 = 5;
/// Whole-request timeout: connecting, sending, and reading the full response body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait a `Retry-After` header can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Most bytes of an error response read (to show its start); the rest is never read.
const ERROR_BODY_MAX: usize = 4 * 1024;

/// A failed REST call.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The server refused the credentials.
    #[error("{url}: authentication failed (HTTP {status}); check --api-key / --auth-string")]
    Auth {
        /// The endpoint (without credentials).
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// The endpoint (without credentials).
        url: String,
        /// The status code.
        status: u16,
        /// The start of the response body, escaped.
        body: String,
    },
    /// The request did not complete.
    #[error("{url}: {message}")]
    Transport {
        /// The endpoint (without credentials).
        url: String,
        /// What went wrong, with its causes.
        message: String,
    },
    /// The response body was larger than the endpoint's limit; the rest was not read.
    #[error("{url}: response body over {limit} bytes; refused")]
    TooLarge {
        /// The endpoint (without credentials).
        url: String,
        /// The limit in bytes.
        limit: usize,
    },
    /// The answer was not what Prefect sends.
    #[error("{url}: unexpected response: {message}")]
    Decode {
        /// The endpoint (without credentials).
        url: String,
        /// What was wrong with it.
        message: String,
    },
    /// The service is shutting down.
    #[error("cancelled: shutting down")]
    Cancelled,
}

impl ApiError {
    /// What identifies this failure for logging once: the same failure again is not logged
    /// again (a body or a page token that changes does not make it new).
    fn log_key(&self) -> String {
        match self {
            ApiError::Auth { status, .. } => format!("auth {status}"),
            ApiError::Status { url, status, .. } => format!("status {status} {}", strip_query(url)),
            ApiError::Transport { message, .. } => format!("transport {message}"),
            ApiError::TooLarge { url, .. } => format!("too large {}", strip_query(url)),
            ApiError::Decode { url, .. } => format!("decode {}", strip_query(url)),
            ApiError::Cancelled => String::new(),
        }
    }
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// The wait a `Retry-After` value asks for: a finite, non-negative number of seconds, at
/// most [`MAX_RETRY_AFTER`]; `None` (use the normal backoff) for anything else (`NaN`,
/// `inf`, negative, an HTTP date, garbage).
pub fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let seconds: f64 = value.parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64())).ok()
}

/// The normal wait before retry `attempt` (1-based): 0.5 s, 1 s, 2 s, 4 s, 8 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.clamp(1, 6))
}

/// An error and its causes, joined (`error sending request: client error (Connect): tcp
/// connect error: Connection refused (os error 111)`), without the URL reqwest adds.
fn with_causes(error: reqwest::Error) -> String {
    let timeout = error.is_timeout();
    let error = error.without_url();
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    if timeout && !parts.iter().any(|p| p.contains("timed out")) {
        parts.push(format!(
            "timed out after {} s",
            REQUEST_TIMEOUT.as_secs_f64()
        ));
    }
    parts.join(": ")
}

/// What one attempt ended with: a body, or an error and whether (and when) to retry.
enum Attempt {
    Done(Vec<u8>),
    Failed {
        error: ApiError,
        retry: Option<Option<Duration>>,
    },
}

/// The HTTP side of one Prefect API: base URL, client, shutdown token, failure log.
#[derive(Clone, Debug)]
pub struct Transport {
    base: String,
    shown: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    failing: Arc<Mutex<Option<String>>>,
    stats: Option<ApiStats>,
}

impl Transport {
    /// A transport for `api_url` whose calls end when `shutdown` is cancelled.
    pub fn new(
        api_url: &str,
        credentials: &Credentials,
        shutdown: CancellationToken,
    ) -> Result<Transport, ApiError> {
        let shown = display_url(api_url.trim_end_matches('/'));
        let mut headers = HeaderMap::new();
        if let Some(value) = credentials.authorization() {
            let mut value = HeaderValue::from_str(&value).map_err(|_| ApiError::Decode {
                url: shown.clone(),
                message: "the credentials contain characters not allowed in a header".to_owned(),
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ApiError::Transport {
                url: shown.clone(),
                message: with_causes(e),
            })?;
        Ok(Transport {
            base: api_url.trim_end_matches('/').to_owned(),
            shown,
            client,
            shutdown,
            failing: Arc::new(Mutex::new(None)),
            stats: None,
        })
    }

    /// The same transport, counting every request attempt in `stats`.
    pub fn with_stats(mut self, stats: ApiStats) -> Transport {
        self.stats = Some(stats);
        self
    }

    fn record(&self, endpoint: &'static str, code: Code, started: Instant) {
        if let Some(stats) = &self.stats {
            stats.record(endpoint, code, started.elapsed());
        }
    }

    /// The API URL as it may be shown (without credentials).
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// Waits `duration`, or fails with [`ApiError::Cancelled`] at shutdown.
    pub async fn pause(&self, duration: Duration) -> Result<(), ApiError> {
        tokio::select! {
            () = self.shutdown.cancelled() => Err(ApiError::Cancelled),
            () = tokio::time::sleep(duration) => Ok(()),
        }
    }

    /// POSTs `body` (or GETs without one) to `path` and decodes the answer, reading at most
    /// `limit` bytes of it; retries what is retryable; ends at shutdown.
    pub async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&Value>,
        limit: usize,
    ) -> Result<T, ApiError> {
        let url = format!("{}{path}", self.base);
        let shown = format!("{}{path}", self.shown);
        let endpoint = endpoint(path);
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let (outcome, code) = tokio::select! {
                () = self.shutdown.cancelled() => {
                    self.record(endpoint, Code::Cancelled, started);
                    return Err(ApiError::Cancelled);
                }
                outcome = self.attempt(&url, &shown, body, limit) => outcome,
            };
            self.record(endpoint, code, started);
            let (error, retry_after) = match outcome {
                Attempt::Done(bytes) => {
                    self.note_success();
                    return serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
                        url: shown,
                        message: escape(&e.to_string(), SHOWN_CHARS),
                    });
                }
                Attempt::Failed { error, retry } => {
                    self.note_failure(&error, attempt + 1);
                    match retry {
                        Some(retry_after) if attempt < RETRIES => (error, retry_after),
                        _ => return Err(error),
                    }
                }
            };
            attempt += 1;
            let delay = retry_after.unwrap_or_else(|| backoff(attempt));
            debug!(error = %error, attempt, delay_ms = delay.as_millis() as u64, "Retrying a REST call.");
            self.pause(delay).await?;
        }
    }

    /// One request and how it ended (the `code` it is counted under).
    async fn attempt(
        &self,
        url: &str,
        shown: &str,
        body: Option<&Value>,
        limit: usize,
    ) -> (Attempt, Code) {
        let request = match body {
            Some(body) => self.client.post(url).json(body),
            None => self.client.get(url),
        };
        let transport = |e: reqwest::Error| ApiError::Transport {
            url: shown.to_owned(),
            message: with_causes(e),
        };
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                let code = Code::of_send_error(&e);
                let failed = Attempt::Failed {
                    error: transport(e),
                    retry: Some(None),
                };
                return (failed, code);
            }
        };
        let status = response.status();
        let code = Code::Status(status.as_u16());
        if status.is_success() {
            return match read_limited(&mut response, limit, true).await {
                Ok(Some(bytes)) => (Attempt::Done(bytes), code),
                Ok(None) => {
                    let failed = Attempt::Failed {
                        error: ApiError::TooLarge {
                            url: shown.to_owned(),
                            limit,
                        },
                        retry: None,
                    };
                    (failed, Code::Body)
                }
                Err(e) => {
                    let code = Code::of_body_error(&e);
                    let failed = Attempt::Failed {
                        error: transport(e),
                        retry: Some(None),
                    };
                    (failed, code)
                }
            };
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let failed = Attempt::Failed {
                error: ApiError::Auth {
                    url: shown.to_owned(),
                    status: status.as_u16(),
                },
                retry: None,
            };
            return (failed, code);
        }
        let wait = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let retryable = matches!(status.as_u16(), 429 | 502 | 503 | 504);
        let start = read_limited(&mut response, ERROR_BODY_MAX, false)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let failed = Attempt::Failed {
            error: ApiError::Status {
                url: shown.to_owned(),
                status: status.as_u16(),
                body: escape_bytes(&start, SHOWN_CHARS),
            },
            retry: retryable.then_some(wait),
        };
        (failed, code)
    }

    /// Logs a failed attempt: a transport failure (the server cannot be reached) at once,
    /// unless it is the same as the last one; an answer the server gave is for the caller
    /// to log when the retries are spent.
    fn note_failure(&self, error: &ApiError, attempt: u32) {
        if !matches!(error, ApiError::Transport { .. }) {
            debug!(error = %error, attempt, "A Prefect API request failed.");
            return;
        }
        let key = error.log_key();
        let mut failing = self.failing.lock();
        if failing.as_deref() == Some(key.as_str()) {
            debug!(error = %error, attempt, "The Prefect API still cannot be reached.");
            return;
        }
        *failing = Some(key);
        drop(failing);
        warn!(error = %error, attempt, "Cannot reach the Prefect API; retrying.");
    }

    /// Logs, once, that the server answers again after a transport failure was logged.
    fn note_success(&self) {
        if self.failing.lock().take().is_some() {
            info!(api = %self.shown, "The Prefect API answers again.");
        }
    }
}

/// The response body, read chunk by chunk as it arrives, if it fits in `limit` bytes
/// (`None` when it does not: the rest is never read). With `strict` false, the first
/// `limit` bytes are returned instead.
async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
    strict: bool,
) -> reqwest::Result<Option<Vec<u8>>> {
    let announced = response.content_length().unwrap_or(0);
    if strict && announced > limit as u64 {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(announced.min(limit as u64) as usize);
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            if strict {
                return Ok(None);
            }
            body.extend_from_slice(&chunk[..limit - body.len()]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_only_finite_non_negative_seconds_and_caps_them() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(" 1.5 "), Some(Duration::from_millis(1500)));
        assert_eq!(retry_after("0"), Some(Duration::ZERO));
        assert_eq!(retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&"9".repeat(400)), None, "parses to infinity");
        for bad in [
            "NaN",
            "nan",
            "inf",
            "-inf",
            "infinity",
            "-1",
            "1e9",
            "",
            "soon",
            "1.2.3",
            ".",
            "Wed, 21 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(retry_after(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_half_a_second() {
        let waits: Vec<u64> = (1..=5).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000]);
    }

    #[test]
    fn a_failure_is_logged_once_whatever_its_body_or_page_token() {
        let a = ApiError::Status {
            url: "http://h/api/events/filter/next?page-token=1".to_owned(),
            status: 503,
            body: "one".to_owned(),
        };
        let b = ApiError::Status {
            url: "http://h/api/events/filter/next?page-token=2".to_owned(),
            status: 503,
            body: "two".to_owned(),
        };
        assert_eq!(a.log_key(), b.log_key());
    }
}
