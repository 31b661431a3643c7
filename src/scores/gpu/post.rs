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

use super::context::GpuContext;
use crate::scores::ScorePlan;
use crate::scores::post::{HeatPost, SmlPost};
use anyhow::{Result, anyhow, ensure};
use wgpu::util::DeviceExt;

const SHADER: &str = include_str!("../../../shaders/sml_post.wgsl");
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
        let [boundary, expand, suppress, smooth] =
            pipelines(ctx, "sml_post.wgsl", SHADER, "the SML post-processing pipelines", ["boundary", "expand", "suppress", "gauss_smooth"])?;
        Ok(PostGpu { boundary, expand, suppress, smooth })
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
        let (bytes, groups) = whole_image(ctx, h, w, max_binding, "SML post-processing")?;
        let dev = ctx.device();
        use wgpu::BufferUsages as U;
        let pred_buf = init(dev, "sml_post pred", bytemuck::cast_slice(pred), U::STORAGE);
        let bnd = empty(dev, "sml_post boundary", bytes, U::STORAGE);
        let nb = empty(dev, "sml_post mask", bytes, U::STORAGE);
        let mut cur = init(dev, "sml_post map a", bytemuck::cast_slice(map), U::STORAGE | U::COPY_SRC);
        let mut other = empty(dev, "sml_post map b", bytes, U::STORAGE | U::COPY_SRC);
        let g: Vec<f32> = opt.gaussian().iter().map(|&v| v as f32).collect();
        let gw = init(dev, "sml_post gaussian", bytemuck::cast_slice(&g), U::STORAGE);
        let readback = empty(dev, "sml_post readback", bytes, U::MAP_READ | U::COPY_DST);
        let base = PostParams { h: h as u32, w: w as u32, ..Default::default() };

        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("sml_post") });
        let mut dispatch = |pipe: &wgpu::ComputePipeline, q: PostParams, binds: &[(u32, &wgpu::Buffer)]| {
            let ub = init(dev, "sml_post params", bytemuck::bytes_of(&q), U::UNIFORM);
            record(dev, &mut enc, pipe, &ub, binds, groups, "sml_post");
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

/// Compile `shaders/<file>` and create the compute pipelines of `entries`
/// (`what` names them in errors).
fn pipelines<const K: usize>(ctx: &GpuContext, file: &str, source: &str, what: &str, entries: [&str; K]) -> Result<[wgpu::ComputePipeline; K]> {
    let dev = ctx.device();
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(file), source: wgpu::ShaderSource::Wgsl(source.into()) });
    ctx.take_error().map_err(|e| e.context(format!("compiling shaders/{file}")))?;
    let p = entries.map(|entry| {
        dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        })
    });
    ctx.take_error().map_err(|e| e.context(format!("creating {what}")))?;
    Ok(p)
}

/// What every whole-image pass needs checked before it allocates: the
/// `h×w` f32 map fits one storage binding and its `WG×WG` 2-D dispatch
/// fits the workgroup-count limit. Returns (map bytes, workgroups).
fn whole_image(ctx: &GpuContext, h: usize, w: usize, max_binding: u64, what: &str) -> Result<(u64, (u32, u32))> {
    let bytes = (h * w * 4) as u64;
    ensure!(
        bytes <= max_binding,
        "{what} on the GPU: a {h}×{w} map ({bytes} bytes) exceeds the adapter's largest storage binding ({max_binding} bytes); use --device cpu"
    );
    let groups = ((w as u32).div_ceil(WG), (h as u32).div_ceil(WG));
    let max_dim = ctx.limits().max_compute_workgroups_per_dimension;
    ensure!(groups.0 <= max_dim && groups.1 <= max_dim, "{what} on the GPU: a {h}×{w} map exceeds the dispatch limit; use --device cpu");
    Ok((bytes, groups))
}

fn init(dev: &wgpu::Device, label: &str, data: &[u8], usage: wgpu::BufferUsages) -> wgpu::Buffer {
    dev.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(label), contents: data, usage })
}

fn empty(dev: &wgpu::Device, label: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
    dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
}

/// Record one pass of `pipe` over `groups`: the uniform `params` at binding
/// 0, each `(binding, buffer)` of `binds` at its slot.
fn record(
    dev: &wgpu::Device,
    enc: &mut wgpu::CommandEncoder,
    pipe: &wgpu::ComputePipeline,
    params: &wgpu::Buffer,
    binds: &[(u32, &wgpu::Buffer)],
    groups: (u32, u32),
    label: &str,
) {
    let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() }];
    entries.extend(binds.iter().map(|(b, buf)| wgpu::BindGroupEntry { binding: *b, resource: buf.as_entire_binding() }));
    let bg = dev.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout: &pipe.get_bind_group_layout(0), entries: &entries });
    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
    pass.set_pipeline(pipe);
    pass.set_bind_group(0, &bg, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, 1);
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
    ctx.await_map(&rx, &format!("{what}: read-back buffer"))?;
    {
        let view = readback.slice(..).get_mapped_range().map_err(|e| anyhow!("GPU read-back: {e:?}"))?;
        bytemuck::cast_slice_mut::<f32, u8>(map).copy_from_slice(&view);
    }
    readback.unmap();
    Ok(())
}

const HEAT_SHADER: &str = include_str!("../../../shaders/heat_post.wgsl");

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
        let [row_sums, blend] = pipelines(ctx, "heat_post.wgsl", HEAT_SHADER, "the HEAT spatial-consistency pipelines", ["row_sums", "blend"])?;
        Ok(HeatPostGpu { row_sums, blend })
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
        let (bytes, groups) = whole_image(ctx, h, w, max_binding, "HEAT spatial consistency")?;
        let dev = ctx.device();
        use wgpu::BufferUsages as U;
        let src = init(dev, "heat_post map", bytemuck::cast_slice(map), U::STORAGE);
        let rows = empty(dev, "heat_post row sums", bytes, U::STORAGE);
        let out = empty(dev, "heat_post out", bytes, U::STORAGE | U::COPY_SRC);
        let readback = empty(dev, "heat_post readback", bytes, U::MAP_READ | U::COPY_DST);
        let q = SpatialParams { h: h as u32, w: w as u32, r: (opt.spatial_window / 2) as i32, lam: opt.spatial_weight as f32 };
        let ub = init(dev, "heat_post params", bytemuck::bytes_of(&q), U::UNIFORM);
        let mut enc = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("heat_post") });
        record(dev, &mut enc, &self.row_sums, &ub, &[(1, &src), (3, &rows)], groups, "heat_post");
        record(dev, &mut enc, &self.blend, &ub, &[(1, &src), (2, &rows), (3, &out)], groups, "heat_post");
        enc.copy_buffer_to_buffer(&out, 0, &readback, 0, bytes);
        submit_and_read(ctx, enc, &readback, map, "HEAT spatial consistency")
    }
}

/// The whole-image passes of one scorer, each compiled on first use.
#[derive(Default)]
pub struct PostPasses {
    sml: Option<PostGpu>,
    heat: Option<HeatPostGpu>,
}

/// The image a post-processing pass runs on: its predicted classes (zeros
/// when no hook reads them), its size, and the largest storage binding the
/// scorer may create.
pub struct Image<'a> {
    pub pred: &'a [u32],
    pub h: usize,
    pub w: usize,
    pub max_binding: u64,
}

/// A method's GPU post-processing (`scores::Post::gpu`), in place.
pub type GpuPostFn = fn(&mut PostPasses, &GpuContext, &mut [f32], &Image, &ScorePlan) -> Result<()>;

/// SML's GPU hook (twin of `scores::post::sml_cpu`).
pub fn sml_gpu(passes: &mut PostPasses, ctx: &GpuContext, map: &mut [f32], img: &Image, plan: &ScorePlan) -> Result<()> {
    if passes.sml.is_none() {
        passes.sml = Some(PostGpu::new(ctx)?);
    }
    passes.sml.as_ref().expect("compiled").run(ctx, map, img.pred, img.h, img.w, &plan.sml_post, img.max_binding)
}

/// HEAT's GPU hook (twin of `scores::post::heat_cpu`).
pub fn heat_gpu(passes: &mut PostPasses, ctx: &GpuContext, map: &mut [f32], img: &Image, plan: &ScorePlan) -> Result<()> {
    if passes.heat.is_none() {
        passes.heat = Some(HeatPostGpu::new(ctx)?);
    }
    passes.heat.as_ref().expect("compiled").run(ctx, map, img.h, img.w, &plan.heat_post, img.max_binding)
}
