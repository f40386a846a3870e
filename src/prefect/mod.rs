//! Prefect's REST API and what the exporter does with it: the baseline and its periodic
//! reconciliation ([`reconcile`]), and verification of closed windows of events against the
//! server's stored events, with repair ([`verify`]). Every call goes through one bounded
//! [`transport`], whose
//! cost is counted ([`accounting`]).

pub(crate) mod accounting;
pub(crate) mod api;
pub(crate) mod reconcile;
pub(crate) mod transport;
pub(crate) mod verify;
