//! Query strings and path segments of the HTTP API: percent-decoding and the validated
//! parameters of `/api/v1/resources` and `/api/v1/stream`. Every bad value is an error
//! naming it.
//!
//! Decoding is `form_urlencoded` (query strings: `&`/`=` splitting, `+` as a space) and
//! `percent-encoding` (path segments). Both follow the WHATWG URL standard, which passes a
//! malformed escape (`%zz`, a lone `%`) through as text and replaces bytes that are not UTF-8;
//! the API refuses both with 400 instead of answering for a name nobody sent. So one check
//! stays here ([`well_formed_escapes`] and strict UTF-8, per pair in [`check_pairs`] so the
//! error can name the parameter) before the crates decode.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::expose::resources::{ResourceQuery, DEFAULT_LIMIT, MAX_LIMIT};
use crate::model::event::{RunKind, StateType};
use crate::model::time::{micros, parse_duration};
use crate::state::record::{run_key, RunKey};
use crate::web::response::echo;

/// A query the API refuses (400), with a message naming the bad parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(String);

/// Whether every `%` in `text` starts an escape of two hex digits.
fn well_formed_escapes(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// Decodes a path segment (`+` stays a plus); `None` when an escape is malformed or the
/// result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    if !well_formed_escapes(text) {
        return None;
    }
    percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

/// Splits and decodes `a=b&c=d` (`+` is a space, empty pairs are skipped, a key without `=`
/// has an empty value).
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, QueryError> {
    check_pairs(query)?;
    Ok(form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect())
}

/// Refuses a query `form_urlencoded` would decode leniently: the first pair whose key or
/// value has a malformed escape or is not UTF-8 once decoded, naming the parameter when its
/// key is readable. The pairs are split as `form_urlencoded` splits them (`&`, then the first
/// `=`); only the check splits here, the decoding is the crate's.
fn check_pairs(query: &str) -> Result<(), QueryError> {
    let strict =
        |text: &str| well_formed_escapes(text) && percent_decode_str(text).decode_utf8().is_ok();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !strict(key) {
            return Err(QueryError(
                "query is not valid percent-encoded UTF-8".to_owned(),
            ));
        }
        if !strict(value) {
            let (key, _) = form_urlencoded::parse(key.as_bytes())
                .next()
                .unwrap_or_default();
            return Err(QueryError(format!(
                "query parameter '{}' is not valid percent-encoded UTF-8",
                echo(&key)
            )));
        }
    }
    Ok(())
}

/// Validates the decoded query parameters of `/api/v1/resources`.
pub fn resource_query(params: &[(String, String)]) -> Result<ResourceQuery, QueryError> {
    let mut query = ResourceQuery {
        kind: RunKind::FlowRun,
        state_type: None,
        state_name: None,
        older_than: None,
        limit: DEFAULT_LIMIT,
    };
    for (key, value) in params {
        match key.as_str() {
            "kind" => query.kind = parse_kind(value)?,
            "state_type" => query.state_type = Some(parse_state_type(value)?),
            "state_name" => query.state_name = Some(value.clone()),
            "older_than" => {
                let duration = parse_duration(value)
                    .map_err(|e| err(format!("older_than: {}", echo(&e.to_string()))))?;
                query.older_than = Some(micros(duration));
            }
            "limit" => {
                query.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        err(format!(
                            "limit: must be a whole number from 1 to {MAX_LIMIT}"
                        ))
                    })?;
            }
            other => return Err(err(format!("unknown query parameter '{}'", echo(other)))),
        }
    }
    Ok(query)
}

/// What a client of `/api/v1/stream` follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFilter {
    /// The counts document, whenever it changes (no parameters).
    Counts,
    /// Every state event of one run, until it reaches a terminal state (`resource=`).
    Resource {
        /// The run's kind.
        kind: RunKind,
        /// Its key.
        key: RunKey,
        /// Its `prefect.resource.id` as given.
        id: String,
    },
    /// Every entry of runs of `kind` into matching states (`kind=`, `state_type=`,
    /// `state_name=`).
    Entries {
        /// Runs of this kind.
        kind: RunKind,
        /// Only states of this type.
        state_type: Option<StateType>,
        /// Only states of this name.
        state_name: Option<String>,
    },
}

/// Validates the decoded query parameters of `/api/v1/stream`.
pub fn stream_query(params: &[(String, String)]) -> Result<StreamFilter, QueryError> {
    let mut resource = None;
    let mut kind = None;
    let mut state_type = None;
    let mut state_name = None;
    for (key, value) in params {
        match key.as_str() {
            "resource" => {
                let run_kind = RunKind::ALL
                    .into_iter()
                    .find(|k| {
                        value.len() > k.resource_prefix().len()
                            && value.starts_with(k.resource_prefix())
                    })
                    .ok_or_else(|| {
                        err(format!(
                            "resource: '{}' is not a flow-run or task-run resource id",
                            echo(value)
                        ))
                    })?;
                resource = Some((run_kind, value.clone()));
            }
            "kind" => kind = Some(parse_kind(value)?),
            "state_type" => state_type = Some(parse_state_type(value)?),
            "state_name" => state_name = Some(value.clone()),
            other => return Err(err(format!("unknown query parameter '{}'", echo(other)))),
        }
    }
    match resource {
        Some(_) if kind.is_some() || state_type.is_some() || state_name.is_some() => Err(err(
            "resource: cannot be combined with kind, state_type or state_name".to_owned(),
        )),
        Some((kind, id)) => Ok(StreamFilter::Resource {
            kind,
            key: run_key(kind, &id).0,
            id,
        }),
        None if kind.is_none() && state_type.is_none() && state_name.is_none() => {
            Ok(StreamFilter::Counts)
        }
        None => Ok(StreamFilter::Entries {
            kind: kind.unwrap_or(RunKind::FlowRun),
            state_type,
            state_name,
        }),
    }
}

fn parse_kind(value: &str) -> Result<RunKind, QueryError> {
    RunKind::parse(value).ok_or_else(|| {
        err(format!(
            "kind: unknown kind '{}' (choices: flow-run, task-run)",
            echo(value)
        ))
    })
}

fn parse_state_type(value: &str) -> Result<StateType, QueryError> {
    StateType::parse(&value.to_ascii_uppercase())
        .ok_or_else(|| err(format!("state_type: unknown state type '{}'", echo(value))))
}

fn err(message: String) -> QueryError {
    QueryError(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries() {
        assert_eq!(
            parse_query("a=b%20c&d=e+f&g").unwrap(),
            vec![
                ("a".into(), "b c".into()),
                ("d".into(), "e f".into()),
                ("g".into(), "".into())
            ]
        );
        assert!(parse_query("a=%zz").is_err());
        assert!(parse_query("a=%4").is_err(), "escape cut short");
        assert!(parse_query("a=b%").is_err(), "lone percent at the end");
        assert!(parse_query("a=%ff").is_err(), "not UTF-8");
        assert!(
            parse_query("%c3=%a9").is_err(),
            "a sequence split by '=' is not UTF-8"
        );
        assert_eq!(
            parse_query("k%C3%A9=%E2%98%83&&x==y").unwrap(),
            vec![("ké".into(), "☃".into()), ("x".into(), "=y".into())],
            "multi-byte escapes, an empty pair skipped, the first '=' splits"
        );
        assert_eq!(
            percent_decode("prefect.flow-run.a%2Bb").unwrap(),
            "prefect.flow-run.a+b"
        );
        assert_eq!(percent_decode("a+b").unwrap(), "a+b");
        assert_eq!(percent_decode("a%zzb"), None);
        assert_eq!(percent_decode("%e2%98"), None, "a cut-off UTF-8 sequence");
    }

    #[test]
    fn a_bad_value_names_its_parameter_and_a_bad_key_the_query() {
        assert_eq!(
            parse_query("kind=flow-run&state+name=%ff")
                .unwrap_err()
                .to_string(),
            "query parameter 'state name' is not valid percent-encoded UTF-8"
        );
        assert_eq!(
            parse_query("a=b&%ff=1").unwrap_err().to_string(),
            "query is not valid percent-encoded UTF-8"
        );
    }

    /// The hand-written decoder this replaced parsed escapes with `u8::from_str_radix`, which
    /// takes a sign: `%+1` decoded to byte 1 instead of being refused.
    #[test]
    fn a_sign_is_not_a_hex_digit() {
        assert!(parse_query("state_name=%+1").is_err());
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%-1"), None);
    }

    #[test]
    fn validates_resource_queries() {
        let q = |s: &str| resource_query(&parse_query(s).unwrap()).map_err(|e| e.to_string());
        let ok = q("kind=task-run&state_type=pending&older_than=10m&limit=5").unwrap();
        assert_eq!(ok.kind, RunKind::TaskRun);
        assert_eq!(ok.state_type, Some(StateType::Pending));
        assert_eq!(ok.older_than, Some(600_000_000));
        assert_eq!(ok.limit, 5);
        assert!(q("kind=flow").unwrap_err().starts_with("kind:"));
        assert!(q("state_type=DONE").unwrap_err().starts_with("state_type:"));
        assert!(q("older_than=soon").unwrap_err().starts_with("older_than:"));
        assert!(q("limit=0").unwrap_err().starts_with("limit:"));
        assert!(q("limit=abc").unwrap_err().starts_with("limit:"));
        assert!(q("colour=red").unwrap_err().contains("'colour'"));
    }
}
