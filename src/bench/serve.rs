//! `bench serve`: the server under load — N concurrent clients on loopback,
//! each sending M streamed requests from a fixed prompt set, against P
//! pipeline devices and G groups in flight; requests/s, output tokens/s,
//! TTFT and ITL (p50, p99, measured by the clients) and errors. Each P also
//! gets a baseline row with one client sending one request at a time.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pipeline::{ModelSource, Pipeline, PipelineConfig, Workload};
use crate::serve::{EngineConfig, Server, ServerConfig};
use crate::trace::chart::{line_chart, Line};

/// The prompts clients cycle through (as text, or as ids without a tokenizer).
const PROMPTS: [&str; 8] = [
    "The pipeline",
    "Once upon a time",
    "In a distant galaxy, the",
    "Transformers split across devices",
    "Hello",
    "A short note on microbatches and bubbles:",
    "The quick brown fox",
    "Serving models over HTTP",
];

/// `bench serve`'s settings.
#[derive(Clone, Debug)]
pub struct ServeBench {
    pub model: ModelSource,
    /// The storage type on the devices (`--dtype`).
    pub dtype: crate::device::DtypeChoice,
    /// Pipeline depths P.
    pub devices: Vec<usize>,
    /// Groups in flight (default 1 ..= 2P for each P).
    pub groups: Option<Vec<usize>>,
    pub clients: usize,
    /// Requests per client.
    pub requests: usize,
    /// New tokens per request.
    pub max_tokens: usize,
    /// Per-request limit; a request past it is an error.
    pub timeout: Duration,
}

/// One measured point.
#[derive(Clone, Debug, Serialize)]
pub struct ServeRow {
    pub devices: usize,
    pub groups: usize,
    pub clients: usize,
    pub requests: usize,
    pub completed: usize,
    pub errors: usize,
    /// Sent and neither completed nor failed.
    pub lost: usize,
    pub wall_s: f64,
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p99: f64,
    pub itl_ms_p50: f64,
    pub itl_ms_p99: f64,
    /// The first error a client saw, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// What `bench serve` measured.
#[derive(Clone, Debug, Serialize)]
pub struct ServeReport {
    pub model: String,
    pub max_tokens: usize,
    pub lp_num_threads: Option<String>,
    pub rows: Vec<ServeRow>,
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    completed: usize,
    errors: usize,
    tokens: usize,
    ttft: Vec<f64>,
    itl: Vec<f64>,
    first_error: Option<String>,
}

impl ServeBench {
    /// Every point, `progress` seeing each row as it is measured.
    pub fn run(&self, mut progress: impl FnMut(&ServeRow)) -> Result<ServeReport> {
        if self.clients == 0 || self.requests == 0 || self.max_tokens == 0 {
            return Err(Error::Input(
                "--clients, --requests and --max-tokens must be at least 1".into(),
            ));
        }
        let cfg = self.model.config()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Other(format!("starting the async runtime: {e}")))?;
        let mut rows = Vec::new();
        for &p in &self.devices {
            let groups = match &self.groups {
                Some(g) => g.clone(),
                None => (1..=2 * p).collect(),
            };
            let pipeline = Arc::new(Pipeline::new(PipelineConfig {
                devices: p.to_string(),
                workload: Workload::Decode {
                    sequences: self.clients.div_ceil(p),
                    groups: p,
                    steps: self.max_tokens,
                },
                dtype: self.dtype,
                ..PipelineConfig::new(self.model.clone())
            })?);
            let text = pipeline.tokenizer().is_some();
            // One request at a time, then the clients against each G.
            let mut points = vec![(1usize, 1usize, self.requests.max(4))];
            points.extend(groups.iter().map(|&g| (g, self.clients, self.requests)));
            for (g, clients, requests) in points {
                let row = rt.block_on(self.point(&pipeline, p, g, clients, requests, text))?;
                progress(&row);
                rows.push(row);
            }
        }
        Ok(ServeReport {
            model: format!("{} layers, C={}", cfg.n_layer, cfg.n_embd),
            max_tokens: self.max_tokens,
            lp_num_threads: std::env::var("LP_NUM_THREADS").ok(),
            rows,
        })
    }

    async fn point(
        &self,
        pipeline: &Arc<Pipeline>,
        p: usize,
        groups: usize,
        clients: usize,
        requests: usize,
        text: bool,
    ) -> Result<ServeRow> {
        let engine = EngineConfig {
            max_batch: clients.max(groups),
            max_queue: clients * requests,
            groups,
            prefill_chunk: 32,
        };
        let cfg = ServerConfig {
            model_name: "bench".into(),
            api_key: None,
            grace: Duration::from_secs(5),
        };
        let server = Server::bind(pipeline.clone(), engine, &cfg, None, "127.0.0.1:0").await?;
        let url = format!("http://{}/v1/completions", server.addr);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(
            async move {
                let _ = stop_rx.await;
            },
            cfg.grace,
        ));
        // One request first, untimed: the first pass of a run pays for what
        // the adapter compiles lazily.
        let warm = url.clone();
        let (max_tokens, timeout) = (self.max_tokens, self.timeout);
        tokio::task::spawn_blocking(move || client(&warm, 0, 1, max_tokens, timeout, text))
            .await
            .map_err(|e| Error::Other(format!("the warm-up request: {e}")))?;
        let clients_run = tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let seen: Vec<Seen> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..clients)
                    .map(|c| {
                        let url = url.clone();
                        s.spawn(move || client(&url, c, requests, max_tokens, timeout, text))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            (seen, t0.elapsed().as_secs_f64())
        });
        let (seen, wall_s) = clients_run
            .await
            .map_err(|e| Error::Other(format!("the bench clients: {e}")))?;
        let _ = stop_tx.send(());
        serving
            .await
            .map_err(|e| Error::Other(format!("the bench server: {e}")))??;
        let sent = clients * requests;
        let completed: usize = seen.iter().map(|s| s.completed).sum();
        let errors: usize = seen.iter().map(|s| s.errors).sum();
        let tokens: usize = seen.iter().map(|s| s.tokens).sum();
        let mut ttft: Vec<f64> = seen.iter().flat_map(|s| s.ttft.iter().copied()).collect();
        let mut itl: Vec<f64> = seen.iter().flat_map(|s| s.itl.iter().copied()).collect();
        Ok(ServeRow {
            devices: p,
            groups,
            clients,
            requests: sent,
            completed,
            errors,
            lost: sent.saturating_sub(completed + errors),
            wall_s,
            requests_per_s: completed as f64 / wall_s,
            output_tokens_per_s: tokens as f64 / wall_s,
            ttft_ms_p50: pct(&mut ttft, 0.5),
            ttft_ms_p99: pct(&mut ttft, 0.99),
            itl_ms_p50: pct(&mut itl, 0.5),
            itl_ms_p99: pct(&mut itl, 0.99),
            first_error: seen.iter().find_map(|s| s.first_error.clone()),
        })
    }
}

/// The `q` quantile of `v` (ms), NaN when empty.
fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n => v[((q * (n - 1) as f64).round() as usize).min(n - 1)],
    }
}

/// Client `c`: `requests` streamed completions one after another.
fn client(
    url: &str,
    c: usize,
    requests: usize,
    max_tokens: usize,
    timeout: Duration,
    text: bool,
) -> Seen {
    let agent = ureq::AgentBuilder::new().timeout(timeout).build();
    let mut seen = Seen::default();
    for r in 0..requests {
        let k = (c * requests + r) % PROMPTS.len();
        let prompt = match text {
            true => serde_json::json!(PROMPTS[k]),
            false => serde_json::json!([1 + k as u32, 2, 3]),
        };
        let body = serde_json::json!({"prompt": prompt, "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": true, "stream": true});
        let t0 = Instant::now();
        let resp = match agent.post(url).send_string(&body.to_string()) {
            Ok(r) => r,
            Err(e) => {
                seen.errors += 1;
                let msg = match e {
                    ureq::Error::Status(code, r) => {
                        format!("{code}: {}", r.into_string().unwrap_or_default())
                    }
                    e => e.to_string(),
                };
                seen.first_error.get_or_insert(msg);
                continue;
            }
        };
        let (mut last, mut n, mut done, mut failed) = (None::<Instant>, 0, false, false);
        for line in BufReader::new(resp.into_reader()).lines() {
            let Ok(line) = line else {
                failed = true;
                break;
            };
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                done = true;
                break;
            }
            if data.contains("\"error\"") {
                failed = true;
                seen.first_error.get_or_insert(data.to_string());
                continue;
            }
            if data.contains("\"token_ids\":[]") {
                continue;
            }
            let now = Instant::now();
            match last {
                None => seen.ttft.push((now - t0).as_secs_f64() * 1e3),
                Some(t) => seen.itl.push((now - t).as_secs_f64() * 1e3),
            }
            last = Some(now);
            n += 1;
        }
        match done && !failed {
            true => {
                seen.completed += 1;
                seen.tokens += n;
            }
            false => seen.errors += 1,
        }
    }
    seen
}

impl ServeRow {
    /// One line of progress.
    pub fn line(&self) -> String {
        format!(
            "P={} G={} clients={}: {}/{} ok, {} errors, {} lost; {:.1} req/s, {:.0} tokens/s; TTFT p50 {:.1} ms p99 {:.1} ms; ITL p50 {:.1} ms p99 {:.1} ms",
            self.devices,
            self.groups,
            self.clients,
            self.completed,
            self.requests,
            self.errors,
            self.lost,
            self.requests_per_s,
            self.output_tokens_per_s,
            self.ttft_ms_p50,
            self.ttft_ms_p99,
            self.itl_ms_p50,
            self.itl_ms_p99
        ) + &self
            .first_error
            .as_ref()
            .map(|e| format!("; first error: {e}"))
            .unwrap_or_default()
    }
}

impl ServeReport {
    /// The rows as a Markdown table.
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| P | groups | clients | requests | errors | lost | req/s | output tokens/s | TTFT p50 / p99 (ms) | ITL p50 / p99 (ms) |\n|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.rows {
            t.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.0} / {:.0} | {:.1} / {:.1} |\n",
                r.devices,
                r.groups,
                r.clients,
                r.requests,
                r.errors,
                r.lost,
                r.requests_per_s,
                r.output_tokens_per_s,
                r.ttft_ms_p50,
                r.ttft_ms_p99,
                r.itl_ms_p50,
                r.itl_ms_p99
            ));
        }
        t
    }

    /// Output tokens/s against groups in flight, one line per P (the
    /// one-at-a-time baselines left out).
    pub fn chart(&self) -> String {
        let mut ps: Vec<usize> = self.rows.iter().map(|r| r.devices).collect();
        ps.dedup();
        let lines: Vec<Line> = ps
            .iter()
            .map(|&p| Line {
                label: format!("P={p}"),
                points: (self.rows.iter())
                    .filter(|r| r.devices == p && r.clients > 1)
                    .map(|r| (r.groups as f64, r.output_tokens_per_s))
                    .collect(),
            })
            .collect();
        let clients = self.rows.iter().map(|r| r.clients).max().unwrap_or(1);
        line_chart(
            &lines,
            &format!(
                "wgpipe serve, {}: output tokens/s with {clients} concurrent clients against groups in flight",
                self.model
            ),
            "groups in flight",
            "output tokens/s",
        )
    }
}
