//! Prometheus metrics: counters and histograms kept in memory since the process started,
//! and gauges read from the store and the agent links when scraped. Labels never carry
//! secrets or project names: statuses, step names and agent names only.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use crate::agents::LinkState;
use crate::domain::DeploymentStatus;

/// Upper bounds (seconds) of the step duration histogram buckets.
const STEP_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; STEP_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    finished: BTreeMap<&'static str, u64>,
    steps: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// What is read from the store and the hub at scrape time.
pub struct Gauges {
    pub queued: u64,
    pub running: u64,
    /// Queued deployments per instance id, for the queue length.
    pub queue_by_instance: BTreeMap<String, u64>,
    pub agents: Vec<(String, LinkState)>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn deployment_finished(&self, status: DeploymentStatus) {
        *self.lock().finished.entry(status.as_str()).or_default() += 1;
    }

    pub fn step_finished(&self, step: &str, duration_ms: u64) {
        // Step names come from agents; bound the label set against a misbehaving one.
        let mut inner = self.lock();
        if !inner.steps.contains_key(step) && inner.steps.len() >= 64 {
            return;
        }
        let h = inner.steps.entry(step.to_owned()).or_default();
        let secs = duration_ms as f64 / 1000.0;
        for (i, bound) in STEP_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self, gauges: &Gauges) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let _ = writeln!(out, "# HELP ocore_deployments_finished_total Deployments that finished since the coordinator started, by final status.");
        let _ = writeln!(out, "# TYPE ocore_deployments_finished_total counter");
        for status in DeploymentStatus::ALL.iter().filter(|s| s.is_terminal()) {
            let n = inner.finished.get(status.as_str()).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "ocore_deployments_finished_total{{status=\"{}\"}} {n}",
                status.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP ocore_deployments_active Deployments queued or running now."
        );
        let _ = writeln!(out, "# TYPE ocore_deployments_active gauge");
        let _ = writeln!(
            out,
            "ocore_deployments_active{{status=\"queued\"}} {}",
            gauges.queued
        );
        let _ = writeln!(
            out,
            "ocore_deployments_active{{status=\"running\"}} {}",
            gauges.running
        );
        let _ = writeln!(
            out,
            "# HELP ocore_queue_length Deployments waiting behind the running one, by instance."
        );
        let _ = writeln!(out, "# TYPE ocore_queue_length gauge");
        for (instance, n) in &gauges.queue_by_instance {
            let _ = writeln!(
                out,
                "ocore_queue_length{{instance=\"{}\"}} {n}",
                escape(instance)
            );
        }
        let _ = writeln!(
            out,
            "# HELP ocore_step_duration_seconds Duration of finished pipeline steps."
        );
        let _ = writeln!(out, "# TYPE ocore_step_duration_seconds histogram");
        for (step, h) in &inner.steps {
            let step = escape(step);
            for (i, bound) in STEP_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ocore_step_duration_seconds_bucket{{step=\"{step}\",le=\"{bound}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "ocore_step_duration_seconds_bucket{{step=\"{step}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "ocore_step_duration_seconds_sum{{step=\"{step}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "ocore_step_duration_seconds_count{{step=\"{step}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(out, "# HELP ocore_agent_connected Whether the coordinator's link to the agent is up (1) or not (0).");
        let _ = writeln!(out, "# TYPE ocore_agent_connected gauge");
        for (agent, state) in &gauges.agents {
            let up = u8::from(*state == LinkState::Connected);
            let _ = writeln!(
                out,
                "ocore_agent_connected{{agent=\"{}\"}} {up}",
                escape(agent)
            );
        }
        out
    }
}

/// Escapes a label value (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.deployment_finished(DeploymentStatus::Failed);
        m.step_finished("Build Image", 2_000);
        m.step_finished("Build Image", 70_000);
        let text = m.render(&Gauges {
            queued: 2,
            running: 1,
            queue_by_instance: [("shop-prod".to_owned(), 2)].into_iter().collect(),
            agents: vec![
                ("web1".into(), LinkState::Connected),
                ("web\"2".into(), LinkState::Unreachable),
            ],
        });
        assert!(
            text.contains("ocore_deployments_finished_total{status=\"failed\"} 1"),
            "{text}"
        );
        assert!(text.contains("ocore_deployments_finished_total{status=\"succeeded\"} 0"));
        assert!(
            text.contains("ocore_step_duration_seconds_bucket{step=\"Build Image\",le=\"5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ocore_step_duration_seconds_bucket{step=\"Build Image\",le=\"120\"} 2")
        );
        assert!(text.contains("ocore_step_duration_seconds_count{step=\"Build Image\"} 2"));
        assert!(text.contains("ocore_queue_length{instance=\"shop-prod\"} 2"));
        assert!(text.contains("ocore_agent_connected{agent=\"web1\"} 1"));
        assert!(text.contains("ocore_agent_connected{agent=\"web\\\"2\"} 0"));
    }
}
