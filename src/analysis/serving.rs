//! Serving metrics of a generation, from the GPU timestamps of the last
//! stage: TTFT from the first prefill's start, ITL between one sequence's
//! consecutive tokens, TPOT their mean per sequence, tokens/s = new tokens
//! over first prefill to last token.

use crate::workload::decode::DecodeRun;

/// Serving metrics of a generation, in ms on the timeline's clock.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DecodeMetrics {
    /// Mean over sequences of the time to the first new token.
    pub ttft_ms: f64,
    /// Mean over sequences of (last token − first token) / (tokens − 1).
    pub tpot_ms: f64,
    /// Inter-token latency over every consecutive pair of every sequence.
    pub itl_ms_p50: f64,
    pub itl_ms_p99: f64,
    /// Median over decoded tokens (all but each sequence's first) of the
    /// time the devices spent computing it: its passes on every stage,
    /// sampler included (GPU timestamps). ITL − this is what the kernels do
    /// not account for: submits, waits, hops, readbacks, other groups.
    pub itl_kernels_ms_p50: f64,
    /// New tokens over the time from the first prefill to the last token.
    pub tokens_per_s: f64,
}

impl DecodeMetrics {
    /// The metrics of `g`, from the last stage's timestamps of its tokens.
    pub fn of(g: &DecodeRun) -> DecodeMetrics {
        let firsts: Vec<f64> = g.token_us.iter().map(|t| t[0] - g.start_us).collect();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let tpots: Vec<f64> = g
            .token_us
            .iter()
            .filter(|t| t.len() > 1)
            .map(|t| (t[t.len() - 1] - t[0]) / (t.len() - 1) as f64)
            .collect();
        let mut itl: Vec<f64> = g
            .token_us
            .iter()
            .flat_map(|t| t.windows(2).map(|w| w[1] - w[0]))
            .collect();
        itl.sort_by(f64::total_cmp);
        let pct = |q: f64| match itl.len() {
            0 => f64::NAN,
            n => itl[((q * (n - 1) as f64).round() as usize).min(n - 1)],
        };
        let end = g
            .token_us
            .iter()
            .flatten()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let n: usize = g.token_us.iter().map(Vec::len).sum();
        let mut busy: Vec<f64> = g
            .token_busy_us
            .iter()
            .flat_map(|t| t.iter().skip(1).copied())
            .collect();
        busy.sort_by(f64::total_cmp);
        let busy_p50 = match busy.len() {
            0 => f64::NAN,
            n => busy[(n - 1) / 2],
        };
        DecodeMetrics {
            ttft_ms: mean(&firsts) / 1e3,
            tpot_ms: if tpots.is_empty() {
                f64::NAN
            } else {
                mean(&tpots) / 1e3
            },
            itl_ms_p50: pct(0.5) / 1e3,
            itl_ms_p99: pct(0.99) / 1e3,
            itl_kernels_ms_p50: busy_p50 / 1e3,
            tokens_per_s: n as f64 / ((end - g.start_us) / 1e6),
        }
    }
}
