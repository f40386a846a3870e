//! From bytes to state: decode a frame, drop it if its id was seen, apply it.
//!
//! - [`decode`]: bytes to an event or a counted rejection; pure.
//! - [`dedup`]: the occurred-keyed window of event ids.
//! - [`pipeline`]: the one path every frame takes, whatever its source.

pub mod decode;
pub mod dedup;
pub mod pipeline;
#[cfg(test)]
pub(crate) mod test_support;

pub use pipeline::{Batch, Changes, Outcome, Pipeline, PipelineConfig};
