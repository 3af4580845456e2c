//! Renders agent Markdown for Telegram: `sendMessage.text` sent with `parse_mode: "HTML"`.
//!
//! The rules come from the Bot API's "Formatting options" section ("HTML style" and the
//! nesting restrictions) and from the `MessageEntity` and `sendMessage` types. Telegram's HTML
//! knows only a handful of inline tags (bold, italic, underline, strikethrough, spoiler, link,
//! code, pre, blockquote), so headings, lists, paragraphs and tables become plain text with
//! newlines, bold lines and monospace blocks. Everything else Telegram would act on is
//! neutralised: `<`, `>` and `&` are escaped, and an `@` that Telegram would turn into a
//! notifying `mention` entity gets an invisible word joiner after it.

use super::{events, segments, table_text, Mentions, Rendered, Segment};
use pulldown_cmark::{Alignment, CodeBlockKind, Event, LinkType, Tag, TagEnd};

/// Put after an `@` so Telegram's mention detection (an `@` followed by username characters)
/// finds no username: the joiner is invisible, keeps the word together, and is not among the
/// characters the Bot API strips from message text.
const WORD_JOINER: char = '\u{2060}';

/// Renders `markdown` as Telegram HTML. `length` is the visible text (tags removed, entities
/// decoded) in characters: `sendMessage` limits `text` "after entities parsing", and the
/// limit counts Unicode scalars, not the UTF-16 units `MessageEntity` offsets use (measured
/// against the live API: 4096 emoji are accepted; the fake records it).
pub fn render(markdown: &str, mentions: &Mentions<'_>) -> Rendered {
    let mut writer = Writer::new(mentions);
    if !markdown.trim().is_empty() {
        for event in events(markdown) {
            writer.event(event);
        }
    }
    writer.finish()
}

/// What people see of Telegram HTML: tags removed, `&lt;` `&gt;` `&amp;` `&quot;` and numeric
/// character references decoded, as the Bot API's "HTML style" parser does (it supports only
/// those named entities, so any other `&name;` stays literal). An unclosed `<` is kept as text
/// (Telegram would refuse such a message rather than show it).
pub fn visible(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(c) = rest.chars().next() {
        let markup = match c {
            '<' => tag_end(rest).map(|end| (None, end)),
            '&' => decode_entity(rest).map(|(decoded, used)| (Some(decoded), used)),
            _ => None,
        };
        let (shown, used) = markup.unwrap_or((Some(c), c.len_utf8()));
        out.extend(shown);
        rest = &rest[used..];
    }
    out
}

/// The byte length of the tag `text` starts with, up to and including its `>`; quoted
/// attribute values may hold a `>`, as in the Bot API's parser.
fn tag_end(text: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (at, c) in text.char_indices().skip(1) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '>' => return Some(at + 1),
            None => {}
        }
    }
    None
}

/// Decodes the character reference `text` starts with, the way the Bot API's HTML parser does:
/// the four named entities it supports and decimal or `x`-hexadecimal numeric ones, the `;`
/// optional. Returns the character and the bytes used.
fn decode_entity(text: &str) -> Option<(char, usize)> {
    let bytes = text.as_bytes();
    let (value, end) = if bytes.get(1) == Some(&b'#') {
        let hex = bytes.get(2) == Some(&b'x');
        let start = if hex { 3 } else { 2 };
        let radix: u64 = if hex { 16 } else { 10 };
        let digits = bytes
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        let end = start + digits;
        // The parser gives up on over-long references rather than overflowing.
        if end >= 10 {
            return None;
        }
        let value = text
            .get(start..end)
            .unwrap_or_default()
            .chars()
            .fold(0u64, |acc, d| {
                acc * radix + u64::from(d.to_digit(16).unwrap_or(0))
            });
        let value = u32::try_from(value)
            .ok()
            .filter(|v| *v != 0 && *v < 0x10_FFFF)?;
        (char::from_u32(value)?, end)
    } else {
        let letters = bytes
            .get(1..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_alphabetic())
            .count();
        let end = 1 + letters;
        let decoded = match text.get(1..end).unwrap_or_default() {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            _ => return None,
        };
        (decoded, end)
    };
    let used = if bytes.get(end) == Some(&b';') {
        end + 1
    } else {
        end
    };
    Some((value, used))
}

/// The separator owed before the next block; blocks ask for one when they end, and it is
/// written only when another block follows (so nothing trails a quote or the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gap {
    None,
    Line,
    Blank,
}

/// Formatting Telegram's HTML has a tag for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Bold,
    Italic,
    Strike,
}

impl Style {
    fn open(self) -> &'static str {
        match self {
            Style::Bold => "<b>",
            Style::Italic => "<i>",
            Style::Strike => "<s>",
        }
    }

    fn close(self) -> &'static str {
        match self {
            Style::Bold => "</b>",
            Style::Italic => "</i>",
            Style::Strike => "</s>",
        }
    }
}

/// An inline span: formatting, or a link or image and how it is shown. Tags are written
/// lazily, when visible content arrives (`open` says whether the tag is in the output now), so
/// a span that has to be closed around code is reopened only if more of it follows.
#[derive(Debug)]
enum Span {
    /// `wanted` is false when the same style is open further out (the Bot API's validity
    /// rules treat an entity nested in one of its own type as needing repair) or when the
    /// span is inside an image's alt text, which is shown plain.
    Format {
        style: Style,
        wanted: bool,
        open: bool,
    },
    /// A link Telegram accepts, written as `<a href>`. `start` is the visible length when it
    /// began, to show the URL when the text is empty (an empty entity is dropped).
    Anchor {
        url: String,
        start: usize,
        image: bool,
        open: bool,
    },
    /// A link Telegram would silently drop (its parser keeps only web and `tg:` links): the
    /// text is shown plain and the URL after it, so the URL is never lost.
    Spelled {
        url: String,
        start: usize,
        image: bool,
        autolink: bool,
    },
    /// A link or image inside another link: Telegram's links cannot contain each other, so
    /// only its text is shown.
    Muted { image: bool },
}

impl Span {
    fn is_image(&self) -> bool {
        match self {
            Span::Format { .. } => false,
            Span::Anchor { image, .. } | Span::Spelled { image, .. } | Span::Muted { image } => {
                *image
            }
        }
    }
}

/// A block whose events are collected before it is written.
#[derive(Debug)]
enum Capture {
    Code { lang: Option<String>, text: String },
    Html { text: String },
    Table(Table),
}

/// A table being collected: Telegram has no tables, so it becomes a `<pre>` block with
/// aligned columns once every cell is known.
#[derive(Debug, Default)]
struct Table {
    aligns: Vec<Alignment>,
    rows: Vec<Vec<String>>,
    row: Vec<String>,
    cell: String,
    /// Each open link or image: its URL and where its text starts in `cell`.
    links: Vec<(String, usize)>,
}

impl Table {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Start(Tag::TableCell) => self.cell.clear(),
            Event::End(TagEnd::TableCell) => {
                let cell = self.cell.trim().to_string();
                self.row.push(cell);
            }
            // The header row's cells come straight inside `TableHead`.
            Event::End(TagEnd::TableHead | TagEnd::TableRow) => {
                let row = std::mem::take(&mut self.row);
                self.rows.push(row);
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                self.links.push((dest_url.to_string(), self.cell.len()));
            }
            // Nothing in a `<pre>` is clickable, so the URL is written out.
            Event::End(TagEnd::Link | TagEnd::Image) => {
                if let Some((url, start)) = self.links.pop() {
                    let text = self.cell.get(start..).unwrap_or_default();
                    if text.is_empty() {
                        self.cell.push_str(&url);
                    } else if text != url {
                        self.cell.push_str(" (");
                        self.cell.push_str(&url);
                        self.cell.push(')');
                    }
                }
            }
            Event::Text(text) => {
                // In `<pre>` Telegram detects no mention, and no link can notify anyone: a
                // mention token shows as the `@ID` it stands for.
                for segment in segments(&text) {
                    match segment {
                        Segment::Text(piece) => self.cell.push_str(piece),
                        Segment::Mention(id) => {
                            self.cell.push('@');
                            self.cell.push_str(id);
                        }
                    }
                }
            }
            Event::Code(text)
            | Event::InlineHtml(text)
            | Event::Html(text)
            | Event::InlineMath(text)
            | Event::DisplayMath(text) => self.cell.push_str(&text),
            Event::SoftBreak | Event::HardBreak => self.cell.push(' '),
            Event::FootnoteReference(label) => {
                self.cell.push_str("[^");
                self.cell.push_str(&label);
                self.cell.push(']');
            }
            Event::TaskListMarker(done) => self.cell.push_str(task_marker(done)),
            Event::Start(_) | Event::End(_) | Event::Rule => {}
        }
    }

    /// The table as monospace lines: a header, a rule, the body; columns padded to their
    /// widest cell and aligned as the `---:` row asks.
    fn lines(&self) -> String {
        let lines = table_text(&self.aligns, &self.rows, |cell| cell.chars().count(), "-+-");
        lines.join("\n")
    }
}

fn task_marker(done: bool) -> &'static str {
    if done {
        "☑ "
    } else {
        "☐ "
    }
}

/// Whether Telegram keeps `url` as a link. The Bot API server's HTML parser (tdlib's
/// `parse_html`) drops an `<a>` whose URL is not a web, `tg:` or TON link and keeps only its
/// text, so any other URL (relative, `mailto:`) is spelled out instead.
fn linkable(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    let scheme_ok = ["http://", "https://", "tg://", "ton://", "tonsite://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme));
    scheme_ok && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Characters of a Telegram username; an `@` followed by one can start a mention.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `text` for an HTML attribute value: the Bot API decodes entities inside quoted values,
/// so `&` and the quote must be escaped (and `<`, `>` for good measure).
fn attribute(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            other => out.push(other),
        }
    }
    out
}

/// An open list.
#[derive(Debug)]
struct List {
    /// The next item's number; `None` for bullets.
    next: Option<u64>,
    /// Whether its items hold paragraphs (a loose list): then items are separated by a
    /// blank line, else by a line break whatever block ends the item.
    loose: bool,
    /// The quote depth the list is at, so a paragraph in a quote inside an item does not
    /// count as the item's own.
    quote_depth: usize,
}

/// Builds the HTML and counts its visible text as it goes.
struct Writer<'a, 'm> {
    mentions: &'a Mentions<'m>,
    out: String,
    /// Visible text written so far, in characters.
    length: usize,
    gap: Gap,
    /// Just after a list marker or `<blockquote>`: the next block goes on the same line.
    fresh: bool,
    /// The last visible character since the last tag: an `@` after a username character
    /// starts no mention. A tag resets it, so text after markup is judged on its own.
    prev: Option<char>,
    lists: Vec<List>,
    quote_depth: usize,
    spans: Vec<Span>,
    capture: Option<Capture>,
}

impl<'a, 'm> Writer<'a, 'm> {
    fn new(mentions: &'a Mentions<'m>) -> Self {
        Writer {
            mentions,
            out: String::new(),
            length: 0,
            gap: Gap::None,
            fresh: false,
            prev: None,
            lists: Vec::new(),
            quote_depth: 0,
            spans: Vec::new(),
            capture: None,
        }
    }

    fn finish(mut self) -> Rendered {
        // Trailing whitespace is visible text (every tag ends in `>` and every entity in
        // `;`), so trimming it shortens the count by as much.
        let kept = self.out.trim_end().len();
        let trimmed: usize = self.out[kept..].chars().count();
        self.out.truncate(kept);
        self.length = self.length.saturating_sub(trimmed);
        if self.length == 0 {
            // Nothing visible: Telegram refuses an empty text, the caller substitutes.
            self.out.clear();
        }
        Rendered {
            text: self.out,
            html: None,
            length: self.length,
        }
    }

    fn event(&mut self, event: Event<'_>) {
        if let Some(capture) = &mut self.capture {
            match capture {
                Capture::Code { text, .. } | Capture::Html { text } => match event {
                    Event::End(
                        TagEnd::CodeBlock | TagEnd::HtmlBlock | TagEnd::MetadataBlock(_),
                    ) => self.flush_capture(),
                    Event::Text(piece) | Event::Html(piece) => text.push_str(&piece),
                    // A code or HTML block holds only text.
                    Event::Start(_)
                    | Event::End(_)
                    | Event::Code(_)
                    | Event::InlineMath(_)
                    | Event::DisplayMath(_)
                    | Event::InlineHtml(_)
                    | Event::FootnoteReference(_)
                    | Event::SoftBreak
                    | Event::HardBreak
                    | Event::Rule
                    | Event::TaskListMarker(_) => {}
                },
                Capture::Table(table) => match event {
                    Event::End(TagEnd::Table) => self.flush_capture(),
                    other => table.event(other),
                },
            }
            return;
        }
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => {
                self.inline_start();
                self.text(&text);
            }
            Event::Code(code) | Event::InlineMath(code) | Event::DisplayMath(code) => {
                self.inline_start();
                self.code(&code);
            }
            // Raw HTML is shown as the characters the author typed.
            Event::Html(html) | Event::InlineHtml(html) => {
                self.inline_start();
                self.plain(&html);
            }
            Event::FootnoteReference(label) => {
                self.inline_start();
                self.plain(&format!("[^{label}]"));
            }
            Event::TaskListMarker(done) => {
                self.inline_start();
                self.plain(task_marker(done));
            }
            // Chat convention: the author's line break is a line break.
            Event::SoftBreak | Event::HardBreak => self.newline(),
            Event::Rule => {
                self.open_block();
                self.plain("———");
                self.gap = Gap::Blank;
            }
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph => {
                let depth = self.quote_depth;
                if let Some(list) = self.lists.last_mut().filter(|l| l.quote_depth == depth) {
                    list.loose = true;
                }
                self.open_block();
            }
            Tag::DefinitionListTitle | Tag::DefinitionListDefinition => self.open_block(),
            // Telegram has no headings: a bold line.
            Tag::Heading { .. } => {
                self.open_block();
                self.open_style(Style::Bold);
            }
            Tag::BlockQuote(_) => {
                self.open_block();
                // The Bot API: "blockquote and expandable_blockquote entities can't be
                // nested", so an inner quote continues inside the outer one.
                if self.quote_depth == 0 {
                    self.tag("<blockquote>");
                }
                self.quote_depth += 1;
                self.fresh = true;
            }
            Tag::CodeBlock(kind) => {
                let lang = match kind {
                    CodeBlockKind::Fenced(info) => {
                        info.split_whitespace().next().map(str::to_string)
                    }
                    CodeBlockKind::Indented => None,
                };
                self.capture = Some(Capture::Code {
                    lang,
                    text: String::new(),
                });
            }
            Tag::MetadataBlock(_) => {
                self.capture = Some(Capture::Code {
                    lang: None,
                    text: String::new(),
                });
            }
            Tag::HtmlBlock => {
                self.capture = Some(Capture::Html {
                    text: String::new(),
                })
            }
            Tag::Table(aligns) => {
                self.capture = Some(Capture::Table(Table {
                    aligns,
                    ..Table::default()
                }))
            }
            Tag::List(first) => self.lists.push(List {
                next: first,
                loose: false,
                quote_depth: self.quote_depth,
            }),
            Tag::Item => self.open_item(),
            Tag::FootnoteDefinition(label) => {
                self.open_block();
                self.plain(&format!("[^{label}]: "));
            }
            Tag::Emphasis => {
                self.inline_start();
                self.open_style(Style::Italic);
            }
            Tag::Strong => {
                self.inline_start();
                self.open_style(Style::Bold);
            }
            Tag::Strikethrough => {
                self.inline_start();
                self.open_style(Style::Strike);
            }
            Tag::Link {
                link_type,
                dest_url,
                ..
            } => {
                self.inline_start();
                let autolink = matches!(link_type, LinkType::Autolink | LinkType::Email);
                self.open_link(&dest_url, false, autolink);
            }
            Tag::Image { dest_url, .. } => {
                self.inline_start();
                self.open_link(&dest_url, true, false);
            }
            // Telegram has no tag for these (and the parser options do not produce them).
            Tag::DefinitionList
            | Tag::TableHead
            | Tag::TableRow
            | Tag::TableCell
            | Tag::Superscript
            | Tag::Subscript => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Heading(_) => {
                self.close_span();
                self.gap = Gap::Blank;
            }
            TagEnd::Paragraph | TagEnd::DefinitionListDefinition | TagEnd::FootnoteDefinition => {
                self.gap = Gap::Blank
            }
            TagEnd::DefinitionListTitle => self.gap = Gap::Line,
            TagEnd::BlockQuote(_) => {
                self.quote_depth = self.quote_depth.saturating_sub(1);
                if self.quote_depth == 0 {
                    self.tag("</blockquote>");
                }
                self.fresh = false;
                self.gap = Gap::Blank;
            }
            TagEnd::List(_) => {
                self.lists.pop();
                self.gap = if self.lists.is_empty() {
                    Gap::Blank
                } else {
                    self.gap.max(Gap::Line)
                };
            }
            TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Strikethrough
            | TagEnd::Link
            | TagEnd::Image => self.close_span(),
            TagEnd::Item => {
                let loose = self.lists.last().is_some_and(|l| l.loose);
                self.fresh = false;
                self.gap = if loose { Gap::Blank } else { Gap::Line };
            }
            TagEnd::CodeBlock
            | TagEnd::HtmlBlock
            | TagEnd::MetadataBlock(_)
            | TagEnd::Table
            | TagEnd::TableHead
            | TagEnd::TableRow
            | TagEnd::TableCell
            | TagEnd::DefinitionList
            | TagEnd::Superscript
            | TagEnd::Subscript => {}
        }
    }

    /// Starts a block: writes the separator it is owed, then the list indentation.
    fn open_block(&mut self) {
        let gap = if self.fresh || self.out.is_empty() {
            Gap::None
        } else {
            self.gap.max(Gap::Line)
        };
        self.gap = Gap::None;
        self.fresh = false;
        if gap != Gap::None {
            self.separator(gap);
            self.indent(self.lists.len());
        }
    }

    /// Inline content where a block was owed its separator (text after a nested list in a
    /// tight item) starts on a line of its own.
    fn inline_start(&mut self) {
        if self.gap != Gap::None {
            self.open_block();
        }
    }

    /// Starts a list item: its marker, indented by its nesting (Telegram has no lists).
    fn open_item(&mut self) {
        let gap = if self.fresh || self.out.is_empty() {
            Gap::None
        } else {
            self.gap.max(Gap::Line)
        };
        self.gap = Gap::None;
        let depth = self.lists.len();
        if gap != Gap::None {
            self.separator(gap);
            self.indent(depth.saturating_sub(1));
        }
        let marker = match self.lists.last_mut().map(|l| &mut l.next) {
            Some(Some(number)) => {
                let marker = format!("{number}. ");
                *number += 1;
                marker
            }
            Some(None) if depth > 1 => "◦ ".to_string(),
            Some(None) | None => "• ".to_string(),
        };
        self.plain(&marker);
        self.fresh = true;
    }

    fn separator(&mut self, gap: Gap) {
        let newlines = match gap {
            Gap::None => 0,
            Gap::Line => 1,
            Gap::Blank => 2,
        };
        for _ in 0..newlines {
            self.visible_char('\n');
        }
    }

    fn indent(&mut self, levels: usize) {
        for _ in 0..levels * 2 {
            self.visible_char(' ');
        }
    }

    /// A line break inside a block, continuing at the list item's indentation.
    fn newline(&mut self) {
        self.visible_char('\n');
        self.indent(self.lists.len());
    }

    fn flush_capture(&mut self) {
        let Some(capture) = self.capture.take() else {
            return;
        };
        self.open_block();
        match capture {
            Capture::Code { lang, text } => {
                // The fence's last line ending is not part of the code.
                let code = text.strip_suffix('\n').unwrap_or(&text);
                // "Use nested pre and code tags, to define programming language for pre
                // entity."
                match lang {
                    Some(lang) => {
                        self.tag(&format!(
                            "<pre><code class=\"language-{}\">",
                            attribute(&lang)
                        ));
                        self.literal(code);
                        self.tag("</code></pre>");
                    }
                    None => {
                        self.tag("<pre>");
                        self.literal(code);
                        self.tag("</pre>");
                    }
                }
            }
            Capture::Html { text } => {
                for (index, line) in text.trim_end().split('\n').enumerate() {
                    if index > 0 {
                        self.newline();
                    }
                    self.plain(line);
                }
            }
            Capture::Table(table) => {
                self.tag("<pre>");
                self.literal(&table.lines());
                self.tag("</pre>");
            }
        }
        self.gap = Gap::Blank;
    }

    /// Text from the Markdown: literal pieces and `<@ID>` mention tokens. Adjacent literal
    /// pieces are joined first, so an `@` is judged by the character really after it.
    fn text(&mut self, text: &str) {
        let mut literal = String::new();
        for segment in segments(text) {
            match segment {
                Segment::Text(piece) => literal.push_str(piece),
                Segment::Mention(id) => {
                    self.plain(&std::mem::take(&mut literal));
                    self.mention(id);
                }
            }
        }
        self.plain(&literal);
    }

    /// A mention token. Telegram mentions a user by id only through a link to
    /// `tg://user?id=<user_id>` ("Formatting options"); a user id is an integer, so any other
    /// id cannot be mentioned and is shown as plain, non-notifying text.
    fn mention(&mut self, id: &str) {
        let numeric = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
        let in_alt = self.spans.iter().any(Span::is_image);
        if !(numeric && self.mentions.allows(id)) || in_alt {
            self.plain(&format!("@{id}"));
            return;
        }
        // Links cannot contain each other: an enclosing link is closed around the mention
        // (and reopened if more of its text follows).
        if self.spans.iter().any(|s| matches!(s, Span::Anchor { .. })) {
            self.close_all();
        } else {
            self.resume();
        }
        self.tag(&format!("<a href=\"tg://user?id={id}\">"));
        // The label needs no word joiner: inside a link Telegram detects no other
        // mention, and a username cannot start with a digit.
        self.visible_char('@');
        for c in id.chars() {
            self.visible_char(c);
        }
        self.tag("</a>");
    }

    /// Inline code. "pre and code entities can't contain other entities" and code cannot be
    /// part of other entities except a blockquote: open formatting is closed around it, and
    /// inside a link (which must stay a link) or alt text it is shown as plain text.
    fn code(&mut self, code: &str) {
        let in_link = self
            .spans
            .iter()
            .any(|s| matches!(s, Span::Anchor { .. }) || s.is_image());
        if in_link {
            self.plain(code);
            return;
        }
        self.close_all();
        self.tag("<code>");
        self.literal(code);
        self.tag("</code>");
    }

    fn open_style(&mut self, style: Style) {
        let in_alt = self.spans.iter().any(Span::is_image);
        let already = self.spans.iter().any(
            |s| matches!(s, Span::Format { style: outer, wanted: true, .. } if *outer == style),
        );
        self.spans.push(Span::Format {
            style,
            wanted: !in_alt && !already,
            open: false,
        });
    }

    /// Opens a link or image (an image becomes a link to it, its alt text the link text).
    fn open_link(&mut self, url: &str, image: bool, autolink: bool) {
        let nested = self.spans.iter().any(|s| !matches!(s, Span::Format { .. }));
        let span = if nested {
            Span::Muted { image }
        } else if linkable(url) {
            Span::Anchor {
                url: url.to_string(),
                start: self.length,
                image,
                open: false,
            }
        } else {
            Span::Spelled {
                url: url.to_string(),
                start: self.length,
                image,
                autolink,
            }
        };
        self.spans.push(span);
    }

    fn close_span(&mut self) {
        // An empty link entity is dropped: show the URL so the link is still there.
        let empty_link = match self.spans.last() {
            Some(Span::Anchor { url, start, .. } | Span::Spelled { url, start, .. })
                if self.length == *start =>
            {
                Some(url.clone())
            }
            Some(Span::Format { .. } | Span::Anchor { .. } | Span::Spelled { .. })
            | Some(Span::Muted { .. })
            | None => None,
        };
        let was_empty = empty_link.is_some();
        if let Some(url) = empty_link {
            self.plain(&url);
        }
        match self.spans.pop() {
            Some(Span::Format {
                style, open: true, ..
            }) => self.tag(style.close()),
            Some(Span::Anchor { open: true, .. }) => self.tag("</a>"),
            // The text is shown; the URL Telegram would drop follows it.
            Some(Span::Spelled {
                url,
                autolink: false,
                ..
            }) if !was_empty => self.plain(&format!(" ({url})")),
            Some(Span::Format { .. } | Span::Anchor { .. } | Span::Spelled { .. })
            | Some(Span::Muted { .. })
            | None => {}
        }
    }

    /// Writes the tags of spans not open in the output yet, outermost first, before visible
    /// content that belongs inside them.
    fn resume(&mut self) {
        let mut tags = Vec::new();
        for span in &mut self.spans {
            match span {
                Span::Format {
                    style,
                    wanted: true,
                    open,
                } if !*open => {
                    *open = true;
                    tags.push(style.open().to_string());
                }
                Span::Anchor { url, open, .. } if !*open => {
                    *open = true;
                    tags.push(format!("<a href=\"{}\">", attribute(url)));
                }
                Span::Format { .. }
                | Span::Anchor { .. }
                | Span::Spelled { .. }
                | Span::Muted { .. } => {}
            }
        }
        for tag in tags {
            self.tag(&tag);
        }
    }

    /// Closes every tag open in the output, innermost first, to put an entity outside them.
    fn close_all(&mut self) {
        let mut tags = Vec::new();
        for span in self.spans.iter_mut().rev() {
            match span {
                Span::Format { style, open, .. } if *open => {
                    *open = false;
                    tags.push(style.close());
                }
                Span::Anchor { open, .. } if *open => {
                    *open = false;
                    tags.push("</a>");
                }
                Span::Format { .. }
                | Span::Anchor { .. }
                | Span::Spelled { .. }
                | Span::Muted { .. } => {}
            }
        }
        for tag in tags {
            self.tag(tag);
        }
    }

    /// Markup: not visible, not counted.
    fn tag(&mut self, tag: &str) {
        self.out.push_str(tag);
        self.prev = None;
        self.fresh = false;
    }

    /// Text outside code, escaped, with every `@` that could start a Telegram mention
    /// neutralised. Telegram finds `mention` entities in any text ("@username"), and it does
    /// so for `@everyone`, `@here` and `@room` as for any other username. An `@` right after
    /// a username character starts none; an `@` at the end of a piece is neutralised too,
    /// since what follows it is not known here.
    fn plain(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.resume();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\n' {
                self.newline();
                continue;
            }
            let after_name = self.prev.is_some_and(is_name_char);
            self.visible_char(c);
            if c == '@' && !after_name && chars.peek().is_none_or(|next| is_name_char(*next)) {
                self.visible_char(WORD_JOINER);
            }
        }
    }

    /// Code content, escaped and otherwise byte for byte: Telegram detects no mention there.
    fn literal(&mut self, text: &str) {
        for c in text.chars() {
            self.visible_char(c);
        }
    }

    /// One visible character, escaped as "HTML style" requires ("All <, > and & symbols that
    /// are not a part of a tag or an HTML entity must be replaced").
    fn visible_char(&mut self, c: char) {
        match c {
            '&' => self.out.push_str("&amp;"),
            '<' => self.out.push_str("&lt;"),
            '>' => self.out.push_str("&gt;"),
            other => self.out.push(other),
        }
        self.length += 1;
        self.prev = Some(c);
        self.fresh = false;
    }
}

/// Raw text as Telegram HTML: escaped, and no `@username` Telegram would detect.
pub fn plain(text: &str) -> Rendered {
    let mut out = String::with_capacity(text.len());
    for c in without_mentions(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Rendered {
        length: text.chars().count(),
        text: out,
        html: None,
    }
}

/// Puts a word joiner after each `@` that would start a mention Telegram detects and
/// notifies (`@` not after a username character, followed by one); the text reads the same.
pub fn without_mentions(text: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut previous: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        let starts = c == '@'
            && !previous.is_some_and(is_name)
            && chars.peek().copied().is_some_and(is_name);
        if starts {
            out.push('\u{2060}');
        }
        previous = Some(c);
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_at_that_starts_a_mention_gets_a_word_joiner() {
        assert_eq!(
            without_mentions("ask @alice, mail bob@example.com, @ alone, @_x"),
            "ask @\u{2060}alice, mail bob@example.com, @ alone, @\u{2060}_x"
        );
    }

    fn allow(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| id.to_string()).collect()
    }

    /// Renders with `4242` allowed and checks `length` against what people see.
    fn html(markdown: &str) -> String {
        let allowed = allow(&["4242"]);
        let rendered = render(markdown, &Mentions::new(&allowed));
        assert_eq!(
            rendered.length,
            visible(&rendered.text).chars().count(),
            "length of {:?}",
            rendered.text
        );
        assert_eq!(rendered.html, None);
        rendered.text
    }

    /// The `@username` mentions Telegram would detect in `text` (after entity parsing): an
    /// `@` not after a word character, then username characters, then no word character.
    /// Deliberately looser than Telegram about length, like the test fake.
    fn detected_mentions(text: &str) -> Vec<String> {
        let chars: Vec<char> = text.chars().collect();
        let mut found = Vec::new();
        for (i, c) in chars.iter().enumerate() {
            let after_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
            if *c != '@' || after_word {
                continue;
            }
            let name: String = chars[i + 1..]
                .iter()
                .take_while(|c| is_name_char(**c))
                .collect();
            if !name.is_empty() {
                found.push(format!("@{name}"));
            }
        }
        found
    }

    /// Parses `html` as Telegram's "HTML style" parser would and checks every rule a
    /// message could be refused or changed for: only supported tags, balanced; entities
    /// valid; nothing inside `pre`/`code` (except `pre`'s own `code`); no link in a link, no
    /// quote in a quote, no code inside formatting or links. Returns the visible text with
    /// code and text-mention labels blanked, where Telegram would detect mentions.
    fn telegram_accepts(html: &str) -> String {
        let mut open: Vec<String> = Vec::new();
        let mut detectable = String::new();
        let mut rest = html;
        while let Some(c) = rest.chars().next() {
            if c == '&' {
                let (decoded, used) =
                    decode_entity(rest).unwrap_or_else(|| panic!("bad & in {html:?}"));
                let blank = open
                    .iter()
                    .any(|t| t == "code" || t == "pre" || t == "mention");
                detectable.push(if blank { ' ' } else { decoded });
                rest = &rest[used..];
                continue;
            }
            if c == '>' {
                panic!("unescaped > in {html:?}");
            }
            if c != '<' {
                let blank = open
                    .iter()
                    .any(|t| t == "code" || t == "pre" || t == "mention");
                detectable.push(if blank { ' ' } else { c });
                rest = &rest[c.len_utf8()..];
                continue;
            }
            let end = tag_end(rest).unwrap_or_else(|| panic!("unclosed tag in {html:?}"));
            let tag = &rest[1..end - 1];
            rest = &rest[end..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = open
                    .pop()
                    .unwrap_or_else(|| panic!("stray </{name}> in {html:?}"));
                let top = if top == "mention" {
                    "a".to_string()
                } else {
                    top
                };
                assert_eq!(top, name, "unmatched end tag in {html:?}");
                continue;
            }
            let name = tag.split(' ').next().unwrap_or("");
            assert!(
                ["a", "b", "i", "s", "code", "pre", "blockquote"].contains(&name),
                "unsupported <{name}> in {html:?}"
            );
            let parent = open.last().map(String::as_str);
            let pre_code = name == "code" && parent == Some("pre") && tag.contains("language-");
            assert!(
                !matches!(parent, Some("code" | "pre")) || pre_code,
                "<{name}> inside {parent:?} in {html:?}"
            );
            let links = open.iter().filter(|t| *t == "a" || *t == "mention").count();
            match name {
                "a" => assert_eq!(links, 0, "link in a link in {html:?}"),
                "blockquote" => assert!(open.is_empty(), "nested or enclosed quote in {html:?}"),
                "code" | "pre" if !pre_code => assert!(
                    open.iter().all(|t| t == "blockquote"),
                    "code inside formatting in {html:?}"
                ),
                _ => {}
            }
            let kind = if tag.starts_with("a href=\"tg://user?id=") {
                "mention"
            } else {
                name
            };
            open.push(kind.to_string());
        }
        assert!(open.is_empty(), "unclosed {open:?} in {html:?}");
        detectable
    }

    /// The shared sample (`render-kit/sample.md`), with Telegram's user id `4242` for the
    /// allowed mention; kept here so the test does not depend on where the file lives.
    const SAMPLE: &str = concat!(
        "# Budget plan\n",
        "\n",
        "Here is the **draft** for _Q3_, with ~~old~~ new numbers and `inline code`.\n",
        "A second line of the same paragraph.\n",
        "\n",
        "## Steps\n",
        "\n",
        "1. Collect receipts\n",
        "2. Sort them by [category](https://example.com/cats?a=1&b=2)\n",
        "   - nested *item*\n",
        "3. Done\n",
        "\n",
        "- one\n",
        "- two\n",
        "\n",
        "> A quote with <b>raw html</b> & a <!channel> and @everyone @here @room.\n",
        "\n",
        "```rust\n",
        "fn main() { println!(\"<not html> & {}\", 1 < 2); }\n",
        "```\n",
        "\n",
        "| Item | Cost |\n",
        "| --- | ---: |\n",
        "| Rent | 1200 |\n",
        "| Food & drink | 300 |\n",
        "\n",
        "Thanks <@4242> and <@U0OTHER999>! Escapes: 5 * 3 _ 2 < 4 > 1 & done.\n",
        "![chart](https://example.com/chart.png)\n",
    );

    #[test]
    fn sample_renders_exactly() {
        let markdown = SAMPLE;
        let allowed = allow(&["4242"]);
        let rendered = render(markdown, &Mentions::new(&allowed));
        println!("{}", rendered.text);
        let expected = concat!(
            "<b>Budget plan</b>\n",
            "\n",
            "Here is the <b>draft</b> for <i>Q3</i>, with <s>old</s> new numbers and ",
            "<code>inline code</code>.\n",
            "A second line of the same paragraph.\n",
            "\n",
            "<b>Steps</b>\n",
            "\n",
            "1. Collect receipts\n",
            "2. Sort them by <a href=\"https://example.com/cats?a=1&amp;b=2\">category</a>\n",
            "  ◦ nested <i>item</i>\n",
            "3. Done\n",
            "\n",
            "• one\n",
            "• two\n",
            "\n",
            "<blockquote>A quote with &lt;b&gt;raw html&lt;/b&gt; &amp; a &lt;!channel&gt; and ",
            "@\u{2060}everyone @\u{2060}here @\u{2060}room.</blockquote>\n",
            "\n",
            "<pre><code class=\"language-rust\">fn main() { println!(\"&lt;not html&gt; &amp; {}\", ",
            "1 &lt; 2); }</code></pre>\n",
            "\n",
            "<pre>Item         | Cost\n",
            "-------------+-----\n",
            "Rent         | 1200\n",
            "Food &amp; drink |  300</pre>\n",
            "\n",
            "Thanks <a href=\"tg://user?id=4242\">@4242</a> and @\u{2060}U0OTHER999! ",
            "Escapes: 5 * 3 _ 2 &lt; 4 &gt; 1 &amp; done.\n",
            "<a href=\"https://example.com/chart.png\">chart</a>",
        );
        assert_eq!(rendered.text, expected);
        let seen = visible(&rendered.text);
        assert_eq!(rendered.length, seen.chars().count());
        assert_eq!(rendered.length, 483);
        // Only the allowed user's own label looks like a mention; everything else is inert.
        assert_eq!(detected_mentions(&seen), vec!["@4242".to_string()]);
    }

    #[test]
    fn every_markup_character_is_escaped() {
        assert_eq!(
            html("a < b > c & d \" e ' f * g _ h ` i"),
            "a &lt; b &gt; c &amp; d \" e ' f * g _ h ` i"
        );
        assert_eq!(
            html("\\<b\\>not bold\\</b\\>"),
            "&lt;b&gt;not bold&lt;/b&gt;"
        );
        assert_eq!(html("&lt;b&gt;"), "&lt;b&gt;");
    }

    #[test]
    fn html_entities_from_the_source_are_decoded_then_escaped() {
        assert_eq!(html("&amp; &copy; &#60;"), "&amp; © &lt;");
        assert_eq!(visible(&html("&amp; &copy; &#60;")), "& © <");
    }

    #[test]
    fn nested_emphasis_nests_tags() {
        assert_eq!(html("***both***"), "<i><b>both</b></i>");
        assert_eq!(
            html("**bold _and italic_**"),
            "<b>bold <i>and italic</i></b>"
        );
        assert_eq!(html("~~gone~~"), "<s>gone</s>");
    }

    #[test]
    fn bold_inside_bold_is_not_nested_twice() {
        assert_eq!(html("# Title **strong**"), "<b>Title strong</b>");
    }

    #[test]
    fn links_keep_their_url_and_their_text_markup() {
        assert_eq!(
            html("[**bold** text](https://x.test/?a=1&b=2)"),
            "<a href=\"https://x.test/?a=1&amp;b=2\"><b>bold</b> text</a>"
        );
        assert_eq!(
            html("[paren](<https://x.test/a)b>)"),
            "<a href=\"https://x.test/a)b\">paren</a>"
        );
        assert_eq!(
            html("[pipe](https://x.test/a|b)"),
            "<a href=\"https://x.test/a|b\">pipe</a>"
        );
        // `<…>` ends at the first `>`: CommonMark reads an autolink there.
        assert_eq!(
            html("[gt](<https://x.test/a>b>)"),
            "[gt](<a href=\"https://x.test/a\">https://x.test/a</a>b&gt;)"
        );
        assert_eq!(
            html("[quote](https://x.test/a%3Eb\"q)"),
            "<a href=\"https://x.test/a%3Eb&quot;q\">quote</a>"
        );
        // Without a space there is no title: the quotes are part of the URL.
        assert_eq!(
            html("[q](https://x.test/\"q\")"),
            "<a href=\"https://x.test/&quot;q&quot;\">q</a>"
        );
        assert_eq!(
            html("[q](https://x.test/ \"title\")"),
            "<a href=\"https://x.test/\">q</a>"
        );
        assert_eq!(
            html("[q](<https://x.test/\"q>)"),
            "<a href=\"https://x.test/&quot;q\">q</a>"
        );
    }

    #[test]
    fn url_with_gt_is_escaped_in_the_attribute() {
        let out = html("[gt](https://x.test/a>b)");
        assert_eq!(out, "<a href=\"https://x.test/a&gt;b\">gt</a>");
        assert_eq!(visible(&out), "gt");
    }

    #[test]
    fn autolinks_show_their_url() {
        assert_eq!(
            html("<https://x.test/a?b=1&c=2>"),
            "<a href=\"https://x.test/a?b=1&amp;c=2\">https://x.test/a?b=1&amp;c=2</a>"
        );
        assert_eq!(html("<me@x.test>"), "me@x.test");
    }

    #[test]
    fn links_telegram_would_drop_are_spelled_out() {
        assert_eq!(html("[docs](./docs/a.md)"), "docs (./docs/a.md)");
        assert_eq!(html("[mail](mailto:a@x.test)"), "mail (mailto:a@x.test)");
        assert_eq!(
            html("[](https://x.test)"),
            "<a href=\"https://x.test\">https://x.test</a>"
        );
    }

    #[test]
    fn images_become_links() {
        assert_eq!(
            html("![a *chart*](https://x.test/c.png)"),
            "<a href=\"https://x.test/c.png\">a chart</a>"
        );
        assert_eq!(
            html("![](https://x.test/c.png)"),
            "<a href=\"https://x.test/c.png\">https://x.test/c.png</a>"
        );
        // A link cannot contain a link: the image inside shows its alt text.
        assert_eq!(
            html("[![badge](https://x.test/b.svg)](https://x.test)"),
            "<a href=\"https://x.test\">badge</a>"
        );
    }

    #[test]
    fn code_block_with_backticks_inside_is_kept_byte_for_byte() {
        let markdown = "~~~md\n```\n<b>&amp; @everyone</b>\n  *x*\n```\n~~~";
        assert_eq!(
            html(markdown),
            "<pre><code class=\"language-md\">```\n&lt;b&gt;&amp;amp; @everyone&lt;/b&gt;\n  \
             *x*\n```</code></pre>"
        );
        assert_eq!(
            visible(&html(markdown)),
            "```\n<b>&amp; @everyone</b>\n  *x*\n```"
        );
    }

    #[test]
    fn code_block_without_language_is_plain_pre() {
        assert_eq!(html("```\nx < y\n```"), "<pre>x &lt; y</pre>");
        assert_eq!(html("    indented\n    code"), "<pre>indented\ncode</pre>");
    }

    #[test]
    fn code_block_language_is_escaped_in_the_attribute() {
        assert_eq!(
            html("```a\"b<c\nx\n```"),
            "<pre><code class=\"language-a&quot;b&lt;c\">x</code></pre>"
        );
    }

    #[test]
    fn inline_code_with_backticks_stays_inline_code() {
        assert_eq!(html("`` a ` b ``"), "<code>a ` b</code>");
        assert_eq!(
            html("`<@4242> & @here`"),
            "<code>&lt;@4242&gt; &amp; @here</code>"
        );
    }

    #[test]
    fn inline_code_is_put_outside_formatting() {
        assert_eq!(
            html("**use `x` now**"),
            "<b>use </b><code>x</code><b> now</b>"
        );
        assert_eq!(html("## Run `make`"), "<b>Run </b><code>make</code>");
        assert_eq!(html("**`x`**"), "<code>x</code>");
        assert_eq!(
            html("*a `b` `c` d*"),
            "<i>a </i><code>b</code><i> </i><code>c</code><i> d</i>"
        );
        // A link must stay a link, so code in its text is plain.
        assert_eq!(
            html("[`@docs`](https://x.test)"),
            "<a href=\"https://x.test\">@\u{2060}docs</a>"
        );
    }

    #[test]
    fn allowed_mention_is_a_text_mention() {
        assert_eq!(
            html("hi <@4242>"),
            "hi <a href=\"tg://user?id=4242\">@4242</a>"
        );
        assert_eq!(
            html("**hi <@4242>**"),
            "<b>hi <a href=\"tg://user?id=4242\">@4242</a></b>"
        );
    }

    #[test]
    fn mention_inside_a_link_splits_the_link() {
        assert_eq!(
            html("[ask <@4242> here](https://x.test)"),
            "<a href=\"https://x.test\">ask </a><a href=\"tg://user?id=4242\">@4242</a>\
             <a href=\"https://x.test\"> here</a>"
        );
    }

    #[test]
    fn link_whose_text_is_only_a_mention_leaves_no_empty_link() {
        assert_eq!(
            html("[<@4242>](https://x.test)"),
            "<a href=\"tg://user?id=4242\">@4242</a>"
        );
    }

    #[test]
    fn mention_not_allowed_is_plain_text_that_notifies_nobody() {
        let out = html("hi <@5151> and <@alice>");
        assert_eq!(out, "hi @\u{2060}5151 and @\u{2060}alice");
        assert!(detected_mentions(&visible(&out)).is_empty());
    }

    #[test]
    fn allowed_id_that_is_not_a_user_id_cannot_be_mentioned() {
        let allowed = allow(&["U0PERSON01"]);
        let rendered = render("hi <@U0PERSON01>", &Mentions::new(&allowed));
        assert_eq!(rendered.text, "hi @\u{2060}U0PERSON01");
    }

    #[test]
    fn mention_inside_code_is_literal() {
        assert_eq!(html("`<@4242>`"), "<code>&lt;@4242&gt;</code>");
        assert_eq!(
            html("```\n<@4242> @room\n```"),
            "<pre>&lt;@4242&gt; @room</pre>"
        );
    }

    #[test]
    fn malformed_mentions_are_literal_text() {
        assert_eq!(html("a <@> b"), "a &lt;@&gt; b");
        assert_eq!(html("a <@ a> b"), "a &lt;@ a&gt; b");
    }

    #[test]
    fn broadcast_words_notify_nobody() {
        for word in ["@everyone", "@here", "@room", "@channel"] {
            let out = html(&format!("hey {word}!"));
            assert_eq!(out, format!("hey @\u{2060}{}!", &word[1..]));
            assert!(detected_mentions(&visible(&out)).is_empty(), "{out}");
        }
        for word in ["<!channel>", "<!here>", "<!everyone>"] {
            let out = html(&format!("hey {word}!"));
            assert_eq!(out, format!("hey &lt;{}&gt;!", &word[1..word.len() - 1]));
        }
    }

    #[test]
    fn only_an_at_that_could_start_a_mention_is_neutralised() {
        assert_eq!(
            html("mail bob@x.test, ask @alice, @ alone, @_x, (@bob), a@@b"),
            "mail bob@x.test, ask @\u{2060}alice, @ alone, @\u{2060}_x, (@\u{2060}bob), \
             a@@\u{2060}b"
        );
        // After markup the next character is judged on its own, so nothing slips through
        // a tag boundary; an `@` ending a piece is neutralised whatever follows it.
        assert_eq!(
            html("*x*@alice and @**bob**"),
            "<i>x</i>@\u{2060}alice and @\u{2060}<b>bob</b>"
        );
        let out = html("[@alice](https://x.test) > @bob\n\n# @carol");
        assert!(detected_mentions(&visible(&out)).is_empty(), "{out}");
    }

    #[test]
    fn headings_are_bold_lines() {
        assert_eq!(html("# One\n\ntext"), "<b>One</b>\n\ntext");
        assert_eq!(html("##### Five"), "<b>Five</b>");
        assert_eq!(html("Setext\n===="), "<b>Setext</b>");
    }

    #[test]
    fn ordered_list_keeps_its_start_number() {
        assert_eq!(html("3. three\n4. four"), "3. three\n4. four");
    }

    #[test]
    fn nested_lists_indent_by_two_spaces_per_level() {
        assert_eq!(html("- a\n  - b\n    - c\n- d"), "• a\n  ◦ b\n    ◦ c\n• d");
        assert_eq!(html("1. a\n   1. b\n2. c"), "1. a\n  1. b\n2. c");
    }

    #[test]
    fn loose_list_items_are_separated_by_a_blank_line() {
        assert_eq!(html("- a\n\n  more\n- b"), "• a\n\n  more\n\n• b");
    }

    #[test]
    fn tight_list_items_stay_on_consecutive_lines_after_a_block() {
        assert_eq!(
            html("- > q\n- ```\n  x\n  ```\n- c"),
            "• <blockquote>q</blockquote>\n• <pre>x</pre>\n• c"
        );
        assert_eq!(html("-\n- b"), "• \n• b");
    }

    #[test]
    fn soft_break_in_a_list_item_continues_at_its_indentation() {
        assert_eq!(html("- a\n  b"), "• a\n  b");
    }

    #[test]
    fn blocks_are_separated_by_one_blank_line() {
        assert_eq!(html("a\n\n\n\nb\n\n---\n\nc"), "a\n\nb\n\n———\n\nc");
    }

    #[test]
    fn block_quote_is_native_and_never_nested() {
        assert_eq!(html("> a\n>\n> b"), "<blockquote>a\n\nb</blockquote>");
        assert_eq!(
            html("> a\n>\n> > b\n\nc"),
            "<blockquote>a\n\nb</blockquote>\n\nc"
        );
        assert_eq!(
            html("> ```\n> x\n> ```"),
            "<blockquote><pre>x</pre></blockquote>"
        );
    }

    #[test]
    fn table_is_a_monospace_block_with_aligned_columns() {
        let markdown = "| L | C | R |\n| :-- | :-: | --: |\n| a | b | c |\n| long | mid | 12345 |";
        assert_eq!(
            html(markdown),
            "<pre>L    |  C  |     R\n-----+-----+------\na    |  b  |     c\nlong | mid | 12345</pre>"
        );
    }

    #[test]
    fn table_cells_are_plain_text_with_urls_written_out() {
        let markdown = "| a | b |\n| - | - |\n| **x** `y` | [t](https://x.test) <@4242> |";
        assert_eq!(
            html(markdown),
            "<pre>a   | b\n----+-------------------------\nx y | t (https://x.test) @4242</pre>"
        );
    }

    #[test]
    fn empty_input_renders_empty() {
        for markdown in ["", "   ", "\n\n\t\n"] {
            let rendered = render(markdown, &Mentions::default());
            assert_eq!(rendered.text, "");
            assert_eq!(rendered.length, 0);
        }
    }

    #[test]
    fn hard_breaks_are_line_breaks() {
        assert_eq!(html("a  \nb\\\nc"), "a\nb\nc");
        assert_eq!(html("a\r\nb\r\n\r\nc"), "a\nb\n\nc");
    }

    #[test]
    fn raw_html_is_shown_literally() {
        assert_eq!(
            html("<div>\n<b>x</b> @here\n</div>"),
            "&lt;div&gt;\n&lt;b&gt;x&lt;/b&gt; @\u{2060}here\n&lt;/div&gt;"
        );
        assert_eq!(
            html("a <span class=\"tg-spoiler\">b</span>"),
            "a &lt;span class=\"tg-spoiler\"&gt;b&lt;/span&gt;"
        );
        assert_eq!(html("<!-- note -->"), "&lt;!-- note --&gt;");
    }

    #[test]
    fn length_counts_characters_of_visible_text() {
        let rendered = render("**é** 😀 <b>", &Mentions::default());
        assert_eq!(rendered.text, "<b>é</b> 😀 &lt;b&gt;");
        // "é" one character, the emoji one, "<b>" three, two spaces.
        assert_eq!(rendered.length, 1 + 1 + 1 + 1 + 3);
        assert_eq!(html("日本語 👨‍👩‍👧"), "日本語 👨‍👩‍👧");
        let rendered = render("日本語 👨‍👩‍👧", &Mentions::default());
        assert_eq!(rendered.length, "日本語 👨‍👩‍👧".chars().count());
    }

    #[test]
    fn word_joiner_counts_towards_length() {
        let rendered = render("@here", &Mentions::default());
        assert_eq!(rendered.text, "@\u{2060}here");
        assert_eq!(rendered.length, 6);
    }

    #[test]
    fn rendering_is_deterministic() {
        assert_eq!(html(SAMPLE), html(SAMPLE));
    }

    #[test]
    fn visible_strips_tags_and_decodes_entities() {
        assert_eq!(
            visible("<b>a</b> &lt;&gt;&amp;&quot; <a href=\"x>y\">l</a>"),
            "a <>&\" l"
        );
        assert_eq!(visible("&#60;&#x3C;&#128512;&#x1F600;"), "<<😀😀");
        // Telegram supports only four named entities and decodes without the `;` too.
        assert_eq!(
            visible("&copy; &apos; &amp &lt5 &ltx"),
            "&copy; &apos; & <5 &ltx"
        );
        // Out-of-range, zero and surrogate references stay literal.
        assert_eq!(
            visible("&#0; &#xD800; &#99999999;"),
            "&#0; &#xD800; &#99999999;"
        );
        assert_eq!(visible("a < b"), "a < b");
        assert_eq!(
            visible("<pre><code class=\"language-rust\">x</code></pre>"),
            "x"
        );
    }

    #[test]
    #[should_panic(expected = "code inside formatting")]
    fn the_acceptance_check_refuses_code_inside_bold() {
        telegram_accepts("<b><code>x</code></b>");
    }

    #[test]
    #[should_panic(expected = "unsupported <span>")]
    fn the_acceptance_check_refuses_unsupported_tags() {
        telegram_accepts("<span>x</span>");
    }

    #[test]
    fn every_combination_of_tricky_fragments_is_accepted_and_notifies_nobody_else() {
        let fragments = [
            "**b `c` @x**",
            "*i [l <@4242> `c`](https://x.test/?a&b) @y*",
            "~~s ![alt *e* `c`](https://x.test/i.png)~~",
            "[`c`](mailto:a@b.test) @z",
            "> q **b** `c`\n> > qq @w\n>\n> ```\n> <x> @v\n> ```",
            "- a @u\n  - b `c`\n    > q\n- ```rust\n  fn x() {}\n  ```",
            "| a | `b` |\n| :-: | --: |\n| <@4242> | [l](https://x.test) |",
            "# H `c` **b** <@4242>",
            "<div>\n@here <b>x</b>\n</div>",
            "3. x <!here> &amp; &copy; <@5151>\n4. y@z @@q @",
            "[![img](https://x.test/a.png) and <@4242>](https://x.test)",
            "text\\\nhard  \nbreak",
            "***",
            "😀 @emoji_user é@x",
        ];
        let allowed = allow(&["4242"]);
        let mut documents = Vec::new();
        for a in fragments {
            documents.push(a.to_string());
            for b in fragments {
                for joint in ["\n\n", "\n", " "] {
                    documents.push(format!("{a}{joint}{b}"));
                }
            }
        }
        for markdown in documents {
            let rendered = render(&markdown, &Mentions::new(&allowed));
            let detectable = telegram_accepts(&rendered.text);
            assert_eq!(
                rendered.length,
                visible(&rendered.text).chars().count(),
                "{markdown:?}"
            );
            assert_eq!(
                detected_mentions(&detectable),
                Vec::<String>::new(),
                "{markdown:?} -> {:?}",
                rendered.text
            );
            assert_eq!(render(&markdown, &Mentions::new(&allowed)), rendered);
        }
    }
}
