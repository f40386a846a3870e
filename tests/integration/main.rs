//! Integration tests: the built binary driven through its public surface (flags, files,
//! HTTP), with exact values from independent ground truth.

mod api_cost;
mod basic_auth;
mod decode_differential;
mod decode_oracle;
mod fake_prefect;
mod flags;
mod flood;
mod http_api;
mod http_echo;
mod http_hardening;
mod http_headroom;
mod layers;
mod properties;
mod readme;
mod redis_source;
mod replay_files;
mod rest_hostile;
mod serve_replay;
mod shutdown;
mod state_file;
mod stream;
mod stream_edges;
mod support;
mod ws_hostile;
