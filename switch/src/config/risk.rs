//! The `[risk]` section: checked and compiled into [`RiskRules`]. Every error names the rule by
//! its index and name, and the key.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;

use super::{Checker, ConfigError, currency_exponent};
use crate::domain::{Minor, ResponseCode};
use crate::risk::velocity::{self, Limit, WINDOW_SECONDS_MAX, WINDOW_SECONDS_MIN};
use crate::risk::{
    ALL_KINDS, Action, Conditions, DEBIT_KINDS, KIND_NAMES, Per, Rate, RiskRules, Rule, Velocity,
    kind_bit,
};

/// The codes a rule may decline with (DESIGN §2.3): the risk decisions.
pub const RULE_CODES: [ResponseCode; 6] = [
    ResponseCode::DoNotHonor,
    ResponseCode::NotPermittedToCard,
    ResponseCode::SuspectedFraud,
    ResponseCode::ExceedsAmountLimit,
    ResponseCode::RestrictedCard,
    ResponseCode::ExceedsFrequencyLimit,
];

/// Rules in one configuration at most (each is evaluated for every request).
pub const RULES_MAX: usize = 1000;
/// Entries of one list of a rule at most.
pub const LIST_MAX: usize = 100_000;
/// Entries of all the rules' lists together at most: the rule index keeps a set of rules (a
/// bit per rule) per distinct entry, so this bounds its memory (about 170 MB with 1,000 rules,
/// 56 MB with 100).
pub const LIST_TOTAL_MAX: usize = 1_000_000;
/// Slots of one velocity table at most (36.6 bytes each with one rule, 110 with one that limits
/// an amount; see `VelocityTable::bytes`).
pub const VELOCITY_KEYS_MAX: usize = 1 << 28;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RiskFile {
    enabled: bool,
    currency: Option<u16>,
    amount_max: String,
    /// The older name of `currency`, still read.
    amount_max_currency: Option<u16>,
    blocked_bins: Vec<String>,
    blocked_merchant_categories: Vec<u16>,
    rates: BTreeMap<String, String>,
    score_decline: u32,
    score_review: u32,
    utc_offset: String,
    velocity_keys_max: usize,
    velocity_merchants_max: Option<usize>,
    velocity_terminals_max: Option<usize>,
    velocity_memory_max_mib: u64,
    rules: Vec<RuleFile>,
}

impl Default for RiskFile {
    fn default() -> Self {
        RiskFile {
            enabled: true,
            currency: None,
            amount_max: "1000000.00".into(),
            amount_max_currency: None,
            blocked_bins: Vec::new(),
            blocked_merchant_categories: Vec::new(),
            rates: BTreeMap::new(),
            score_decline: 0,
            score_review: 0,
            utc_offset: "+00:00".into(),
            velocity_keys_max: 1 << 22,
            velocity_merchants_max: None,
            velocity_terminals_max: None,
            velocity_memory_max_mib: 2048,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RuleFile {
    name: String,
    code: Option<String>,
    score: Option<u32>,
    kinds: Option<Vec<String>>,
    cards: Vec<String>,
    bins: Vec<String>,
    bin_ranges: Vec<[String; 2]>,
    merchant_categories: Vec<u16>,
    countries: Vec<u16>,
    currencies: Vec<u16>,
    entry_modes: Vec<String>,
    merchants: Vec<String>,
    terminals: Vec<String>,
    acquirers: Vec<String>,
    amount_above: Option<String>,
    hours: Option<String>,
    per: Option<String>,
    window_seconds: Option<u64>,
    count_max: Option<u64>,
    amount_max: Option<String>,
}

impl Checker<'_> {
    pub(super) fn risk(&self, raw: RiskFile) -> Result<RiskRules, ConfigError> {
        let currency = match (raw.currency, raw.amount_max_currency) {
            (Some(a), Some(b)) if a != b => {
                return Err(self.invalid(
                    "risk.amount_max_currency",
                    format!(
                        "{b} differs from risk.currency = {a} (it is its older name: give one)"
                    ),
                ));
            }
            (a, b) => a.or(b).unwrap_or(840),
        };
        let base_exponent = currency_exponent(currency).ok_or_else(|| {
            self.invalid(
                "risk.currency",
                format!("{currency} is not a known ISO 4217 numeric code"),
            )
        })?;
        let mut rates = Vec::new();
        for (code, rate) in &raw.rates {
            let key = format!("risk.rates.{code}");
            let other = u16::try_from(self.digits(&key, code, 3)?)
                .map_err(|_| self.invalid(&key, "not a currency code"))?;
            let exponent = currency_exponent(other).ok_or_else(|| {
                self.invalid(
                    &key,
                    format!("{other} is not a known ISO 4217 numeric code"),
                )
            })?;
            if other == currency {
                return Err(self.invalid(&key, "the risk currency itself needs no rate"));
            }
            let rate = Decimal::from_str_exact(rate)
                .ok()
                .filter(|r| r.is_sign_positive() && !r.is_zero())
                .ok_or_else(|| {
                    self.invalid(
                        &key,
                        format!(
                            "{rate:?} is not a positive decimal (units of {currency} per unit of {other})"
                        ),
                    )
                })?;
            // Minor units of `other` → minor units of `currency`.
            let scale =
                Decimal::from(10u64.pow(base_exponent)) / Decimal::from(10u64.pow(exponent));
            let factor = rate
                .checked_mul(scale)
                .ok_or_else(|| self.invalid(&key, "out of range"))?;
            rates.push(Rate {
                currency: other,
                rate,
                factor,
            });
        }
        let offset = raw.utc_offset.as_str();
        let (sign, hours_minutes) = match offset.as_bytes().first() {
            Some(b'+') => (1, &offset[1..]),
            Some(b'-') => (-1, &offset[1..]),
            _ => (0, ""),
        };
        let utc_offset_minutes = match self.clock_minutes(hours_minutes) {
            Some(minutes) if sign != 0 && minutes <= 14 * 60 => sign * i32::from(minutes),
            _ => {
                return Err(self.invalid(
                    "risk.utc_offset",
                    format!(
                        "{:?} is not an offset such as \"+02:00\" or \"-05:30\"",
                        raw.utc_offset
                    ),
                ));
            }
        };
        let velocity_keys_max = self.range(
            "risk.velocity_keys_max",
            raw.velocity_keys_max,
            8,
            VELOCITY_KEYS_MAX,
        )?;
        let velocity_merchants_max = self.range(
            "risk.velocity_merchants_max",
            raw.velocity_merchants_max.unwrap_or(velocity_keys_max),
            8,
            VELOCITY_KEYS_MAX,
        )?;
        let velocity_terminals_max = self.range(
            "risk.velocity_terminals_max",
            raw.velocity_terminals_max.unwrap_or(velocity_keys_max),
            8,
            VELOCITY_KEYS_MAX,
        )?;
        let mut rules = Vec::new();
        let amount_max = self.amount("risk.amount_max", &raw.amount_max, currency)?;
        rules.push(Rule {
            name: "amount_max".into(),
            when: Conditions {
                kinds: ALL_KINDS,
                amount_above: Some(amount_max),
                ..Conditions::default()
            },
            velocity: None,
            action: Action::Decline(ResponseCode::ExceedsAmountLimit),
        });
        if !raw.blocked_bins.is_empty() {
            let mut bins = Vec::new();
            for (i, bin) in raw.blocked_bins.iter().enumerate() {
                self.digits(&format!("risk.blocked_bins[{i}]"), bin, 11)?;
                bins.push((bin.as_bytes().to_vec(), bin.as_bytes().to_vec()));
            }
            rules.push(Rule {
                name: "blocked_bins".into(),
                when: Conditions {
                    kinds: ALL_KINDS,
                    bins,
                    ..Conditions::default()
                },
                velocity: None,
                action: Action::Decline(ResponseCode::RestrictedCard),
            });
        }
        if !raw.blocked_merchant_categories.is_empty() {
            rules.push(Rule {
                name: "blocked_merchant_categories".into(),
                when: Conditions {
                    kinds: ALL_KINDS,
                    merchant_categories: raw.blocked_merchant_categories,
                    ..Conditions::default()
                },
                velocity: None,
                action: Action::Decline(ResponseCode::NotPermittedToCard),
            });
        }
        if raw.rules.len() > RULES_MAX {
            return Err(self.invalid(
                "risk.rules",
                format!("{} rules; at most {RULES_MAX}", raw.rules.len()),
            ));
        }
        let mut names: HashSet<String> = rules.iter().map(|r| r.name.to_string()).collect();
        let mut scores = false;
        for (i, rule) in raw.rules.into_iter().enumerate() {
            let compiled = self.rule(i, rule, currency)?;
            if !names.insert(compiled.name.to_string()) {
                return Err(self.invalid(
                    format!("risk.rules[{i}].name"),
                    format!("{:?} is the name of another rule", &*compiled.name),
                ));
            }
            scores |= matches!(compiled.action, Action::Score(_));
            rules.push(compiled);
        }
        let entries: usize = rules
            .iter()
            .map(|r| {
                let w = &r.when;
                w.cards.len()
                    + w.bins.len()
                    + w.merchant_categories.len()
                    + w.countries.len()
                    + w.currencies.len()
                    + w.entry_modes.len()
                    + w.merchants.len()
                    + w.terminals.len()
                    + w.acquirers.len()
            })
            .sum();
        if entries > LIST_TOTAL_MAX {
            return Err(self.invalid(
                "risk.rules",
                format!("{entries} list entries in all; at most {LIST_TOTAL_MAX}"),
            ));
        }
        // Every velocity table is taken whole at start (or at the reload that adds it): their
        // sum is checked here, so that a slip in a size is a clear error, not an abort.
        let memory_max_mib = self.range(
            "risk.velocity_memory_max_mib",
            raw.velocity_memory_max_mib,
            1,
            1 << 20,
        )?;
        let compiled = RiskRules {
            enabled: raw.enabled,
            currency,
            rates,
            score_decline: raw.score_decline,
            score_review: raw.score_review,
            utc_offset_minutes,
            velocity_keys_max,
            velocity_merchants_max,
            velocity_terminals_max,
            rules,
        };
        let mut bytes = 0u64;
        let mut sizes = Vec::new();
        let mut largest = (0, "risk.velocity_keys_max");
        for (per, rings) in Per::ALL.into_iter().zip(compiled.rings()) {
            if rings.is_empty() {
                continue;
            }
            let rings: Vec<_> = rings.into_iter().map(|(_, ring)| ring).collect();
            let keys = compiled.velocity_keys(per);
            let table = velocity::VelocityTable::bytes(keys, &rings);
            bytes = bytes.saturating_add(table);
            if table > largest.0 {
                largest = (
                    table,
                    match per {
                        Per::Card => "risk.velocity_keys_max",
                        Per::Merchant => "risk.velocity_merchants_max",
                        Per::Terminal => "risk.velocity_terminals_max",
                    },
                );
            }
            sizes.push(format!(
                "{}s: {keys} slots of {} rules, {} MiB",
                per.name(),
                rings.len(),
                table >> 20
            ));
        }
        if bytes > memory_max_mib << 20 {
            return Err(self.invalid(
                largest.1,
                format!(
                    "the velocity tables take {} MiB ({}), above risk.velocity_memory_max_mib = {memory_max_mib}",
                    bytes >> 20,
                    sizes.join("; ")
                ),
            ));
        }
        if scores && raw.score_decline == 0 && raw.score_review == 0 {
            return Err(self.invalid(
                "risk.score_decline",
                "rules give scores but risk.score_decline and risk.score_review are 0: set the score that declines (59) or flags",
            ));
        }
        if raw.score_review > 0 && raw.score_decline > 0 && raw.score_review >= raw.score_decline {
            return Err(self.invalid(
                "risk.score_review",
                format!(
                    "{} is not below risk.score_decline = {}: a score that declines is never flagged",
                    raw.score_review, raw.score_decline
                ),
            ));
        }
        Ok(compiled)
    }

    fn rule(&self, i: usize, raw: RuleFile, currency: u16) -> Result<Rule, ConfigError> {
        let at = |key: &str| format!("risk.rules[{i}].{key}");
        let name = raw.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.invalid(
                at("name"),
                format!(
                    "{:?} is not a name of 1 to 64 letters, digits, '-', '_' or '.'",
                    raw.name
                ),
            ));
        }
        let action = match (&raw.code, raw.score) {
            (Some(code), None) => {
                let found = <[u8; 2]>::try_from(code.as_bytes())
                    .ok()
                    .and_then(ResponseCode::from_bytes)
                    .filter(|c| RULE_CODES.contains(c));
                match found {
                    Some(code) => Action::Decline(code),
                    None => {
                        return Err(self.invalid(
                            at("code"),
                            format!(
                                "{code:?} is not one of the risk codes {}",
                                RULE_CODES.map(|c| c.as_str()).join(", ")
                            ),
                        ));
                    }
                }
            }
            (None, Some(score)) if score > 0 => Action::Score(score),
            _ => {
                return Err(self.invalid(
                    at("code"),
                    "give exactly one of code (decline with it) and score (a weight above 0)",
                ));
            }
        };
        let list_len = |key: &str, len: usize| {
            if len > LIST_MAX {
                Err(self.invalid(at(key), format!("{len} entries; at most {LIST_MAX}")))
            } else {
                Ok(())
            }
        };
        let velocity = match (raw.per.as_deref(), raw.window_seconds) {
            (None, None) if raw.count_max.is_none() && raw.amount_max.is_none() => None,
            (Some(per), Some(window_seconds)) => {
                let per = match per {
                    "card" => Per::Card,
                    "merchant" => Per::Merchant,
                    "terminal" => Per::Terminal,
                    other => {
                        return Err(self.invalid(
                            at("per"),
                            format!("{other:?} is not one of \"card\", \"merchant\", \"terminal\""),
                        ));
                    }
                };
                let window_seconds = self.range(
                    &at("window_seconds"),
                    window_seconds,
                    WINDOW_SECONDS_MIN,
                    WINDOW_SECONDS_MAX,
                )?;
                let count_max = raw
                    .count_max
                    .map(|n| self.range(&at("count_max"), n, 1, velocity::COUNT_MAX))
                    .transpose()?;
                let amount_max = raw
                    .amount_max
                    .as_deref()
                    .map(|a| self.amount(&at("amount_max"), a, currency))
                    .transpose()?;
                if count_max.is_none() && amount_max.is_none() {
                    return Err(self.invalid(
                        at("count_max"),
                        "a velocity rule needs count_max, amount_max or both",
                    ));
                }
                Some(Velocity {
                    per,
                    window_seconds,
                    limit: Limit {
                        count_max,
                        amount_max,
                    },
                })
            }
            _ => {
                return Err(self.invalid(
                    at("per"),
                    "a velocity rule needs per, window_seconds and count_max or amount_max",
                ));
            }
        };
        let kinds = match &raw.kinds {
            None if velocity.is_some() => DEBIT_KINDS,
            None => ALL_KINDS,
            Some(names) => {
                let mut kinds = 0;
                for name in names {
                    let Some((kind, _)) = KIND_NAMES.iter().find(|(_, n)| n == name) else {
                        return Err(self.invalid(
                            at("kinds"),
                            format!(
                                "{name:?} is not one of {}",
                                KIND_NAMES.map(|(_, n)| format!("{n:?}")).join(", ")
                            ),
                        ));
                    };
                    kinds |= kind_bit(*kind);
                }
                if kinds == 0 {
                    return Err(
                        self.invalid(at("kinds"), "an empty list: the rule would never apply")
                    );
                }
                kinds
            }
        };
        let mut cards = Vec::new();
        list_len("cards", raw.cards.len())?;
        for (j, card) in raw.cards.iter().enumerate() {
            let token = (card.len() == 32)
                .then(|| u128::from_str_radix(card, 16).ok())
                .flatten()
                .ok_or_else(|| {
                    self.invalid(
                        format!("{}[{j}]", at("cards")),
                        "not a card token of 32 hex digits (GET /v1/accounts/{pan} shows it); never a PAN",
                    )
                })?;
            cards.push(token);
        }
        let mut bins = Vec::new();
        list_len("bins", raw.bins.len() + raw.bin_ranges.len())?;
        for (j, bin) in raw.bins.iter().enumerate() {
            self.digits(&format!("{}[{j}]", at("bins")), bin, 11)?;
            bins.push((bin.as_bytes().to_vec(), bin.as_bytes().to_vec()));
        }
        for (j, [low, high]) in raw.bin_ranges.iter().enumerate() {
            let key = format!("{}[{j}]", at("bin_ranges"));
            self.digits(&key, low, 11)?;
            self.digits(&key, high, 11)?;
            if low.len() != high.len() || low > high {
                return Err(self.invalid(
                    key,
                    format!("[{low:?}, {high:?}] is not a range of two prefixes of one length, low first"),
                ));
            }
            bins.push((low.as_bytes().to_vec(), high.as_bytes().to_vec()));
        }
        for (key, list) in [
            ("merchant_categories", &raw.merchant_categories),
            ("countries", &raw.countries),
            ("currencies", &raw.currencies),
        ] {
            list_len(key, list.len())?;
            if let Some(bad) = list.iter().find(|v| **v > 9999) {
                return Err(self.invalid(at(key), format!("{bad} has more than 4 digits")));
            }
        }
        let mut entry_modes = Vec::new();
        list_len("entry_modes", raw.entry_modes.len())?;
        for (j, mode) in raw.entry_modes.iter().enumerate() {
            self.digits(&format!("{}[{j}]", at("entry_modes")), mode, 3)?;
            entry_modes.push(mode.as_bytes().to_vec());
        }
        let mut merchants = Vec::new();
        list_len("merchants", raw.merchants.len())?;
        for (j, merchant) in raw.merchants.iter().enumerate() {
            merchants.push(self.padded::<15>(&format!("{}[{j}]", at("merchants")), merchant)?);
        }
        let mut terminals = Vec::new();
        list_len("terminals", raw.terminals.len())?;
        for (j, terminal) in raw.terminals.iter().enumerate() {
            terminals.push(self.padded::<8>(&format!("{}[{j}]", at("terminals")), terminal)?);
        }
        let mut acquirers = Vec::new();
        list_len("acquirers", raw.acquirers.len())?;
        for (j, acquirer) in raw.acquirers.iter().enumerate() {
            acquirers.push(self.digits(&format!("{}[{j}]", at("acquirers")), acquirer, 11)?);
        }
        let amount_above: Option<Minor> = raw
            .amount_above
            .as_deref()
            .map(|a| self.amount(&at("amount_above"), a, currency))
            .transpose()?;
        let hours = match raw.hours.as_deref() {
            None => None,
            Some(text) => {
                let parsed = text
                    .split_once('-')
                    .and_then(|(from, to)| {
                        Some((self.clock_minutes(from)?, self.clock_minutes(to)?))
                    })
                    .filter(|(from, to)| from != to && *from < 1440 && *to <= 1440);
                match parsed {
                    Some(hours) => Some(hours),
                    None => {
                        return Err(self.invalid(
                            at("hours"),
                            format!("{text:?} is not a span such as \"22:00-06:00\" (from before to, or wrapping past midnight)"),
                        ));
                    }
                }
            }
        };
        let when = Conditions {
            kinds,
            cards,
            bins,
            merchant_categories: raw.merchant_categories,
            countries: raw.countries,
            currencies: raw.currencies,
            entry_modes,
            merchants,
            terminals,
            acquirers,
            amount_above,
            hours,
        };
        if velocity.is_none()
            && when
                == (Conditions {
                    kinds,
                    ..Conditions::default()
                })
        {
            return Err(self.invalid(
                at("name"),
                format!("rule {name:?} has no condition: it would apply to every request"),
            ));
        }
        Ok(Rule {
            name: Arc::from(name),
            when,
            velocity,
            action,
        })
    }

    /// "HH:MM" as minutes (24:00 allowed, for the end of a span).
    fn clock_minutes(&self, text: &str) -> Option<u16> {
        let (h, m) = text.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let h: u16 = h.parse().ok()?;
        let m: u16 = m.parse().ok()?;
        (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
    }

    /// An identifier field (41, 42) as it arrives: up to `N` characters, space-padded.
    fn padded<const N: usize>(&self, key: &str, text: &str) -> Result<[u8; N], ConfigError> {
        if text.is_empty()
            || text.len() > N
            || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        {
            return Err(self.invalid(
                key,
                format!("{text:?} is not 1 to {N} printable characters"),
            ));
        }
        let mut out = [b' '; N];
        out[..text.len()].copy_from_slice(text.as_bytes());
        Ok(out)
    }
}
