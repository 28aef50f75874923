//! `loadtest`: drives the switch (a black box over TCP) and serves as the reference echo server.
//!
//! - `loadtest run --target 127.0.0.1:8583 --connections 64 --in-flight 1 --duration 10s`:
//!   closed loop; `--rate R` for open loop (latency from each request's due time); `--mix`,
//!   `--accounts`, `--zipf`; `--ceiling` runs the same workload against an in-process echo
//!   server first. A line a second while running, a table at the end, `--json FILE`, and a
//!   money check (balances before and after against the approvals seen). Exit status 1 when
//!   anything was unmatched, unexpected (any code but 00), lost, or the money does not add up.
//! - `loadtest echo --listen 127.0.0.1:0`: the reference echo server on its own.
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
