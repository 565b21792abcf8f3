//! Device layer: the adapters this machine has, one [`Gpu`] (wgpu Device +
//! Queue) per pipeline stage, and the buffers on it ([`buffers`]).
//!
//! This layer knows nothing of kernels: the kernels layer compiles its
//! shaders for a `Gpu` and keeps them in the device's typed cache
//! ([`Gpu::cached`]), so they are compiled once per device.
//!
//! Every [`Gpu`] is opened from its *own* `wgpu::Instance`. On Mesa's software
//! adapter (lavapipe / llvmpipe) devices that share an Instance share one
//! thread pool and never run concurrently; one Instance per device, with
//! `LP_NUM_THREADS=1`, runs them in parallel (../shared/wgpu-notes.md).

use std::any::Any;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::error::{Error, Result};

pub mod buffers;
mod cache;
pub mod dtype;
pub mod timestamps;

pub use buffers::{
    download, download_as, read_mapped, staging, upload, upload_as, upload_pod, zeros, zeros_as,
};
pub use dtype::{Dtype, DtypeChoice, Precision};

/// The backends wgpipe looks at, in the order adapters are listed.
const BACKENDS: [(wgpu::Backends, &str); 4] = [
    (wgpu::Backends::VULKAN, "vulkan"),
    (wgpu::Backends::METAL, "metal"),
    (wgpu::Backends::DX12, "dx12"),
    (wgpu::Backends::GL, "gl"),
];

/// What `wgpipe adapters` prints for one adapter.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSummary {
    /// Position in the full listing (what `--adapter N` selects).
    pub index: usize,
    /// `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: String,
    /// Position among the adapters of the same backend (`vulkan:0`).
    pub backend_index: usize,
    pub name: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_storage_buffers_per_shader_stage: u32,
    /// The widest and tallest 2D texture (weights held in textures for
    /// decoding are tiled to it).
    pub max_texture_dimension_2d: u32,
    pub timestamp_query: bool,
    pub shader_f16: bool,
    pub subgroup: bool,
}

impl AdapterSummary {
    /// `vulkan:0`: how `--devices` names this adapter.
    pub fn id(&self) -> String {
        format!("{}:{}", self.backend, self.backend_index)
    }
}

fn new_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn summarize(
    index: usize,
    backend: &str,
    backend_index: usize,
    a: &wgpu::Adapter,
) -> AdapterSummary {
    let info = a.get_info();
    let limits = a.limits();
    let features = a.features();
    AdapterSummary {
        index,
        backend: backend.to_string(),
        backend_index,
        name: info.name,
        device_type: format!("{:?}", info.device_type),
        driver: info.driver,
        driver_info: info.driver_info,
        max_buffer_size: limits.max_buffer_size,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
        max_texture_dimension_2d: limits.max_texture_dimension_2d,
        timestamp_query: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroup: features.contains(wgpu::Features::SUBGROUP),
    }
}

fn backend_adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    let instance = new_instance(backends);
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// Every adapter on every backend wgpu offers here, Vulkan first, then Metal,
/// DX12 and GL. `WGPU_BACKEND` (e.g. `vulkan,gl`), when set, restricts the backends.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let allowed = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let mut out = Vec::new();
    for (bits, name) in BACKENDS.into_iter().filter(|(b, _)| allowed.contains(*b)) {
        for (i, a) in backend_adapters(bits).iter().enumerate() {
            out.push(summarize(out.len(), name, i, a));
        }
    }
    out
}

/// Resolve `--adapter` / one entry of `--devices` against the listing:
/// empty = the first adapter; `N` = index in the listing; `vulkan` / `gl` / … =
/// first of that backend; `vulkan:1` = backend and index; anything else = a
/// case-insensitive substring of the adapter name.
pub fn select(adapters: &[AdapterSummary], selector: &str) -> Result<AdapterSummary> {
    let sel = selector.trim().to_lowercase();
    if adapters.is_empty() {
        return Err(Error::NoAdapter {
            detail: String::new(),
        });
    }
    let found = if sel.is_empty() {
        adapters.first()
    } else if let Ok(i) = sel.parse::<usize>() {
        adapters.get(i)
    } else if let Some((b, i)) = sel
        .split_once(':')
        .and_then(|(b, i)| Some((b, i.parse::<usize>().ok()?)))
    {
        adapters
            .iter()
            .find(|a| a.backend == b && a.backend_index == i)
    } else if BACKENDS.iter().any(|(_, n)| *n == sel) {
        adapters.iter().find(|a| a.backend == sel)
    } else {
        adapters
            .iter()
            .find(|a| a.name.to_lowercase().contains(&sel))
    };
    found.cloned().ok_or_else(|| {
        let have: Vec<String> = adapters
            .iter()
            .map(|a| format!("{} ({})", a.id(), a.name))
            .collect();
        Error::AdapterNotFound {
            selector: selector.to_string(),
            have: have.join(", "),
        }
    })
}

/// The first wgpu error a device reported through its uncaptured-error
/// handler or device-lost callback; checked after each submission.
#[derive(Clone, Default)]
pub struct ErrorSink(Arc<Mutex<Option<String>>>);

impl ErrorSink {
    fn set(&self, msg: String) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(msg);
        }
    }
    /// Inject an error as if the device had reported it (used by tests of the
    /// failure path, and by the executor when a peer fails).
    pub fn report(&self, msg: impl Into<String>) {
        self.set(msg.into())
    }
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One pipeline device: its own Instance, Adapter, Device and Queue, facts
/// about the adapter, and a cache for state built once per device.
pub struct Gpu {
    /// `vulkan:0 (llvmpipe …)`: how messages name this device.
    pub label: String,
    pub summary: AdapterSummary,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    /// Timestamp queries usable inside command encoders.
    pub timestamps: bool,
    /// `(min, max)` subgroup size when the device has subgroup operations
    /// (`Features::SUBGROUP`, enabled on the device), else `None`.
    pub subgroup_size: Option<(u32, u32)>,
    pub errors: ErrorSink,
    cache: cache::TypeCache,
    _instance: wgpu::Instance,
}

impl Gpu {
    /// Open the adapter `selector` names (see [`select`]) on a fresh Instance.
    pub fn open(selector: &str) -> Result<Gpu> {
        let adapters = list_adapters();
        let summary = select(&adapters, selector)?;
        Gpu::open_summary(&summary)
    }

    /// Open the adapter a listing entry describes, on a fresh Instance.
    pub fn open_summary(summary: &AdapterSummary) -> Result<Gpu> {
        let bits = BACKENDS
            .iter()
            .find(|(_, n)| *n == summary.backend)
            .map(|(b, _)| *b)
            .ok_or_else(|| Error::AdapterNotFound {
                selector: summary.id(),
                have: "(it disappeared since it was listed)".into(),
            })?;
        let instance = new_instance(bits);
        let adapter = pollster::block_on(instance.enumerate_adapters(bits))
            .into_iter()
            .nth(summary.backend_index)
            .ok_or_else(|| Error::AdapterNotFound {
                selector: summary.id(),
                have: "(it disappeared since it was listed)".into(),
            })?;
        let label = format!("{} ({})", summary.id(), summary.name);
        let ts = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let features =
            adapter.features() & (ts | wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16);
        let timestamps = features.contains(ts);
        let info = adapter.get_info();
        let subgroup_size = features
            .contains(wgpu::Features::SUBGROUP)
            .then_some((info.subgroup_min_size, info.subgroup_max_size));
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some(&label),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::Device {
            device: label.clone(),
            msg: format!("request_device failed: {e}"),
        })?;
        let errors = ErrorSink::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| sink.set(e.to_string())));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                sink.set(format!("device lost: {msg}"))
            }
        });
        Ok(Gpu {
            label,
            summary: summary.clone(),
            device,
            queue,
            limits,
            timestamps,
            subgroup_size,
            errors,
            cache: Default::default(),
            _instance: instance,
        })
    }

    /// Subgroup operations with subgroups of exactly 8 lanes (lavapipe): what
    /// the subgroup matmul kernel is written for.
    pub fn supports_subgroup8(&self) -> bool {
        self.subgroup_size == Some((8, 8))
    }

    /// The value of type `T` attached to this device, built by `init` on the
    /// first request and shared by every later one (the same `Arc`).
    ///
    /// This is how a layer above attaches per-device state that is expensive
    /// to build and must not be rebuilt per run, without this layer knowing
    /// its type: the kernels layer keeps its compiled pipelines here
    /// (`kernels::Kernels::of`). One value per type; `init` runs at most once
    /// per device, even when threads race. `init` may ask for values of other
    /// types, but asking for `T` from inside `T`'s own `init` deadlocks.
    /// Values live as long as the `Gpu`.
    pub fn cached<T: Any + Send + Sync>(&self, init: impl FnOnce(&Gpu) -> T) -> Arc<T> {
        self.cache.get_or_init(|| init(self))
    }

    /// Largest buffer one storage binding may cover on this device.
    pub fn max_binding(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size
    }

    /// Refuse a tensor that cannot be bound in one piece, naming it and the limit.
    pub fn check_binding(&self, tensor: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_binding() || bytes > self.limits.max_buffer_size {
            return Err(Error::BindingLimit {
                adapter: self.label.clone(),
                tensor: tensor.to_string(),
                bytes,
                limit: self.max_binding().min(self.limits.max_buffer_size),
            });
        }
        Ok(())
    }

    /// Wait for all submitted work; surface any error the device reported.
    pub fn wait(&self) -> Result<()> {
        wait_idle(&self.device, &|| false).map_err(|e| self.err(e))?;
        self.check()
    }

    /// The first error this device reported, if any, as an [`Error`].
    pub fn check(&self) -> Result<()> {
        match self.errors.take() {
            Some(msg) => Err(self.err(msg)),
            None => Ok(()),
        }
    }

    pub fn err(&self, msg: impl Into<String>) -> Error {
        Error::Device {
            device: self.label.clone(),
            msg: msg.into(),
        }
    }
}

/// The error to give when a command needs an adapter and there is none.
pub fn no_adapter_error() -> Error {
    Error::NoAdapter {
        detail: " on any backend (Vulkan, Metal, DX12, GL)".into(),
    }
}

/// The Gpu every unit test in src/ that needs one opens: the adapter
/// `WGPIPE_TEST_ADAPTER` selects (as `--adapter` does; the first when unset),
/// like the integration tests' `tests/common`. With none it fails, loudly,
/// saying what to install: GPU tests never skip.
#[cfg(test)]
pub(crate) fn test_gpu() -> Gpu {
    let selector = std::env::var("WGPIPE_TEST_ADAPTER").unwrap_or_default();
    Gpu::open(&selector).unwrap_or_else(|e| {
        panic!(
            "no usable wgpu adapter (WGPIPE_TEST_ADAPTER={selector:?}: {e}); install Mesa's software Vulkan driver: apt-get install -y mesa-vulkan-drivers"
        )
    })
}

/// Which adapters make up each schedule device (a row of the schedule):
/// `groups[d]` are the Gpus schedule device `d` spans — one each today; under
/// tensor parallelism T each, stage-major (`--devices 8` with T = 4 is two
/// groups of four). Each entry is opened on its own Instance.
#[derive(Clone, Debug)]
pub struct Placement {
    pub groups: Vec<Vec<AdapterSummary>>,
}

impl Placement {
    /// Schedule devices P.
    pub fn devices(&self) -> usize {
        self.groups.len()
    }

    /// Open every Gpu, group by group.
    pub fn open(&self) -> Result<Vec<Vec<Gpu>>> {
        self.groups
            .iter()
            .map(|g| g.iter().map(Gpu::open_summary).collect())
            .collect()
    }
}

/// Place `--devices` into groups of `per_group` Gpus: a count N places N
/// Gpus one per physical adapter where there are enough, cycling otherwise
/// (an adapter seen on several backends — llvmpipe on Vulkan and GL —
/// counts once, on its first backend); a comma list (`vulkan:0,gl:0`, or any
/// [`select`] form) picks each explicitly. Consecutive Gpus form a group.
pub fn place_devices(spec: &str, per_group: usize) -> Result<Placement> {
    let adapters = list_adapters();
    if adapters.is_empty() {
        return Err(no_adapter_error());
    }
    let flat: Vec<AdapterSummary> = if let Ok(n) = spec.trim().parse::<usize>() {
        if n == 0 {
            return Err(Error::Input(
                "--devices 0: a pipeline needs at least one device".into(),
            ));
        }
        let mut physical: Vec<&AdapterSummary> = Vec::new();
        for a in &adapters {
            if !physical
                .iter()
                .any(|p| p.name == a.name && p.device_type == a.device_type)
            {
                physical.push(a);
            }
        }
        (0..n)
            .map(|i| physical[i % physical.len()].clone())
            .collect()
    } else {
        spec.split(',')
            .map(|s| select(&adapters, s))
            .collect::<Result<_>>()?
    };
    if per_group == 0 || !flat.len().is_multiple_of(per_group) {
        return Err(Error::Input(format!(
            "--devices names {} Gpus, which do not make groups of {per_group}",
            flat.len()
        )));
    }
    Ok(Placement {
        groups: flat.chunks(per_group).map(<[_]>::to_vec).collect(),
    })
}

/// Wait until every submission on `device` has finished, giving up with
/// "aborted" when `abort()` says so. It polls without blocking, every 100 µs:
/// a blocking wait inside Mesa's software driver keeps its thread busy on a
/// CPU core the adapter's own compute threads need (measured here: a stage
/// forward took ~70 ms instead of ~40 ms next to a blocked waiter).
pub fn wait_idle(device: &wgpu::Device, abort: &dyn Fn() -> bool) -> Result<(), String> {
    loop {
        match device.poll(wgpu::PollType::Poll) {
            Ok(status) if status.is_queue_empty() => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("poll failed: {e}")),
        }
        if abort() {
            return Err("aborted".into());
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}
