//! `loadtest`: drives the switch (a black box over TCP) and serves as the reference echo server.
//!
//! - `loadtest run --target 127.0.0.1:8583 --connections 64 --in-flight 1 --duration 10s`:
//!   closed loop; `--rate R` for open loop (latency from each request's due time); `--mix`,
//!   `--accounts`, `--zipf`; `--ceiling` runs the same workload against an in-process echo
//!   server first. A line a second while running, a table at the end, `--json FILE`, and a
//!   money check (balances before and after against the approvals seen). Exit status 1 when
//!   anything was unmatched, unexpected (any code but 00), lost, or the money does not add up.
//! - `loadtest echo --listen 127.0.0.1:0`: the reference echo server on its own.
//! - `loadtest issuer-sim`: an issuer host on 127.0.0.1:9584 that answers every message type,
//!   with `--latency`, `--approve`, `--no-answer`, `--late`, `--disconnect`; it prints what it
//!   received (reversals included) as JSON on SIGUSR1 and when it stops.
//!
//! Only loopback targets are accepted, and every run ends by itself (duration and count).

// The workspace warns on floats to keep them away from money; here they are rates and seconds
// in a report, never amounts.
#![allow(clippy::float_arithmetic)]

mod echo;
mod report;
mod run;
mod workload;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use adapters::{DialectName, FrameHeader};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator and reference echo server for the switch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a target: closed loop, or open loop with --rate.
    Run(run::RunOptions),
    /// Reference echo server: returns every frame unchanged.
    Echo {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value = "binary2")]
        framing: FrameHeader,
        /// Stop after this long (the echo server too ends by itself).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        duration: Duration,
    },
    /// Issuer host simulator: answers what the switch sends to a remote issuer.
    IssuerSim(SimOptions),
}

#[derive(Debug, clap::Args)]
struct SimOptions {
    #[arg(long, default_value = "127.0.0.1:9584")]
    listen: SocketAddr,
    #[arg(long, default_value = "default", value_parser = parse_dialect)]
    dialect: DialectName,
    #[arg(long, default_value = "binary2")]
    framing: FrameHeader,
    /// Time to answer: MS, fixed:MS, uniform:LOW-HIGH or exp:MEAN (milliseconds).
    #[arg(long, default_value = "0")]
    latency: loadtest::sim::Latency,
    /// Share of 0100/0200 approved, in per cent (the rest are answered 05).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=100))]
    approve: u32,
    /// Share of requests never answered, in per cent (0800 always answered).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    no_answer: u32,
    /// Share of requests answered after --late-after instead, in per cent.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    late: u32,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    late_after: Duration,
    /// Share of requests that close the connection instead of an answer, in per cent.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    disconnect: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Stop after this long.
    #[arg(long, default_value = "60m", value_parser = parse_duration)]
    duration: Duration,
}

/// `10s`, `500ms`, `2m`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 10s"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "m" => Ok(Duration::from_secs(value * 60)),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

pub fn parse_dialect(text: &str) -> Result<DialectName, String> {
    text.parse()
}

async fn echo(
    listen: SocketAddr,
    framing: FrameHeader,
    duration: Duration,
) -> anyhow::Result<bool> {
    let (addr, serve) = echo::bind(listen, framing, duration).await?;
    eprintln!("loadtest: echo listening on {addr}");
    serve.await;
    Ok(true)
}

async fn issuer_sim(options: SimOptions) -> anyhow::Result<bool> {
    use tokio::signal::unix::{SignalKind, signal};
    if options.no_answer + options.late + options.disconnect > 100 {
        anyhow::bail!("--no-answer, --late and --disconnect add up to more than 100 per cent");
    }
    let behaviour = loadtest::sim::Behaviour {
        latency: options.latency,
        approve_permille: options.approve * 10,
        no_answer_permille: options.no_answer * 10,
        late_permille: options.late * 10,
        late: options.late_after,
        disconnect_permille: options.disconnect * 10,
    };
    let (sim, serve) = loadtest::sim::bind(
        options.listen,
        options.dialect,
        options.framing,
        behaviour,
        options.seed,
    )
    .await?;
    eprintln!(
        "loadtest: issuer simulator listening on {} ({}, {}); SIGUSR1 prints its counts",
        sim.addr, options.dialect, options.framing
    );
    let mut report = signal(SignalKind::user_defined1())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let stop = tokio::time::sleep(options.duration);
    tokio::pin!(serve, stop);
    loop {
        tokio::select! {
            () = &mut serve => break,
            () = &mut stop => break,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = report.recv() => println!("{}", sim.counts.json()),
        }
    }
    println!("{}", sim.counts.json());
    Ok(true)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadtest: error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(options) => runtime.block_on(run::run(options)),
        Command::Echo {
            listen,
            framing,
            duration,
        } => runtime.block_on(echo(listen, framing, duration)),
        Command::IssuerSim(options) => runtime.block_on(issuer_sim(options)),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadtest: the run was not clean (see the report)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("loadtest: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
    }
}
