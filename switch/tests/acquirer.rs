//! The acquirer's view: ISO 8583 over TCP against the real binary, one response code at a time.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use adapters::{Message, Mti};
use common::*;

fn with(mut m: Message<'static>, field: u8, value: Option<&[u8]>) -> Message<'static> {
    match value {
        Some(v) => m.set(field, v.to_vec()),
        None => {
            m.remove(field);
        }
    }
    m
}

#[test]
fn every_response_code_of_the_demo_configuration() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(10);
    let mut unsupported = request("0100", &pan, "000000", 100);
    unsupported.mti = Mti(*b"0300");
    let cases: Vec<(&str, Message<'static>, &str)> = vec![
        (
            "authorization approved",
            request("0100", &pan, "000000", 100),
            "00",
        ),
        (
            "purchase approved",
            request("0200", &pan, "000000", 100),
            "00",
        ),
        (
            "cash withdrawal approved",
            request("0200", &pan, "010000", 100),
            "00",
        ),
        (
            "refund approved",
            request("0200", &pan, "200000", 100),
            "00",
        ),
        (
            "deposit approved",
            request("0200", &pan, "210000", 100),
            "00",
        ),
        (
            "advice recorded",
            request("0120", &pan, "000000", 100),
            "00",
        ),
        (
            "unknown processing code",
            request("0200", &pan, "990000", 100),
            "12",
        ),
        ("unsupported MTI", unsupported, "12"),
        (
            "zero-amount purchase",
            request("0200", &pan, "000000", 0),
            "13",
        ),
        (
            "Luhn-invalid PAN",
            request("0100", b"4000000000000003", "000000", 100),
            "14",
        ),
        (
            "PAN too short",
            request("0100", b"40000000003", "000000", 100),
            "14",
        ),
        (
            "unknown BIN",
            request("0100", b"5555555555554444", "000000", 100),
            "15",
        ),
        (
            "reversal of an original not seen yet (remembered)",
            referring("0400", &request("0100", &pan, "000000", 100), 100),
            "00",
        ),
        (
            "reversal of an original too old to arrive",
            referring(
                "0400",
                &with(
                    request("0100", &pan, "000000", 100),
                    7,
                    Some(&transmission_ago(2 * 86_400)),
                ),
                100,
            ),
            "25",
        ),
        (
            "completion of an unknown original",
            referring("0220", &request("0100", &pan, "000000", 100), 100),
            "25",
        ),
        (
            "amount missing",
            with(request("0100", &pan, "000000", 100), 4, None),
            "30",
        ),
        (
            "field 90 missing",
            with(
                referring("0400", &request("0100", &pan, "000000", 1), 1),
                90,
                None,
            ),
            "30",
        ),
        (
            "insufficient funds",
            request("0100", &demo_pan(1), "000000", 1),
            "51",
        ),
        (
            "expired card",
            with(request("0100", &pan, "000000", 100), 14, Some(b"2001")),
            "54",
        ),
        (
            "unknown acquirer",
            with(request("0100", &pan, "000000", 100), 32, Some(b"999999")),
            "58",
        ),
        (
            "over the card's 50.00 limit",
            request("0100", &demo_pan(4), "000000", 5_001),
            "61",
        ),
        (
            "at the card's 50.00 limit",
            request("0100", &demo_pan(4), "000000", 5_000),
            "00",
        ),
        (
            "over the switch-wide maximum",
            request("0200", &pan, "210000", 100_000_001),
            "61",
        ),
        (
            "blocked card",
            request("0100", &demo_pan(2), "000000", 100),
            "62",
        ),
        (
            "remote issuer without a link",
            request("0100", b"4111111111111111", "000000", 100),
            "91",
        ),
    ];
    let mut failures = Vec::new();
    for (name, message, expected) in &cases {
        let response = link.call(message);
        let expected_mti = message.mti.response().unwrap();
        if code(&response) != *expected || response.mti != expected_mti {
            failures.push(format!(
                "{name}: got {} {}, expected {expected_mti} {expected}",
                response.mti,
                code(&response)
            ));
        }
        let creates_transaction = !matches!(&message.mti.0, b"0120" | b"0220" | b"0400" | b"0420");
        if code(&response) == "00" && creates_transaction {
            assert!(response.has(38), "{name}: approval without field 38");
        } else {
            assert!(!response.has(38), "{name}: decline with field 38");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn retransmission_replays_and_a_conflicting_request_gets_94() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(20);
    let first = request("0100", &pan, "000000", 2_500);
    let approved = link.call(&first);
    assert_eq!(code(&approved), "00");
    assert_eq!(available(&mut link, &pan), 1_000_000 - 2_500);
    // Identical: same answer, no second hold, on another connection too.
    let mut other = switch.connect();
    assert_eq!(other.call(&first), approved);
    assert_eq!(available(&mut link, &pan), 1_000_000 - 2_500);
    // Same identity (32, 41, 11, 7), different content.
    let conflicting = with(first.clone(), 4, Some(b"000000009999"));
    assert_eq!(code(&link.call(&conflicting)), "94");
    // Same identity naming another card (another shard, possibly).
    let other_card = with(first.clone(), 2, Some(&demo_pan(21)));
    assert_eq!(code(&link.call(&other_card)), "94");
    assert_eq!(available(&mut link, &demo_pan(21)), 1_000_000);
}

#[test]
fn reversals_release_once_and_repeats_get_the_original_answer() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(30);
    let purchase = request("0200", &pan, "000000", 10_000);
    assert_eq!(code(&link.call(&purchase)), "00");
    assert_eq!(available(&mut link, &pan), 990_000);
    let reversal = referring("0400", &purchase, 10_000);
    let answer = link.call(&reversal);
    assert_eq!(
        (answer.mti, code(&answer)),
        (Mti(*b"0410"), "00".to_owned())
    );
    assert_eq!(available(&mut link, &pan), 1_000_000);
    // The repeat (0401) of the same reversal: the original answer, nothing released twice.
    let mut repeat = reversal.clone();
    repeat.mti = Mti(*b"0401");
    let repeated = link.call(&repeat);
    assert_eq!(
        (repeated.mti, code(&repeated)),
        (Mti(*b"0410"), "00".to_owned())
    );
    // A different reversal (new STAN) of the same original: approved, still released once.
    let advice = referring("0420", &purchase, 10_000);
    let answer = link.call(&advice);
    assert_eq!(
        (answer.mti, code(&answer)),
        (Mti(*b"0430"), "00".to_owned())
    );
    assert_eq!(available(&mut link, &pan), 1_000_000);
}

#[test]
fn completion_captures_a_hold() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(40);
    let hold = request("0100", &pan, "000000", 5_000);
    assert_eq!(code(&link.call(&hold)), "00");
    assert_eq!(available(&mut link, &pan), 995_000);
    assert_eq!(
        code(&link.call(&referring("0220", &hold, 6_000))),
        "13",
        "capture above the hold"
    );
    let completion = link.call(&referring("0220", &hold, 4_000));
    assert_eq!(
        (completion.mti, code(&completion)),
        (Mti(*b"0230"), "00".to_owned())
    );
    let balance = link.call(&request("0200", &pan, "310000", 0));
    assert_eq!(
        balance.get(54).unwrap(),
        b"0001840C0000009960000002840C000000996000",
        "ledger and available both 9,960.00 after capturing 40.00 of a 50.00 hold"
    );
}

#[test]
fn balance_inquiry_answers_ledger_and_available_in_field_54() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(0);
    assert_eq!(
        code(&link.call(&request("0100", &pan, "000000", 3_000))),
        "00"
    );
    let response = link.call(&request("0200", &pan, "310000", 0));
    assert_eq!(response.mti, Mti(*b"0210"));
    assert_eq!(
        response.get(54).unwrap(),
        b"0001840C0000000100000002840C000000007000"
    );
}

#[test]
fn a_thousand_pipelined_requests_are_all_answered_and_matched_by_stan() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let mut pending = std::collections::HashMap::new();
    let mut burst = Vec::new();
    for i in 0..1_000u64 {
        // Many cards, so both shards answer and responses may overtake each other.
        let message = request("0100", &demo_pan(1_000 + i % 97), "000000", 1 + i % 5);
        burst.extend_from_slice(&link.frame(&message));
        pending.insert(
            message.get(11).unwrap().to_vec(),
            message.get(4).unwrap().to_vec(),
        );
    }
    link.send_raw(&burst);
    for _ in 0..1_000 {
        let response = link.receive();
        let amount = pending
            .remove(response.get(11).unwrap())
            .expect("a response for a STAN sent once");
        assert_eq!(response.get(4).unwrap(), amount.as_slice());
        assert_eq!(code(&response), "00");
    }
    assert!(pending.is_empty());
}

#[test]
fn network_management_codes() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    for (code70, expected) in [
        ("001", "00"),
        ("301", "00"),
        ("201", "00"),
        ("002", "00"),
        ("999", "12"),
    ] {
        let response = link.call(&network(code70));
        assert_eq!(response.mti, Mti(*b"0810"));
        assert_eq!(
            (code(&response), response.get(70).unwrap()),
            (expected.to_owned(), code70.as_bytes())
        );
    }
    let mut missing = network("301");
    missing.remove(70);
    assert_eq!(code(&link.call(&missing)), "30");
}

#[test]
fn configured_limits_and_rules_answer_96_and_57() {
    let config = default_config_with(&[
        ("shards = 0 ", "shards = 1 "),
        (
            "transactions_per_shard_max = 100000000",
            "transactions_per_shard_max = 2",
        ),
        (
            "blocked_merchant_categories = []",
            "blocked_merchant_categories = [7995]",
        ),
    ]);
    let path = config_file("limits", &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let mut link = switch.connect();
    let casino = with(
        request("0200", &demo_pan(50), "000000", 100),
        18,
        Some(b"7995"),
    );
    assert_eq!(code(&link.call(&casino)), "57");
    assert_eq!(
        code(&link.call(&request("0200", &demo_pan(50), "000000", 100))),
        "00"
    );
    assert_eq!(
        code(&link.call(&request("0200", &demo_pan(51), "000000", 100))),
        "00"
    );
    assert_eq!(
        code(&link.call(&request("0200", &demo_pan(52), "000000", 100))),
        "96",
        "transaction table full"
    );
    assert_eq!(
        code(&link.call(&request("0200", &demo_pan(52), "310000", 0))),
        "00",
        "inquiries still served"
    );
}

#[test]
fn two_terminals_may_send_the_same_stan_in_the_same_second() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let first = request("0200", &demo_pan(70), "000000", 100);
    let mut second = request("0200", &demo_pan(71), "000000", 100);
    second.set(7, first.get(7).unwrap().to_vec());
    second.set(11, first.get(11).unwrap().to_vec());
    second.set(41, b"TERM0002".to_vec());
    assert_eq!(code(&link.call(&first)), "00");
    assert_eq!(code(&link.call(&second)), "00");
    // Each reversal, from its own terminal, finds its own original.
    assert_eq!(code(&link.call(&referring("0400", &second, 100))), "00");
    assert_eq!(available(&mut link, &demo_pan(70)), 1_000_000 - 100);
    assert_eq!(available(&mut link, &demo_pan(71)), 1_000_000);
}

/// More requests than a shard may have waiting (`limits.mailbox_capacity`, here 16), sent at
/// once: each is answered exactly once, the excess with 91 at once, and exactly the approved
/// ones moved money.
#[test]
fn a_burst_beyond_what_a_shard_may_have_waiting_is_shed_and_moves_no_money() {
    let config = config_file(
        "shed-burst",
        // One shard and one worker, whatever the machine: the first read's frames (up to a
        // hundred) then all wait for the same shard.
        &default_config_with(&[
            ("mailbox_capacity = 4096", "mailbox_capacity = 16   "),
            ("shards = 0 ", "shards = 1 "),
            ("workers = 0 ", "workers = 1 "),
        ]),
    );
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    let mut link = switch.connect();
    const BURST: u64 = 400;
    let mut sent = std::collections::HashMap::new();
    let mut frames = Vec::new();
    for n in 0..BURST {
        let pan = demo_pan(5_000 + n);
        let purchase = request("0200", &pan, "000000", 100);
        frames.extend_from_slice(&link.frame(&purchase));
        sent.insert(purchase.get(11).unwrap().to_vec(), pan);
    }
    // One write: the switch reads them in a few turns, far more than 16 per shard.
    link.send_raw(&frames);
    let mut codes = std::collections::HashMap::new();
    for _ in 0..BURST {
        let response = link.receive();
        let stan = response.get(11).unwrap().to_vec();
        assert!(sent.contains_key(&stan), "an answer to a request not sent");
        assert!(
            codes.insert(stan, code(&response)).is_none(),
            "a request answered twice"
        );
    }
    let approved = codes.values().filter(|c| *c == "00").count();
    let shed = codes.values().filter(|c| *c == "91").count();
    assert_eq!(approved + shed, codes.len(), "only 00 and 91: {codes:?}");
    assert!(approved > 0, "some were approved");
    assert!(shed > 0, "some were shed: the burst exceeded what may wait");
    for (stan, pan) in &sent {
        let expected = if codes[stan] == "00" {
            999_900
        } else {
            1_000_000
        };
        assert_eq!(available(&mut link, pan), expected, "card of STAN {stan:?}");
    }
}
