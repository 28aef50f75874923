//! The risk engine: rules from `[risk]` evaluated before routing, each decline carrying the
//! response code of DESIGN §2.3 and the name of the rule that fired. No I/O; time is a
//! parameter, so that tests run days of windows in microseconds. Every worker calls the same
//! engine ([`crate::routing::dispatch`]); the velocity counters are shared by all of them.
//!
//! Order of evaluation:
//! 1. the checks every request gets: expiry before the transmission month (54), zero amount
//!    on a kind that needs one (13);
//! 2. with `risk.enabled`, the rules in file order (after the three shorthand keys
//!    `amount_max`, `blocked_bins` and `blocked_merchant_categories`, which come first): a rule
//!    applies when every condition it names holds (and within a list, any entry); the first
//!    applying rule with a `code` declines with it; a rule with a `score` adds to the score;
//!    a velocity rule applies when this approval would take its key past the limit;
//! 3. a score at or above `risk.score_decline` declines with 59, naming the rules that scored;
//!    one at or above `risk.score_review` (below that) passes, flagged for review: the flag is
//!    in the decision's log line and in the admin API like a decline's rule.
//!
//! Completions and reversals settle what was approved already: never declined here.

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::domain::{Kind, Minor, Request, ResponseCode};

mod index;
pub mod velocity;

use velocity::{Hold, Limit, Ring, VelocityTable};

/// The `[risk]` section, checked and compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct RiskRules {
    /// `false`: only the checks of step 1 (for a pure throughput run).
    pub enabled: bool,
    /// The currency of every amount in the rules (ISO 4217 numeric).
    pub currency: u16,
    /// Other currencies' rates. A currency with none is refused (12) by a rule that needs its
    /// amount.
    pub rates: Vec<Rate>,
    /// A score at or above this declines with 59 (0: scores never decline).
    pub score_decline: u32,
    /// A score at or above this (and below `score_decline`) passes, flagged (0: never).
    pub score_review: u32,
    /// Minutes east of UTC for `hours` conditions.
    pub utc_offset_minutes: i32,
    /// Slots of the velocity table of cards.
    pub velocity_keys_max: usize,
    /// Slots of the velocity table of merchants.
    pub velocity_merchants_max: usize,
    /// Slots of the velocity table of terminals.
    pub velocity_terminals_max: usize,
    pub rules: Vec<Rule>,
}

/// `risk.rates`: units of the risk currency per unit of `currency`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub currency: u16,
    pub rate: Decimal,
    /// What turns minor units of `currency` into minor units of the risk currency (the rate
    /// with the two exponents applied).
    pub factor: Decimal,
}

/// One rule: conditions, and what happens when they hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: Arc<str>,
    pub when: Conditions,
    pub velocity: Option<Velocity>,
    pub action: Action,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Decline(ResponseCode),
    Score(u32),
}

/// Every condition present must hold; an empty list is no condition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    /// A bit per [`Kind`] (see [`kind_bit`]).
    pub kinds: u16,
    /// Card tokens (the keyed hash of the PAN, as `GET /v1/accounts/{pan}` shows it).
    pub cards: Vec<u128>,
    /// Inclusive ranges of PAN prefixes of equal length (a single prefix is a range of one).
    pub bins: Vec<(Vec<u8>, Vec<u8>)>,
    pub merchant_categories: Vec<u16>,
    /// Field 19, the acquiring institution's country (ISO 3166 numeric).
    pub countries: Vec<u16>,
    /// Field 49 (the risk currency when absent).
    pub currencies: Vec<u16>,
    /// Prefixes of field 22 (POS entry mode): "01" is manual key entry.
    pub entry_modes: Vec<Vec<u8>>,
    /// Field 42, space-padded to 15.
    pub merchants: Vec<[u8; 15]>,
    /// Field 41, space-padded to 8.
    pub terminals: Vec<[u8; 8]>,
    /// Field 32.
    pub acquirers: Vec<u64>,
    /// The amount, in minor units of the risk currency, is above this.
    pub amount_above: Option<Minor>,
    /// Minutes of the day `[from, to)` in `risk.utc_offset`; `from > to` wraps past midnight.
    pub hours: Option<(u16, u16)>,
}

/// What a velocity rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Velocity {
    pub per: Per,
    pub window_seconds: u64,
    pub limit: Limit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Per {
    Card,
    /// Field 42 with the acquirer (merchant ids are the acquirer's).
    Merchant,
    /// Field 41 with the acquirer.
    Terminal,
}

impl Per {
    pub const ALL: [Per; 3] = [Per::Card, Per::Merchant, Per::Terminal];

    pub fn name(self) -> &'static str {
        match self {
            Per::Card => "card",
            Per::Merchant => "merchant",
            Per::Terminal => "terminal",
        }
    }
}

impl RiskRules {
    /// The slots of the velocity table of `per`.
    pub fn velocity_keys(&self, per: Per) -> usize {
        match per {
            Per::Card => self.velocity_keys_max,
            Per::Merchant => self.velocity_merchants_max,
            Per::Terminal => self.velocity_terminals_max,
        }
    }

    /// By [`Per`], the rings of its velocity table: every velocity rule on that kind of key,
    /// in file order, with its name.
    pub fn rings(&self) -> [Vec<(Arc<str>, Ring)>; 3] {
        let mut rings: [Vec<(Arc<str>, Ring)>; 3] = Default::default();
        for rule in &self.rules {
            if let Some(velocity) = rule.velocity {
                rings[velocity.per as usize].push((
                    rule.name.clone(),
                    Ring {
                        window_seconds: velocity.window_seconds,
                        amounts: velocity.limit.amount_max.is_some(),
                    },
                ));
            }
        }
        rings
    }
}

/// Every kind the engine screens and its name in `kinds`.
pub const KIND_NAMES: [(Kind, &str); 7] = [
    (Kind::Authorization, "authorization"),
    (Kind::AuthorizationAdvice, "advice"),
    (Kind::Purchase, "purchase"),
    (Kind::CashWithdrawal, "withdrawal"),
    (Kind::Refund, "refund"),
    (Kind::Deposit, "deposit"),
    (Kind::BalanceInquiry, "balance"),
];

pub const fn kind_bit(kind: Kind) -> u16 {
    1 << kind as u16
}

/// The kinds a rule applies to when it names none: every screened kind, or, for a velocity
/// rule, the approvals that take money (0100, purchase, withdrawal).
pub const ALL_KINDS: u16 = kind_bit(Kind::Authorization)
    | kind_bit(Kind::AuthorizationAdvice)
    | kind_bit(Kind::Purchase)
    | kind_bit(Kind::CashWithdrawal)
    | kind_bit(Kind::Refund)
    | kind_bit(Kind::Deposit)
    | kind_bit(Kind::BalanceInquiry);
pub const DEBIT_KINDS: u16 =
    kind_bit(Kind::Authorization) | kind_bit(Kind::Purchase) | kind_bit(Kind::CashWithdrawal);

/// Why a request was declined: its code and the rule, as the log line and the admin API name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decline {
    pub code: ResponseCode,
    pub rule: Arc<str>,
}

/// The velocity tables of an engine, by [`Per`].
type Tables = [Option<Arc<VelocityTable>>; 3];

/// Holds kept inline in [`Passed`]: one per velocity table of a request is the usual case.
const HOLDS_INLINE: usize = 2;

/// A request that passed: the approvals it counts in advance in the velocity tables, given back
/// when it is not approved (on drop), kept by [`Passed::approved`].
#[derive(Debug, Default)]
pub struct Passed {
    /// Set when the score reached `risk.score_review`: why, for the operators.
    pub flag: Option<Arc<str>>,
    /// The tables of the holds (one reference for all of them, taken with the first).
    tables: Option<Arc<Tables>>,
    inline: [Option<(Per, Hold)>; HOLDS_INLINE],
    rest: Vec<(Per, Hold)>,
}

impl Passed {
    pub fn approved(mut self) {
        self.tables = None; // nothing to give back
    }

    fn push(&mut self, tables: &Arc<Tables>, per: Per, hold: Hold) {
        if self.tables.is_none() {
            self.tables = Some(tables.clone());
        }
        match self.inline.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some((per, hold)),
            None => self.rest.push((per, hold)),
        }
    }
}

impl Drop for Passed {
    fn drop(&mut self) {
        let Some(tables) = self.tables.take() else {
            return;
        };
        for (per, hold) in self.inline.iter().flatten().chain(&self.rest) {
            if let Some(table) = &tables[*per as usize] {
                table.release(hold);
            }
        }
    }
}

/// The compiled rules with the velocity tables of their velocity rules (shared by every worker).
#[derive(Debug)]
pub struct RiskEngine {
    rules: RiskRules,
    /// Which rules a request may satisfy, so that the others are not tested.
    index: index::RuleIndex,
    /// By rule index: a velocity rule's ring in its key kind's table.
    rings: Vec<Option<usize>>,
    /// By [`Per`]: the table of every velocity rule on that kind of key (`None`: no such rule).
    tables: Arc<Tables>,
    /// By [`Per`]: the rules whose rings the table holds, in ring order.
    ring_rules: [Vec<(Arc<str>, Ring)>; 3],
    /// By [`Per`]: the kinds of its rules (bits of [`kind_bit`]).
    table_kinds: [u16; 3],
    /// How many velocity tables there are (more than one: their first lines are read together).
    tables_warmed: usize,
    /// What the reload that made this engine could not keep of the previous one's counts.
    resets: Vec<String>,
}

impl RiskEngine {
    pub fn new(rules: RiskRules) -> Result<RiskEngine, String> {
        RiskEngine::reloaded(None, rules, 0)
    }

    /// The engine for `rules` at `now_ms`, keeping the counters of `previous`'s velocity rules
    /// that have the same name, key, window and amount keeping (so a reload that changes a limit
    /// does not forget who is near it): a table whose rules and size are unchanged is kept as
    /// it is, and a new table of as many slots takes over the counts of the rules it keeps.
    /// Other counts start empty. An error when a table's memory cannot be had.
    pub fn reloaded(
        previous: Option<&RiskEngine>,
        rules: RiskRules,
        now_ms: u64,
    ) -> Result<RiskEngine, String> {
        if rules.rules.len() > index::WORDS_MAX * 64 {
            return Err(format!(
                "risk: {} rules; the engine takes at most {}",
                rules.rules.len(),
                index::WORDS_MAX * 64
            ));
        }
        let ring_rules = rules.rings();
        let mut resets = Vec::new();
        let mut tables: [Option<Arc<VelocityTable>>; 3] = Default::default();
        for per in Per::ALL {
            let wanted = &ring_rules[per as usize];
            if wanted.is_empty() {
                continue;
            }
            let keys_max = rules.velocity_keys(per);
            let old = previous.and_then(|p| {
                p.tables[per as usize]
                    .as_ref()
                    .map(|table| (table, &p.ring_rules[per as usize]))
            });
            if let Some((table, old_rules)) = old
                && old_rules == wanted
                && table.slots() == VelocityTable::slots_for(keys_max)
            {
                tables[per as usize] = Some(table.clone());
                continue;
            }
            let rings: Vec<Ring> = wanted.iter().map(|(_, ring)| *ring).collect();
            let table = VelocityTable::new(keys_max, &rings).map_err(|error| {
                format!(
                    "risk: cannot allocate the velocity table of {}s, {keys_max} slots ({} MiB): {error}",
                    per.name(),
                    VelocityTable::bytes(keys_max, &rings) >> 20
                )
            })?;
            if let Some((old_table, old_rules)) = old {
                let pairs: Vec<(usize, usize)> = wanted
                    .iter()
                    .enumerate()
                    .filter_map(|(new, rule)| {
                        old_rules
                            .iter()
                            .position(|old| old == rule)
                            .map(|old| (old, new))
                    })
                    .collect();
                if !pairs.is_empty() && !table.adopt(old_table, &pairs, now_ms) {
                    let names: Vec<&str> = pairs.iter().map(|&(_, new)| &*wanted[new].0).collect();
                    resets.push(format!(
                        "the velocity table of {}s changed size ({} slots, was {}): the counts of {} start empty",
                        per.name(),
                        table.slots(),
                        old_table.slots(),
                        names.join(", ")
                    ));
                }
            }
            tables[per as usize] = Some(Arc::new(table));
        }
        let mut next = [0usize; 3];
        let rings = rules
            .rules
            .iter()
            .map(|rule| {
                rule.velocity.map(|velocity| {
                    let ring = next[velocity.per as usize];
                    next[velocity.per as usize] += 1;
                    ring
                })
            })
            .collect();
        let mut table_kinds = [0u16; 3];
        for rule in &rules.rules {
            if let Some(velocity) = rule.velocity {
                table_kinds[velocity.per as usize] |= rule.when.kinds;
            }
        }
        Ok(RiskEngine {
            resets,
            tables_warmed: tables.iter().flatten().count(),
            tables: Arc::new(tables),
            table_kinds,
            index: index::RuleIndex::new(&rules.rules),
            rules,
            rings,
            ring_rules,
        })
    }

    /// What the reload that made this engine could not keep of the previous engine's velocity
    /// counts (a table whose size changed starts empty), for the operator.
    pub fn velocity_resets(&self) -> &[String] {
        &self.resets
    }

    pub fn rules(&self) -> &RiskRules {
        &self.rules
    }

    /// Live keys evicted from every velocity table since it was made.
    pub fn velocity_evictions(&self) -> u64 {
        self.tables.iter().flatten().map(|t| t.evictions()).sum()
    }

    /// Per rule (in order), for velocity rules: the slots of its key kind's table and the live
    /// keys evicted from that table since it was made (shared by the rules on that kind).
    pub fn velocity_use(&self) -> impl Iterator<Item = Option<(usize, u64)>> + '_ {
        self.rules.rules.iter().map(|rule| {
            let table = self.tables[rule.velocity?.per as usize].as_ref()?;
            Some((table.slots(), table.evictions()))
        })
    }

    /// Screens `request` at `now_ms` (milliseconds since 1970, UTC).
    pub fn evaluate(&self, request: &Request, now_ms: u64) -> Result<Passed, Decline> {
        self.screen(request, now_ms, true)
    }

    /// Screens `request`, testing only the rules the index finds it may satisfy (`indexed`),
    /// or every rule.
    fn screen(&self, request: &Request, now_ms: u64, indexed: bool) -> Result<Passed, Decline> {
        if request.kind.refers_to_original() {
            return Ok(Passed::default());
        }
        if request
            .expiry
            .is_some_and(|expiry| expiry < request.transmission_month)
        {
            return Err(builtin(ResponseCode::ExpiredCard, "card-expired"));
        }
        if request.kind.needs_amount() && request.amount == 0 {
            return Err(builtin(ResponseCode::InvalidAmount, "amount-zero"));
        }
        if !self.rules.enabled {
            return Ok(Passed::default());
        }
        let facts = Facts::new(request, now_ms, &self.rules);
        // With more than one velocity table to look in, start their cache misses together,
        // before the first lookup waits on its own under its lock.
        if self.tables_warmed > 1 {
            let mut warmed = 0;
            for per in Per::ALL {
                if let (Some(table), true) = (
                    &self.tables[per as usize],
                    self.table_kinds[per as usize] & facts.kind != 0,
                ) && let Some(key) = facts.key(per)
                {
                    warmed ^= table.warm(key);
                }
            }
            std::hint::black_box(warmed);
        }
        let candidates = if indexed {
            self.index.candidates(request, &|| {
                let (digits, len) = facts.digits.get_or_init(|| request.pan.digits());
                digits[..*len].first().copied()
            })
        } else {
            self.index.every()
        };
        let mut passed = Passed::default();
        let mut score = 0u32;
        let mut scored: Vec<&str> = Vec::new();
        for (word_at, &word) in candidates[..self.index.words()].iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let index = word_at * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let Some(rule) = self.rules.rules.get(index) else {
                    break;
                };
                if rule.when.kinds & facts.kind == 0 || !facts.satisfies(&rule.when) {
                    continue;
                }
                let needs_amount = rule.when.amount_above.is_some()
                    || rule.velocity.is_some_and(|v| v.limit.amount_max.is_some());
                let amount = if needs_amount {
                    match facts.amount {
                        Some(amount) => amount,
                        None => {
                            return Err(Decline {
                                code: ResponseCode::InvalidTransaction,
                                rule: format!(
                                    "{}: no rate for currency {} in risk.rates",
                                    rule.name,
                                    request.currency.unwrap_or(self.rules.currency)
                                )
                                .into(),
                            });
                        }
                    }
                } else {
                    0
                };
                if rule.when.amount_above.is_some_and(|above| amount <= above) {
                    continue;
                }
                let fired = match (rule.velocity, self.rings[index]) {
                    (Some(velocity), Some(ring)) => {
                        let (Some(key), Some(table)) =
                            (facts.key(velocity.per), &self.tables[velocity.per as usize])
                        else {
                            continue; // no merchant id: nothing to count it under
                        };
                        let always = matches!(rule.action, Action::Score(_));
                        let (hold, exceeded) =
                            table.add(key, ring, amount, now_ms, velocity.limit, always);
                        if let Some(hold) = hold {
                            passed.push(&self.tables, velocity.per, hold);
                        }
                        exceeded.is_some()
                    }
                    _ => true,
                };
                if !fired {
                    continue;
                }
                match rule.action {
                    Action::Decline(code) => {
                        return Err(Decline {
                            code,
                            rule: rule.name.clone(),
                        });
                    }
                    Action::Score(weight) => {
                        score = score.saturating_add(weight);
                        scored.push(&rule.name);
                    }
                }
            }
        }
        if self.rules.score_decline > 0 && score >= self.rules.score_decline {
            return Err(Decline {
                code: ResponseCode::SuspectedFraud,
                rule: format!(
                    "score {score} >= {}: {}",
                    self.rules.score_decline,
                    names(&scored)
                )
                .into(),
            });
        }
        if self.rules.score_review > 0 && score >= self.rules.score_review {
            passed.flag = Some(
                format!(
                    "review: score {score} >= {}: {}",
                    self.rules.score_review,
                    names(&scored)
                )
                .into(),
            );
        }
        Ok(passed)
    }
}

/// The rules that scored, at most 8 named (a line per decision stays short, whatever the rules).
fn names(scored: &[&str]) -> String {
    const NAMED_MAX: usize = 8;
    let mut text = scored[..scored.len().min(NAMED_MAX)].join(", ");
    if scored.len() > NAMED_MAX {
        text.push_str(&format!(" and {} more", scored.len() - NAMED_MAX));
    }
    text
}

fn builtin(code: ResponseCode, rule: &'static str) -> Decline {
    Decline {
        code,
        rule: rule.into(),
    }
}

/// What the conditions read of a request, computed once.
struct Facts<'a> {
    request: &'a Request,
    kind: u16,
    /// The PAN's digits and their count, once a rule asks.
    digits: std::cell::OnceCell<([u8; crate::domain::pan::PAN_LEN_MAX], usize)>,
    /// The amount in minor units of the risk currency (`None`: no rate for its currency).
    amount: Option<Minor>,
    minute_of_day: u16,
    /// The velocity keys, by [`Per`], once computed.
    keys: [std::cell::Cell<Option<u64>>; 3],
}

impl<'a> Facts<'a> {
    fn new(request: &'a Request, now_ms: u64, rules: &RiskRules) -> Facts<'a> {
        let currency = request.currency.unwrap_or(rules.currency);
        let amount = if currency == rules.currency || request.amount == 0 {
            // Zero is zero in any currency: a balance inquiry needs no rate.
            Some(request.amount)
        } else {
            rules
                .rates
                .iter()
                .find(|r| r.currency == currency)
                .and_then(|r| convert(request.amount, r.factor))
        };
        let local_minutes =
            i64::try_from(now_ms / 60_000).unwrap_or(0) + i64::from(rules.utc_offset_minutes);
        Facts {
            request,
            kind: kind_bit(request.kind),
            digits: std::cell::OnceCell::new(),
            amount,
            minute_of_day: u16::try_from(local_minutes.rem_euclid(1440)).unwrap_or(0),
            keys: Default::default(),
        }
    }

    /// Whether the conditions of `when` hold (its kinds were checked). Each list is tested
    /// for emptiness first: a plain chain of well-predicted branches, measured faster than
    /// dispatching on a bit mask of the conditions present.
    fn satisfies(&self, when: &Conditions) -> bool {
        let r = self.request;
        (when.merchant_categories.is_empty()
            || r.merchant_category
                .is_some_and(|m| when.merchant_categories.contains(&m)))
            && (when.cards.is_empty() || when.cards.contains(&r.card.hash))
            && (when.bins.is_empty()
                || when.bins.iter().any(|(low, high)| {
                    let (all, len) = self.digits.get_or_init(|| r.pan.digits());
                    let digits = &all[..low.len().min(*len)];
                    digits >= &low[..] && digits <= &high[..]
                }))
            && (when.countries.is_empty() || r.country.is_some_and(|c| when.countries.contains(&c)))
            && (when.currencies.is_empty()
                || when.currencies.contains(&r.currency.unwrap_or(u16::MAX)))
            && (when.entry_modes.is_empty()
                || r.entry_mode
                    .is_some_and(|mode| when.entry_modes.iter().any(|p| mode.starts_with(p))))
            && (when.merchants.is_empty()
                || r.merchant.is_some_and(|m| when.merchants.contains(&m)))
            && (when.terminals.is_empty() || when.terminals.contains(&r.key.terminal))
            && (when.acquirers.is_empty() || when.acquirers.contains(&r.key.acquirer))
            && when.hours.is_none_or(|(from, to)| {
                let m = self.minute_of_day;
                if from <= to {
                    m >= from && m < to
                } else {
                    m >= from || m < to
                }
            })
    }

    /// The velocity key of a request for `per` (`None`: the request has no such field),
    /// hashed once per request.
    fn key(&self, per: Per) -> Option<u64> {
        let r = self.request;
        let cached = &self.keys[per as usize];
        if let Some(key) = cached.get() {
            return Some(key);
        }
        let key = match per {
            Per::Card => r.card.shard_hash(),
            Per::Merchant => velocity::key_hash((per, r.key.acquirer, r.merchant?)),
            Per::Terminal => velocity::key_hash((per, r.key.acquirer, r.key.terminal)),
        };
        cached.set(Some(key));
        Some(key)
    }
}

/// `amount` minor units times `factor`, rounded up (a limit is never passed by rounding).
fn convert(amount: Minor, factor: Decimal) -> Option<Minor> {
    Decimal::from(amount)
        .checked_mul(factor)
        .map(|d| d.ceil())
        .and_then(|d| u64::try_from(d).ok())
}

#[cfg(test)]
mod tests;
