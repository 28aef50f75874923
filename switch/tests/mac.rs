//! DESIGN §2.6, the MAC, over TCP against the real binary: an acquirer configured with
//! `mac = "aes-cmac"` must sign every request but network management (field 64, or 128 with a
//! secondary bitmap); a missing, wrong or stale MAC is answered 63 and moves no money, and every
//! response on a connection it signed for carries a MAC the acquirer can check. The MACs here
//! are computed with the RustCrypto `cmac` crate directly, not with the switch's own module.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use adapters::{DialectName, Message, Mti};
use aes::Aes128;
use cmac::{Cmac, Mac};
use common::*;

const KEY_HEX: &str = "2b7e151628aed2a6abf7158809cf4f3c";

fn key() -> [u8; 16] {
    let mut key = [0u8; 16];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&KEY_HEX[2 * i..2 * i + 2], 16).unwrap();
    }
    key
}

fn cmac8(data: &[u8]) -> Vec<u8> {
    let mut mac = <Cmac<Aes128> as cmac::digest::KeyInit>::new_from_slice(&key()).unwrap();
    mac.update(data);
    mac.finalize().into_bytes()[..8].to_vec()
}

fn encode(message: &Message<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    DialectName::Default
        .dialect()
        .encode(message, &mut body)
        .unwrap();
    body
}

/// `message` with its MAC in `field`: CMAC of the encoded bytes before the last 8.
fn signed_in(message: &Message<'_>, field: u8) -> Message<'static> {
    let mut m = message.clone().into_owned();
    m.set(field, vec![0u8; 8]);
    let body = encode(&m);
    m.set(field, cmac8(&body[..body.len() - 8]));
    m
}

/// `message` signed the way DESIGN §2.6 says: field 128 when any field above 64 is present.
fn signed(message: &Message<'_>) -> Message<'static> {
    let above_64 = message.fields().any(|(field, _)| field > 64);
    signed_in(message, if above_64 { 128 } else { 64 })
}

/// Whether a response carries a correct MAC as its last field.
fn response_mac_is_correct(response: &Message<'_>) -> bool {
    let body = encode(response);
    let Some((field, value)) = response.fields().last() else {
        return false;
    };
    let expected_field = if response.fields().any(|(f, _)| f > 64 && f != 128) {
        128
    } else {
        64
    };
    field == expected_field && value == cmac8(&body[..body.len() - 8]).as_slice()
}

fn start() -> Switch {
    let config = default_config_with(&[(
        "name = \"Demo acquirer\"",
        &format!("name = \"Demo acquirer\"\nmac = \"aes-cmac\"\nmac_key = \"{KEY_HEX}\""),
    )]);
    let path = config_file("mac", &config);
    Switch::start(&["--config", path.to_str().unwrap()])
}

fn available_signed(link: &mut Link, pan: &[u8]) -> i64 {
    let response = link.call(&signed(&request("0200", pan, "310000", 0)));
    assert_eq!(code(&response), "00");
    assert!(response_mac_is_correct(&response));
    let f54 = response.get(54).unwrap();
    let block = f54.chunks(20).find(|b| &b[2..4] == b"02").unwrap();
    std::str::from_utf8(&block[8..20]).unwrap().parse().unwrap()
}

#[test]
fn requests_need_a_correct_mac_and_responses_carry_one() {
    let switch = start();
    let mut link = switch.connect();
    let pan = demo_pan(301);

    // Unsigned, before the connection is bound: 63 and nothing moves.
    let unsigned = request("0200", &pan, "000000", 1_000);
    assert_eq!(code(&link.call(&unsigned)), "63");

    // Network management needs none and gets none back.
    let echo = link.call(&network("301"));
    assert_eq!(code(&echo), "00");
    assert!(!echo.has(64) && !echo.has(128));

    let before = available_signed(&mut link, &pan);
    assert_eq!(before, 1_000_000);

    // A purchase signed correctly is approved, and its response is signed.
    let purchase = signed(&request("0200", &pan, "000000", 1_000));
    let answer = link.call(&purchase);
    assert_eq!(code(&answer), "00");
    assert!(
        response_mac_is_correct(&answer),
        "the response's MAC verifies"
    );
    assert_eq!(available_signed(&mut link, &pan), before - 1_000);

    // Tampering after signing: the amount raised, the MAC kept.
    let mut raised = signed(&request("0200", &pan, "000000", 1_000));
    raised.set(4, b"000000900000".to_vec());
    let answer = link.call(&raised);
    assert_eq!(code(&answer), "63");
    assert!(
        response_mac_is_correct(&answer),
        "63 on a bound connection is signed too"
    );

    // One bit of the MAC flipped.
    let mut flipped = signed(&request("0200", &pan, "000000", 1_000));
    let mut mac = flipped.get(64).unwrap().to_vec();
    mac[7] ^= 0x01;
    flipped.set(64, mac);
    assert_eq!(code(&link.call(&flipped)), "63");

    // A MAC made with another key.
    let mut foreign = request("0200", &pan, "000000", 1_000);
    foreign.set(64, vec![0u8; 8]);
    let body = encode(&foreign);
    let mut other = <Cmac<Aes128> as cmac::digest::KeyInit>::new_from_slice(&[9u8; 16]).unwrap();
    other.update(&body[..body.len() - 8]);
    foreign.set(64, other.finalize().into_bytes()[..8].to_vec());
    assert_eq!(code(&link.call(&foreign)), "63");

    // Unsigned again on the bound connection.
    assert_eq!(
        code(&link.call(&request("0200", &pan, "000000", 1_000))),
        "63"
    );
    assert_eq!(available_signed(&mut link, &pan), before - 1_000);

    // A retransmission of the approved purchase is answered from memory, signed.
    let again = link.call(&purchase);
    assert_eq!(code(&again), "00");
    assert!(response_mac_is_correct(&again));
    assert_eq!(available_signed(&mut link, &pan), before - 1_000);

    // With field 90 present the MAC belongs in field 128: in 64 it is not the last field.
    let reversal = referring("0420", &purchase, 1_000);
    assert_eq!(code(&link.call(&signed_in(&reversal, 64))), "63");
    assert_eq!(available_signed(&mut link, &pan), before - 1_000);
    let answer = link.call(&signed(&reversal));
    assert_eq!(
        (answer.mti, code(&answer)),
        (Mti(*b"0430"), "00".to_owned())
    );
    assert!(response_mac_is_correct(&answer));
    assert_eq!(available_signed(&mut link, &pan), before);
}

#[test]
fn a_connection_whose_requests_fail_the_mac_takes_no_acquirer_connection() {
    let config = default_config_with(&[(
        "name = \"Demo acquirer\"\nconnections_max = 256",
        &format!(
            "name = \"Demo acquirer\"\nmac = \"aes-cmac\"\nmac_key = \"{KEY_HEX}\"\nconnections_max = 1"
        ),
    )]);
    let path = config_file("mac-connections", &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    // Someone without the key cannot take the acquirer's only connection.
    let mut intruder = switch.connect();
    let pan = demo_pan(302);
    assert_eq!(
        code(&intruder.call(&request("0200", &pan, "310000", 0))),
        "63"
    );
    let mut acquirer = switch.connect();
    let answer = acquirer.call(&signed(&request("0200", &pan, "310000", 0)));
    assert_eq!(code(&answer), "00");
    assert!(response_mac_is_correct(&answer));
}

#[test]
fn a_mac_key_that_is_not_32_hex_digits_stops_the_start_without_echoing_it() {
    let config = default_config_with(&[(
        "name = \"Demo acquirer\"",
        "name = \"Demo acquirer\"\nmac = \"aes-cmac\"\nmac_key = \"SECRETSECRETSECRETSECRETSECRETZZ\"",
    )]);
    let path = config_file("mac-bad-key", &config);
    let (status, _, stderr) = run_switch(&["run", "--config", path.to_str().unwrap()]);
    assert_ne!(status, 0);
    assert!(stderr.contains("mac_key"), "{stderr}");
    assert!(!stderr.contains("SECRETSECRET"), "{stderr}");
}

/// In `ascii-hex-bitmap` the MAC field carries the 8 bytes as 16 hex digits, and the MAC covers
/// the message bytes before those 16.
#[test]
fn the_hex_dialect_carries_the_mac_as_16_hex_digits() {
    let config = default_config_with(&[
        ("dialect = \"default\"", "dialect = \"ascii-hex-bitmap\""),
        (
            "name = \"Demo acquirer\"",
            &format!("name = \"Demo acquirer\"\nmac = \"aes-cmac\"\nmac_key = \"{KEY_HEX}\""),
        ),
    ]);
    let path = config_file("mac-hex", &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let dialect = DialectName::AsciiHexBitmap.dialect();
    let hex = |bytes: &[u8]| -> Vec<u8> {
        bytes
            .iter()
            .flat_map(|b| format!("{b:02X}").into_bytes())
            .collect()
    };
    let mut link = Link::connect(
        switch.addr,
        DialectName::AsciiHexBitmap,
        adapters::FrameHeader::Binary2,
    );
    let mut inquiry = request("0200", &demo_pan(303), "310000", 0);
    inquiry.set(64, b"0000000000000000".to_vec());
    let mut body = Vec::new();
    dialect.encode(&inquiry, &mut body).unwrap();
    inquiry.set(64, hex(&cmac8(&body[..body.len() - 16])));
    let answer = link.call(&inquiry);
    assert_eq!(code(&answer), "00");
    let mut body = Vec::new();
    dialect.encode(&answer, &mut body).unwrap();
    assert_eq!(
        answer.get(64).unwrap(),
        hex(&cmac8(&body[..body.len() - 16])).as_slice()
    );
    // The same digits in lower case are the same MAC; one digit changed is not.
    let mut lower = request("0200", &demo_pan(303), "310000", 0);
    lower.set(64, b"0000000000000000".to_vec());
    let mut body = Vec::new();
    dialect.encode(&lower, &mut body).unwrap();
    let mac = hex(&cmac8(&body[..body.len() - 16]));
    lower.set(64, mac.to_ascii_lowercase());
    assert_eq!(code(&link.call(&lower)), "00");
    let mut changed = mac.clone();
    changed[0] = if changed[0] == b'0' { b'1' } else { b'0' };
    let mut wrong = lower.clone();
    wrong.set(11, next_stan());
    wrong.set(64, changed);
    assert_eq!(code(&link.call(&wrong)), "63");
}

/// A repeat (0401) is signed over its own MTI, so its MAC differs from the 0400's: it must still
/// be answered as the same reversal, not 94. 63s are counted, and the key shows nowhere.
#[test]
fn a_signed_repeat_is_the_same_reversal_and_the_key_never_shows() {
    let switch = start();
    let mut link = switch.connect();
    let pan = demo_pan(304);
    let before = available_signed(&mut link, &pan);
    let purchase = signed(&request("0200", &pan, "000000", 2_500));
    assert_eq!(code(&link.call(&purchase)), "00");
    let reversal = referring("0400", &purchase, 2_500);
    let answer = link.call(&signed(&reversal));
    assert_eq!(
        (answer.mti, code(&answer)),
        (Mti(*b"0410"), "00".to_owned())
    );
    let mut repeat = reversal.clone();
    repeat.mti = Mti(*b"0401");
    let repeat = signed(&repeat);
    assert_ne!(repeat.get(128), signed(&reversal).get(128));
    let again = link.call(&repeat);
    assert_eq!((again.mti, code(&again)), (Mti(*b"0410"), "00".to_owned()));
    assert!(response_mac_is_correct(&again));
    assert_eq!(available_signed(&mut link, &pan), before);

    for _ in 0..3 {
        assert_eq!(code(&link.call(&request("0200", &pan, "000000", 1))), "63");
    }
    let (_, metrics) = switch.http_get("/metrics");
    assert!(
        metrics.contains(
            "switch_transactions_total{mti=\"0200\",response_code=\"63\",route=\"none\"} 3"
        ),
        "{metrics}"
    );
    let key_upper = KEY_HEX.to_ascii_uppercase();
    assert!(!metrics.contains(KEY_HEX) && !metrics.contains(&key_upper));
    for line in switch.output() {
        assert!(
            !line.contains(KEY_HEX) && !line.contains(&key_upper),
            "{line}"
        );
    }
}
