//! The batcher: requests wait in a bounded queue, join the passes in flight
//! as soon as a KV-cache slot is free, and leave when they finish; it is the
//! [`Feeder`] the pipeline's first device asks for each pass.
//!
//! Each pass takes, oldest-served first, the decode row of up to
//! `per_pass` sequences whose last token has come back (so the G passes in
//! flight share the running sequences), then fills the rest of its rows
//! with prompt chunks of the sequences still reading their prompts. A
//! sequence's draws use its own seed and its own token index
//! ([`crate::sampling::uniform`] with sequence 0, as `generate` draws a
//! single prompt's), so its tokens do not depend on what else is served.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::metrics::Metrics;
use crate::pipeline::serve::Segment;
use crate::pipeline::Pipeline;
use crate::sampling::{uniform, SampleSettings};
use crate::tokenizer::Tokenizer;
use crate::workload::decode::continuous::{Feeder, Pass, PassShape, Row, Sample};

/// How the engine batches.
#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    /// Sequences decoding at once (KV-cache slots).
    pub max_batch: usize,
    /// Requests waiting for a slot; one more is refused.
    pub max_queue: usize,
    /// Passes in flight G (default: one per pipeline device).
    pub groups: usize,
    /// Prompt tokens a pass may hold besides its decode rows.
    pub prefill_chunk: usize,
}

/// One generation request, checked by the caller ([`Engine::check`]).
#[derive(Clone, Debug)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub settings: SampleSettings,
    pub seed: u64,
    /// Stop before any of these strings (not included in the text).
    pub stop: Vec<String>,
    /// End at the end-of-text token (not included).
    pub stop_at_eos: bool,
}

/// Why a sequence ended (OpenAI's `finish_reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// The end-of-text token or a stop string.
    Stop,
    /// `max_tokens`, or the model's context.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// What a request's channel receives.
#[derive(Clone, Debug)]
pub enum Event {
    /// A new token and the text it completes (empty while a character or
    /// a possible stop string is incomplete).
    Token { id: u32, text: String },
    Done {
        finish: Finish,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The pipeline failed (the message names the device).
    Failed(String),
}

/// Why a request was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full: try again later.
    QueueFull,
    /// The server is stopping.
    Stopping,
    /// A device failed; the message names it.
    Unhealthy(String),
}

struct Seq {
    id: u64,
    req: GenRequest,
    tx: UnboundedSender<Event>,
    slot: u32,
    /// Prompt, then the tokens sampled.
    tokens: Vec<u32>,
    /// Positions written in the KV cache (prompt tokens and decoded ones).
    filled: usize,
    /// A sampled row of it is in flight.
    waiting: bool,
    /// Pass number of its last decode row (oldest served first).
    last_pass: u64,
    /// Text sent so far.
    sent: usize,
    /// Tokens sent (the end-of-text token is not).
    generated: Vec<u32>,
    submitted: Instant,
    last_token: Option<Instant>,
}

struct State {
    queue: VecDeque<Seq>,
    running: HashMap<u64, Seq>,
    free_slots: Vec<u32>,
    next_id: u64,
    passes: u64,
    /// No new requests; the session ends once nothing is left.
    stopping: bool,
    /// End the session now (failing what is left).
    stop_now: bool,
    failed: Option<String>,
}

struct Shared {
    cfg: EngineConfig,
    shape: PassShape,
    state: Mutex<State>,
    wake: Condvar,
    metrics: Metrics,
    tokenizer: Option<Tokenizer>,
    eos: u32,
    n_positions: usize,
    /// The session thread has returned.
    ended: Mutex<bool>,
    ended_cv: Condvar,
}

/// The batcher and the thread that runs the pipeline for it.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    /// Start serving on `pipeline` (its weights already resident), once its
    /// programs and KV caches are built (an error if they cannot be): the
    /// session thread runs until [`Engine::stop`] or a device failure.
    pub fn start(pipeline: Arc<Pipeline>, cfg: EngineConfig) -> crate::Result<Engine> {
        let c = &cfg;
        if c.max_batch == 0 || c.groups == 0 || c.prefill_chunk == 0 {
            return Err(crate::Error::Input(
                "--max-batch, --groups and --prefill-chunk must be at least 1".into(),
            ));
        }
        let per_pass = c.max_batch.div_ceil(c.groups);
        let shape = PassShape {
            slots: c.max_batch,
            rows: per_pass + c.prefill_chunk,
            groups: c.groups,
            segment: c.groups * 64,
        };
        let shared = Arc::new(Shared {
            cfg,
            shape,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                running: HashMap::new(),
                free_slots: (0..c.max_batch as u32).rev().collect(),
                next_id: 1,
                passes: 0,
                stopping: false,
                stop_now: false,
                failed: None,
            }),
            wake: Condvar::new(),
            metrics: Metrics::new(c.max_batch),
            tokenizer: pipeline.tokenizer().cloned(),
            eos: pipeline.eos_token_id()?,
            n_positions: pipeline.config().n_positions,
            ended: Mutex::new(false),
            ended_cv: Condvar::new(),
        });
        let feeder = Arc::new(Batcher(shared.clone()));
        let s = shared.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        std::thread::Builder::new()
            .name("wgpipe-serve".into())
            .spawn(move || {
                let stopped = || {
                    let st = s.lock();
                    st.stop_now || (st.stopping && st.running.is_empty() && st.queue.is_empty())
                };
                let mut on_segment = |seg: Segment| s.metrics.segment(&seg);
                let ready = ready_tx.clone();
                let mut on_ready = move || {
                    let _ = ready.send(Ok(()));
                };
                let r = pipeline.serve(feeder, shape, &stopped, &mut on_ready, &mut on_segment);
                if let Err(e) = r {
                    let _ = ready_tx.send(Err(e.to_string()));
                    s.fail(e.to_string());
                }
                *s.ended.lock().unwrap_or_else(|e| e.into_inner()) = true;
                s.ended_cv.notify_all();
            })
            .map_err(|e| crate::Error::Other(format!("starting the serving thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Engine { shared }),
            Ok(Err(e)) => Err(crate::Error::Other(format!("serving could not start: {e}"))),
            Err(_) => Err(crate::Error::Other(
                "the serving thread ended before it was ready".into(),
            )),
        }
    }

    /// The model's context length.
    pub fn n_positions(&self) -> usize {
        self.shared.n_positions
    }

    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.shared.tokenizer.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Refuse a request the model cannot serve, with a message for the
    /// client.
    pub fn check(&self, r: &GenRequest, vocab: usize) -> Result<(), String> {
        let n = self.shared.n_positions;
        if r.prompt.is_empty() {
            return Err("the prompt is empty: it needs at least one token".into());
        }
        if let Some(id) = r.prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(format!(
                "token id {id} is out of range for the model's vocabulary of {vocab}"
            ));
        }
        if r.max_tokens == 0 {
            return Err("max_tokens must be at least 1".into());
        }
        if r.prompt.len() + r.max_tokens > n {
            return Err(format!(
                "this model's maximum context length is {n} tokens; the prompt has {} tokens and max_tokens is {} (at most {} fit)",
                r.prompt.len(),
                r.max_tokens,
                n.saturating_sub(r.prompt.len())
            ));
        }
        r.settings.check().map_err(|e| {
            e.to_string()
                .replace("invalid input: --", "")
                .replace("--", "")
        })
    }

    /// Queue a checked request; its events come on the receiver (dropping
    /// it, or calling [`Engine::cancel`], frees its slot).
    pub fn submit(&self, req: GenRequest) -> Result<(u64, UnboundedReceiver<Event>), Refused> {
        let mut st = self.shared.lock();
        if let Some(e) = &st.failed {
            return Err(Refused::Unhealthy(e.clone()));
        }
        if st.stopping || st.stop_now {
            return Err(Refused::Stopping);
        }
        if st.queue.len() >= self.shared.cfg.max_queue {
            return Err(Refused::QueueFull);
        }
        let (tx, rx) = unbounded_channel();
        let id = st.next_id;
        st.next_id += 1;
        self.shared.metrics.prompt_tokens(req.prompt.len());
        st.queue.push_back(Seq {
            id,
            tokens: req.prompt.clone(),
            req,
            tx,
            slot: u32::MAX,
            filled: 0,
            waiting: false,
            last_pass: 0,
            sent: 0,
            generated: Vec::new(),
            submitted: Instant::now(),
            last_token: None,
        });
        self.shared.gauges(&st);
        drop(st);
        self.shared.wake.notify_all();
        Ok((id, rx))
    }

    /// The client of request `id` went away: free its slot now (or, when a
    /// sampled row of it is in flight, as soon as that comes back).
    pub fn cancel(&self, id: u64) {
        let mut st = self.shared.lock();
        st.queue.retain(|s| s.id != id);
        if st.running.get(&id).is_some_and(|s| !s.waiting) {
            let seq = st.running.remove(&id).expect("present");
            st.free_slots.push(seq.slot);
            self.shared.metrics.cancelled();
        } else if let Some(s) = st.running.get_mut(&id) {
            // Its row comes back to a closed channel: dropped then.
            let (tx, _) = unbounded_channel();
            s.tx = tx;
        }
        self.shared.gauges(&st);
        drop(st);
        self.shared.wake.notify_all();
    }

    /// `Err(message naming the device)` once a device has failed.
    pub fn health(&self) -> Result<(), String> {
        match &self.shared.lock().failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Take no new requests; the session ends once those taken are done.
    pub fn stop(&self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
    }

    /// End now: fail whatever is left with `why`.
    pub fn abort(&self, why: &str) {
        let mut st = self.shared.lock();
        st.stop_now = true;
        let msg = why.to_string();
        let State { queue, running, .. } = &mut *st;
        for s in queue.drain(..).chain(running.drain().map(|(_, s)| s)) {
            let _ = s.tx.send(Event::Failed(msg.clone()));
        }
        self.shared.gauges(&st);
        drop(st);
        self.shared.wake.notify_all();
    }

    /// Wait until the session thread has returned, at most `limit`; whether it has.
    pub fn wait_ended(&self, limit: Duration) -> bool {
        let ended = self.shared.ended.lock().unwrap_or_else(|e| e.into_inner());
        let (ended, _) = self
            .shared
            .ended_cv
            .wait_timeout_while(ended, limit, |e| !*e)
            .unwrap_or_else(|e| e.into_inner());
        *ended
    }

    /// Requests queued or running.
    pub fn in_flight(&self) -> usize {
        let st = self.shared.lock();
        st.queue.len() + st.running.len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn gauges(&self, st: &State) {
        self.metrics.set_gauges(
            st.queue.len(),
            st.running.len(),
            self.cfg.max_batch - st.free_slots.len(),
        );
    }

    /// A device failed: fail every request held, refuse new ones.
    fn fail(&self, msg: String) {
        let mut st = self.lock();
        let stopping = st.stop_now || (st.stopping && st.running.is_empty() && st.queue.is_empty());
        if stopping {
            return;
        }
        st.failed = Some(msg.clone());
        st.stop_now = true;
        let State { queue, running, .. } = &mut *st;
        for s in queue.drain(..).chain(running.drain().map(|(_, s)| s)) {
            let _ = s.tx.send(Event::Failed(msg.clone()));
        }
        self.metrics.set_healthy(false);
        self.gauges(&st);
        drop(st);
        self.wake.notify_all();
    }

    /// Build the next pass from `st`, or `None` when there is nothing to run.
    fn build(&self, st: &mut State) -> Option<Pass> {
        // Clients gone: their slots back.
        let gone: Vec<u64> = (st.running.values())
            .filter(|s| !s.waiting && s.tx.is_closed())
            .map(|s| s.id)
            .collect();
        for id in gone {
            let s = st.running.remove(&id).expect("present");
            st.free_slots.push(s.slot);
            self.metrics.cancelled();
        }
        st.queue.retain(|s| !s.tx.is_closed());
        // Admit into free slots.
        while !st.free_slots.is_empty() && !st.queue.is_empty() {
            let mut s = st.queue.pop_front().expect("nonempty");
            s.slot = st.free_slots.pop().expect("nonempty");
            st.running.insert(s.id, s);
        }
        self.gauges(st);
        let per_pass = self.cfg.max_batch.div_ceil(self.cfg.groups);
        let rows_max = self.shape.rows;
        let pass_no = st.passes;
        let mut pass = Pass::default();
        // Decode rows: sequences past their prompt whose token is back.
        let mut ready: Vec<&mut Seq> = (st.running.values_mut())
            .filter(|s| !s.waiting && s.filled >= s.req.prompt.len())
            .collect();
        ready.sort_by_key(|s| (s.last_pass, s.id));
        for s in ready.into_iter().take(per_pass) {
            let pos = s.filled;
            pass.rows.push(Row {
                slot: s.slot,
                pos: pos as u32,
                token: s.tokens[pos],
            });
            pass.samples.push(sample_of(s, pass.rows.len() - 1));
            s.filled += 1;
            s.waiting = true;
            s.last_pass = pass_no;
        }
        // Prompt chunks, oldest request first.
        let mut reading: Vec<&mut Seq> = (st.running.values_mut())
            .filter(|s| !s.waiting && s.filled < s.req.prompt.len())
            .collect();
        reading.sort_by_key(|s| s.id);
        for s in reading {
            let room = rows_max - pass.rows.len();
            if room == 0 {
                break;
            }
            let end = s.req.prompt.len().min(s.filled + room);
            for pos in s.filled..end {
                pass.rows.push(Row {
                    slot: s.slot,
                    pos: pos as u32,
                    token: s.tokens[pos],
                });
            }
            s.filled = end;
            if end == s.req.prompt.len() {
                pass.samples.push(sample_of(s, pass.rows.len() - 1));
                s.waiting = true;
                s.last_pass = pass_no;
            }
        }
        if pass.rows.is_empty() {
            return None;
        }
        st.passes += 1;
        Some(pass)
    }

    /// Sequence `s` drew `id`: send it, and end the sequence when done.
    fn take(&self, st: &mut State, seq: u64, id: u32) {
        let Some(s) = st.running.get_mut(&seq) else {
            return;
        };
        s.waiting = false;
        if s.tx.is_closed() {
            let s = st.running.remove(&seq).expect("present");
            st.free_slots.push(s.slot);
            self.metrics.cancelled();
            return;
        }
        let now = Instant::now();
        match s.last_token {
            None => self.metrics.ttft(now - s.submitted),
            Some(t) => self.metrics.itl(now - t),
        }
        s.last_token = Some(now);
        let mut finish = None;
        if s.req.stop_at_eos && id == self.eos {
            finish = Some(Finish::Stop);
        } else {
            s.tokens.push(id);
            s.generated.push(id);
            self.metrics.generated(1);
            let (text, stopped) = self.new_text(s);
            let _ = s.tx.send(Event::Token { id, text });
            if stopped {
                finish = Some(Finish::Stop);
            } else if s.generated.len() >= s.req.max_tokens || s.tokens.len() >= self.n_positions {
                finish = Some(Finish::Length);
            }
        }
        if let Some(finish) = finish {
            let s = st.running.remove(&seq).expect("present");
            st.free_slots.push(s.slot);
            let _ = s.tx.send(Event::Done {
                finish,
                prompt_tokens: s.req.prompt.len(),
                completion_tokens: s.generated.len(),
            });
            self.metrics.finished(finish);
        }
    }

    /// The text `s`'s newest token completes, holding back what may be the
    /// start of a stop string; and whether a stop string appeared (the text
    /// then ends before it).
    fn new_text(&self, s: &mut Seq) -> (String, bool) {
        let Some(tok) = &self.tokenizer else {
            return (String::new(), false);
        };
        let full = tok.decode(&s.generated).unwrap_or_default();
        let full = full.trim_end_matches('\u{FFFD}');
        let search_from = s
            .sent
            .saturating_sub(s.req.stop.iter().map(String::len).max().unwrap_or(0));
        let hit = (s.req.stop.iter())
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                full.get(search_from..)
                    .and_then(|t| t.find(p.as_str()))
                    .map(|i| search_from + i)
            })
            .min();
        let (end, stopped) = match hit {
            Some(i) => (i, true),
            None => (safe_end(full, &s.req.stop), false),
        };
        let end = end.max(s.sent);
        let text = full.get(s.sent..end).unwrap_or_default().to_string();
        s.sent = end;
        (text, stopped)
    }
}

/// Where `text` may be cut without splitting what could become one of the
/// `stops`: before the longest suffix that is a proper prefix of one.
fn safe_end(text: &str, stops: &[String]) -> usize {
    let mut end = text.len();
    for p in stops.iter().filter(|p| !p.is_empty()) {
        for k in (1..p.len()).rev() {
            if p.is_char_boundary(k) && text.ends_with(&p[..k]) {
                end = end.min(text.len() - k);
                break;
            }
        }
    }
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// The sample of `s`'s next token from row `row`.
fn sample_of(s: &Seq, row: usize) -> Sample {
    Sample {
        row: row as u32,
        seq: s.id,
        uniform: uniform(s.req.seed, 0, s.generated.len() as u64),
        settings: s.req.settings,
    }
}

/// Test builds (`fault-injection`): while the file `WGPIPE_TEST_HOLD` names
/// exists, no pass is built past the first `WGPIPE_TEST_HOLD_AFTER` (default
/// 0): requests queue, or pause mid-stream holding their slots, and the
/// passes in flight finish. Tests put requests where they want them so.
#[cfg(feature = "fault-injection")]
fn held(passes: u64) -> bool {
    let after: u64 = std::env::var("WGPIPE_TEST_HOLD_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    passes >= after
        && std::env::var_os("WGPIPE_TEST_HOLD").is_some_and(|p| std::path::Path::new(&p).exists())
}

#[cfg(not(feature = "fault-injection"))]
fn held(_passes: u64) -> bool {
    false
}

/// The [`Feeder`] side of the engine.
struct Batcher(Arc<Shared>);

impl Feeder for Batcher {
    fn next_pass(&self, give_up: &dyn Fn() -> bool) -> Option<Arc<Pass>> {
        let sh = &self.0;
        let mut st = sh.lock();
        loop {
            if st.stop_now || give_up() {
                return None;
            }
            if let Some(p) = (!held(st.passes)).then(|| sh.build(&mut st)).flatten() {
                return Some(Arc::new(p));
            }
            if st.stopping && st.running.is_empty() && st.queue.is_empty() {
                return None;
            }
            // A tick, so clients that went away are noticed without a wake.
            st = sh
                .wake
                .wait_timeout(st, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn arrived(&self, pass: &Pass, ids: &[u32]) {
        let sh = &self.0;
        let mut st = sh.lock();
        for (s, &id) in pass.samples.iter().zip(ids) {
            sh.take(&mut st, s.seq, id);
        }
        sh.metrics.pass(pass.rows.len());
        sh.gauges(&st);
        drop(st);
        sh.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::safe_end;

    #[test]
    fn text_is_held_back_only_where_a_stop_string_may_begin() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(safe_end("hello", &stops), 5);
        assert_eq!(safe_end("hello\n", &stops), 5);
        assert_eq!(safe_end("hello E", &stops), 6);
        assert_eq!(safe_end("hello EN", &stops), 6);
        assert_eq!(safe_end("hello", &[]), 5);
    }
}
