//! How a process reports on itself: log format (the health, metrics and tracing settings are
//! [`Config`](super::Config) fields: `health_addr`, `pending_poll_ms`, `otlp_endpoint`).

use serde::{Deserialize, Serialize};

/// How logs are written (`log_format`); the level comes from `RUST_LOG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}
