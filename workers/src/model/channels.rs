//! The channels Threadline knows: each one's name, what it can do, and how conversations map
//! to delivery lanes. The one place that spells the list; the deliverer's registry builds an
//! adapter for each, and the binder and router decide from the capabilities here.

use crate::config::{Config, Platform, WebhookConfig};
use threadline_schemas::ConversationRef;

impl Platform {
    /// What its adapter can do.
    pub fn capabilities(self) -> Capabilities {
        match self {
            Platform::Discord => DISCORD,
            Platform::Slack => SLACK,
            Platform::Telegram => TELEGRAM,
            Platform::Matrix => MATRIX,
        }
    }
}

/// What a channel can do. Declared per adapter, so adding a channel means adding an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Conversations can contain threads.
    pub threads: bool,
    /// Threadline can create a child thread (`placement:"child"`).
    pub child_creation: bool,
    /// Re-sending with the same key cannot create a second message.
    pub idempotency_key: bool,
    /// Recent messages can be read back to find an earlier attempt's post.
    pub read_back: bool,
    /// The most characters one message may hold.
    pub max_message_chars: usize,
    /// A post can show a session's own name and picture (`persona` on a spawn).
    pub session_personas: bool,
}

/// Discord's limit for one message's content.
pub const DISCORD_MAX_MESSAGE_CHARS: usize = 2000;

/// The capabilities of the Discord adapter.
pub const DISCORD: Capabilities = Capabilities {
    threads: true,
    child_creation: true,
    idempotency_key: true,
    read_back: true,
    max_message_chars: DISCORD_MAX_MESSAGE_CHARS,
    // Through the channel's configured webhook (`[discord.personas]`): `username`, `avatar_url`.
    session_personas: true,
};

/// Slack accepts 40,000 characters but recommends at most 4,000 per message.
pub const SLACK_MAX_MESSAGE_CHARS: usize = 4_000;

/// The capabilities of the Slack adapter.
pub const SLACK: Capabilities = Capabilities {
    threads: true,
    child_creation: true,
    idempotency_key: false,
    read_back: true,
    max_message_chars: SLACK_MAX_MESSAGE_CHARS,
    // `username` and `icon_url` on `chat.postMessage` (scope `chat:write.customize`).
    session_personas: true,
};

/// The Bot API's limit for one message's text (`sendMessage` `text`: 1-4096 characters).
pub const TELEGRAM_MAX_MESSAGE_CHARS: usize = 4_096;

/// The capabilities of the Telegram adapter.
pub const TELEGRAM: Capabilities = Capabilities {
    threads: true,
    child_creation: true,
    idempotency_key: false,
    read_back: false,
    max_message_chars: TELEGRAM_MAX_MESSAGE_CHARS,
    // A bot posts as itself: the Bot API has no per-message name or picture.
    session_personas: false,
};

/// Events are limited to 64 KiB of JSON; this leaves room for escaping and the envelope.
pub const MATRIX_MAX_MESSAGE_CHARS: usize = 12_000;

/// The capabilities of the Matrix adapter.
pub const MATRIX: Capabilities = Capabilities {
    threads: true,
    child_creation: true,
    // A txn id is scoped to the device: after a rotation to a fresh login's token, a re-send
    // with the same txn id is a second event. Doubts are settled by read-back instead.
    idempotency_key: false,
    read_back: true,
    max_message_chars: MATRIX_MAX_MESSAGE_CHARS,
    // A display name is per room, shared by every session posting there.
    session_personas: false,
};

/// Capabilities of a configured webhook.
pub fn webhook(config: &WebhookConfig) -> Capabilities {
    Capabilities {
        threads: config.threads,
        child_creation: config.threads,
        idempotency_key: true,
        read_back: false,
        max_message_chars: config.max_message_chars.max(1),
        // Sent in the body; the receiver shows it as it can.
        session_personas: true,
    }
}

/// Capabilities of a channel as configured in this deployment; `None` when it has no
/// adapter here.
pub fn capabilities(channel: &str, config: &Config) -> Option<Capabilities> {
    match Platform::parse(channel) {
        Some(platform) => config
            .channels()
            .iter()
            .any(|c| c == channel)
            .then(|| platform.capabilities()),
        None => channel
            .strip_prefix("webhook:")
            .and_then(|name| config.webhooks.get(name))
            .map(webhook),
    }
}

/// The delivery partition of a conversation: a stable hash of it (the same in every process
/// and version; DO NOT CHANGE while messages are in flight).
pub fn partition(conversation: &ConversationRef, partitions: u32) -> u32 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(conversation.key().as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n % partitions.max(1)
}
