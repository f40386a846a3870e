//! Prefect's `EventFilter`, as far as the fake server honours it: `occurred.since/until`,
//! `event.prefix/name/exclude_prefix/exclude_name`, `resource.id/id_prefix`, `id.id`. Other
//! known fields are accepted and ignored; unknown fields and bad values are errors, as
//! Prefect's validation makes them.

use serde_json::Value;

use crate::model::time::{now_micros, parse_rfc3339, Micros, SECOND};

/// A filter Prefect's validation would refuse (422), with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(String);

/// A parsed filter.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    /// Inclusive lower bound of `occurred`.
    pub since: Option<Micros>,
    /// Inclusive upper bound of `occurred`.
    pub until: Option<Micros>,
    /// Event names must start with one of these (when set).
    pub prefix: Option<Vec<String>>,
    /// Event names must be one of these (when set).
    pub name: Option<Vec<String>>,
    /// Event names must not start with any of these.
    pub exclude_prefix: Vec<String>,
    /// Event names must not be any of these.
    pub exclude_name: Vec<String>,
    /// Resource ids must be one of these (when set).
    pub resource_id: Option<Vec<String>>,
    /// Resource ids must start with one of these (when set).
    pub resource_id_prefix: Option<Vec<String>>,
    /// Event ids must be one of these (when set).
    pub id: Option<Vec<String>>,
}

/// What an event offers to a filter.
pub struct Candidate<'a> {
    /// Event id.
    pub id: &'a str,
    /// Event name.
    pub name: &'a str,
    /// `occurred`.
    pub occurred: Micros,
    /// `prefect.resource.id`.
    pub resource_id: &'a str,
}

fn strings(value: &Value, field: &str) -> Result<Option<Vec<String>>, FilterError> {
    match value {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| FilterError(format!("{field}: not a list of strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(FilterError(format!("{field}: not a list"))),
    }
}

fn object<'a>(
    value: &'a Value,
    field: &str,
    allowed: &[&str],
) -> Result<Option<&'a serde_json::Map<String, Value>>, FilterError> {
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => {
            if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(FilterError(format!(
                    "{field}.{unknown}: extra inputs are not permitted"
                )));
            }
            Ok(Some(map))
        }
        _ => Err(FilterError(format!("{field}: not an object"))),
    }
}

fn timestamp(value: &Value, field: &str) -> Result<Option<Micros>, FilterError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => parse_rfc3339(s)
            .map(Some)
            .ok_or_else(|| FilterError(format!("{field}: invalid datetime"))),
        _ => Err(FilterError(format!("{field}: invalid datetime"))),
    }
}

impl EventFilter {
    /// Parses the `filter` object of a websocket filter message or a REST body.
    pub fn parse(value: &Value) -> Result<EventFilter, FilterError> {
        const TOP: &[&str] = &[
            "occurred",
            "event",
            "resource",
            "related",
            "any_resource",
            "id",
            "text",
            "order",
        ];
        let mut filter = EventFilter::default();
        let Some(map) = object(value, "filter", TOP)? else {
            return Ok(filter);
        };
        let null = Value::Null;
        if let Some(occurred) = object(
            map.get("occurred").unwrap_or(&null),
            "occurred",
            &["since", "until"],
        )? {
            filter.since = timestamp(occurred.get("since").unwrap_or(&null), "occurred.since")?;
            filter.until = timestamp(occurred.get("until").unwrap_or(&null), "occurred.until")?;
        }
        if let Some(event) = object(
            map.get("event").unwrap_or(&null),
            "event",
            &["prefix", "exclude_prefix", "name", "exclude_name"],
        )? {
            filter.prefix = strings(event.get("prefix").unwrap_or(&null), "event.prefix")?;
            filter.name = strings(event.get("name").unwrap_or(&null), "event.name")?;
            filter.exclude_prefix = strings(
                event.get("exclude_prefix").unwrap_or(&null),
                "event.exclude_prefix",
            )?
            .unwrap_or_default();
            filter.exclude_name = strings(
                event.get("exclude_name").unwrap_or(&null),
                "event.exclude_name",
            )?
            .unwrap_or_default();
        }
        if let Some(resource) = object(
            map.get("resource").unwrap_or(&null),
            "resource",
            &["id", "id_prefix", "labels", "distinct"],
        )? {
            filter.resource_id = strings(resource.get("id").unwrap_or(&null), "resource.id")?;
            filter.resource_id_prefix = strings(
                resource.get("id_prefix").unwrap_or(&null),
                "resource.id_prefix",
            )?;
        }
        if let Some(id) = object(map.get("id").unwrap_or(&null), "id", &["id"])? {
            filter.id =
                strings(id.get("id").unwrap_or(&null), "id.id")?.filter(|ids| !ids.is_empty());
        }
        Ok(filter)
    }

    /// The lower bound a websocket backfill uses: `since`, clamped to the last 15 minutes
    /// (Prefect's default is one hour ago, clamped the same way).
    pub fn backfill_since(&self, now: Micros) -> Micros {
        let earliest = now - 15 * 60 * SECOND;
        self.since.unwrap_or(now - 3600 * SECOND).max(earliest)
    }

    /// The upper bound (Prefect's default is now).
    pub fn until_or_now(&self) -> Micros {
        self.until.unwrap_or_else(now_micros)
    }

    /// Whether the event's name, resource and id match (not its time).
    pub fn matches_ignoring_time(&self, event: &Candidate<'_>) -> bool {
        let name_ok = self
            .prefix
            .as_ref()
            .is_none_or(|p| p.iter().any(|p| event.name.starts_with(p.as_str())))
            && self
                .name
                .as_ref()
                .is_none_or(|n| n.iter().any(|n| n == event.name))
            && !self
                .exclude_prefix
                .iter()
                .any(|p| event.name.starts_with(p.as_str()))
            && !self.exclude_name.iter().any(|n| n == event.name);
        let resource_ok = self
            .resource_id
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == event.resource_id))
            && self
                .resource_id_prefix
                .as_ref()
                .is_none_or(|p| p.iter().any(|p| event.resource_id.starts_with(p.as_str())));
        let id_ok = self
            .id
            .as_ref()
            .is_none_or(|ids| ids.iter().any(|i| i == event.id));
        name_ok && resource_ok && id_ok
    }

    /// Whether the event matches, with `occurred` in `[since, until]` (until defaulting to
    /// `until_default`).
    pub fn matches(&self, event: &Candidate<'_>, until_default: Micros) -> bool {
        self.since.is_none_or(|s| event.occurred >= s)
            && event.occurred <= self.until.unwrap_or(until_default)
            && self.matches_ignoring_time(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_what_clients_send() {
        let f = EventFilter::parse(&json!({
            "occurred": {"since": "2026-11-25T01:00:00Z", "until": "2027-11-25T01:00:00+00:00"},
            "event": {"prefix": ["prefect.flow-run."], "name": null, "exclude_prefix": null, "exclude_name": null},
            "resource": null, "related": null, "any_resource": null, "id": {"id": []}, "text": null, "order": "DESC"
        }))
        .unwrap();
        assert_eq!(f.prefix, Some(vec!["prefect.flow-run.".to_owned()]));
        assert!(f.since.is_some() && f.until.is_some());
        assert_eq!(f.id, None, "an empty id list filters nothing");
        let c = Candidate {
            id: "x",
            name: "prefect.flow-run.Running",
            occurred: f.since.unwrap(),
            resource_id: "r",
        };
        assert!(f.matches(&c, 0));
        let c = Candidate {
            name: "prefect.flow.created",
            ..c
        };
        assert!(!f.matches(&c, 0));
    }

    #[test]
    fn rejects_what_prefect_rejects() {
        assert!(EventFilter::parse(&json!({"bogus": 1})).is_err());
        assert!(EventFilter::parse(&json!({"occurred": {"since": "yesterday"}})).is_err());
        assert!(EventFilter::parse(&json!({"event": {"prefix": "prefect."}})).is_err());
    }
}
