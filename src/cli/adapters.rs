//! `wgpipe adapters`: every adapter on every backend, with the limits and
//! features that decide what fits.

use wgpipe::device::{list_adapters, no_adapter_error, AdapterSummary};
use wgpipe::Result;

use super::Context;

#[derive(clap::Args, Debug, Clone)]
pub struct AdaptersArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &AdaptersArgs, cx: &Context) -> Result<()> {
    let adapters = list_adapters();
    match args.json {
        true => cx.print_json(&adapters),
        false => adapters.iter().for_each(|a| cx.print(&text(a))),
    }
    if adapters.is_empty() {
        return Err(no_adapter_error());
    }
    Ok(())
}

fn text(a: &AdapterSummary) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let yes = |b: bool| if b { "yes" } else { "no" };
    format!(
        "[{}] {}  {} ({})\n      driver: {} {}\n      max buffer {:.0} MiB, max storage binding {:.0} MiB, workgroup storage {} KiB, {} invocations/workgroup\n      timestamp queries: {}, f16: {}, subgroups: {}\n",
        a.index,
        a.id(),
        a.name,
        a.device_type,
        a.driver,
        a.driver_info,
        mib(a.max_buffer_size),
        mib(a.max_storage_buffer_binding_size),
        a.max_compute_workgroup_storage_size / 1024,
        a.max_compute_invocations_per_workgroup,
        yes(a.timestamp_query),
        yes(a.shader_f16),
        yes(a.subgroup)
    )
}
