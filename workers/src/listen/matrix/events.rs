//! What a Matrix event (from a `/sync` batch or an appservice transaction) means to
//! Threadline: pure, so every mapping rule is a unit test. The conversation shapes are the
//! delivery side's: a room is `conversation_id = room id`; a thread is `conversation_id =`
//! its root event id with `parent_conversation_id =` the room (spec `client-server-api`,
//! "Threading": a threaded event relates to its root with `rel_type: m.thread`).

use serde_json::Value;
use std::collections::HashMap;
use threadline_schemas::{Attachment, Author, ConversationRef};

use super::super::Heard;

/// What one event is to the listener.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Mapped {
    /// A person's (or a bot's) message.
    Message(Heard),
    /// `m.room.redaction` of `conversation`'s root (when a thread hangs from it): `key` is
    /// the redaction's own event id, so its replays collapse.
    Redacted {
        /// The thread whose root was redacted.
        conversation: ConversationRef,
        /// The redaction event's id.
        key: String,
    },
    /// Nothing Threadline acts on (state, an edit, a redacted message, malformed).
    Ignored,
}

/// Display names known for a room's members (`m.room.member` `displayname` by user id),
/// from what the batch carried anyway: no extra request per message.
pub(crate) type Names = HashMap<String, String>;

/// Learns the display names `events` (state or timeline) carry.
pub(crate) fn learn_names(names: &mut Names, events: &[Value]) {
    for event in events {
        if event["type"] != "m.room.member" {
            continue;
        }
        let (Some(user), Some(name)) = (
            event["state_key"].as_str(),
            event["content"]["displayname"].as_str(),
        ) else {
            continue;
        };
        names.insert(user.to_owned(), name.to_owned());
    }
}

/// Maps one event of `room`; `conversation(id, parent)` stamps channel and account.
pub(crate) fn map_event(
    room: &str,
    event: &Value,
    names: &Names,
    conversation: &dyn Fn(&str, Option<&str>) -> ConversationRef,
) -> Mapped {
    let Some(event_id) = event["event_id"].as_str() else {
        return Mapped::Ignored;
    };
    match event["type"].as_str() {
        Some("m.room.message") => message(room, event_id, event, names, conversation),
        Some("m.room.redaction") => {
            // Room versions 1–10 carry `redacts` at the top level, 11 and later in the
            // content (spec `rooms/v11.md`, "Moving the redacts key").
            let redacts = event["content"]["redacts"]
                .as_str()
                .or_else(|| event["redacts"].as_str());
            match redacts {
                Some(root) => Mapped::Redacted {
                    conversation: conversation(root, Some(room)),
                    key: event_id.to_owned(),
                },
                None => Mapped::Ignored,
            }
        }
        Some(_) | None => Mapped::Ignored,
    }
}

fn message(
    room: &str,
    event_id: &str,
    event: &Value,
    names: &Names,
    conversation: &dyn Fn(&str, Option<&str>) -> ConversationRef,
) -> Mapped {
    let content = &event["content"];
    // A redacted message keeps its type with an empty content: nothing to hear.
    let (Some(sender), Some(body)) = (event["sender"].as_str(), content["body"].as_str()) else {
        return Mapped::Ignored;
    };
    let relation = &content["m.relates_to"];
    let rel_type = relation["rel_type"].as_str();
    if rel_type == Some("m.replace") {
        // Edits are not new messages (issue 34 decides what an edit becomes).
        return Mapped::Ignored;
    }
    let thread_root = (rel_type == Some("m.thread"))
        .then(|| relation["event_id"].as_str())
        .flatten();
    let place = match thread_root {
        Some(root) => conversation(root, Some(room)),
        None => conversation(room, None),
    };
    // In a thread, `m.in_reply_to` with `is_falling_back: true` only points non-threading
    // clients at the thread's latest event; it is a reply only without that flag
    // (spec "Threading", "Fallback for unthreaded clients").
    let falling_back = thread_root.is_some() && relation["is_falling_back"] == true;
    let reply_to = (!falling_back)
        .then(|| relation["m.in_reply_to"]["event_id"].as_str())
        .flatten()
        .map(str::to_owned);
    Mapped::Message(Heard {
        conversation: place,
        message_id: event_id.to_owned(),
        text: body.to_owned(),
        author: Author {
            id: sender.to_owned(),
            // Matrix has no bot flag; the router knows our own ids.
            is_bot: false,
            name: names.get(sender).cloned(),
        },
        reply_to,
        attachments: attachment(content).into_iter().collect(),
    })
}

/// The file of an `m.file` / `m.image` / `m.video` / `m.audio` message (its `mxc://` URL;
/// an encrypted file's is under `file.url`).
fn attachment(content: &Value) -> Option<Attachment> {
    match content["msgtype"].as_str()? {
        "m.file" | "m.image" | "m.video" | "m.audio" => {}
        _ => return None,
    }
    let url = content["url"]
        .as_str()
        .or_else(|| content["file"]["url"].as_str())?;
    let info = &content["info"];
    Some(Attachment {
        // `filename` when the body is a caption (spec "m.file": v1.10 media captions),
        // else the body is the file name.
        name: content["filename"]
            .as_str()
            .or_else(|| content["body"].as_str())
            .map(str::to_owned),
        content_type: info["mimetype"].as_str().map(str::to_owned),
        size: info["size"].as_u64(),
        url: url.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(id: &str, parent: Option<&str>) -> ConversationRef {
        ConversationRef {
            channel: "matrix".into(),
            account_id: "default".into(),
            conversation_id: id.into(),
            parent_conversation_id: parent.map(str::to_owned),
        }
    }

    fn map(event: Value, names: &Names) -> Mapped {
        map_event("!room:hs", &event, names, &conv)
    }

    fn heard(mapped: Mapped) -> Heard {
        match mapped {
            Mapped::Message(heard) => heard,
            other @ (Mapped::Redacted { .. } | Mapped::Ignored) => {
                panic!("not a message: {other:?}")
            }
        }
    }

    #[test]
    fn a_thread_reply_is_heard_in_the_thread_the_deliverer_posts_to() {
        let mut names = Names::new();
        learn_names(
            &mut names,
            &[
                json!({"type": "m.room.member", "state_key": "@ada:hs", "content": {"membership": "join", "displayname": "Ada"}}),
            ],
        );
        let h = heard(map(
            json!({
                "type": "m.room.message", "event_id": "$m1", "sender": "@ada:hs",
                "content": {"msgtype": "m.text", "body": "also the totals",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                        "is_falling_back": true, "m.in_reply_to": {"event_id": "$latest"}}},
            }),
            &names,
        ));
        assert_eq!(h.conversation, conv("$root", Some("!room:hs")));
        assert_eq!(h.message_id, "$m1");
        assert_eq!(h.text, "also the totals");
        assert_eq!(
            h.author,
            Author {
                id: "@ada:hs".into(),
                is_bot: false,
                name: Some("Ada".into())
            }
        );
        // The fallback reply is not a reply.
        assert_eq!(h.reply_to, None);
        assert!(h.attachments.is_empty());
    }

    #[test]
    fn a_real_reply_in_a_thread_names_what_it_answers() {
        let h = heard(map(
            json!({
                "type": "m.room.message", "event_id": "$m2", "sender": "@ada:hs",
                "content": {"msgtype": "m.text", "body": "yes",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": "$root",
                        "is_falling_back": false, "m.in_reply_to": {"event_id": "$m1"}}},
            }),
            &Names::new(),
        ));
        assert_eq!(h.reply_to.as_deref(), Some("$m1"));
        assert_eq!(h.author.name, None);
    }

    #[test]
    fn a_room_message_is_heard_in_the_room_with_its_reply() {
        let h = heard(map(
            json!({
                "type": "m.room.message", "event_id": "$m3", "sender": "@bob:hs",
                "content": {"msgtype": "m.text", "body": "hi",
                    "m.relates_to": {"m.in_reply_to": {"event_id": "$m0"}}},
            }),
            &Names::new(),
        ));
        assert_eq!(h.conversation, conv("!room:hs", None));
        assert_eq!(h.reply_to.as_deref(), Some("$m0"));
    }

    #[test]
    fn a_file_message_carries_its_mxc_url_type_size_and_name() {
        let h = heard(map(
            json!({
                "type": "m.room.message", "event_id": "$f", "sender": "@ada:hs",
                "content": {"msgtype": "m.file", "body": "see attached", "filename": "plan.pdf",
                    "url": "mxc://hs/abc", "info": {"mimetype": "application/pdf", "size": 1234}},
            }),
            &Names::new(),
        ));
        assert_eq!(
            h.attachments,
            vec![Attachment {
                name: Some("plan.pdf".into()),
                content_type: Some("application/pdf".into()),
                size: Some(1234),
                url: "mxc://hs/abc".into(),
            }]
        );
        let image = heard(map(
            json!({
                "type": "m.room.message", "event_id": "$i", "sender": "@ada:hs",
                "content": {"msgtype": "m.image", "body": "cat.png", "url": "mxc://hs/cat"},
            }),
            &Names::new(),
        ));
        assert_eq!(image.attachments[0].name.as_deref(), Some("cat.png"));
        assert_eq!(image.attachments[0].content_type, None);
    }

    #[test]
    fn edits_redacted_messages_and_state_are_not_heard() {
        let edit = json!({
            "type": "m.room.message", "event_id": "$e", "sender": "@ada:hs",
            "content": {"msgtype": "m.text", "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$m1"}},
        });
        let redacted =
            json!({"type": "m.room.message", "event_id": "$r", "sender": "@ada:hs", "content": {}});
        let state = json!({"type": "m.room.member", "event_id": "$s", "state_key": "@ada:hs", "content": {"membership": "join"}});
        for event in [edit, redacted, state, json!({"type": "m.room.message"})] {
            assert_eq!(map(event, &Names::new()), Mapped::Ignored);
        }
    }

    #[test]
    fn a_redaction_names_the_thread_hanging_from_the_redacted_event() {
        let expected = Mapped::Redacted {
            conversation: conv("$root", Some("!room:hs")),
            key: "$red".into(),
        };
        // Room version 11+: in the content; older versions: at the top level.
        let v11 = json!({"type": "m.room.redaction", "event_id": "$red", "sender": "@ada:hs", "content": {"redacts": "$root"}});
        let v10 = json!({"type": "m.room.redaction", "event_id": "$red", "sender": "@ada:hs", "redacts": "$root", "content": {}});
        assert_eq!(map(v11, &Names::new()), expected);
        assert_eq!(map(v10, &Names::new()), expected);
    }
}
