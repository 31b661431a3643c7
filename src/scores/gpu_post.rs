//! The WGSL twin of [`super::post`]: SML boundary suppression and dilated
//! smoothing as whole-image compute passes (`shaders/sml_post.wgsl`; HEAT's
//! spatial-consistency term, [`HeatPostGpu`], in `shaders/heat_post.wgsl`), run
//! after the fused pass has produced the full SML map and the predicted
//! classes (the fused pass is tiled; these passes need neighbours across
//! tile borders, so they work on the assembled image).
//!
//! Why the shape: one command buffer per map — boundary, then per
//! iteration expand + suppress (ping-pong between two f32 buffers), then
//! smooth — one submit, one read-back. Buffers are created per call: the
//! passes run once per image and their cost is the dispatches, not the
//! allocations. Errors (image larger than a binding, device errors) are
//! `Err`, never panics.

use super::gpu::GpuContext;
use super::post::{HeatPost, SmlPost};
use anyhow::{Result, anyhow, ensure};
use wgpu::util::DeviceExt;

const SHADER: &str = include_str!("../../shaders/sml_post.wgsl");
const WG: u32 = 16;

/// Uniform block of `sml_post.wgsl` (`struct PostParams`, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PostParams {
    h: u32,
    w: u32,
    r: i32,
    k: i32,
    dil: i32,
    half: i32,
    _p: [u32; 2],
}

/// Compiled pipelines of the four passes.
pub struct PostGpu {
    boundary: wgpu::ComputePipeline,
    expand: wgpu::ComputePipeline,
    suppress: wgpu::ComputePipeline,
    smooth: wgpu::ComputePipeline,
}

impl PostGpu {
    pub fn new(ctx: &GpuContext) -> Result<PostGpu> {
        let dev = ctx.device();
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("sml_post.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        ctx.take_error().map_err(|e| e.context("compiling shaders/sml_post.wgsl"))?;
        let pipe = |entry: &str| {
            dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let p = PostGpu {
            boundary: pipe("boundary"),
            expand: pipe("expand"),
            suppress: pipe("suppress"),
            smooth: pipe("gauss_smooth"),
        };
        ctx.take_error().map_err(|e| e.context("creating the SML post-processing pipelines"))?;
        Ok(p)
    }

    /// Post-process `map` (row-major `[h, w]`) in place, given the
    /// predicted class of every pixel. `max_binding` is the largest
    /// storage binding the scorer may create.
    pub fn run(&self, ctx: &GpuContext, map: &mut [f32], pred: &[u32], h: usize, w: usize, opt: &SmlPost, max_binding: u64) -> Result<()> {
        let n = h * w;
        ensure!(map.len() == n && pred.len() == n, "SML post-processing: map/prediction size mismatch");
        if n == 0 || !opt.active() {
            return Ok(());
        }
        opt.validate()?;
        let bytes = (n * 4) as u64;
        ensure!(
            bytes <= max_binding,
            "SML post-processing on the GPU: a {h}×{w} map ({bytes} bytes) exceeds the adapter's largest storage binding ({max_binding} bytes); use --device cpu"
        );
        let dev = ctx.device();
        use wgpu::BufferUsages as U;
        let init = |label: &str, data: &[u8], usage| {
            dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: data, usage })
        };
        let empty = |label: &str, usage| {
            dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false })
        };
        let pred_buf = init("sml_post pred", bytemuck::cast_slice(pred), U::STORAGE);
        let bnd = empty("sml_post boundary", U::STORAGE);
        let nb = empty("sml_post mask", U::STORAGE);
        let mut cur = init("sml_post map a", bytemuck::cast_slice(map), U::STORAGE | U::COPY_SRC);
        let mut other = empty("sml_post map b", U::STORAGE | U::COPY_SRC);
        let g: Vec<f32> = opt.gaussian().iter().map(|&v| v as f32).collect();
        let gw = init("sml_post gaussian", bytemuck::cast_slice(&g), U::STORAGE);
        let readback = empty("sml_post readback", U::MAP_READ | U::COPY_DST);
        let base = PostParams { h: h as u32, w: w as u32, ..Default::default() };

        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("sml_post") });
        let groups = ((w as u32).div_ceil(WG), (h as u32).div_ceil(WG));
        let max_dim = ctx.limits().max_compute_workgroups_per_dimension;
        ensure!(
            groups.0 <= max_dim && groups.1 <= max_dim,
            "SML post-processing on the GPU: a {h}×{w} map exceeds the dispatch limit; use --device cpu"
        );
        let mut dispatch = |pipe: &wgpu::ComputePipeline, q: PostParams, binds: &[(u32, &wgpu::Buffer)]| {
            let ub = init("sml_post params", bytemuck::bytes_of(&q), U::UNIFORM);
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: ub.as_entire_binding() }];
            entries.extend(binds.iter().map(|(b, buf)| wgpu::BindGroupEntry { binding: *b, resource: buf.as_entire_binding() }));
            let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("sml_post"),
                layout: &pipe.get_bind_group_layout(0),
                entries: &entries,
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("sml_post"), timestamp_writes: None });
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        };
        if opt.boundary_suppression {
            dispatch(&self.boundary, base, &[(1, &pred_buf), (3, &bnd)]);
            for r in opt.radii() {
                dispatch(&self.expand, PostParams { r: r as i32, ..base }, &[(1, &bnd), (3, &nb)]);
                dispatch(&self.suppress, base, &[(1, &nb), (2, &cur), (4, &other)]);
                std::mem::swap(&mut cur, &mut other);
            }
        }
        if opt.dilated_smoothing {
            let k = opt.kernel_size as i32;
            let q = PostParams { k, dil: opt.dilation as i32, half: (k - 1) / 2, ..base };
            dispatch(&self.smooth, q, &[(2, &cur), (4, &other), (5, &gw)]);
            std::mem::swap(&mut cur, &mut other);
        }
        enc.copy_buffer_to_buffer(&cur, 0, &readback, 0, bytes);
        submit_and_read(ctx, enc, &readback, map, "SML post-processing")
    }
}

/// Submit `enc` (which ends by copying the result into `readback`), wait,
/// and copy the read-back into `map`.
fn submit_and_read(ctx: &GpuContext, enc: wgpu::CommandEncoder, readback: &wgpu::Buffer, map: &mut [f32], what: &str) -> Result<()> {
    let sub = ctx.queue().submit([enc.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    readback.slice(..).map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.device()
        .poll(wgpu::PollType::Wait { submission_index: Some(sub), timeout: None })
        .map_err(|e| anyhow!("waiting for the GPU: {e}"))?;
    ctx.take_error()?;
    match rx.try_recv() {
        Ok(Ok(())) => {}
        _ => return Err(anyhow!("{what}: read-back buffer could not be mapped")),
    }
    {
        let view = readback.slice(..).get_mapped_range().map_err(|e| anyhow!("GPU read-back: {e:?}"))?;
        bytemuck::cast_slice_mut::<f32, u8>(map).copy_from_slice(&view);
    }
    readback.unmap();
    Ok(())
}

const HEAT_SHADER: &str = include_str!("../../shaders/heat_post.wgsl");

/// Uniform block of `heat_post.wgsl` (`struct SpatialParams`, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SpatialParams {
    h: u32,
    w: u32,
    r: i32,
    lam: f32,
}

/// HEAT's spatial-consistency term on the GPU (`shaders/heat_post.wgsl`):
/// two separable whole-image passes (clipped row sums, then column sums of
/// those, divided by the in-image count and blended with the map), one
/// submit, one read-back per map; the WGSL twin of
/// [`super::post::apply_heat_cpu`].
pub struct HeatPostGpu {
    row_sums: wgpu::ComputePipeline,
    blend: wgpu::ComputePipeline,
}

impl HeatPostGpu {
    pub fn new(ctx: &GpuContext) -> Result<HeatPostGpu> {
        let dev = ctx.device();
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("heat_post.wgsl"),
            source: wgpu::ShaderSource::Wgsl(HEAT_SHADER.into()),
        });
        ctx.take_error().map_err(|e| e.context("compiling shaders/heat_post.wgsl"))?;
        let pipe = |entry: &str| {
            dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let p = HeatPostGpu { row_sums: pipe("row_sums"), blend: pipe("blend") };
        ctx.take_error().map_err(|e| e.context("creating the HEAT spatial-consistency pipelines"))?;
        Ok(p)
    }

    /// Apply the term to `map` (row-major `[h, w]`) in place; a no-op when
    /// it is off. `max_binding` is the largest storage binding the scorer
    /// may create.
    pub fn run(&self, ctx: &GpuContext, map: &mut [f32], h: usize, w: usize, opt: &HeatPost, max_binding: u64) -> Result<()> {
        let n = h * w;
        ensure!(map.len() == n, "HEAT spatial consistency: map size mismatch");
        if n == 0 || !opt.active() {
            return Ok(());
        }
        opt.validate()?;
        let bytes = (n * 4) as u64;
        ensure!(
            bytes <= max_binding,
            "HEAT spatial consistency on the GPU: a {h}×{w} map ({bytes} bytes) exceeds the adapter's largest storage binding ({max_binding} bytes); use --device cpu"
        );
        let groups = ((w as u32).div_ceil(WG), (h as u32).div_ceil(WG));
        let max_dim = ctx.limits().max_compute_workgroups_per_dimension;
        ensure!(
            groups.0 <= max_dim && groups.1 <= max_dim,
            "HEAT spatial consistency on the GPU: a {h}×{w} map exceeds the dispatch limit; use --device cpu"
        );
        let dev = ctx.device();
        use wgpu::BufferUsages as U;
        let init = |label: &str, data: &[u8], usage| {
            dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: data, usage })
        };
        let empty = |label: &str, usage| {
            dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false })
        };
        let src = init("heat_post map", bytemuck::cast_slice(map), U::STORAGE);
        let rows = empty("heat_post row sums", U::STORAGE);
        let out = empty("heat_post out", U::STORAGE | U::COPY_SRC);
        let readback = empty("heat_post readback", U::MAP_READ | U::COPY_DST);
        let q = SpatialParams { h: h as u32, w: w as u32, r: (opt.spatial_window / 2) as i32, lam: opt.spatial_weight as f32 };
        let ub = init("heat_post params", bytemuck::bytes_of(&q), U::UNIFORM);
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("heat_post") });
        for (pipe, binds) in [(&self.row_sums, [(1, &src), (3, &rows)].as_slice()), (&self.blend, [(1, &src), (2, &rows), (3, &out)].as_slice())] {
            let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: ub.as_entire_binding() }];
            entries.extend(binds.iter().map(|(b, buf)| wgpu::BindGroupEntry { binding: *b, resource: buf.as_entire_binding() }));
            let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("heat_post"),
                layout: &pipe.get_bind_group_layout(0),
                entries: &entries,
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("heat_post"), timestamp_writes: None });
            pass.set_pipeline(pipe);
            pass.set_bind_group(0, &bg, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, 1);
        }
        enc.copy_buffer_to_buffer(&out, 0, &readback, 0, bytes);
        submit_and_read(ctx, enc, &readback, map, "HEAT spatial consistency")
    }
}
