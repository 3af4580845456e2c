//! Content as each platform shows it. Event content is CommonMark (with tables and
//! strikethrough) unless the event says `format: plain`; every adapter posts it rendered
//! for its platform — Discord's Markdown, Slack's mrkdwn, Telegram's HTML, Matrix's
//! `formatted_body` with a plain `body` — split into parts the platform accepts, each part
//! a whole piece of Markdown that renders on its own ([`split`]).
//!
//! Mentions are written `<@ID>` on every platform; only the ids in the event's `mentions`
//! become real mentions, and no broadcast (`@everyone`, `@here`, `<!channel>`, `@room`)
//! ever notifies anyone.
//!
//! Pure functions: the same content renders the same way on every attempt, which re-sends
//! and read-back rely on.

// pulldown-cmark's events and tags are many and grow with its extensions: a renderer names
// what it renders and treats the rest alike, which is what a wildcard arm says.
#![allow(clippy::wildcard_enum_match_arm)]

pub mod discord;
pub mod matrix;
pub mod slack;
mod split;
pub mod telegram;

use threadline_schemas::ContentFormat;

/// Content rendered for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// What the platform's main text field gets: Discord `content` (its Markdown), Slack
    /// `text` (mrkdwn), Telegram `text` (HTML, sent with `parse_mode: HTML`), Matrix `body`
    /// (the plain-text fallback), a webhook's `text` (the content as written).
    pub text: String,
    /// Matrix only: `formatted_body` (`format: org.matrix.custom.html`).
    pub html: Option<String>,
    /// The length the platform counts against its message limit (see each renderer).
    pub length: usize,
}

/// Who may be notified: the event's allow-list of platform user ids. Nobody else is, and no
/// broadcast (`@everyone`, `@here`, `<!channel>`, `@room`) ever is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mentions<'a> {
    allowed: &'a [String],
}

impl<'a> Mentions<'a> {
    /// The allow-list (may be empty: nobody).
    pub fn new(allowed: &'a [String]) -> Self {
        Mentions { allowed }
    }

    /// Whether `id` may be notified.
    pub fn allows(&self, id: &str) -> bool {
        self.allowed.iter().any(|a| a == id)
    }
}

/// A piece of text: literal, or a mention token `<@ID>` (the contract's one mention syntax,
/// the same on every platform: `ID` is the platform user id as the event's `mentions` lists
/// it — `123456789012345678`, `U0123ABCD`, `@alice:example.org`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment<'t> {
    /// Literal text.
    Text(&'t str),
    /// `<@ID>`: the id.
    Mention(&'t str),
}

/// Splits `text` into literal pieces and `<@ID>` mention tokens. An id is 1–255 characters
/// without whitespace, `<` or `>`.
pub fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        let after = &rest[start + 2..];
        let end = after.find(|c: char| c == '>' || c == '<' || c.is_whitespace());
        match end {
            Some(end) if end > 0 && end <= 255 && after[end..].starts_with('>') => {
                if start > 0 {
                    out.push(Segment::Text(&rest[..start]));
                }
                out.push(Segment::Mention(&after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                out.push(Segment::Text(&rest[..start + 2]));
                rest = after;
            }
        }
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest));
    }
    out
}

/// The parser options every renderer uses: CommonMark plus tables and strikethrough (what
/// agents write), nothing else.
pub fn options() -> pulldown_cmark::Options {
    pulldown_cmark::Options::ENABLE_TABLES | pulldown_cmark::Options::ENABLE_STRIKETHROUGH
}

/// The events of `markdown`, consecutive text merged (so a mention token or a word is never
/// seen in two pieces).
pub fn events(markdown: &str) -> impl Iterator<Item = pulldown_cmark::Event<'_>> {
    pulldown_cmark::TextMergeStream::new(pulldown_cmark::Parser::new_ext(markdown, options()))
}

/// Whether `end` closes an inline element (one that lives inside a paragraph's events).
pub(crate) fn is_inline_end(end: &pulldown_cmark::TagEnd) -> bool {
    use pulldown_cmark::TagEnd;
    match end {
        TagEnd::Emphasis
        | TagEnd::Strong
        | TagEnd::Strikethrough
        | TagEnd::Superscript
        | TagEnd::Subscript
        | TagEnd::Link
        | TagEnd::Image => true,
        TagEnd::Paragraph
        | TagEnd::Heading(_)
        | TagEnd::BlockQuote(_)
        | TagEnd::CodeBlock
        | TagEnd::HtmlBlock
        | TagEnd::List(_)
        | TagEnd::Item
        | TagEnd::FootnoteDefinition
        | TagEnd::DefinitionList
        | TagEnd::DefinitionListTitle
        | TagEnd::DefinitionListDefinition
        | TagEnd::Table
        | TagEnd::TableHead
        | TagEnd::TableRow
        | TagEnd::TableCell
        | TagEnd::MetadataBlock(_) => false,
    }
}

/// A table as monospace text, for the platforms without tables: the header row, a rule of
/// `-` under it (columns joined by `joint`), then the body; each column padded to its widest
/// cell as its alignment (the `---:` row) asks. `shown` is how wide a cell shows (a renderer's
/// invisible characters excluded).
pub(crate) fn table_text(
    aligns: &[pulldown_cmark::Alignment],
    rows: &[Vec<String>],
    shown: impl Fn(&str) -> usize,
    joint: &str,
) -> Vec<String> {
    use pulldown_cmark::Alignment;
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([aligns.len()])
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| shown(cell))
                .max()
                .unwrap_or(0)
                .max(1)
        })
        .collect();
    let mut lines = Vec::with_capacity(rows.len() + 1);
    for (r, row) in rows.iter().enumerate() {
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(c, &width)| {
                let cell = row.get(c).map_or("", String::as_str);
                let room = width.saturating_sub(shown(cell));
                let (left, right) = match aligns.get(c).copied().unwrap_or(Alignment::None) {
                    Alignment::Right => (room, 0),
                    Alignment::Center => (room / 2, room - room / 2),
                    Alignment::Left | Alignment::None => (0, room),
                };
                format!("{}{cell}{}", " ".repeat(left), " ".repeat(right))
            })
            .collect();
        lines.push(cells.join(" | ").trim_end().to_owned());
        if r == 0 {
            let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
            lines.push(rule.join(joint));
        }
    }
    lines
}

/// The allowed ids `markdown` mentions as `<@ID>` outside code, first seen first, each once:
/// what Discord's `allowed_mentions.users` and Matrix's `m.mentions.user_ids` name.
pub fn mentioned(markdown: &str, mentions: &Mentions<'_>) -> Vec<String> {
    use pulldown_cmark::{Event, Tag, TagEnd};
    let mut found: Vec<String> = Vec::new();
    // A code span is its own event, but a code block's content is text inside it: code shows
    // its text literally, so nothing in it is a mention.
    let mut in_code_block = false;
    for event in events(markdown) {
        match &event {
            Event::Start(Tag::CodeBlock(_)) => in_code_block = true,
            Event::End(TagEnd::CodeBlock) => in_code_block = false,
            _ => {}
        }
        if let (Event::Text(text), false) = (&event, in_code_block) {
            for segment in segments(text) {
                if let Segment::Mention(id) = segment {
                    if mentions.allows(id) && !found.iter().any(|f| f == id) {
                        found.push(id.to_owned());
                    }
                }
            }
        }
    }
    found
}

/// The platform a post is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// Discord's Markdown in `content`.
    Discord,
    /// Slack's mrkdwn in `text`.
    Slack,
    /// Telegram's HTML (`parse_mode: HTML`).
    Telegram,
    /// Matrix `formatted_body` (HTML) and a plain `body`.
    Matrix,
    /// A generic webhook: the content as written (its receiver renders it).
    AsWritten,
}

/// One part of a post, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// What the platform gets.
    pub rendered: Rendered,
    /// The allowed users this part mentions ([`mentioned`]); empty for plain content.
    pub mentioned: Vec<String>,
}

/// `content` rendered for `markup` in parts of at most `max` (as the platform counts), each
/// part whole Markdown of its own. Never empty: empty content is one notice part, since
/// platforms refuse empty messages and an empty completion is still an outcome.
pub fn parts(
    content: &str,
    format: ContentFormat,
    markup: Markup,
    max: usize,
    mentions: &Mentions<'_>,
) -> Vec<Part> {
    let render = |part: &str| render(part, format, markup, mentions);
    let markdown = format == ContentFormat::Markdown;
    let sources = if content.trim().is_empty() {
        vec!["(no content)".to_owned()]
    } else if markdown && markup != Markup::AsWritten {
        split::markdown(content, &|part: &str| render(part).length <= max)
    } else {
        split::plain(content, &|part: &str| render(part).length <= max)
    };
    sources
        .iter()
        .map(|source| Part {
            rendered: render(source),
            mentioned: match (markdown, markup) {
                (false, _) | (_, Markup::AsWritten) => Vec::new(),
                // Only a snowflake is a Discord user: its renderer makes no other a mention.
                (true, Markup::Discord) => discord::mentioned(source, mentions),
                (true, _) => mentioned(source, mentions),
            },
        })
        .collect()
}

/// One part of `content` rendered for `markup`.
pub fn render(
    content: &str,
    format: ContentFormat,
    markup: Markup,
    mentions: &Mentions<'_>,
) -> Rendered {
    match (format, markup) {
        (_, Markup::AsWritten) => Rendered {
            text: content.to_owned(),
            html: None,
            length: content.chars().count(),
        },
        (ContentFormat::Markdown, Markup::Discord) => discord::render(content, mentions),
        (ContentFormat::Markdown, Markup::Slack) => slack::render(content, mentions),
        (ContentFormat::Markdown, Markup::Telegram) => telegram::render(content, mentions),
        (ContentFormat::Markdown, Markup::Matrix) => matrix::render(content, mentions),
        (ContentFormat::Plain, Markup::Discord) => discord::plain(content),
        (ContentFormat::Plain, Markup::Slack) => slack::plain(content),
        (ContentFormat::Plain, Markup::Telegram) => telegram::plain(content),
        (ContentFormat::Plain, Markup::Matrix) => matrix::plain(content),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mention_tokens_are_found_and_malformed_ones_are_text() {
        assert_eq!(
            segments("hi <@U1> and <@ a> and <@> and <@@al:ex.org>!"),
            vec![
                Segment::Text("hi "),
                Segment::Mention("U1"),
                Segment::Text(" and <@"),
                Segment::Text(" a> and <@"),
                Segment::Text("> and "),
                Segment::Mention("@al:ex.org"),
                Segment::Text("!"),
            ]
        );
    }

    #[test]
    fn a_text_that_starts_or_is_a_mention_has_no_empty_piece() {
        assert_eq!(segments("<@U1>"), vec![Segment::Mention("U1")]);
        assert_eq!(
            segments("<@U1> hi"),
            vec![Segment::Mention("U1"), Segment::Text(" hi")]
        );
        assert!(segments("").is_empty());
    }

    #[test]
    fn only_allowed_mentions_outside_code_are_mentioned_once_each() {
        let allowed = vec!["U1".to_owned(), "U2".to_owned()];
        let mentions = Mentions::new(&allowed);
        let md = "<@U2> <@U3> `<@U1>`\n\n```\n<@U1>\n```\n\n<@U2> and <@U1>";
        assert_eq!(mentioned(md, &mentions), vec!["U2", "U1"]);
        assert!(mentioned("<@U1>", &Mentions::default()).is_empty());
    }
}
