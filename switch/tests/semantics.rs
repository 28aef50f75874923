//! DESIGN §2.2 over TCP against the real binary: the messages that name an original
//! (completions, partial and full reversals, reversals that overtake their original), the
//! acquirer's own transactions, retransmissions of a request still being decided, and the
//! session limits (write timeout, connections per acquirer). Balances are read before and after
//! each case with balance inquiries, as an acquirer would.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use adapters::Mti;
use common::*;

/// Ledger and available balance from field 54 of a balance inquiry.
fn balances(link: &mut Link, pan: &[u8]) -> (i64, i64) {
    let response = link.call(&request("0200", pan, "310000", 0));
    assert_eq!(code(&response), "00");
    let f54 = response.get(54).expect("field 54");
    let amount = |kind: &[u8]| {
        let block = f54.chunks(20).find(|b| &b[2..4] == kind).unwrap();
        let value: i64 = std::str::from_utf8(&block[8..20]).unwrap().parse().unwrap();
        if block[7] == b'D' { -value } else { value }
    };
    (amount(b"01"), amount(b"02"))
}

/// Field 95 saying the original really amounted to `actual` minor units.
fn replacement(actual: u64) -> Vec<u8> {
    format!("{actual:012}{actual:012}C00000000C00000000").into_bytes()
}

const START: (i64, i64) = (1_000_000, 1_000_000);

#[test]
fn a_hold_may_be_completed_several_times_up_to_what_it_authorized() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(101);
    assert_eq!(balances(&mut link, &pan), START);
    let hold = request("0100", &pan, "000000", 10_000);
    assert_eq!(code(&link.call(&hold)), "00");
    assert_eq!(balances(&mut link, &pan), (1_000_000, 990_000));
    // 30.00 captured, the rest of the hold released.
    assert_eq!(code(&link.call(&referring("0220", &hold, 3_000))), "00");
    assert_eq!(balances(&mut link, &pan), (997_000, 997_000));
    // A split shipment under a new STAN: 50.00 of the 70.00 still authorized.
    assert_eq!(code(&link.call(&referring("0220", &hold, 5_000))), "00");
    assert_eq!(balances(&mut link, &pan), (992_000, 992_000));
    // 20.00 remain: 20.01 is refused, 20.00 captured.
    assert_eq!(code(&link.call(&referring("0220", &hold, 2_001))), "13");
    assert_eq!(code(&link.call(&referring("0220", &hold, 2_000))), "00");
    assert_eq!(balances(&mut link, &pan), (990_000, 990_000));
    assert_eq!(code(&link.call(&referring("0220", &hold, 1))), "13");
}

#[test]
fn a_partial_reversal_returns_only_what_did_not_happen() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(102);
    assert_eq!(balances(&mut link, &pan), START);
    let withdrawal = request("0200", &pan, "010000", 10_000);
    assert_eq!(code(&link.call(&withdrawal)), "00");
    assert_eq!(balances(&mut link, &pan), (990_000, 990_000));
    // The ATM dispensed 70.00 of 100.00.
    let mut advice = referring("0420", &withdrawal, 10_000);
    advice.set(95, replacement(7_000));
    let answer = link.call(&advice);
    assert_eq!(
        (answer.mti, code(&answer)),
        (Mti(*b"0430"), "00".to_owned())
    );
    assert_eq!(balances(&mut link, &pan), (993_000, 993_000));
    // Its repeat, and another reversal to the same amount, return nothing more.
    let mut repeat = advice.clone();
    repeat.mti = Mti(*b"0421");
    assert_eq!(code(&link.call(&repeat)), "00");
    let mut again = referring("0420", &withdrawal, 10_000);
    again.set(95, replacement(7_000));
    assert_eq!(code(&link.call(&again)), "00");
    assert_eq!(balances(&mut link, &pan), (993_000, 993_000));
    // More than the original amount is no replacement for it.
    let mut too_much = referring("0400", &withdrawal, 10_000);
    too_much.set(95, replacement(10_001));
    assert_eq!(code(&link.call(&too_much)), "13");
    // A full reversal returns the 70.00 still charged, once.
    assert_eq!(
        code(&link.call(&referring("0400", &withdrawal, 10_000))),
        "00"
    );
    assert_eq!(balances(&mut link, &pan), START);

    // On a hold, a partial reversal lowers the hold.
    let hold = request("0100", &pan, "000000", 8_000);
    assert_eq!(code(&link.call(&hold)), "00");
    let mut lower = referring("0400", &hold, 8_000);
    lower.set(95, replacement(5_000));
    assert_eq!(code(&link.call(&lower)), "00");
    assert_eq!(balances(&mut link, &pan), (1_000_000, 995_000));
    assert_eq!(code(&link.call(&referring("0220", &hold, 5_001))), "13");
}

#[test]
fn a_reversal_that_overtakes_its_original_is_remembered_and_the_original_moves_nothing() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(103);
    assert_eq!(balances(&mut link, &pan), START);
    let purchase = request("0200", &pan, "000000", 10_000);
    let reversal = referring("0420", &purchase, 10_000);
    let answer = link.call(&reversal);
    assert_eq!(
        (answer.mti, code(&answer)),
        (Mti(*b"0430"), "00".to_owned())
    );
    // The original arrives late: answered 12, no money moves, now or on a retransmission.
    assert_eq!(code(&link.call(&purchase)), "12");
    assert_eq!(code(&link.call(&purchase)), "12");
    assert_eq!(balances(&mut link, &pan), START);
    // The same for an authorization.
    let hold = request("0100", &pan, "000000", 5_000);
    assert_eq!(code(&link.call(&referring("0400", &hold, 5_000))), "00");
    assert_eq!(code(&link.call(&hold)), "12");
    assert_eq!(balances(&mut link, &pan), START);
}

#[test]
fn a_completion_can_be_reversed_by_its_own_key() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let pan = demo_pan(104);
    let hold = request("0100", &pan, "000000", 10_000);
    assert_eq!(code(&link.call(&hold)), "00");
    let completion = referring("0220", &hold, 6_000);
    assert_eq!(code(&link.call(&completion)), "00");
    assert_eq!(balances(&mut link, &pan), (994_000, 994_000));
    // The authorization's money moved under the completion's key: reverse that.
    assert_eq!(code(&link.call(&referring("0400", &hold, 10_000))), "12");
    let undo = referring("0420", &completion, 6_000);
    let answer = link.call(&undo);
    assert_eq!(
        (answer.mti, code(&answer)),
        (Mti(*b"0430"), "00".to_owned())
    );
    assert_eq!(balances(&mut link, &pan), START);
    // Undone once; and what it captured may be captured again.
    assert_eq!(
        code(&link.call(&referring("0420", &completion, 6_000))),
        "00"
    );
    assert_eq!(balances(&mut link, &pan), START);
    assert_eq!(code(&link.call(&referring("0220", &hold, 10_000))), "00");
    assert_eq!(balances(&mut link, &pan), (990_000, 990_000));
}

/// The demo configuration with a second acquirer and a `group_wait_micros` that keeps each
/// request undecided for a while, so that retransmissions meet their original in flight.
fn two_acquirers(extra: &[(&str, &str)]) -> std::path::PathBuf {
    let mut edits = vec![(
        "[[routes]]",
        "[[acquirers]]\nid = \"654321\"\nname = \"Second acquirer\"\n\n[[routes]]",
    )];
    edits.extend_from_slice(extra);
    config_file("semantics", &default_config_with(&edits))
}

#[test]
fn nobody_completes_or_reverses_another_acquirers_transaction() {
    let config = two_acquirers(&[]);
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    let mut ours = switch.connect();
    let pan = demo_pan(105);
    let hold = request("0100", &pan, "000000", 10_000);
    assert_eq!(code(&ours.call(&hold)), "00");
    // The other acquirer names our hold in field 90, under its own field 32.
    let mut theirs = switch.connect();
    for mti in ["0220", "0400", "0420"] {
        let mut foreign = referring(mti, &hold, 10_000);
        foreign.set(32, b"654321".to_vec());
        assert_eq!(code(&theirs.call(&foreign)), "58", "{mti}");
    }
    assert_eq!(balances(&mut ours, &pan), (1_000_000, 990_000));
    // A connection speaks for one acquirer: the first it named.
    let mut switched = request("0100", &pan, "000000", 100);
    switched.set(32, b"123456".to_vec());
    assert_eq!(code(&theirs.call(&switched)), "58");
}

#[test]
fn a_retransmission_on_a_new_link_waits_for_its_original_and_gets_the_same_answer() {
    let config = two_acquirers(&[("group_wait_micros = 0", "group_wait_micros = 50000")]);
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    let pan = demo_pan(106);
    let mut check = switch.connect();
    // 19 rounds and one more below: the demo velocity rule answers 65 to a 21st approval.
    for round in 0..19 {
        let hold = request("0100", &pan, "000000", 100);
        // The original's link drops right after sending it.
        {
            let mut first = switch.connect();
            first.send(&hold);
            first.stream.shutdown(std::net::Shutdown::Both).unwrap();
        }
        let mut second = switch.connect();
        let answer = second.call(&hold);
        assert_eq!(code(&answer), "00", "round {round}");
        assert!(answer.has(38));
        // Once more on the same link while nothing is in flight: the same answer again.
        assert_eq!(second.call(&hold), answer, "round {round}");
    }
    assert_eq!(
        balances(&mut check, &pan),
        (1_000_000, 1_000_000 - 19 * 100),
        "one hold per request"
    );
    // Two copies on one link, and one on another, all while the original is undecided.
    let hold = request("0100", &pan, "000000", 100);
    let mut a = switch.connect();
    let mut b = switch.connect();
    a.send(&hold);
    a.send(&hold);
    b.send(&hold);
    let answers = [a.receive(), a.receive(), b.receive()];
    assert!(answers.iter().all(|r| code(r) == "00" && r == &answers[0]));
    assert_eq!(
        balances(&mut check, &pan),
        (1_000_000, 1_000_000 - 20 * 100)
    );
    // The copies met their original undecided (not only answered from the table afterwards).
    let waited = switch
        .output()
        .iter()
        .filter(|l| l.contains("still being decided: waits for its answer"))
        .count();
    assert!(
        waited >= 2,
        "only {waited} retransmissions met their original in flight"
    );
}

#[test]
fn a_peer_that_stops_reading_is_closed_after_the_write_timeout() {
    let config = config_file(
        "write-timeout",
        &default_config_with(&[("write_timeout_seconds = 10", "write_timeout_seconds = 1")]),
    );
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    let stalled = TcpStream::connect(switch.addr).unwrap();
    stalled
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let link = switch.connect();
    let frame = link.frame(&request("0200", &demo_pan(107), "310000", 0));
    // Balance inquiries, never reading an answer, until the switch gives up on this peer.
    let writer = std::thread::spawn(move || {
        let mut stalled = stalled;
        let started = Instant::now();
        for _ in 0..400_000 {
            if stalled.write_all(&frame).is_err() || started.elapsed() > Duration::from_secs(60) {
                return true;
            }
        }
        false
    });
    switch.wait_for_output("reads no responses");
    assert!(writer.join().unwrap(), "the switch closed the connection");
    // Other connections are unaffected.
    let mut link = link;
    assert_eq!(balances(&mut link, &demo_pan(107)), START);
}

#[test]
fn an_acquirer_holds_at_most_its_configured_connections() {
    let config = config_file(
        "acquirer-connections",
        &default_config_with(&[("connections_max = 256 ", "connections_max = 2 ")]),
    );
    let switch = Switch::start(&["--config", config.to_str().unwrap()]);
    let pan = demo_pan(108);
    let mut first = switch.connect();
    let mut second = switch.connect();
    assert_eq!(
        code(&first.call(&request("0100", &pan, "000000", 100))),
        "00"
    );
    assert_eq!(
        code(&second.call(&request("0100", &pan, "000000", 100))),
        "00"
    );
    let mut third = switch.connect();
    assert_eq!(
        code(&third.call(&request("0100", &pan, "000000", 100))),
        "91"
    );
    assert!(
        third.try_receive_or_error().is_none(),
        "closed after its 91"
    );
    switch.wait_for_output("already holds its 2 connections");
    drop(second);
    // The freed place is taken again (the switch notices the close first).
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut again = switch.connect();
        let answer = again.call(&request("0100", &pan, "000000", 100));
        if code(&answer) == "00" {
            break;
        }
        assert!(Instant::now() < deadline, "the place never came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(balances(&mut first, &pan), (1_000_000, 1_000_000 - 300));
}

/// Authorization codes are 6 characters of 0-9 and A-Z.
#[test]
fn authorization_codes_are_six_characters() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let mut seen = std::collections::HashSet::new();
    for n in 0..200 {
        let answer = link.call(&request("0100", &demo_pan(2_000 + n), "000000", 1));
        let id = answer.get(38).unwrap().to_vec();
        assert_eq!(id.len(), 6);
        assert!(
            id.iter()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert!(seen.insert(id), "a repeated authorization code");
    }
}
