//! Authentication of the exporter's HTTP API: a Bearer token (`--web-auth-token`) or HTTP
//! Basic checked against a bcrypt hash (`--web-basic-auth`, as in Prometheus' web.yml).
//!
//! Credentials are compared as keyed digests (HMAC-SHA256 under a key drawn at start) in
//! constant time, so neither their content nor their length leaks through timing. bcrypt
//! costs tens of milliseconds, so the digest of the last `Authorization` value that verified
//! is remembered and a repeated scrape skips bcrypt; verifications run one at a time on a
//! thread of their own, which neither the runtime nor shutdown waits for (a check outlives a
//! client that gave up, and still primes the cache when it passes). Costs above
//! [`MAX_BCRYPT_COST`] are refused at start. bcrypt reads only the first 72 bytes of a
//! password, which no hash reveals: the first accepted password longer than that is
//! reported once. Nothing here logs, prints or echoes a credential.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use base64::Engine;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::StatusCode;
use parking_lot::Mutex;
use ring::hmac;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::model::secret::Secret;
use crate::web::response::{error, HttpResponse};
use crate::web::Error;

type Digest = [u8; 32];

/// The highest bcrypt cost `--web-basic-auth` accepts. Each step doubles a check: on a 2-core
/// test machine cost 10 takes 0.13 s, 14 takes 1.7 s and 16 takes 6.7 s, so at 17 (13 s) a
/// first scrape outlasts Prometheus' default 10 s scrape timeout. (Prometheus'
/// exporter-toolkit accepts what Go's `bcrypt.Cost` accepts, 4 to 31, and cost 31 takes days.)
pub const MAX_BCRYPT_COST: u32 = 16;

/// The most password bytes bcrypt reads.
const BCRYPT_MAX_PASSWORD_BYTES: usize = 72;

/// What the API requires of a request.
pub struct Authenticator {
    key: hmac::Key,
    scheme: Scheme,
    /// Digest of the last `Authorization` value that passed bcrypt.
    last_verified: Arc<Mutex<Option<Digest>>>,
    /// One bcrypt verification at a time (the permit lives as long as the check's thread):
    /// failed guesses cannot take every core, even from clients that hang up.
    bcrypt_gate: Arc<Semaphore>,
    bcrypt_runs: AtomicU64,
    /// Whether a password longer than bcrypt reads has been reported.
    warned_long_password: Arc<AtomicBool>,
}

enum Scheme {
    Bearer { token: Digest },
    Basic { user: Digest, hash: Secret },
}

/// A refused request: 401 with a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization` header.
    Missing,
    /// Wrong scheme, malformed or wrong credentials.
    Invalid,
}

impl Authenticator {
    /// The authenticator the flags ask for (`None`: the API is open). A missing `:`, an
    /// empty user or token, or a malformed bcrypt hash is a configuration error.
    pub fn from_flags(
        token: Option<&Secret>,
        basic: Option<&Secret>,
    ) -> Result<Option<Authenticator>, Error> {
        let new_key = |flag| {
            hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .map_err(|_| config(flag, "no system randomness for the credential digest key"))
        };
        let (key, scheme) = match (token, basic) {
            (Some(token), _) => {
                if token.expose().is_empty() {
                    return Err(config("--web-auth-token", "must not be empty"));
                }
                let key = new_key("--web-auth-token")?;
                let token = digest(&key, token.expose().as_bytes());
                (key, Scheme::Bearer { token })
            }
            (None, Some(basic)) => {
                let (user, hash) = parse_basic(basic.expose())?;
                let key = new_key("--web-basic-auth")?;
                let user = digest(&key, user.as_bytes());
                let hash = Secret::new(hash);
                (key, Scheme::Basic { user, hash })
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(Authenticator {
            key,
            scheme,
            last_verified: Arc::new(Mutex::new(None)),
            bcrypt_gate: Arc::new(Semaphore::new(1)),
            bcrypt_runs: AtomicU64::new(0),
            warned_long_password: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// `bearer` or `basic`, for the start-up log.
    pub fn scheme_name(&self) -> &'static str {
        match self.scheme {
            Scheme::Bearer { .. } => "bearer",
            Scheme::Basic { .. } => "basic",
        }
    }

    /// Checks the request's `Authorization` header.
    pub async fn check(&self, headers: &HeaderMap) -> Result<(), Denied> {
        let value = headers
            .get(AUTHORIZATION)
            .ok_or(Denied::Missing)?
            .as_bytes();
        match &self.scheme {
            Scheme::Bearer { token } => {
                let given = credentials(value, "bearer").ok_or(Denied::Invalid)?;
                if bool::from(self.digest(given).ct_eq(token)) {
                    Ok(())
                } else {
                    Err(Denied::Invalid)
                }
            }
            Scheme::Basic { user, hash } => {
                let presented = self.digest(value);
                let remembered = *self.last_verified.lock();
                if remembered.is_some_and(|d| bool::from(d.ct_eq(&presented))) {
                    return Ok(());
                }
                let encoded = credentials(value, "basic").ok_or(Denied::Invalid)?;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| Denied::Invalid)?;
                let colon = decoded
                    .iter()
                    .position(|&b| b == b':')
                    .ok_or(Denied::Invalid)?;
                let user_matches = bool::from(self.digest(&decoded[..colon]).ct_eq(user));
                // bcrypt runs whatever the user name, so timing does not tell valid names.
                let check = Check {
                    password: decoded[colon + 1..].to_vec(),
                    hash: hash.clone(),
                    user_matches,
                    presented,
                };
                if self.bcrypt(check).await {
                    Ok(())
                } else {
                    Err(Denied::Invalid)
                }
            }
        }
    }

    /// The 401 response for `denied`.
    pub fn challenge(&self, denied: Denied) -> HttpResponse {
        let message = match denied {
            Denied::Missing => "authentication required",
            Denied::Invalid => "invalid credentials",
        };
        let mut response = error(StatusCode::UNAUTHORIZED, message);
        let challenge = match self.scheme {
            Scheme::Bearer { .. } => HeaderValue::from_static("Bearer"),
            Scheme::Basic { .. } => {
                HeaderValue::from_static("Basic realm=\"prefect-events-exporter\"")
            }
        };
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        response
    }

    /// bcrypt verifications run so far (each costs tens of milliseconds).
    #[cfg(test)]
    fn bcrypt_runs(&self) -> u64 {
        self.bcrypt_runs.load(Ordering::Relaxed)
    }

    fn digest(&self, bytes: &[u8]) -> Digest {
        digest(&self.key, bytes)
    }

    /// Runs `check` on a thread of its own, after the one before it; true when the user
    /// matched and bcrypt verified the password. The thread remembers a pass itself, so a
    /// check finishing after its client left still spares the next request.
    async fn bcrypt(&self, check: Check) -> bool {
        let Ok(turn) = self.bcrypt_gate.clone().acquire_owned().await else {
            return false;
        };
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let (done, result) = tokio::sync::oneshot::channel();
        let remember = Remember {
            last_verified: self.last_verified.clone(),
            warned_long_password: self.warned_long_password.clone(),
            _turn: turn,
        };
        let spawned = std::thread::Builder::new()
            .name("bcrypt".into())
            .spawn(move || {
                let _ = done.send(remember.run(check));
            });
        if let Err(e) = spawned {
            warn!(error = %e, "Cannot start a bcrypt check; the request is refused.");
            return false;
        }
        result.await.unwrap_or(false)
    }
}

/// One password to check: never logged (no `Debug`).
struct Check {
    password: Vec<u8>,
    hash: Secret,
    user_matches: bool,
    presented: Digest,
}

/// What a check's thread updates, and its turn at the gate (released when it ends).
struct Remember {
    last_verified: Arc<Mutex<Option<Digest>>>,
    warned_long_password: Arc<AtomicBool>,
    _turn: OwnedSemaphorePermit,
}

impl Remember {
    /// Runs bcrypt (blocking) and records a pass.
    fn run(self, check: Check) -> bool {
        debug!("Checking a password with bcrypt.");
        let verified = bcrypt::verify(&check.password, check.hash.expose()).unwrap_or(false);
        let passed = verified && check.user_matches;
        if passed {
            *self.last_verified.lock() = Some(check.presented);
            if check.password.len() > BCRYPT_MAX_PASSWORD_BYTES
                && !self.warned_long_password.swap(true, Ordering::Relaxed)
            {
                warn!("A password longer than 72 bytes was accepted: bcrypt reads only the first 72, so every password that shares them is accepted too. Configure a password of at most 72 bytes.");
            }
        }
        passed
    }
}

fn digest(key: &hmac::Key, bytes: &[u8]) -> Digest {
    let mut out = [0; 32];
    out.copy_from_slice(hmac::sign(key, bytes).as_ref());
    out
}

/// The credentials after `scheme` (matched case-insensitively) and its spaces.
fn credentials<'a>(value: &'a [u8], scheme: &str) -> Option<&'a [u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    if !value[..space].eq_ignore_ascii_case(scheme.as_bytes()) {
        return None;
    }
    let rest = &value[space..];
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

fn config(flag: &'static str, message: &str) -> Error {
    Error::Config {
        flag,
        message: message.to_owned(),
    }
}

/// Splits `user:bcrypt_hash` and checks the hash's form (no value appears in errors).
fn parse_basic(value: &str) -> Result<(&str, &str), Error> {
    const FLAG: &str = "--web-basic-auth";
    let (user, hash) = value.split_once(':').ok_or_else(|| {
        config(
            FLAG,
            "expected USER:BCRYPT_HASH, found no ':' (hash the password with `htpasswd -nbBC 10 USER PASS` or python bcrypt)",
        )
    })?;
    if user.is_empty() {
        return Err(config(FLAG, "the user name before ':' is empty"));
    }
    let cost = hash
        .parse::<bcrypt::HashParts>()
        .map_err(|_| {
            config(
                FLAG,
                "the part after ':' is not a bcrypt hash ($2b$, a two-digit cost, '$' and 53 characters)",
            )
        })?
        .get_cost();
    if !(4..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(config(
            FLAG,
            &format!("the bcrypt cost is {cost}; it must be from 4 to {MAX_BCRYPT_COST} (each step doubles the time of a check; at {} one takes longer than a scrape timeout)", MAX_BCRYPT_COST + 1),
        ));
    }
    Ok((user, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(authorization).unwrap());
        headers
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers(&format!("Basic {encoded}"))
    }

    #[tokio::test]
    async fn bearer_token_must_match_exactly() {
        let token = Secret::new("s3cret-token");
        let auth = Authenticator::from_flags(Some(&token), None)
            .unwrap()
            .unwrap();
        assert_eq!(auth.check(&HeaderMap::new()).await, Err(Denied::Missing));
        assert_eq!(auth.check(&headers("Bearer s3cret-token")).await, Ok(()));
        assert_eq!(auth.check(&headers("bearer  s3cret-token")).await, Ok(()));
        for wrong in [
            "Bearer s3cret-toke",
            "Bearer s3cret-token2",
            "Basic s3cret-token",
            "s3cret-token",
            "Bearer ",
        ] {
            assert_eq!(
                auth.check(&headers(wrong)).await,
                Err(Denied::Invalid),
                "{wrong}"
            );
        }
        let challenge = auth.challenge(Denied::Invalid);
        assert_eq!(challenge.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    #[tokio::test]
    async fn basic_auth_runs_bcrypt_once_for_repeated_good_credentials() {
        let hash = bcrypt::hash("hunter2", 4).unwrap();
        let flag = Secret::new(format!("prom:{hash}"));
        let auth = Authenticator::from_flags(None, Some(&flag))
            .unwrap()
            .unwrap();
        assert_eq!(
            auth.check(&basic("prom", "wrong")).await,
            Err(Denied::Invalid)
        );
        assert_eq!(
            auth.check(&basic("other", "hunter2")).await,
            Err(Denied::Invalid)
        );
        assert_eq!(
            auth.bcrypt_runs(),
            2,
            "bcrypt runs even for an unknown user"
        );
        for _ in 0..5 {
            assert_eq!(auth.check(&basic("prom", "hunter2")).await, Ok(()));
        }
        assert_eq!(auth.bcrypt_runs(), 3, "good credentials are remembered");
        assert_eq!(
            auth.check(&basic("prom", "wrong")).await,
            Err(Denied::Invalid)
        );
        assert_eq!(
            auth.bcrypt_runs(),
            4,
            "bad credentials are never remembered"
        );
        assert_eq!(auth.check(&headers("Bearer x")).await, Err(Denied::Invalid));
        assert_eq!(
            auth.challenge(Denied::Missing).headers()[WWW_AUTHENTICATE],
            "Basic realm=\"prefect-events-exporter\""
        );
    }

    #[test]
    fn malformed_flags_are_config_errors_that_never_echo_the_value() {
        let cases = [
            "nocolon",
            ":$2b$04$abcdefghijklmnopqrstuuJtpZ6p3cb0uA1GvjhJq0LmnGUlCx0Ga",
            "prom:notahash",
            "prom:$2b$04$tooshort",
            "prom:$2b$99$abcdefghijklmnopqrstuuJtpZ6p3cb0uA1GvjhJq0LmnGUlCx0Ga",
        ];
        for value in cases {
            let Err(Error::Config { flag, message }) =
                Authenticator::from_flags(None, Some(&Secret::new(value)))
            else {
                panic!("{value} should be rejected");
            };
            assert_eq!(flag, "--web-basic-auth");
            assert!(
                !message.contains(value) && !message.contains("prom"),
                "{message}"
            );
        }
        assert!(Authenticator::from_flags(Some(&Secret::new("")), None).is_err());
        assert!(Authenticator::from_flags(None, None).unwrap().is_none());
    }
}
