//! `parse_mode: "HTML"` as the Bot API reads it ("Formatting options", HTML style,
//! core.telegram.org/bots/api#html-style): the text people see and its entities, or the 400
//! Telegram answers. Written apart from Threadline's renderer on purpose: a fake that shared
//! the renderer's idea of the format could not catch its mistakes.
//!
//! What the page says, and this parser enforces:
//! - the only tags: `b`/`strong`, `i`/`em`, `u`/`ins`, `s`/`strike`/`del`,
//!   `span class="tg-spoiler"`, `tg-spoiler`, `a href`, `tg-emoji emoji-id`, `code`, `pre`
//!   (with one `code class="language-…"` inside for the language), `blockquote`
//!   (`expandable`); any other tag is refused;
//! - "All `<`, `>` and `&` symbols that are not a part of a tag or an HTML entity must be
//!   replaced with the corresponding HTML entities"; the named entities are only `&lt;`,
//!   `&gt;`, `&amp;` and `&quot;`, and every numeric one;
//! - bold, italic, underline, strikethrough and spoiler may contain and be part of any other
//!   entity except `pre` and `code`; blockquotes cannot be nested; all other entities cannot
//!   contain each other;
//! - `tg://user?id=<user_id>` links mention a user by id (a `text_mention`).
//!
//! The error wording is tdlib's (`td/telegram/MessageEntity.cpp`, `parse_html`), which the
//! Bot API answers as `Bad Request: can't parse entities: …`.

/// One entity of a parsed message, as `MessageEntity` describes it (offsets in UTF-16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// `bold`, `italic`, `underline`, `strikethrough`, `spoiler`, `text_link`,
    /// `text_mention`, `code`, `pre`, `blockquote`, `expandable_blockquote`, `custom_emoji`.
    pub kind: &'static str,
    /// Start, in UTF-16 code units of the visible text.
    pub offset: usize,
    /// Length, in UTF-16 code units.
    pub length: usize,
    /// `text_link`: the URL.
    pub url: Option<String>,
    /// `text_mention`: the user's id.
    pub user_id: Option<i64>,
    /// `pre`: the programming language.
    pub language: Option<String>,
}

/// An open tag.
struct Open {
    name: String,
    kind: &'static str,
    start: usize,
    url: Option<String>,
    user_id: Option<i64>,
    language: Option<String>,
}

/// The visible text and entities of `html`, or why Telegram refuses it.
pub fn parse(html: &str) -> Result<(String, Vec<Entity>), String> {
    let mut text = String::new();
    let mut utf16 = 0usize;
    let mut stack: Vec<Open> = Vec::new();
    let mut entities = Vec::new();
    let mut i = 0usize;
    while i < html.len() {
        let c = html[i..].chars().next().unwrap_or('\0');
        match c {
            '<' => {
                let end = html[i..]
                    .find('>')
                    .map(|e| i + e)
                    .ok_or_else(|| format!("unclosed start tag at byte offset {i}"))?;
                let inner = &html[i + 1..end];
                if let Some(name) = inner.strip_prefix('/') {
                    let name = name.trim().to_ascii_lowercase();
                    let open = stack
                        .pop()
                        .ok_or_else(|| format!("unexpected end tag at byte offset {i}"))?;
                    if open.name != name {
                        return Err(format!(
                            "unmatched end tag at byte offset {i}, expected \"</{}>\", found \"</{name}>\"",
                            open.name
                        ));
                    }
                    if open.kind != "code_in_pre" {
                        entities.push(Entity {
                            kind: open.kind,
                            offset: open.start,
                            length: utf16 - open.start,
                            url: open.url,
                            user_id: open.user_id,
                            language: open.language,
                        });
                    }
                } else {
                    let open = start_tag(inner, i, &stack, utf16)?;
                    if open.kind == "code_in_pre" {
                        if let Some(pre) = stack.last_mut() {
                            pre.language = open.language.clone();
                        }
                    }
                    stack.push(open);
                }
                i = end + 1;
            }
            '&' => {
                let (decoded, used) = entity(&html[i..]).ok_or_else(|| {
                    format!("character '&' at byte offset {i} must be escaped as \"&amp;\"")
                })?;
                text.push(decoded);
                utf16 += decoded.len_utf16();
                i += used;
            }
            '>' => {
                return Err(format!(
                    "character '>' at byte offset {i} must be escaped as \"&gt;\""
                ))
            }
            c => {
                text.push(c);
                utf16 += c.len_utf16();
                i += c.len_utf8();
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!(
            "can't find end tag corresponding to start tag \"{}\"",
            open.name
        ));
    }
    entities.sort_by_key(|e| (e.offset, std::cmp::Reverse(e.length)));
    Ok((text, entities))
}

/// A start tag (its inside, without `<` and `>`), checked against what is open around it.
fn start_tag(inner: &str, at: usize, stack: &[Open], utf16: usize) -> Result<Open, String> {
    let (name, attrs) = match inner.find(char::is_whitespace) {
        Some(n) => (&inner[..n], inner[n..].trim()),
        None => (inner, ""),
    };
    let name = name.to_ascii_lowercase();
    let attr = |key: &str| attribute(attrs, key);
    let parent = stack.last().map(|o| o.kind);
    let mut open = Open {
        name: name.clone(),
        kind: "",
        start: utf16,
        url: None,
        user_id: None,
        language: None,
    };
    open.kind = match name.as_str() {
        "b" | "strong" => "bold",
        "i" | "em" => "italic",
        "u" | "ins" => "underline",
        "s" | "strike" | "del" => "strikethrough",
        "tg-spoiler" => "spoiler",
        "span" if attr("class").as_deref() == Some("tg-spoiler") => "spoiler",
        "a" => {
            let href = attr("href").unwrap_or_default();
            match href.strip_prefix("tg://user?id=") {
                Some(id) => {
                    open.user_id = Some(
                        id.parse()
                            .map_err(|_| format!("can't parse user identifier in \"{href}\""))?,
                    );
                    "text_mention"
                }
                None => {
                    open.url = Some(href);
                    "text_link"
                }
            }
        }
        "tg-emoji" => "custom_emoji",
        "code" if parent == Some("pre") => {
            open.language =
                attr("class").and_then(|c| c.strip_prefix("language-").map(str::to_owned));
            "code_in_pre"
        }
        "code" => "code",
        "pre" => "pre",
        "blockquote" if attrs.split_whitespace().any(|a| a == "expandable") => {
            "expandable_blockquote"
        }
        "blockquote" => "blockquote",
        other => {
            return Err(format!(
                "unsupported start tag \"{other}\" at byte offset {at}"
            ))
        }
    };
    // Nothing goes inside `pre` (but its one `code`) or `code`; links and mentions do not
    // contain each other; quotes do not nest.
    for outer in stack {
        let refused = match (outer.kind, open.kind) {
            ("pre", "code_in_pre") => false,
            ("pre" | "code" | "code_in_pre", _) => true,
            ("text_link" | "text_mention", "text_link" | "text_mention") => true,
            ("blockquote" | "expandable_blockquote", "blockquote" | "expandable_blockquote") => {
                true
            }
            _ => false,
        };
        if refused {
            return Err(format!(
                "entity \"{}\" can't be nested in \"{}\" (start tag at byte offset {at})",
                open.name, outer.name
            ));
        }
    }
    Ok(open)
}

/// The value of attribute `key` (quoted with `"` or `'`, or bare), entities decoded.
fn attribute(attrs: &str, key: &str) -> Option<String> {
    let mut rest = attrs;
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = rest[name_end..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (raw, next) = match after.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let close = after[1..].find(q).map(|e| e + 1).unwrap_or(after.len());
                    (&after[1..close], &after[(close + 1).min(after.len())..])
                }
                _ => {
                    let end = after.find(char::is_whitespace).unwrap_or(after.len());
                    (&after[..end], &after[end..])
                }
            };
            let mut r = raw;
            while let Some(c) = r.chars().next() {
                if c == '&' {
                    if let Some((d, used)) = entity(r) {
                        value.push(d);
                        r = &r[used..];
                        continue;
                    }
                }
                value.push(c);
                r = &r[c.len_utf8()..];
            }
            rest = next.trim_start();
        }
        if name.eq_ignore_ascii_case(key) {
            return Some(value);
        }
    }
    None
}

/// The character an entity at the start of `s` stands for, and its length in bytes.
fn entity(s: &str) -> Option<(char, usize)> {
    let end = s.find(';')?;
    let name = &s[1..end];
    let c = match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code).filter(|c| *c != '\0')?
        }
    };
    Some((c, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_become_entities_over_the_visible_text() {
        let (text, entities) = parse(
            "<b>Hi</b> <a href=\"https://x.org/?a=1&amp;b=2\">link</a> &lt;3 👍<code>x</code>",
        )
        .expect("Telegram accepts it");
        assert_eq!(text, "Hi link <3 👍x");
        let kinds: Vec<(&str, usize, usize)> = entities
            .iter()
            .map(|e| (e.kind, e.offset, e.length))
            .collect();
        assert_eq!(
            kinds,
            vec![("bold", 0, 2), ("text_link", 3, 4), ("code", 13, 1)]
        );
        assert_eq!(entities[1].url.as_deref(), Some("https://x.org/?a=1&b=2"));
    }

    #[test]
    fn pre_with_a_language_and_a_text_mention() {
        let (text, entities) = parse(
            "<pre><code class=\"language-rust\">fn main() {}</code></pre><a href=\"tg://user?id=42\">@42</a>",
        )
        .expect("Telegram accepts it");
        assert_eq!(text, "fn main() {}@42");
        assert_eq!(entities[0].kind, "pre");
        assert_eq!(entities[0].language.as_deref(), Some("rust"));
        assert_eq!(entities[1].kind, "text_mention");
        assert_eq!(entities[1].user_id, Some(42));
    }

    #[test]
    fn what_telegram_refuses_is_refused() {
        for bad in [
            "<h1>x</h1>",
            "<b>x",
            "<b><i>x</b></i>",
            "a < b",
            "a > b",
            "AT&T",
            "<code><b>x</b></code>",
            "<blockquote><blockquote>x</blockquote></blockquote>",
            "<a href=\"https://a\"><a href=\"https://b\">x</a></a>",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(parse("<b>bold <i>and italic</i></b> <s>x</s>").is_ok());
    }
}
