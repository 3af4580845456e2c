//! Content as people see it on each platform, through the whole pipeline and read back from
//! the spec-validating fakes: the fixed Markdown sample (`workers/src/render/sample.md`:
//! headings, lists, a code block, links, emphasis, a table, raw HTML, broadcasts, mentions,
//! characters that need escaping) rendered per platform, only the allowed user notified; a
//! 12,000-character answer with code blocks split without breaking one; broadcasts notifying
//! nobody; `format: plain` shown as written. The exact rendering of every construct is the
//! renderers' unit tests' (`workers/src/render/`); these check what reached the platform.

use serde_json::Value;
use threadline_schemas::{CompletionReported, ContentFormat, ConversationRef};
use threadline_tests::events::completion;
use threadline_tests::fakes::discord::DiscordMessage;
use threadline_tests::fakes::telegram::TelegramMessage;
use threadline_tests::pipeline::Pipeline;

const SAMPLE: &str = include_str!("../../workers/src/render/sample.md");
/// The sample's mention of the allowed user, replaced by each platform's id for them.
const ALLOWED_TOKEN: &str = "<@U0PERSON01>";

const DISCORD_USER: &str = "80351110224678912";
const SLACK_USER: &str = "U0PERSON01";
const TELEGRAM_USER: &str = "4242";
const MATRIX_USER: &str = "@person:fake";

/// A session bound to a new thread on `channel`.
async fn thread(p: &Pipeline, channel: &str) -> (String, ConversationRef) {
    p.session_in_thread(&Pipeline::conversation(channel)).await
}

fn with_mentions(key: &str, content: &str, mentions: &[&str]) -> CompletionReported {
    let mut done = completion(key, content);
    done.mentions = mentions.iter().map(|m| (*m).to_owned()).collect();
    done
}

fn sample_for(user: &str) -> String {
    SAMPLE.replace(ALLOWED_TOKEN, &format!("<@{user}>"))
}

fn parent(thread: &ConversationRef) -> &str {
    thread.parent_conversation_id.as_deref().expect("a thread")
}

fn discord_posts(p: &Pipeline, thread: &ConversationRef) -> Vec<DiscordMessage> {
    p.discord.messages_in(&thread.conversation_id)
}

fn telegram_posts(p: &Pipeline, thread: &ConversationRef) -> Vec<TelegramMessage> {
    let num = |s: &str| s.parse::<i64>().expect("numeric telegram id");
    p.telegram
        .messages_in(num(parent(thread)), Some(num(&thread.conversation_id)))
}

fn slack_texts(p: &Pipeline, thread: &ConversationRef) -> Vec<String> {
    p.slack
        .messages_in(parent(thread), Some(&thread.conversation_id))
        .into_iter()
        .map(|m| m.text)
        .collect()
}

fn matrix_contents(p: &Pipeline, thread: &ConversationRef) -> Vec<Value> {
    p.matrix
        .events_in(parent(thread), Some(&thread.conversation_id))
        .into_iter()
        .map(|e| e.content)
        .collect()
}

/// The text of each `kind` entity of `m`.
fn entity_texts(m: &TelegramMessage, kind: &str) -> Vec<String> {
    let units: Vec<u16> = m.text.encode_utf16().collect();
    m.entities
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| String::from_utf16_lossy(&units[e.offset..e.offset + e.length]))
        .collect()
}

#[tokio::test]
async fn the_sample_reaches_each_platform_in_its_markup_notifying_only_the_allowed_user() {
    let p = Pipeline::start().await;

    // Discord: its Markdown, and `allowed_mentions` naming the one user.
    let (key, t) = thread(&p, "discord").await;
    p.deliver(&with_mentions(
        &key,
        &sample_for(DISCORD_USER),
        &[DISCORD_USER],
    ))
    .await;
    let posts = discord_posts(&p, &t);
    assert_eq!(posts.len(), 1, "one part");
    let content = &posts[0].content;
    for expected in [
        "# Budget plan\n",
        "**draft**",
        "~~old~~",
        "[category](https://example.com/cats?a=1&b=2)",
        "```rust\nfn main() { println!(\"<not html> & {}\", 1 < 2); }\n```",
        "\\<!channel>",
        "\\<b>raw html\\</b>",
        "Item         | Cost",
        &format!("<@{DISCORD_USER}>"),
        "@U0OTHER999",
    ] {
        assert!(
            content.contains(expected),
            "{expected:?} missing in:\n{content}"
        );
    }
    assert_eq!(posts[0].notified, vec![format!("user:{DISCORD_USER}")]);

    // Slack: mrkdwn, escaped, the one user as `<@U…>`.
    let (key, t) = thread(&p, "slack").await;
    p.deliver(&with_mentions(&key, &sample_for(SLACK_USER), &[SLACK_USER]))
        .await;
    let texts = slack_texts(&p, &t);
    assert_eq!(texts.len(), 1);
    let text = &texts[0];
    for expected in [
        "*Budget plan*",
        "*draft*",
        "~old~",
        "<https://example.com/cats?a=1&amp;b=2|category>",
        "&lt;!channel&gt;",
        "&lt;b&gt;raw html&lt;/b&gt;",
        "```\nfn main() { println!(\"&lt;not html&gt; &amp; {}\", 1 &lt; 2); }\n```",
        "<@U0PERSON01>",
        "@U0OTHER999",
    ] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }
    assert!(
        !text.contains("<@U0OTHER999>") && !text.contains("<!"),
        "{text}"
    );

    // Telegram: HTML the fake parsed as Telegram does: entities, one text mention.
    let (key, t) = thread(&p, "telegram").await;
    p.deliver(&with_mentions(
        &key,
        &sample_for(TELEGRAM_USER),
        &[TELEGRAM_USER],
    ))
    .await;
    let posts = telegram_posts(&p, &t);
    assert_eq!(posts.len(), 1);
    let m = &posts[0];
    assert!(m.text.starts_with("Budget plan\n"), "{}", m.text);
    assert!(
        m.text.contains("<b>raw html</b> & a <!channel>"),
        "{}",
        m.text
    );
    assert!(entity_texts(m, "bold").contains(&"Budget plan".to_owned()));
    assert!(entity_texts(m, "bold").contains(&"draft".to_owned()));
    assert_eq!(entity_texts(m, "strikethrough"), vec!["old"]);
    assert!(entity_texts(m, "code").contains(&"inline code".to_owned()));
    let pre: Vec<_> = m.entities.iter().filter(|e| e.kind == "pre").collect();
    assert!(pre.iter().any(|e| e.language.as_deref() == Some("rust")));
    assert!(m
        .entities
        .iter()
        .any(|e| e.url.as_deref() == Some("https://example.com/cats?a=1&b=2")));
    assert_eq!(m.text_mentions(), vec![4242]);
    assert!(
        m.mentions().is_empty(),
        "no @username detected: {:?}",
        m.mentions()
    );

    // Matrix: `formatted_body` HTML, a plain `body`, `m.mentions` naming the one user.
    let (key, t) = thread(&p, "matrix").await;
    p.deliver(&with_mentions(
        &key,
        &sample_for(MATRIX_USER),
        &[MATRIX_USER],
    ))
    .await;
    let contents = matrix_contents(&p, &t);
    assert_eq!(contents.len(), 1);
    let c = &contents[0];
    assert_eq!(c["format"], "org.matrix.custom.html");
    let html = c["formatted_body"].as_str().expect("formatted_body");
    for expected in [
        "<h1>Budget plan</h1>",
        "<strong>draft</strong>",
        "<code class=\"language-rust\">",
        "<table>",
        "&lt;!channel&gt;",
        "<a href=\"https://matrix.to/#/@person:fake\">",
    ] {
        assert!(html.contains(expected), "{expected:?} missing in:\n{html}");
    }
    let body = c["body"].as_str().expect("body");
    assert!(
        body.starts_with("Budget plan\n") && !body.contains("<@"),
        "{body}"
    );
    assert_eq!(
        c["m.mentions"],
        serde_json::json!({"user_ids": [MATRIX_USER]})
    );
}

/// About 12,000 characters: prose, lists and code blocks of 30 numbered lines each.
fn long_answer() -> (String, Vec<String>) {
    let mut md = String::from("# Report\n\n");
    let mut code_lines = Vec::new();
    for section in 0..12 {
        md.push_str(&format!(
            "## Part {section}\n\nSome **findings** for part {section}, with a [link](https://example.com/{section}) and `code`. {}\n\n- first point\n- second point\n\n```python\n",
            "More words follow here. ".repeat(8)
        ));
        for line in 0..30 {
            let l = format!("value_{section}_{line:02} = compute({section}, {line})  # step");
            md.push_str(&l);
            md.push('\n');
            code_lines.push(l);
        }
        md.push_str("```\n\n");
    }
    (md, code_lines)
}

/// Each code line appears exactly once across `parts`, each inside a fenced block.
fn every_code_line_once(parts: &[String], lines: &[String], fence: &str) {
    for part in parts {
        assert_eq!(
            part.matches(fence).count() % 2,
            0,
            "a part with an open code block:\n{part}"
        );
    }
    for line in lines {
        let found: usize = parts.iter().map(|p| p.matches(line.as_str()).count()).sum();
        assert_eq!(found, 1, "{line} appears {found} times");
    }
}

#[tokio::test]
async fn a_twelve_thousand_character_answer_splits_without_breaking_a_code_block() {
    let p = Pipeline::start().await;
    let (md, lines) = long_answer();
    assert!(md.chars().count() >= 12_000, "{}", md.chars().count());

    let (key, t) = thread(&p, "discord").await;
    p.deliver(&completion(&key, &md)).await;
    let parts: Vec<String> = discord_posts(&p, &t)
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert!(parts.len() >= 7, "{} parts", parts.len());
    assert!(parts.iter().all(|c| c.chars().count() <= 2000));
    every_code_line_once(&parts, &lines, "```");

    let (key, t) = thread(&p, "slack").await;
    p.deliver(&completion(&key, &md)).await;
    let parts = slack_texts(&p, &t);
    assert!(parts.len() >= 3);
    assert!(parts.iter().all(|c| c.chars().count() <= 4000));
    every_code_line_once(&parts, &lines, "```");

    let (key, t) = thread(&p, "telegram").await;
    p.deliver(&completion(&key, &md)).await;
    let posts = telegram_posts(&p, &t);
    assert!(posts.len() >= 3);
    // The fake refused any part over 4096 visible characters or with broken HTML; every
    // code line is inside a `pre` entity, once.
    let pre: Vec<String> = posts.iter().flat_map(|m| entity_texts(m, "pre")).collect();
    for line in &lines {
        let found = pre
            .iter()
            .map(|p| p.matches(line.as_str()).count())
            .sum::<usize>();
        assert_eq!(found, 1, "{line} in pre entities {found} times");
    }

    let (key, t) = thread(&p, "matrix").await;
    p.deliver(&completion(&key, &md)).await;
    let contents = matrix_contents(&p, &t);
    let html: Vec<String> = contents
        .iter()
        .map(|c| c["formatted_body"].as_str().unwrap_or_default().to_owned())
        .collect();
    for part in &html {
        assert_eq!(
            part.matches("<pre>").count(),
            part.matches("</pre>").count()
        );
    }
    every_code_line_once(&html, &lines, "pre>");
}

#[tokio::test]
async fn broadcasts_and_unlisted_users_notify_nobody() {
    let p = Pipeline::start().await;
    let text = "@everyone @here <!channel> <!here> <!everyone> @room @channel and <@80351110224678912> <@U0PERSON01> <@4242> <@@person:fake> <@&123456789012345678>";

    let (key, t) = thread(&p, "discord").await;
    p.deliver(&completion(&key, text)).await;
    let posts = discord_posts(&p, &t);
    assert_eq!(
        posts[0].notified,
        Vec::<String>::new(),
        "{}",
        posts[0].content
    );

    let (key, t) = thread(&p, "slack").await;
    p.deliver(&completion(&key, text)).await;
    let slack = &slack_texts(&p, &t)[0];
    assert!(!slack.contains("<!") && !slack.contains("<@"), "{slack}");

    let (key, t) = thread(&p, "telegram").await;
    p.deliver(&completion(&key, text)).await;
    let m = &telegram_posts(&p, &t)[0];
    assert!(m.mentions().is_empty(), "{:?} in {}", m.mentions(), m.text);
    assert!(m.text_mentions().is_empty());

    let (key, t) = thread(&p, "matrix").await;
    p.deliver(&completion(&key, text)).await;
    let c = &matrix_contents(&p, &t)[0];
    // An empty `m.mentions` turns off the `@room` and name keyword rules (mentions module).
    assert_eq!(c["m.mentions"], serde_json::json!({}));
}

#[tokio::test]
async fn plain_content_is_shown_exactly_as_written() {
    let p = Pipeline::start().await;
    let text = "**not bold** _nor this_ <@4242> 1 < 2 & `x`";
    let plain = |key: &str| {
        let mut done = with_mentions(key, text, &["4242"]);
        done.format = ContentFormat::Plain;
        done
    };

    let (key, t) = thread(&p, "telegram").await;
    p.deliver(&plain(&key)).await;
    let m = &telegram_posts(&p, &t)[0];
    // The word joiner after `@` is invisible: it only keeps Telegram from finding a mention.
    assert_eq!(
        m.text.replace('\u{2060}', ""),
        text,
        "what people see is the text as written"
    );
    assert!(m.mentions().is_empty());
    assert!(m.entities.is_empty() && m.text_mentions().is_empty());

    let (key, t) = thread(&p, "matrix").await;
    p.deliver(&plain(&key)).await;
    let c = &matrix_contents(&p, &t)[0];
    assert_eq!(c["body"], text);
    assert!(c.get("formatted_body").is_none());

    let (key, t) = thread(&p, "discord").await;
    p.deliver(&plain(&key)).await;
    let d = &discord_posts(&p, &t)[0];
    assert_eq!(
        d.content,
        "\\*\\*not bold\\*\\* \\_nor this\\_ \\<@4242> 1 \\< 2 & \\`x\\`"
    );
    assert!(d.notified.is_empty());

    let (key, t) = thread(&p, "slack").await;
    p.deliver(&plain(&key)).await;
    assert_eq!(
        slack_texts(&p, &t)[0],
        "**not bold** _nor this_ &lt;@4242&gt; 1 &lt; 2 &amp; `x`"
    );
}
