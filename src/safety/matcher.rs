//! Steps 5–6 of [`sanitize`](super::sanitize): matching blocked and prompt-injection phrases.
//!
//! This file owns the *skeleton* that text and phrases are folded into (rules in the module
//! docs of `safety`, "Matching blocked phrases") and the Aho-Corasick automata that find
//! phrases in it at word boundaries. Which phrases exist and what a match means is decided by
//! [`SafetyPolicy`](super::SafetyPolicy).

use std::collections::BTreeMap;

use aho_corasick::{AhoCorasick, MatchKind};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Inflections allowed after a phrase: `kill` also matches `kills`, `killed`, `killing`.
const INFLECTIONS: &[&str] = &["s", "es", "d", "ed", "ing", "ings", "er", "ers"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SkeletonMode {
    /// Punctuation ends a word: "self-harm" → "self harm".
    PunctuationSeparates,
    /// Punctuation is dropped inside a word: "ki.ll" → "kill".
    PunctuationDropped,
}

const MODES: [SkeletonMode; 2] = [SkeletonMode::PunctuationSeparates, SkeletonMode::PunctuationDropped];

/// Folded words joined by single spaces, with the byte offsets where a phrase may start or end.
pub(super) struct Skeleton {
    pub(super) text: String,
    /// `boundary[i]` is true when byte offset `i` of `text` is a word boundary.
    /// Length is `text.len() + 1`.
    boundary: Vec<bool>,
}

pub(super) struct Skeletons([Skeleton; 2]);

enum Folded {
    Letter(char),
    Space,
    Punctuation,
}

impl Skeletons {
    pub(super) fn of(text: &str) -> Self {
        Self(MODES.map(|mode| Skeleton::build(text, mode)))
    }
}

impl Skeleton {
    pub(super) fn build(input: &str, mode: SkeletonMode) -> Self {
        let mut words: Vec<String> = Vec::new();
        let mut current = String::new();
        for decomposed in input.nfkd() {
            for lower in decomposed.to_lowercase() {
                if is_combining_mark(lower) {
                    continue;
                }
                match fold(lower) {
                    Folded::Letter(letter) => current.push(letter),
                    Folded::Space => end_word(&mut words, &mut current),
                    Folded::Punctuation => {
                        if mode == SkeletonMode::PunctuationSeparates {
                            end_word(&mut words, &mut current);
                        }
                    }
                }
            }
        }
        end_word(&mut words, &mut current);
        Self::join(&words)
    }

    /// Joins words with single spaces. Consecutive one-letter words ("k i l l") are joined
    /// without spaces, and every offset inside such a run counts as a boundary.
    fn join(words: &[String]) -> Self {
        let mut text = String::new();
        let mut boundaries = Vec::new();
        let is_single = |word: &String| word.chars().count() == 1;
        let mut index = 0;
        while index < words.len() {
            if !text.is_empty() {
                text.push(' ');
            }
            let run = words[index..].iter().take_while(|w| is_single(w)).count();
            let unit = if run >= 2 { run } else { 1 };
            boundaries.push(text.len());
            for word in &words[index..index + unit] {
                text.push_str(word);
                boundaries.push(text.len());
            }
            index += unit;
        }
        let mut boundary = vec![false; text.len() + 1];
        boundary[0] = true;
        for offset in boundaries {
            boundary[offset] = true;
        }
        Self { text, boundary }
    }

    /// Whether the word continuing at `offset` is an allowed inflection.
    fn inflection_at(&self, offset: usize) -> bool {
        let rest = self.text[offset..].split(' ').next().unwrap_or("");
        INFLECTIONS.contains(&rest)
    }
}

fn end_word(words: &mut Vec<String>, current: &mut String) {
    if !current.is_empty() {
        words.push(std::mem::take(current));
    }
}

/// Maps one lowercase character to its skeleton letter. See the module docs.
fn fold(c: char) -> Folded {
    let letter = match c {
        'l' | 'i' | '1' | '!' | '|' | 'ı' | 'і' | 'ӏ' | 'ι' => 'i',
        '0' | 'о' | 'ο' | 'օ' => 'o',
        '3' | 'е' | 'ε' => 'e',
        '4' | '@' | 'а' | 'α' => 'a',
        '5' | '$' | 'ѕ' => 's',
        '7' | 'т' | 'τ' => 't',
        'р' | 'ρ' => 'p',
        'с' => 'c',
        'х' | 'χ' => 'x',
        'у' | 'γ' => 'y',
        'в' | 'β' => 'b',
        'к' | 'κ' => 'k',
        'м' => 'm',
        'н' | 'һ' => 'h',
        'η' => 'n',
        'ν' => 'v',
        'υ' => 'u',
        'ω' | 'ԝ' => 'w',
        'ј' => 'j',
        'ԁ' => 'd',
        'ԛ' => 'q',
        other if other.is_alphanumeric() => other,
        other if other.is_whitespace() => return Folded::Space,
        _ => return Folded::Punctuation,
    };
    Folded::Letter(letter)
}

/// Aho-Corasick automata over phrase skeletons, one per [`SkeletonMode`].
#[derive(Debug, Clone)]
pub(super) struct PhraseMatcher {
    labels: Vec<String>,
    automata: [ModeAutomaton; 2],
}

#[derive(Debug, Clone)]
struct ModeAutomaton {
    automaton: AhoCorasick,
    /// Pattern id → index into `labels`.
    pattern_labels: Vec<usize>,
}

impl PhraseMatcher {
    /// `entries` are `(label, phrase)`; the first label wins when two phrases fold alike.
    pub(super) fn new(entries: &[(String, String)]) -> Result<Self, aho_corasick::BuildError> {
        let mut labels: Vec<String> = Vec::new();
        let mut label_ids: BTreeMap<&str, usize> = BTreeMap::new();
        let mut patterns: [BTreeMap<String, usize>; 2] = [BTreeMap::new(), BTreeMap::new()];
        for (label, phrase) in entries {
            let label_id = *label_ids.entry(label.as_str()).or_insert_with(|| {
                labels.push(label.clone());
                labels.len() - 1
            });
            for (mode, by_skeleton) in MODES.iter().zip(patterns.iter_mut()) {
                let skeleton = Skeleton::build(phrase, *mode).text;
                if !skeleton.is_empty() {
                    by_skeleton.entry(skeleton).or_insert(label_id);
                }
            }
        }
        let [separated, dropped] = patterns;
        Ok(Self {
            labels,
            automata: [ModeAutomaton::new(separated)?, ModeAutomaton::new(dropped)?],
        })
    }

    pub(super) fn first_label(&self, skeletons: &Skeletons) -> Option<&str> {
        let mut found = Vec::new();
        for (automaton, skeleton) in self.automata.iter().zip(&skeletons.0) {
            automaton.collect(skeleton, &mut found, true);
            if let Some(&label) = found.first() {
                return Some(&self.labels[label]);
            }
        }
        None
    }

    pub(super) fn all_labels(&self, skeletons: &Skeletons) -> Vec<String> {
        let mut found = Vec::new();
        for (automaton, skeleton) in self.automata.iter().zip(&skeletons.0) {
            automaton.collect(skeleton, &mut found, false);
        }
        found.into_iter().map(|id| self.labels[id].clone()).collect()
    }
}

impl ModeAutomaton {
    fn new(by_skeleton: BTreeMap<String, usize>) -> Result<Self, aho_corasick::BuildError> {
        let (patterns, pattern_labels): (Vec<String>, Vec<usize>) = by_skeleton.into_iter().unzip();
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&patterns)?;
        Ok(Self {
            automaton,
            pattern_labels,
        })
    }

    /// Adds the labels of phrases found at word boundaries to `found`, in text order, once each.
    fn collect(&self, skeleton: &Skeleton, found: &mut Vec<usize>, stop_at_first: bool) {
        for hit in self.automaton.find_overlapping_iter(skeleton.text.as_str()) {
            let at_word_start = skeleton.boundary[hit.start()];
            let at_word_end = skeleton.boundary[hit.end()] || skeleton.inflection_at(hit.end());
            if !(at_word_start && at_word_end) {
                continue;
            }
            let label = self.pattern_labels[hit.pattern().as_usize()];
            if !found.contains(&label) {
                found.push(label);
                if stop_at_first {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safety::sanitize;
    use crate::safety::test_support::{DEFAULT_POLICY, LIMIT, blocked_category, test_policy};

    #[test]
    fn matching_survives_case_spacing_punctuation_leetspeak_and_homoglyphs() {
        let evasions = [
            "KILL",
            "k i l l",
            "k.i.l.l",
            "k-i_l*l",
            "k1ll",
            "ki11",
            "k!ll",
            "k|ll",
            "ki.ll",
            "ｋｉｌｌ",
            "kіll", // Cyrillic і
            "kιll", // Greek iota
            "kíll", // combining accent
            "k\u{200B}ill",
            "killing",
            "kills",
            "the killer",
        ];
        let policy = test_policy();
        for evasion in evasions {
            assert_eq!(
                blocked_category(&format!("please {evasion} now"), policy).as_deref(),
                Some("violence/graphic"),
                "{evasion}"
            );
        }
        assert!(blocked_category("wh1te p0wer", &DEFAULT_POLICY).is_some());
        assert!(blocked_category("$ieg h3il", &DEFAULT_POLICY).is_some());
        assert!(blocked_category("сsаm", &DEFAULT_POLICY).is_some());
    }

    #[test]
    fn innocent_words_containing_a_term_are_not_blocked() {
        let policy = test_policy();
        for innocent in [
            "skill tree icon",
            "skillful brushwork",
            "Scunthorpe town map",
            "a kilo of kiln clay",
            "killdeer bird",
            "Gore-Tex fabric",
        ] {
            assert!(sanitize(innocent, policy, LIMIT).is_ok(), "{innocent} should pass");
        }
    }

    #[test]
    fn skeleton_joins_single_letter_runs_and_marks_boundaries() {
        let skeleton = Skeleton::build("a k-i l.l word", SkeletonMode::PunctuationSeparates);
        assert_eq!(skeleton.text, "akiii word");
        assert!(skeleton.boundary[1], "inside a single-letter run");
        let words = Skeleton::build("self-harm", SkeletonMode::PunctuationSeparates);
        assert_eq!(words.text, "seif harm");
        assert!(!words.boundary[1]);
        let dropped = Skeleton::build("self-harm", SkeletonMode::PunctuationDropped);
        assert_eq!(dropped.text, "seifharm");
    }
}
