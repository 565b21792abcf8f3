//! `wgpipe adapters`: every adapter on every backend, with the limits and
//! features that decide what fits, and where each reads decoding's weights
//! from (measured: each adapter is opened and probed, ~1 s apiece).

use serde::Serialize;
use wgpipe::device::{list_adapters, no_adapter_error, AdapterSummary, Gpu};
use wgpipe::kernels::{decode_weights, DecodeWeights};
use wgpipe::Result;

use super::Context;

#[derive(clap::Args, Debug, Clone)]
pub struct AdaptersArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One adapter as `--json` prints it: its listing, and the decode probe's
/// choice (`null` when the adapter did not open).
#[derive(Serialize)]
struct AdapterReport {
    #[serde(flatten)]
    summary: AdapterSummary,
    decode_weights: Option<DecodeWeights>,
}

pub fn run(args: &AdaptersArgs, cx: &Context) -> Result<()> {
    let adapters: Vec<AdapterReport> = list_adapters()
        .into_iter()
        .map(|summary| {
            let decode_weights = Gpu::open_summary(&summary)
                .ok()
                .map(|gpu| (*decode_weights(&gpu)).clone());
            AdapterReport {
                summary,
                decode_weights,
            }
        })
        .collect();
    match args.json {
        true => cx.print_json(&adapters),
        false => adapters.iter().for_each(|a| cx.print(&text(a))),
    }
    if adapters.is_empty() {
        return Err(no_adapter_error());
    }
    Ok(())
}

fn text(r: &AdapterReport) -> String {
    let a = &r.summary;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "[{}] {}  {} ({})\n      driver: {} {}\n      max buffer {:.0} MiB, max storage binding {:.0} MiB, {} storage buffers/stage, workgroup storage {} KiB, {} invocations/workgroup, 2D textures up to {}\n      timestamp queries: {}, f16: {}, subgroups: {}\n      decode weights: {}\n",
        a.index,
        a.id(),
        a.name,
        a.device_type,
        a.driver,
        a.driver_info,
        mib(a.max_buffer_size),
        mib(a.max_storage_buffer_binding_size),
        a.max_storage_buffers_per_shader_stage,
        a.max_compute_workgroup_storage_size / 1024,
        a.max_compute_invocations_per_workgroup,
        a.max_texture_dimension_2d,
        yes(a.timestamp_query),
        yes(a.shader_f16),
        yes(a.subgroup),
        match &r.decode_weights {
            None => "(the adapter did not open)".to_string(),
            Some(d) => format!(
                "{:?}{} (one-row matmul over a 768 x 2304 weight: buffer {:.2} GB/s, texture {:.2} GB/s)",
                d.storage,
                if d.forced { ", forced by WGPIPE_DECODE_WEIGHTS" } else { "" },
                d.buffer_gbps,
                d.texture_gbps
            ),
        }
    )
}
