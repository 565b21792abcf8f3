//! What crosses processes when a run's devices are MPI ranks: each rank's
//! outcome (its device's events, the transfers it received, its program's
//! output) as bytes, gathered to every rank so that each assembles the same
//! timeline and rank 0 reports.
//!
//! [`Wire`] is a plain little-endian encoding for the programs' outputs
//! (logits and gradients are large; JSON would multiply them); the events
//! and transfer records, small, go as JSON.

use super::program::StageProgram;
use super::transport::Control;
use super::worker::{Outcome, TransferRecord};
use crate::error::{Error, Result};
use crate::trace::Event;

/// A value as bytes and back (little-endian, lengths as u64).
pub trait Wire: Sized {
    fn put(&self, out: &mut Vec<u8>);
    /// Read one value off the front of `inp`; `None` when it is short.
    fn take(inp: &mut &[u8]) -> Option<Self>;
}

fn take_n<'a>(inp: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if inp.len() < n {
        return None;
    }
    let (head, rest) = inp.split_at(n);
    *inp = rest;
    Some(head)
}

macro_rules! wire_num {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn put(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn take(inp: &mut &[u8]) -> Option<Self> {
                let b = take_n(inp, std::mem::size_of::<$t>())?;
                Some(<$t>::from_le_bytes(b.try_into().ok()?))
            }
        }
    )*};
}
wire_num!(u32, u64, f32, f64);

impl Wire for usize {
    fn put(&self, out: &mut Vec<u8>) {
        (*self as u64).put(out)
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        usize::try_from(u64::take(inp)?).ok()
    }
}

impl<T: Wire> Wire for Vec<T> {
    fn put(&self, out: &mut Vec<u8>) {
        self.len().put(out);
        for x in self {
            x.put(out);
        }
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        let n = usize::take(inp)?;
        // Each element is at least one byte: a corrupt length cannot
        // allocate more than the input could hold.
        let mut v = Vec::with_capacity(n.min(inp.len()));
        for _ in 0..n {
            v.push(T::take(inp)?);
        }
        Some(v)
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        Some((A::take(inp)?, B::take(inp)?))
    }
}

impl<A: Wire, B: Wire, C: Wire> Wire for (A, B, C) {
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
        self.2.put(out);
    }
    fn take(inp: &mut &[u8]) -> Option<Self> {
        Some((A::take(inp)?, B::take(inp)?, C::take(inp)?))
    }
}

/// `v` encoded.
pub fn to_bytes<T: Wire>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    v.put(&mut out);
    out
}

/// `b` decoded, all of it.
pub fn from_bytes<T: Wire>(mut b: &[u8]) -> Option<T> {
    let v = T::take(&mut b)?;
    b.is_empty().then_some(v)
}

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
    let everyone = net.exchange(mine).map_err(Error::Other)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let v: Vec<(usize, Vec<f32>)> = vec![(3, vec![1.5, -0.0, f32::MAX]), (0, vec![])];
        assert_eq!(from_bytes::<Vec<(usize, Vec<f32>)>>(&to_bytes(&v)), Some(v));
        let d: (u64, Vec<Vec<u32>>, Vec<Vec<f32>>) =
            (7, vec![vec![1, 2], vec![]], vec![vec![0.25]]);
        assert_eq!(from_bytes(&to_bytes(&d)), Some(d));
    }

    #[test]
    fn short_or_long_input_is_refused() {
        let b = to_bytes(&vec![1u32, 2, 3]);
        assert_eq!(from_bytes::<Vec<u32>>(&b[..b.len() - 1]), None);
        let mut long = b.clone();
        long.push(0);
        assert_eq!(from_bytes::<Vec<u32>>(&long), None);
        // A huge length with no data behind it fails instead of allocating.
        assert_eq!(from_bytes::<Vec<u32>>(&to_bytes(&(u64::MAX / 2))), None);
    }
}
