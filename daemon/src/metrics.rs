//! Operational counters, exposed by the API as Prometheus text at
//! `/metrics`. The daemon's components hold a [`Metrics`] handle and record
//! what they do; the outbox depth is read from the store at scrape time, so
//! it is never stale.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A cheap, clonable handle on the process's counters.
#[derive(Clone, Debug, Default)]
pub struct Metrics(Arc<Inner>);

/// A labelled counter's key: metric name and label pairs.
type Series = (&'static str, Vec<(&'static str, String)>);

#[derive(Debug, Default)]
struct Inner {
    ingested: [AtomicU64; 3],
    rescore_count: AtomicU64,
    rescore_micros: AtomicU64,
    rescore_last_micros: AtomicU64,
    /// Labelled counters: (metric, labels) → value.
    counters: Mutex<BTreeMap<Series, u64>>,
    plugin_healthy: Mutex<BTreeMap<String, bool>>,
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

const DECISIONS: &str = "relance_guard_decisions_total";
const DELIVERIES: &str = "relance_deliveries_total";

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Items taken in by the API (or an import), by outcome.
    pub fn record_ingest(&self, outcome: IngestOutcome, n: u64) {
        self.0.ingested[outcome as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// One rescoring pass and how long it took.
    pub fn record_rescore(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.0.rescore_count.fetch_add(1, Ordering::Relaxed);
        self.0.rescore_micros.fetch_add(us, Ordering::Relaxed);
        self.0.rescore_last_micros.store(us, Ordering::Relaxed);
    }

    /// A guard decision (`allow`, `defer`, `block`) and its main reason
    /// (`fatigue`, `cap`, `window`, `consent`, `do_not_contact` …; `none`).
    pub fn record_decision(&self, outcome: &str, reason: &str) {
        self.bump(
            DECISIONS,
            vec![("outcome", outcome.into()), ("reason", reason.into())],
        );
    }

    /// A delivery attempt's result on a channel (`sent`, `retrying`, `dead` …).
    pub fn record_delivery(&self, channel: &str, outcome: &str) {
        self.bump(
            DELIVERIES,
            vec![("channel", channel.into()), ("outcome", outcome.into())],
        );
    }

    /// The last health check of a plugin.
    pub fn set_plugin_health(&self, plugin: &str, healthy: bool) {
        self.0
            .plugin_healthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(plugin.to_string(), healthy);
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

    fn bump(&self, name: &'static str, labels: Vec<(&'static str, String)>) {
        *self
            .0
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((name, labels))
            .or_default() += 1;
    }

    /// The Prometheus text exposition (format 0.0.4), with the outbox depth
    /// per state read by the caller.
    pub fn render(&self, outbox_depth: &BTreeMap<String, u64>) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "relance_events_ingested_total",
            "counter",
            "Items taken in, by outcome.",
        );
        for o in IngestOutcome::ALL {
            let v = self.0.ingested[o as usize].load(Ordering::Relaxed);
            line(
                &mut out,
                "relance_events_ingested_total",
                &[("outcome", o.as_str())],
                v as f64,
            );
        }
        header(
            &mut out,
            "relance_rescore_duration_seconds",
            "summary",
            "Rescoring passes and their total duration.",
        );
        let micros = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        line(
            &mut out,
            "relance_rescore_duration_seconds_sum",
            &[],
            micros(&self.0.rescore_micros),
        );
        line(
            &mut out,
            "relance_rescore_duration_seconds_count",
            &[],
            self.0.rescore_count.load(Ordering::Relaxed) as f64,
        );
        header(
            &mut out,
            "relance_rescore_last_duration_seconds",
            "gauge",
            "Duration of the last rescoring pass.",
        );
        line(
            &mut out,
            "relance_rescore_last_duration_seconds",
            &[],
            micros(&self.0.rescore_last_micros),
        );
        let counters = self
            .0
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (name, help) in [
            (DECISIONS, "Fatigue guard decisions, by outcome and reason."),
            (DELIVERIES, "Delivery attempts, by channel and outcome."),
        ] {
            header(&mut out, name, "counter", help);
            for ((n, labels), v) in &counters {
                if *n == name {
                    let labels: Vec<(&str, &str)> =
                        labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    line(&mut out, name, &labels, *v as f64);
                }
            }
        }
        header(
            &mut out,
            "relance_outbox_depth",
            "gauge",
            "Outbox rows, by state.",
        );
        for (state, n) in outbox_depth {
            line(
                &mut out,
                "relance_outbox_depth",
                &[("state", state)],
                *n as f64,
            );
        }
        header(
            &mut out,
            "relance_plugin_healthy",
            "gauge",
            "1 when the plugin's last health check passed.",
        );
        let health = self
            .0
            .plugin_healthy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (plugin, ok) in &health {
            line(
                &mut out,
                "relance_plugin_healthy",
                &[("plugin", plugin)],
                if *ok { 1.0 } else { 0.0 },
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and line feed.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_escaped_labels() {
        let m = Metrics::new();
        m.record_ingest(IngestOutcome::Accepted, 3);
        m.record_decision("block", "consent");
        m.record_delivery("em\"ail", "sent");
        m.record_rescore(std::time::Duration::from_millis(1500));
        m.set_plugin_health("email", true);
        let depth = BTreeMap::from([("planned".to_string(), 2)]);
        let text = m.render(&depth);
        assert!(text.contains("relance_events_ingested_total{outcome=\"accepted\"} 3\n"));
        assert!(
            text.contains(
                "relance_guard_decisions_total{outcome=\"block\",reason=\"consent\"} 1\n"
            )
        );
        assert!(text.contains("channel=\"em\\\"ail\""));
        assert!(text.contains("relance_rescore_duration_seconds_sum 1.5\n"));
        assert!(text.contains("relance_outbox_depth{state=\"planned\"} 2\n"));
        assert!(text.contains("relance_plugin_healthy{plugin=\"email\"} 1\n"));
    }
}
