//! Heap allocations per request in steady state (issue 7): the switch runs in this process
//! (`server::serve`, every thread of it), a counting global allocator (`stats_alloc`) counts
//! what the process allocates, and a client that allocates nothing while it measures (frames
//! made beforehand, STANs written in place, responses kept in a buffer reserved beforehand and
//! checked afterwards) drives 0100s over TCP on 127.0.0.1. The figure is printed; the test
//! fails when it grows past `BUDGET`.
#![allow(clippy::unwrap_used)] // a test: a failed step is a failed test

mod common;

use std::alloc::System;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use adapters::{DialectName, FrameHeader};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use switch::config::Settings;

/// Allocations per request the steady state may make, at most, counting every thread of the
/// switch (expiry ticks, sweeps and metrics included). Measured 2026-11-30: 6.7 (debug build,
/// as CI runs it). What is left, per request: the message copied for the pipeline, its WAL
/// record, field 54 of the response, the response frame, and the messages and batches between
/// the worker, the shard and the WAL writer (per turn or per group, shared by the requests in
/// it). The goal is 2; this bound keeps what was won.
const BUDGET: f64 = 8.0;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const CONNECTIONS: usize = 8;
/// Distinct cards, each used `(WARM_UP + REQUESTS) / CARDS` times (10): below the demo velocity
/// rule (20 approvals within 60 s), so that every answer is an approval.
const CARDS: usize = 4_000;
const WARM_UP: usize = 20_000;
const REQUESTS: usize = 20_000;
/// The sentinel STAN the frames are built with, replaced in place per request.
const SENTINEL: &[u8; 6] = b"987654";

/// The frames of `CARDS` authorizations of 0.01, with the positions of the sentinel STAN.
fn frames() -> Vec<(Vec<u8>, Vec<usize>)> {
    let framing = Settings::embedded().unwrap().framing;
    (0..CARDS)
        .map(|card| {
            let mut message =
                common::request("0100", &common::demo_pan(1_000 + card as u64), "000000", 1);
            message.set(11, SENTINEL.to_vec());
            message.set(37, [b"000000".as_slice(), SENTINEL].concat());
            let mut body = Vec::new();
            DialectName::Default
                .dialect()
                .encode(&message, &mut body)
                .unwrap();
            let mut frame = Vec::new();
            framing.write_frame(&body, &mut frame).unwrap();
            let at = frame
                .windows(6)
                .enumerate()
                .filter(|(_, w)| w == SENTINEL)
                .map(|(i, _)| i)
                .collect();
            (frame, at)
        })
        .collect()
}

/// Sends `count` requests, `CONNECTIONS` at a time, STANs from `first`; appends each response
/// frame to `responses` (reserved by the caller: nothing is allocated here).
fn drive(
    framing: FrameHeader,
    links: &mut [TcpStream],
    frames: &mut [(Vec<u8>, Vec<usize>)],
    first: usize,
    count: usize,
    responses: &mut Vec<u8>,
) {
    let mut buffer = [0u8; 4096];
    let mut n = first;
    while n < first + count {
        for link in links.iter_mut() {
            let (frame, at) = &mut frames[n % CARDS];
            let mut stan = [b'0'; 6];
            let mut rest = n % 1_000_000;
            for digit in stan.iter_mut().rev() {
                *digit = b"0123456789"[rest % 10];
                rest /= 10;
            }
            for &i in at.iter() {
                frame[i..i + 6].copy_from_slice(&stan);
            }
            link.write_all(frame).unwrap();
            n += 1;
        }
        for link in links.iter_mut() {
            let mut filled = 0;
            let bounds = loop {
                if let Some(bounds) = framing.parse(&buffer[..filled], 65_535).unwrap() {
                    break bounds;
                }
                let read = link.read(&mut buffer[filled..]).unwrap();
                assert!(read > 0, "the switch closed a connection");
                filled += read;
            };
            assert_eq!(
                filled,
                bounds.total_len(),
                "one response per request in flight"
            );
            assert!(
                responses.len() + filled <= responses.capacity(),
                "the response buffer was reserved too small"
            );
            responses.extend_from_slice(&buffer[..filled]);
        }
    }
}

/// The approvals among the response frames in `responses`.
fn approvals(responses: &[u8]) -> usize {
    let framing = Settings::embedded().unwrap().framing;
    let mut rest = responses;
    let mut approved = 0;
    while let Some(bounds) = framing.parse(rest, 65_535).unwrap() {
        let response = DialectName::Default
            .dialect()
            .decode(&rest[bounds.header_len..bounds.total_len()])
            .unwrap();
        if response.get(39) == Some(b"00".as_slice()) {
            approved += 1;
        }
        rest = &rest[bounds.total_len()..];
    }
    approved
}

#[test]
fn steady_state_allocations_per_request_stay_within_the_budget() {
    let wal = common::fresh_wal_dir();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = Settings::embedded().unwrap();
    settings.acquirer_listen = SocketAddr::from(([127, 0, 0, 1], port));
    settings.http_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.wal.dir = wal.to_path_buf();
    // The machine this was measured on (2 cores): with more workers and shards, the 8
    // connections' requests would share fewer turns and batches, and the per-turn costs (the
    // shard's message, the flush task) would fall on fewer requests each.
    settings.workers = 1;
    settings.shards = 2;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        actix::System::new().block_on(switch::server::serve(settings, async move {
            let _ = stopped.await;
        }))
    });

    let client = std::thread::spawn(move || {
        let deadline = Instant::now() + common::STARTUP_TIMEOUT;
        let mut links: Vec<TcpStream> = (0..CONNECTIONS)
            .map(|_| {
                loop {
                    match TcpStream::connect(("127.0.0.1", port)) {
                        Ok(link) => {
                            link.set_nodelay(true).unwrap();
                            link.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
                            break link;
                        }
                        Err(_) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50))
                        }
                        Err(error) => panic!("the switch never listened: {error}"),
                    }
                }
            })
            .collect();
        let mut frames = frames();
        let mut responses = Vec::with_capacity(WARM_UP.max(REQUESTS) * 512);
        let framing = Settings::embedded().unwrap().framing;
        drive(framing, &mut links, &mut frames, 0, WARM_UP, &mut responses);
        assert_eq!(
            approvals(&responses),
            WARM_UP,
            "every warm-up request approved"
        );
        responses.clear();
        let region = Region::new(GLOBAL);
        let started = Instant::now();
        drive(
            framing,
            &mut links,
            &mut frames,
            WARM_UP,
            REQUESTS,
            &mut responses,
        );
        let elapsed = started.elapsed();
        let stats = region.change();
        let allocations = stats.allocations + stats.reallocations;
        assert_eq!(
            approvals(&responses),
            REQUESTS,
            "every measured request approved"
        );
        (allocations, elapsed)
    });
    let (allocations, elapsed) = client.join().unwrap();
    let _ = stop.send(());
    server.join().unwrap().unwrap();

    let per_request = allocations as f64 / REQUESTS as f64;
    println!(
        "{allocations} allocations for {REQUESTS} approvals over {elapsed:?}: {per_request:.2} per request"
    );
    assert!(
        allocations > 0,
        "the counting allocator counted nothing: not the global allocator?"
    );
    assert!(
        per_request <= BUDGET,
        "{per_request:.2} allocations per request, over the budget of {BUDGET}"
    );
}
