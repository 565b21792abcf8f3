//! `wgpipe serve` driven over loopback HTTP: the real binary on a free port,
//! requests from a plain HTTP client. Token ids are compared exactly with
//! `wgpipe generate`'s for the same prompt and settings — alone, streamed,
//! and among 16 concurrent requests — on the `tiny-gpt2-gen` fixture over
//! two pipeline devices, and through the chat template of `tiny-llama-chat`
//! (the `tiny-llama-gen` checkpoint with a small `chat_template` added to its
//! `tokenizer_config.json`). Then the error cases, the API key, /metrics
//! against what was sent, a full queue, a client that goes away, a device
//! that fails (`fault-injection`), and SIGTERM.
//!
//! `WGPIPE_TEST_HOLD=FILE` (test builds) stops the server building new
//! passes while FILE exists: how these tests put requests exactly where
//! they want them (queued, or paused mid-stream) without timing anything.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// A server process on a free loopback port.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(checkpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = common::fixture_dir(checkpoint);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wgpipe"));
        cmd.args([
            "serve",
            "--checkpoint",
            dir.to_str().unwrap(),
            "--port",
            "0",
        ])
        .args(["--split", "even"])
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start wgpipe serve");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(String::new()));
        let mut url = None;
        let mut line = String::new();
        while url.is_none() {
            line.clear();
            if err.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.wait();
                panic!(
                    "wgpipe serve ended before listening: {}",
                    log.lock().unwrap()
                );
            }
            log.lock().unwrap().push_str(&line);
            if let Some(i) = line.find("listening on http://") {
                url = Some(line[i + "listening on ".len()..].trim().to_string());
            }
        }
        let l = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                l.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Server {
            child,
            url: url.unwrap(),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// POST `body` (JSON text) to `path`: the status and the JSON answer.
    fn post_raw(&self, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = ureq::post(&self.url(path)).set("Content-Type", "application/json");
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        answer(req.send_string(body))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string(), None)
    }

    fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&self.url(path)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("GET {path}: {e}"),
        }
    }

    /// A streamed request: every `data:` payload, `[DONE]` included.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let r = ureq::post(&self.url(path))
            .send_string(&body.to_string())
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        assert!(
            r.content_type().starts_with("text/event-stream"),
            "{}",
            r.content_type()
        );
        sse_data(BufReader::new(r.into_reader()))
    }

    fn metrics(&self) -> prometheus_parse::Scrape {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200);
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{text}"))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let (code, resp) = match r {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("request failed: {e}"),
    };
    let text = resp.into_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (code, v)
}

fn sse_data(r: impl BufRead) -> Vec<String> {
    let mut out = Vec::new();
    for line in r.lines() {
        let line = line.expect("read the event stream");
        if let Some(d) = line.strip_prefix("data: ") {
            out.push(d.to_string());
            if d == "[DONE]" {
                break;
            }
        }
    }
    out
}

/// A metric's value (the sample with all of `labels`).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("metric {name} {labels:?} missing"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{name} is not a scalar"),
    }
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"))
}

/// `wgpipe generate` of one prompt: the new token ids.
fn generate(checkpoint: &str, prompt: &str, n: usize, sampling: &[&str]) -> Vec<u32> {
    let dir = common::fixture_dir(checkpoint);
    let n = n.to_string();
    let mut args = vec![
        "generate",
        "--checkpoint",
        dir.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-new-tokens",
        &n,
        "--split",
        "even",
        "--json",
    ];
    args.extend(sampling);
    let out = Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args(&args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let seq = &v["sequences"][0];
    let all = ids(&seq["ids"]);
    all[ids(&seq["prompt_ids"]).len()..].to_vec()
}

/// A request and the tokens `generate` gives for it.
struct Case {
    body: Value,
    want: Vec<u32>,
}

/// Greedy and seeded-sampling cases on the GPT-2 fixture.
fn gpt2_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (prompt, n) in [
        ("The pipeline", 12),
        ("Hello world, this is a longer prompt", 9),
    ] {
        cases.push(Case {
            body: json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": true}),
            want: generate("tiny-gpt2-gen", prompt, n, &[]),
        });
        cases.push(Case {
            body: json!({"prompt": prompt, "max_tokens": n, "temperature": 0.9, "top_k": 40,
                "top_p": 0.95, "seed": 1234, "ignore_eos": true}),
            want: generate(
                "tiny-gpt2-gen",
                prompt,
                n,
                &[
                    "--temperature",
                    "0.9",
                    "--top-k",
                    "40",
                    "--top-p",
                    "0.95",
                    "--seed",
                    "1234",
                ],
            ),
        });
    }
    cases
}

/// The token ids of a streamed completion, its text, and its last chunk.
fn streamed_ids(events: &[String]) -> (Vec<u32>, String, Value) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (mut got, mut text) = (Vec::new(), String::new());
    for c in &chunks {
        assert!(c.get("error").is_none(), "an error in the stream: {c}");
        let choice = &c["choices"][0];
        // The chat's first chunk (the role) carries no tokens.
        if !choice["token_ids"].is_null() {
            got.extend(ids(&choice["token_ids"]));
        }
        text.push_str(
            choice["text"]
                .as_str()
                .or(choice["delta"]["content"].as_str())
                .unwrap_or(""),
        );
    }
    (got, text, chunks.last().unwrap().clone())
}

#[test]
fn completions_give_generates_tokens_alone_streamed_and_among_16() {
    let cases = gpt2_cases();
    let s = Server::start(
        "tiny-gpt2-gen",
        &["--devices", "2", "--max-batch", "16"],
        &[],
    );
    for (i, c) in cases.iter().enumerate() {
        // Alone, whole.
        let (status, v) = s.post("/v1/completions", &c.body);
        assert_eq!(status, 200, "case {i}: {v}");
        let choice = &v["choices"][0];
        assert_eq!(ids(&choice["token_ids"]), c.want, "case {i} alone");
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["usage"]["completion_tokens"], c.want.len());
        let pt = v["usage"]["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            v["usage"]["total_tokens"].as_u64().unwrap(),
            pt + c.want.len() as u64
        );
        // Streamed: the same tokens and text, usage in the last chunk.
        let mut body = c.body.clone();
        body["stream"] = json!(true);
        let (got, text, last) = streamed_ids(&s.stream("/v1/completions", &body));
        assert_eq!(got, c.want, "case {i} streamed");
        assert_eq!(
            text,
            choice["text"].as_str().unwrap(),
            "case {i} streamed text"
        );
        assert_eq!(last["choices"][0]["finish_reason"], "length");
        assert_eq!(last["usage"]["completion_tokens"], c.want.len());
    }
    // 16 at once, every case four times, half of them streamed.
    let s = Arc::new(s);
    let cases = Arc::new(cases);
    let handles: Vec<_> = (0..16)
        .map(|k| {
            let (s, cases) = (s.clone(), cases.clone());
            std::thread::spawn(move || {
                let c = &cases[k % cases.len()];
                let got = match k % 2 {
                    0 => {
                        let (status, v) = s.post("/v1/completions", &c.body);
                        assert_eq!(status, 200, "{v}");
                        ids(&v["choices"][0]["token_ids"])
                    }
                    _ => {
                        let mut body = c.body.clone();
                        body["stream"] = json!(true);
                        streamed_ids(&s.stream("/v1/completions", &body)).0
                    }
                };
                assert_eq!(
                    got,
                    c.want,
                    "request {k} among 16 (case {})",
                    k % cases.len()
                );
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a concurrent request failed");
    }
    // Every slot is free again.
    let m = s.metrics();
    assert_eq!(
        value(&m, "wgpipe_kv_cache_slots_used", &[]),
        0.0,
        "{}",
        s.log()
    );
    assert_eq!(value(&m, "wgpipe_requests_running", &[]), 0.0);
}

#[test]
fn chat_renders_the_template_and_gives_generates_tokens() {
    // The template writes "<bos>User: …\nAssistant:"; generate's tokenizer
    // adds the BOS itself.
    let prompt = "User: Tell me about pipelines\nAssistant:";
    let want = generate("tiny-llama-chat", prompt, 10, &[]);
    let s = Server::start("tiny-llama-chat", &["--devices", "2"], &[]);
    let body = json!({"model": "tiny-llama-chat", "max_tokens": 10, "temperature": 0, "ignore_eos": true,
        "messages": [{"role": "user", "content": "  Tell me about pipelines "}]});
    let (status, v) = s.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let choice = &v["choices"][0];
    assert_eq!(ids(&choice["token_ids"]), want);
    assert_eq!(choice["message"]["role"], "assistant");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = s.stream("/v1/chat/completions", &streamed);
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let (got, text, last) = streamed_ids(&events);
    assert_eq!(got, want);
    assert_eq!(text, choice["message"]["content"].as_str().unwrap());
    assert_eq!(last["usage"]["completion_tokens"], 10);
    // Without max_tokens a chat answer may fill the context (64 positions).
    let (status, v) = s.post(
        "/v1/chat/completions",
        &json!({"temperature": 0, "ignore_eos": true, "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 200, "{v}");
    let u = &v["usage"];
    assert_eq!(u["total_tokens"], 64, "{v}");
}

#[test]
fn bad_requests_answer_400_with_a_message_and_the_server_keeps_serving() {
    let s = Server::start("tiny-gpt2-gen", &[], &[]);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "/v1/completions",
            "{\"prompt\": \"hi\", ".into(),
            "not valid JSON",
        ),
        ("/v1/completions", "[1, 2]".into(), "JSON object"),
        (
            "/v1/completions",
            json!({"prompt": "hi", "temperature": "hot"}).to_string(),
            "`temperature`",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": -3}).to_string(),
            "`max_tokens`",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "model": "gpt-4"}).to_string(),
            "gpt-4",
        ),
        (
            "/v1/completions",
            json!({"max_tokens": 3}).to_string(),
            "`prompt` is required",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "temperature": -1}).to_string(),
            "temperature",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "top_p": 0}).to_string(),
            "top-p",
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, 2, 100000]}).to_string(),
            "out of range",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x ".repeat(60), "max_tokens": 4}).to_string(),
            "maximum context length is 48",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": 48}).to_string(),
            "maximum context length",
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "stop": 3}).to_string(),
            "`stop`",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}]}).to_string(),
            "no chat template",
        ),
    ];
    for (path, body, needle) in &cases {
        let (status, v) = s.post_raw(path, body, None);
        assert_eq!(status, 400, "{body}: {v}");
        let msg = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{v}"));
        assert!(msg.contains(needle), "{body}: {msg:?} lacks {needle:?}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        // And the next request is served.
        let (status, v) = s.post(
            "/v1/completions",
            &json!({"prompt": "The pipeline", "max_tokens": 3, "temperature": 0, "ignore_eos": true}),
        );
        assert_eq!(status, 200, "after {body}: {v}");
        assert_eq!(v["choices"][0]["token_ids"].as_array().unwrap().len(), 3);
    }
    let (status, _) = s.get("/v1/nothing");
    assert_eq!(status, 404);
    let (status, body) = s.get("/v1/models");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["id"], "tiny-gpt2-gen");
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

#[test]
fn an_api_key_is_required_when_set() {
    let s = Server::start("tiny-gpt2-gen", &["--api-key", "sekrit"], &[]);
    let body = json!({"prompt": "hi", "max_tokens": 2}).to_string();
    for key in [None, Some("wrong"), Some("sekri"), Some("sekritt")] {
        let (status, v) = s.post_raw("/v1/completions", &body, key);
        assert_eq!(status, 401, "key {key:?}: {v}");
        assert_eq!(v["error"]["type"], "authentication_error");
    }
    let (status, _) = s.get("/v1/models");
    assert_eq!(status, 401);
    let (status, v) = s.post_raw("/v1/completions", &body, Some("sekrit"));
    assert_eq!(status, 200, "{v}");
    let r = ureq::get(&s.url("/health"))
        .set("Authorization", "Bearer sekrit")
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn metrics_parse_as_prometheus_text_and_count_what_was_sent() {
    let s = Server::start("tiny-gpt2-gen", &["--devices", "2"], &[]);
    let m0 = s.metrics();
    assert_eq!(value(&m0, "wgpipe_generation_tokens_total", &[]), 0.0);
    assert_eq!(value(&m0, "wgpipe_kv_cache_slots", &[]), 16.0);
    assert_eq!(value(&m0, "wgpipe_healthy", &[]), 1.0);
    let (mut prompt, mut completion) = (0, 0);
    for (i, n) in [3usize, 5, 7].into_iter().enumerate() {
        let body = json!({"prompt": format!("Request number {i}"), "max_tokens": n,
            "temperature": 0, "ignore_eos": true, "stream": i == 1});
        if i == 1 {
            let (_, _, last) = streamed_ids(&s.stream("/v1/completions", &body));
            prompt += last["usage"]["prompt_tokens"].as_u64().unwrap();
            completion += last["usage"]["completion_tokens"].as_u64().unwrap();
        } else {
            let (status, v) = s.post("/v1/completions", &body);
            assert_eq!(status, 200);
            prompt += v["usage"]["prompt_tokens"].as_u64().unwrap();
            completion += v["usage"]["completion_tokens"].as_u64().unwrap();
        }
    }
    let (status, _) = s.post_raw("/v1/completions", "nope", None);
    assert_eq!(status, 400);
    let m = s.metrics();
    assert_eq!(completion, 15);
    assert_eq!(
        value(&m, "wgpipe_generation_tokens_total", &[]),
        completion as f64
    );
    assert_eq!(value(&m, "wgpipe_prompt_tokens_total", &[]), prompt as f64);
    assert_eq!(
        value(
            &m,
            "wgpipe_requests_finished_total",
            &[("reason", "length")]
        ),
        3.0
    );
    let resp = |status| {
        value(
            &m,
            "wgpipe_http_responses_total",
            &[("endpoint", "/v1/completions"), ("status", status)],
        )
    };
    assert_eq!(resp("200"), 3.0);
    assert_eq!(resp("400"), 1.0);
    // One first token per request, one gap per later token.
    let hist = |name: &str| {
        m.samples
            .iter()
            .find(|x| x.metric == name)
            .map(|x| match &x.value {
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                v => panic!("{name}: {v:?}"),
            })
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(hist("wgpipe_time_to_first_token_seconds"), 3.0);
    assert_eq!(
        hist("wgpipe_inter_token_latency_seconds"),
        (completion - 3) as f64
    );
    assert_eq!(value(&m, "wgpipe_queue_depth", &[]), 0.0);
    assert_eq!(value(&m, "wgpipe_kv_cache_slots_used", &[]), 0.0);
    let bubble = value(&m, "wgpipe_decode_bubble_ratio", &[]);
    assert!((0.0..=1.0).contains(&bubble), "{bubble}");
}

/// A scratch file that holds the server's passes while it exists.
fn hold_file(name: &str) -> PathBuf {
    let p = common::scratch(name).join("hold");
    let _ = std::fs::remove_file(&p);
    p
}

fn hold(p: &Path, on: bool) {
    match on {
        true => std::fs::write(p, b"").unwrap(),
        false => std::fs::remove_file(p).unwrap(),
    }
}

/// Poll `/metrics` until `cond` holds (a minute at most: a guard against a
/// hang, not a timing).
fn until(s: &Server, what: &str, cond: impl Fn(&prometheus_parse::Scrape) -> bool) {
    for _ in 0..1200 {
        if cond(&s.metrics()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} never happened: {}", s.log());
}

#[test]
fn a_full_queue_answers_429_with_retry_after_and_then_serves() {
    let h = hold_file("serve-queue");
    hold(&h, true);
    let s = Arc::new(Server::start(
        "tiny-gpt2-gen",
        &["--max-batch", "1", "--max-queue", "1"],
        &[("WGPIPE_TEST_HOLD", h.to_str().unwrap())],
    ));
    let body =
        json!({"prompt": "The pipeline", "max_tokens": 4, "temperature": 0, "ignore_eos": true});
    let s2 = s.clone();
    let b2 = body.clone();
    let first = std::thread::spawn(move || s2.post("/v1/completions", &b2));
    until(&s, "the first request queued", |m| {
        value(m, "wgpipe_queue_depth", &[]) == 1.0
    });
    let r = ureq::post(&s.url("/v1/completions")).send_string(&body.to_string());
    match r {
        Err(ureq::Error::Status(429, resp)) => {
            assert_eq!(resp.header("Retry-After"), Some("1"));
            let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("queue is full"),
                "{v}"
            );
        }
        other => panic!("expected 429, got {other:?}"),
    }
    hold(&h, false);
    let (status, v) = first.join().unwrap();
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn a_client_that_goes_away_mid_stream_frees_its_slot() {
    // Held after its third pass: a few tokens out, then paused, slot held.
    let h = hold_file("serve-disconnect");
    hold(&h, true);
    let s = Server::start(
        "tiny-gpt2-gen",
        &["--max-batch", "1"],
        &[
            ("WGPIPE_TEST_HOLD", h.to_str().unwrap()),
            ("WGPIPE_TEST_HOLD_AFTER", "3"),
        ],
    );
    // "The pipeline" is 9 tokens of this byte-level fixture; 48 positions.
    let body = json!({"prompt": "The pipeline", "max_tokens": 36, "temperature": 0,
        "ignore_eos": true, "stream": true});
    let r = ureq::post(&s.url("/v1/completions"))
        .send_string(&body.to_string())
        .unwrap();
    let mut reader = BufReader::new(r.into_reader());
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    // Paused mid-stream with its slot held; then the client goes.
    until(&s, "three tokens", |m| {
        value(m, "wgpipe_generation_tokens_total", &[]) == 3.0
    });
    assert_eq!(value(&s.metrics(), "wgpipe_kv_cache_slots_used", &[]), 1.0);
    drop(reader);
    until(&s, "the slot freed", |m| {
        value(m, "wgpipe_kv_cache_slots_used", &[]) == 0.0
            && value(m, "wgpipe_requests_cancelled_total", &[]) == 1.0
    });
    let m = s.metrics();
    assert_eq!(value(&m, "wgpipe_generation_tokens_total", &[]), 3.0);
    assert_eq!(
        value(
            &m,
            "wgpipe_requests_finished_total",
            &[("reason", "length")]
        ),
        0.0
    );
    hold(&h, false);
    let (status, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "The pipeline", "max_tokens": 5, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 5);
}

#[test]
fn a_device_failure_answers_500_naming_the_device_and_turns_health_unhealthy() {
    let s = Server::start(
        "tiny-gpt2-gen",
        &["--devices", "2"],
        &[("WGPIPE_TEST_FAIL_DEVICE", "1:3")],
    );
    let (status, body) = s.get("/health");
    assert_eq!((status, body.as_str()), (200, "{\"status\":\"ok\"}"));
    let (status, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "The pipeline", "max_tokens": 20, "temperature": 0, "ignore_eos": true}),
    );
    assert_eq!(status, 500, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("device 1"), "{msg}");
    assert!(msg.contains("injected failure"), "{msg}");
    let (status, body) = s.get("/health");
    assert_eq!(status, 503, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "unhealthy");
    assert!(h["error"].as_str().unwrap().contains("device 1"), "{h}");
    assert_eq!(value(&s.metrics(), "wgpipe_healthy", &[]), 0.0);
    // Later requests are refused at once, naming the failure.
    let (status, v) = s.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}));
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("device 1"),
        "{v}"
    );
}

#[test]
fn sigterm_finishes_the_requests_in_flight_then_exits_0() {
    // Held after its third pass: in flight, paused, when SIGTERM comes.
    let h = hold_file("serve-sigterm");
    hold(&h, true);
    let mut s = Server::start(
        "tiny-gpt2-gen",
        &[],
        &[
            ("WGPIPE_TEST_HOLD", h.to_str().unwrap()),
            ("WGPIPE_TEST_HOLD_AFTER", "3"),
        ],
    );
    let body = json!({"prompt": "The pipeline", "max_tokens": 30, "temperature": 0,
        "ignore_eos": true, "stream": true});
    let want = generate("tiny-gpt2-gen", "The pipeline", 30, &[]);
    let r = ureq::post(&s.url("/v1/completions"))
        .send_string(&body.to_string())
        .unwrap();
    let mut reader = BufReader::new(r.into_reader());
    let mut first = String::new();
    while !first.starts_with("data: ") {
        first.clear();
        reader.read_line(&mut first).unwrap();
    }
    // Paused in flight; SIGTERM; no new request is taken.
    until(&s, "three tokens", |m| {
        value(m, "wgpipe_generation_tokens_total", &[]) == 3.0
    });
    let pid = s.child.id() as i32;
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    for _ in 0..1200 {
        if s.log().contains("stopping") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = ureq::post(&s.url("/v1/completions"))
        .send_string(&json!({"prompt": "hi", "max_tokens": 2}).to_string());
    assert!(refused.is_err(), "a request after SIGTERM was served");
    hold(&h, false);
    let mut events = vec![first.trim_start_matches("data: ").trim().to_string()];
    events.extend(sse_data(reader));
    let (got, _, last) = streamed_ids(&events);
    assert_eq!(got, want);
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "exit {status:?}: {}", s.log());
}

#[test]
fn a_stop_string_ends_the_text_before_it() {
    let s = Server::start("tiny-gpt2-gen", &[], &[]);
    let body = json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 0,
        "ignore_eos": true, "stream": true});
    // The tokens' texts, streamed: the stop string is a later token's text.
    let events = s.stream("/v1/completions", &body);
    let texts: Vec<String> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    let full: String = texts.concat();
    let stop = texts[2..]
        .iter()
        .find(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| panic!("no plain token text to stop at in {texts:?}"))
        .clone();
    let want = &full[..full.find(&stop).unwrap()];
    for stream in [false, true] {
        let mut b = body.clone();
        b["stop"] = json!([stop.clone(), "never appears here"]);
        b["stream"] = json!(stream);
        let (text, finish) = if stream {
            let (_, text, last) = streamed_ids(&s.stream("/v1/completions", &b));
            (text, last["choices"][0]["finish_reason"].clone())
        } else {
            let (status, v) = s.post("/v1/completions", &b);
            assert_eq!(status, 200, "{v}");
            let c = &v["choices"][0];
            (
                c["text"].as_str().unwrap().to_string(),
                c["finish_reason"].clone(),
            )
        };
        assert_eq!(text, want, "stop {stop:?} (stream: {stream}) in {full:?}");
        assert_eq!(finish, "stop");
    }
}

/// Tensor-parallel serving: TP 2 × PP 2 (four Gpus, the logits all-reduced
/// before sampling) gives `generate`'s tokens on the same layout, greedy
/// and seeded.
#[test]
fn tensor_parallel_serving_gives_generates_tokens() {
    let layout = ["--tp", "2", "--devices", "4"];
    let mut sampled = layout.to_vec();
    sampled.extend([
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--top-p",
        "0.95",
        "--seed",
        "1234",
    ]);
    let prompt = "The pipeline";
    let cases = [
        (
            json!({"prompt": prompt, "max_tokens": 8, "temperature": 0, "ignore_eos": true}),
            generate("tiny-gpt2-gen", prompt, 8, &layout),
        ),
        (
            json!({"prompt": prompt, "max_tokens": 8, "temperature": 0.9, "top_k": 40,
                "top_p": 0.95, "seed": 1234, "ignore_eos": true}),
            generate("tiny-gpt2-gen", prompt, 8, &sampled),
        ),
    ];
    let s = Server::start("tiny-gpt2-gen", &layout, &[]);
    for (body, want) in &cases {
        let (status, v) = s.post("/v1/completions", body);
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            ids(&v["choices"][0]["token_ids"]),
            *want,
            "{body}: {}",
            s.log()
        );
    }
}
