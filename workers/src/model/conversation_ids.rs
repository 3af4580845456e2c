//! What a conversation id looks like on each platform, so a spawn that would bind a string
//! no platform could have named (`placement: current` / `child`) is refused up front instead
//! of binding a conversation nobody can ever post to or write in.

use threadline_schemas::ConversationRef;

/// Checks the ids of `conversation` against its channel's id shapes. Webhook channels name
/// conversations however their bridge does: anything passes.
pub fn check(conversation: &ConversationRef) -> Result<(), String> {
    let id = conversation.conversation_id.as_str();
    let parent = conversation.parent_conversation_id.as_deref();
    let fail = |what: &str, value: &str| {
        Err(format!(
            "`{value}` is not a {} {what}",
            conversation.channel
        ))
    };
    match conversation.channel.as_str() {
        // Snowflakes: a 64-bit integer in decimal (discord-api-docs reference.mdx,
        // "Snowflakes"); a thread is a channel, so its id is one too.
        "discord" => {
            for value in std::iter::once(id).chain(parent) {
                if !is_snowflake(value) {
                    return fail("channel or thread id (a snowflake)", value);
                }
            }
            Ok(())
        }
        // Channel ids are upper-case alphanumerics (C…, G…, D…); a thread is the `ts` of its
        // root, "<seconds>.<microseconds>".
        "slack" => match parent {
            Some(channel) if !is_slack_channel(channel) => fail("channel id", channel),
            Some(_) if !is_slack_ts(id) => fail("thread ts", id),
            Some(_) => Ok(()),
            None if !is_slack_channel(id) => fail("channel id", id),
            None => Ok(()),
        },
        // `chat_id` is "Integer or String" (an integer, or `@channelusername`) and a forum
        // topic's `message_thread_id` an Integer (Bot API, sendMessage).
        "telegram" => match parent {
            Some(chat) if !is_telegram_chat(chat) => fail("chat id", chat),
            Some(_) if id.parse::<i64>().is_err() => fail("topic id (message_thread_id)", id),
            Some(_) => Ok(()),
            None if !is_telegram_chat(id) => fail("chat id", id),
            None => Ok(()),
        },
        // Room ids start with `!` (room version 12 ids have no `:server` part), event ids
        // with `$` (client-server API, "Room IDs" / "Event IDs").
        "matrix" => match parent {
            Some(room) if !room.starts_with('!') || room.len() < 2 => fail("room id", room),
            Some(_) if !id.starts_with('$') || id.len() < 2 => fail("thread root event id", id),
            Some(_) => Ok(()),
            None if !id.starts_with('!') || id.len() < 2 => fail("room id", id),
            None => Ok(()),
        },
        _webhook => Ok(()),
    }
}

fn is_snowflake(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) && value.parse::<u64>().is_ok()
}

fn is_slack_channel(value: &str) -> bool {
    value.len() >= 2
        && value
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn is_slack_ts(value: &str) -> bool {
    match value.split_once('.') {
        Some((secs, micros)) => {
            !secs.is_empty()
                && !micros.is_empty()
                && secs
                    .bytes()
                    .chain(micros.bytes())
                    .all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn is_telegram_chat(value: &str) -> bool {
    value.parse::<i64>().is_ok()
        || value.strip_prefix('@').is_some_and(|name| {
            name.len() >= 4 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(channel: &str, id: &str, parent: Option<&str>) -> ConversationRef {
        ConversationRef {
            channel: channel.into(),
            account_id: "a".into(),
            conversation_id: id.into(),
            parent_conversation_id: parent.map(str::to_owned),
        }
    }

    #[test]
    fn real_platform_ids_pass() {
        for c in [
            conv("discord", "100000000000000001", None),
            conv("discord", "100000000000000002", Some("100000000000000001")),
            conv("slack", "C0THREADLINE", None),
            conv("slack", "1700000000.000100", Some("C0THREADLINE")),
            conv("telegram", "-1001234567890", None),
            conv("telegram", "@threadline_news", None),
            conv("telegram", "42", Some("-1001234567890")),
            conv("matrix", "!room:fake", None),
            conv("matrix", "!Abc123opaque", None),
            conv("matrix", "$root", Some("!room:fake")),
            conv("matrix", "$e", Some("!r")),
            conv("matrix", "!a", None),
            conv("webhook:wa", "any thing at all", None),
        ] {
            assert_eq!(check(&c), Ok(()), "{c:?}");
        }
    }

    #[test]
    fn strings_no_platform_could_name_are_refused_saying_which_id() {
        for (c, named) in [
            (conv("discord", "general", None), "general"),
            (conv("discord", "1", Some("chan")), "chan"),
            (conv("discord", "99999999999999999999999", None), "9999"),
            (conv("slack", "general", None), "general"),
            (conv("slack", "not-a-ts", Some("C1")), "not-a-ts"),
            (conv("slack", "1.2", Some("c1")), "c1"),
            (conv("telegram", "chat", None), "chat"),
            (conv("telegram", "topic", Some("-100")), "topic"),
            (conv("matrix", "room", None), "room"),
            (conv("matrix", "root", Some("!r")), "root"),
            (conv("matrix", "$x", Some("r")), "`r`"),
            (conv("matrix", "$x", Some("!")), "`!`"),
            (conv("matrix", "$", Some("!r")), "`$`"),
            (conv("matrix", "!", None), "`!`"),
            (conv("telegram", "42", Some("chat")), "chat"),
            (conv("telegram", "@ab", None), "@ab"),
            (conv("telegram", "@bad-name", None), "@bad-name"),
            (conv("slack", ".5", Some("C1")), ".5"),
            (conv("slack", "5.", Some("C1")), "5."),
        ] {
            let error = check(&c).unwrap_err();
            assert!(error.contains(named), "{c:?}: {error}");
            assert!(error.contains(&c.channel), "{error}");
        }
    }
}
