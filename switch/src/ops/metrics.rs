//! Prometheus metrics (DESIGN §3.6): names in base units, `_total` for counters, labels from
//! small fixed sets only (never a PAN, STAN or terminal).
//!
//! One registry for the process ([`metrics`]), since the WAL writer, the shards and every
//! session record into it. Recording on the request path costs an atomic add or two: counters
//! and histograms are resolved to their label values once and kept (the transaction counter's
//! children on first use, in a table indexed by label), never looked up per request.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::ResponseCode;

/// The stages of a request whose time is measured (`switch_stage_duration_seconds{stage}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// From the frame read to the hand-off to risk: decode, identity, idempotency, parse.
    Admission,
    Risk,
    Routing,
    /// The shard's apply and the record's encoding.
    Ledger,
    /// From the record's submission to its group being on disk.
    Wal,
    /// From the frame read to the response handed to the writer.
    Total,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Admission,
        Stage::Risk,
        Stage::Routing,
        Stage::Ledger,
        Stage::Wal,
        Stage::Total,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Stage::Admission => "admission",
            Stage::Risk => "risk",
            Stage::Routing => "routing",
            Stage::Ledger => "ledger",
            Stage::Wal => "wal",
            Stage::Total => "total",
        }
    }
}

/// Where a transaction went (`route` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Answered before routing (format errors, idempotency, risk, overload).
    None,
    OnUs,
    Issuer,
}

impl Route {
    const ALL: [Route; 3] = [Route::None, Route::OnUs, Route::Issuer];

    pub const fn name(self) -> &'static str {
        match self {
            Route::None => "none",
            Route::OnUs => "on-us",
            Route::Issuer => "issuer",
        }
    }
}

/// Request MTIs as labels; anything else is `other`.
const MTIS: [&str; 10] = [
    "0100", "0120", "0200", "0220", "0400", "0401", "0420", "0421", "0800", "other",
];

fn mti_index(mti: &[u8; 4]) -> usize {
    MTIS.iter()
        .position(|m| m.as_bytes() == mti)
        .unwrap_or(MTIS.len() - 1)
}

/// Latency buckets in seconds: 10 µs to 2.5 s, dense where a switch lives.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.5, 2.5,
];

/// Records per WAL group.
const GROUP_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Every metric of the switch.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    transactions: IntCounterVec,
    /// `transactions`' children, resolved on first use, by (MTI, code, route) index.
    resolved: Vec<OnceLock<IntCounter>>,
    stages: Vec<Histogram>,
    pub wal_fsync_seconds: Histogram,
    pub wal_group_records: Histogram,
    pub wal_failed: IntGauge,
    pub inflight: IntGauge,
    connections: IntGaugeVec,
    pub idempotency_entries: IntGauge,
    pub idempotency_archived: IntGauge,
    ledger_transactions: IntGaugeVec,
    ledger_transactions_on_disk: IntGaugeVec,
    ledger_expiry_lag: IntGaugeVec,
    ledger_reads_ahead: IntCounterVec,
    pub expired_holds: IntCounter,
    risk_decisions: IntCounterVec,
    pub velocity_evictions: IntGauge,
    issuer_events: IntCounterVec,
    issuer_health: IntGaugeVec,
    issuer_queued: IntGaugeVec,
    issuer_outstanding: IntGaugeVec,
    /// The embedded stores' gauges ([`StoreHealth`]), by store.
    store: [IntGaugeVec; STORE_GAUGES.len()],
}

/// The `switch_store_*{store}` gauges: name and help, in [`StoreHealth::values`]' order.
const STORE_GAUGES: [(&str, &str); 6] = [
    (
        "switch_store_l0_runs",
        "The most runs in level 0 of any keyspace of the store: fjall slows its writes from 20 and halts them at 30",
    ),
    (
        "switch_store_sealed_memtables",
        "The most memtables waiting for their flush in any keyspace of the store: fjall halts its writes at 4",
    ),
    (
        "switch_store_flushes_queued",
        "Flushes of memtables to disk the store has queued",
    ),
    (
        "switch_store_compactions_running",
        "Compactions the store is running",
    ),
    (
        "switch_store_journals",
        "Journal files the store keeps (replayed when it opens)",
    ),
    (
        "switch_store_tables_bytes",
        "Bytes of the store's tables on disk (its journals, bounded, not counted)",
    ),
];

/// What decides whether an embedded store (fjall) slows or halts its writes, and what it holds
/// on disk: sampled every second by [`watch_store`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreHealth {
    pub l0_runs: usize,
    pub sealed_memtables: usize,
    pub flushes_queued: usize,
    pub compactions_running: usize,
    pub journals: usize,
    pub tables_bytes: u64,
}

impl StoreHealth {
    /// Of `db`, whose `keyspaces` are those given. Reads counters and the trees' current
    /// versions; never the journal's writer, which every write of the store takes.
    pub fn of<'a>(
        db: &fjall::Database,
        keyspaces: impl IntoIterator<Item = &'a fjall::Keyspace>,
    ) -> StoreHealth {
        use fjall::AbstractTree;
        let mut health = StoreHealth {
            flushes_queued: db.outstanding_flushes(),
            compactions_running: db.active_compactions(),
            journals: db.journal_count(),
            ..StoreHealth::default()
        };
        for keyspace in keyspaces {
            health.l0_runs = health.l0_runs.max(keyspace.tree.l0_run_count());
            health.sealed_memtables = health
                .sealed_memtables
                .max(keyspace.sealed_memtable_count());
            health.tables_bytes += keyspace.disk_space();
        }
        health
    }

    fn values(&self) -> [i64; STORE_GAUGES.len()] {
        let int = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        [
            int(self.l0_runs),
            int(self.sealed_memtables),
            int(self.flushes_queued),
            int(self.compactions_running),
            int(self.journals),
            i64::try_from(self.tables_bytes).unwrap_or(i64::MAX),
        ]
    }
}

/// How often [`watch_store`] samples.
const STORE_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Samples a store's health into the `switch_store_*{store="<store>"}` gauges every second,
/// on a thread of its own: a call into fjall can wait for a lock that a flush holds across
/// its sync, and nothing else should wait with it. `health` gives `None` once the store is
/// gone (it holds the store weakly): the thread then ends, and the gauges stay at their last
/// values.
pub fn watch_store(
    store: &'static str,
    health: impl Fn() -> Option<StoreHealth> + Send + 'static,
) -> std::io::Result<()> {
    let gauges = metrics().store_gauges(store);
    if let Some(first) = health() {
        first
            .values()
            .iter()
            .zip(&gauges)
            .for_each(|(v, g)| g.set(*v));
    }
    std::thread::Builder::new()
        .name(format!("health-{store}"))
        .spawn(move || {
            loop {
                std::thread::sleep(STORE_WATCH_INTERVAL);
                let Some(now) = health() else { break };
                now.values()
                    .iter()
                    .zip(&gauges)
                    .for_each(|(v, g)| g.set(*v));
            }
        })
        .map(drop)
}

/// What a metric's registration can fail on is a programming error (a name used twice, a
/// label set that does not match): fail loudly at start, in tests.
fn registered<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: T,
) -> T {
    if let Err(error) = registry.register(Box::new(metric.clone())) {
        panic!("metric registration: {error}");
    }
    metric
}

impl Metrics {
    fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let transactions = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "switch_transactions_total",
                    "Requests answered, by request MTI, response code (field 39) and route",
                ),
                &["mti", "response_code", "route"],
            )?,
        );
        let stage_vec = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "switch_stage_duration_seconds",
                    "Time a request spends in each stage of the switch",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["stage"],
            )?,
        );
        let stages = Stage::ALL
            .iter()
            .map(|stage| stage_vec.with_label_values(&[stage.name()]))
            .collect();
        let wal_fsync_seconds = registered(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "switch_wal_fsync_duration_seconds",
                    "Time of each fdatasync of a WAL group",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
        );
        let wal_group_records = registered(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "switch_wal_batch_records",
                    "Records committed by one WAL group (one write and one fdatasync)",
                )
                .buckets(GROUP_BUCKETS.to_vec()),
            )?,
        );
        let wal_failed = registered(
            &registry,
            IntGauge::new(
                "switch_wal_failed",
                "1 once a WAL write or sync failed: the switch answers 96 and exits for a restart",
            )?,
        );
        let inflight = registered(
            &registry,
            IntGauge::new(
                "switch_inflight_requests",
                "Requests in the pipeline, not yet answered",
            )?,
        );
        let connections = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switch_acquirer_connections",
                    "Open connections per acquirer (from a connection's first financial request)",
                ),
                &["acquirer"],
            )?,
        );
        let idempotency_entries = registered(
            &registry,
            IntGauge::new(
                "switch_idempotency_entries",
                "Request identities remembered for retransmissions",
            )?,
        );
        let idempotency_archived = registered(
            &registry,
            IntGauge::new(
                "switch_idempotency_archived_entries",
                "Answers the idempotency table let go of before the retention, kept on disk",
            )?,
        );
        let ledger_transactions = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switch_ledger_transactions",
                    "Transactions a shard keeps in memory for completion and reversal",
                ),
                &["shard"],
            )?,
        );
        let ledger_transactions_on_disk = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switch_ledger_transactions_on_disk",
                    "Transactions a shard keeps on disk (past its hot window) for completion and reversal",
                ),
                &["shard"],
            )?,
        );
        let ledger_reads_ahead = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "switch_ledger_reads_ahead_total",
                    "Transactions a shard read from disk off its own thread, for a completion or reversal that waited meanwhile",
                ),
                &["shard"],
            )?,
        );
        let ledger_expiry_lag = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switch_ledger_expiry_lag_seconds",
                    "How long the oldest hold past its expiry has waited to be released (0: expiry keeps up)",
                ),
                &["shard"],
            )?,
        );
        let expired_holds = registered(
            &registry,
            IntCounter::new(
                "switch_expired_holds_total",
                "Holds released because they expired uncaptured",
            )?,
        );
        let risk_decisions = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "switch_risk_decisions_total",
                    "Requests declined or flagged for review by a risk rule, by rule name \
                     (\"score\" for the score's thresholds)",
                ),
                &["rule", "decision"],
            )?,
        );
        let velocity_evictions = registered(
            &registry,
            IntGauge::new(
                "switch_risk_velocity_evictions",
                "Live velocity keys evicted to make room for a new one since the tables in use \
                 were made (their counts started over): risk.velocity_keys_max is too small for \
                 the keys active within a window",
            )?,
        );
        let issuer_events = registered(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    "switch_issuer_events_total",
                    "What happened on issuer channels, by issuer and event: sent, answered, \
                     timeout, unmatched (a late, duplicate or unknown answer), malformed, \
                     stand_in, shed, advice_sent, advice_acknowledged, advice_given_up, \
                     link_up, link_down, breaker_open",
                ),
                &["issuer", "event"],
            )?,
        );
        let issuer_health = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switch_issuer_health",
                    "Health of each issuer channel: 2 up, 1 degraded, 0 down",
                ),
                &["issuer"],
            )?,
        );
        let issuer_queued = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switch_issuer_queued_advices",
                    "Reversals and advices in each issuer's store-and-forward queue",
                ),
                &["issuer"],
            )?,
        );
        let issuer_outstanding = registered(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "switch_issuer_outstanding_requests",
                    "Requests sent to each issuer and not yet answered nor timed out",
                ),
                &["issuer"],
            )?,
        );
        let mut store = Vec::with_capacity(STORE_GAUGES.len());
        for (name, help) in STORE_GAUGES {
            store.push(registered(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), &["store"])?,
            ));
        }
        let store = store
            .try_into()
            .map_err(|_| prometheus::Error::Msg("the store's gauges".to_owned()))?;
        let process = prometheus::process_collector::ProcessCollector::for_self();
        registry.register(Box::new(process))?;
        Ok(Metrics {
            registry,
            transactions,
            resolved: (0..MTIS.len() * ResponseCode::ALL.len() * Route::ALL.len())
                .map(|_| OnceLock::new())
                .collect(),
            stages,
            wal_fsync_seconds,
            wal_group_records,
            wal_failed,
            inflight,
            connections,
            idempotency_entries,
            idempotency_archived,
            ledger_transactions,
            ledger_transactions_on_disk,
            ledger_expiry_lag,
            ledger_reads_ahead,
            expired_holds,
            risk_decisions,
            velocity_evictions,
            issuer_events,
            issuer_health,
            issuer_queued,
            issuer_outstanding,
            store,
        })
    }

    /// The gauges of store `store`, in [`STORE_GAUGES`]' order.
    fn store_gauges(&self, store: &str) -> [IntGauge; STORE_GAUGES.len()] {
        self.store
            .each_ref()
            .map(|gauges| gauges.with_label_values(&[store]))
    }

    /// Counts an event of an issuer channel (the issuer's configured name is the label).
    pub fn issuer_event(&self, issuer: &str, event: &'static str) {
        self.issuer_events.with_label_values(&[issuer, event]).inc();
    }

    /// An issuer channel's health (2 up, 1 degraded, 0 down), queue and outstanding requests.
    pub fn issuer_state(&self, issuer: &str, health: i64, queued: usize, outstanding: usize) {
        self.issuer_health.with_label_values(&[issuer]).set(health);
        self.issuer_queued
            .with_label_values(&[issuer])
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.issuer_outstanding
            .with_label_values(&[issuer])
            .set(i64::try_from(outstanding).unwrap_or(i64::MAX));
    }

    /// Counts a risk decision: `declined` or `flagged`, under the rule's name. The label is the
    /// name alone (the text before any `:`; `score` for the score's thresholds), so its values
    /// are the configured rules', never anything from a request.
    pub fn risk_decision(&self, decision: &'static str, rule: &str) {
        let name = rule.split(':').next().unwrap_or(rule);
        let name = if name.starts_with("score ") || name == "review" {
            "score"
        } else {
            name
        };
        self.risk_decisions
            .with_label_values(&[name, decision])
            .inc();
    }

    /// Counts one answered request.
    pub fn count(&self, mti: &[u8; 4], code: ResponseCode, route: Route) {
        let index = (mti_index(mti) * ResponseCode::ALL.len()
            + ResponseCode::ALL
                .iter()
                .position(|c| *c == code)
                .unwrap_or(0))
            * Route::ALL.len()
            + Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        if let Some(slot) = self.resolved.get(index) {
            slot.get_or_init(|| {
                let mti = MTIS[mti_index(mti)];
                self.transactions
                    .with_label_values(&[mti, code.as_str(), route.name()])
            })
            .inc();
        }
    }

    pub fn observe(&self, stage: Stage, elapsed: Duration) {
        if let Some(histogram) = self.stages.get(stage as usize) {
            histogram.observe(elapsed.as_secs_f64());
        }
    }

    pub fn connections(&self, acquirer: u64) -> IntGauge {
        self.connections.with_label_values(&[&acquirer.to_string()])
    }

    pub fn ledger_transactions_on_disk(&self, shard: u32) -> IntGauge {
        self.ledger_transactions_on_disk
            .with_label_values(&[&shard.to_string()])
    }

    pub fn ledger_expiry_lag(&self, shard: u32) -> IntGauge {
        self.ledger_expiry_lag
            .with_label_values(&[&shard.to_string()])
    }

    pub fn ledger_reads_ahead(&self, shard: u32) -> IntCounter {
        self.ledger_reads_ahead
            .with_label_values(&[&shard.to_string()])
    }

    pub fn ledger_transactions(&self, shard: u32) -> IntGauge {
        self.ledger_transactions
            .with_label_values(&[&shard.to_string()])
    }

    /// The text format of every metric, for `GET /metrics`.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        // Encoding into a Vec cannot fail but on an invalid metric, a programming error.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| match Metrics::new() {
    Ok(metrics) => metrics,
    Err(error) => panic!("metrics: {error}"),
});

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_with_their_labels() {
        let metrics = Metrics::new().unwrap();
        for _ in 0..3 {
            metrics.count(b"0100", ResponseCode::Approved, Route::OnUs);
        }
        metrics.count(b"9999", ResponseCode::FormatError, Route::None);
        metrics.observe(Stage::Total, Duration::from_micros(300));
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(
                "switch_transactions_total{mti=\"0100\",response_code=\"00\",route=\"on-us\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains(
            "switch_transactions_total{mti=\"other\",response_code=\"30\",route=\"none\"} 1"
        ));
        assert!(text.contains("switch_stage_duration_seconds_count{stage=\"total\"} 1"));
        assert!(
            text.contains("switch_stage_duration_seconds_bucket{stage=\"total\",le=\"0.0005\"} 1")
        );
        assert!(text.contains("process_resident_memory_bytes"));
    }

    fn gauge(text: &str, series: &str) -> i64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// A store's gauges follow it: its flushed table shows in its bytes (and in level 0 until
    /// fjall compacts it away).
    #[test]
    fn a_stores_health_is_sampled_into_its_gauges() {
        let dir = crate::testing::TempDir::new("store-health");
        let db = fjall::Database::builder(&*dir).open().unwrap();
        let keyspace = db
            .keyspace("k", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let empty = StoreHealth::of(&db, [&keyspace]);
        assert_eq!((empty.l0_runs, empty.tables_bytes), (0, 0), "{empty:?}");
        assert!(empty.journals >= 1, "{empty:?}");
        for i in 0..1_000u32 {
            keyspace.insert(i.to_be_bytes(), [7u8; 100]).unwrap();
        }
        keyspace.rotate_memtable_and_wait().unwrap();
        let flushed = StoreHealth::of(&db, [&keyspace]);
        assert!(flushed.l0_runs <= 1, "{flushed:?}");
        assert!(flushed.tables_bytes > 0, "{flushed:?}");
        assert_eq!(flushed.sealed_memtables, 0, "{flushed:?}");

        let store = std::sync::Arc::new((db, keyspace));
        let weak = std::sync::Arc::downgrade(&store);
        watch_store("test", move || {
            weak.upgrade().map(|s| StoreHealth::of(&s.0, [&s.1]))
        })
        .unwrap();
        let text = String::from_utf8(metrics().render()).unwrap();
        assert!((0..=1).contains(&gauge(&text, "switch_store_l0_runs{store=\"test\"}")));
        assert!(gauge(&text, "switch_store_tables_bytes{store=\"test\"}") > 0);
        assert!(gauge(&text, "switch_store_journals{store=\"test\"}") >= 1);
    }
}
