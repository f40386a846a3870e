//! Where raw frames come from. Every source yields frames as bytes and never decodes them;
//! the pipeline does the rest. Today: recorded JSONL files ([`replay`]). The websocket and a
//! Redis Streams reader are further files beside it, feeding the same pipeline.

pub mod replay;
pub mod ws;
