//! Step 4 of [`sanitize`](super::sanitize): PII redaction.
//!
//! This file owns what counts as an e-mail address, an IBAN (ISO 13616 mod-97 valid), a
//! national id number (US SSN, UK National Insurance number, French NIR with its key), a card
//! number (Luhn-valid, card-shaped) and a phone number, and the placeholders that replace them.
//! The shapes are described in the module docs of `safety`. It never logs or returns the
//! redacted values.

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
    Iban,
    NationalId,
}

impl RedactionKind {
    /// The text that replaces the redacted value.
    pub fn placeholder(self) -> &'static str {
        match self {
            RedactionKind::Email => "[email]",
            RedactionKind::Phone => "[phone]",
            RedactionKind::CardNumber => "[card]",
            RedactionKind::Iban => "[iban]",
            RedactionKind::NationalId => "[national-id]",
        }
    }
}

pub(super) const PLACEHOLDERS: [&str; 5] = ["[email]", "[phone]", "[card]", "[iban]", "[national-id]"];

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

/// IBAN candidates: a country code, two check digits, then letters and digits, optionally in
/// space-separated groups (`FR76 3000 6000 0112 3456 7890 189`). Length and the mod-97 check
/// are verified in code, trailing groups dropped until they pass.
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern; a typo fails every test, so the expect cannot fire in a released build.
    Regex::new(r"\b[A-Z]{2}[0-9]{2}(?:\ ?[A-Z0-9]){11,40}").expect("IBAN pattern compiles")
});

/// National id numbers; check digits and reserved ranges are verified in code.
/// - US Social Security number, `123-45-6789` (with dashes only: `512 64 1024` is a size).
/// - UK National Insurance number, `AB123456C` or `AB 12 34 56 C` (prefix letters as issued).
/// - French NIR (numéro de sécurité sociale), 13 characters and a 2-digit key, compact or
///   spaced as printed (`1 84 12 76 451 089 46`); Corsican departments `2A`/`2B` included.
static NATIONAL_ID: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern; a typo fails every test, so the expect cannot fire in a released build.
    Regex::new(
        r"(?x)
          \b(?P<ssn>[0-9]{3}-[0-9]{2}-[0-9]{4})\b
        | \b(?P<nino>[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\ ?[0-9]{2}\ ?[0-9]{2}\ ?[0-9]{2}\ ?[A-D])\b
        | \b(?P<nir>[1-478]\ ?[0-9]{2}\ ?[0-9]{2}\ ?(?:[0-9]{2}|2[AB])\ ?[0-9]{3}\ ?[0-9]{3}\ ?[0-9]{2})\b
        ",
    )
    .expect("national id pattern compiles")
});

/// Text the phone pattern must not rewrite: URLs (with a scheme, `www.`, or a domain followed by
/// a path) and IPv4 addresses with an optional port. Their digit runs are paths, ids and
/// octets, not phone numbers.
static NOT_A_PHONE: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern; a typo fails every test, so the expect cannot fire in a released build.
    Regex::new(
        r#"(?xi)
          \b[a-z][a-z0-9+.\-]*://[^\s<>"']+
        | \bwww\.[^\s<>"']+
        | \b[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}/[^\s<>"']*
        | \b[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?::[0-9]{1,5})?\b
        "#,
    )
    .expect("URL and IP pattern compiles")
});

pub(super) fn redact(text: &str, redactions: &mut Vec<RedactionKind>) -> String {
    let without_emails = redact_emails(text, redactions);
    let without_ibans = redact_ibans(&without_emails, redactions);
    let without_ids = redact_national_ids(&without_ibans, redactions);
    let without_cards = redact_cards(&without_ids, redactions);
    redact_phones(&without_cards, redactions)
}

/// Redacts every IBAN as a whole. A candidate that fails the check is shortened group by group
/// from the right (an IBAN followed by an unrelated code); if no prefix passes, the search
/// resumes one character later so an IBAN the candidate overlapped is still found.
fn redact_ibans(text: &str, redactions: &mut Vec<RedactionKind>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    let mut search_from = 0;
    while search_from < text.len() {
        let Some(found) = IBAN.find_at(text, search_from) else {
            break;
        };
        match longest_iban(found.as_str()).map(|length| found.start() + length) {
            Some(end) if !text[end..].starts_with(|c: char| c.is_alphanumeric()) => {
                out.push_str(&text[copied_up_to..found.start()]);
                out.push_str(RedactionKind::Iban.placeholder());
                redactions.push(RedactionKind::Iban);
                copied_up_to = end;
                search_from = end;
            }
            // The pattern starts with an ASCII letter, so start + 1 is a char boundary.
            _ => search_from = found.start() + 1,
        }
    }
    out.push_str(&text[copied_up_to..]);
    out
}

/// The byte length of the longest prefix of `candidate` (ending at a group end) that is a
/// valid IBAN.
fn longest_iban(candidate: &str) -> Option<usize> {
    let mut end = candidate.len();
    loop {
        let prefix = &candidate[..end];
        if iban_valid(prefix) {
            return Some(end);
        }
        end = prefix.rfind(' ')?;
    }
}

/// ISO 13616: 15–34 characters, and the number formed by moving the first four characters to
/// the end and reading letters as 10–35 is 1 modulo 97.
fn iban_valid(text: &str) -> bool {
    let compact: Vec<char> = text.chars().filter(|c| *c != ' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let mut remainder: u32 = 0;
    for c in compact[4..].iter().chain(&compact[..4]) {
        let Some(value) = c.to_digit(36) else {
            return false;
        };
        remainder = if value < 10 {
            (remainder * 10 + value) % 97
        } else {
            (remainder * 100 + value) % 97
        };
    }
    remainder == 1
}

fn redact_national_ids(text: &str, redactions: &mut Vec<RedactionKind>) -> String {
    let mut count = 0;
    let replaced = NATIONAL_ID.replace_all(text, |captures: &regex::Captures<'_>| {
        let whole = &captures[0];
        let valid = if let Some(ssn) = captures.name("ssn") {
            ssn_valid(ssn.as_str())
        } else if let Some(nino) = captures.name("nino") {
            nino_valid(nino.as_str())
        } else {
            captures.name("nir").is_some_and(|nir| nir_valid(nir.as_str()))
        };
        if valid {
            count += 1;
            RedactionKind::NationalId.placeholder().to_owned()
        } else {
            whole.to_owned()
        }
    });
    redactions.extend(std::iter::repeat_n(RedactionKind::NationalId, count));
    replaced.into_owned()
}

/// SSA rules: the area is not 000, 666 or 900–999, the group not 00, the serial not 0000.
fn ssn_valid(text: &str) -> bool {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let (area, rest) = digits.split_at(3);
    let (group, serial) = rest.split_at(2);
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// HMRC never issues the prefixes BG, GB, KN, NK, NT, TN and ZZ.
fn nino_valid(text: &str) -> bool {
    !["BG", "GB", "KN", "NK", "NT", "TN", "ZZ"]
        .iter()
        .any(|prefix| text.starts_with(prefix))
}

/// The key is 97 minus the 13-character number modulo 97, with Corsica's `2A` and `2B` read as
/// the number minus 1,000,000 and minus 2,000,000.
fn nir_valid(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| *c != ' ').collect();
    let (body, key) = compact.split_at(13);
    let (digits, correction) = if body.contains('A') {
        (body.replace('A', "0"), 1_000_000)
    } else if body.contains('B') {
        (body.replace('B', "0"), 2_000_000)
    } else {
        (body.to_owned(), 0)
    };
    let (Ok(number), Ok(key)) = (digits.parse::<u64>(), key.parse::<u64>()) else {
        return false;
    };
    number >= correction && key == 97 - (number - correction) % 97
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
    let protected: Vec<(usize, usize)> = NOT_A_PHONE
        .find_iter(text)
        .map(|span| (span.start(), span.end()))
        .collect();
    let mut out = String::with_capacity(text.len());
    let mut copied_up_to = 0;
    let mut search_from = 0;
    while search_from < text.len() {
        let Some(found) = PHONE.find_at(text, search_from) else {
            break;
        };
        if let Some(&(span_start, span_end)) = protected
            .iter()
            .find(|&&(start, end)| start < found.end() && found.start() < end)
        {
            // Inside a URL or an IP address: resume after it. A candidate that only runs into
            // one resumes one byte later (phone shapes start with an ASCII byte).
            search_from = if span_start <= found.start() {
                span_end
            } else {
                found.start() + 1
            };
            continue;
        }
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

    /// An IBAN is redacted as a whole, never half (`FR76 3000 6000 [phone]`).
    #[test]
    fn redacts_mod97_valid_ibans_as_wholes() {
        let ibans = [
            "FR76 3000 6000 0112 3456 7890 189",
            "FR7630006000011234567890189",
            "DE89 3704 0044 0532 0130 00",
            "GB82 WEST 1234 5698 7654 32",
            "NL91ABNA0417164300",
        ];
        for iban in ibans {
            let result = ok(&format!("pay to {iban} today"));
            assert_eq!(result.prompt.as_str(), "pay to [iban] today", "{iban}");
            assert_eq!(result.redactions, vec![RedactionKind::Iban], "{iban}");
        }
        assert_eq!(
            text("FR76 3000 6000 0112 3456 7890 189 ABCD 2048"),
            "[iban] ABCD 2048",
            "a trailing group that breaks the check is not part of the IBAN"
        );
        assert!(!super::iban_valid("FR77 3000 6000 0112 3456 7890 189"));
        for plain in ["AB12 CDEF GHIJ KLMN OP", "RGBA8888 texture", "UV12 WRAP MODE ONLY NOW"] {
            assert_eq!(text(plain), plain);
        }
    }

    /// The documented national id formats are redacted whole, check rules included.
    #[test]
    fn redacts_national_id_numbers() {
        let ids = [
            "123-45-6789",
            "AB123456C",
            "AB 12 34 56 C",
            "1 84 12 76 451 089 46",
            "184127645108946",
            "2 69 02 2A 000 000 15",
        ];
        for id in ids {
            let result = ok(&format!("my id {id} thanks"));
            assert_eq!(result.prompt.as_str(), "my id [national-id] thanks", "{id}");
            assert_eq!(result.redactions, vec![RedactionKind::NationalId], "{id}");
        }
        for not_issued in ["GB123456C", "1 84 12 76 451 089 47", "900-12-3456"] {
            assert!(!text(not_issued).contains("[national-id]"), "{not_issued}");
        }
        assert_eq!(text("tile 512 64 1024"), "tile 512 64 1024");
    }

    /// IP addresses and the digits of URLs are not phone numbers.
    #[test]
    fn phone_pattern_leaves_ip_addresses_and_urls_alone() {
        let plain = [
            "192.168.1.10",
            "10.0.0.1:8080",
            "host 192.168.100.200 port",
            "https://example.com/item/12345678901",
            "https://example.com/tel/020-7946-0958",
            "http://10.0.0.1:8080/assets/0612345678.png",
            "www.example.com/p/020.7946.0958",
            "example.com/p/0612345678",
        ];
        for raw in plain {
            let result = ok(raw);
            assert_eq!(result.prompt.as_str(), raw, "{raw}");
            assert!(result.redactions.is_empty(), "{raw}");
        }
        assert_eq!(
            text("see https://example.com/item/42 or call 020 7946 0958"),
            "see https://example.com/item/42 or call [phone]"
        );
        assert_eq!(text("192.168.1.10 then 555-123-4567"), "192.168.1.10 then [phone]");
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
