//! Which Redis to read: the `--redis-url` given, or one built from the variables the Prefect
//! server itself reads (`PREFECT_REDIS_MESSAGING_HOST`, `_PORT`, `_DB`, `_USERNAME`,
//! `_PASSWORD`, `_SSL`, with prefect-redis's defaults for those unset), so the exporter
//! started in the server's environment finds the same Redis. The URL may hold a password: it
//! stays a [`Secret`] and is shown only through [`display_url`].

use thiserror::Error;

use crate::model::secret::{display_url, Secret};

/// Prefect's variables, in the order they are read.
pub const HOST: &str = "PREFECT_REDIS_MESSAGING_HOST";
/// The port (default 6379).
pub const PORT: &str = "PREFECT_REDIS_MESSAGING_PORT";
/// The database number (default 0).
pub const DB: &str = "PREFECT_REDIS_MESSAGING_DB";
/// The user name (default `default`).
pub const USERNAME: &str = "PREFECT_REDIS_MESSAGING_USERNAME";
/// The password (default none). Never shown.
pub const PASSWORD: &str = "PREFECT_REDIS_MESSAGING_PASSWORD";
/// `true`/`1` for TLS (`rediss://`).
pub const SSL: &str = "PREFECT_REDIS_MESSAGING_SSL";

/// A Redis location that cannot be used; never holds the password.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    /// One of Prefect's variables has a bad value.
    #[error("{variable}: {reason}")]
    Variable {
        /// The variable.
        variable: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL is not a Redis URL.
    #[error("'{url}' {reason}")]
    Url {
        /// The URL, without its user information.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks a Redis URL: `redis://` or `rediss://` with a host, as the client parses it.
pub fn check_url(url: &Secret) -> Result<(), TargetError> {
    let bad = |reason: &str| TargetError::Url {
        url: display_url(url.expose()),
        reason: reason.to_owned(),
    };
    let text = url.expose();
    if !(text.starts_with("redis://") || text.starts_with("rediss://")) {
        return Err(bad("is not a redis:// or rediss:// URL"));
    }
    ::redis::Client::open(text)
        .map(drop)
        .map_err(|_| bad("is not a valid Redis URL"))
}

/// The URL Prefect's variables describe (read through `var`), or `None` when none of host,
/// port and database is set.
pub fn from_prefect_env(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, TargetError> {
    let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if get(HOST).is_none() && get(PORT).is_none() && get(DB).is_none() {
        return Ok(None);
    }
    let bad = |variable: &'static str, reason: &str| TargetError::Variable {
        variable,
        reason: reason.to_owned(),
    };
    let host = get(HOST).unwrap_or_else(|| "localhost".to_owned());
    let host = host.trim();
    if host.contains(['/', '@', '?', '#', ' ']) {
        return Err(bad(HOST, "is not a host name"));
    }
    let port: u16 = match get(PORT) {
        Some(p) => p
            .trim()
            .parse()
            .map_err(|_| bad(PORT, "is not a port number"))?,
        None => 6379,
    };
    let db: u32 = match get(DB) {
        Some(d) => d
            .trim()
            .parse()
            .map_err(|_| bad(DB, "is not a database number"))?,
        None => 0,
    };
    let tls = match get(SSL).map(|s| s.trim().to_ascii_lowercase()) {
        None => false,
        Some(s) if ["true", "1", "yes", "on"].contains(&s.as_str()) => true,
        Some(s) if ["false", "0", "no", "off"].contains(&s.as_str()) => false,
        Some(_) => return Err(bad(SSL, "is not true or false")),
    };
    let user = get(USERNAME).unwrap_or_else(|| "default".to_owned());
    let auth = match var(PASSWORD).filter(|p| !p.is_empty()) {
        Some(password) => format!("{}:{}@", encode(&user), encode(&password)),
        None => String::new(),
    };
    let scheme = if tls { "rediss" } else { "redis" };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(Some(Secret::new(format!(
        "{scheme}://{auth}{host}:{port}/{db}"
    ))))
}

/// Percent-encodes user information (everything but unreserved characters).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn prefect_variables_make_the_url_prefect_would_use() {
        assert_eq!(from_prefect_env(env(&[])).unwrap(), None);
        let url = from_prefect_env(env(&[(HOST, "r.internal"), (DB, "2")])).unwrap();
        assert_eq!(url.unwrap().expose(), "redis://r.internal:6379/2");
        let url = from_prefect_env(env(&[
            (PORT, "6380"),
            (USERNAME, "ex porter"),
            (PASSWORD, "p@ss:w/rd"),
            (SSL, "True"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            url.expose(),
            "rediss://ex%20porter:p%40ss%3Aw%2Frd@localhost:6380/0"
        );
        check_url(&url).unwrap();
    }

    #[test]
    fn bad_variables_are_named_and_the_password_is_never_shown() {
        let e = from_prefect_env(env(&[(PORT, "http")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "PREFECT_REDIS_MESSAGING_PORT: is not a port number"
        );
        let e = from_prefect_env(env(&[(HOST, "h"), (SSL, "maybe")])).unwrap_err();
        assert!(e.to_string().starts_with(SSL), "{e}");
        let e = check_url(&Secret::new("http://u:hunter2@h:1/0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "'http://h:1/0' is not a redis:// or rediss:// URL"
        );
        let e = check_url(&Secret::new("redis://u:hunter2@h:notaport/0")).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        check_url(&Secret::new("redis://127.0.0.1:6379/0")).unwrap();
    }
}
