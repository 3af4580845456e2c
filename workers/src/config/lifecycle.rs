//! How long a binding lives on each channel, and which authors are Threadline itself: the
//! same keys in every platform section and every webhook.

use super::Config;

/// Per-channel binding lifecycle and identity settings (the same keys in `[discord]` and
/// in each `[webhooks.<name>]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ChannelPolicy {
    /// Idle timeout for bindings on this channel when the spawn names none.
    pub(crate) idle_timeout_ms: Option<u64>,
    /// Maximum binding age on this channel when the spawn names none (default: off).
    pub(crate) max_age_ms: Option<u64>,
    /// Author ids that are Threadline itself (bot user, persona webhooks): their messages
    /// are never input. The bot's id is also learned from the platform's answers.
    pub(crate) own_author_ids: Vec<String>,
}

impl Config {
    /// The lifecycle and identity settings of `channel`; `None` when it is not configured.
    pub(crate) fn policy(&self, channel: &str) -> Option<ChannelPolicy> {
        if let Some(d) = self.platform(channel) {
            return Some(ChannelPolicy {
                idle_timeout_ms: d.idle_timeout_ms,
                max_age_ms: d.max_age_ms,
                own_author_ids: d.own_author_ids.clone(),
            });
        }
        channel
            .strip_prefix("webhook:")
            .and_then(|name| self.webhooks.get(name))
            .map(|w| ChannelPolicy {
                idle_timeout_ms: w.idle_timeout_ms,
                max_age_ms: w.max_age_ms,
                own_author_ids: w.own_author_ids.clone(),
            })
    }
}
