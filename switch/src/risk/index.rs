//! Which rules a request may satisfy, found with a few lookups instead of testing every rule.
//!
//! For each field that enough rules name in a condition (merchant category, country, currency,
//! merchant, terminal, acquirer, card, the PAN's first digit), a map from each value some rule
//! lists to the set of rules that value can satisfy: the rules listing it and the rules with no
//! condition on that field. A request's candidates are the rules of its kind, intersected with
//! the set of its value in each map (or with the rules without a condition on the field, when
//! its value is in none). That is a superset of the rules whose conditions hold, never less: the
//! engine then tests each candidate in file order exactly as before, so the index changes what
//! is tested, never what is decided (`tests.rs` compares the two over random rules and
//! requests).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::{Conditions, Rule};
use crate::domain::Request;

/// Words of a set of rules at most: every rule of a configuration (`risk.rules` and the three
/// shorthand keys).
pub const WORDS_MAX: usize = 16;

const _: () = assert!(
    crate::config::risk::RULES_MAX + 3 <= WORDS_MAX * 64,
    "a set of rules holds every rule"
);

/// A field is indexed when at least this many rules name it: a lookup costs about what testing
/// a few rules' conditions does.
const INDEXED_MIN: usize = 4;

/// A set of rules, one bit per rule index.
pub type Set = [u64; WORDS_MAX];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    MerchantCategory,
    Country,
    Currency,
    Merchant,
    Terminal,
    Acquirer,
    Card,
    FirstDigit,
}

const FIELDS: [Field; 8] = [
    Field::MerchantCategory,
    Field::Country,
    Field::Currency,
    Field::Merchant,
    Field::Terminal,
    Field::Acquirer,
    Field::Card,
    Field::FirstDigit,
];

impl Field {
    /// The values a rule lists for this field (empty: no condition on it).
    fn listed(self, when: &Conditions) -> Vec<u128> {
        match self {
            Field::MerchantCategory => when.merchant_categories.iter().map(|&m| m.into()).collect(),
            Field::Country => when.countries.iter().map(|&c| c.into()).collect(),
            Field::Currency => when.currencies.iter().map(|&c| c.into()).collect(),
            Field::Merchant => when.merchants.iter().map(merchant_value).collect(),
            Field::Terminal => when.terminals.iter().map(|t| terminal_value(*t)).collect(),
            Field::Acquirer => when.acquirers.iter().map(|&a| a.into()).collect(),
            Field::Card => when.cards.clone(),
            // A PAN within [low, high] (prefixes of equal length) starts with a digit between
            // their first digits.
            Field::FirstDigit => {
                if when
                    .bins
                    .iter()
                    .any(|(low, high)| low.is_empty() || high.is_empty())
                {
                    // An empty prefix holds for every PAN (the configuration makes none).
                    return Vec::new();
                }
                let mut digits: Vec<u128> = when
                    .bins
                    .iter()
                    .flat_map(|(low, high)| (low[0]..=high[0]).map(u128::from))
                    .collect();
                digits.sort_unstable();
                digits.dedup();
                digits
            }
        }
    }
}

fn merchant_value(merchant: &[u8; 15]) -> u128 {
    let mut bytes = [0u8; 16];
    bytes[..15].copy_from_slice(merchant);
    u128::from_le_bytes(bytes)
}

fn terminal_value(terminal: [u8; 8]) -> u128 {
    u64::from_le_bytes(terminal).into()
}

/// The value of a request's field (`None`: the request has none, so only rules without a
/// condition on the field can hold).
fn value(field: Field, request: &Request, first_digit: &dyn Fn() -> Option<u8>) -> Option<u128> {
    Some(match field {
        Field::MerchantCategory => request.merchant_category?.into(),
        Field::Country => request.country?.into(),
        // A request without field 49 is tested as u16::MAX, which no rule lists.
        Field::Currency => request.currency.unwrap_or(u16::MAX).into(),
        Field::Merchant => merchant_value(request.merchant.as_ref()?),
        Field::Terminal => terminal_value(request.key.terminal),
        Field::Acquirer => request.key.acquirer.into(),
        Field::Card => request.card.hash,
        Field::FirstDigit => first_digit()?.into(),
    })
}

/// A hash for values that are small numbers, fixed-width ids or already keyed hashes (card
/// tokens), looked up in maps built from the configuration: a multiply, then the high half
/// folded into the low one (the map picks a bucket by the low bits, which of a product depend
/// only on the low bits of the value: ids sharing their first 4 bytes would share a bucket).
#[derive(Debug, Default)]
pub struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(26) ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_u128(&mut self, value: u128) {
        let low = u64::try_from(value & u128::from(u64::MAX)).unwrap_or(0);
        self.write_u64(low ^ u64::try_from(value >> 64).unwrap_or(0).rotate_left(32));
    }
}

#[derive(Debug)]
struct FieldIndex {
    field: Field,
    /// The set of the rules without a condition on the field.
    open: usize,
    /// By value listed, its set.
    by: HashMap<u128, usize, BuildHasherDefault<Mix>>,
}

/// The candidate index of a configuration's rules.
#[derive(Debug)]
pub struct RuleIndex {
    words: usize,
    /// The sets, `words` words each, one after the other; the first has every rule.
    sets: Vec<u64>,
    /// By [`crate::domain::Kind`] (as a number): the set of rules for that kind.
    by_kind: [usize; 16],
    fields: Vec<FieldIndex>,
}

impl RuleIndex {
    /// The index of `rules`, at most `WORDS_MAX * 64` of them (the configuration allows
    /// fewer; the engine refuses more).
    pub fn new(rules: &[Rule]) -> RuleIndex {
        let count = rules.len().min(WORDS_MAX * 64);
        let words = count.div_ceil(64).max(1);
        let bit = |set: &mut [u64], index: usize| set[index / 64] |= 1 << (index % 64);
        let mut every = vec![0u64; words];
        for index in 0..count {
            bit(&mut every, index);
        }
        let mut sets = every;
        let mut by_kind = [0; 16];
        for (kind, slot) in by_kind.iter_mut().enumerate() {
            let mut set = vec![0u64; words];
            for (index, rule) in rules.iter().take(count).enumerate() {
                if rule.when.kinds & (1 << kind) != 0 {
                    bit(&mut set, index);
                }
            }
            *slot = sets.len() / words;
            sets.extend_from_slice(&set);
        }
        let mut fields = Vec::new();
        for field in FIELDS {
            let listed: Vec<Vec<u128>> = rules
                .iter()
                .take(count)
                .map(|rule| field.listed(&rule.when))
                .collect();
            if listed.iter().filter(|values| !values.is_empty()).count() < INDEXED_MIN {
                continue;
            }
            let mut open = vec![0u64; words];
            for (index, values) in listed.iter().enumerate() {
                if values.is_empty() {
                    bit(&mut open, index);
                }
            }
            let open_at = sets.len() / words;
            sets.extend_from_slice(&open);
            let mut by: HashMap<u128, usize, BuildHasherDefault<Mix>> = HashMap::default();
            for (index, values) in listed.iter().enumerate() {
                for value in values {
                    let at = *by.entry(*value).or_insert_with(|| {
                        sets.extend_from_slice(&open);
                        sets.len() / words - 1
                    });
                    bit(&mut sets[at * words..(at + 1) * words], index);
                }
            }
            fields.push(FieldIndex {
                field,
                open: open_at,
                by,
            });
        }
        sets.shrink_to_fit();
        RuleIndex {
            words,
            sets,
            by_kind,
            fields,
        }
    }

    fn set(&self, at: usize) -> &[u64] {
        self.sets
            .get(at * self.words..(at + 1) * self.words)
            .unwrap_or_default()
    }

    /// Words of a set that hold rules.
    pub fn words(&self) -> usize {
        self.words
    }

    /// Every rule.
    pub fn every(&self) -> Set {
        let mut set: Set = [0; WORDS_MAX];
        set[..self.words].copy_from_slice(self.set(0));
        set
    }

    /// The rules `request` may satisfy; `first_digit` gives the PAN's first digit when a
    /// field needs it.
    pub fn candidates(&self, request: &Request, first_digit: &dyn Fn() -> Option<u8>) -> Set {
        let mut set: Set = [0; WORDS_MAX];
        set[..self.words]
            .copy_from_slice(self.set(self.by_kind[usize::from(request.kind as u8 & 15)]));
        for index in &self.fields {
            let at = value(index.field, request, first_digit)
                .and_then(|v| index.by.get(&v).copied())
                .unwrap_or(index.open);
            for (word, other) in set[..self.words].iter_mut().zip(self.set(at)) {
                *word &= other;
            }
        }
        set
    }
}
