//! The server's counters, gauges and histograms, written as Prometheus text
//! exposition (version 0.0.4) for `GET /metrics`.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use super::engine::Finish;
use crate::pipeline::serve::Segment;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, x: f64) {
        for (c, &b) in self.counts.iter_mut().zip(&BUCKETS) {
            if x <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += x;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (c, b) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Clone, Default)]
struct Values {
    /// HTTP responses by (endpoint, status).
    responses: std::collections::BTreeMap<(String, u16), u64>,
    prompt_tokens: u64,
    generated_tokens: u64,
    finished_stop: u64,
    finished_length: u64,
    cancelled: u64,
    passes: u64,
    pass_rows: u64,
    queue: usize,
    running: usize,
    slots_used: usize,
    slots: usize,
    healthy: bool,
    bubble: f64,
    ttft: Histogram,
    itl: Histogram,
}

/// What `/metrics` reports; updated by the engine and the HTTP layer.
pub struct Metrics(Mutex<Values>);

impl Metrics {
    pub fn new(slots: usize) -> Metrics {
        Metrics(Mutex::new(Values {
            slots,
            healthy: true,
            ..Values::default()
        }))
    }

    fn with(&self, f: impl FnOnce(&mut Values)) {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn response(&self, endpoint: &str, status: u16) {
        self.with(|v| {
            *v.responses
                .entry((endpoint.to_string(), status))
                .or_default() += 1
        })
    }
    pub fn prompt_tokens(&self, n: usize) {
        self.with(|v| v.prompt_tokens += n as u64)
    }
    pub fn generated(&self, n: usize) {
        self.with(|v| v.generated_tokens += n as u64)
    }
    pub fn finished(&self, f: Finish) {
        self.with(|v| match f {
            Finish::Stop => v.finished_stop += 1,
            Finish::Length => v.finished_length += 1,
        })
    }
    pub fn cancelled(&self) {
        self.with(|v| v.cancelled += 1)
    }
    pub fn pass(&self, rows: usize) {
        self.with(|v| {
            v.passes += 1;
            v.pass_rows += rows as u64;
        })
    }
    pub fn set_gauges(&self, queue: usize, running: usize, slots_used: usize) {
        self.with(|v| {
            v.queue = queue;
            v.running = running;
            v.slots_used = slots_used;
        })
    }
    pub fn set_healthy(&self, healthy: bool) {
        self.with(|v| v.healthy = healthy)
    }
    pub fn ttft(&self, d: Duration) {
        self.with(|v| v.ttft.observe(d.as_secs_f64()))
    }
    pub fn itl(&self, d: Duration) {
        self.with(|v| v.itl.observe(d.as_secs_f64()))
    }
    pub fn segment(&self, s: &Segment) {
        self.with(|v| v.bubble = s.bubble)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let v = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut o = String::new();
        let mut scalar = |name: &str, kind: &str, help: &str, x: String| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {x}");
        };
        scalar(
            "wgpipe_prompt_tokens_total",
            "counter",
            "Prompt tokens of the requests accepted.",
            v.prompt_tokens.to_string(),
        );
        scalar(
            "wgpipe_generation_tokens_total",
            "counter",
            "Tokens generated and sent to clients.",
            v.generated_tokens.to_string(),
        );
        scalar(
            "wgpipe_requests_cancelled_total",
            "counter",
            "Requests whose client went away before they finished.",
            v.cancelled.to_string(),
        );
        scalar(
            "wgpipe_passes_total",
            "counter",
            "Pipeline passes that sampled tokens.",
            v.passes.to_string(),
        );
        scalar(
            "wgpipe_pass_rows_total",
            "counter",
            "Rows (tokens) in those passes.",
            v.pass_rows.to_string(),
        );
        scalar(
            "wgpipe_queue_depth",
            "gauge",
            "Requests waiting for a KV-cache slot.",
            v.queue.to_string(),
        );
        scalar(
            "wgpipe_requests_running",
            "gauge",
            "Requests holding a KV-cache slot.",
            v.running.to_string(),
        );
        scalar(
            "wgpipe_kv_cache_slots_used",
            "gauge",
            "KV-cache slots in use.",
            v.slots_used.to_string(),
        );
        scalar(
            "wgpipe_kv_cache_slots",
            "gauge",
            "KV-cache slots (--max-batch).",
            v.slots.to_string(),
        );
        scalar(
            "wgpipe_healthy",
            "gauge",
            "1 while every device works, 0 after a device failed.",
            u8::from(v.healthy).to_string(),
        );
        scalar("wgpipe_decode_bubble_ratio", "gauge", "Idle share of the devices over the last completed segment of passes (waiting for requests included).", format!("{}", v.bubble));
        let _ = writeln!(o, "# HELP wgpipe_requests_finished_total Requests that finished, by finish reason.\n# TYPE wgpipe_requests_finished_total counter");
        let _ = writeln!(
            o,
            "wgpipe_requests_finished_total{{reason=\"stop\"}} {}",
            v.finished_stop
        );
        let _ = writeln!(
            o,
            "wgpipe_requests_finished_total{{reason=\"length\"}} {}",
            v.finished_length
        );
        let _ = writeln!(o, "# HELP wgpipe_http_responses_total HTTP responses by endpoint and status.\n# TYPE wgpipe_http_responses_total counter");
        for ((e, s), n) in &v.responses {
            let _ = writeln!(
                o,
                "wgpipe_http_responses_total{{endpoint=\"{e}\",status=\"{s}\"}} {n}"
            );
        }
        v.ttft.write(
            &mut o,
            "wgpipe_time_to_first_token_seconds",
            "From a request's arrival to its first token.",
        );
        v.itl.write(
            &mut o,
            "wgpipe_inter_token_latency_seconds",
            "Between consecutive tokens of one request.",
        );
        o
    }
}
