//! Telegram Bot API. A thread is a forum topic (`message_thread_id`) in a supergroup chat.
//! Telegram offers no idempotency key and bots cannot read chat history, so an attempt whose
//! outcome is unknown cannot be settled: it is re-posted or not according to
//! `[telegram] unknown_outcome`, and reported as `reconciled: "unknown_outcome"` either way.
//! The token is part of the URL path, so no URL is ever logged (see `http::transport_error`).
//!
//! Requests follow the Bot API as `tests/specs/telegram-api.json` describes it (link previews
//! are turned off with `link_preview_options`; `disable_web_page_preview` is no longer a
//! `sendMessage` parameter). Text arrives rendered as Telegram HTML (`crate::render::telegram`)
//! and is sent with `parse_mode: HTML`: escaped, holding a `text_mention` only for a user the
//! event allows; Telegram detects `@username` mentions (MessageEntity "mention") in any text
//! and notifies the user, so the renderer puts a word joiner (U+2060, invisible) after every
//! `@` that would start one.
//!
//! A post into a topic is checked against the answer's `message_thread_id`: the Bot API has
//! put messages for a deleted topic into the main chat without an error (private-chat topics,
//! tdlib/telegram-bot-api#854; groups answer "message thread not found"). Such a post is
//! reported as [`PlatformError::PostedInParent`] — never as posted in the topic — and can be
//! taken back with `deleteMessage`.

use super::adapter::{
    Adapter, Capabilities, Markup, PlatformError, PostRequest, Receipt, ThreadRequest,
};
use super::credentials::Credentials;
use super::http::{classify, client, send, Answered};
use crate::model::channels;
use crate::model::platform_codes::PermanentCode;
use crate::render;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use threadline_schemas::ConversationRef;

/// Talks to the Telegram Bot API (or a loopback fake at the configured base URL).
pub(crate) struct Telegram {
    http: reqwest::Client,
    api_base: String,
    credentials: Arc<Credentials>,
}

#[derive(Debug, Default, Deserialize)]
struct Answer {
    #[serde(default)]
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Parameters>,
}

#[derive(Debug, Default, Deserialize)]
struct Parameters {
    #[serde(default)]
    retry_after: Option<u64>,
    /// "The group has been migrated to a supergroup with the specified identifier"
    /// (ResponseParameters).
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

/// Telegram's error descriptions, named the way Threadline reports them.
fn permanent_code(status: u16, description: &str, migrated: bool) -> PermanentCode {
    let d = description.to_ascii_lowercase();
    if d.contains("message thread not found") || d.contains("topic_deleted") {
        PermanentCode::ThreadDeleted
    } else if d.contains("topic_closed") {
        PermanentCode::ThreadArchived
    } else if migrated || d.contains("upgraded to a supergroup") {
        // The chat has a new id: posting to the old one can never work.
        PermanentCode::ChatMigrated
    } else if d.contains("chat not found") {
        PermanentCode::NotFound
    } else if status == 403
        && (d.contains("bot was kicked")
            || d.contains("bot is not a member")
            || d.contains("bot was blocked"))
    {
        // The bot is out of the chat: no post there can work until someone adds it back,
        // so a binding there ends (like Matrix's kicked bot) instead of failing every post.
        PermanentCode::BotRemoved
    } else if status == 403
        || d.contains("not enough rights")
        || d.contains("have no rights")
        || d.contains("chat_write_forbidden")
    {
        // Missing rights in a chat the bot is still in.
        PermanentCode::Forbidden
    } else if status == 401 {
        PermanentCode::Unauthorized
    } else if d.contains("not a forum") {
        PermanentCode::CapabilityUnsupported
    } else {
        PermanentCode::Rejected
    }
}

/// A chat id as Telegram wants it: a number when it is one, else the `@username` string.
fn chat(id: &str) -> Value {
    id.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(id))
}

impl Telegram {
    /// An adapter calling the Bot API at `api_base` with `credentials`.
    pub(crate) fn new(api_base: &str, credentials: Arc<Credentials>, timeout: Duration) -> Self {
        Telegram {
            http: client(timeout),
            api_base: api_base.trim_end_matches('/').to_owned(),
            credentials,
        }
    }

    async fn call(&self, method: &str, body: Value) -> Result<Value, PlatformError> {
        let url = format!(
            "{}/bot{}/{method}",
            self.api_base,
            self.credentials.current().expose()
        );
        let Answered {
            status,
            headers,
            body: bytes,
        } = send(self.http.post(url).json(&body)).await?;
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        match (status.is_success() && answer.ok, answer.result) {
            (true, Some(result)) => Ok(result),
            (true, None) | (false, _) => {
                let description = answer.description.clone().unwrap_or_default();
                let migrated = answer
                    .parameters
                    .as_ref()
                    .and_then(|p| p.migrate_to_chat_id);
                let description = match migrated {
                    Some(to) => format!("{description} (migrated to chat {to})"),
                    None => description,
                };
                Err(classify(
                    status,
                    &headers,
                    answer
                        .parameters
                        .as_ref()
                        .and_then(|p| p.retry_after)
                        .map(Duration::from_secs),
                    description.clone(),
                    || permanent_code(status.as_u16(), &description, migrated.is_some()),
                ))
            }
        }
    }
}

impl Adapter for Telegram {
    fn channel(&self) -> &str {
        "telegram"
    }

    fn capabilities(&self) -> Capabilities {
        channels::TELEGRAM
    }

    fn markup(&self) -> Markup {
        Markup::Telegram
    }

    async fn post(&self, request: PostRequest<'_>) -> Result<Receipt, PlatformError> {
        let c = request.conversation;
        let mut topic = None;
        let mut body = json!({
            // Rendered already (`crate::render::telegram`): HTML, escaped, with no mention
            // Telegram would detect unless the event allows it.
            "text": request.text,
            "parse_mode": "HTML",
            "link_preview_options": {"is_disabled": true},
        });
        if let Some(id) = request
            .reply_to
            .filter(|_| request.part == 0)
            .and_then(|id| id.parse::<i64>().ok())
        {
            // A reply to a message deleted meanwhile is still sent, as a plain message
            // (ReplyParameters.allow_sending_without_reply).
            body["reply_parameters"] =
                json!({"message_id": id, "allow_sending_without_reply": true});
        }
        match &c.parent_conversation_id {
            Some(chat_id) => {
                body["chat_id"] = chat(chat_id);
                // A topic is named by an integer; anything else cannot exist.
                let topic_id =
                    c.conversation_id
                        .parse::<i64>()
                        .map_err(|_| PlatformError::Permanent {
                            code: PermanentCode::NotFound,
                            message:
                                "telegram: a forum topic is named by an integer, and this is none"
                                    .into(),
                        })?;
                body["message_thread_id"] = json!(topic_id);
                topic = Some(topic_id);
            }
            None => body["chat_id"] = chat(&c.conversation_id),
        }
        let result = self.call("sendMessage", body).await?;
        let message_id = result["message_id"]
            .as_i64()
            .ok_or_else(|| PlatformError::Transient {
                message: "telegram answered ok without a message_id".into(),
                maybe_applied: true,
            })?;
        let receipt = Receipt {
            message_id: message_id.to_string(),
            author_id: result["from"]["id"].as_i64().map(|id| id.to_string()),
        };
        match topic {
            Some(topic) if result["message_thread_id"].as_i64() != Some(topic) => {
                Err(PlatformError::PostedInParent {
                    code: PermanentCode::ThreadDeleted,
                    receipt,
                })
            }
            Some(_) | None => Ok(receipt),
        }
    }

    /// `deleteMessage` (bots may delete their own messages in groups and supergroups); a
    /// message already gone ("message to delete not found") counts as deleted.
    async fn delete(
        &self,
        conversation: &ConversationRef,
        message_id: &str,
    ) -> Result<(), PlatformError> {
        let chat_id = conversation
            .parent_conversation_id
            .as_deref()
            .unwrap_or(&conversation.conversation_id);
        let message_id = message_id
            .parse::<i64>()
            .map_err(|_| PlatformError::Permanent {
                code: PermanentCode::NotFound,
                message: "telegram: a message is named by an integer, and this is none".into(),
            })?;
        match self
            .call(
                "deleteMessage",
                json!({"chat_id": chat(chat_id), "message_id": message_id}),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(PlatformError::Permanent { message, .. })
                if message.contains("message to delete not found") =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// A forum topic holds no topics: a child of a topic is a new topic in the topic's
    /// chat (the binder hands over top-level parents; a topic given anyway is taken for
    /// its chat).
    async fn create_thread(
        &self,
        request: ThreadRequest<'_>,
    ) -> Result<ConversationRef, PlatformError> {
        let parent = request.parent;
        let chat_id = parent
            .parent_conversation_id
            .as_deref()
            .unwrap_or(&parent.conversation_id);
        let name: String = render::telegram::without_mentions(request.name)
            .chars()
            .take(128)
            .collect();
        let result = self
            .call(
                "createForumTopic",
                json!({"chat_id": chat(chat_id), "name": name}),
            )
            .await?;
        let thread =
            result["message_thread_id"]
                .as_i64()
                .ok_or_else(|| PlatformError::Transient {
                    message: "telegram answered ok without a message_thread_id".into(),
                    maybe_applied: true,
                })?;
        Ok(ConversationRef {
            channel: "telegram".into(),
            account_id: request.parent.account_id.clone(),
            conversation_id: thread.to_string(),
            parent_conversation_id: Some(chat_id.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_descriptions_map_to_clear_outcomes() {
        assert_eq!(
            permanent_code(400, "Bad Request: message thread not found", false).as_str(),
            "thread_deleted"
        );
        assert_eq!(
            permanent_code(400, "Bad Request: TOPIC_CLOSED", false).as_str(),
            "thread_archived"
        );
        assert_eq!(
            permanent_code(400, "Bad Request: chat not found", false).as_str(),
            "not_found"
        );
        for forbidden in [
            "Forbidden: bot was blocked by the user",
            "Forbidden: bot was kicked from the supergroup chat",
            "Forbidden: bot is not a member of the supergroup chat",
        ] {
            assert_eq!(
                permanent_code(403, forbidden, false).as_str(),
                "bot_removed"
            );
        }
        assert_eq!(
            permanent_code(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                true
            )
            .as_str(),
            "chat_migrated"
        );
        assert_eq!(
            permanent_code(401, "Unauthorized", false).as_str(),
            "unauthorized"
        );
        assert_eq!(
            permanent_code(400, "Bad Request: message is too long", false).as_str(),
            "rejected"
        );
        assert_eq!(chat("-100123"), json!(-100123));
        assert_eq!(chat("@news"), json!("@news"));
    }
}
