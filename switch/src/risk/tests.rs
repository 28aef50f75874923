//! Table-driven tests of the rules: one case per condition and boundary, rules written as in
//! the configuration file.

use super::*;
use crate::config::Settings;
use crate::domain::request::{TxnKey, YearMonth};
use crate::domain::{Pan, Tokenizer};

/// 2026-11-30 12:00:00 UTC.
const NOON_MS: u64 = 1_796_040_000_000;

fn engine(risk: &str) -> RiskEngine {
    let settings = Settings::parse(risk, "<risk test>").unwrap_or_else(|e| panic!("{e}"));
    RiskEngine::new(settings.risk).unwrap()
}

fn pan() -> Pan {
    Pan::parse(b"4000000000000036").unwrap()
}

fn request(kind: Kind, amount: u64) -> Request {
    Request {
        kind,
        pan: pan(),
        card: Tokenizer::new([0; 16]).token(&pan()),
        amount,
        currency: Some(840),
        account_type: *b"00",
        key: TxnKey {
            acquirer: 123_456,
            terminal: *b"TERM0001",
            stan: 1,
            transmission: 1_130_120_000,
        },
        original: None,
        replacement: None,
        expiry: Some(YearMonth {
            year: 2028,
            month: 12,
        }),
        transmission_month: YearMonth {
            year: 2026,
            month: 11,
        },
        merchant_category: Some(5999),
        country: Some(840),
        entry_mode: Some(*b"051"),
        merchant: Some(*b"MERCHANT0001   "),
    }
}

/// The code and rule of a decline, or `None` for a pass.
fn verdict(engine: &RiskEngine, request: &Request, now_ms: u64) -> Option<(&'static str, String)> {
    match engine.evaluate(request, now_ms) {
        Ok(passed) => {
            passed.approved();
            None
        }
        Err(decline) => Some((decline.code.as_str(), decline.rule.to_string())),
    }
}

fn declined(code: &'static str, rule: &str) -> Option<(&'static str, String)> {
    Some((code, rule.to_owned()))
}

#[test]
fn the_demo_rules_of_the_default_configuration() {
    let demo = RiskEngine::new(Settings::embedded().unwrap().risk).unwrap();
    let casino = Request {
        merchant_category: Some(7995),
        ..request(Kind::Purchase, 100)
    };
    let keyed = |amount| Request {
        entry_mode: Some(*b"012"),
        ..request(Kind::Purchase, amount)
    };
    assert_eq!(
        verdict(&demo, &casino, NOON_MS),
        declined("57", "gambling-mcc-7995")
    );
    assert_eq!(
        verdict(&demo, &keyed(500_000), NOON_MS),
        None,
        "5,000.00: not above"
    );
    assert_eq!(
        verdict(&demo, &keyed(500_001), NOON_MS),
        declined("59", "manual-key-entry-above-5000")
    );
    assert_eq!(
        verdict(&demo, &request(Kind::Purchase, 500_001), NOON_MS),
        None,
        "chip (051) above 5,000.00"
    );
    // A fresh engine: the purchases above count for the card already.
    let demo = RiskEngine::new(Settings::embedded().unwrap().risk).unwrap();
    for n in 1..=20 {
        assert_eq!(
            verdict(&demo, &request(Kind::Authorization, 100), NOON_MS + n),
            None,
            "approval {n}"
        );
    }
    assert_eq!(
        verdict(&demo, &request(Kind::Purchase, 100), NOON_MS + 21),
        declined("65", "card-velocity-60s")
    );
    assert_eq!(
        verdict(&demo, &request(Kind::BalanceInquiry, 0), NOON_MS + 22),
        None,
        "a balance inquiry is not counted, nor refused"
    );
    assert_eq!(
        verdict(&demo, &request(Kind::Purchase, 100), NOON_MS + 60_000),
        None,
        "a minute later"
    );
}

#[test]
fn one_case_per_condition_and_boundary() {
    let rules = engine(
        r#"
[risk]
currency = 840
amount_max = "10000.00"
blocked_bins = ["411111"]
blocked_merchant_categories = [6051]
utc_offset = "+02:00"
[risk.rates]
"978" = "1.10"
"392" = "0.0070"
[[risk.rules]]
name = "card-token"
cards = ["00000000000000000000000000000001"]
code = "62"
[[risk.rules]]
name = "bin-range"
bin_ranges = [["40000000001", "40000000002"]]
code = "62"
[[risk.rules]]
name = "country"
countries = [643]
code = "57"
[[risk.rules]]
name = "eur-above-100"
currencies = [978]
amount_above = "110.00"
code = "61"
[[risk.rules]]
name = "merchant"
merchants = ["BADSHOP"]
code = "05"
[[risk.rules]]
name = "terminal"
terminals = ["TERM0666"]
acquirers = ["123456"]
code = "05"
[[risk.rules]]
name = "night-withdrawals"
kinds = ["withdrawal"]
hours = "23:00-05:00"
code = "57"
[[risk.rules]]
name = "refund-mcc"
kinds = ["refund"]
merchant_categories = [5999]
amount_above = "500.00"
code = "61"
"#,
    );
    // 12:00 UTC is 14:00 at +02:00; 21:00 UTC is 23:00 there.
    let eleven_pm = NOON_MS + 9 * 3_600_000;
    let five_am = NOON_MS + 15 * 3_600_000;
    let token = |hash| crate::domain::CardToken {
        hash,
        last_four: 36,
    };
    type Case = (&'static str, Request, u64, Option<(&'static str, String)>);
    let cases: Vec<Case> = vec![
        ("plain", request(Kind::Purchase, 100), NOON_MS, None),
        (
            "at the amount limit",
            request(Kind::Purchase, 1_000_000),
            NOON_MS,
            None,
        ),
        (
            "one cent above it",
            request(Kind::Purchase, 1_000_001),
            NOON_MS,
            declined("61", "amount_max"),
        ),
        (
            "EUR converted: 9,090.90 EUR is 9,999.99 USD",
            Request {
                currency: Some(978),
                merchant_category: Some(1),
                ..request(Kind::Purchase, 909_090)
            },
            NOON_MS,
            declined("61", "eur-above-100"),
        ),
        (
            "EUR converted past amount_max: 9,090.91 EUR is 10,000.001 USD, rounded up",
            Request {
                currency: Some(978),
                ..request(Kind::Purchase, 909_091)
            },
            NOON_MS,
            declined("61", "amount_max"),
        ),
        (
            "EUR at 100.00 (110.00 USD): not above",
            Request {
                currency: Some(978),
                ..request(Kind::Purchase, 10_000)
            },
            NOON_MS,
            None,
        ),
        (
            "EUR at 100.01",
            Request {
                currency: Some(978),
                ..request(Kind::Purchase, 10_001)
            },
            NOON_MS,
            declined("61", "eur-above-100"),
        ),
        (
            "JPY (no decimals) 1,428,571 is 9,999.997 USD, rounded up to 10,000.00",
            Request {
                currency: Some(392),
                ..request(Kind::Purchase, 1_428_571)
            },
            NOON_MS,
            None,
        ),
        (
            "JPY 1,428,572",
            Request {
                currency: Some(392),
                ..request(Kind::Purchase, 1_428_572)
            },
            NOON_MS,
            declined("61", "amount_max"),
        ),
        (
            "a currency without a rate",
            Request {
                currency: Some(756),
                ..request(Kind::Purchase, 1)
            },
            NOON_MS,
            declined("12", "amount_max: no rate for currency 756 in risk.rates"),
        ),
        (
            "a balance inquiry in a currency without a rate: zero needs none",
            Request {
                currency: Some(756),
                ..request(Kind::BalanceInquiry, 0)
            },
            NOON_MS,
            None,
        ),
        (
            "blocked BIN",
            Request {
                pan: Pan::parse(b"4111111111111111").unwrap(),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            declined("62", "blocked_bins"),
        ),
        (
            "blocked MCC",
            Request {
                merchant_category: Some(6051),
                ..request(Kind::Authorization, 100)
            },
            NOON_MS,
            declined("57", "blocked_merchant_categories"),
        ),
        (
            "card by token",
            Request {
                card: token(1),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            declined("62", "card-token"),
        ),
        (
            "another token",
            Request {
                card: token(2),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            None,
        ),
        (
            "BIN range, below",
            Request {
                pan: Pan::parse(b"4000000000000002").unwrap(),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            None,
        ),
        (
            "BIN range, low end",
            Request {
                pan: Pan::parse(b"4000000000100000").unwrap(),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            declined("62", "bin-range"),
        ),
        (
            "BIN range, high end",
            Request {
                pan: Pan::parse(b"4000000000299992").unwrap(),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            declined("62", "bin-range"),
        ),
        (
            "BIN range, above",
            Request {
                pan: Pan::parse(b"4000000000300006").unwrap(),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            None,
        ),
        (
            "country",
            Request {
                country: Some(643),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            declined("57", "country"),
        ),
        (
            "no field 19: the country rule does not apply",
            Request {
                country: None,
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            None,
        ),
        (
            "merchant (field 42, padded)",
            Request {
                merchant: Some(*b"BADSHOP        "),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            declined("05", "merchant"),
        ),
        (
            "terminal of that acquirer",
            Request {
                key: TxnKey {
                    terminal: *b"TERM0666",
                    ..request(Kind::Purchase, 100).key
                },
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            declined("05", "terminal"),
        ),
        (
            "the same terminal id of another acquirer",
            Request {
                key: TxnKey {
                    terminal: *b"TERM0666",
                    acquirer: 654_321,
                    ..request(Kind::Purchase, 100).key
                },
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            None,
        ),
        (
            "withdrawal at 14:00 local",
            request(Kind::CashWithdrawal, 100),
            NOON_MS,
            None,
        ),
        (
            "withdrawal at 23:00 local, the first minute of the span",
            request(Kind::CashWithdrawal, 100),
            eleven_pm,
            declined("57", "night-withdrawals"),
        ),
        (
            "withdrawal at 22:59:59 local",
            request(Kind::CashWithdrawal, 100),
            eleven_pm - 1,
            None,
        ),
        (
            "withdrawal at 04:59 local, across midnight",
            request(Kind::CashWithdrawal, 100),
            five_am - 60_000,
            declined("57", "night-withdrawals"),
        ),
        (
            "withdrawal at 05:00 local, the span's end",
            request(Kind::CashWithdrawal, 100),
            five_am,
            None,
        ),
        (
            "a purchase at night: the rule names withdrawals only",
            request(Kind::Purchase, 100),
            eleven_pm,
            None,
        ),
        (
            "refund above 500.00 at MCC 5999",
            request(Kind::Refund, 50_001),
            NOON_MS,
            declined("61", "refund-mcc"),
        ),
        (
            "refund at another MCC",
            Request {
                merchant_category: Some(5411),
                ..request(Kind::Refund, 50_001)
            },
            NOON_MS,
            None,
        ),
        (
            "a reversal is never declined",
            Request {
                merchant_category: Some(6051),
                original: Some(request(Kind::Purchase, 1).key),
                ..request(Kind::Reversal, 100_000_000)
            },
            NOON_MS,
            None,
        ),
        (
            "expired card (built in)",
            Request {
                expiry: Some(YearMonth {
                    year: 2026,
                    month: 10,
                }),
                ..request(Kind::Purchase, 100)
            },
            NOON_MS,
            declined("54", "card-expired"),
        ),
        (
            "zero amount (built in)",
            request(Kind::Purchase, 0),
            NOON_MS,
            declined("13", "amount-zero"),
        ),
    ];
    for (name, request, now, expected) in cases {
        assert_eq!(verdict(&rules, &request, now), expected, "{name}");
    }
}

#[test]
fn rules_apply_in_file_order_and_disabled_rules_do_not() {
    let rules = r#"
[risk]
[[risk.rules]]
name = "first"
merchant_categories = [5999]
code = "05"
[[risk.rules]]
name = "second"
merchant_categories = [5999]
code = "57"
"#;
    let first = engine(rules);
    assert_eq!(
        verdict(&first, &request(Kind::Purchase, 100), NOON_MS),
        declined("05", "first")
    );
    let off = engine(&rules.replace("[risk]", "[risk]\nenabled = false"));
    assert_eq!(verdict(&off, &request(Kind::Purchase, 100), NOON_MS), None);
    assert_eq!(
        verdict(&off, &request(Kind::Purchase, 0), NOON_MS),
        declined("13", "amount-zero"),
        "the built-in checks stay"
    );
}

#[test]
fn scores_add_up_to_the_threshold() {
    let rules = engine(
        r#"
[risk]
score_decline = 100
[[risk.rules]]
name = "keyed"
entry_modes = ["01"]
score = 60
[[risk.rules]]
name = "foreign"
countries = [643]
score = 40
[[risk.rules]]
name = "busy-card"
per = "card"
window_seconds = 60
count_max = 2
score = 50
"#,
    );
    let keyed = Request {
        entry_mode: Some(*b"010"),
        key: TxnKey {
            stan: 2,
            ..request(Kind::Purchase, 1).key
        },
        card: crate::domain::CardToken {
            hash: 77,
            last_four: 1,
        },
        ..request(Kind::Purchase, 100)
    };
    assert_eq!(verdict(&rules, &keyed, NOON_MS), None, "60");
    let both = Request {
        country: Some(643),
        ..keyed.clone()
    };
    assert_eq!(
        verdict(&rules, &both, NOON_MS),
        declined("59", "score 100 >= 100: keyed, foreign"),
        "60 + 40"
    );
    // The declined one gave back its count: one approval so far, a second is within 2.
    assert_eq!(verdict(&rules, &keyed, NOON_MS), None);
    let foreign_chip = Request {
        country: Some(643),
        entry_mode: None,
        ..keyed.clone()
    };
    assert_eq!(
        verdict(&rules, &foreign_chip, NOON_MS),
        None,
        "40 + 50 (a third approval within 60 s) = 90"
    );
    assert_eq!(
        verdict(&rules, &keyed, NOON_MS),
        declined("59", "score 110 >= 100: keyed, busy-card")
    );
}

#[test]
fn a_score_between_the_thresholds_passes_flagged() {
    let rules = engine(
        r#"
[risk]
score_decline = 100
score_review = 50
[[risk.rules]]
name = "keyed"
entry_modes = ["01"]
score = 60
[[risk.rules]]
name = "foreign"
countries = [643]
score = 40
"#,
    );
    let flag = |request: &Request| match rules.evaluate(request, NOON_MS) {
        Ok(passed) => passed.flag.as_deref().map(str::to_owned),
        Err(decline) => panic!("declined: {decline:?}"),
    };
    let keyed = Request {
        entry_mode: Some(*b"012"),
        ..request(Kind::Purchase, 100)
    };
    let foreign = Request {
        country: Some(643),
        ..request(Kind::Purchase, 100)
    };
    assert_eq!(flag(&request(Kind::Purchase, 100)), None, "0");
    assert_eq!(flag(&foreign), None, "40: below the review threshold");
    assert_eq!(
        flag(&keyed).as_deref(),
        Some("review: score 60 >= 50: keyed"),
        "60"
    );
    let both = Request {
        country: Some(643),
        ..keyed
    };
    assert_eq!(
        verdict(&rules, &both, NOON_MS),
        declined("59", "score 100 >= 100: keyed, foreign")
    );
    let error = Settings::parse("[risk]\nscore_decline = 50\nscore_review = 50\n", "t.toml")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("t.toml: risk.score_review: 50 is not below risk.score_decline = 50"),
        "{error}"
    );
}

#[test]
fn velocity_by_merchant_and_terminal_with_an_amount_limit_across_the_window() {
    let rules = engine(
        r#"
[risk]
[[risk.rules]]
name = "merchant-amount"
per = "merchant"
window_seconds = 80
amount_max = "1000.00"
code = "61"
[[risk.rules]]
name = "terminal-count"
per = "terminal"
kinds = ["purchase", "refund"]
window_seconds = 3600
count_max = 3
code = "65"
"#,
    );
    // 80 s windows count in buckets of 10 s: start on a bucket boundary.
    let t0 = NOON_MS;
    let purchase = |amount, terminal: &[u8; 8]| Request {
        key: TxnKey {
            terminal: *terminal,
            ..request(Kind::Purchase, 1).key
        },
        ..request(Kind::Purchase, amount)
    };
    assert_eq!(verdict(&rules, &purchase(60_000, b"T1      "), t0), None);
    assert_eq!(
        verdict(&rules, &purchase(40_001, b"T2      "), t0 + 5_000),
        declined("61", "merchant-amount"),
        "600.00 + 400.01 at one merchant"
    );
    assert_eq!(
        verdict(&rules, &purchase(40_000, b"T2      "), t0 + 5_000),
        None
    );
    assert_eq!(
        verdict(&rules, &purchase(1, b"T3      "), t0 + 79_999),
        declined("61", "merchant-amount"),
        "still within the window"
    );
    assert_eq!(
        verdict(&rules, &purchase(60_000, b"T3      "), t0 + 80_000),
        None,
        "the first bucket left the window"
    );
    let elsewhere = |kind, terminal: &[u8; 8]| Request {
        merchant: Some(*b"OTHER          "),
        key: TxnKey {
            terminal: *terminal,
            ..request(Kind::Purchase, 1).key
        },
        ..request(kind, 100)
    };
    assert_eq!(
        verdict(&rules, &elsewhere(Kind::Purchase, b"T7      "), t0),
        None
    );
    assert_eq!(
        verdict(&rules, &elsewhere(Kind::Refund, b"T7      "), t0),
        None
    );
    assert_eq!(
        verdict(&rules, &elsewhere(Kind::CashWithdrawal, b"T7      "), t0),
        None,
        "the terminal rule counts purchases and refunds only"
    );
    assert_eq!(
        verdict(
            &rules,
            &elsewhere(Kind::Purchase, b"T7      "),
            t0 + 1_000_000
        ),
        None
    );
    assert_eq!(
        verdict(
            &rules,
            &elsewhere(Kind::Refund, b"T7      "),
            t0 + 3_000_000
        ),
        declined("65", "terminal-count"),
        "T7's fourth within the hour"
    );
    assert_eq!(
        verdict(
            &rules,
            &elsewhere(Kind::Purchase, b"T8      "),
            t0 + 3_000_000
        ),
        None,
        "another terminal"
    );
    assert_eq!(
        verdict(
            &rules,
            &elsewhere(Kind::Purchase, b"T7      "),
            t0 + 3_600_000
        ),
        None,
        "an hour on, the first two left the window"
    );
    let no_merchant = Request {
        merchant: None,
        ..purchase(100_000_000, b"T9      ")
    };
    assert_eq!(
        verdict(&rules, &no_merchant, t0),
        None,
        "without field 42 there is no merchant to count under"
    );
}

#[test]
fn a_reload_keeps_the_counters_of_an_unchanged_rule() {
    let rules = |count_max: u32| {
        Settings::parse(
            &format!(
                "[risk]\n[[risk.rules]]\nname = \"card\"\nper = \"card\"\nwindow_seconds = 60\ncount_max = {count_max}\ncode = \"65\"\n"
            ),
            "<reload>",
        )
        .unwrap()
        .risk
    };
    let before = RiskEngine::new(rules(3)).unwrap();
    for n in 0..3 {
        assert_eq!(
            verdict(&before, &request(Kind::Purchase, 1), NOON_MS + n),
            None
        );
    }
    let after = RiskEngine::reloaded(Some(&before), rules(4), NOON_MS + 3).unwrap();
    assert_eq!(
        verdict(&after, &request(Kind::Purchase, 1), NOON_MS + 3),
        None,
        "the 4th"
    );
    assert_eq!(
        verdict(&after, &request(Kind::Purchase, 1), NOON_MS + 4),
        declined("65", "card"),
        "the 5th: the three before the reload still count"
    );
    // A reload that adds a card rule builds a new card table: it takes over what "card" counted.
    let added = Settings::parse(
        "[risk]\n[[risk.rules]]\nname = \"card-amount\"\nper = \"card\"\nwindow_seconds = 3600\namount_max = \"1000.00\"\ncode = \"61\"\n[[risk.rules]]\nname = \"card\"\nper = \"card\"\nwindow_seconds = 60\ncount_max = 4\ncode = \"65\"\n",
        "<reload>",
    )
    .unwrap()
    .risk;
    let grown = RiskEngine::reloaded(Some(&after), added, NOON_MS + 4).unwrap();
    assert_eq!(
        verdict(&grown, &request(Kind::Purchase, 1), NOON_MS + 4),
        declined("65", "card"),
        "the four before the reload still count in the new table"
    );
    assert!(grown.velocity_resets().is_empty());
    // A reload that changes the table's size cannot keep the counts, and says so.
    let resized = Settings::parse(
        "[risk]\nvelocity_keys_max = 1000\n[[risk.rules]]\nname = \"card\"\nper = \"card\"\nwindow_seconds = 60\ncount_max = 4\ncode = \"65\"\n",
        "<reload>",
    )
    .unwrap()
    .risk;
    let smaller = RiskEngine::reloaded(Some(&grown), resized, NOON_MS + 4).unwrap();
    assert_eq!(
        smaller.velocity_resets(),
        [
            "the velocity table of cards changed size (1001 slots, was 4194309): the counts of card start empty"
        ]
    );
    assert_eq!(
        verdict(&smaller, &request(Kind::Purchase, 1), NOON_MS + 4),
        None
    );
    let after = grown;
    let renamed = Settings::parse(
        "[risk]\n[[risk.rules]]\nname = \"card-2\"\nper = \"card\"\nwindow_seconds = 60\ncount_max = 4\ncode = \"65\"\n",
        "<reload>",
    )
    .unwrap()
    .risk;
    let fresh = RiskEngine::reloaded(Some(&after), renamed, NOON_MS + 5).unwrap();
    assert_eq!(
        verdict(&fresh, &request(Kind::Purchase, 1), NOON_MS + 5),
        None
    );
}

#[test]
fn concurrent_requests_cannot_all_slip_under_the_limit() {
    let rules = std::sync::Arc::new(engine(
        "[risk]\n[[risk.rules]]\nname = \"card\"\nper = \"card\"\nwindow_seconds = 60\ncount_max = 20\ncode = \"65\"\n",
    ));
    // Four threads, 50 requests each, none decided yet (all reservations held): 20 pass.
    let passed: Vec<Passed> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let rules = rules.clone();
                scope.spawn(move || {
                    (0..50)
                        .filter_map(|_| rules.evaluate(&request(Kind::Purchase, 1), NOON_MS).ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(passed.len(), 20);
    // Ten are declined downstream (given back), ten approved: ten more may pass.
    let mut passed = passed.into_iter();
    for _ in 0..10 {
        drop(passed.next());
    }
    passed.for_each(Passed::approved);
    let more = (0..30)
        .filter(|_| verdict(&rules, &request(Kind::Purchase, 1), NOON_MS).is_none())
        .count();
    assert_eq!(more, 10);
}

#[test]
fn configuration_errors_name_the_rule_and_the_key() {
    let cases = [
        (
            "[[risk.rules]]\nname = \"x\"\ncode = \"05\"\n",
            "risk.rules[0].name: rule \"x\" has no condition",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nmerchant_categories = [1]\ncode = \"00\"\n",
            "risk.rules[0].code: \"00\" is not one of the risk codes",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nmerchant_categories = [1]\ncode = \"05\"\nscore = 3\n",
            "risk.rules[0].code: give exactly one of code",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nper = \"card\"\nwindow_seconds = 60\ncode = \"65\"\n",
            "risk.rules[0].count_max: a velocity rule needs count_max, amount_max or both",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nper = \"card\"\nwindow_seconds = 7\ncount_max = 1\ncode = \"65\"\n",
            "risk.rules[0].window_seconds: 7 is below the minimum 8",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nper = \"bin\"\nwindow_seconds = 60\ncount_max = 1\ncode = \"65\"\n",
            "risk.rules[0].per: \"bin\" is not one of",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\ncount_max = 1\ncode = \"65\"\n",
            "risk.rules[0].per: a velocity rule needs per, window_seconds",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\ncards = [\"4000000000000002\"]\ncode = \"62\"\n",
            "risk.rules[0].cards[0]: not a card token of 32 hex digits",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nhours = \"22:00-22:00\"\ncode = \"57\"\n",
            "risk.rules[0].hours: \"22:00-22:00\" is not a span",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nbin_ranges = [[\"41\", \"40\"]]\ncode = \"62\"\n",
            "risk.rules[0].bin_ranges[0]: [\"41\", \"40\"] is not a range",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nkinds = [\"reversal\"]\nmerchant_categories = [1]\ncode = \"57\"\n",
            "risk.rules[0].kinds: \"reversal\" is not one of",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\namount_above = \"1.001\"\ncode = \"61\"\n",
            "risk.rules[0].amount_above: \"1.001\" has more than 2 decimals",
        ),
        (
            "[[risk.rules]]\nname = \"a\"\nmerchant_categories = [1]\ncode = \"57\"\n[[risk.rules]]\nname = \"a\"\nmerchant_categories = [2]\ncode = \"57\"\n",
            "risk.rules[1].name: \"a\" is the name of another rule",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nmerchant_categories = [1]\nscore = 5\n",
            "risk.score_decline: rules give scores but risk.score_decline and risk.score_review are 0",
        ),
        (
            "[risk.rates]\n\"978\" = \"-1\"\n",
            "risk.rates.978: \"-1\" is not a positive decimal",
        ),
        (
            "utc_offset = \"02:00\"\n",
            "risk.utc_offset: \"02:00\" is not an offset",
        ),
        (
            "[[risk.rules]]\nname = \"x\"\nper = \"merchant\"\nwindow_seconds = 60\ncount_max = 600000\ncode = \"65\"\n",
            "risk.rules[0].count_max: 600000 is above the maximum 524280",
        ),
        (
            "velocity_keys_max = 100000000\n",
            "risk.velocity_keys_max: the velocity tables take 3487 MiB (cards: 100000000 slots of 1 rules, 3487 MiB)",
        ),
        (
            "currency = 840\namount_max_currency = 978\n",
            "risk.amount_max_currency: 978 differs from risk.currency = 840",
        ),
    ];
    for (risk, expected) in cases {
        let text = format!("[risk]\nscore_decline = 0\n{risk}");
        let error = Settings::parse(&text, "t.toml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("t.toml: {expected}")),
            "{risk}\n  gave: {error}\n  want: {expected}"
        );
    }
}

/// Picks from `choices` by bits of `seed`: a few of them (at least one), or none.
fn some_of<'a>(seed: u64, shift: u32, choices: &[&'a str]) -> Vec<&'a str> {
    if (seed >> shift) & 3 != 0 {
        return Vec::new(); // three times in four: no condition on the field
    }
    let picked: Vec<&str> = choices
        .iter()
        .enumerate()
        .filter(|(i, _)| (seed >> (shift as usize + 2 + i)) & 1 == 1)
        .map(|(_, c)| *c)
        .collect();
    if picked.is_empty() {
        vec![choices[0]]
    } else {
        picked
    }
}

const PANS: [(&str, u64); 6] = [
    ("400000", 36),
    ("400000", 7),
    ("455555", 1),
    ("510000", 8),
    ("390000", 2),
    ("600000", 3),
];

fn random_rules(seeds: &[u64], tokens: &[u128]) -> String {
    let list = |items: Vec<&str>| items.join(", ");
    let token_texts: Vec<String> = tokens.iter().map(|t| format!("\"{t:032x}\"")).collect();
    let token_refs: Vec<&str> = token_texts.iter().map(String::as_str).collect();
    let mut text = String::from(
        "[risk]\nscore_decline = 40\nscore_review = 1\nvelocity_keys_max = 64\n[risk.rates]\n\"978\" = \"1.08\"\n",
    );
    for (i, &seed) in seeds.iter().enumerate() {
        text.push_str(&format!("[[risk.rules]]\nname = \"r{i}\"\n"));
        let kinds = some_of(
            seed,
            0,
            &[
                "\"authorization\"",
                "\"purchase\"",
                "\"withdrawal\"",
                "\"refund\"",
            ],
        );
        if !kinds.is_empty() {
            text.push_str(&format!("kinds = [{}]\n", list(kinds)));
        }
        // Kinds alone are no condition (the configuration refuses such a rule).
        let mut conditions = 0;
        let mut field = |key: &str, values: Vec<&str>| {
            if !values.is_empty() {
                conditions += 1;
                text.push_str(&format!("{key} = [{}]\n", list(values)));
            }
        };
        field(
            "merchant_categories",
            some_of(seed, 6, &["5999", "7995", "6011"]),
        );
        field("countries", some_of(seed, 11, &["840", "826", "124"]));
        field("currencies", some_of(seed, 16, &["840", "978"]));
        field(
            "merchants",
            some_of(seed, 20, &["\"M1\"", "\"M2\"", "\"MERCHANT0001\""]),
        );
        field("terminals", some_of(seed, 25, &["\"T1\"", "\"TERM0001\""]));
        field("acquirers", some_of(seed, 29, &["\"123456\"", "\"999\""]));
        field(
            "bin_ranges",
            some_of(
                seed,
                33,
                &[
                    "[\"40\", \"45\"]",
                    "[\"51\", \"55\"]",
                    "[\"4000\", \"4000\"]",
                    "[\"39\", \"41\"]",
                ],
            ),
        );
        field("bins", some_of(seed, 61, &["\"6\""]));
        field("cards", some_of(seed, 38, &token_refs[..4]));
        field("entry_modes", some_of(seed, 44, &["\"01\"", "\"05\""]));
        if (seed >> 48) & 3 == 0 || conditions == 0 {
            text.push_str("amount_above = \"50.00\"\n");
        }
        let velocity = (seed >> 50) & 7 == 0;
        if velocity {
            let per = ["card", "merchant", "terminal"][usize::try_from((seed >> 53) % 3).unwrap()];
            text.push_str(&format!(
                "per = \"{per}\"\nwindow_seconds = 60\ncount_max = {}\n",
                1 + (seed >> 55) % 3
            ));
        }
        // Mostly scores, so that every rule that applies shows in the score and the flag
        // (which names the rules), not only the first that declines.
        if (seed >> 57) & 7 != 0 {
            text.push_str(&format!("score = {}\n", 1 + (seed >> 60) % 3));
        } else {
            text.push_str("code = \"05\"\n");
        }
    }
    text
}

fn random_request(seed: u64, tokenizer: &Tokenizer) -> Request {
    let pick = |shift: u32, n: u64| usize::try_from((seed >> shift) % n).unwrap();
    let (prefix, index) = PANS[pick(0, 6)];
    let pan = Pan::from_scheme(prefix, index, 9).unwrap();
    let mut request = request(
        [
            Kind::Authorization,
            Kind::Purchase,
            Kind::CashWithdrawal,
            Kind::Refund,
            Kind::BalanceInquiry,
        ][pick(2, 5)],
        [100, 4_000, 6_000][pick(5, 3)],
    );
    request.card = tokenizer.token(&pan);
    request.pan = pan;
    request.merchant_category = [Some(5999), Some(7995), Some(6011), None][pick(7, 4)];
    request.country = [Some(840), Some(826), None][pick(9, 3)];
    request.currency = [Some(840), Some(978), Some(392), None][pick(11, 4)];
    let merchant = |id: &str| {
        let mut m = [b' '; 15];
        m[..id.len()].copy_from_slice(id.as_bytes());
        m
    };
    request.merchant = [Some(merchant("M1")), Some(merchant("MERCHANT0001")), None][pick(13, 3)];
    request.key.terminal = [*b"T1      ", *b"TERM0001", *b"OTHER   "][pick(15, 3)];
    request.key.acquirer = [123_456, 999, 7][pick(17, 3)];
    request.entry_mode = [Some(*b"012"), Some(*b"051"), None][pick(19, 3)];
    request
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The index only skips rules that cannot hold: over random rules (conditions on every
    /// field, velocity, scores) and random requests, testing the candidates decides exactly as
    /// testing every rule, velocity counts included.
    #[test]
    fn the_rule_index_decides_exactly_as_testing_every_rule(
        rule_seeds in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..160),
        request_seeds in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..80),
    ) {
        let tokenizer = Tokenizer::new([0; 16]);
        let tokens: Vec<u128> = PANS
            .iter()
            .map(|(prefix, index)| tokenizer.token(&Pan::from_scheme(prefix, *index, 9).unwrap()).hash)
            .collect();
        let text = random_rules(&rule_seeds, &tokens);
        let rules = Settings::parse(&text, "<random>").unwrap_or_else(|e| panic!("{e}\n{text}")).risk;
        let indexed = RiskEngine::new(rules.clone()).unwrap();
        let every = RiskEngine::new(rules).unwrap();
        for (n, &seed) in request_seeds.iter().enumerate() {
            let request = random_request(seed, &tokenizer);
            let now = NOON_MS + n as u64 * 1_000;
            let outcome = |result: Result<Passed, Decline>| match result {
                Ok(passed) => {
                    let flag = passed.flag.clone();
                    passed.approved();
                    Ok(flag)
                }
                Err(decline) => Err(decline),
            };
            let a = outcome(indexed.evaluate(&request, now));
            let b = outcome(every.screen(&request, now, false));
            proptest::prop_assert_eq!(a, b, "request {} of {:?}", n, request);
        }
    }
}

#[test]
fn the_rule_index_skips_the_rules_a_request_cannot_satisfy() {
    // Enough rules on each field for it to be indexed.
    let mut text = String::from("[risk]\nscore_review = 1\n");
    for i in 0..5 {
        text.push_str(&format!(
            "[[risk.rules]]\nname = \"mcc-{i}\"\nmerchant_categories = [{}]\ncode = \"57\"\n[[risk.rules]]\nname = \"bin-{i}\"\nbin_ranges = [[\"5{i}\", \"5{i}\"]]\ncode = \"62\"\n",
            7000 + i
        ));
    }
    text.push_str("[[risk.rules]]\nname = \"open\"\ncountries = [840]\nscore = 1\n");
    let engine = engine(&text);
    let request = request(Kind::Purchase, 100);
    let candidates = engine.index.candidates(&request, &|| Some(b'4'));
    let named: Vec<&str> = (0..engine.rules.rules.len())
        .filter(|&i| candidates[i / 64] & (1 << (i % 64)) != 0)
        .map(|i| &*engine.rules.rules[i].name)
        .collect();
    assert_eq!(named, ["amount_max", "open"], "MCC 5999 and a PAN of 4…");
    let mut gambling = request.clone();
    gambling.merchant_category = Some(7003);
    assert_eq!(
        verdict(&engine, &gambling, NOON_MS),
        declined("57", "mcc-3")
    );
}
