//! Word-level tokenisation with byte spans, sentence splitting and word counting.

use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// A run of letters and digits.
    Word,
    /// One punctuation character (anything that is neither alphanumeric nor whitespace).
    Punct(char),
}

/// One token: lower-cased text and its byte span in the source string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub span: Range<usize>,
    pub kind: TokenKind,
}

/// Splits `s` into words (alphanumeric runs, lower-cased) and single punctuation marks.
/// Hyphens and apostrophes separate words: "tree-lined" is `tree`, `-`, `lined`.
pub fn tokenize(s: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word_start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if c.is_alphanumeric() {
            if word_start.is_none() {
                word_start = Some(i);
            }
            continue;
        }
        if let Some(st) = word_start.take() {
            out.push(word(s, st, i));
        }
        if !c.is_whitespace() {
            out.push(Token {
                text: c.to_string(),
                span: i..i + c.len_utf8(),
                kind: TokenKind::Punct(c),
            });
        }
    }
    if let Some(st) = word_start {
        out.push(word(s, st, s.len()));
    }
    out
}

fn word(s: &str, start: usize, end: usize) -> Token {
    Token {
        text: s[start..end].to_lowercase(),
        span: start..end,
        kind: TokenKind::Word,
    }
}

/// The lower-cased words of a phrase, punctuation dropped ("High-rise" → `high`, `rise`).
pub fn phrase_words(s: &str) -> Vec<String> {
    tokenize(s)
        .into_iter()
        .filter(|t| t.kind == TokenKind::Word)
        .map(|t| t.text)
        .collect()
}

/// Splits a text into sentences at `.`, `!`, `?` followed by whitespace or the end, and at
/// line breaks. Returns trimmed, non-empty slices of the input (terminal mark included).
pub fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = match c {
            '\n' | '\r' => Some(i),
            '.' | '!' | '?' => match chars.peek() {
                None => Some(i + 1),
                Some(&(_, n)) if n.is_whitespace() => Some(i + 1),
                _ => None,
            },
            _ => None,
        };
        if let Some(e) = end {
            push_trimmed(&mut out, &text[start..e]);
            start = e;
        }
    }
    push_trimmed(&mut out, &text[start..]);
    out
}

fn push_trimmed<'a>(out: &mut Vec<&'a str>, s: &'a str) {
    let t = s.trim();
    // A lone mark (e.g. the "." left after a newline split) is not a sentence.
    if t.chars().any(|c| c.is_alphanumeric()) {
        out.push(t);
    }
}

/// Number of words: whitespace-separated pieces holding at least one letter or digit.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace()
        .filter(|w| w.chars().any(|c| c.is_alphanumeric()))
        .count()
}

/// Regular English plural of the last word of a phrase: s/x/z/ch/sh → +es, consonant+y →
/// ies, otherwise +s.
pub fn plural(phrase: &str) -> String {
    let (head, last) = match phrase.rfind(' ') {
        Some(i) => (&phrase[..=i], &phrase[i + 1..]),
        None => ("", phrase),
    };
    let p = if last.ends_with('s')
        || last.ends_with('x')
        || last.ends_with('z')
        || last.ends_with("ch")
        || last.ends_with("sh")
    {
        format!("{last}es")
    } else if last.len() > 1
        && last.ends_with('y')
        && !matches!(
            last.as_bytes()[last.len() - 2],
            b'a' | b'e' | b'i' | b'o' | b'u'
        )
    {
        format!("{}ies", &last[..last.len() - 1])
    } else {
        format!("{last}s")
    };
    format!("{head}{p}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_spans_and_lowercase() {
        let t = tokenize("Tree-lined Road, 3 cars.");
        let texts: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, ["tree", "-", "lined", "road", ",", "3", "cars", "."]);
        assert_eq!(t[3].span, 11..15);
    }

    #[test]
    fn sentences_split_on_marks_not_decimals() {
        let s = split_sentences("A road is 3.5 m wide. Trees are next to it!\nSome cars");
        assert_eq!(
            s,
            [
                "A road is 3.5 m wide.",
                "Trees are next to it!",
                "Some cars"
            ]
        );
        assert!(split_sentences("  . ").is_empty());
    }

    #[test]
    fn plurals() {
        assert_eq!(plural("factory"), "factories");
        assert_eq!(plural("church"), "churches");
        assert_eq!(plural("parking lot"), "parking lots");
        assert_eq!(plural("grass"), "grasses");
        assert_eq!(plural("highway"), "highways");
    }

    #[test]
    fn word_count_ignores_lone_marks() {
        assert_eq!(count_words("many green trees , around a pond ."), 6);
    }
}
