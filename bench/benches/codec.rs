//! Decode and encode of a typical 0100 / 0110 pair in the default dialect (DESIGN §7 goal:
//! decode + encode under 1 µs). Run: `cargo bench -p bench --bench codec`.

use std::hint::black_box;

use adapters::{DialectName, Message, Mti};
use criterion::{Criterion, criterion_group, criterion_main};
use switch::domain::{Outcome, ResponseCode};

/// The 0100 of the shared pyiso8583 vectors: 17 fields, as an acquirer sends it.
fn authorization() -> Vec<u8> {
    let mut m = Message::new(Mti(*b"0100"));
    for (field, value) in [
        (2, &b"4000000000000002"[..]),
        (3, b"000000"),
        (4, b"000000001000"),
        (7, b"1126143015"),
        (11, b"000123"),
        (12, b"143015"),
        (13, b"1126"),
        (14, b"2812"),
        (18, b"5999"),
        (22, b"051"),
        (25, b"00"),
        (32, b"123456"),
        (37, b"633014000123"),
        (41, b"TERM0001"),
        (42, b"MERCHANT0000001"),
        (43, b"DEMO SHOP              CITY         US  "),
        (49, b"840"),
    ] {
        m.set(field, value);
    }
    let mut wire = Vec::new();
    DialectName::Default
        .dialect()
        .encode(&m, &mut wire)
        .expect("valid message");
    wire
}

fn codec(c: &mut Criterion) {
    let dialect = DialectName::Default.dialect();
    let request = authorization();
    let approved = Outcome {
        code: ResponseCode::Approved,
        auth_id: Some(*b"000042"),
        balances: None,
    };
    let mut out = Vec::with_capacity(512);

    c.bench_function("decode 0100", |b| {
        b.iter(|| dialect.decode(black_box(&request)).map(|m| m.field_count()))
    });

    let decoded = dialect.decode(&request).expect("valid message");
    let response =
        switch::acquirer::iso::response(&decoded, &approved).expect("0100 has a response");
    c.bench_function("encode 0110", |b| {
        b.iter(|| {
            out.clear();
            dialect.encode(black_box(&response), &mut out)
        })
    });

    let framing = adapters::FrameHeader::Binary2;
    c.bench_function("frame 0110: encode and fill the header in place", |b| {
        b.iter(|| {
            let mut frame = vec![0u8; 2];
            dialect
                .encode(black_box(&response), &mut frame)
                .expect("encodes");
            framing.fill(frame.len() - 2, &mut frame).expect("fits");
            frame
        })
    });

    // What the session does per request: decode the 0100, build and encode the 0110.
    c.bench_function("decode 0100 + build and encode 0110", |b| {
        b.iter(|| {
            let request = dialect.decode(black_box(&request)).expect("valid");
            let response = switch::acquirer::iso::response(&request, &approved).expect("response");
            out.clear();
            dialect.encode(&response, &mut out)
        })
    });

    // What a MAC-keyed acquirer adds (DESIGN 2.6): verify the request's MAC, sign the response.
    let key = switch::acquirer::mac::MacKey([0x2b; 16]);
    let mut signed = request.clone();
    signed.extend_from_slice(&[0; 8]);
    let len = signed.len();
    switch::acquirer::mac::sign(&key, &mut signed, 8);
    c.bench_function("MAC: verify the 0100's and sign the 0110 (AES-CMAC)", |b| {
        b.iter(|| {
            let ok = switch::acquirer::mac::verify(&key, black_box(&signed), &signed[len - 8..]);
            out.clear();
            out.extend_from_slice(black_box(&request));
            out.extend_from_slice(&[0; 8]);
            switch::acquirer::mac::sign(&key, &mut out, 8);
            ok
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
