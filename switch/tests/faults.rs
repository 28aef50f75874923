//! Bad frames and other dialects: the connection at fault is closed or answered 30, and the
//! switch goes on serving everyone else.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use adapters::{DialectName, FrameHeader, Mti};
use common::*;

#[test]
fn an_oversized_frame_closes_only_that_connection() {
    let switch = Switch::start(&[]);
    let mut bystander = switch.connect();
    let mut offender = switch.connect();
    // Declares 60,000 bytes: refused from the header alone, before any body arrives.
    offender.send_raw(&[0xEA, 0x60]);
    assert!(offender.try_receive().is_none(), "connection closed");
    let line = switch.wait_for_output("frame of 60000 bytes exceeds max_frame_bytes = 8192");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert_eq!(code(&bystander.call(&network("301"))), "00");
}

#[test]
fn an_unreadable_frame_closes_the_connection_with_a_log_line() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    link.send_raw(b"\x00\x06AB\x01\x02\x03\x04");
    assert!(link.try_receive().is_none());
    switch.wait_for_output("unreadable message: MTI at byte 0: MTI is not 4 digits");
    assert_eq!(code(&switch.connect().call(&network("301"))), "00");
}

#[test]
fn a_malformed_field_is_answered_30_and_the_connection_stays_usable() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    let mut message = request("0100", &demo_pan(5), "000000", 100);
    message.set(4, b"00000000010X".to_vec());
    // Our encoder refuses a non-digit in field 4, so build the bytes by hand.
    let mut body = Vec::new();
    message.set(4, b"000000000100".to_vec());
    DialectName::Default
        .dialect()
        .encode(&message, &mut body)
        .unwrap();
    let at = body.windows(12).position(|w| w == b"000000000100").unwrap();
    body[at + 11] = b'X';
    let mut frame = Vec::new();
    FrameHeader::Binary2.write_frame(&body, &mut frame).unwrap();
    link.send_raw(&frame);
    let response = link.receive();
    assert_eq!(
        (response.mti, code(&response)),
        (Mti(*b"0110"), "30".to_owned())
    );
    assert_eq!(response.get(11), message.get(11));
    switch.wait_for_output("field 4 at byte");
    assert_eq!(
        code(&link.call(&request("0100", &demo_pan(5), "000000", 100))),
        "00"
    );
}

#[test]
fn a_message_without_field_11_closes_the_connection() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    // 0100 with only field 4, and that one truncated.
    link.send_raw(b"\x00\x0E0100\x10\x00\x00\x00\x00\x00\x00\x00AB");
    assert!(link.try_receive().is_none());
    switch.wait_for_output("field 4 at byte 12: needs 12 bytes, only 2 left");
}

#[test]
fn keep_alive_frames_are_ignored() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    link.send_raw(&[0, 0, 0, 0]);
    let response = link.call(&network("301"));
    assert_eq!(code(&response), "00");
}

#[test]
fn a_frame_cut_by_the_peer_is_logged() {
    let switch = Switch::start(&[]);
    let mut link = switch.connect();
    link.send_raw(b"\x00\x40012");
    link.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(link.try_receive().is_none());
    switch.wait_for_output("in the middle of a frame (5 bytes pending)");
}

fn serve_dialect(dialect: &str, framing: &str) {
    let config = default_config_with(&[
        ("dialect = \"default\"", &format!("dialect = \"{dialect}\"")),
        ("framing = \"binary2\"", &format!("framing = \"{framing}\"")),
    ]);
    let path = config_file(&format!("dialect-{dialect}-{framing}"), &config);
    let switch = Switch::start(&["--config", path.to_str().unwrap()]);
    let mut link = Link::connect(
        switch.addr,
        dialect.parse().unwrap(),
        framing.parse().unwrap(),
    );
    assert_eq!(code(&link.call(&network("001"))), "00");
    let approved = link.call(&request("0100", &demo_pan(6), "000000", 1_234));
    assert_eq!((code(&approved), approved.has(38)), ("00".to_owned(), true));
    assert_eq!(available(&mut link, &demo_pan(6)), 1_000_000 - 1_234);
}

#[test]
fn ascii_hex_bitmap_dialect_with_ascii_length_headers() {
    serve_dialect("ascii-hex-bitmap", "ascii4");
}

#[test]
fn bcd_dialect_with_binary_length_headers() {
    serve_dialect("bcd", "binary2");
}
