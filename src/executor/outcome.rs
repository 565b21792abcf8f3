//! Every endpoint's outcome on every process. In-process every endpoint ran
//! here; when the devices are MPI ranks each rank packs its own outcome (its
//! device's events, the transfers it received, its program's output) as
//! bytes ([`super::wire`]), and every rank gets them all through
//! [`Control::exchange`], so that each assembles the same timeline and rank 0
//! reports. The events and transfer records, small, go as JSON; the
//! programs' outputs (logits, gradients) in the plain wire encoding.

use super::program::StageProgram;
use super::transport::Control;
use super::wire::{take_n, to_bytes, Wire};
use super::worker::Outcome;
use super::worker::TransferRecord;
use crate::error::{Error, Result};
use crate::trace::Event;

/// One rank's outcome, less its program's output.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    /// The rank's device label (`vulkan:0 (llvmpipe …)`).
    label: String,
    events: Vec<Event>,
    received: Vec<TransferRecord>,
    gpu_clock: bool,
    finished_s: f64,
    reduced_bytes: u64,
}

/// Device `d`'s outcome as bytes: a JSON header, then the output.
pub(super) fn pack<O>(
    label: &str,
    o: &Outcome<O>,
    output: impl FnOnce(&O) -> Option<Vec<u8>>,
) -> Result<Vec<u8>> {
    let header = Header {
        label: label.to_string(),
        events: o.events.clone(),
        received: o.received.clone(),
        gpu_clock: o.gpu_clock,
        finished_s: o.finished_s,
        reduced_bytes: o.reduced_bytes,
    };
    let json = serde_json::to_vec(&header).map_err(|e| Error::Other(e.to_string()))?;
    let out = output(&o.output).ok_or_else(|| {
        Error::Input("this program's output cannot cross processes (not supported over MPI)".into())
    })?;
    let mut bytes = to_bytes(&(json.len() as u64));
    bytes.extend_from_slice(&json);
    bytes.extend_from_slice(&out);
    Ok(bytes)
}

/// The inverse of [`pack`]: (label, outcome).
pub(super) fn unpack<O>(
    bytes: &[u8],
    output: impl FnOnce(&[u8]) -> Option<O>,
) -> Result<(String, Outcome<O>)> {
    let bad = || Error::Other("a rank's outcome arrived corrupt".into());
    let mut inp = bytes;
    let n = usize::take(&mut inp).ok_or_else(bad)?;
    let json = take_n(&mut inp, n).ok_or_else(bad)?;
    let h: Header = serde_json::from_slice(json).map_err(|_| bad())?;
    let out = output(inp).ok_or_else(bad)?;
    Ok((
        h.label,
        Outcome {
            events: h.events,
            received: h.received,
            output: out,
            gpu_clock: h.gpu_clock,
            finished_s: h.finished_s,
            reduced_bytes: h.reduced_bytes,
        },
    ))
}

/// Every endpoint's outcome, and each schedule device's name.
type Gathered<O> = (Vec<Outcome<O>>, Vec<String>);

/// Every endpoint's outcome, with each schedule device's name (its group's
/// Gpus' `labels`, by endpoint, joined with `+`): in-process all were local;
/// across processes (one endpoint per rank) each rank packs its own with its
/// label, and every rank gets them all ([`Control::exchange`]).
pub(super) fn gather<P: StageProgram>(
    net: &dyn Control,
    labels: Vec<String>,
    tp: usize,
    outcomes: Vec<Option<Outcome<P::Output>>>,
) -> Result<Gathered<P::Output>> {
    let n = outcomes.len();
    let names = |labels: &[String]| -> Vec<String> {
        labels.chunks(tp.max(1)).map(|g| g.join(" + ")).collect()
    };
    if (0..n).all(|e| net.local(e)) {
        let all = outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| Error::Other("a device stopped without saying why".into())))
            .collect::<Result<Vec<_>>>()?;
        return Ok((all, names(&labels)));
    }
    // This process's endpoints: (endpoint, packed outcome) each.
    let mut mine = Vec::new();
    for (e, o) in outcomes.iter().enumerate().filter(|(e, _)| net.local(*e)) {
        let o = o
            .as_ref()
            .ok_or_else(|| Error::Other(format!("endpoint {e} stopped without saying why")))?;
        let label = labels.get(e).map_or("?", String::as_str);
        let bytes = pack(label, o, P::output_to_bytes)?;
        e.put(&mut mine);
        bytes.len().put(&mut mine);
        mine.extend_from_slice(&bytes);
    }
    let everyone = net
        .exchange(mine)
        .map_err(|msg| match crate::interrupt::requested() {
            true => Error::Interrupted,
            false => Error::Other(msg),
        })?;
    let mut slots: Vec<Option<(String, Outcome<P::Output>)>> = (0..n).map(|_| None).collect();
    let bad = || Error::Other("a rank's outcome arrived corrupt".into());
    for theirs in &everyone {
        let mut inp = &theirs[..];
        while !inp.is_empty() {
            let e = usize::take(&mut inp).filter(|&e| e < n).ok_or_else(bad)?;
            let len = usize::take(&mut inp).ok_or_else(bad)?;
            let bytes = take_n(&mut inp, len).ok_or_else(bad)?;
            slots[e] = Some(unpack(bytes, P::output_from_bytes)?);
        }
    }
    let mut all = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for (e, s) in slots.into_iter().enumerate() {
        let (label, o) =
            s.ok_or_else(|| Error::Other(format!("no rank reported endpoint {e}'s outcome")))?;
        labels.push(label);
        all.push(o);
    }
    Ok((all, names(&labels)))
}
