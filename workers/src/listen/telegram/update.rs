//! What one Telegram `Update` means for Threadline, pure: a message someone wrote, a forum
//! topic closed or reopened, or nothing. Types and fields follow the Bot API's `Update` and
//! `Message` objects (`tests/specs/telegram-api.json`); unknown fields are ignored, so a
//! newer Bot API version still reads.

use serde::Deserialize;

/// The update types the listener reads: given as `allowed_updates` to `getUpdates` and
/// `setWebhook`, so Telegram sends nothing else (edits, reactions, member changes).
pub(crate) const ALLOWED_UPDATES: [&str; 2] = ["message", "channel_post"];

/// An `Update`, with the fields the listener reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Update {
    /// Increases by one per update; the poll offset is the last one + 1.
    pub(crate) update_id: i64,
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    channel_post: Option<Message>,
}

#[derive(Debug, Clone, Deserialize)]
struct Message {
    message_id: i64,
    #[serde(default)]
    message_thread_id: Option<i64>,
    #[serde(default)]
    is_topic_message: Option<bool>,
    #[serde(default)]
    from: Option<User>,
    #[serde(default)]
    sender_chat: Option<Chat>,
    chat: Chat,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    reply_to_message: Option<Box<Replied>>,
    #[serde(default)]
    document: Option<File>,
    #[serde(default)]
    photo: Vec<PhotoSize>,
    #[serde(default)]
    audio: Option<File>,
    #[serde(default)]
    video: Option<File>,
    #[serde(default)]
    voice: Option<File>,
    /// Service message: forum topic closed (an empty object).
    #[serde(default)]
    forum_topic_closed: Option<serde::de::IgnoredAny>,
    /// Service message: forum topic reopened (an empty object).
    #[serde(default)]
    forum_topic_reopened: Option<serde::de::IgnoredAny>,
}

/// The replied-to message: only what tells a real reply from a topic's root.
#[derive(Debug, Clone, Deserialize)]
struct Replied {
    message_id: i64,
    #[serde(default)]
    forum_topic_created: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    id: i64,
    is_bot: bool,
    first_name: String,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Chat {
    id: i64,
    #[serde(default)]
    title: Option<String>,
}

/// Document, Audio, Video and Voice share these fields.
#[derive(Debug, Clone, Deserialize)]
struct File {
    file_id: String,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    file_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct PhotoSize {
    file_id: String,
    width: u64,
    height: u64,
    #[serde(default)]
    file_size: Option<u64>,
}

/// Where something was heard: a chat, or a forum topic (`id`) of a chat (`parent`) — the
/// shape `deliver/telegram.rs` gives topic conversations, so binding lookups meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    /// The chat id, or the topic's `message_thread_id`.
    pub(crate) id: String,
    /// The chat of a topic.
    pub(crate) parent: Option<String>,
}

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Writer {
    /// The user's (or the posting chat's) id.
    pub(crate) id: String,
    /// Telegram's `is_bot`; chats posting as themselves are not bots.
    pub(crate) is_bot: bool,
    /// The display name: first and last name, else the username (a chat: its title).
    pub(crate) name: Option<String>,
}

/// A file sent with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRef {
    /// The file name the sender gave (documents, audio, video).
    pub(crate) name: Option<String>,
    /// The MIME type Telegram reports.
    pub(crate) content_type: Option<String>,
    /// Size in bytes, when Telegram reports it.
    pub(crate) size: Option<u64>,
    /// `tg-file:<file_id>`: a reference, not a URL. Telegram's download URL holds the bot
    /// token (`/file/bot<token>/<file_path>`), so it is never published; a holder of the
    /// token resolves the id with `getFile`.
    pub(crate) url: String,
}

/// A message someone wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Said {
    /// Where it was written.
    pub(crate) place: Place,
    /// `message_id`: unique within its chat (the intake's event id includes the place).
    pub(crate) message_id: String,
    /// The text, or a media message's caption; empty for a file without one.
    pub(crate) text: String,
    /// Who wrote it.
    pub(crate) writer: Writer,
    /// The message it answers, when it answers one (not a topic's root).
    pub(crate) reply_to: Option<String>,
    /// Files sent with it.
    pub(crate) files: Vec<FileRef>,
}

/// A forum topic's state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TopicChange {
    /// `forum_topic_closed`: nobody but admins can post; bindings end.
    Closed,
    /// `forum_topic_reopened`.
    Reopened,
}

/// What an update means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Meaning {
    /// A message for the router.
    Said(Said),
    /// A topic closed or reopened; `key` (chat and service message id) names the change
    /// once, however often it is heard.
    Topic {
        /// The topic.
        place: Place,
        /// What happened to it.
        change: TopicChange,
        /// `<chat id>:<message id>` of the service message.
        key: String,
    },
    /// Nothing Threadline carries; the reason is for logs.
    Nothing(&'static str),
}

impl Update {
    /// What this update means.
    pub(crate) fn meaning(&self) -> Meaning {
        match (&self.message, &self.channel_post) {
            (Some(m), _) | (None, Some(m)) => m.meaning(),
            (None, None) => Meaning::Nothing("an update type the listener does not read"),
        }
    }
}

impl Message {
    /// The topic this message is in. `message_thread_id` alone is no topic: Telegram also
    /// sets it on reply chains in supergroups that are not forums, and on replies in a
    /// forum's General topic (tdlib/telegram-bot-api#447; qf-studio/pilot#4887), where
    /// posting with it fails; `is_topic_message` is the Bot API's "sent to a topic".
    fn topic(&self) -> Option<i64> {
        match (self.is_topic_message, self.message_thread_id) {
            (Some(true), Some(thread)) => Some(thread),
            (Some(true), None) | (Some(false) | None, _) => None,
        }
    }

    fn place(&self) -> Place {
        let chat = self.chat.id.to_string();
        match self.topic() {
            Some(thread) => Place {
                id: thread.to_string(),
                parent: Some(chat),
            },
            None => Place {
                id: chat,
                parent: None,
            },
        }
    }

    fn meaning(&self) -> Meaning {
        let closed = self.forum_topic_closed.is_some();
        let reopened = self.forum_topic_reopened.is_some();
        if closed || reopened {
            if self.topic().is_none() {
                return Meaning::Nothing("a topic service message outside a topic");
            }
            let change = if closed {
                TopicChange::Closed
            } else {
                TopicChange::Reopened
            };
            return Meaning::Topic {
                place: self.place(),
                change,
                key: format!("{}:{}", self.chat.id, self.message_id),
            };
        }
        // "In specific instances (e.g., message containing a video sent to a big chat), the
        // server might automatically schedule a message instead of sending it immediately.
        // In such cases, this field will be 0" (Message.message_id): no stable id yet.
        if self.message_id == 0 {
            return Meaning::Nothing("a scheduled message without its id yet");
        }
        let files = self.files();
        let text = self
            .text
            .clone()
            .or_else(|| self.caption.clone())
            .unwrap_or_default();
        if text.is_empty() && files.is_empty() {
            return Meaning::Nothing(
                "no text, caption or file (a sticker, poll, service message…)",
            );
        }
        let Some(writer) = self.writer() else {
            return Meaning::Nothing("a message without a sender");
        };
        Meaning::Said(Said {
            place: self.place(),
            message_id: self.message_id.to_string(),
            text,
            writer,
            reply_to: self.reply_to(),
            files,
        })
    }

    /// The answered message. In a forum topic every message carries `reply_to_message` =
    /// the topic's creation service message (aiogram/aiogram#1511; banteg/takopi#152 shows
    /// one from production), which is no reply: it is left out when it is the topic root
    /// (its id is the topic's id) or a `forum_topic_created` message.
    fn reply_to(&self) -> Option<String> {
        let replied = self.reply_to_message.as_ref()?;
        let is_root = replied.forum_topic_created.is_some()
            || self.topic().is_some_and(|t| t == replied.message_id);
        (!is_root).then(|| replied.message_id.to_string())
    }

    /// `from` for people and bots; a channel post (no `from`) is written by its chat.
    /// Messages sent on behalf of a chat carry a placeholder `from` ("for backward
    /// compatibility … a fake sender user in non-channel chats", Message.from): the chat in
    /// `sender_chat` is the writer then.
    fn writer(&self) -> Option<Writer> {
        if let Some(chat) = &self.sender_chat {
            return Some(Writer {
                id: chat.id.to_string(),
                is_bot: false,
                name: chat.title.clone(),
            });
        }
        let user = self.from.as_ref()?;
        let full = match &user.last_name {
            Some(last) if !last.is_empty() => format!("{} {last}", user.first_name),
            Some(_) | None => user.first_name.clone(),
        };
        let name = if full.trim().is_empty() {
            user.username.clone()
        } else {
            Some(full)
        };
        Some(Writer {
            id: user.id.to_string(),
            is_bot: user.is_bot,
            name,
        })
    }

    fn files(&self) -> Vec<FileRef> {
        let mut files = Vec::new();
        for f in [&self.document, &self.audio, &self.video, &self.voice]
            .into_iter()
            .flatten()
        {
            files.push(FileRef {
                name: f.file_name.clone(),
                content_type: f.mime_type.clone(),
                size: f.file_size,
                url: format!("tg-file:{}", f.file_id),
            });
        }
        // "Available sizes of the photo": one photo, several sizes; the largest stands for it.
        if let Some(p) = self.photo.iter().max_by_key(|p| p.width * p.height) {
            files.push(FileRef {
                name: None,
                // The Bot API does not say; photos are re-encoded by Telegram.
                content_type: None,
                size: p.file_size,
                url: format!("tg-file:{}", p.file_id),
            });
        }
        files
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const CHAT: i64 = -1_001_234_567_890;

    fn update(message: Value) -> Update {
        serde_json::from_value(json!({ "update_id": 7, "message": message })).unwrap()
    }

    fn base(extra: Value) -> Value {
        let mut m = json!({
            "message_id": 12,
            "from": { "id": 42, "is_bot": false, "first_name": "Ada", "last_name": "Lovelace",
                      "username": "ada" },
            "chat": { "id": CHAT, "type": "supergroup", "is_forum": true, "title": "Team" },
            "date": 1_700_000_000,
        });
        if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
            m.extend(extra);
        }
        m
    }

    fn said(meaning: Meaning) -> Said {
        match meaning {
            Meaning::Said(s) => s,
            other @ (Meaning::Topic { .. } | Meaning::Nothing(_)) => panic!("not said: {other:?}"),
        }
    }

    fn topic_root(thread: i64) -> Value {
        json!({ "message_id": thread, "chat": { "id": CHAT, "type": "supergroup" }, "date": 1,
                "forum_topic_created": { "name": "t", "icon_color": 7_322_096 } })
    }

    #[test]
    fn a_topic_message_is_heard_in_the_topic_under_its_chat_and_its_root_is_no_reply() {
        let s = said(
            update(base(json!({
                "message_thread_id": 5, "is_topic_message": true, "text": "hello",
                "reply_to_message": topic_root(5),
            })))
            .meaning(),
        );
        assert_eq!(
            s.place,
            Place {
                id: "5".into(),
                parent: Some(CHAT.to_string())
            }
        );
        assert_eq!(s.message_id, "12");
        assert_eq!(s.text, "hello");
        assert_eq!(s.reply_to, None);
        assert_eq!(
            s.writer,
            Writer {
                id: "42".into(),
                is_bot: false,
                name: Some("Ada Lovelace".into())
            }
        );
        assert!(s.files.is_empty());
    }

    #[test]
    fn a_reply_in_a_topic_names_the_answered_message() {
        let s = said(
            update(base(json!({
                "message_thread_id": 5, "is_topic_message": true, "text": "yes",
                "reply_to_message": { "message_id": 9, "chat": { "id": CHAT, "type": "supergroup" },
                                      "date": 1 },
            })))
            .meaning(),
        );
        assert_eq!(s.reply_to.as_deref(), Some("9"));
    }

    #[test]
    fn a_thread_id_without_is_topic_message_is_the_chat_itself() {
        // A reply chain in a plain supergroup, or a reply in a forum's General topic.
        let s = said(
            update(base(json!({
                "message_thread_id": 3, "text": "in general",
                "reply_to_message": { "message_id": 3, "chat": { "id": CHAT, "type": "supergroup" },
                                      "date": 1 },
            })))
            .meaning(),
        );
        assert_eq!(
            s.place,
            Place {
                id: CHAT.to_string(),
                parent: None
            }
        );
        // Outside a topic, the same id is a real reply.
        assert_eq!(s.reply_to.as_deref(), Some("3"));
    }

    #[test]
    fn files_are_described_with_a_token_free_reference_and_the_largest_photo() {
        let s = said(
            update(base(json!({
                "caption": "see",
                "document": { "file_id": "DOC", "file_unique_id": "d", "file_name": "a.pdf",
                              "mime_type": "application/pdf", "file_size": 100 },
                "photo": [
                    { "file_id": "SMALL", "file_unique_id": "s", "width": 90, "height": 60, "file_size": 1 },
                    { "file_id": "BIG", "file_unique_id": "b", "width": 1280, "height": 853, "file_size": 9 },
                ],
                "voice": { "file_id": "VOICE", "file_unique_id": "v", "duration": 2,
                           "mime_type": "audio/ogg" },
            })))
            .meaning(),
        );
        assert_eq!(s.text, "see");
        assert_eq!(
            s.files,
            [
                FileRef {
                    name: Some("a.pdf".into()),
                    content_type: Some("application/pdf".into()),
                    size: Some(100),
                    url: "tg-file:DOC".into()
                },
                FileRef {
                    name: None,
                    content_type: Some("audio/ogg".into()),
                    size: None,
                    url: "tg-file:VOICE".into()
                },
                FileRef {
                    name: None,
                    content_type: None,
                    size: Some(9),
                    url: "tg-file:BIG".into()
                },
            ]
        );
    }

    #[test]
    fn topic_closed_and_reopened_are_changes_of_the_topic_keyed_by_the_service_message() {
        let closed = update(base(json!({
            "message_thread_id": 5, "is_topic_message": true, "forum_topic_closed": {},
            "reply_to_message": topic_root(5),
        })))
        .meaning();
        let topic = Place {
            id: "5".into(),
            parent: Some(CHAT.to_string()),
        };
        assert_eq!(
            closed,
            Meaning::Topic {
                place: topic.clone(),
                change: TopicChange::Closed,
                key: format!("{CHAT}:12")
            }
        );
        let reopened = update(base(json!({
            "message_thread_id": 5, "is_topic_message": true, "forum_topic_reopened": {},
        })))
        .meaning();
        assert!(matches!(
            reopened,
            Meaning::Topic {
                change: TopicChange::Reopened,
                ..
            }
        ));
    }

    #[test]
    fn bots_channels_and_anonymous_admins_are_written_truthfully() {
        let bot = said(
            update(base(json!({
                "from": { "id": 7, "is_bot": true, "first_name": "Other", "username": "other_bot" },
                "text": "beep",
            })))
            .meaning(),
        );
        assert!(bot.writer.is_bot);
        assert_eq!(bot.writer.name.as_deref(), Some("Other"));
        // Sent on behalf of the group: `from` is Telegram's placeholder, the chat wrote it.
        let anon = said(
            update(base(json!({
                "from": { "id": 1_087_968_824, "is_bot": true, "first_name": "Group",
                          "username": "GroupAnonymousBot" },
                "sender_chat": { "id": CHAT, "type": "supergroup", "title": "Team" },
                "text": "from the admins",
            })))
            .meaning(),
        );
        assert_eq!(
            anon.writer,
            Writer {
                id: CHAT.to_string(),
                is_bot: false,
                name: Some("Team".into())
            }
        );
        let post: Update = serde_json::from_value(json!({ "update_id": 8, "channel_post": {
            "message_id": 3, "chat": { "id": -100_777, "type": "channel", "title": "News" },
            "sender_chat": { "id": -100_777, "type": "channel", "title": "News" },
            "date": 1, "text": "posted" } }))
        .unwrap();
        let post = said(post.meaning());
        assert_eq!(post.writer.id, "-100777");
        assert_eq!(post.place.id, "-100777");
    }

    #[test]
    fn nothing_to_carry_is_nothing() {
        for m in [
            base(json!({ "sticker": { "file_id": "S" } })),
            base(json!({ "new_chat_members": [] })),
            base(json!({ "message_id": 0, "text": "scheduled" })),
            base(json!({ "forum_topic_closed": {} })),
        ] {
            assert!(
                matches!(update(m.clone()).meaning(), Meaning::Nothing(_)),
                "{m}"
            );
        }
        let edited: Update = serde_json::from_value(json!({ "update_id": 1,
            "edited_message": base(json!({ "text": "x" })) }))
        .unwrap();
        assert!(matches!(edited.meaning(), Meaning::Nothing(_)));
    }
}
