//! What a Gateway dispatch means to Threadline, without any I/O: a person's message, a change
//! of a conversation's life, or nothing. Field names and meanings follow
//! discord/discord-api-docs@c98d64bc `developers/events/gateway-events.mdx` (Message Create,
//! Thread Update / Delete / List Sync, Guild Create, Message Delete) and
//! `developers/resources/message.mdx` (Message Types, Message Reference Types).

use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use threadline_schemas::{Attachment, Author, ConversationChange};

/// How many threads' parents one shard remembers; the oldest learned is forgotten first.
const THREAD_PARENTS: usize = 50_000;

/// What a dispatch asks of the listener.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Out {
    /// A message someone wrote.
    Message(Message),
    /// A conversation's life changed: end its bindings.
    Change {
        /// The conversation (the thread or channel id).
        conversation_id: String,
        /// A thread's parent channel, when known.
        parent: Option<String>,
        /// What happened.
        change: ConversationChange,
        /// What makes the platform event unique (its replays collapse).
        key: String,
    },
}

/// A heard message, before the intake stamps channel and account on its conversation.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Message {
    /// The channel or thread id it was written in.
    pub(super) conversation_id: String,
    /// The thread's parent channel, when it is a thread whose parent is known.
    pub(super) parent: Option<String>,
    /// The message id.
    pub(super) message_id: String,
    /// Its text (empty without MESSAGE_CONTENT, unless a DM or a mention of the bot).
    pub(super) text: String,
    /// Its author.
    pub(super) author: Author,
    /// The message it replies to.
    pub(super) reply_to: Option<String>,
    /// Its files.
    pub(super) attachments: Vec<Attachment>,
}

/// Threads' parent channels, learned from the dispatches that carry them.
#[derive(Debug, Default)]
pub(super) struct Threads {
    parents: HashMap<String, String>,
    order: VecDeque<String>,
}

impl Threads {
    fn learn(&mut self, thread: &str, parent: &str) {
        if self
            .parents
            .insert(thread.to_owned(), parent.to_owned())
            .is_none()
        {
            self.order.push_back(thread.to_owned());
            while self.order.len() > THREAD_PARENTS {
                if let Some(old) = self.order.pop_front() {
                    self.parents.remove(&old);
                }
            }
        }
    }

    fn learn_channel(&mut self, channel: &Channel) {
        if let (true, Some(parent)) = (channel.is_thread(), channel.parent_id.as_deref()) {
            self.learn(&channel.id, parent);
        }
    }

    fn parent(&self, thread: &str) -> Option<String> {
        self.parents.get(thread).cloned()
    }

    fn forget(&mut self, thread: &str) {
        self.parents.remove(thread);
    }
}

#[derive(Deserialize)]
struct User {
    id: String,
    username: String,
    #[serde(default)]
    global_name: Option<String>,
    #[serde(default)]
    bot: Option<bool>,
}

#[derive(Deserialize)]
struct Reference {
    #[serde(default, rename = "type")]
    kind: Option<u8>,
    #[serde(default)]
    message_id: Option<String>,
}

#[derive(Deserialize)]
struct File {
    filename: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    url: String,
}

#[derive(Deserialize)]
struct MessageCreate {
    id: String,
    channel_id: String,
    author: User,
    #[serde(default)]
    content: String,
    #[serde(default, rename = "type")]
    kind: u8,
    #[serde(default)]
    webhook_id: Option<String>,
    #[serde(default)]
    message_reference: Option<Reference>,
    #[serde(default)]
    attachments: Vec<File>,
}

#[derive(Deserialize)]
struct ThreadMetadata {
    #[serde(default)]
    locked: bool,
}

#[derive(Deserialize)]
struct Channel {
    id: String,
    #[serde(default, rename = "type")]
    kind: u8,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    thread_metadata: Option<ThreadMetadata>,
}

impl Channel {
    /// channel.mdx, Channel Types: 10 ANNOUNCEMENT_THREAD, 11 PUBLIC_THREAD, 12 PRIVATE_THREAD.
    fn is_thread(&self) -> bool {
        matches!(self.kind, 10..=12)
    }
}

#[derive(Deserialize)]
struct WithThreads {
    #[serde(default)]
    threads: Vec<Channel>,
}

#[derive(Deserialize)]
struct MessageDelete {
    id: String,
    channel_id: String,
}

/// message.mdx, Message Types: 0 DEFAULT and 19 REPLY are what people write; the others are
/// system notices (a thread was created, a member joined, a pin).
fn written_by_someone(kind: u8) -> bool {
    matches!(kind, 0 | 19)
}

/// What dispatch `t` with data `d` means, learning threads' parents on the way.
pub(super) fn interpret(
    t: &str,
    d: &serde_json::Value,
    threads: &mut Threads,
) -> Result<Option<Out>, serde_json::Error> {
    Ok(match t {
        "MESSAGE_CREATE" => {
            let m = MessageCreate::deserialize(d)?;
            if !written_by_someone(m.kind) {
                return Ok(None);
            }
            // message.mdx, Message Reference Types: 0 DEFAULT is a reply; 1 FORWARD quotes a
            // message from elsewhere and answers nothing here. A missing type is DEFAULT.
            let reply_to = m
                .message_reference
                .filter(|r| r.kind.unwrap_or(0) == 0)
                .and_then(|r| r.message_id);
            Some(Out::Message(Message {
                parent: threads.parent(&m.channel_id),
                conversation_id: m.channel_id,
                message_id: m.id,
                text: m.content,
                author: Author {
                    id: m.author.id,
                    // A webhook's message (a persona's) carries a user object without `bot`;
                    // `webhook_id` is what marks it.
                    is_bot: m.author.bot.unwrap_or(false) || m.webhook_id.is_some(),
                    name: Some(m.author.global_name.unwrap_or(m.author.username)),
                },
                reply_to,
                attachments: m
                    .attachments
                    .into_iter()
                    .map(|f| Attachment {
                        name: Some(f.filename),
                        content_type: f.content_type,
                        size: f.size,
                        url: f.url,
                    })
                    .collect(),
            }))
        }
        "GUILD_CREATE" | "THREAD_LIST_SYNC" => {
            for thread in WithThreads::deserialize(d)?.threads {
                threads.learn_channel(&thread);
            }
            None
        }
        "THREAD_CREATE" => {
            threads.learn_channel(&Channel::deserialize(d)?);
            None
        }
        "THREAD_UPDATE" => {
            let thread = Channel::deserialize(d)?;
            threads.learn_channel(&thread);
            // threads.mdx: an archived thread is revived by the next post (Discord archives
            // idle threads by itself), so only a lock ends the conversation.
            let locked = thread.thread_metadata.as_ref().is_some_and(|m| m.locked);
            locked.then(|| Out::Change {
                parent: thread.parent_id.clone(),
                key: format!("locked:{}", thread.id),
                conversation_id: thread.id,
                change: ConversationChange::Locked,
            })
        }
        "THREAD_DELETE" | "CHANNEL_DELETE" => {
            let channel = Channel::deserialize(d)?;
            let parent = if channel.is_thread() || t == "THREAD_DELETE" {
                channel
                    .parent_id
                    .clone()
                    .or_else(|| threads.parent(&channel.id))
            } else {
                None
            };
            threads.forget(&channel.id);
            Some(Out::Change {
                key: format!("deleted:{}", channel.id),
                conversation_id: channel.id,
                parent,
                change: ConversationChange::Deleted,
            })
        }
        "MESSAGE_DELETE" => {
            let m = MessageDelete::deserialize(d)?;
            // threads.mdx: a thread started from a message has that message's id, so the
            // starter's deletion is a MESSAGE_DELETE whose id is the thread's.
            (m.id == m.channel_id).then(|| Out::Change {
                parent: threads.parent(&m.channel_id),
                key: format!("root-deleted:{}", m.id),
                conversation_id: m.channel_id,
                change: ConversationChange::RootDeleted,
            })
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(extra: serde_json::Value) -> serde_json::Value {
        let mut m = json!({
            "id": "900", "channel_id": "500", "type": 0, "content": "hello",
            "author": {"id": "7", "username": "ada", "global_name": "Ada L", "discriminator": "0"},
            "attachments": [], "mentions": [], "timestamp": "2026-12-07T20:00:00+00:00"
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            m[k] = v.clone();
        }
        m
    }

    #[test]
    fn a_message_in_a_known_thread_names_its_parent_and_its_author() {
        let mut threads = Threads::default();
        interpret(
            "GUILD_CREATE",
            &json!({"id": "1", "threads": [{"id": "500", "type": 11, "parent_id": "400"}]}),
            &mut threads,
        )
        .unwrap();
        let out = interpret("MESSAGE_CREATE", &message(json!({})), &mut threads).unwrap();
        let Some(Out::Message(m)) = out else {
            panic!("{out:?}")
        };
        assert_eq!(m.conversation_id, "500");
        assert_eq!(m.parent.as_deref(), Some("400"));
        assert_eq!(m.message_id, "900");
        assert_eq!(m.text, "hello");
        assert_eq!(
            m.author,
            Author {
                id: "7".into(),
                is_bot: false,
                name: Some("Ada L".into())
            }
        );
    }

    #[test]
    fn an_unknown_thread_is_heard_without_a_parent_and_a_username_stands_in_for_a_display_name() {
        let mut threads = Threads::default();
        let d = message(json!({"author": {"id": "7", "username": "ada", "global_name": null}}));
        let Ok(Some(Out::Message(m))) = interpret("MESSAGE_CREATE", &d, &mut threads) else {
            panic!()
        };
        assert_eq!(m.parent, None);
        assert_eq!(m.author.name.as_deref(), Some("ada"));
    }

    #[test]
    fn replies_and_attachments_are_kept_and_forwards_answer_nothing() {
        let mut threads = Threads::default();
        let d = message(json!({
            "type": 19,
            "message_reference": {"type": 0, "message_id": "800", "channel_id": "500"},
            "attachments": [{"id": "1", "filename": "a.png", "content_type": "image/png",
                             "size": 12, "url": "https://cdn.discordapp.com/a.png", "proxy_url": "x"}]
        }));
        let Ok(Some(Out::Message(m))) = interpret("MESSAGE_CREATE", &d, &mut threads) else {
            panic!()
        };
        assert_eq!(m.reply_to.as_deref(), Some("800"));
        assert_eq!(
            m.attachments,
            vec![Attachment {
                name: Some("a.png".into()),
                content_type: Some("image/png".into()),
                size: Some(12),
                url: "https://cdn.discordapp.com/a.png".into()
            }]
        );
        let d = message(json!({"message_reference": {"type": 1, "message_id": "800"}}));
        let Ok(Some(Out::Message(m))) = interpret("MESSAGE_CREATE", &d, &mut threads) else {
            panic!()
        };
        assert_eq!(m.reply_to, None);
    }

    #[test]
    fn bots_and_webhooks_are_marked_and_system_notices_are_not_messages() {
        let mut threads = Threads::default();
        let d = message(json!({"author": {"id": "9", "username": "b", "bot": true}}));
        let Ok(Some(Out::Message(m))) = interpret("MESSAGE_CREATE", &d, &mut threads) else {
            panic!()
        };
        assert!(m.author.is_bot);
        let d = message(json!({"webhook_id": "33", "author": {"id": "33", "username": "persona"}}));
        let Ok(Some(Out::Message(m))) = interpret("MESSAGE_CREATE", &d, &mut threads) else {
            panic!()
        };
        assert!(m.author.is_bot);
        let d = message(json!({"type": 18}));
        assert_eq!(interpret("MESSAGE_CREATE", &d, &mut threads).unwrap(), None);
    }

    #[test]
    fn a_lock_ends_a_thread_and_an_archive_alone_does_not() {
        let mut threads = Threads::default();
        let archived = json!({"id": "500", "type": 11, "parent_id": "400",
                              "thread_metadata": {"archived": true, "locked": false}});
        assert_eq!(
            interpret("THREAD_UPDATE", &archived, &mut threads).unwrap(),
            None
        );
        let locked = json!({"id": "500", "type": 11, "parent_id": "400",
                            "thread_metadata": {"archived": true, "locked": true}});
        let out = interpret("THREAD_UPDATE", &locked, &mut threads).unwrap();
        assert!(
            matches!(out, Some(Out::Change { change: ConversationChange::Locked, ref conversation_id, ref parent, .. })
            if conversation_id == "500" && parent.as_deref() == Some("400"))
        );
    }

    #[test]
    fn deletions_of_threads_channels_and_a_threads_starter_end_them() {
        let mut threads = Threads::default();
        interpret(
            "THREAD_CREATE",
            &json!({"id": "500", "type": 11, "parent_id": "400"}),
            &mut threads,
        )
        .unwrap();
        let out = interpret(
            "MESSAGE_DELETE",
            &json!({"id": "500", "channel_id": "500"}),
            &mut threads,
        )
        .unwrap();
        assert!(
            matches!(out, Some(Out::Change { change: ConversationChange::RootDeleted, ref parent, .. })
            if parent.as_deref() == Some("400"))
        );
        let other = json!({"id": "501", "channel_id": "500"});
        assert_eq!(
            interpret("MESSAGE_DELETE", &other, &mut threads).unwrap(),
            None
        );
        let out = interpret(
            "THREAD_DELETE",
            &json!({"id": "500", "type": 11, "parent_id": "400", "guild_id": "1"}),
            &mut threads,
        )
        .unwrap();
        assert!(matches!(
            out,
            Some(Out::Change {
                change: ConversationChange::Deleted,
                ..
            })
        ));
        let out = interpret(
            "CHANNEL_DELETE",
            &json!({"id": "400", "type": 0}),
            &mut threads,
        )
        .unwrap();
        assert!(
            matches!(out, Some(Out::Change { change: ConversationChange::Deleted, ref conversation_id, parent: None, .. })
            if conversation_id == "400")
        );
    }
}
