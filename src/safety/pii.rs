//! Step 4 of [`sanitize`](super::sanitize): PII redaction.
//!
//! This file owns what counts as an e-mail address, a card number (Luhn-valid, card-shaped)
//! and a phone number, and the placeholders that replace them. The shapes are described in
//! the module docs of `safety`. It never logs or returns the redacted values.

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

/// What kind of PII was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedactionKind {
    Email,
    Phone,
    CardNumber,
}

impl RedactionKind {
    /// The text that replaces the redacted value.
    pub fn placeholder(self) -> &'static str {
        match self {
            RedactionKind::Email => "[email]",
            RedactionKind::Phone => "[phone]",
            RedactionKind::CardNumber => "[card]",
        }
    }
}

pub(super) const PLACEHOLDERS: [&str; 3] = ["[email]", "[phone]", "[card]"];

/// E-mail addresses; Unicode letters are allowed because NFKC output may contain them.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern; a typo fails every test, so the expect cannot fire in a released build.
    Regex::new(r"[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)*\.\p{L}{2,}")
        .expect("e-mail pattern compiles")
});

/// Phone-number shapes. Digit counts and surroundings are checked in code afterwards.
const PHONE_SHAPES: &str = r"(?x)
      \+[0-9]{1,3}(?:[\ .\-]?\(?[0-9]{1,5}\)?){1,6}          # +44 20 7946 0958, +1 (555) 123-4567
    | 00[0-9]{1,3}(?:[\ .\-]?[0-9]{1,5}){1,6}                # 0044 20 7946 0958
    | \([0-9]{2,5}\)\ ?[0-9]{2,4}(?:[\ .\-]?[0-9]{2,5}){1,3} # (555) 123-4567
    | 0[0-9]{1,4}(?:[\ .\-/]?[0-9]{2,8}){1,4}                # 020 7946 0958, 06 12 34 56 78
    | [0-9]{3}[\ .\-][0-9]{3}[\ .\-][0-9]{4}                 # 555-123-4567, 555 123 4567
    | [0-9]{2,4}(?:[.\-][0-9]{2,4}){2,5}                     # 12-34-56-78-90
";

static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern; a typo fails every test, so the expect cannot fire in a released build.
    Regex::new(PHONE_SHAPES).expect("phone pattern compiles")
});

static PHONE_EXACT: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern; a typo fails every test, so the expect cannot fire in a released build.
    // PHONE_SHAPES ends with a newline, which closes its last `#` comment before the `)`.
    Regex::new(&format!("^(?:{PHONE_SHAPES})$")).expect("anchored phone pattern compiles")
});

pub(super) fn redact(text: &str, redactions: &mut Vec<RedactionKind>) -> String {
    let without_emails = redact_emails(text, redactions);
    let without_cards = redact_cards(&without_emails, redactions);
    redact_phones(&without_cards, redactions)
}

fn redact_emails(text: &str, redactions: &mut Vec<RedactionKind>) -> String {
    let mut count = 0;
    let replaced = EMAIL.replace_all(text, |_: &regex::Captures<'_>| {
        count += 1;
        RedactionKind::Email.placeholder()
    });
    redactions.extend(std::iter::repeat_n(RedactionKind::Email, count));
    replaced.into_owned()
}

/// Finds maximal runs of digits joined by single spaces or dashes and redacts, from left to
/// right, the longest group-aligned span of 13–19 digits that passes the Luhn check.
fn redact_cards(text: &str, redactions: &mut Vec<RedactionKind>) -> String {
    // Digits, ' ' and '-' are ASCII, and ASCII bytes never occur inside a multi-byte UTF-8
    // sequence, so byte offsets found here are always char boundaries.
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    let mut position = 0;
    while position < bytes.len() {
        if !bytes[position].is_ascii_digit() {
            position += 1;
            continue;
        }
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut group_start = position;
        let mut cursor = position;
        loop {
            while cursor < bytes.len() && bytes[cursor].is_ascii_digit() {
                cursor += 1;
            }
            groups.push((group_start, cursor));
            let joined =
                cursor + 1 < bytes.len() && matches!(bytes[cursor], b' ' | b'-') && bytes[cursor + 1].is_ascii_digit();
            if !joined {
                break;
            }
            cursor += 1;
            group_start = cursor;
        }
        // Digits right after a '+' start an international phone number, not a card.
        let mut first = usize::from(text[..position].ends_with('+'));
        while first < groups.len() {
            let card_end = longest_card_from(bytes, &groups, first);
            match card_end {
                Some(last) => {
                    out.push_str(&text[copied_up_to..groups[first].0]);
                    out.push_str(RedactionKind::CardNumber.placeholder());
                    copied_up_to = groups[last].1;
                    redactions.push(RedactionKind::CardNumber);
                    first = last + 1;
                }
                None => first += 1,
            }
        }
        position = cursor;
    }
    out.push_str(&text[copied_up_to..]);
    out
}

/// The last group of the longest card number that starts at group `first`, if any. Only spans
/// of at most 19 digits are looked at, so a long run of digit groups stays linear.
fn longest_card_from(bytes: &[u8], groups: &[(usize, usize)], first: usize) -> Option<usize> {
    let mut digits: Vec<u8> = Vec::with_capacity(19);
    let mut longest = None;
    for (last, &(start, end)) in groups.iter().enumerate().skip(first) {
        if digits.len() + (end - start) > 19 {
            break;
        }
        digits.extend(bytes[start..end].iter().map(|byte| byte - b'0'));
        if digits.len() >= 13 && card_shaped(&groups[first..=last]) && luhn_valid(&digits) {
            longest = Some(last);
        }
    }
    longest
}

/// One unbroken group, or groups of 4–6 digits as printed on cards (4-4-4-4, 4-6-5, 4-4-4-4-3;
/// the last group may be 3–6). This keeps phone numbers like `20 7946 0958 2048` out.
fn card_shaped(groups: &[(usize, usize)]) -> bool {
    let Some((&(last_start, last_end), leading)) = groups.split_last() else {
        return false;
    };
    leading.is_empty()
        || (leading.iter().all(|&(start, end)| (4..=6).contains(&(end - start)))
            && (3..=6).contains(&(last_end - last_start)))
}

fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(index, &digit)| {
            let digit = u32::from(digit);
            if index % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn redact_phones(text: &str, redactions: &mut Vec<RedactionKind>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    let mut search_from = 0;
    while search_from < text.len() {
        let Some(found) = PHONE.find_at(text, search_from) else {
            break;
        };
        match accepted_phone_end(text, found.start(), found.end()) {
            Some(end) => {
                out.push_str(&text[copied_up_to..found.start()]);
                out.push_str(RedactionKind::Phone.placeholder());
                redactions.push(RedactionKind::Phone);
                copied_up_to = end;
                search_from = end;
            }
            // Every phone shape starts with an ASCII byte, so start + 1 is a char boundary.
            // Retrying from there finds a real number that the rejected candidate overlapped.
            None => search_from = found.start() + 1,
        }
    }
    out.push_str(&text[copied_up_to..]);
    out
}

/// Decides whether `text[start..end]` is a phone number. A candidate with too many digits is
/// shortened group by group from the right (a number followed by an unrelated one); any other
/// failure rejects it.
fn accepted_phone_end(text: &str, start: usize, mut end: usize) -> Option<usize> {
    if !phone_may_start_after(&text[..start]) {
        return None;
    }
    loop {
        let candidate = &text[start..end];
        let digits = candidate.bytes().filter(u8::is_ascii_digit).count();
        let max_digits = if candidate.starts_with("00") { 17 } else { 15 };
        if digits > max_digits {
            let cut = candidate.rfind(|c: char| !c.is_ascii_digit())?;
            let shortened = candidate[..cut].trim_end_matches([' ', '.', '-', '/', '(']);
            if shortened.is_empty() {
                return None;
            }
            end = start + shortened.len();
            continue;
        }
        let plausible = digits >= 9 && PHONE_EXACT.is_match(candidate);
        return (plausible && phone_may_end_before(&text[end..])).then_some(end);
    }
}

/// Characters that glue a phone number to a neighbouring number ("0958-12", "0958(555").
/// The same set is used on both sides, so that of two numbers glued together neither is taken
/// as a phone number, whichever of them was seen first.
const TIGHT_SEPARATORS: [char; 6] = ['.', '-', '/', ',', '(', ')'];

/// A phone number must not continue a word or a number. A placeholder counts as a number: that
/// keeps the result the same when an already-redacted prompt is sanitised again.
fn phone_may_start_after(before: &str) -> bool {
    let ends_numberish =
        |text: &str| text.ends_with(|c: char| c.is_ascii_digit()) || PLACEHOLDERS.iter().any(|p| text.ends_with(p));
    if ends_numberish(before) {
        return false;
    }
    let mut previous = before.char_indices().rev();
    match previous.next() {
        None => true,
        Some((_, c)) if c.is_alphanumeric() || c == '_' || c == '+' => false,
        Some((index, c)) if TIGHT_SEPARATORS.contains(&c) => !ends_numberish(&before[..index]),
        Some(_) => true,
    }
}

fn phone_may_end_before(after: &str) -> bool {
    let starts_numberish =
        |text: &str| text.starts_with(|c: char| c.is_ascii_digit()) || PLACEHOLDERS.iter().any(|p| text.starts_with(p));
    if starts_numberish(after) {
        return false;
    }
    let mut next = after.chars();
    match next.next() {
        None => true,
        Some(c) if c.is_alphanumeric() || c == '_' => false,
        Some(c) if TIGHT_SEPARATORS.contains(&c) => !starts_numberish(&after[c.len_utf8()..]),
        Some(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::RedactionKind;
    use crate::safety::test_support::{ok, text};

    #[test]
    fn redacts_emails() {
        let result = ok("contact jane.doe+tex@studio.example.co.uk or ЖЕНЯ@почта.рф now");
        assert_eq!(result.prompt.as_str(), "contact [email] or [email] now");
        assert_eq!(result.redactions, vec![RedactionKind::Email; 2]);
    }

    #[test]
    fn redacts_phone_numbers_in_common_formats() {
        let phones = [
            "+44 20 7946 0958",
            "+1 (555) 123-4567",
            "+4915112345678",
            "0044 20 7946 0958",
            "(555) 123-4567",
            "555-123-4567",
            "555.123.4567",
            "555 123 4567",
            "020 7946 0958",
            "06 12 34 56 78",
            "0612345678",
            "030/12345678",
            "12-34-56-78-90",
        ];
        for phone in phones {
            let result = ok(&format!("call {phone} today"));
            assert_eq!(result.prompt.as_str(), "call [phone] today", "{phone}");
            assert_eq!(result.redactions, vec![RedactionKind::Phone], "{phone}");
        }
    }

    #[test]
    fn phone_followed_by_another_number_is_still_redacted() {
        assert_eq!(text("+44 20 7946 0958 2048"), "[phone] 2048");
        assert_eq!(text("+44 20 7946 0958 4111 1111 1111 1111"), "[phone] [card]");
    }

    #[test]
    fn leaves_plain_numbers_alone() {
        let plain = [
            "2048x2048 tile",
            "1024 x 1024",
            "made in 1999",
            "1999 2000 2001",
            "1920 1080 2048 4096",
            "version 1.2.3",
            "2026-11-29",
            "pi is 3.14159265358",
            "seed 123456789",
            "0.50 roughness",
            "order 4111 1111 1111 1112",
        ];
        for raw in plain {
            let result = ok(raw);
            assert_eq!(result.prompt.as_str(), raw, "{raw}");
            assert!(result.redactions.is_empty(), "{raw}");
        }
    }

    #[test]
    fn redacts_luhn_valid_cards_only() {
        let cards = [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "4111111111111111",
            "5500 0000 0000 0004",
            "3782 822463 10005",
            "6011000990139424",
        ];
        for card in cards {
            let result = ok(&format!("pay {card} now"));
            assert_eq!(result.prompt.as_str(), "pay [card] now", "{card}");
            assert_eq!(result.redactions, vec![RedactionKind::CardNumber], "{card}");
        }
        assert_eq!(
            text("4111 1111 1111 1111 2048"),
            "[card] 2048",
            "a trailing number is not part of the card"
        );
        assert_eq!(text("4111111111111112"), "4111111111111112");
    }

    #[test]
    fn long_digit_runs_stay_fast() {
        // Quadratic or worse span searches would take minutes on these.
        let spaced = "1 ".repeat(16_000);
        assert_eq!(ok(&spaced).prompt.char_count(), 31_999);
        let solid = "0".repeat(32_000);
        assert_eq!(ok(&solid).prompt.as_str(), solid);
    }

    #[test]
    fn redaction_order_and_kinds_are_reported() {
        let result = ok("a@b.io 4111111111111111 +44 20 7946 0958");
        assert_eq!(result.prompt.as_str(), "[email] [card] [phone]");
        assert_eq!(
            result.redactions,
            vec![RedactionKind::Email, RedactionKind::CardNumber, RedactionKind::Phone]
        );
    }
}
