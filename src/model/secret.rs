//! Secrets (API keys, auth strings) that never reach logs, `Debug` output or errors.

use std::fmt;

/// A secret string: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret::new(s))
    }
}

/// How the exporter authenticates to Prefect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// No authentication (OSS without an auth string).
    None,
    /// OSS `PREFECT_API_AUTH_STRING` (`user:pass`): HTTP Basic for REST, the raw string as the
    /// websocket token.
    AuthString(Secret),
    /// Cloud `PREFECT_API_KEY`: Bearer for REST, the key as the websocket token.
    ApiKey(Secret),
}

impl Credentials {
    /// The value of an `Authorization` header, if any.
    pub fn authorization(&self) -> Option<String> {
        use base64::Engine;
        match self {
            Credentials::None => None,
            Credentials::AuthString(s) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s.expose())
            )),
            Credentials::ApiKey(s) => Some(format!("Bearer {}", s.expose())),
        }
    }

    /// The token of the websocket `auth` message (`null` without credentials).
    pub fn ws_token(&self) -> Option<&str> {
        match self {
            Credentials::None => None,
            Credentials::AuthString(s) | Credentials::ApiKey(s) => Some(s.expose()),
        }
    }
}

/// `url` as it may be shown in logs and errors: without a `user:password@` part (Prefect
/// credentials belong in the flags, but a URL may carry them too).
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let creds = Credentials::AuthString(Secret::new("admin:hunter2"));
        assert!(!format!("{creds:?}").contains("hunter2"));
        assert_eq!(format!("{}", Secret::new("x")), "[redacted]");
        assert_eq!(creds.authorization().unwrap(), "Basic YWRtaW46aHVudGVyMg==");
        assert_eq!(creds.ws_token(), Some("admin:hunter2"));
        let key = Credentials::ApiKey(Secret::new("pnu_abc"));
        assert_eq!(key.authorization().unwrap(), "Bearer pnu_abc");
        assert_eq!(Credentials::None.ws_token(), None);
    }

    #[test]
    fn urls_are_shown_without_user_info() {
        assert_eq!(
            display_url("https://admin:hunter2@prefect.example/api"),
            "https://prefect.example/api"
        );
        assert_eq!(
            display_url("http://127.0.0.1:4200/api?x=a@b"),
            "http://127.0.0.1:4200/api?x=a@b"
        );
        assert_eq!(display_url("ws://u@h:1/events/out"), "ws://h:1/events/out");
        assert_eq!(display_url("not a url"), "not a url");
    }
}
