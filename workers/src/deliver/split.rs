//! Splits long content into parts a platform accepts, on the most natural boundary
//! available: paragraph, then line, then word, then (for one huge word) characters.

/// Parts of at most `max_chars` characters each; never empty.
pub(crate) fn split(content: &str, max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    if content.trim().is_empty() {
        // Platforms refuse empty messages; an empty completion is still an outcome.
        return vec!["(no content)".to_owned()];
    }
    let mut parts = Vec::new();
    let mut rest = content;
    while rest.chars().count() > max_chars {
        let window_end = rest
            .char_indices()
            .nth(max_chars)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..window_end];
        // Do not cut in the first half: tiny parts are worse than a cut mid-sentence.
        let min = window.len() / 2;
        let cut = ["\n\n", "\n", " "]
            .iter()
            .find_map(|sep| {
                window
                    .rfind(sep)
                    .filter(|&i| i >= min)
                    .map(|i| i + sep.len())
            })
            .unwrap_or(window_end);
        parts.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start_matches('\n');
    }
    if !rest.trim().is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_content_is_one_part() {
        assert_eq!(split("hello", 2000), vec!["hello"]);
    }

    #[test]
    fn long_content_splits_on_paragraphs_within_the_limit() {
        let para = "word ".repeat(300); // 1500 chars
        let content = format!("{para}\n\n{para}\n\n{para}");
        let parts = split(&content, 2000);
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| p.chars().count() <= 2000));
        assert_eq!(
            parts.concat().replace(' ', "").len(),
            content.replace([' ', '\n'], "").len()
        );
    }

    #[test]
    fn a_single_huge_word_is_cut_by_characters_on_char_boundaries() {
        let content = "é".repeat(4500);
        let parts = split(&content, 2000);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![2000, 2000, 500]
        );
    }

    #[test]
    fn ten_thousand_characters_fit_discord_limits() {
        let content: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        let parts = split(&content, 2000);
        assert!(parts.len() >= 5);
        assert!(parts.iter().all(|p| p.chars().count() <= 2000));
        assert_eq!(parts.join("\n").lines().count(), 1000);
    }
}
