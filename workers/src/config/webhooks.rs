//! Generic HTTP channels, `webhook:<name>` (the bridge to WhatsApp, Signal, Feishu, …).

use super::{redact_url, Secret};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One generic webhook channel, `[webhooks.<name>]`.
#[derive(derive_more::Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where posts go (an HTTP POST of the post command); required.
    #[debug("{:?}", redact_url(url))]
    pub url: String,
    /// Whether the receiver understands threads (`create_thread` and thread posts); default
    /// false.
    #[serde(default)]
    pub threads: bool,
    /// Sent as `Authorization: Bearer <token>` when set; default unset.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token (a mounted secret); wins over `token`, re-read on rotation.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Longest text of one post, in characters; longer output is split. Default 4000.
    #[serde(default = "default_webhook_chars")]
    pub max_message_chars: usize,
    /// Binding idle timeout on this channel, in milliseconds, when the spawn names none;
    /// default unset (`default_idle_timeout_ms`).
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
    /// Maximum binding age on this channel, in milliseconds, when the spawn names none;
    /// default unset (no limit).
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    /// Author ids that are Threadline itself on this channel: their messages are never input.
    #[serde(default)]
    pub own_author_ids: Vec<String>,
    /// Setting it turns on `POST /webhooks/<name>` on `listen_addr`: the bridge's messages in,
    /// each signed with HMAC-SHA256 of this secret (docs/listeners.md). Default unset.
    #[serde(default)]
    pub inbound_secret: Option<Secret>,
    /// A file holding `inbound_secret`; wins over it, re-read on every request.
    #[serde(default)]
    pub inbound_secret_file: Option<PathBuf>,
}

fn default_webhook_chars() -> usize {
    4000
}
