//! The end-of-run table and JSON report.

use crate::run::{MoneyCheck, Outcome, RunOptions};

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

fn table(title: &str, outcome: &Outcome, expect_codes: bool) {
    let tally = &outcome.tally;
    let h = &tally.latency_us;
    println!("== {title}");
    println!(
        "throughput       {:.0} answers/s ({} in {:.1} s after warm-up)",
        outcome.throughput(),
        h.len(),
        outcome.measured_seconds
    );
    for (name, q) in QUANTILES {
        println!("latency {name:<8} {} us", h.value_at_quantile(q));
    }
    println!("latency max      {} us", h.max());
    for (operation, count) in &tally.operations {
        let latency = tally
            .latency_by_operation
            .get(operation)
            .map_or_else(String::new, |h| {
                format!(
                    "   p50 {} us  p99 {} us",
                    h.value_at_quantile(0.5),
                    h.value_at_quantile(0.99)
                )
            });
        println!("operation {operation:<9}{count}{latency}");
    }
    for (code, count) in &tally.codes {
        println!("response {code}      {count}");
    }
    if expect_codes {
        let unexpected: u64 = tally.unexpected.values().sum();
        println!("unexpected       {unexpected} {:?}", tally.unexpected);
    }
    println!("unmatched        {}", tally.unmatched);
    println!("timeouts         {}", tally.timeouts);
    println!(
        "errors           {}",
        tally.errors + outcome.connection_errors
    );
}

fn json(outcome: &Outcome) -> serde_json::Value {
    let tally = &outcome.tally;
    let h = &tally.latency_us;
    let mut latency = serde_json::Map::new();
    for (name, q) in QUANTILES {
        latency.insert(name.to_owned(), h.value_at_quantile(q).into());
    }
    latency.insert("max".to_owned(), h.max().into());
    serde_json::json!({
        "measured_seconds": outcome.measured_seconds,
        "answers": h.len(),
        "throughput_per_second": outcome.throughput(),
        "latency_us": latency,
        "operations": tally.operations,
        "latency_us_by_operation": tally
            .latency_by_operation
            .iter()
            .map(|(operation, h)| {
                let mut quantiles = serde_json::Map::new();
                for (name, q) in QUANTILES {
                    quantiles.insert(name.to_owned(), h.value_at_quantile(q).into());
                }
                quantiles.insert("max".to_owned(), h.max().into());
                ((*operation).to_owned(), serde_json::Value::Object(quantiles))
            })
            .collect::<serde_json::Map<_, _>>(),
        "response_codes": tally.codes,
        "unexpected_codes": tally.unexpected,
        "unmatched": tally.unmatched,
        "timeouts": tally.timeouts,
        "errors": tally.errors + outcome.connection_errors,
        "samples": outcome.samples,
    })
}

/// Prints the report (and writes the JSON); true when the run was clean: every answer matched,
/// none unexpected, no errors, and the money check passed or was not asked for.
pub fn print(
    options: &RunOptions,
    mode: &str,
    ceiling: Option<&Outcome>,
    outcome: &Outcome,
    money: &MoneyCheck,
) -> anyhow::Result<bool> {
    if let Some(ceiling) = ceiling {
        table(
            "echo ceiling (same workload, in-process echo server)",
            ceiling,
            false,
        );
    }
    table(
        &format!("target {} ({mode})", options.target),
        outcome,
        true,
    );
    let ratio = ceiling.map(|c| {
        if c.throughput() > 0.0 {
            outcome.throughput() / c.throughput()
        } else {
            0.0
        }
    });
    if let Some(ratio) = ratio {
        println!("fraction of the echo ceiling: {ratio:.2}");
    }
    let money_clean = match money {
        MoneyCheck::Skipped(why) => {
            println!("money check      skipped ({why})");
            true
        }
        MoneyCheck::Inconclusive(why) => {
            println!("money check      inconclusive ({why})");
            false
        }
        MoneyCheck::Checked {
            accounts,
            mismatches,
        } => {
            println!(
                "money check      {accounts} accounts, {} mismatches",
                mismatches.len()
            );
            for (account, expected, found) in mismatches.iter().take(10) {
                println!("  account {account}: expected available {expected}, found {found}");
            }
            mismatches.is_empty()
        }
    };
    let tally = &outcome.tally;
    let clean = tally.unmatched == 0
        && tally.unexpected.is_empty()
        && tally.timeouts == 0
        && tally.errors == 0
        && outcome.connection_errors == 0
        && money_clean;
    if let Some(path) = &options.json {
        let report = serde_json::json!({
            "target": options.target.to_string(),
            "mode": mode,
            "connections": options.connections,
            "in_flight": options.in_flight,
            "rate": options.rate,
            "duration_seconds": options.duration.as_secs_f64(),
            "run": json(outcome),
            "ceiling": ceiling.map(json),
            "fraction_of_ceiling": ratio,
            "money_check": match money {
                MoneyCheck::Skipped(why) => serde_json::json!({"skipped": why}),
                MoneyCheck::Inconclusive(why) => serde_json::json!({"inconclusive": why}),
                MoneyCheck::Checked { accounts, mismatches } => serde_json::json!({"accounts": accounts, "mismatches": mismatches.len()}),
            },
            "clean": clean,
        });
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(clean)
}
