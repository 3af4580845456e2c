//! Matrix: Markdown to the content of an `m.room.message` with `msgtype: m.text` — `body`
//! (plain text) and, when it says more than `body`, `formatted_body` in the
//! `org.matrix.custom.html` format.
//!
//! Spec references are to the Matrix client-server API (matrix-org/matrix-spec): the
//! instant messaging module ("m.room.message msgtypes"), the mentions module and the
//! appendices ("matrix.to navigation").

use pulldown_cmark::{Alignment, CodeBlockKind, CowStr, Event, LinkType, Tag, TagEnd};

use super::{events, segments, table_text, Mentions, Rendered, Segment};

/// Renders `markdown` for Matrix: `text` is `body`, `html` is `formatted_body` (or `None`
/// when the HTML would only repeat `body`), `length` counts both, as both travel in the one
/// event.
pub fn render(markdown: &str, mentions: &Mentions<'_>) -> Rendered {
    let events: Vec<Event<'_>> = events(markdown).collect();
    let body = plain_body(&events);
    if body.is_empty() {
        return Rendered {
            text: String::new(),
            html: None,
            length: 0,
        };
    }
    let formatted = html(&events, mentions);
    // "Clients should not generate HTML that is not needed" (instant messaging module): a
    // message without formatting, links or pills is sent as `body` alone, as Element does.
    let html = (formatted != plain_as_html(&body)).then_some(formatted);
    let length = body.chars().count() + html.as_deref().map_or(0, |h| h.chars().count());
    Rendered {
        text: body,
        html,
        length,
    }
}

/// Raw text as a plain `body`, shown as written: no `formatted_body`, so nothing in it is
/// markup, and the envelope's `m.mentions` keeps `@room` and names from notifying.
pub fn plain(text: &str) -> Rendered {
    Rendered {
        text: text.to_owned(),
        html: None,
        length: text.chars().count(),
    }
}

/// How a mention reads as text: the Matrix user id, which carries its own `@` sigil (spec:
/// the anchor's text "should be used in the event's `body`"). An id without the sigil (not
/// a Matrix id) still reads `@ID`, as the contract says.
fn display(id: &str) -> String {
    if id.starts_with('@') {
        id.to_owned()
    } else {
        format!("@{id}")
    }
}

/// The user pill: a matrix.to link to the user with the id as the anchor's text (mentions
/// module: the display name, or "if the user does not have a display name, use the user's
/// ID"; the renderer knows no display names).
fn pill(id: &str) -> String {
    format!(
        r#"<a href="{}">{}</a>"#,
        escape_attr(&matrix_to(id)),
        escape_text(id)
    )
}

/// `https://matrix.to/#/` and the id, percent-encoded as the appendices ask ("MUST be
/// percent-encoded as per RFC 3986"). `@` and `:` stay as they are, as in the spec's own
/// example `https://matrix.to/#/@alice:example.org` (encoding them is "OPTIONAL"); every
/// other byte outside RFC 3986's unreserved set is encoded, so a `/` or `?` in an id cannot
/// be read as matrix.to's extra parameter or arguments.
fn matrix_to(id: &str) -> String {
    let mut url = String::from("https://matrix.to/#/");
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~@:".contains(&byte) {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url
}

/// Whether `href` may be an anchor's `href`: the instant messaging module permits it
/// "provided the value is not relative and has a scheme matching one of: `https`, `http`,
/// `ftp`, `mailto`, `magnet`". Schemes are case-insensitive (RFC 3986).
fn permitted_href(href: &str) -> bool {
    let Some((scheme, _)) = href.split_once(':') else {
        return false;
    };
    ["https", "http", "ftp", "mailto", "magnet"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
}

/// Text escaped for HTML content, as `push_html` escapes text.
fn escape_text(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text escaped for a double-quoted HTML attribute. A URL is only escaped, never
/// percent-encoded, so the `href` the client reads is the author's URL exactly.
fn escape_attr(text: &str) -> String {
    escape_text(text).replace('"', "&quot;")
}

/// The HTML `push_html` makes of a body that is a single plain paragraph: when the
/// formatted body is exactly this, it adds nothing to `body`.
fn plain_as_html(body: &str) -> String {
    escape_text(body).replace('\n', "<br />\n")
}

/// The `formatted_body`: the parser's events rewritten so that `push_html` emits only the
/// tags and attributes the instant messaging module permits (`p`, `h1`–`h6`, `blockquote`,
/// `pre`, `code` with a `language-` class, `ol` with `start`, `ul`, `li`, `em`, `strong`,
/// `del`, `a` with an absolute `href`, `br`, `hr`, `table`, `thead`, `tbody`, `tr`, `th`,
/// `td`), then rendered.
fn html<'e>(events: &'e [Event<'e>], mentions: &Mentions<'_>) -> String {
    let mut out: Vec<Event<'e>> = Vec::new();
    let mut in_code_block = false;
    let mut html_block: Option<String> = None;
    // One entry per open link: what closes it.
    let mut links: Vec<LinkClose> = Vec::new();
    let mut image: Option<ImageAlt<'e>> = None;

    for event in events {
        if let Some(alt) = image.as_mut() {
            // An image's description is plain text (its `alt`): markup, links and pills
            // inside it are flattened to their text.
            match event {
                Event::Start(Tag::Image { .. }) => alt.depth += 1,
                Event::End(TagEnd::Image) if alt.depth > 1 => alt.depth -= 1,
                Event::End(TagEnd::Image) => {
                    let alt = image.take();
                    if let Some(alt) = alt {
                        close_image(&mut out, alt, !links.is_empty());
                    }
                }
                Event::Text(text) | Event::InlineHtml(text) => {
                    for segment in segments(text) {
                        match segment {
                            Segment::Text(t) => alt.text.push_str(t),
                            Segment::Mention(id) => alt.text.push_str(&display(id)),
                        }
                    }
                }
                Event::Code(text) | Event::InlineMath(text) | Event::DisplayMath(text) => {
                    alt.text.push_str(text);
                }
                Event::SoftBreak | Event::HardBreak => alt.text.push(' '),
                Event::Start(_)
                | Event::End(_)
                | Event::Html(_)
                | Event::FootnoteReference(_)
                | Event::Rule
                | Event::TaskListMarker(_) => {}
            }
            continue;
        }
        match event {
            Event::Start(tag) => match tag {
                Tag::Paragraph
                | Tag::List(_)
                | Tag::Item
                | Tag::TableHead
                | Tag::TableRow
                | Tag::TableCell
                | Tag::Emphasis
                | Tag::Strong
                | Tag::Strikethrough
                | Tag::Superscript
                | Tag::Subscript => out.push(Event::Start(tag.clone())),
                Tag::Heading { level, .. } => out.push(Event::Start(Tag::Heading {
                    level: *level,
                    id: None,
                    classes: Vec::new(),
                    attrs: Vec::new(),
                })),
                // `blockquote` takes no attributes (a GitHub alert's class is not permitted).
                Tag::BlockQuote(_) => out.push(Event::Start(Tag::BlockQuote(None))),
                Tag::CodeBlock(kind) => {
                    in_code_block = true;
                    out.push(Event::Start(Tag::CodeBlock(code_block_kind(kind))));
                }
                // Raw HTML is shown, not interpreted (the contract): collected, then written
                // as a paragraph of text.
                Tag::HtmlBlock => html_block = Some(String::new()),
                // Cell alignment would need `style` (or `align`), which `th`/`td` may not
                // carry: the permitted list gives them no attributes.
                Tag::Table(alignments) => out.push(Event::Start(Tag::Table(vec![
                    Alignment::None;
                    alignments.len()
                ]))),
                Tag::Link {
                    link_type,
                    dest_url,
                    ..
                } => {
                    let href = match link_type {
                        LinkType::Email => format!("mailto:{dest_url}"),
                        _ => dest_url.to_string(),
                    };
                    if permitted_href(&href) {
                        // Written here rather than by `push_html`, which would percent-encode
                        // the URL and add `title`, not a permitted attribute on `a`.
                        out.push(Event::InlineHtml(
                            format!(r#"<a href="{}">"#, escape_attr(&href)).into(),
                        ));
                        links.push(LinkClose::Anchor);
                    } else if matches!(link_type, LinkType::Autolink | LinkType::Email) {
                        // The text already is the URL.
                        links.push(LinkClose::Nothing);
                    } else {
                        // A relative or other-scheme link cannot be an anchor (receiving
                        // clients drop its `href`): its URL is shown after its text.
                        links.push(LinkClose::Url(dest_url.clone()));
                    }
                }
                Tag::Image { dest_url, .. } => {
                    image = Some(ImageAlt {
                        url: dest_url.clone(),
                        text: String::new(),
                        depth: 1,
                    });
                }
                // Not enabled by `options()`; their content is kept, their tags dropped.
                Tag::FootnoteDefinition(_)
                | Tag::DefinitionList
                | Tag::DefinitionListTitle
                | Tag::DefinitionListDefinition
                | Tag::MetadataBlock(_) => {}
            },
            Event::End(tag) => match tag {
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::List(_)
                | TagEnd::Item
                | TagEnd::Table
                | TagEnd::TableHead
                | TagEnd::TableRow
                | TagEnd::TableCell
                | TagEnd::Emphasis
                | TagEnd::Strong
                | TagEnd::Strikethrough
                | TagEnd::Superscript
                | TagEnd::Subscript => out.push(Event::End(*tag)),
                TagEnd::BlockQuote(_) => out.push(Event::End(TagEnd::BlockQuote(None))),
                TagEnd::CodeBlock => {
                    in_code_block = false;
                    out.push(Event::End(TagEnd::CodeBlock));
                }
                TagEnd::HtmlBlock => {
                    let raw = html_block.take().unwrap_or_default();
                    out.push(Event::Start(Tag::Paragraph));
                    push_literal(&mut out, raw.trim_end_matches('\n'), mentions, false);
                    out.push(Event::End(TagEnd::Paragraph));
                }
                TagEnd::Link => match links.pop() {
                    Some(LinkClose::Anchor) => out.push(Event::InlineHtml("</a>".into())),
                    Some(LinkClose::Url(url)) => out.push(Event::Text(format!(" ({url})").into())),
                    Some(LinkClose::Nothing) | None => {}
                },
                // Handled above, while the image is open.
                TagEnd::Image => {}
                TagEnd::FootnoteDefinition
                | TagEnd::DefinitionList
                | TagEnd::DefinitionListTitle
                | TagEnd::DefinitionListDefinition
                | TagEnd::MetadataBlock(_) => {}
            },
            // Code keeps its text: `push_html` escapes it and nothing in it is a mention.
            Event::Text(text) if in_code_block => out.push(Event::Text(text.clone())),
            Event::Text(text) => push_mentions(&mut out, text, mentions, !links.is_empty()),
            Event::Html(text) => match html_block.as_mut() {
                Some(raw) => raw.push_str(text),
                None => push_literal(&mut out, text, mentions, !links.is_empty()),
            },
            Event::InlineHtml(text) => push_literal(&mut out, text, mentions, !links.is_empty()),
            Event::Code(text) | Event::InlineMath(text) | Event::DisplayMath(text) => {
                out.push(Event::Code(text.clone()));
            }
            // A soft break is a line break in chat (the contract); HTML needs `<br />` for it.
            Event::SoftBreak | Event::HardBreak => out.push(Event::HardBreak),
            Event::Rule => out.push(Event::Rule),
            Event::FootnoteReference(name) => out.push(Event::Text(format!("[^{name}]").into())),
            Event::TaskListMarker(done) => {
                out.push(Event::Text(if *done { "[x] " } else { "[ ] " }.into()));
            }
        }
    }

    unwrap_single_paragraph(&mut out);
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, out.into_iter());
    html.truncate(html.trim_end().len());
    html
}

/// What ends an open link in the formatted body.
enum LinkClose<'e> {
    /// `</a>`.
    Anchor,
    /// The URL in parentheses, after a link that could not be an anchor.
    Url(CowStr<'e>),
    /// Nothing: an autolink's text is its URL.
    Nothing,
}

/// An open image: its URL, its description so far as text, and how many images deep the
/// description is (an image's description may hold images).
struct ImageAlt<'e> {
    url: CowStr<'e>,
    text: String,
    depth: usize,
}

/// An image as a link to it (the contract): Matrix `img` is only permitted with an `mxc://`
/// source, which an agent's image URL is not. Inside a link (a badge) the description is
/// enough, as anchors cannot nest; an empty description shows the URL.
fn close_image<'e>(out: &mut Vec<Event<'e>>, alt: ImageAlt<'e>, in_link: bool) {
    let text = if alt.text.is_empty() {
        alt.url.to_string()
    } else {
        alt.text
    };
    if in_link {
        out.push(Event::Text(text.into()));
    } else if permitted_href(&alt.url) {
        out.push(Event::InlineHtml(
            format!(r#"<a href="{}">"#, escape_attr(&alt.url)).into(),
        ));
        out.push(Event::Text(text.into()));
        out.push(Event::InlineHtml("</a>".into()));
    } else if text == *alt.url {
        out.push(Event::Text(text.into()));
    } else {
        out.push(Event::Text(format!("{text} ({})", alt.url).into()));
    }
}

/// A fenced block's language as `push_html` writes it (`class="language-…"`, the one class
/// `code` may carry), cut at the first whitespace so no second class can follow.
fn code_block_kind<'e>(kind: &CodeBlockKind<'e>) -> CodeBlockKind<'e> {
    match kind {
        CodeBlockKind::Indented => CodeBlockKind::Indented,
        CodeBlockKind::Fenced(info) => {
            let lang = info.split_whitespace().next().unwrap_or_default();
            CodeBlockKind::Fenced(lang.to_owned().into())
        }
    }
}

/// Text with its mention tokens: an allowed id becomes the user pill, any other id its
/// text. Inside a link a pill would nest anchors, so there the id is text too (it still
/// counts for `m.mentions`: a user "can be mentioned without including their Matrix URI").
fn push_mentions<'e>(
    out: &mut Vec<Event<'e>>,
    text: &'e str,
    mentions: &Mentions<'_>,
    in_link: bool,
) {
    for segment in segments(text) {
        match segment {
            Segment::Text(t) => out.push(Event::Text(CowStr::Borrowed(t))),
            Segment::Mention(id) if mentions.allows(id) && !in_link => {
                out.push(Event::InlineHtml(pill(id).into()));
            }
            Segment::Mention(id) => out.push(Event::Text(display(id).into())),
        }
    }
}

/// Raw HTML from the source as text (escaped by `push_html`), its line breaks kept.
fn push_literal<'e>(out: &mut Vec<Event<'e>>, text: &str, mentions: &Mentions<'_>, in_link: bool) {
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push(Event::HardBreak);
        }
        for segment in segments(line) {
            match segment {
                Segment::Text(t) => out.push(Event::Text(t.to_owned().into())),
                Segment::Mention(id) if mentions.allows(id) && !in_link => {
                    out.push(Event::InlineHtml(pill(id).into()));
                }
                Segment::Mention(id) => out.push(Event::Text(display(id).into())),
            }
        }
    }
}

/// A message that is one paragraph is sent without the `<p>` around it: the spec asks not
/// to send "extra paragraph tags surrounding text".
fn unwrap_single_paragraph(out: &mut Vec<Event<'_>>) {
    if !matches!(out.first(), Some(Event::Start(Tag::Paragraph))) {
        return;
    }
    let mut depth = 0usize;
    for (i, event) in out.iter().enumerate() {
        match event {
            Event::Start(_) => depth += 1,
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    if i + 1 == out.len() {
                        out.pop();
                        out.remove(0);
                    }
                    return;
                }
            }
            _ => {}
        }
    }
}

/// The `body`: "the plain text version of the HTML" (instant messaging module), which is
/// what notifications and clients without HTML show. It is a plain rendering rather than
/// the Markdown source: no `**`, backslash escapes or entities to read past, mention
/// tokens as the ids' text, lists with bullets, tables as aligned columns.
fn plain_body(events: &[Event<'_>]) -> String {
    let mut writer = Plain::default();
    for event in events {
        writer.event(event);
    }
    writer.flush_inline();
    let mut text = writer.lines.join("\n");
    text.truncate(text.trim_end().len());
    text
}

/// A container the plain writer is inside.
enum Frame {
    /// A block quote; `has_content` once a block was written in it.
    Quote { has_content: bool },
    /// A list; `next` is the next item's number (`None`: bullets).
    List { next: Option<u64> },
    /// A list item; `pending` until its marker has started a line.
    Item { marker: String, pending: bool },
}

/// The plain-text writer: finished lines, the containers open, and the inline text of the
/// block being written.
#[derive(Default)]
struct Plain {
    lines: Vec<String>,
    frames: Vec<Frame>,
    /// A block was written outside every container.
    root_has_content: bool,
    inline: String,
    /// The raw text of the code or HTML block being read.
    raw: Option<String>,
    /// The open table.
    table: Option<PlainTable>,
    /// Per open link: where its text starts in `inline` and the URL to show after it.
    links: Vec<(usize, Option<String>)>,
    /// The open image.
    image: Option<PlainImage>,
}

/// A table being read for `body`.
struct PlainTable {
    alignments: Vec<Alignment>,
    /// The finished rows, the header first.
    rows: Vec<Vec<String>>,
    /// The cells of the row being read.
    row: Vec<String>,
}

/// An image being read for `body`: its description goes straight into the inline text.
struct PlainImage {
    /// Where the description starts in `inline`.
    start: usize,
    url: String,
    /// How many images deep the description is.
    depth: usize,
    /// Inside a link, whose URL follows instead.
    in_link: bool,
}

impl Plain {
    fn event(&mut self, event: &Event<'_>) {
        if let Some(image) = self.image.as_mut() {
            match event {
                Event::Start(Tag::Image { .. }) => image.depth += 1,
                Event::End(TagEnd::Image) if image.depth > 1 => image.depth -= 1,
                Event::End(TagEnd::Image) => {
                    let Some(PlainImage {
                        start,
                        url,
                        in_link,
                        ..
                    }) = self.image.take()
                    else {
                        return;
                    };
                    if in_link {
                        // The enclosing link's URL follows.
                    } else if self.inline.len() == start {
                        self.inline.push_str(&url);
                    } else if self.inline[start..] != url {
                        self.inline.push_str(&format!(" ({url})"));
                    }
                }
                Event::Text(t) | Event::InlineHtml(t) => push_display(&mut self.inline, t),
                Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                    self.inline.push_str(t);
                }
                Event::SoftBreak | Event::HardBreak => self.inline.push(' '),
                Event::Start(_)
                | Event::End(_)
                | Event::Html(_)
                | Event::FootnoteReference(_)
                | Event::Rule
                | Event::TaskListMarker(_) => {}
            }
            return;
        }
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(*tag),
            Event::Text(t) => match self.raw.as_mut() {
                // Code keeps its bytes, and nothing in it is a mention.
                Some(raw) => raw.push_str(t),
                None => push_display(&mut self.inline, t),
            },
            Event::Html(t) => match self.raw.as_mut() {
                Some(raw) => push_display(raw, t),
                None => push_display(&mut self.inline, t),
            },
            Event::InlineHtml(t) => push_display(&mut self.inline, t),
            Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                self.inline.push_str(t);
            }
            Event::SoftBreak | Event::HardBreak => self.inline.push('\n'),
            Event::Rule => {
                self.flush_inline();
                self.block(vec!["──────────".to_owned()]);
            }
            Event::FootnoteReference(name) => self.inline.push_str(&format!("[^{name}]")),
            Event::TaskListMarker(done) => {
                self.inline.push_str(if *done { "[x] " } else { "[ ] " });
            }
        }
    }

    fn start(&mut self, tag: &Tag<'_>) {
        match tag {
            Tag::Paragraph | Tag::Heading { .. } => self.flush_inline(),
            Tag::BlockQuote(_) => {
                self.flush_inline();
                self.separate();
                self.frames.push(Frame::Quote { has_content: false });
            }
            Tag::CodeBlock(_) | Tag::HtmlBlock => {
                self.flush_inline();
                self.raw = Some(String::new());
            }
            Tag::List(start) => {
                self.flush_inline();
                self.separate();
                self.frames.push(Frame::List { next: *start });
            }
            Tag::Item => {
                self.flush_inline();
                let depth = self
                    .frames
                    .iter()
                    .filter(|f| matches!(f, Frame::List { .. }))
                    .count();
                let marker = match self.frames.last_mut() {
                    Some(Frame::List { next: Some(n) }) => {
                        let marker = format!("{n}. ");
                        *n += 1;
                        marker
                    }
                    _ if depth > 1 => "◦ ".to_owned(),
                    _ => "• ".to_owned(),
                };
                self.frames.push(Frame::Item {
                    marker,
                    pending: true,
                });
            }
            Tag::Table(alignments) => {
                self.flush_inline();
                self.table = Some(PlainTable {
                    alignments: alignments.clone(),
                    rows: Vec::new(),
                    row: Vec::new(),
                });
            }
            Tag::TableHead | Tag::TableRow | Tag::TableCell => self.inline.clear(),
            Tag::Strikethrough => self.inline.push_str("~~"),
            Tag::Link {
                link_type,
                dest_url,
                ..
            } => {
                let url = match link_type {
                    LinkType::Autolink | LinkType::Email => None,
                    _ => Some(dest_url.to_string()),
                };
                self.links.push((self.inline.len(), url));
            }
            Tag::Image { dest_url, .. } => {
                self.image = Some(PlainImage {
                    start: self.inline.len(),
                    url: dest_url.to_string(),
                    depth: 1,
                    in_link: !self.links.is_empty(),
                });
            }
            Tag::Emphasis
            | Tag::Strong
            | Tag::Superscript
            | Tag::Subscript
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::MetadataBlock(_) => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph | TagEnd::Heading(_) => self.flush_inline(),
            TagEnd::BlockQuote(_) | TagEnd::List(_) => {
                self.flush_inline();
                self.frames.pop();
            }
            TagEnd::Item => {
                self.flush_inline();
                if matches!(self.frames.last(), Some(Frame::Item { pending: true, .. })) {
                    let line = self.prefix();
                    self.lines.push(line.trim_end().to_owned());
                }
                self.frames.pop();
            }
            TagEnd::CodeBlock | TagEnd::HtmlBlock => {
                let raw = self.raw.take().unwrap_or_default();
                let raw = raw.strip_suffix('\n').unwrap_or(&raw);
                if !raw.is_empty() {
                    self.block(raw.split('\n').map(str::to_owned).collect());
                }
            }
            TagEnd::TableCell => {
                let cell = std::mem::take(&mut self.inline);
                if let Some(table) = self.table.as_mut() {
                    table.row.push(cell);
                }
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                if let Some(table) = self.table.as_mut() {
                    table.rows.push(std::mem::take(&mut table.row));
                }
            }
            TagEnd::Table => {
                if let Some(table) = self.table.take() {
                    self.block(table_lines(&table.alignments, &table.rows));
                }
            }
            TagEnd::Strikethrough => self.inline.push_str("~~"),
            TagEnd::Link => {
                if let Some((start, Some(url))) = self.links.pop() {
                    if self.inline.len() == start {
                        self.inline.push_str(&url);
                    } else {
                        self.inline.push_str(&format!(" ({url})"));
                    }
                }
            }
            TagEnd::Image
            | TagEnd::Emphasis
            | TagEnd::Strong
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::MetadataBlock(_) => {}
        }
    }

    /// Writes the inline text read so far (a paragraph, a heading, a tight item's text) as
    /// a block of lines.
    fn flush_inline(&mut self) {
        if self.table.is_some() || self.inline.is_empty() {
            return;
        }
        let inline = std::mem::take(&mut self.inline);
        self.block(inline.split('\n').map(str::to_owned).collect());
    }

    /// Writes one block: after a blank line if its container already holds one, each line
    /// behind the containers' prefixes.
    fn block(&mut self, lines: Vec<String>) {
        self.separate();
        for line in lines {
            let prefix = self.prefix();
            if line.is_empty() {
                self.lines.push(prefix.trim_end().to_owned());
            } else {
                self.lines.push(prefix + &line);
            }
        }
    }

    /// Blocks are separated by one blank line at the top level and in quotes; within a
    /// list they follow line by line, as chat lists do.
    fn separate(&mut self) {
        let had_content = match self.frames.last_mut() {
            None => std::mem::replace(&mut self.root_has_content, true),
            Some(Frame::Quote { has_content }) => std::mem::replace(has_content, true),
            Some(Frame::List { .. } | Frame::Item { .. }) => false,
        };
        if had_content {
            let prefix = self.continuation();
            self.lines.push(prefix.trim_end().to_owned());
        }
    }

    /// The start of a new line: a quote bar per quote, an item's marker on its first line,
    /// then spaces under it; a nested list is indented two spaces per level.
    fn prefix(&mut self) -> String {
        let mut prefix = String::new();
        for i in 0..self.frames.len() {
            let nested_list = self.frames[i + 1..]
                .iter()
                .any(|f| matches!(f, Frame::List { .. }));
            match &mut self.frames[i] {
                Frame::Quote { .. } => prefix.push_str(QUOTE),
                Frame::List { .. } => {}
                Frame::Item { marker, pending } => {
                    if *pending {
                        prefix.push_str(marker);
                        *pending = false;
                    } else if nested_list {
                        prefix.push_str("  ");
                    } else {
                        prefix.push_str(&" ".repeat(marker.chars().count()));
                    }
                }
            }
        }
        prefix
    }

    /// The prefix of a blank line: like `prefix`, without using up a pending marker.
    fn continuation(&self) -> String {
        let mut prefix = String::new();
        for (i, frame) in self.frames.iter().enumerate() {
            match frame {
                Frame::Quote { .. } => prefix.push_str(QUOTE),
                Frame::List { .. } => {}
                Frame::Item { marker, .. } => {
                    let nested_list = self.frames[i + 1..]
                        .iter()
                        .any(|f| matches!(f, Frame::List { .. }));
                    let width = if nested_list {
                        2
                    } else {
                        marker.chars().count()
                    };
                    prefix.push_str(&" ".repeat(width));
                }
            }
        }
        prefix
    }
}

/// A quoted line's prefix in `body`. Not `> `: clients strip the lines starting with `> `
/// from the start of a reply's `body` as an old reply fallback (rich replies module), and
/// Threadline's thread posts carry `m.in_reply_to` for clients without threads.
const QUOTE: &str = "│ ";

/// Text with its mention tokens written as the ids' text.
fn push_display(out: &mut String, text: &str) {
    for segment in segments(text) {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Mention(id) => out.push_str(&display(id)),
        }
    }
}

/// A table as aligned columns (plain text has no tables): cells padded to the column's
/// width per the `---:` row, a rule under the header.
fn table_lines(alignments: &[Alignment], rows: &[Vec<String>]) -> Vec<String> {
    table_text(alignments, rows, |cell| cell.chars().count(), "-|-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::mentioned;

    const PERSON: &str = "@person:example.org";

    fn allowed() -> Vec<String> {
        vec![PERSON.to_owned()]
    }

    fn r(markdown: &str) -> Rendered {
        let ids = allowed();
        render(markdown, &Mentions::new(&ids))
    }

    /// The formatted body, or the plain one when no HTML was needed.
    fn h(markdown: &str) -> String {
        let rendered = r(markdown);
        rendered.html.unwrap_or(rendered.text)
    }

    fn t(markdown: &str) -> String {
        r(markdown).text
    }

    /// The kit's sample (`render-kit/sample.md`), its allowed mention a Matrix id.
    const SAMPLE: &str = r#"# Budget plan

Here is the **draft** for _Q3_, with ~~old~~ new numbers and `inline code`.
A second line of the same paragraph.

## Steps

1. Collect receipts
2. Sort them by [category](https://example.com/cats?a=1&b=2)
   - nested *item*
3. Done

- one
- two

> A quote with <b>raw html</b> & a <!channel> and @everyone @here @room.

```rust
fn main() { println!("<not html> & {}", 1 < 2); }
```

| Item | Cost |
| --- | ---: |
| Rent | 1200 |
| Food & drink | 300 |

Thanks <@@person:example.org> and <@U0OTHER999>! Escapes: 5 * 3 _ 2 < 4 > 1 & done.
![chart](https://example.com/chart.png)
"#;

    fn sample() -> String {
        SAMPLE.to_owned()
    }

    #[test]
    fn sample_renders_exactly() {
        let rendered = r(&sample());
        println!(
            "--- body ---\n{}\n--- formatted_body ---\n{}\n--- length {} ---",
            rendered.text,
            rendered.html.as_deref().unwrap_or(""),
            rendered.length
        );
        let body = "\
Budget plan

Here is the draft for Q3, with ~~old~~ new numbers and inline code.
A second line of the same paragraph.

Steps

1. Collect receipts
2. Sort them by category (https://example.com/cats?a=1&b=2)
  ◦ nested item
3. Done

• one
• two

│ A quote with <b>raw html</b> & a <!channel> and @everyone @here @room.

fn main() { println!(\"<not html> & {}\", 1 < 2); }

Item         | Cost
-------------|-----
Rent         | 1200
Food & drink |  300

Thanks @person:example.org and @U0OTHER999! Escapes: 5 * 3 _ 2 < 4 > 1 & done.
chart (https://example.com/chart.png)";
        let html = "\
<h1>Budget plan</h1>
<p>Here is the <strong>draft</strong> for <em>Q3</em>, with <del>old</del> new numbers and <code>inline code</code>.<br />
A second line of the same paragraph.</p>
<h2>Steps</h2>
<ol>
<li>Collect receipts</li>
<li>Sort them by <a href=\"https://example.com/cats?a=1&amp;b=2\">category</a>
<ul>
<li>nested <em>item</em></li>
</ul>
</li>
<li>Done</li>
</ol>
<ul>
<li>one</li>
<li>two</li>
</ul>
<blockquote>
<p>A quote with &lt;b&gt;raw html&lt;/b&gt; &amp; a &lt;!channel&gt; and @everyone @here @room.</p>
</blockquote>
<pre><code class=\"language-rust\">fn main() { println!(\"&lt;not html&gt; &amp; {}\", 1 &lt; 2); }
</code></pre>
<table><thead><tr><th>Item</th><th>Cost</th></tr></thead><tbody>
<tr><td>Rent</td><td>1200</td></tr>
<tr><td>Food &amp; drink</td><td>300</td></tr>
</tbody></table>
<p>Thanks <a href=\"https://matrix.to/#/@person:example.org\">@person:example.org</a> and @U0OTHER999! Escapes: 5 * 3 _ 2 &lt; 4 &gt; 1 &amp; done.<br />
<a href=\"https://example.com/chart.png\">chart</a></p>";
        assert_eq!(rendered.text, body);
        assert_eq!(rendered.html.as_deref(), Some(html));
        assert_eq!(rendered.length, body.chars().count() + html.chars().count());
    }

    #[test]
    fn sample_notifies_only_the_allowed_id() {
        let ids = allowed();
        assert_eq!(mentioned(&sample(), &Mentions::new(&ids)), vec![PERSON]);
    }

    #[test]
    fn mentioned_lists_allowed_ids_once_in_order_outside_code() {
        let ids = vec!["@b:x.org".to_owned(), "@a:x.org".to_owned()];
        let mentions = Mentions::new(&ids);
        let markdown = "<@@a:x.org> `<@@b:x.org>` <@@c:x.org> <@@a:x.org>\n\n```\n<@@b:x.org>\n```\n\n[link <@@b:x.org>](https://e.org)";
        assert_eq!(mentioned(markdown, &mentions), vec!["@a:x.org", "@b:x.org"]);
        assert!(mentioned("@room <@> <@ a>", &mentions).is_empty());
        assert!(mentioned("<@@a:x.org>", &Mentions::default()).is_empty());
    }

    #[test]
    fn special_characters_are_escaped_in_html_and_literal_in_body() {
        let rendered = r("a < b > c & d \"q\" 'a' \\* \\_ \\` \\# \\[x\\] ~ |");
        assert_eq!(rendered.text, "a < b > c & d \"q\" 'a' * _ ` # [x] ~ |");
        // Nothing to format: the body alone travels.
        assert_eq!(rendered.html, None);
        assert_eq!(
            h("**a < b & \"c\"**"),
            "<strong>a &lt; b &amp; \"c\"</strong>"
        );
    }

    #[test]
    fn nested_emphasis() {
        assert_eq!(h("***both***"), "<em><strong>both</strong></em>");
        assert_eq!(
            h("**bold _and italic_**"),
            "<strong>bold <em>and italic</em></strong>"
        );
        assert_eq!(t("**bold _and italic_**"), "bold and italic");
    }

    #[test]
    fn links_keep_their_url_exactly() {
        let markdown = "[**see** `this`](<https://e.org/a?x=1&y=(2)|3>) [gt](https://e.org/a>b)";
        assert_eq!(
            h(markdown),
            "<a href=\"https://e.org/a?x=1&amp;y=(2)|3\"><strong>see</strong> <code>this</code></a> \
<a href=\"https://e.org/a&gt;b\">gt</a>"
        );
        assert_eq!(
            t(markdown),
            "see this (https://e.org/a?x=1&y=(2)|3) gt (https://e.org/a>b)"
        );
    }

    #[test]
    fn links_without_a_permitted_scheme_show_their_url() {
        assert_eq!(
            h("[docs](/docs) [x](javascript:alert(1)) **<irc://h/c>**"),
            "docs (/docs) x (javascript:alert(1)) <strong>irc://h/c</strong>"
        );
        assert_eq!(
            h("<me@example.org> <HTTPS://E.ORG>"),
            "<a href=\"mailto:me@example.org\">me@example.org</a> <a href=\"HTTPS://E.ORG\">HTTPS://E.ORG</a>"
        );
        assert_eq!(
            t("<me@example.org> [](https://e.org)"),
            "me@example.org https://e.org"
        );
    }

    #[test]
    fn link_titles_are_dropped() {
        assert_eq!(
            h("[a](https://e.org \"t\")"),
            "<a href=\"https://e.org\">a</a>"
        );
    }

    #[test]
    fn images_become_links() {
        assert_eq!(
            h("![a *b* `c`](https://e.org/i.png \"t\")"),
            "<a href=\"https://e.org/i.png\">a b c</a>"
        );
        assert_eq!(
            t("![a *b*](https://e.org/i.png)"),
            "a b (https://e.org/i.png)"
        );
        assert_eq!(
            h("x ![](https://e.org/i.png)"),
            "x <a href=\"https://e.org/i.png\">https://e.org/i.png</a>"
        );
        assert_eq!(t("![](https://e.org/i.png)"), "https://e.org/i.png");
        // A badge: the image's description inside the outer link, anchors never nested.
        let badge = "[![build](https://ci.org/b.svg)](https://ci.org/run)";
        assert_eq!(h(badge), "<a href=\"https://ci.org/run\">build</a>");
        assert_eq!(t(badge), "build (https://ci.org/run)");
        assert_eq!(h("*x* ![pic](img.png)"), "<em>x</em> pic (img.png)");
    }

    #[test]
    fn code_block_keeps_its_bytes_and_language() {
        let markdown = "~~~python extra\n```\n<b>*x*</b> & <@@person:example.org>  \n~~~";
        let rendered = r(markdown);
        assert_eq!(
            rendered.html.as_deref(),
            Some(
                "<pre><code class=\"language-python\">```\n&lt;b&gt;*x*&lt;/b&gt; &amp; &lt;@@person:example.org&gt;  \n</code></pre>"
            )
        );
        assert_eq!(rendered.text, "```\n<b>*x*</b> & <@@person:example.org>");
        assert_eq!(
            h("    indented <x>\n"),
            "<pre><code>indented &lt;x&gt;\n</code></pre>"
        );
        let ids = allowed();
        assert!(mentioned(markdown, &Mentions::new(&ids)).is_empty());
    }

    #[test]
    fn inline_code_with_backticks() {
        assert_eq!(h("`` a ` b ``"), "<code>a ` b</code>");
        assert_eq!(t("`` a ` b ``"), "a ` b");
        assert_eq!(
            h("`<@@person:example.org>`"),
            "<code>&lt;@@person:example.org&gt;</code>"
        );
    }

    #[test]
    fn mentions() {
        assert_eq!(
            h("hi <@@person:example.org>"),
            "hi <a href=\"https://matrix.to/#/@person:example.org\">@person:example.org</a>"
        );
        assert_eq!(t("hi <@@person:example.org>"), "hi @person:example.org");
        // Not allowed: the id as text, no pill (and not in `m.mentions`).
        let other = r("hi <@@other:example.org> and <@U0OTHER999>");
        assert_eq!(other.text, "hi @other:example.org and @U0OTHER999");
        assert_eq!(other.html, None);
        // Malformed tokens are text.
        assert_eq!(t("<@> <@ a> <@a b>"), "<@> <@ a> <@a b>");
        assert_eq!(h("**<@>** <@ a>"), "<strong>&lt;@&gt;</strong> &lt;@ a&gt;");
        // In a link's text the id is text: anchors do not nest.
        assert_eq!(
            h("[ask <@@person:example.org>](https://e.org)"),
            "<a href=\"https://e.org\">ask @person:example.org</a>"
        );
    }

    #[test]
    fn pill_urls_are_percent_encoded() {
        assert_eq!(
            matrix_to("@a_b.c=d/e+f:ex.org"),
            "https://matrix.to/#/@a_b.c%3Dd%2Fe%2Bf:ex.org"
        );
        assert_eq!(
            matrix_to("@x:[::1]:8448"),
            "https://matrix.to/#/@x:%5B::1%5D:8448"
        );
        assert_eq!(matrix_to("@é:x"), "https://matrix.to/#/@%C3%A9:x");
        let ids = vec!["@a&b\"c:x".to_owned()];
        let rendered = render("<@@a&b\"c:x>", &Mentions::new(&ids));
        assert_eq!(
            rendered.html.as_deref(),
            Some("<a href=\"https://matrix.to/#/@a%26b%22c:x\">@a&amp;b\"c:x</a>")
        );
    }

    #[test]
    fn broadcasts_are_text() {
        for word in [
            "@everyone",
            "@here",
            "@room",
            "<!channel>",
            "<!here>",
            "<!everyone>",
        ] {
            let rendered = r(word);
            assert_eq!(rendered.text, word);
            assert_eq!(rendered.html, None, "{word}");
            let ids = allowed();
            assert!(mentioned(word, &Mentions::new(&ids)).is_empty());
        }
        assert_eq!(h("**<!channel>**"), "<strong>&lt;!channel&gt;</strong>");
    }

    #[test]
    fn headings() {
        let rendered = r("# One\n\n##### Five *x*");
        assert_eq!(
            rendered.html.as_deref(),
            Some("<h1>One</h1>\n<h5>Five <em>x</em></h5>")
        );
        assert_eq!(rendered.text, "One\n\nFive x");
    }

    #[test]
    fn ordered_list_starting_at_three() {
        let rendered = r("3. c\n4. d");
        assert_eq!(
            rendered.html.as_deref(),
            Some("<ol start=\"3\">\n<li>c</li>\n<li>d</li>\n</ol>")
        );
        assert_eq!(rendered.text, "3. c\n4. d");
    }

    #[test]
    fn nested_lists_and_continuations() {
        let markdown = "- a\n  more\n  - b\n    - c\n\n  after\n- \n\ntext";
        assert_eq!(
            t(markdown),
            "• a\n  more\n  ◦ b\n    ◦ c\n  after\n•\n\ntext"
        );
        assert_eq!(t("1. x\n   1. y\n   2. z"), "1. x\n  1. y\n  2. z");
        assert_eq!(t("- - deep"), "• ◦ deep");
    }

    #[test]
    fn block_quotes() {
        let markdown = "> a\n> b\n>\n> c\n> > d\n\n- > e";
        let rendered = r(markdown);
        assert_eq!(rendered.text, "│ a\n│ b\n│\n│ c\n│\n│ │ d\n\n• │ e");
        assert_eq!(
            rendered.html.as_deref(),
            Some(
                "<blockquote>\n<p>a<br />\nb</p>\n<p>c</p>\n<blockquote>\n<p>d</p>\n</blockquote>\n</blockquote>\n<ul>\n<li>\n<blockquote>\n<p>e</p>\n</blockquote>\n</li>\n</ul>"
            )
        );
    }

    #[test]
    fn table_with_alignment() {
        let markdown =
            "| l | c | r |\n| :-- | :-: | --: |\n| long cell | x | 1 |\n| a | **bold** |";
        let rendered = r(markdown);
        assert_eq!(
            rendered.text,
            "l         |  c   | r\n----------|------|--\nlong cell |  x   | 1\na         | bold |"
        );
        assert_eq!(
            rendered.html.as_deref(),
            Some(
                "<table><thead><tr><th>l</th><th>c</th><th>r</th></tr></thead><tbody>\n<tr><td>long cell</td><td>x</td><td>1</td></tr>\n<tr><td>a</td><td><strong>bold</strong></td><td></td></tr>\n</tbody></table>"
            )
        );
    }

    #[test]
    fn empty_input_renders_empty() {
        for input in ["", "   ", "\n\n\t\n"] {
            assert_eq!(
                r(input),
                Rendered {
                    text: String::new(),
                    html: None,
                    length: 0
                }
            );
        }
    }

    #[test]
    fn breaks_are_line_breaks() {
        for markdown in ["a  \nb", "a\\\nb", "a\nb"] {
            let rendered = r(markdown);
            assert_eq!(rendered.text, "a\nb");
            // A break alone adds nothing that `body` does not say.
            assert_eq!(rendered.html, None);
        }
        assert_eq!(h("*a*\nb"), "<em>a</em><br />\nb");
    }

    #[test]
    fn entities_are_decoded_then_escaped() {
        let rendered = r("&amp; &copy; &lt;b&gt; *x*");
        assert_eq!(rendered.text, "& © <b> x");
        assert_eq!(
            rendered.html.as_deref(),
            Some("&amp; © &lt;b&gt; <em>x</em>")
        );
    }

    #[test]
    fn raw_html_is_text() {
        let rendered = r(
            "<div>\n<script>x()</script> <@@person:example.org>\n</div>\n\na <span\nclass=\"x\">b</span> *c*",
        );
        assert_eq!(
            rendered.html.as_deref(),
            Some(
                "<p>&lt;div&gt;<br />\n&lt;script&gt;x()&lt;/script&gt; <a href=\"https://matrix.to/#/@person:example.org\">@person:example.org</a><br />\n&lt;/div&gt;</p>\n<p>a &lt;span<br />\nclass=\"x\"&gt;b&lt;/span&gt; <em>c</em></p>"
            )
        );
        assert_eq!(
            rendered.text,
            "<div>\n<script>x()</script> @person:example.org\n</div>\n\na <span\nclass=\"x\">b</span> c"
        );
    }

    #[test]
    fn length_counts_characters_of_both_bodies() {
        let rendered = r("héllo 👋 *日本*");
        assert_eq!(rendered.text, "héllo 👋 日本");
        assert_eq!(rendered.html.as_deref(), Some("héllo 👋 <em>日本</em>"));
        assert_eq!(rendered.length, 10 + 19);
        assert_eq!(r("👋").length, 1);
    }

    #[test]
    fn rule_and_strikethrough() {
        let rendered = r("a\n\n---\n\n~~b~~");
        assert_eq!(rendered.text, "a\n\n──────────\n\n~~b~~");
        assert_eq!(
            rendered.html.as_deref(),
            Some("<p>a</p>\n<hr />\n<p><del>b</del></p>")
        );
    }

    #[test]
    fn output_uses_only_permitted_tags_and_attributes() {
        let markdown = format!(
            "{}\n\n# h\n\n> q\n\n1. a\n\n---\n\n[l](https://e.org \"t\") ![i](https://e.org/i.png \"t\")\n\n| a | b |\n|:-:|--:|\n| 1 | 2 |\n\n```rust ignore\nx\n```\n\n<img src=x onerror=alert(1)>",
            sample()
        );
        let html = h(&markdown);
        let permitted = [
            "del",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "blockquote",
            "p",
            "a",
            "ul",
            "ol",
            "sup",
            "sub",
            "li",
            "b",
            "i",
            "u",
            "strong",
            "em",
            "s",
            "code",
            "hr",
            "br",
            "div",
            "table",
            "thead",
            "tbody",
            "tr",
            "th",
            "td",
            "caption",
            "pre",
            "span",
            "img",
            "details",
            "summary",
        ];
        let mut rest = html.as_str();
        while let Some(start) = rest.find('<') {
            let Some(end) = rest[start..].find('>') else {
                panic!("unclosed tag in {html}");
            };
            let tag = rest[start + 1..start + end]
                .trim_start_matches('/')
                .trim_end_matches('/');
            let mut parts = tag.split_whitespace();
            let name = parts.next().unwrap_or_default();
            assert!(permitted.contains(&name), "tag {name} in {html}");
            for attr in parts {
                let (key, value) = attr.split_once('=').unwrap_or((attr, ""));
                match (name, key) {
                    ("a", "href") => assert!(value.starts_with("\"https://"), "{attr}"),
                    ("ol", "start") => {}
                    ("code", "class") => assert!(value.starts_with("\"language-"), "{attr}"),
                    _ => panic!("attribute {attr} on {name} in {html}"),
                }
            }
            rest = &rest[start + end + 1..];
        }
    }

    #[test]
    fn deterministic() {
        assert_eq!(r(&sample()), r(&sample()));
    }
}
