//! Slack: renders CommonMark as the `text` of `chat.postMessage` in mrkdwn (sent with
//! `mrkdwn: true`, never `link_names`).
//!
//! Sources, cited below by these names:
//! - *the reference*: Slack's "Formatting text for app surfaces"
//!   (api.slack.com/reference/surfaces/formatting): the three control characters and their
//!   entities, `*bold*`, `_italic_`, `~strike~`, `` `code` ``, ```` ```pre``` ````, `>` quotes,
//!   `<url|text>` links, `<@U…>` mentions; no headings, lists or tables.
//! - *the message-formatting page*: Slack's older "Message Formatting" (slackhq/slack-api-docs,
//!   `page_formatting.md`): how clients read `<…>` sequences (the label is what follows the
//!   pipe), `<!…>` commands, and that `@name` is linked only with `link_names`.
//! - *Slack's answer on escaping*: slackhq/slack-api-docs#34, Slack replying that a backslash
//!   does not escape formatting; code, or a space on either side of the formatting character,
//!   prevents it.
//! - *the Help Center*: "Format your messages" (slack.com/help/articles/202288908): styles
//!   combine, as in `*I am _very_ excited*`.
//! - *jsx-slack*: its "About escape and exact mode" (yhatt/jsx-slack), observations of the
//!   client: a zero-width space around a marker makes Slack format mid-word, and an invisible
//!   soft hyphen in front of `&gt;` keeps a line from becoming a quote.
//!
//! mrkdwn has no escape for its style markers, so literal ones are neutralised (see
//! [`finish`]); everything else the platform lacks is rebuilt from what it has: headings as bold
//! lines, lists as `•`/`◦`/`1.` text, tables as aligned columns in a ```` ``` ```` block.

use super::{events, is_inline_end, segments, table_text, Mentions, Rendered, Segment};
use pulldown_cmark::{Alignment, Event, LinkType, Tag};

/// Invisible, and (per jsx-slack) not a word boundary to Slack: a style marker between two
/// of them is mid-word and cannot open or close a style.
const SOFT_HYPHEN: char = '\u{ad}';
/// Invisible, and (per jsx-slack) a word boundary to Slack: it lets one of our own markers
/// format next to a letter, where Slack would otherwise show it literally.
const ZERO_WIDTH_SPACE: char = '\u{200b}';
/// Stands in for a backtick inside inline code: Slack's inline code cannot contain one
/// (the reference offers no escape), and a lookalike keeps the span inline.
const GRAVE_LOOKALIKE: char = '\u{2cb}';
/// Slack has no horizontal rule (the reference lists none); a line of dashes stands in.
const RULE: &str = "———";

const BOLD: char = '*';
const ITALIC: char = '_';
const STRIKE: char = '~';
const CODE: char = '`';

/// Renders `markdown` for Slack; only ids in `mentions` become real mentions.
pub fn render(markdown: &str, mentions: &Mentions<'_>) -> Rendered {
    let nodes = tree(&mut events(markdown), 0);
    let lines = flow(&nodes, mentions, 0, true);
    let text = lines
        .iter()
        .map(finish)
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_owned();
    // What Slack counts against its message limit: the characters of `text`.
    let length = text.chars().count();
    Rendered {
        text,
        html: None,
        length,
    }
}

/// The event stream as a tree, so lists, quotes and tables can be laid out from their
/// children.
enum Node<'a> {
    Container(Tag<'a>, Vec<Node<'a>>),
    Leaf(Event<'a>),
}

/// How deep containers nest before their content is flattened into the parent: the renderer
/// recurses once per level, and an input of nothing but `>` would otherwise exhaust the
/// stack of the thread rendering it.
const MAX_DEPTH: usize = 64;

fn tree<'a>(events: &mut impl Iterator<Item = Event<'a>>, depth: usize) -> Vec<Node<'a>> {
    let mut nodes = Vec::new();
    // Containers opened past `MAX_DEPTH`: their markers are dropped, their content kept.
    let mut flattened = 0usize;
    while let Some(event) = events.next() {
        match event {
            Event::Start(tag) if depth < MAX_DEPTH => {
                let children = tree(events, depth + 1);
                nodes.push(Node::Container(tag, children));
            }
            Event::Start(_) => flattened += 1,
            Event::End(end) if flattened > 0 => {
                flattened -= 1;
                // A flattened block still ends its line, so its text does not run into the next.
                let after_break = matches!(nodes.last(), None | Some(Node::Leaf(Event::SoftBreak)));
                if !is_inline_end(&end) && !after_break {
                    nodes.push(Node::Leaf(Event::SoftBreak));
                }
            }
            Event::End(_) => break,
            leaf => nodes.push(Node::Leaf(leaf)),
        }
    }
    nodes
}

/// Whether a node belongs inside a paragraph (a tight list item holds its text without one).
fn is_inline(node: &Node<'_>) -> bool {
    match node {
        Node::Leaf(Event::Rule) => false,
        Node::Leaf(
            Event::Start(_)
            | Event::End(_)
            | Event::Text(_)
            | Event::Code(_)
            | Event::InlineMath(_)
            | Event::DisplayMath(_)
            | Event::Html(_)
            | Event::InlineHtml(_)
            | Event::FootnoteReference(_)
            | Event::SoftBreak
            | Event::HardBreak
            | Event::TaskListMarker(_),
        ) => true,
        Node::Container(tag, _) => match tag {
            Tag::Emphasis
            | Tag::Strong
            | Tag::Strikethrough
            | Tag::Superscript
            | Tag::Subscript
            | Tag::Link { .. }
            | Tag::Image { .. } => true,
            Tag::Paragraph
            | Tag::Heading { .. }
            | Tag::BlockQuote(_)
            | Tag::CodeBlock(_)
            | Tag::HtmlBlock
            | Tag::List(_)
            | Tag::Item
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::Table(_)
            | Tag::TableHead
            | Tag::TableRow
            | Tag::TableCell
            | Tag::MetadataBlock(_) => false,
        },
    }
}

/// How a character of an output line came to be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The author's text, not yet escaped: [`finish`] escapes it and neutralises markup.
    Lit,
    /// Our own syntax or already escaped text, written as is.
    Raw,
    /// One of our style markers opening a style.
    Open,
    /// One of our style markers closing a style.
    Close,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    ch: char,
    kind: Kind,
}

/// One line of the message, kept as cells until it is complete: only then are the neighbours
/// of every marker known.
#[derive(Debug, Default)]
struct Line {
    cells: Vec<Cell>,
    /// Code or table content: never indented by a list (that would change it), never trimmed.
    verbatim: bool,
    /// Already carries a list's indentation, so an enclosing item leaves it alone.
    indented: bool,
    /// Starts with a quote marker, so an enclosing quote does not add another.
    quoted: bool,
}

impl Line {
    fn raw(text: &str, verbatim: bool) -> Self {
        Line {
            cells: text
                .chars()
                .map(|ch| Cell {
                    ch,
                    kind: Kind::Raw,
                })
                .collect(),
            verbatim,
            ..Line::default()
        }
    }

    fn prefix(&mut self, text: &str) {
        let cells = text.chars().map(|ch| Cell {
            ch,
            kind: Kind::Raw,
        });
        self.cells.splice(0..0, cells);
    }
}

/// Renders a run of blocks; `gap` puts a blank line between them (the message and quotes do,
/// list items keep their blocks together as chat lists do).
fn flow(nodes: &[Node<'_>], mentions: &Mentions<'_>, depth: usize, gap: bool) -> Vec<Line> {
    let mut groups: Vec<Vec<Line>> = Vec::new();
    let mut run: Vec<&Node<'_>> = Vec::new();
    for node in nodes {
        if is_inline(node) {
            run.push(node);
            continue;
        }
        if !run.is_empty() {
            groups.push(paragraph(&run, mentions, None));
            run.clear();
        }
        groups.push(block(node, mentions, depth));
    }
    if !run.is_empty() {
        groups.push(paragraph(&run, mentions, None));
    }
    let mut lines = Vec::new();
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        if gap && !lines.is_empty() {
            lines.push(Line::default());
        }
        lines.extend(group);
    }
    lines
}

fn block(node: &Node<'_>, mentions: &Mentions<'_>, depth: usize) -> Vec<Line> {
    let (tag, children) = match node {
        Node::Container(tag, children) => (tag, children),
        Node::Leaf(Event::Rule) => return vec![Line::raw(RULE, false)],
        Node::Leaf(_) => return paragraph(&[node], mentions, None),
    };
    match tag {
        Tag::Paragraph => paragraph(&children.iter().collect::<Vec<_>>(), mentions, None),
        // The reference has no headings: a bold line stands in.
        Tag::Heading { .. } => {
            paragraph(&children.iter().collect::<Vec<_>>(), mentions, Some(BOLD))
        }
        Tag::BlockQuote(_) => quote(flow(children, mentions, depth, true)),
        Tag::CodeBlock(_) => code_block(&text_of(children)),
        Tag::HtmlBlock => html_block(&text_of(children)),
        Tag::List(start) => list(*start, children, mentions, depth),
        Tag::Table(aligns) => table(aligns, children),
        Tag::Item
        | Tag::FootnoteDefinition(_)
        | Tag::DefinitionList
        | Tag::DefinitionListTitle
        | Tag::DefinitionListDefinition
        | Tag::TableHead
        | Tag::TableRow
        | Tag::TableCell
        | Tag::MetadataBlock(_) => flow(children, mentions, depth, true),
        Tag::Emphasis
        | Tag::Strong
        | Tag::Strikethrough
        | Tag::Superscript
        | Tag::Subscript
        | Tag::Link { .. }
        | Tag::Image { .. } => paragraph(&[node], mentions, None),
    }
}

/// Inline content as lines; `style` wraps all of it (a heading's bold).
fn paragraph(nodes: &[&Node<'_>], mentions: &Mentions<'_>, style: Option<char>) -> Vec<Line> {
    let mut writer = Writer::new(mentions);
    if let Some(mark) = style {
        writer.open(mark);
    }
    for node in nodes {
        writer.node(node);
    }
    if style.is_some() {
        writer.close();
    }
    let mut lines = writer.finish();
    while lines
        .last()
        .is_some_and(|l| l.iter().all(|c| c.ch.is_whitespace()))
    {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|cells| Line {
            cells,
            ..Line::default()
        })
        .collect()
}

/// The reference's quote is a `>` at the start of each line. It has one level only, so a
/// quote inside a quote stays at that level.
fn quote(mut lines: Vec<Line>) -> Vec<Line> {
    for line in &mut lines {
        if !line.quoted {
            line.prefix("> ");
            line.quoted = true;
        }
    }
    lines
}

/// Text inside code and HTML blocks.
fn text_of(nodes: &[Node<'_>]) -> String {
    let mut text = String::new();
    for node in nodes {
        match node {
            Node::Leaf(Event::Text(t) | Event::Html(t)) => text.push_str(t),
            Node::Leaf(_) => {}
            Node::Container(_, children) => text.push_str(&text_of(children)),
        }
    }
    text
}

/// The reference's ```` ``` ```` block, which takes no language tag. Slack formats nothing
/// inside it (Slack's answer on escaping) but still decodes the three entities, so the
/// content is escaped like any text and otherwise kept as it is.
fn code_block(content: &str) -> Vec<Line> {
    if content.is_empty() {
        return Vec::new();
    }
    let body = content.strip_suffix('\n').unwrap_or(content);
    let mut lines = vec![Line::raw("```", true)];
    for line in body.split('\n') {
        lines.push(Line::raw(&escape(&break_fences(line)), true));
    }
    lines.push(Line::raw("```", true));
    lines
}

/// A run of three backticks inside the block would end it early; a zero-width space between
/// the backticks keeps them from reading as a fence (the reference has no escape for it).
fn break_fences(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|&&c| c == CODE).count();
        if run == 0 {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        for n in 0..run {
            if n > 0 && run >= 3 {
                out.push(ZERO_WIDTH_SPACE);
            }
            out.push(CODE);
        }
        i += run;
    }
    out
}

/// Raw HTML is shown as the text it is, never interpreted, and mentions inside it stay text.
fn html_block(content: &str) -> Vec<Line> {
    let mut writer = Writer::plain();
    writer.lit(content.trim_end_matches('\n'));
    writer
        .finish()
        .into_iter()
        .map(|cells| Line {
            cells,
            ..Line::default()
        })
        .collect()
}

/// The reference has no lists: bullets and numbers are text, nested levels indented.
fn list(
    start: Option<u64>,
    items: &[Node<'_>],
    mentions: &Mentions<'_>,
    depth: usize,
) -> Vec<Line> {
    let indent = "  ".repeat(depth);
    let mut out = Vec::new();
    for (n, item) in (0u64..).zip(items) {
        let marker = match start {
            Some(first) => format!("{}. ", first.saturating_add(n)),
            None if depth == 0 => "• ".to_owned(),
            None => "◦ ".to_owned(),
        };
        let children = match item {
            Node::Container(Tag::Item, children) => flow(children, mentions, depth + 1, false),
            other => block(other, mentions, depth + 1),
        };
        let head = format!("{indent}{marker}");
        let hanging = format!("{indent}{}", " ".repeat(marker.chars().count()));
        let mut lines = children.into_iter();
        match lines.next() {
            None => out.push(Line::raw(head.trim_end(), false)),
            // An item that opens with a nested list: the marker gets its own line.
            Some(first) if first.indented => {
                out.push(Line::raw(head.trim_end(), false));
                out.push(first);
            }
            Some(mut first) => {
                first.prefix(&head);
                first.quoted = false;
                out.push(first);
            }
        }
        for mut line in lines {
            if !line.indented && !line.verbatim {
                line.prefix(&hanging);
                line.quoted = false;
            }
            out.push(line);
        }
    }
    for line in &mut out {
        line.indented = true;
    }
    out
}

/// The reference has no tables: the columns are aligned as text in a ```` ``` ```` block,
/// honouring each column's alignment.
fn table(aligns: &[Alignment], rows: &[Node<'_>]) -> Vec<Line> {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| match row {
            Node::Container(_, cells) => cells
                .iter()
                .map(|cell| match cell {
                    Node::Container(_, inlines) => plain_text(inlines),
                    Node::Leaf(_) => plain_text(std::slice::from_ref(cell)),
                })
                .collect(),
            Node::Leaf(_) => vec![plain_text(std::slice::from_ref(row))],
        })
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    if columns == 0 {
        return Vec::new();
    }
    let text_lines = table_text(aligns, &rows, |cell| cell.chars().count(), "-|-");
    let mut lines = vec![Line::raw("```", true)];
    for line in text_lines {
        lines.push(Line::raw(&escape(&break_fences(&line)), true));
    }
    lines.push(Line::raw("```", true));
    lines
}

/// Inline content as unformatted text, for a table cell: Slack formats nothing in the
/// block a table becomes, so markup would only show. Mentions cannot notify from there and
/// read `@ID`.
fn plain_text(nodes: &[Node<'_>]) -> String {
    let mut out = String::new();
    for node in nodes {
        match node {
            Node::Leaf(event) => match event {
                Event::Text(t) => {
                    for segment in segments(t) {
                        match segment {
                            Segment::Text(t) => out.push_str(t),
                            Segment::Mention(id) => {
                                out.push('@');
                                out.push_str(id);
                            }
                        }
                    }
                }
                Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => out.push_str(t),
                Event::InlineMath(t) => out.push_str(&format!("${t}$")),
                Event::DisplayMath(t) => out.push_str(&format!("$${t}$$")),
                Event::FootnoteReference(t) => out.push_str(&format!("[^{t}]")),
                Event::TaskListMarker(done) => out.push_str(if *done { "[x] " } else { "[ ] " }),
                Event::SoftBreak | Event::HardBreak => out.push(' '),
                Event::Rule => out.push_str(RULE),
                Event::Start(_) | Event::End(_) => {}
            },
            Node::Container(tag, children) => {
                let inner = plain_text(children);
                match tag {
                    Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                        if inner.is_empty() || inner == dest_url.as_ref() {
                            out.push_str(dest_url);
                        } else {
                            out.push_str(&format!("{inner} ({dest_url})"));
                        }
                    }
                    Tag::Paragraph
                    | Tag::Heading { .. }
                    | Tag::BlockQuote(_)
                    | Tag::CodeBlock(_)
                    | Tag::HtmlBlock
                    | Tag::List(_)
                    | Tag::Item
                    | Tag::FootnoteDefinition(_)
                    | Tag::DefinitionList
                    | Tag::DefinitionListTitle
                    | Tag::DefinitionListDefinition
                    | Tag::Table(_)
                    | Tag::TableHead
                    | Tag::TableRow
                    | Tag::TableCell
                    | Tag::Emphasis
                    | Tag::Strong
                    | Tag::Strikethrough
                    | Tag::Superscript
                    | Tag::Subscript
                    | Tag::MetadataBlock(_) => out.push_str(&inner),
                }
            }
        }
    }
    out.replace('\n', " ")
}

/// A style this writer has open.
struct Style {
    mark: char,
    /// Where its marker sits in the current line; `None` when the same style is already open
    /// further out (the outer marker covers it).
    open_at: Option<usize>,
}

/// Writes inline content into lines of cells.
struct Writer<'m, 'a> {
    /// `None` for raw HTML, where no mention is resolved.
    mentions: Option<&'m Mentions<'a>>,
    lines: Vec<Vec<Cell>>,
    line: Vec<Cell>,
    styles: Vec<Style>,
    /// Inside a link's label: no nested link, no mention, no line break.
    label: bool,
}

impl<'m, 'a> Writer<'m, 'a> {
    fn new(mentions: &'m Mentions<'a>) -> Self {
        Writer {
            mentions: Some(mentions),
            lines: Vec::new(),
            line: Vec::new(),
            styles: Vec::new(),
            label: false,
        }
    }

    fn plain() -> Self {
        Writer {
            mentions: None,
            lines: Vec::new(),
            line: Vec::new(),
            styles: Vec::new(),
            label: false,
        }
    }

    fn finish(mut self) -> Vec<Vec<Cell>> {
        while !self.styles.is_empty() {
            self.close();
        }
        self.lines.push(self.line);
        self.lines
    }

    fn push(&mut self, ch: char, kind: Kind) {
        self.line.push(Cell { ch, kind });
    }

    fn raw(&mut self, text: &str) {
        for ch in text.chars() {
            self.push(ch, Kind::Raw);
        }
    }

    /// The author's characters; a newline (raw HTML has them) is a line break.
    fn lit(&mut self, text: &str) {
        for ch in text.chars() {
            if ch == '\n' {
                self.line_break();
            } else {
                self.push(ch, Kind::Lit);
            }
        }
    }

    fn node(&mut self, node: &Node<'_>) {
        match node {
            Node::Leaf(event) => match event {
                Event::Text(t) => self.text(t),
                Event::Code(t) => self.code(t),
                // Raw HTML (`<!channel>` included) is shown as the text it is.
                Event::Html(t) | Event::InlineHtml(t) => self.lit(t),
                Event::InlineMath(t) => self.lit(&format!("${t}$")),
                Event::DisplayMath(t) => self.lit(&format!("$${t}$$")),
                Event::FootnoteReference(t) => self.lit(&format!("[^{t}]")),
                Event::TaskListMarker(done) => self.lit(if *done { "[x] " } else { "[ ] " }),
                // Chat convention: a soft break is a line break too.
                Event::SoftBreak | Event::HardBreak => self.line_break(),
                Event::Rule => self.lit(RULE),
                Event::Start(_) | Event::End(_) => {}
            },
            Node::Container(tag, children) => match tag {
                Tag::Strong => self.styled(BOLD, children),
                Tag::Emphasis => self.styled(ITALIC, children),
                Tag::Strikethrough => self.styled(STRIKE, children),
                Tag::Link {
                    link_type,
                    dest_url,
                    ..
                } => match link_type {
                    // The label would only repeat the address.
                    LinkType::Autolink => self.link(dest_url, None),
                    LinkType::Email => self.link(&format!("mailto:{dest_url}"), Some(children)),
                    LinkType::Inline
                    | LinkType::Reference
                    | LinkType::ReferenceUnknown
                    | LinkType::Collapsed
                    | LinkType::CollapsedUnknown
                    | LinkType::Shortcut
                    | LinkType::ShortcutUnknown
                    | LinkType::WikiLink { .. } => self.link(dest_url, Some(children)),
                },
                // An image becomes a link to it, its alt text the label.
                Tag::Image { dest_url, .. } => self.link(dest_url, Some(children)),
                Tag::Paragraph
                | Tag::Heading { .. }
                | Tag::BlockQuote(_)
                | Tag::CodeBlock(_)
                | Tag::HtmlBlock
                | Tag::List(_)
                | Tag::Item
                | Tag::FootnoteDefinition(_)
                | Tag::DefinitionList
                | Tag::DefinitionListTitle
                | Tag::DefinitionListDefinition
                | Tag::Table(_)
                | Tag::TableHead
                | Tag::TableRow
                | Tag::TableCell
                | Tag::Superscript
                | Tag::Subscript
                | Tag::MetadataBlock(_) => self.nodes(children),
            },
        }
    }

    fn nodes(&mut self, nodes: &[Node<'_>]) {
        for node in nodes {
            self.node(node);
        }
    }

    /// Text with the contract's `<@ID>` tokens: a real mention (the reference's `<@U…>`) only
    /// for an allowed id, else `@ID`, which notifies nobody because we never send
    /// `link_names` (the message-formatting page).
    fn text(&mut self, text: &str) {
        let Some(mentions) = self.mentions else {
            self.lit(text);
            return;
        };
        for segment in segments(text) {
            match segment {
                Segment::Text(t) => self.lit(t),
                // A mention cannot sit inside a link's `<…>`.
                Segment::Mention(id) if mentions.allows(id) && !self.label => {
                    self.raw(&format!("<@{}>", escape(id)));
                }
                Segment::Mention(id) => self.lit(&format!("@{id}")),
            }
        }
    }

    fn code(&mut self, code: &str) {
        self.push(CODE, Kind::Open);
        for ch in code.chars() {
            match ch {
                CODE => self.push(GRAVE_LOOKALIKE, Kind::Raw),
                other => self.raw(&escape_char(other)),
            }
        }
        self.push(CODE, Kind::Close);
    }

    fn styled(&mut self, mark: char, children: &[Node<'_>]) {
        self.open(mark);
        self.nodes(children);
        self.close();
    }

    /// Styles combine (the Help Center's `*I am _very_ excited*`), but the same style inside
    /// itself would close it early: the outer marker covers it.
    fn open(&mut self, mark: char) {
        if self.styles.iter().any(|s| s.mark == mark) {
            self.styles.push(Style {
                mark,
                open_at: None,
            });
            return;
        }
        self.styles.push(Style {
            mark,
            open_at: Some(self.line.len()),
        });
        self.push(mark, Kind::Open);
    }

    fn close(&mut self) {
        let Some(style) = self.styles.pop() else {
            return;
        };
        if let Some(at) = style.open_at {
            self.end_style(style.mark, at);
        }
    }

    /// Closes the style whose marker is at `at`. Slack styles only text that touches its
    /// markers (a space on either side of a marker prevents formatting: Slack's answer on
    /// escaping), so whitespace at either end moves outside, and a style with no text is
    /// dropped.
    fn end_style(&mut self, mark: char, at: usize) {
        let mut end = self.line.len();
        while end > at + 1 && self.line[end - 1].ch.is_whitespace() {
            end -= 1;
        }
        if end == at + 1 {
            self.line.remove(at);
            return;
        }
        self.line.insert(
            end,
            Cell {
                ch: mark,
                kind: Kind::Close,
            },
        );
        let mut open = at;
        while self.line[open + 1].ch.is_whitespace() {
            self.line.swap(open, open + 1);
            open += 1;
        }
    }

    /// Slack styles do not reach across lines, so open styles are closed at the end of the
    /// line and opened again on the next.
    fn line_break(&mut self) {
        if self.label {
            self.push(' ', Kind::Lit);
            return;
        }
        let open: Vec<(usize, char, usize)> = self
            .styles
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.open_at.map(|at| (i, s.mark, at)))
            .collect();
        for &(_, mark, at) in open.iter().rev() {
            self.end_style(mark, at);
        }
        let line = std::mem::take(&mut self.line);
        self.lines.push(line);
        for &(i, mark, _) in &open {
            self.styles[i].open_at = Some(self.line.len());
            self.push(mark, Kind::Open);
        }
    }

    /// The reference's `<url|text>`. The address is escaped like text (Slack decodes the
    /// entities, so it stays exactly the same address) and a `|` in it, which would end it,
    /// is percent-encoded. Without a label (or inside another label) it is `<url>`.
    ///
    /// Only an absolute address becomes a link: Slack reads `<@…>`, `<#…>` and `<!…>` as a
    /// mention, a channel or a command such as `<!channel>` (the message-formatting page), so
    /// `[x](!channel)` must not become `<!channel|x>`. Any other address has no meaning in
    /// Slack and is shown after its label as text.
    fn link(&mut self, url: &str, label: Option<&[Node<'_>]>) {
        if self.label {
            if let Some(children) = label {
                self.nodes(children);
            }
            return;
        }
        if !has_scheme(url) {
            let labelled = label.is_some_and(|children| !plain_text(children).trim().is_empty());
            if let Some(children) = label {
                self.nodes(children);
            }
            if !url.is_empty() {
                self.lit(&if labelled {
                    format!(" ({url})")
                } else {
                    url.to_owned()
                });
            }
            return;
        }
        self.raw(&format!("<{}", escape_url(url)));
        if let Some(children) = label {
            let bar = self.line.len();
            self.push('|', Kind::Raw);
            self.label = true;
            self.nodes(children);
            self.label = false;
            if self.line[bar + 1..].iter().all(|c| c.ch.is_whitespace()) {
                self.line.truncate(bar);
            }
        }
        self.push('>', Kind::Raw);
    }
}

/// Slack's three control characters as the entities the reference asks for, and nothing
/// else ("only the specific characters shown above will be decoded").
fn escape(text: &str) -> String {
    text.chars().map(escape_char).collect()
}

fn escape_char(ch: char) -> String {
    match ch {
        '&' => "&amp;".to_owned(),
        '<' => "&lt;".to_owned(),
        '>' => "&gt;".to_owned(),
        other => other.to_string(),
    }
}

/// An address for `<url|…>`: escaped like text, with the characters that would end it or
/// split it (`|`, whitespace) percent-encoded, which a browser treats as the same address.
fn escape_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for ch in url.chars() {
        if ch == '|' || ch.is_whitespace() || ch.is_control() {
            let mut buf = [0u8; 4];
            for byte in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{byte:02X}"));
            }
        } else {
            out.push_str(&escape_char(ch));
        }
    }
    out
}

/// Whether `url` starts with a URI scheme (RFC 3986: a letter, then letters, digits, `+`,
/// `-` or `.`, then `:`).
fn has_scheme(url: &str) -> bool {
    let Some((scheme, _)) = url.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_marker(ch: char) -> bool {
    matches!(ch, BOLD | ITALIC | STRIKE | CODE)
}

/// A character Slack reads as part of a word (a marker next to one is mid-word).
fn is_word(ch: char) -> bool {
    ch.is_alphanumeric() || ch == SOFT_HYPHEN
}

/// Bare addresses in the author's text: Slack turns them into links itself (the
/// message-formatting page), so the markers in them are not styles and must stay untouched.
fn bare_urls(cells: &[Cell]) -> Vec<bool> {
    let starts_url = |i: usize| {
        ["https://", "http://", "www."].iter().any(|scheme| {
            scheme.chars().enumerate().all(|(k, s)| {
                cells
                    .get(i + k)
                    .is_some_and(|c| c.kind == Kind::Lit && c.ch.eq_ignore_ascii_case(&s))
            })
        })
    };
    let mut url = vec![false; cells.len()];
    let mut i = 0;
    while i < cells.len() {
        let boundary = i == 0 || !cells[i - 1].ch.is_alphanumeric();
        if !(boundary && starts_url(i)) {
            i += 1;
            continue;
        }
        while i < cells.len()
            && cells[i].kind == Kind::Lit
            && !cells[i].ch.is_whitespace()
            && !matches!(cells[i].ch, '<' | '>' | '"')
        {
            url[i] = true;
            i += 1;
        }
    }
    url
}

/// Writes one complete line.
///
/// Slack has no escape for `*`, `_`, `~` and `` ` `` (Slack's answer on escaping: a backslash
/// does not work). A style needs an opening marker before text and a closing one after it on
/// the same line, and Slack applies a marker only at a word boundary: one with a space on
/// both sides (Slack's answer) or inside a word does nothing. So an author's marker is left
/// as it is when it can neither open nor close a style, or when nothing on the line could
/// pair with it; otherwise it is put between soft hyphens, which makes it mid-word
/// (jsx-slack), invisibly. A zero-width space would not do: Slack reads it as a boundary
/// and would format (jsx-slack).
///
/// Our own markers get the opposite treatment: CommonMark allows emphasis inside a word,
/// Slack shows such a marker literally (jsx-slack), so next to a letter a zero-width space
/// gives it the boundary Slack needs.
///
/// A `>` the author wrote that would start the line would make it a quote even escaped
/// (jsx-slack); a soft hyphen in front keeps it text.
fn finish(line: &Line) -> String {
    let cells = &line.cells;
    let url = bare_urls(cells);
    let prev = |i: usize| i.checked_sub(1).map(|j| cells[j].ch);
    let next = |i: usize| cells.get(i + 1).map(|c| c.ch);
    // Whether the marker at `i` could open or close a style, by its neighbours.
    let opens = |i: usize| match cells[i].kind {
        Kind::Open => true,
        Kind::Close | Kind::Raw => false,
        Kind::Lit => !prev(i).is_some_and(is_word) && next(i).is_some_and(|c| !c.is_whitespace()),
    };
    let closes = |i: usize| match cells[i].kind {
        Kind::Close => true,
        Kind::Open | Kind::Raw => false,
        Kind::Lit => prev(i).is_some_and(|c| !c.is_whitespace()) && !next(i).is_some_and(is_word),
    };
    let candidate = |i: usize| is_marker(cells[i].ch) && !url[i];
    // Per marker character: the first place a style could open and the last it could close.
    let mut first_open: Vec<(char, usize)> = Vec::new();
    let mut last_close: Vec<(char, usize)> = Vec::new();
    for i in (0..cells.len()).filter(|&i| candidate(i)) {
        let ch = cells[i].ch;
        if opens(i) && !first_open.iter().any(|&(c, _)| c == ch) {
            first_open.push((ch, i));
        }
        if closes(i) {
            last_close.retain(|&(c, _)| c != ch);
            last_close.push((ch, i));
        }
    }
    let guard: Vec<bool> = (0..cells.len())
        .map(|i| {
            let ch = cells[i].ch;
            let closer_after = last_close.iter().any(|&(c, j)| c == ch && j > i);
            let opener_before = first_open.iter().any(|&(c, j)| c == ch && j < i);
            cells[i].kind == Kind::Lit
                && candidate(i)
                && ((opens(i) && closer_after) || (closes(i) && opener_before))
        })
        .collect();
    let quote_at = cells
        .iter()
        .position(|c| !c.ch.is_whitespace())
        .filter(|&i| cells[i].kind == Kind::Lit && cells[i].ch == '>');

    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        match cell.kind {
            Kind::Open => {
                if out.chars().next_back().is_some_and(is_word) {
                    out.push(ZERO_WIDTH_SPACE);
                }
                out.push(cell.ch);
            }
            Kind::Close => {
                out.push(cell.ch);
                let after = cells.get(i + 1);
                let word_after = after.is_some_and(|c| is_word(c.ch) || guard[i + 1]);
                let opens_after = after.is_some_and(|c| c.kind == Kind::Open);
                if word_after || opens_after {
                    out.push(ZERO_WIDTH_SPACE);
                }
            }
            Kind::Lit => {
                if quote_at == Some(i) {
                    out.push(SOFT_HYPHEN);
                }
                if guard[i] {
                    out.push(SOFT_HYPHEN);
                    out.push(cell.ch);
                    out.push(SOFT_HYPHEN);
                } else {
                    out.push_str(&escape_char(cell.ch));
                }
            }
            Kind::Raw => out.push(cell.ch),
        }
    }
    if line.verbatim {
        out
    } else {
        out.trim_end().to_owned()
    }
}

/// Raw text as Slack shows it literally: its three control characters as entities ("Escaping
/// text" in Slack's formatting reference), `&` first so no entity is escaped twice.
pub fn plain(text: &str) -> Rendered {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Rendered {
        length: out.chars().count(),
        text: out,
        html: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_escapes_only_its_control_characters() {
        assert_eq!(
            plain("<!channel> & <@U123> said a > b &amp; *bold*").text,
            "&lt;!channel&gt; &amp; &lt;@U123&gt; said a &gt; b &amp;amp; *bold*"
        );
    }

    const SHY: char = SOFT_HYPHEN;
    const ZWSP: char = ZERO_WIDTH_SPACE;

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn slack(markdown: &str) -> String {
        let allowed = ids(&["U0PERSON01"]);
        render(markdown, &Mentions::new(&allowed)).text
    }

    #[test]
    fn sample_renders_exactly() {
        let sample = include_str!("sample.md");
        let allowed = ids(&["U0PERSON01"]);
        let rendered = render(sample, &Mentions::new(&allowed));
        println!("{}", rendered.text);
        let expected = "\
*Budget plan*

Here is the *draft* for _Q3_, with ~old~ new numbers and `inline code`.
A second line of the same paragraph.

*Steps*

1. Collect receipts
2. Sort them by <https://example.com/cats?a=1&amp;b=2|category>
  ◦ nested _item_
3. Done

• one
• two

> A quote with &lt;b&gt;raw html&lt;/b&gt; &amp; a &lt;!channel&gt; and @everyone @here @room.

```
fn main() { println!(\"&lt;not html&gt; &amp; {}\", 1 &lt; 2); }
```

```
Item         | Cost
-------------|-----
Rent         | 1200
Food &amp; drink |  300
```

Thanks <@U0PERSON01> and @U0OTHER999! Escapes: 5 * 3 _ 2 &lt; 4 &gt; 1 &amp; done.
<https://example.com/chart.png|chart>";
        assert_eq!(rendered.text, expected);
        assert_eq!(rendered.html, None);
        assert_eq!(rendered.length, expected.chars().count());
    }

    #[test]
    fn rendering_is_deterministic() {
        let sample = include_str!("sample.md");
        assert_eq!(slack(sample), slack(sample));
    }

    #[test]
    fn control_characters_become_entities() {
        assert_eq!(slack("a & b < c > d"), "a &amp; b &lt; c &gt; d");
        assert_eq!(slack("x &lt;y&gt;"), "x &lt;y&gt;");
    }

    #[test]
    fn source_entities_are_decoded_then_escaped_again() {
        assert_eq!(slack("&amp; &copy; &lt;b&gt; &#42;"), "&amp; © &lt;b&gt; *");
    }

    #[test]
    fn markers_that_cannot_pair_stay_as_written() {
        assert_eq!(slack("5 * 3 _ 2 ~ 1"), "5 * 3 _ 2 ~ 1");
        assert_eq!(
            slack("snake_case_name and a\\*b\\*c"),
            "snake_case_name and a*b*c"
        );
        assert_eq!(
            slack("~/a and ~/b, *.rs and *.toml"),
            "~/a and ~/b, *.rs and *.toml"
        );
        assert_eq!(slack("a lone \\*star"), "a lone *star");
    }

    #[test]
    fn markers_that_could_pair_are_neutralised_with_soft_hyphens() {
        let star = format!("{SHY}*{SHY}");
        assert_eq!(slack("\\*not bold\\*"), format!("{star}not bold{star}"));
        let under = format!("{SHY}_{SHY}");
        assert_eq!(slack("\\_x\\_"), format!("{under}x{under}"));
        let tilde = format!("{SHY}~{SHY}");
        assert_eq!(slack("\\~x\\~"), format!("{tilde}x{tilde}"));
        let tick = format!("{SHY}`{SHY}");
        assert_eq!(slack("\\`x\\`"), format!("{tick}x{tick}"));
        // Three backticks would open a block; each one is neutralised.
        assert_eq!(slack("\\`\\`\\`"), tick.repeat(3));
    }

    #[test]
    fn a_literal_marker_next_to_our_own_style_is_neutralised() {
        assert_eq!(slack("**\\*x**"), format!("*{SHY}*{SHY}x*"));
        // Spaces on both sides already keep it inert.
        assert_eq!(slack("**5 * 3**"), "*5 * 3*");
    }

    #[test]
    fn markers_in_bare_addresses_are_left_alone() {
        assert_eq!(
            slack("see https://x.com/~a/b_ and _c_"),
            "see https://x.com/~a/b_ and _c_"
        );
    }

    #[test]
    fn a_literal_gt_that_would_start_a_quote_is_neutralised() {
        assert_eq!(slack("\\> not a quote"), format!("{SHY}&gt; not a quote"));
        assert_eq!(slack("a\n\\>b"), format!("a\n{SHY}&gt;b"));
        assert_eq!(slack("a > b"), "a &gt; b");
    }

    #[test]
    fn nested_emphasis_combines_styles() {
        assert_eq!(slack("***both***"), "_*both*_");
        assert_eq!(slack("**bold _and italic_**"), "*bold _and italic_*");
        assert_eq!(slack("**outer **inner** outer**"), "*outer inner outer*");
        assert_eq!(slack("~~gone~~ and ~kept~"), "~gone~ and ~kept~");
    }

    #[test]
    fn emphasis_inside_a_word_gets_a_boundary() {
        assert_eq!(slack("un*frig*gable"), format!("un{ZWSP}_frig_{ZWSP}gable"));
        assert_eq!(slack("**a**_b_"), format!("*a*{ZWSP}_b_"));
    }

    #[test]
    fn emphasis_next_to_cjk_text_gets_a_boundary() {
        assert_eq!(
            slack("これは**太字**です"),
            format!("これは{ZWSP}*太字*{ZWSP}です")
        );
    }

    #[test]
    fn markers_in_a_link_label_are_neutralised_too() {
        let star = format!("{SHY}*{SHY}");
        assert_eq!(
            slack("[\\*a\\*](https://x.com)"),
            format!("<https://x.com|{star}a{star}>")
        );
    }

    #[test]
    fn styles_are_reopened_after_a_line_break() {
        assert_eq!(slack("**one\ntwo**"), "*one*\n*two*");
        assert_eq!(slack("*a  \nb*"), "_a_\n_b_");
    }

    #[test]
    fn links_keep_their_address_and_escape_it() {
        assert_eq!(
            slack("[**bold** & <i>](https://x.com/?a=1&b=2)"),
            "<https://x.com/?a=1&amp;b=2|*bold* &amp; &lt;i&gt;>"
        );
        assert_eq!(slack("[a](<https://x.com/a)b>)"), "<https://x.com/a)b|a>");
        assert_eq!(
            slack("[a > b | c](https://x.com/?q=1|2>3)"),
            "<https://x.com/?q=1%7C2&gt;3|a &gt; b | c>"
        );
        assert_eq!(slack("<https://x.com/a_b>"), "<https://x.com/a_b>");
        assert_eq!(slack("[](https://x.com)"), "<https://x.com>");
        assert_eq!(slack("<me@x.com>"), "<mailto:me@x.com|me@x.com>");
        assert_eq!(slack("[a](<https://x.com/a b>)"), "<https://x.com/a%20b|a>");
    }

    #[test]
    fn only_absolute_addresses_become_links() {
        assert_eq!(slack("[x](!channel)"), "x (!channel)");
        assert_eq!(slack("[x](@U0PERSON01)"), "x (@U0PERSON01)");
        assert_eq!(slack("[x](#C123)"), "x (#C123)");
        assert_eq!(slack("[docs](/docs/a_b)"), "docs (/docs/a_b)");
        assert_eq!(slack("![](!here)"), "!here");
        assert_eq!(slack("[x]()"), "x");
        assert_eq!(slack("[a\nb](/p)"), "a\nb (/p)");
        assert_eq!(slack("[x](mailto:a@b.c)"), "<mailto:a@b.c|x>");
    }

    #[test]
    fn images_become_links() {
        assert_eq!(
            slack("![a chart](https://x.com/c.png)"),
            "<https://x.com/c.png|a chart>"
        );
        assert_eq!(slack("![](https://x.com/c.png)"), "<https://x.com/c.png>");
        assert_eq!(
            slack("[![logo](https://x.com/l.png)](https://x.com)"),
            "<https://x.com|logo>"
        );
    }

    #[test]
    fn code_block_keeps_content_and_breaks_inner_fences() {
        let markdown = "~~~python\n```\n*not bold* _x_ <@U0PERSON01> & <b>\n```\n~~~";
        let expected = format!(
            "```\n`{ZWSP}`{ZWSP}`\n*not bold* _x_ &lt;@U0PERSON01&gt; &amp; &lt;b&gt;\n`{ZWSP}`{ZWSP}`\n```"
        );
        assert_eq!(slack(markdown), expected);
        assert_eq!(
            slack("    indented\n      more"),
            "```\nindented\n  more\n```"
        );
        assert_eq!(slack("```\n``two``\n```"), "```\n``two``\n```");
    }

    #[test]
    fn inline_code_stays_inline_with_its_backticks_replaced() {
        assert_eq!(slack("`` a ` b ``"), format!("`a {GRAVE_LOOKALIKE} b`"));
        assert_eq!(
            slack("`*x* <@U0PERSON01> & <b>`"),
            "`*x* &lt;@U0PERSON01&gt; &amp; &lt;b&gt;`"
        );
        assert_eq!(slack("x`y`z"), format!("x{ZWSP}`y`{ZWSP}z"));
    }

    #[test]
    fn only_allowed_mentions_notify() {
        assert_eq!(slack("hi <@U0PERSON01>"), "hi <@U0PERSON01>");
        assert_eq!(slack("hi <@U0OTHER999>"), "hi @U0OTHER999");
        let nobody: Vec<String> = Vec::new();
        assert_eq!(
            render("hi <@U0PERSON01>", &Mentions::new(&nobody)).text,
            "hi @U0PERSON01"
        );
        assert_eq!(slack("`<@U0PERSON01>`"), "`&lt;@U0PERSON01&gt;`");
        assert_eq!(slack("<@> and <@ a>"), "&lt;@&gt; and &lt;@ a&gt;");
        // A link's label cannot hold a mention.
        assert_eq!(
            slack("[<@U0PERSON01>](https://x.com)"),
            "<https://x.com|@U0PERSON01>"
        );
        // Neither can raw HTML.
        assert_eq!(
            slack("<div>\n<@U0PERSON01>\n</div>"),
            "&lt;div&gt;\n&lt;@U0PERSON01&gt;\n&lt;/div&gt;"
        );
    }

    #[test]
    fn broadcasts_never_notify() {
        assert_eq!(
            slack("@everyone @here @channel @room"),
            "@everyone @here @channel @room"
        );
        assert_eq!(
            slack("<!channel> <!here> <!everyone>"),
            "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt;"
        );
        assert_eq!(slack("<!subteam^S1>"), "&lt;!subteam^S1&gt;");
    }

    #[test]
    fn headings_are_bold_lines() {
        assert_eq!(slack("# Title"), "*Title*");
        assert_eq!(slack("##### Small **bold** _it_"), "*Small bold _it_*");
        assert_eq!(slack("Setext\n===\n\ntext"), "*Setext*\n\ntext");
        assert_eq!(slack("#"), "");
    }

    #[test]
    fn lists_are_bullets_and_numbers() {
        assert_eq!(
            slack("3. three\n4. four\n5. five"),
            "3. three\n4. four\n5. five"
        );
        assert_eq!(
            slack("- a\n  - b\n    - c\n- d"),
            "• a\n  ◦ b\n    ◦ c\n• d"
        );
        assert_eq!(slack("- a\n\n  second\n- b"), "• a\n  second\n• b");
        assert_eq!(slack("1. a\n   1. b"), "1. a\n  1. b");
        assert_eq!(slack("- - a"), "•\n  ◦ a");
        assert_eq!(slack("-"), "•");
        assert_eq!(
            slack("- item\n\n  ```\n  code\n  ```"),
            "• item\n```\ncode\n```"
        );
    }

    #[test]
    fn block_quotes_are_native() {
        assert_eq!(slack("> one\n> two"), "> one\n> two");
        assert_eq!(slack("> a\n>\n> b"), "> a\n>\n> b");
        assert_eq!(slack("> a\n> > b"), "> a\n>\n> b");
        assert_eq!(slack("> - x\n> - y"), "> • x\n> • y");
        assert_eq!(slack("> **a\n> b**"), "> *a*\n> *b*");
    }

    #[test]
    fn tables_are_aligned_columns_in_a_block() {
        let markdown = "| left | mid | right |\n| :--- | :-: | ---: |\n| a | b | c |\n| long one | `x` | [l](https://x.com) |";
        let expected = "\
```
left     | mid |             right
---------|-----|------------------
a        |  b  |                 c
long one |  x  | l (https://x.com)
```";
        assert_eq!(slack(markdown), expected);
    }

    #[test]
    fn table_cells_are_plain_text_escaped() {
        let markdown =
            "| who | what |\n|---|---|\n| <@U0PERSON01> | **x** & <y> |\n| ``a```b`` | |";
        let expected = format!(
            "```\nwho         | what\n------------|--------\n@U0PERSON01 | x &amp; &lt;y&gt;\na`{ZWSP}`{ZWSP}`b       |\n```"
        );
        assert_eq!(slack(markdown), expected);
    }

    #[test]
    fn empty_input_renders_nothing() {
        let allowed = ids(&[]);
        for input in ["", "   ", "\n\n\t\n", "<!-- -->"] {
            let rendered = render(input, &Mentions::new(&allowed));
            if input == "<!-- -->" {
                // An HTML comment is raw HTML: shown, not dropped.
                assert_eq!(rendered.text, "&lt;!-- --&gt;");
                continue;
            }
            assert_eq!(rendered.text, "");
            assert_eq!(rendered.length, 0);
        }
    }

    #[test]
    fn hard_and_soft_breaks_are_line_breaks() {
        assert_eq!(slack("a  \nb\\\nc\nd"), "a\nb\nc\nd");
    }

    #[test]
    fn raw_html_is_literal() {
        assert_eq!(slack("a <b>bold</b> c"), "a &lt;b&gt;bold&lt;/b&gt; c");
        assert_eq!(
            slack("<table>\n<tr><td>x</td></tr>\n</table>"),
            "&lt;table&gt;\n&lt;tr&gt;&lt;td&gt;x&lt;/td&gt;&lt;/tr&gt;\n&lt;/table&gt;"
        );
    }

    #[test]
    fn thematic_break_is_a_line_of_dashes() {
        assert_eq!(slack("a\n\n---\n\nb"), format!("a\n\n{RULE}\n\nb"));
    }

    #[test]
    fn absurd_nesting_is_flattened_not_a_stack_overflow() {
        let quotes = format!("{} deep", ">".repeat(100_000));
        assert_eq!(slack(&quotes), "> deep");
        let emphasis = format!("{}x{}", "*a ".repeat(5_000), " b*".repeat(5_000));
        assert!(slack(&emphasis).contains('x'));
        let mixed = format!("{}**[x](https://x.com)**", "> - ".repeat(5_000));
        assert!(slack(&mixed).ends_with("> x"));
        let lists: String = (0..500)
            .map(|i| format!("{}- x\n", "  ".repeat(i)))
            .collect();
        assert!(slack(&lists).starts_with("• x\n  ◦ x"));
    }

    #[test]
    fn length_counts_characters() {
        let rendered = render("héllo 👋🏽 *日本*", &Mentions::default());
        assert_eq!(rendered.text, "héllo 👋🏽 _日本_");
        assert_eq!(rendered.length, 13);
        let escaped = render("a & b", &Mentions::default());
        assert_eq!(escaped.length, "a &amp; b".chars().count());
    }
}
