//! Operational metrics, exposed by the API at `/metrics` (OpenMetrics text,
//! which Prometheus scrapes). Built on the `prometheus-client` crate: its
//! registry, counters, gauges and histograms, and its encoder. The
//! daemon's components hold a [`Metrics`] handle and record what they do;
//! the outbox depth is read from the store at scrape time and the process
//! figures from `/proc/self`, so neither is ever stale.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A label set: name and value pairs.
type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// A cheap, clonable handle on the process's metrics.
#[derive(Clone, Debug)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Mutex<Registry>,
    ingested: Family<Labels, Counter>,
    rescore: Histogram,
    rescore_last: Gauge<f64, AtomicU64>,
    decisions: Family<Labels, Counter>,
    deliveries: Family<Labels, Counter>,
    delivery_seconds: Histograms,
    pass_seconds: Histograms,
    api_seconds: Histograms,
    signal_to_send_seconds: Histograms,
    outbox_depth: Family<Labels, Gauge>,
    plugin_healthy: Family<Labels, Gauge>,
    /// The same, readable by the dashboard.
    plugin_health: Mutex<BTreeMap<String, bool>>,
    /// Channels that could not be opened, with why (for `/readyz`).
    unconfigured: Mutex<BTreeMap<String, String>>,
}

/// What ingesting one item did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    Accepted,
    Duplicate,
    Rejected,
}

impl IngestOutcome {
    const ALL: [Self; 3] = [Self::Accepted, Self::Duplicate, Self::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        }
    }
}

/// A plugin call: from 5 ms to a minute (the default call timeout is 30 s).
fn delivery_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// A pass: from 10 ms to 5 minutes (a full rebuild of a million scores).
fn pass_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

/// An API request: from 1 ms to 10 s (a batch of 10,000 items).
fn api_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// From a signal to its follow-up's send: a second to a week (triggers
/// may wait for a send window or a fatigue level).
fn reaction_buckets() -> Histogram {
    Histogram::new([
        1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0, 604_800.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let inner = Inner {
            registry: Mutex::new(Registry::default()),
            ingested: Family::default(),
            rescore: pass_buckets(),
            rescore_last: Gauge::default(),
            decisions: Family::default(),
            deliveries: Family::default(),
            delivery_seconds: Family::new_with_constructor(delivery_buckets),
            pass_seconds: Family::new_with_constructor(pass_buckets),
            api_seconds: Family::new_with_constructor(api_buckets),
            signal_to_send_seconds: Family::new_with_constructor(reaction_buckets),
            outbox_depth: Family::default(),
            plugin_healthy: Family::default(),
            plugin_health: Mutex::default(),
            unconfigured: Mutex::default(),
        };
        for o in IngestOutcome::ALL {
            inner
                .ingested
                .get_or_create(&vec![("outcome", o.as_str().to_string())])
                .inc_by(0);
        }
        {
            let mut r = inner
                .registry
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            r.register(
                "relance_events_ingested",
                "Items taken in, by outcome",
                inner.ingested.clone(),
            );
            r.register(
                "relance_rescore_duration_seconds",
                "Rescoring passes and their duration",
                inner.rescore.clone(),
            );
            r.register(
                "relance_rescore_last_duration_seconds",
                "Duration of the last rescoring pass",
                inner.rescore_last.clone(),
            );
            r.register(
                "relance_guard_decisions",
                "Fatigue guard decisions, by outcome and reason",
                inner.decisions.clone(),
            );
            r.register(
                "relance_deliveries",
                "Delivery attempts, by channel and outcome",
                inner.deliveries.clone(),
            );
            r.register(
                "relance_delivery_duration_seconds",
                "Time a delivery attempt took in its plugin, by channel and outcome",
                inner.delivery_seconds.clone(),
            );
            r.register(
                "relance_pass_duration_seconds",
                "Duration of passes: rescore, plan, dispatch (one round)",
                inner.pass_seconds.clone(),
            );
            r.register(
                "relance_api_request_duration_seconds",
                "API requests, by method, route and status",
                inner.api_seconds.clone(),
            );
            r.register(
                "relance_signal_to_send_seconds",
                "From a signal (an event, a score change) to the send of the follow-up it triggered, by channel",
                inner.signal_to_send_seconds.clone(),
            );
            r.register(
                "relance_outbox_depth",
                "Outbox rows, by state",
                inner.outbox_depth.clone(),
            );
            r.register(
                "relance_plugin_healthy",
                "1 when the plugin's last health check passed",
                inner.plugin_healthy.clone(),
            );
            r.register_collector(Box::new(Process));
        }
        Self(Arc::new(inner))
    }

    /// Items taken in by the API (or an import), by outcome.
    pub fn record_ingest(&self, outcome: IngestOutcome, n: u64) {
        self.0
            .ingested
            .get_or_create(&vec![("outcome", outcome.as_str().to_string())])
            .inc_by(n);
    }

    /// One rescoring pass and how long it took.
    pub fn record_rescore(&self, took: Duration) {
        let secs = took.as_secs_f64();
        self.0.rescore.observe(secs);
        self.0.rescore_last.set(secs);
        self.record_pass("rescore", took);
    }

    /// A pass (`rescore`, `plan`, `dispatch` for one round) and its duration.
    pub fn record_pass(&self, pass: &str, took: Duration) {
        self.0
            .pass_seconds
            .get_or_create(&vec![("pass", pass.to_string())])
            .observe(took.as_secs_f64());
    }

    /// A guard decision (`allow`, `defer`, `block`) and its main reason
    /// (`fatigue`, `cap`, `window`, `consent`, `do_not_contact` …; `none`).
    pub fn record_decision(&self, outcome: &str, reason: &str) {
        self.0
            .decisions
            .get_or_create(&vec![
                ("outcome", outcome.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// A delivery attempt's result on a channel (`sent`, `retrying`, `dead` …).
    pub fn record_delivery(&self, channel: &str, outcome: &str) {
        self.0
            .deliveries
            .get_or_create(&delivery_labels(channel, outcome))
            .inc();
    }

    /// How long a delivery attempt took, with the same labels as
    /// [`Metrics::record_delivery`].
    pub fn record_delivery_latency(&self, channel: &str, outcome: &str, took: Duration) {
        self.0
            .delivery_seconds
            .get_or_create(&delivery_labels(channel, outcome))
            .observe(took.as_secs_f64());
    }

    /// One API request: its method, its route (the matched pattern, such as
    /// `/v1/contacts/{id}`, never the raw path) and status.
    pub fn record_api_request(&self, method: &str, route: &str, status: u16, took: Duration) {
        self.0
            .api_seconds
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .observe(took.as_secs_f64());
    }

    /// A follow-up triggered by a signal was sent, `delay` after the signal.
    pub fn record_signal_to_send(&self, channel: &str, delay: Duration) {
        self.0
            .signal_to_send_seconds
            .get_or_create(&vec![("channel", channel.to_string())])
            .observe(delay.as_secs_f64());
    }

    /// The last health check of a plugin.
    pub fn set_plugin_health(&self, plugin: &str, healthy: bool) {
        self.0
            .plugin_healthy
            .get_or_create(&vec![("plugin", plugin.to_string())])
            .set(i64::from(healthy));
        self.0
            .plugin_health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(plugin.to_string(), healthy);
    }

    /// Each plugin's last health check.
    pub fn plugin_health(&self) -> BTreeMap<String, bool> {
        self.0
            .plugin_health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The channels the daemon could not open, with why.
    pub fn set_unconfigured_channels(&self, channels: BTreeMap<String, String>) {
        *self
            .0
            .unconfigured
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = channels;
    }

    pub fn unconfigured_channels(&self) -> BTreeMap<String, String> {
        self.0
            .unconfigured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The OpenMetrics text exposition, with the outbox depth per state
    /// read by the caller.
    pub fn render(&self, outbox_depth: &BTreeMap<String, u64>) -> String {
        let registry = self
            .0
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.0.outbox_depth.clear();
        for (state, n) in outbox_depth {
            self.0
                .outbox_depth
                .get_or_create(&vec![("state", state.clone())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        out
    }
}

fn delivery_labels(channel: &str, outcome: &str) -> Labels {
    vec![
        ("channel", channel.to_string()),
        ("outcome", outcome.to_string()),
    ]
}

/// The process's own figures, read from `/proc/self` at each scrape (Linux;
/// elsewhere nothing is written). Standard names, as Prometheus client
/// libraries give them.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessFigures::read() else {
            return Ok(());
        };
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.rss_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.vm_bytes,
            ),
            ("process_open_fds", "Open file descriptors", p.open_fds),
            (
                "process_max_fds",
                "Most open file descriptors allowed",
                p.max_fds,
            ),
            ("process_threads", "OS threads", p.threads),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(cpu) = p.cpu_seconds {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// What `/proc/self` says about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessFigures {
    pub rss_bytes: Option<u64>,
    pub vm_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub threads: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl ProcessFigures {
    /// `None` where there is no `/proc` (not Linux).
    pub fn read() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3))
                    .and_then(|n| n.parse().ok())
            });
        // The first field of schedstat is the time spent on a CPU, in ns:
        // no clock-tick conversion needed.
        let cpu_seconds = std::fs::read_to_string("/proc/self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .map(|ns| ns as f64 / 1e9);
        Some(Self {
            rss_bytes: kib("VmRSS:").map(|k| k * 1024),
            vm_bytes: kib("VmSize:").map(|k| k * 1024),
            open_fds,
            max_fds,
            threads: kib("Threads:"),
            cpu_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_process_figures() {
        let m = Metrics::new();
        m.record_ingest(IngestOutcome::Accepted, 3);
        m.record_decision("block", "consent");
        m.record_delivery("em\"ail", "sent");
        m.record_delivery_latency("email", "sent", Duration::from_millis(30));
        m.record_rescore(Duration::from_millis(1500));
        m.record_api_request("GET", "/v1/contacts/{id}", 200, Duration::from_millis(2));
        m.set_plugin_health("email", true);
        let depth = BTreeMap::from([("planned".to_string(), 2)]);
        let text = m.render(&depth);
        for want in [
            "relance_events_ingested_total{outcome=\"accepted\"} 3\n",
            "relance_events_ingested_total{outcome=\"rejected\"} 0\n",
            "relance_guard_decisions_total{outcome=\"block\",reason=\"consent\"} 1\n",
            "channel=\"em\\\"ail\"",
            "relance_rescore_duration_seconds_sum 1.5\n",
            "relance_rescore_duration_seconds_count 1\n",
            "relance_pass_duration_seconds_count{pass=\"rescore\"} 1\n",
            "relance_delivery_duration_seconds_bucket{le=\"0.05\",channel=\"email\",outcome=\"sent\"} 1\n",
            "relance_delivery_duration_seconds_bucket{le=\"0.025\",channel=\"email\",outcome=\"sent\"} 0\n",
            "relance_api_request_duration_seconds_count{method=\"GET\",route=\"/v1/contacts/{id}\",status=\"200\"} 1\n",
            "relance_outbox_depth{state=\"planned\"} 2\n",
            "relance_plugin_healthy{plugin=\"email\"} 1\n",
            "# TYPE process_resident_memory_bytes gauge\n",
            "# TYPE process_open_fds gauge\n",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        let p = ProcessFigures::read().expect("Linux");
        assert!(p.rss_bytes.expect("rss") > 1024 * 1024, "{p:?}");
        assert!(p.open_fds.expect("fds") >= 3, "{p:?}");
    }
}
