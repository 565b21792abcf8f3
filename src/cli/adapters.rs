//! `wgpipe adapters`: every adapter on every backend, with the limits and
//! features that decide what fits.

use crate::device::{list_adapters, no_adapter_error};
use crate::error::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct AdaptersArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &AdaptersArgs) -> Result<()> {
    let adapters = list_adapters();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&adapters).expect("adapter summaries serialize")
        );
    } else {
        for a in &adapters {
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            let yes = |b: bool| if b { "yes" } else { "no" };
            println!("[{}] {}  {} ({})", a.index, a.id(), a.name, a.device_type);
            println!("      driver: {} {}", a.driver, a.driver_info);
            println!(
                "      max buffer {:.0} MiB, max storage binding {:.0} MiB, workgroup storage {} KiB, {} invocations/workgroup",
                mib(a.max_buffer_size),
                mib(a.max_storage_buffer_binding_size),
                a.max_compute_workgroup_storage_size / 1024,
                a.max_compute_invocations_per_workgroup
            );
            println!(
                "      timestamp queries: {}, f16: {}, subgroups: {}",
                yes(a.timestamp_query),
                yes(a.shader_f16),
                yes(a.subgroup)
            );
        }
    }
    if adapters.is_empty() {
        return Err(no_adapter_error());
    }
    Ok(())
}
