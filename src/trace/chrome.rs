//! Chrome trace-event JSON (opens in Perfetto and chrome://tracing): one
//! thread per device, then one per transfer direction, each named by a
//! `thread_name` metadata event; every event is a complete event (`"ph":"X"`)
//! with `ts`/`dur` in µs.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::trace::{Timeline, Track};

/// The trace of `t` as a Chrome trace-event JSON object.
pub fn to_chrome_json(t: &Timeline) -> Value {
    let p = t.device_names.len();
    // Transfer tracks get tids after the devices, in (from, to) order.
    let mut transfer_tid: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for e in &t.events {
        if let Track::Transfer { from, to } = e.track {
            transfer_tid.insert((from, to), 0);
        }
    }
    for (i, tid) in transfer_tid.values_mut().enumerate() {
        *tid = p + i;
    }

    let mut out = vec![
        json!({"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": format!("wgpipe ({})", t.clock)}}),
    ];
    let mut thread = |tid: usize, name: String| {
        out.push(
            json!({"ph": "M", "name": "thread_name", "pid": 0, "tid": tid, "args": {"name": name}}),
        );
        out.push(json!({"ph": "M", "name": "thread_sort_index", "pid": 0, "tid": tid, "args": {"sort_index": tid}}));
    };
    for (d, name) in t.device_names.iter().enumerate() {
        thread(d, name.clone());
    }
    for (&(from, to), &tid) in &transfer_tid {
        thread(tid, format!("transfer {from}->{to}"));
    }

    let (origin, _) = t.compute_span();
    for e in &t.events {
        let (tid, cat, args) = match e.track {
            Track::Compute { device: d, .. } => {
                let args = match e.action {
                    Some(a) => {
                        json!({"stage": a.stage, "microbatch": a.microbatch, "kind": a.kind.to_string()})
                    }
                    None => json!({}),
                };
                (d, "compute", args)
            }
            Track::Transfer { from, to } => (
                transfer_tid[&(from, to)],
                "transfer",
                json!({"bytes": e.bytes, "from": from, "to": to}),
            ),
        };
        out.push(json!({
            "name": e.name, "cat": cat, "ph": "X", "pid": 0, "tid": tid,
            "ts": e.start_us - origin, "dur": e.duration_us(), "args": args,
        }));
    }
    json!({"traceEvents": out, "displayTimeUnit": "ms", "otherData": {"clock": t.clock}})
}
