//! The OpenAI-compatible HTTP API over an [`Engine`] (axum on tokio):
//! `POST /v1/completions`, `POST /v1/chat/completions` (streamed as
//! server-sent events with `"stream": true`), `GET /v1/models`,
//! `GET /health`, `GET /metrics`. Errors are OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`.
//!
//! Beside OpenAI's fields each choice carries `token_ids` (the ids of its
//! tokens; streamed: of the chunk's token), and requests may give `top_k`
//! and `ignore_eos` (vLLM's names).

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::chat::{ChatTemplate, Message};
use super::engine::{Engine, Event, GenRequest, Refused};
use crate::sampling::SampleSettings;

/// What the handlers share.
pub struct App {
    pub engine: Engine,
    pub chat: Option<ChatTemplate>,
    /// The model's name in requests and `/v1/models`.
    pub model: String,
    pub api_key: Option<String>,
    pub vocab: usize,
    pub created: u64,
}

/// The API's routes over `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Seconds since the epoch (OpenAI's `created`).
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error response in OpenAI's shape.
fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body =
        json!({"error": {"message": message.into(), "type": kind, "param": null, "code": null}});
    (status, Json(body)).into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// The API key check, then the response counted by endpoint and status.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let endpoint = match path.as_str() {
        "/v1/completions" | "/v1/chat/completions" | "/v1/models" | "/health" | "/metrics" => {
            path.clone()
        }
        _ => "other".to_string(),
    };
    let resp = match &app.api_key {
        Some(key) if !authorized(req.headers(), key) => error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "a valid API key is required: send the header `Authorization: Bearer KEY`",
        ),
        _ => next.run(req).await,
    };
    app.engine
        .metrics()
        .response(&endpoint, resp.status().as_u16());
    resp
}

fn authorized(headers: &HeaderMap, key: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compared in time independent of where they differ.
    given.is_some_and(|g| {
        g.len() == key.len()
            && g.bytes()
                .zip(key.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    })
}

async fn not_found(req: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no route {} {}", req.method(), req.uri().path()),
    )
}

async fn models(State(app): State<Arc<App>>) -> Response {
    Json(json!({"object": "list", "data": [
        {"id": app.model, "object": "model", "created": app.created, "owned_by": "wgpipe"}
    ]}))
    .into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    match app.engine.health() {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unhealthy", "error": e})),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.engine.metrics().render(),
    )
        .into_response()
}

/// The request body as a JSON object.
fn object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(bad_request("the request body must be a JSON object")),
        Err(e) => Err(bad_request(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// Field `name` of `o` as a `T`, `None` when absent or null; a wrong type
/// is a 400 naming the field.
fn field<T: serde::de::DeserializeOwned>(
    o: &Map<String, Value>,
    name: &str,
) -> Result<Option<T>, Response> {
    match o.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| bad_request(format!("`{name}`: {e}"))),
    }
}

/// The sampling and stopping fields both endpoints take.
struct Common {
    max_tokens: Option<usize>,
    settings: SampleSettings,
    seed: u64,
    stop: Vec<String>,
    stream: bool,
    ignore_eos: bool,
}

impl Common {
    fn parse(app: &App, o: &Map<String, Value>) -> Result<Common, Response> {
        if let Some(m) = field::<String>(o, "model")? {
            if m != app.model {
                return Err(bad_request(format!(
                    "the model `{m}` does not exist: this server serves `{}`",
                    app.model
                )));
            }
        }
        if let Some(n) = field::<u64>(o, "n")? {
            if n != 1 {
                return Err(bad_request(format!(
                    "`n`: only 1 choice per request is supported, got {n}"
                )));
            }
        }
        let max_tokens = match field::<usize>(o, "max_tokens")? {
            Some(n) => Some(n),
            None => field::<usize>(o, "max_completion_tokens")?,
        };
        let temperature = field::<f32>(o, "temperature")?.unwrap_or(1.0);
        let top_p = field::<f32>(o, "top_p")?.unwrap_or(1.0);
        let top_k = field::<i64>(o, "top_k")?.unwrap_or(0);
        if top_k < -1 {
            return Err(bad_request(format!(
                "`top_k`: must be -1 or 0 (off) or a positive count, got {top_k}"
            )));
        }
        let stop = match o.get("stop") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(v) => serde_json::from_value::<Vec<String>>(v.clone())
                .map_err(|_| bad_request("`stop`: must be a string or an array of strings"))?,
        };
        let seed = match field::<u64>(o, "seed")? {
            Some(s) => s,
            None => RandomState::new().build_hasher().finish(),
        };
        Ok(Common {
            max_tokens,
            settings: SampleSettings {
                temperature,
                top_k: top_k.max(0) as usize,
                top_p,
            },
            seed,
            stop,
            stream: field::<bool>(o, "stream")?.unwrap_or(false),
            ignore_eos: field::<bool>(o, "ignore_eos")?.unwrap_or(false),
        })
    }

    fn request(&self, prompt: Vec<u32>, default_max: usize) -> GenRequest {
        GenRequest {
            prompt,
            max_tokens: self.max_tokens.unwrap_or(default_max),
            settings: self.settings,
            seed: self.seed,
            stop: self.stop.clone(),
            stop_at_eos: !self.ignore_eos,
        }
    }
}

async fn completions(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let o = match object(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let common = match Common::parse(&app, &o) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let prompt =
        match o.get("prompt") {
            None | Some(Value::Null) => return bad_request("`prompt` is required"),
            Some(Value::String(s)) => match tokenize(&app, s, false) {
                Ok(ids) => ids,
                Err(r) => return r,
            },
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                match tokenize(&app, a[0].as_str().unwrap_or_default(), false) {
                    Ok(ids) => ids,
                    Err(r) => return r,
                }
            }
            Some(v) => match serde_json::from_value::<Vec<u32>>(v.clone()) {
                Ok(ids) => ids,
                Err(_) => return bad_request(
                    "`prompt`: must be a string or an array of token ids (one prompt per request)",
                ),
            },
        };
    let req = common.request(prompt, 16);
    run(app, req, common.stream, Kind::Completion).await
}

async fn chat_completions(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let o = match object(&body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let common = match Common::parse(&app, &o) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(template) = &app.chat else {
        return bad_request(format!(
            "the model `{}` has no chat template (no `chat_template` in its tokenizer_config.json): use /v1/completions",
            app.model
        ));
    };
    let messages = match messages(&o) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let text = match template.render(&messages) {
        Ok(t) => t,
        Err(e) => return bad_request(e),
    };
    let prompt = match tokenize(&app, &text, true) {
        Ok(ids) => ids,
        Err(r) => return r,
    };
    let room = app.engine.n_positions().saturating_sub(prompt.len()).max(1);
    let req = common.request(prompt, room);
    run(app, req, common.stream, Kind::Chat).await
}

/// `messages`: role and content (a string, or a list of text parts).
fn messages(o: &Map<String, Value>) -> Result<Vec<Message>, Response> {
    let list = match o.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => return Err(bad_request("`messages` is empty")),
        None | Some(Value::Null) => return Err(bad_request("`messages` is required")),
        Some(_) => return Err(bad_request("`messages`: must be an array of messages")),
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str);
            let content = match m.get("content") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Option<Vec<_>>>()
                    .map(|t| t.concat()),
                _ => None,
            };
            match (role, content) {
                (Some(r), Some(c)) => Ok(Message {
                    role: r.to_string(),
                    content: c,
                }),
                _ => Err(bad_request(format!(
                    "`messages[{i}]`: needs a string `role` and a string (or text parts) `content`"
                ))),
            }
        })
        .collect()
}

fn tokenize(app: &App, text: &str, chat: bool) -> Result<Vec<u32>, Response> {
    let Some(tok) = app.engine.tokenizer() else {
        return Err(bad_request(
            "this model has no tokenizer.json: give the prompt as an array of token ids",
        ));
    };
    let ids = match chat {
        true => tok.encode_plain(text),
        false => tok.encode(text),
    };
    ids.map_err(|e| bad_request(e.to_string()))
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

impl Kind {
    fn id(self) -> String {
        let n = RandomState::new().build_hasher().finish();
        match self {
            Kind::Completion => format!("cmpl-{n:016x}"),
            Kind::Chat => format!("chatcmpl-{n:016x}"),
        }
    }
}

/// Frees the request's slot when its response is dropped (the client went
/// away) before it finished.
struct Cancel {
    engine: Engine,
    id: u64,
    done: bool,
}

impl Drop for Cancel {
    fn drop(&mut self) {
        if !self.done {
            self.engine.cancel(self.id);
        }
    }
}

/// Check, queue and answer `req`.
async fn run(app: Arc<App>, req: GenRequest, stream: bool, kind: Kind) -> Response {
    if let Err(e) = app.engine.check(&req, app.vocab) {
        return bad_request(e);
    }
    let (id, rx) = match app.engine.submit(req) {
        Ok(x) => x,
        Err(Refused::QueueFull) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "the request queue is full: retry later",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Err(Refused::Stopping) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the server is shutting down",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        }
        Err(Refused::Unhealthy(e)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                format!("the server is unhealthy: {e}"),
            )
        }
    };
    let cancel = Cancel {
        engine: app.engine.clone(),
        id,
        done: false,
    };
    match stream {
        true => streamed(app, rx, cancel, kind),
        false => whole(app, rx, cancel, kind).await,
    }
}

/// The whole answer as one JSON response.
async fn whole(
    app: Arc<App>,
    mut rx: UnboundedReceiver<Event>,
    mut cancel: Cancel,
    kind: Kind,
) -> Response {
    let (mut text, mut ids) = (String::new(), Vec::new());
    loop {
        match rx.recv().await {
            Some(Event::Token { id, text: t }) => {
                ids.push(id);
                text.push_str(&t);
            }
            Some(Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                cancel.done = true;
                let usage = usage(prompt_tokens, completion_tokens);
                let choice = match kind {
                    Kind::Completion => json!({"index": 0, "text": text, "token_ids": ids,
                        "logprobs": null, "finish_reason": finish.as_str()}),
                    Kind::Chat => {
                        json!({"index": 0, "message": {"role": "assistant", "content": text},
                        "token_ids": ids, "logprobs": null, "finish_reason": finish.as_str()})
                    }
                };
                let object = match kind {
                    Kind::Completion => "text_completion",
                    Kind::Chat => "chat.completion",
                };
                return Json(
                    json!({"id": kind.id(), "object": object, "created": now_s(),
                    "model": app.model, "choices": [choice], "usage": usage}),
                )
                .into_response();
            }
            Some(Event::Failed(e)) => {
                cancel.done = true;
                return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e);
            }
            None => {
                cancel.done = true;
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the request ended without an answer",
                );
            }
        }
    }
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Server-sent events: one chunk per token, a last chunk with the finish
/// reason and usage, then `[DONE]`.
fn streamed(app: Arc<App>, rx: UnboundedReceiver<Event>, cancel: Cancel, kind: Kind) -> Response {
    let id = kind.id();
    let created = now_s();
    let chunk = move |choice: Value, usage: Option<Value>| {
        let object = match kind {
            Kind::Completion => "text_completion",
            Kind::Chat => "chat.completion.chunk",
        };
        let mut c = json!({"id": id, "object": object, "created": created,
            "model": app.model, "choices": [choice]});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        SseEvent::default().data(c.to_string())
    };
    struct St<F> {
        rx: UnboundedReceiver<Event>,
        cancel: Cancel,
        chunk: F,
        started: bool,
        over: bool,
    }
    let st = St {
        rx,
        cancel,
        chunk,
        started: kind == Kind::Completion,
        over: false,
    };
    let events = futures_util::stream::unfold(st, move |mut st| async move {
        if st.over {
            return None;
        }
        if !st.started {
            st.started = true;
            let c = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null});
            let ev = (st.chunk)(c, None);
            return Some((Ok::<_, Infallible>(ev), st));
        }
        let ev = match st.rx.recv().await {
            Some(Event::Token { id, text }) => {
                let c = match kind {
                    Kind::Completion => json!({"index": 0, "text": text, "token_ids": [id],
                        "logprobs": null, "finish_reason": null}),
                    Kind::Chat => json!({"index": 0, "delta": {"content": text},
                        "token_ids": [id], "finish_reason": null}),
                };
                (st.chunk)(c, None)
            }
            Some(Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            }) => {
                st.cancel.done = true;
                let c = match kind {
                    Kind::Completion => json!({"index": 0, "text": "", "token_ids": [],
                        "logprobs": null, "finish_reason": finish.as_str()}),
                    Kind::Chat => json!({"index": 0, "delta": {}, "token_ids": [],
                        "finish_reason": finish.as_str()}),
                };
                st.rx.close();
                (st.chunk)(c, Some(usage(prompt_tokens, completion_tokens)))
            }
            Some(Event::Failed(e)) => {
                st.cancel.done = true;
                st.rx.close();
                SseEvent::default().data(
                    json!({"error": {"message": e, "type": "server_error", "param": null, "code": null}})
                        .to_string(),
                )
            }
            None => {
                st.over = true;
                SseEvent::default().data("[DONE]")
            }
        };
        Some((Ok(ev), st))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}
