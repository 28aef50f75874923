//! The issuer simulator (`loadtest issuer-sim`): an issuer host that answers every message type
//! the switch sends it, with a configurable latency, approval ratio, share of requests left
//! unanswered, late answers and disconnects, and that counts what it received.
//!
//! It is a library as well as a subcommand, so that the switch's tests run it in their own
//! process and change its behaviour while it runs ([`Control`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapters::{Dialect, DialectName, FrameHeader, Message};
use anyhow::{Context as _, bail};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Largest frame read; the switch's default maximum.
pub const MAX_FRAME_BYTES: usize = 8192;
/// Distinct reversals remembered to tell a repeat from a new one; beyond, they are counted
/// but no longer told apart (`reversals_untracked`).
const REVERSALS_TRACKED_MAX: usize = 1 << 20;
/// Answers waiting to be written on one connection; beyond, the connection is closed.
const ANSWERS_QUEUED_MAX: usize = 65_536;

/// How long the simulator takes to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    /// Always this many milliseconds.
    Fixed(u64),
    /// Uniformly between the two, in milliseconds.
    Uniform(u64, u64),
    /// Exponentially distributed with this mean, in milliseconds (capped at 20 × the mean).
    Exponential(u64),
}

impl std::str::FromStr for Latency {
    type Err = String;
    /// `5` or `fixed:5`, `uniform:1-10`, `exp:3` (milliseconds).
    fn from_str(text: &str) -> Result<Latency, String> {
        let number = |s: &str| {
            s.trim()
                .parse::<u64>()
                .map_err(|_| format!("{s:?} is not a number of milliseconds"))
        };
        match text.split_once(':') {
            None => Ok(Latency::Fixed(number(text)?)),
            Some(("fixed", ms)) => Ok(Latency::Fixed(number(ms)?)),
            Some(("exp", ms)) => Ok(Latency::Exponential(number(ms)?)),
            Some(("uniform", range)) => {
                let (lo, hi) = range
                    .split_once('-')
                    .ok_or_else(|| format!("{range:?} is not LOW-HIGH"))?;
                let (lo, hi) = (number(lo)?, number(hi)?);
                if lo > hi {
                    return Err(format!("uniform:{range}: LOW is above HIGH"));
                }
                Ok(Latency::Uniform(lo, hi))
            }
            Some((kind, _)) => Err(format!(
                "latency kind {kind:?}: expected fixed:MS, uniform:LOW-HIGH or exp:MEAN"
            )),
        }
    }
}

impl Latency {
    // Seconds of a latency, never money.
    #[allow(clippy::float_arithmetic, clippy::cast_possible_truncation)]
    fn sample(self, rng: &mut SmallRng) -> Duration {
        let ms = match self {
            Latency::Fixed(ms) => ms,
            Latency::Uniform(lo, hi) => rng.random_range(lo..=hi),
            Latency::Exponential(mean) => {
                // Inverse transform on a uniform in (0, 1], in integer per-millionths.
                let u = rng.random_range(1..=1_000_000u64);
                let ln = (1_000_000f64 / u as f64).ln();
                ((mean as f64) * ln).min((mean * 20) as f64) as u64
            }
        };
        Duration::from_millis(ms)
    }
}

/// What the simulator does with each request; shares are per mille.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Behaviour {
    pub latency: Latency,
    /// Of 0100 and 0200 answered: approved (00 with an authorization code); the rest 05.
    pub approve_permille: u32,
    /// Of requests (not 0800): never answered.
    pub no_answer_permille: u32,
    /// Of requests (not 0800): answered after `late` instead of the latency.
    pub late_permille: u32,
    pub late: Duration,
    /// Of requests (not 0800): the connection is closed instead of answering.
    pub disconnect_permille: u32,
}

impl Default for Behaviour {
    fn default() -> Behaviour {
        Behaviour {
            latency: Latency::Fixed(0),
            approve_permille: 1000,
            no_answer_permille: 0,
            late_permille: 0,
            late: Duration::from_secs(5),
            disconnect_permille: 0,
        }
    }
}

/// Changes the behaviour while the simulator runs (tests; the subcommand never does).
#[derive(Debug)]
pub struct Control {
    /// While set, nothing is answered (sign-ons and echoes included); everything is counted.
    silent: AtomicBool,
    behaviour: Mutex<Behaviour>,
}

impl Control {
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        if let Ok(mut b) = self.behaviour.lock() {
            *b = behaviour;
        }
    }

    fn behaviour(&self) -> Behaviour {
        self.behaviour.lock().map(|b| *b).unwrap_or_default()
    }
}

/// What the simulator received and did. Reversals (0400, 0401, 0420, 0421) are told apart by
/// field 90: `reversals_distinct` counts the transactions reversed, `reversal_repeats` the
/// 0401/0421 repeats, `reversal_duplicates` a 0400/0420 (not a repeat) naming an original that
/// an earlier reversal named already: a reversal delivered twice.
#[derive(Debug, Default)]
pub struct Counts {
    pub connections: AtomicU64,
    pub sign_ons: AtomicU64,
    pub echoes: AtomicU64,
    pub other_network: AtomicU64,
    pub authorizations: AtomicU64,
    pub financial: AtomicU64,
    pub authorization_advices: AtomicU64,
    pub authorization_advice_repeats: AtomicU64,
    pub completions: AtomicU64,
    pub reversals: AtomicU64,
    pub reversal_repeats: AtomicU64,
    pub reversals_distinct: AtomicU64,
    pub reversal_duplicates: AtomicU64,
    pub reversals_untracked: AtomicU64,
    pub other: AtomicU64,
    pub approved: AtomicU64,
    pub declined: AtomicU64,
    pub unanswered: AtomicU64,
    pub late: AtomicU64,
    pub disconnects: AtomicU64,
    pub malformed: AtomicU64,
    reversed: Mutex<HashSet<Vec<u8>>>,
}

impl Counts {
    /// Every count as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let n = |c: &AtomicU64| c.load(Ordering::SeqCst);
        serde_json::json!({
            "connections": n(&self.connections),
            "sign_ons": n(&self.sign_ons),
            "echoes": n(&self.echoes),
            "other_network": n(&self.other_network),
            "authorizations": n(&self.authorizations),
            "financial": n(&self.financial),
            "authorization_advices": n(&self.authorization_advices),
            "authorization_advice_repeats": n(&self.authorization_advice_repeats),
            "completions": n(&self.completions),
            "reversals": n(&self.reversals),
            "reversal_repeats": n(&self.reversal_repeats),
            "reversals_distinct": n(&self.reversals_distinct),
            "reversal_duplicates": n(&self.reversal_duplicates),
            "reversals_untracked": n(&self.reversals_untracked),
            "other": n(&self.other),
            "approved": n(&self.approved),
            "declined": n(&self.declined),
            "unanswered": n(&self.unanswered),
            "late": n(&self.late),
            "disconnects": n(&self.disconnects),
            "malformed": n(&self.malformed),
        })
    }

    fn reversal(&self, message: &Message<'_>) {
        let repeat = message.mti.0[3] == b'1';
        if repeat {
            self.reversal_repeats.fetch_add(1, Ordering::SeqCst);
        } else {
            self.reversals.fetch_add(1, Ordering::SeqCst);
        }
        let Some(original) = message.get(90) else {
            return;
        };
        let Ok(mut seen) = self.reversed.lock() else {
            return;
        };
        if seen.contains(original) {
            if !repeat {
                self.reversal_duplicates.fetch_add(1, Ordering::SeqCst);
            }
        } else if seen.len() < REVERSALS_TRACKED_MAX {
            seen.insert(original.to_vec());
            self.reversals_distinct.fetch_add(1, Ordering::SeqCst);
        } else {
            self.reversals_untracked.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A running simulator: where it listens, what it counted, and its controls.
#[derive(Debug, Clone)]
pub struct Sim {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    pub control: Arc<Control>,
}

/// Binds the simulator; returns it and the future that serves until dropped.
pub async fn bind(
    listen: SocketAddr,
    dialect: DialectName,
    framing: FrameHeader,
    behaviour: Behaviour,
    seed: u64,
) -> anyhow::Result<(Sim, impl Future<Output = ()>)> {
    if !listen.ip().is_loopback() {
        bail!("--listen {listen} is not a loopback address");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let sim = Sim {
        addr: listener.local_addr()?,
        counts: Arc::new(Counts::default()),
        control: Arc::new(Control {
            silent: AtomicBool::new(false),
            behaviour: Mutex::new(behaviour),
        }),
    };
    let (counts, control) = (sim.counts.clone(), sim.control.clone());
    let serve = async move {
        let mut index = 0u64;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            index += 1;
            counts.connections.fetch_add(1, Ordering::SeqCst);
            let rng = SmallRng::seed_from_u64(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            tokio::spawn(connection(
                stream,
                dialect.dialect(),
                framing,
                counts.clone(),
                control.clone(),
                rng,
            ));
        }
    };
    Ok((sim, serve))
}

/// What to do with one request.
enum Plan {
    Answer(Duration),
    Ignore,
    Disconnect,
}

async fn connection(
    stream: TcpStream,
    dialect: &'static Dialect,
    framing: FrameHeader,
    counts: Arc<Counts>,
    control: Arc<Control>,
    mut rng: SmallRng,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    // Answers are written by their own task, each when its delay has passed.
    let (answers, mut queue) = mpsc::channel::<Vec<u8>>(ANSWERS_QUEUED_MAX);
    let write = tokio::spawn(async move {
        while let Some(frame) = queue.recv().await {
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let mut buffer = Vec::with_capacity(65_536);
    let mut chunk = vec![0u8; 65_536];
    'read: loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buffer.extend_from_slice(&chunk[..n]);
        let mut end = 0;
        loop {
            let bounds = match framing.parse(&buffer[end..], MAX_FRAME_BYTES) {
                Ok(Some(bounds)) => bounds,
                Ok(None) => break,
                Err(_) => {
                    counts.malformed.fetch_add(1, Ordering::SeqCst);
                    break 'read;
                }
            };
            let body = &buffer[end + bounds.header_len..end + bounds.total_len()];
            end += bounds.total_len();
            if bounds.is_keep_alive() {
                continue;
            }
            let Ok(request) = dialect.decode(body) else {
                counts.malformed.fetch_add(1, Ordering::SeqCst);
                continue;
            };
            let behaviour = control.behaviour();
            let network = &request.mti.0[1..3] == b"80";
            count(&counts, &request);
            let plan = if control.silent.load(Ordering::SeqCst) {
                Plan::Ignore
            } else if network {
                Plan::Answer(Duration::ZERO)
            } else {
                let roll = rng.random_range(0..1000u32);
                let (disconnect, ignore, late) = (
                    behaviour.disconnect_permille,
                    behaviour.disconnect_permille + behaviour.no_answer_permille,
                    behaviour.disconnect_permille
                        + behaviour.no_answer_permille
                        + behaviour.late_permille,
                );
                if roll < disconnect {
                    Plan::Disconnect
                } else if roll < ignore {
                    Plan::Ignore
                } else if roll < late {
                    counts.late.fetch_add(1, Ordering::SeqCst);
                    Plan::Answer(behaviour.late)
                } else {
                    Plan::Answer(behaviour.latency.sample(&mut rng))
                }
            };
            match plan {
                Plan::Disconnect => {
                    counts.disconnects.fetch_add(1, Ordering::SeqCst);
                    break 'read;
                }
                Plan::Ignore => {
                    counts.unanswered.fetch_add(1, Ordering::SeqCst);
                }
                Plan::Answer(delay) => {
                    let approve = rng.random_range(0..1000u32) < behaviour.approve_permille;
                    let auth = rng.random_range(0..1_000_000u32);
                    let Some(frame) = answer(dialect, framing, &request, approve, auth, &counts)
                    else {
                        continue;
                    };
                    let answers = answers.clone();
                    if delay.is_zero() {
                        if answers.try_send(frame).is_err() {
                            break 'read;
                        }
                    } else {
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = answers.send(frame).await;
                        });
                    }
                }
            }
        }
        buffer.drain(..end);
    }
    drop(answers);
    write.abort();
}

fn count(counts: &Counts, request: &Message<'_>) {
    let counter = match &request.mti.0 {
        b"0800" => match request.get(70) {
            Some(b"001") => &counts.sign_ons,
            Some(b"301") => &counts.echoes,
            _ => &counts.other_network,
        },
        b"0100" => &counts.authorizations,
        b"0200" => &counts.financial,
        b"0120" => &counts.authorization_advices,
        b"0121" => &counts.authorization_advice_repeats,
        b"0220" | b"0221" => &counts.completions,
        b"0400" | b"0401" | b"0420" | b"0421" => {
            counts.reversal(request);
            return;
        }
        _ => &counts.other,
    };
    counter.fetch_add(1, Ordering::SeqCst);
}

/// The response frame to `request`: the echoed fields, 39, and 38 on an approved 0100/0200.
fn answer(
    dialect: &Dialect,
    framing: FrameHeader,
    request: &Message<'_>,
    approve: bool,
    auth: u32,
    counts: &Counts,
) -> Option<Vec<u8>> {
    let mti = request.mti.response()?;
    let mut response = Message::with_capacity(mti, 16);
    for field in [2, 3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 49, 70, 90] {
        if let Some(value) = request.get(field) {
            response.set(field, value.to_vec());
        }
    }
    let decides = matches!(&request.mti.0, b"0100" | b"0200");
    let code: &[u8] = if !decides || approve { b"00" } else { b"05" };
    if decides {
        if approve {
            counts.approved.fetch_add(1, Ordering::SeqCst);
            response.set(38, format!("{auth:06}").into_bytes());
        } else {
            counts.declined.fetch_add(1, Ordering::SeqCst);
        }
    }
    response.set(39, code.to_vec());
    let mut frame = vec![0u8; framing.header_len()];
    dialect.encode(&response, &mut frame).ok()?;
    let body_len = frame.len() - framing.header_len();
    framing.fill(body_len, &mut frame).ok()?;
    Some(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::Mti;

    #[test]
    fn latencies_parse() {
        assert_eq!("5".parse(), Ok(Latency::Fixed(5)));
        assert_eq!("fixed:7".parse(), Ok(Latency::Fixed(7)));
        assert_eq!("uniform:1-10".parse(), Ok(Latency::Uniform(1, 10)));
        assert_eq!("exp:3".parse(), Ok(Latency::Exponential(3)));
        assert!("uniform:9-1".parse::<Latency>().is_err());
        assert!("gauss:3".parse::<Latency>().is_err());
    }

    #[test]
    fn latencies_stay_in_their_range() {
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..1000 {
            let d = Latency::Uniform(2, 4).sample(&mut rng);
            assert!((2..=4).contains(&d.as_millis()), "{d:?}");
            let e = Latency::Exponential(3).sample(&mut rng);
            assert!(e.as_millis() <= 60, "{e:?}");
        }
    }

    #[test]
    fn reversals_are_told_apart_by_field_90() {
        let counts = Counts::default();
        let reversal = |mti: &[u8; 4], original: &[u8]| {
            let mut m = Message::new(Mti(*mti));
            m.set(90, original.to_vec());
            m
        };
        counts.reversal(&reversal(b"0420", b"A"));
        counts.reversal(&reversal(b"0421", b"A"));
        counts.reversal(&reversal(b"0421", b"A"));
        counts.reversal(&reversal(b"0420", b"B"));
        counts.reversal(&reversal(b"0420", b"A"));
        let json = counts.json();
        assert_eq!(json["reversals"], 3);
        assert_eq!(json["reversal_repeats"], 2);
        assert_eq!(json["reversals_distinct"], 2);
        assert_eq!(json["reversal_duplicates"], 1);
    }

    #[tokio::test]
    async fn answers_a_sign_on_and_an_authorization_with_its_fields() {
        let (sim, serve) = bind(
            "127.0.0.1:0".parse().unwrap(),
            DialectName::Default,
            FrameHeader::Binary2,
            Behaviour::default(),
            7,
        )
        .await
        .unwrap();
        let server = tokio::spawn(serve);
        let mut stream = TcpStream::connect(sim.addr).await.unwrap();
        let dialect = DialectName::Default.dialect();
        let mut out = Vec::new();
        for (mti, fields) in [
            (
                b"0800",
                vec![(7, "1130120000"), (11, "000001"), (70, "001")],
            ),
            (
                b"0100",
                vec![
                    (2, "4111111111111111"),
                    (3, "000000"),
                    (4, "000000001000"),
                    (7, "1130120000"),
                    (11, "000002"),
                    (37, "RRN000000001"),
                    (41, "TERM0001"),
                ],
            ),
        ] {
            let mut m = Message::new(Mti(*mti));
            for (n, v) in fields {
                m.set(n, v.as_bytes().to_vec());
            }
            let mut body = Vec::new();
            dialect.encode(&m, &mut body).unwrap();
            FrameHeader::Binary2.write_frame(&body, &mut out).unwrap();
        }
        stream.write_all(&out).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        let mut answers = Vec::new();
        while answers.len() < 2 {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early");
            got.extend_from_slice(&chunk[..n]);
            while let Some(b) = FrameHeader::Binary2.parse(&got, MAX_FRAME_BYTES).unwrap() {
                let body = got[b.header_len..b.total_len()].to_vec();
                got.drain(..b.total_len());
                answers.push(dialect.decode(&body).unwrap().into_owned());
            }
        }
        assert_eq!(answers[0].mti, Mti(*b"0810"));
        assert_eq!(answers[0].get(39), Some(&b"00"[..]));
        assert_eq!(answers[1].mti, Mti(*b"0110"));
        assert_eq!(answers[1].get(11), Some(&b"000002"[..]));
        assert_eq!(answers[1].get(37), Some(&b"RRN000000001"[..]));
        assert_eq!(answers[1].get(39), Some(&b"00"[..]));
        assert_eq!(answers[1].get(38).map(<[u8]>::len), Some(6));
        assert_eq!(sim.counts.json()["sign_ons"], 1);
        assert_eq!(sim.counts.json()["authorizations"], 1);
        server.abort();
    }
}
