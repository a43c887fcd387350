//! Steps 1–3 and 7 of [`sanitize`](super::sanitize): Unicode clean-up and the length cut.
//!
//! This file owns which characters are dropped or become spaces (controls, zero-width, bidi
//! and tag characters), NFKC, whitespace collapsing, and the cut of a redacted prompt to its
//! limit that never splits a placeholder or a letter from its combining marks. What counts as
//! PII is `pii.rs`'s business; this file only asks it to redact again after a cut.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::pii::{PLACEHOLDERS, RedactionKind, redact};

enum CharClass {
    Keep,
    Space,
    Drop,
}

fn classify(c: char) -> CharClass {
    if c.is_whitespace() {
        CharClass::Space
    } else if c.is_control() || is_invisible(c) {
        CharClass::Drop
    } else {
        CharClass::Keep
    }
}

pub(super) fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
            | '\u{E0000}'..='\u{E007F}'
    )
}

pub(super) fn clean(raw: &str) -> String {
    // Invisible characters go before NFKC as well as after: removing one between a letter and
    // a combining mark after normalising would leave a sequence that is no longer NFKC, and
    // the function would not be idempotent.
    let stripped: String = raw
        .chars()
        .filter_map(|c| match classify(c) {
            CharClass::Keep => Some(c),
            CharClass::Space => Some(' '),
            CharClass::Drop => None,
        })
        .collect();
    let mut cleaned = String::with_capacity(stripped.len());
    let mut pending_space = false;
    for c in stripped.nfkc() {
        match classify(c) {
            CharClass::Keep => {
                if pending_space {
                    cleaned.push(' ');
                    pending_space = false;
                }
                cleaned.push(c);
            }
            CharClass::Space => pending_space = !cleaned.is_empty(),
            CharClass::Drop => {}
        }
    }
    cleaned
}

/// How often [`cut_to_length`] re-redacts after a cut before it settles for a plain cut.
const MAX_CUT_ROUNDS: usize = 4;

/// Cuts redacted text to `max_chars` and redacts again, because a cut can complete a shape
/// that was not PII before ("555-123-4567k" cut after "456" is a phone number). Redaction can
/// lengthen the text (a 6-character e-mail becomes `[email]`), so this repeats until nothing
/// more is cut. Returns the text and whether anything was cut.
pub(super) fn cut_to_length(mut text: String, max_chars: usize, redactions: &mut Vec<RedactionKind>) -> (String, bool) {
    let mut truncated = false;
    for _ in 0..MAX_CUT_ROUNDS {
        let (kept, cut) = truncate(&text, max_chars);
        if !cut {
            return (text, truncated);
        }
        truncated = true;
        text = redact(kept, redactions);
    }
    let (kept, cut) = truncate(&text, max_chars);
    (kept.to_owned(), truncated || cut)
}

/// Keeps at most `max_chars` characters. Returns the kept text and whether anything was cut.
fn truncate(text: &str, max_chars: usize) -> (&str, bool) {
    let Some((mut cut, _)) = text.char_indices().nth(max_chars) else {
        return (text, false);
    };
    let word_cut = text[..cut]
        .rfind(' ')
        .filter(|&space| text[..space].chars().count() >= max_chars / 2);
    if text[cut..].starts_with(' ') {
        // The cut already falls between words.
    } else if let Some(space) = word_cut {
        cut = space;
    } else {
        // One long word: cut inside it, but not inside a placeholder and not between a
        // letter and its combining marks.
        for placeholder in PLACEHOLDERS {
            for (start, _) in text.match_indices(placeholder) {
                if start < cut && cut < start + placeholder.len() {
                    cut = start;
                }
            }
        }
        while let Some(next) = text[cut..].chars().next() {
            if cut == 0 || !is_combining_mark(next) {
                break;
            }
            cut = text[..cut].char_indices().next_back().map_or(0, |(index, _)| index);
        }
    }
    (text[..cut].trim_end(), true)
}

#[cfg(test)]
mod tests {
    use crate::safety::test_support::{policy, text};
    use crate::safety::{PromptRejection, RedactionKind, sanitize};

    #[test]
    fn nfkc_turns_fullwidth_and_ligatures_into_plain_text() {
        assert_eq!(text("ｗｏｏｄ ﬁnish"), "wood finish");
    }

    #[test]
    fn strips_control_zero_width_and_bidi_characters() {
        let raw = "mar\u{200B}ble\u{0007} \u{202E}tex\u{00AD}ture\u{2066}\u{FEFF}\u{E0041}";
        assert_eq!(text(raw), "marble texture");
    }

    #[test]
    fn collapses_whitespace_and_trims() {
        assert_eq!(text("  oak\t\tplanks \n\r\n  worn \u{3000}"), "oak planks worn");
    }

    #[test]
    fn truncates_at_a_word_boundary() {
        let result = sanitize("rough stone wall texture", policy(), 15).expect("passes");
        assert_eq!(result.prompt.as_str(), "rough stone");
        assert!(result.truncated);
        let exact = sanitize("rough stone", policy(), 11).expect("passes");
        assert_eq!(exact.prompt.as_str(), "rough stone");
        assert!(!exact.truncated);
    }

    #[test]
    fn truncates_a_long_word_at_a_char_boundary() {
        let result = sanitize("ééééééééééé", policy(), 4).expect("passes");
        assert_eq!(result.prompt.as_str(), "éééé");
        assert!(result.truncated);
        // "c" keeps both of its combining marks or goes with them.
        let marks = sanitize("abc\u{0303}\u{0323}def", policy(), 4).expect("passes");
        assert_eq!(marks.prompt.as_str(), "ab");
    }

    #[test]
    fn truncation_never_splits_a_placeholder() {
        let result = sanitize("xyz,a@b.io", policy(), 6).expect("passes");
        assert_eq!(result.prompt.as_str(), "xyz,");
        assert_eq!(result.redactions, vec![RedactionKind::Email]);
        assert_eq!(
            sanitize("a@b.io", policy(), 4).unwrap_err(),
            PromptRejection::Empty,
            "nothing is left once the partial placeholder is dropped"
        );
    }

    #[test]
    fn zero_length_limit_is_empty() {
        assert_eq!(sanitize("anything", policy(), 0).unwrap_err(), PromptRejection::Empty);
    }
}
