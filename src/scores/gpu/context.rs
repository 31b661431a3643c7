//! Adapters and the device: which GPU bench runs on, and the one device and
//! queue every GPU pass of a run shares.
//!
//! Why it is its own file: choosing and opening an adapter (ranking, the
//! `WGPU_ADAPTER_NAME` filter, limits, the error sink that turns wgpu's
//! panics into `Err`) is the same for every pass; the passes themselves
//! (`fused.rs`, `post.rs`) own their layouts and pipelines and only borrow
//! this context, so no pass depends on another.

use anyhow::{Context, Result, anyhow, bail, ensure};
use std::fmt;
use std::sync::{Arc, Mutex};

/// Workgroup size every pass of `scores.wgsl` is dispatched with.
pub(super) const WG: u32 = 256;

/// One adapter wgpu sees, for `bench devices`.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroups_per_dimension: u32,
}

impl AdapterSummary {
    fn of(a: &wgpu::Adapter) -> AdapterSummary {
        let i = a.get_info();
        let l = a.limits();
        AdapterSummary {
            name: i.name,
            backend: i.backend,
            device_type: i.device_type,
            driver: i.driver,
            driver_info: i.driver_info,
            max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
            max_buffer_size: l.max_buffer_size,
            max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
        }
    }
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Cpu => "software (CPU)",
        wgpu::DeviceType::Other => "other",
    }
}

fn mib(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else {
        format!("{b} B")
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}, {}), driver {}{}; max storage binding {}, max buffer {}, max workgroups/dim {}",
            self.name,
            self.backend,
            device_type_name(self.device_type),
            if self.driver.is_empty() { "?" } else { &self.driver },
            if self.driver_info.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.driver_info)
            },
            mib(self.max_storage_buffer_binding_size),
            mib(self.max_buffer_size),
            self.max_compute_workgroups_per_dimension,
        )
    }
}

pub(super) fn new_instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    // Vulkan / Metal / DX12 unless WGPU_BACKEND says otherwise: the GL
    // backend has no compute on many drivers and is slow to probe headless.
    desc.backends = wgpu::Backends::PRIMARY.with_env();
    desc.flags = wgpu::InstanceFlags::default().with_env();
    wgpu::Instance::new(desc)
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Adapters usable for compute, best first (discrete, integrated, virtual,
/// other, software). `WGPU_ADAPTER_NAME` (case-insensitive substring)
/// narrows the list, as in wgpu's own tools.
pub(super) fn adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    all.retain(|a| {
        a.get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
    });
    if let Ok(want) = std::env::var("WGPU_ADAPTER_NAME") {
        let want = want.to_lowercase();
        all.retain(|a| a.get_info().name.to_lowercase().contains(&want));
    }
    all.sort_by_key(|a| rank(a.get_info().device_type));
    all
}

/// Every compute-capable adapter wgpu sees, best first (for `bench devices`).
pub fn list_adapters() -> Vec<AdapterSummary> {
    adapters(&new_instance()).iter().map(AdapterSummary::of).collect()
}

/// Device and queue of one adapter, opened once per run. A clone shares the
/// device, queue and error sink (wgpu's handles are reference-counted), so
/// pass 2's ranking can hold one while the scorer holds the other.
#[derive(Clone)]
pub struct GpuContext {
    /// Kept alive with the device (wgpu ties the device to its instance).
    _instance: wgpu::Instance,
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) info: wgpu::AdapterInfo,
    pub(super) limits: wgpu::Limits,
    errors: Arc<Mutex<Vec<String>>>,
    /// Size of the uniform views the passes may bind (16–64 KiB).
    pub(super) ubo_bytes: u64,
}

impl fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .finish_non_exhaustive()
    }
}

/// Compute-capable adapters in preference order; with `allow_software =
/// false`, CPU adapters (lavapipe/llvmpipe, WARP, SwiftShader) are skipped.
pub(super) fn candidates(instance: &wgpu::Instance, allow_software: bool) -> Vec<wgpu::Adapter> {
    let mut found = adapters(instance);
    if !allow_software {
        found.retain(|a| a.get_info().device_type != wgpu::DeviceType::Cpu);
    }
    found
}

/// The error when no candidate opened.
pub(super) fn none_found(last_err: Option<anyhow::Error>, allow_software: bool) -> anyhow::Error {
    match last_err {
        Some(e) => e.context("no GPU adapter found (every candidate failed to open)"),
        None if allow_software => anyhow!("no GPU adapter found"),
        None => anyhow!("no GPU adapter found (software adapters were not considered)"),
    }
}

impl GpuContext {
    /// Open the best adapter. With `allow_software = false`, CPU adapters
    /// (lavapipe/llvmpipe, WARP, SwiftShader) are skipped.
    pub fn new(allow_software: bool) -> Result<GpuContext> {
        let instance = new_instance();
        let mut last_err = None;
        for adapter in candidates(&instance, allow_software) {
            match Self::open(&instance, adapter) {
                Ok(ctx) => return Ok(ctx),
                Err(e) => last_err = Some(e),
            }
        }
        Err(none_found(last_err, allow_software))
    }

    pub(super) fn open(instance: &wgpu::Instance, adapter: wgpu::Adapter) -> Result<GpuContext> {
        let info = adapter.get_info();
        let al = adapter.limits();
        ensure!(
            al.max_compute_invocations_per_workgroup >= WG && al.max_compute_workgroup_size_x >= WG,
            "{}: workgroups of {WG} invocations are not supported",
            info.name
        );
        ensure!(
            al.max_storage_buffers_per_shader_stage >= 3,
            "{}: too few storage buffers per stage",
            info.name
        );
        let mut req = wgpu::Limits::downlevel_defaults();
        req.max_storage_buffer_binding_size = al.max_storage_buffer_binding_size;
        req.max_buffer_size = al.max_buffer_size;
        req.max_compute_workgroups_per_dimension = al.max_compute_workgroups_per_dimension;
        req.max_compute_invocations_per_workgroup = WG;
        req.max_compute_workgroup_size_x = WG;
        req.max_uniform_buffer_binding_size = al.max_uniform_buffer_binding_size.clamp(16 << 10, 64 << 10);
        let ubo_bytes = req.max_uniform_buffer_binding_size & !15;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("bench scores"),
            required_features: wgpu::Features::empty(),
            required_limits: req.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .with_context(|| format!("{}: request_device failed", info.name))?;

        // Errors wgpu would otherwise panic on are collected and turned into
        // `Err` by the next call that checks.
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));

        Ok(GpuContext {
            _instance: instance.clone(),
            device,
            queue,
            info,
            limits: req,
            errors,
            ubo_bytes,
        })
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    /// The limits the device was opened with (the adapter's for buffer sizes
    /// and dispatch size).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// "adapter name (backend, device type)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {})",
            self.info.name,
            self.info.backend,
            device_type_name(self.info.device_type)
        )
    }

    /// The outcome of a `map_async` request (its callback's `rx`), after
    /// `poll(Wait)` on the submission it follows.
    ///
    /// Why not `rx.try_recv()` right after the wait: two threads poll the
    /// device at once in a sweep (the fused pass scoring image `i + 1`
    /// beside the device ranking of image `i`), and wgpu fires a ready
    /// callback on whichever thread's poll collected it, possibly a moment
    /// after the other thread's wait returned. The callback is then still
    /// to come, so this polls again until it has run (with a generous
    /// limit, so a lost callback is an error, not a hang). Seen on lavapipe
    /// under load as "staging buffer could not be re-mapped".
    pub fn await_map(&self, rx: &std::sync::mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>, what: &str) -> Result<()> {
        use std::sync::mpsc::TryRecvError;
        let start = std::time::Instant::now();
        loop {
            match rx.try_recv() {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => bail!("{what} could not be mapped: {e}"),
                Err(TryRecvError::Disconnected) => bail!("{what} could not be mapped (its request was dropped)"),
                Err(TryRecvError::Empty) if start.elapsed() > std::time::Duration::from_secs(60) => {
                    bail!("{what} could not be mapped: no answer from the GPU in 60 s")
                }
                Err(TryRecvError::Empty) => {
                    self.device.poll(wgpu::PollType::Poll).map_err(|e| anyhow!("waiting for the GPU: {e}"))?;
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Device errors collected since the last check, as one `Err`.
    pub fn take_error(&self) -> Result<()> {
        let mut v = self.errors.lock().map_err(|_| anyhow!("GPU error sink poisoned"))?;
        if v.is_empty() {
            return Ok(());
        }
        let msg = v.join("; ");
        v.clear();
        bail!("GPU error on {}: {msg}", self.info.name)
    }
}
