//! Fault-server statistics: fault latencies, page counts, timings, and the end-of-run table
//! / JSON object.

use serde::Serialize;
use std::time::Duration;

/// Percentile (0–100) of sorted samples, in the samples' unit; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Raw counters the engine keeps while it runs.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Fault latencies (fault message read → page copied), in nanoseconds.
    pub fault_ns: Vec<u64>,
    /// Pages that arrived because a thread faulted on them.
    pub pages_on_demand: u64,
    /// Pages that arrived by background prefetch.
    pub pages_prefetched: u64,
    /// Pages the process discarded or unmapped before they were needed.
    pub pages_discarded: u64,
    /// Bytes received over the network.
    pub bytes_received: u64,
    /// Fault messages read from the uffd.
    pub faults: u64,
    /// Reconnects after a broken connection.
    pub reconnects: u64,
}

/// The end-of-run report (`--json` prints exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Pages in the grant's regions.
    pub pages_total: u64,
    /// Pages served because a thread faulted on them.
    pub pages_on_demand: u64,
    /// Pages pulled by background prefetch.
    pub pages_prefetched: u64,
    /// Pages discarded/unmapped by the process before they were fetched.
    pub pages_discarded: u64,
    /// Fault messages seen.
    pub faults: u64,
    /// Fault latency percentiles, microseconds.
    pub fault_p50_us: f64,
    /// 90th percentile.
    pub fault_p90_us: f64,
    /// 99th percentile.
    pub fault_p99_us: f64,
    /// Maximum.
    pub fault_max_us: f64,
    /// Network bytes received.
    pub bytes_received: u64,
    /// Seconds from start until every page was present.
    pub all_present_s: f64,
    /// Received bytes / all_present_s, in MB/s.
    pub throughput_mb_s: f64,
    /// Reconnects.
    pub reconnects: u64,
    /// Whether COMMIT was sent and acknowledged.
    pub committed: bool,
}

impl Report {
    /// Builds the report from counters.
    pub fn new(pages_total: u64, c: &Counters, all_present: Duration, committed: bool) -> Report {
        let mut lat = c.fault_ns.clone();
        lat.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let secs = all_present.as_secs_f64();
        Report {
            pages_total,
            pages_on_demand: c.pages_on_demand,
            pages_prefetched: c.pages_prefetched,
            pages_discarded: c.pages_discarded,
            faults: c.faults,
            fault_p50_us: us(percentile(&lat, 50.0)),
            fault_p90_us: us(percentile(&lat, 90.0)),
            fault_p99_us: us(percentile(&lat, 99.0)),
            fault_max_us: us(lat.last().copied().unwrap_or(0)),
            bytes_received: c.bytes_received,
            all_present_s: secs,
            throughput_mb_s: if secs > 0.0 {
                c.bytes_received as f64 / secs / 1e6
            } else {
                0.0
            },
            reconnects: c.reconnects,
            committed,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let mut row = |k: &str, v: String| s.push_str(&format!("  {k:<29} {v}\n"));
        row("pages total", self.pages_total.to_string());
        row("pages demand-faulted", self.pages_on_demand.to_string());
        row("pages prefetched", self.pages_prefetched.to_string());
        if self.pages_discarded > 0 {
            row(
                "pages discarded by process",
                self.pages_discarded.to_string(),
            );
        }
        row(
            "fault latency p50/p90/p99/max",
            if self.pages_on_demand == 0 {
                "n/a (no demand faults)".to_string()
            } else {
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0} µs",
                    self.fault_p50_us, self.fault_p90_us, self.fault_p99_us, self.fault_max_us
                )
            },
        );
        row("throughput", format!("{:.0} MB/s", self.throughput_mb_s));
        row(
            "time to all pages present",
            format!("{:.3} s", self.all_present_s),
        );
        row("reconnects", self.reconnects.to_string());
        row(
            "committed",
            if self.committed {
                "yes".into()
            } else {
                "no".into()
            },
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 51);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
