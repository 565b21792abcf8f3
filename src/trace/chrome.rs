//! Chrome trace-event JSON (opens in Perfetto and chrome://tracing): one
//! thread per device (per rank of a tensor-parallel group: the device's
//! rank 0 first, the other ranks after every device), then one per rank's
//! all-reduces, then one per transfer direction, each named by a
//! `thread_name` metadata event; every event is a complete event (`"ph":"X"`)
//! with `ts`/`dur` in µs.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::trace::{Timeline, Track};

/// The trace of `t` as a Chrome trace-event JSON object.
pub fn to_chrome_json(t: &Timeline) -> Value {
    let p = t.device_names.len();
    // Devices (rank 0) are tids 0..P; every other track gets a tid after
    // them, in order: other ranks' compute, all-reduces, transfers.
    let mut tids: BTreeMap<(u8, usize, usize), usize> = BTreeMap::new();
    for e in &t.events {
        let key = match e.track {
            Track::Compute { device, gpu } if gpu > 0 || device >= p => (0, gpu, device),
            Track::Compute { .. } => continue,
            Track::AllReduce { device, gpu } => (1, device, gpu),
            Track::Transfer { from, to } => (2, from, to),
        };
        tids.insert(key, 0);
    }
    for (i, tid) in tids.values_mut().enumerate() {
        *tid = p + i;
    }
    let tid_of = |track: Track| match track {
        Track::Compute { device, gpu: 0 } if device < p => device,
        Track::Compute { device, gpu } => tids[&(0, gpu, device)],
        Track::AllReduce { device, gpu } => tids[&(1, device, gpu)],
        Track::Transfer { from, to } => tids[&(2, from, to)],
    };

    let mut out = vec![
        json!({"ph": "M", "name": "process_name", "pid": 0, "tid": 0, "args": {"name": format!("wgpipe ({})", t.clock)}}),
    ];
    let mut thread = |tid: usize, name: String| {
        out.push(
            json!({"ph": "M", "name": "thread_name", "pid": 0, "tid": tid, "args": {"name": name}}),
        );
        out.push(json!({"ph": "M", "name": "thread_sort_index", "pid": 0, "tid": tid, "args": {"sort_index": tid}}));
    };
    let ranks = tids.keys().any(|k| k.0 == 1);
    for (d, name) in t.device_names.iter().enumerate() {
        match ranks {
            true => thread(d, format!("device {d} rank 0 ({name})")),
            false => thread(d, name.clone()),
        }
    }
    for (&(kind, a, b), &tid) in &tids {
        thread(
            tid,
            match kind {
                0 => format!("device {b} rank {a}"),
                1 => format!("device {a} rank {b} all-reduce"),
                _ => format!("transfer {a}->{b}"),
            },
        );
    }

    let (origin, _) = t.compute_span();
    for e in &t.events {
        let action = || match e.action {
            Some(a) => {
                json!({"stage": a.stage, "microbatch": a.microbatch, "kind": a.kind.to_string()})
            }
            None => json!({}),
        };
        let tid = tid_of(e.track);
        let (cat, args) = match e.track {
            Track::Compute { .. } => ("compute", action()),
            Track::AllReduce { .. } => {
                let mut args = action();
                args["bytes"] = json!(e.bytes);
                ("all-reduce", args)
            }
            Track::Transfer { from, to } => (
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
