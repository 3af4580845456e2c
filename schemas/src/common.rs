//! Types shared by several events: conversations, session and binding vocabulary, and the
//! validation every decoded event goes through before a worker sees it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Free-form metadata a publisher attaches; Threadline carries it, never interprets it.
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// A place on a chat platform. When `parent_conversation_id` is set, the conversation is a
/// thread inside that parent (see docs/design.md §2 for what the ids are on each channel).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationRef {
    /// Adapter name: `discord`, `slack`, `telegram`, `matrix` or `webhook:<name>`.
    pub channel: String,
    /// The bot or workspace account on that channel.
    pub account_id: String,
    /// Channel, chat, room or thread id, as the platform names it.
    pub conversation_id: String,
    /// Set when `conversation_id` is a thread: the conversation that holds the thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_conversation_id: Option<String>,
}

impl ConversationRef {
    /// The conversation that holds this one: the parent channel of a thread, or itself.
    pub fn parent(&self) -> ConversationRef {
        match &self.parent_conversation_id {
            Some(parent) => ConversationRef {
                channel: self.channel.clone(),
                account_id: self.account_id.clone(),
                conversation_id: parent.clone(),
                parent_conversation_id: None,
            },
            None => self.clone(),
        }
    }

    /// One stable string naming the conversation; used in Redis keys and dedup ids.
    /// `\u{1f}` (unit separator) cannot appear in validated ids, so the key is unambiguous.
    pub fn key(&self) -> String {
        // Joined, not `format!`ed: built on every routed completion and post, where the
        // format machinery cost several times a copy into one exact allocation (callgrind;
        // commit a18f154 has the figures).
        [
            self.channel.as_str(),
            "\u{1f}",
            &self.account_id,
            "\u{1f}",
            &self.conversation_id,
        ]
        .concat()
    }

    /// Whether two references name the same platform conversation (parent ids are
    /// informative; the conversation id alone identifies a thread on every platform).
    pub fn same_place(&self, other: &ConversationRef) -> bool {
        self.channel == other.channel
            && self.account_id == other.account_id
            && self.conversation_id == other.conversation_id
    }
}

/// `run` sessions end after their completion is delivered; `session` sessions persist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    /// `run`: the session ends after its completion is delivered.
    #[default]
    Run,
    /// `session`: the session persists until unbound or expired.
    Session,
}

/// Where a spawned session is bound. Independent of [`SessionMode`] (seed issue 000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// No binding: output goes to the requester's conversation.
    #[default]
    None,
    /// A new thread under the requester's conversation (under its parent when the requester
    /// is in a thread), bound to the session.
    Child,
    /// The requester's conversation itself.
    Current,
}

/// Which destinations a bound session's output goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryPolicy {
    /// `bound_only`: only the bound conversation.
    #[default]
    BoundOnly,
    /// `bound_and_requester`: the bound and the requester's conversation (policy, not a duplicate).
    BoundAndRequester,
    /// `requester_only`: only the requester's conversation.
    RequesterOnly,
}

/// Why a destination was chosen, as reported on `tl.out.delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// The session's bound conversation.
    Bound,
    /// The requester's conversation, by design (no placement, policy).
    Requester,
    /// The requester's conversation because a bound one was expected but unusable.
    Fallback,
}

/// How a post's `content` is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentFormat {
    /// CommonMark (with tables and strikethrough), rendered for each platform: the default.
    #[default]
    Markdown,
    /// Raw text, shown exactly as written: every character a platform would read as markup
    /// is escaped, and nothing in it is a mention.
    Plain,
}

impl ContentFormat {
    /// Whether this is the default, `markdown` (left out when serialized).
    pub fn is_markdown(&self) -> bool {
        *self == ContentFormat::Markdown
    }
}

/// The name and picture a session's posts show instead of the bot's, where the platform
/// lets a post choose them (Discord through the channel's webhook, Slack with
/// `chat:write.customize`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionPersona {
    /// The name shown: 1 to 80 characters (Discord's limit for a webhook's `username`).
    pub name: String,
    /// An `https://` (or `http://`) URL of the picture shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

impl Validate for SessionPersona {
    fn validate(&self) -> Result<(), String> {
        let chars = self.name.chars().count();
        if self.name.trim().is_empty() || chars > 80 {
            return Err("`persona.name` must be 1 to 80 characters".into());
        }
        if self.name.chars().any(char::is_control) {
            return Err("`persona.name` contains a control character".into());
        }
        if let Some(url) = &self.avatar_url {
            let web = url.starts_with("https://") || url.starts_with("http://");
            if !web || url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(
                    "`persona.avatar_url` must be an http(s) URL of at most 2048 bytes".into(),
                );
            }
        }
        Ok(())
    }
}

/// At most this many user ids in one post's `mentions`.
pub const MAX_MENTIONS: usize = 100;

/// Checks a `mentions` allow-list: at most [`MAX_MENTIONS`] platform user ids, each a
/// non-empty id of at most 255 bytes without whitespace, `<` or `>` (the `<@ID>` token
/// syntax could not name it).
pub fn check_mentions(mentions: &[String]) -> Result<(), String> {
    if mentions.len() > MAX_MENTIONS {
        return Err(format!(
            "`mentions` names {} users; at most {MAX_MENTIONS} are allowed",
            mentions.len()
        ));
    }
    for id in mentions {
        if id.is_empty() || id.len() > 255 {
            return Err("`mentions` entries must be 1 to 255 bytes".into());
        }
        if let Some(c) = id
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == '<' || *c == '>')
        {
            return Err(format!(
                "`mentions` entry {id:?} contains {c:?}, which is not allowed"
            ));
        }
    }
    Ok(())
}

/// Binding lifecycle: `pending` until the platform confirmed the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingStatus {
    /// `pending`: the platform has not yet confirmed the conversation (e.g. a child thread).
    Pending,
    /// `active`: the platform confirmed the conversation; the binding lasts until it starts ending.
    Active,
    /// `ending`: the farewell is being posted.
    Ending,
    /// `ended`: the binding is over; it stays readable for `ended_ttl_ms`.
    Ended,
}

/// A session bound to a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    /// Id of the binding; `tl.in.control` `unbind`/`touch` can name it.
    pub binding_id: String,
    /// The session the conversation is bound to.
    pub target_session_key: String,
    /// The bound conversation.
    pub conversation: ConversationRef,
    /// Where the binding is in its lifecycle.
    pub status: BindingStatus,
    /// When the binding was created (Unix milliseconds).
    pub bound_at: u64,
    /// Unix milliseconds; refreshed by successful posts (at most once per `touch_interval_ms`
    /// per deliverer instance) and inbound messages.
    pub last_activity_at: u64,
    /// The binding ends after this long without activity, in milliseconds.
    pub idle_timeout_ms: u64,
    /// The binding ends this long after `bound_at`, in milliseconds; absent means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_ms: Option<u64>,
    /// Which destinations the bound session's output goes to.
    pub delivery: DeliveryPolicy,
    /// Why the binding ended or is ending (idle timeout, max age, `unbind`, thread archived, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// Free-form metadata; Threadline carries it and never interprets it.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// Checks that decoding alone cannot express. Runs on every decoded event.
pub trait Validate {
    /// Describes the first problem found; the codec turns it into an `invalid_event` rejection.
    fn validate(&self) -> Result<(), String>;
}

/// An id that ends up inside a NATS subject token or a Redis key must be non-empty, short,
/// and free of subject syntax and control characters.
pub fn check_token(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` must not be empty"));
    }
    if value.len() > 256 {
        return Err(format!("`{field}` is longer than 256 bytes"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>'))
    {
        return Err(format!("`{field}` contains {c:?}, which is not allowed"));
    }
    Ok(())
}

/// An id used only inside Redis keys and payloads: non-empty, bounded, no control characters.
pub fn check_id(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` must not be empty"));
    }
    if value.len() > 512 {
        return Err(format!("`{field}` is longer than 512 bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("`{field}` contains a control character"));
    }
    Ok(())
}

impl Validate for ConversationRef {
    fn validate(&self) -> Result<(), String> {
        check_token("conversation.channel", &self.channel)?;
        if let Some(name) = self.channel.strip_prefix("webhook:") {
            check_token("conversation.channel (webhook name)", name)?;
        }
        check_id("conversation.account_id", &self.account_id)?;
        check_id("conversation.conversation_id", &self.conversation_id)?;
        if let Some(parent) = &self.parent_conversation_id {
            check_id("conversation.parent_conversation_id", parent)?;
        }
        Ok(())
    }
}

/// Unix milliseconds now. Lives here so every crate stamps time the same way.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
