//! libFuzzer target: `decode` must return exactly what the serde-visitor decoder it replaced
//! (the oracle in `tests/integration/decode_oracle.rs`) returns, on every input, including
//! whether each kept string is borrowed or owned. Any difference aborts with both verdicts.
//! Every rejection is one the decoder may give: `future_timestamp` needs the wall clock and
//! is the pipeline's to give, never the decoder's.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use prefect_events_exporter::ingest::decode::{decode, Decoded, RejectReason};
use prefect_events_exporter::model::event::Event;

#[path = "../../tests/integration/decode_oracle.rs"]
#[allow(dead_code)]
mod decode_oracle;

/// Whether each string the event keeps is owned (it had escapes) or borrowed.
fn ownership(decoded: &Decoded<'_>) -> Vec<Option<bool>> {
    fn owned(c: Option<&Cow<'_, str>>) -> Option<bool> {
        c.map(|c| matches!(c, Cow::Owned(_)))
    }
    let Decoded::Event(e) = decoded else {
        return Vec::new();
    };
    let Event {
        name,
        resource_id,
        resource_name,
        related,
        state,
        ..
    } = e;
    let mut shape = vec![
        owned(Some(name)),
        owned(Some(resource_id)),
        owned(resource_name.as_ref()),
        owned(related.flow.as_ref()),
        owned(related.deployment.as_ref()),
        owned(related.work_pool.as_ref()),
        owned(related.work_queue.as_ref()),
    ];
    shape.extend(related.tags.iter().map(|t| owned(Some(t))));
    if let Some(state) = state {
        shape.push(owned(Some(&state.to.name)));
        shape.push(owned(state.from.as_ref().map(|f| &f.name)));
    }
    shape
}

fuzz_target!(|data: &[u8]| {
    let old = decode_oracle::decode(data);
    let new = decode(data);
    if old != new || ownership(&old) != ownership(&new) {
        panic!(
            "decoders disagree on {:?}\n oracle: {old:?}\n    new: {new:?}",
            String::from_utf8_lossy(data)
        );
    }
    assert_ne!(new, Decoded::Rejected(RejectReason::FutureTimestamp));
});
