//! The fused pass: every requested score of an image in one WGSL compute
//! pass (`shaders/scores.wgsl`), tested against [`crate::scores::cpu`].
//!
//! Why it is shaped this way:
//! - [`FusedPass`] owns the pass's bind-group layout and compiled pipelines
//!   (the device is borrowed from [`GpuContext`]); it is created once per
//!   run and reused for every image. Pipelines are specialised (WGSL `override`s) by logit dtype, by
//!   whether HEAT is compiled in (and the size of its private array), by the
//!   number of distinct softmax temperatures and by C (constant loop bounds
//!   unroll), and cached: a sweep over one model compiles one or two.
//! - Calibration statistics live in one `aux` buffer, uploaded only when
//!   they change. HEAT's whitening matrix (lower triangle, packed) and
//!   centers are read through a uniform-buffer view of it when they fit
//!   (64 KiB: up to about C = 100), else as a storage buffer.
//! - Logits are class-major `[C, H, W]`, so a pixel tile `[p0, p1)` is C
//!   strided rows. Each tile is packed into a compact `[C, tile]` staging
//!   buffer (C memcpys into one mapped buffer, one GPU copy), sized so that
//!   no binding exceeds `max_storage_buffer_binding_size` / `max_buffer_size`
//!   and no dispatch exceeds `max_compute_workgroups_per_dimension` (2-D
//!   dispatch). float16 stays float16 on the way up: the raw bits are
//!   uploaded and the shader decodes them with `unpack2x16float`.
//! - Two tile slots alternate, so packing tile i+1 on the CPU overlaps the
//!   GPU work of tile i; each tile costs one submit and one poll (which both
//!   maps its read-back and re-maps its staging buffer). Buffers only grow.
//! - Nothing here panics on user input: bad shapes, missing calibration, C
//!   too large for HEAT, device errors — all come back as `Err`.

use super::context::{GpuContext, WG, candidates, new_instance, none_found};
use super::pack::{MAX_LOGIT_ARRAY, MAX_SLOTS, Pack, Params};
use super::post::{Image, PostPasses};
use crate::scores::{LogitData, Logits, Method, ScoreMaps, ScorePlan, Scorer};
use anyhow::{Context, Result, anyhow, ensure};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::mpsc::{Receiver, channel};

/// The fused pass's skeleton (bindings, `Params`, `Px`, `main`).
const SKELETON: &str = include_str!("../../../shaders/scores.wgsl");
/// One WGSL function per built-in method.
const METHODS_WGSL: &str = include_str!("../../../shaders/methods.wgsl");
/// The line of `main` replaced by the generated per-method dispatch.
const DISPATCH_LINE: &str = "//@DISPATCH@";
/// The line of the shader the host rewrites to size the private logit array.
const MAX_C_LINE: &str = "const MAX_C: u32 = 256u;";
const _: () = assert!(Method::ALL.len() <= MAX_SLOTS);

/// The per-method dispatch of `main`, generated from the [`Method`] table:
/// each method's function is evaluated under a uniform gate (its mask bit,
/// and LOGITS when it needs the private logit array) and stored by live
/// invocations only.
fn dispatch_wgsl() -> String {
    let mut out = String::new();
    // A method that overwrites the private logit array (HEAT whitens it in
    // place) runs after every other method that reads the logits.
    let clobbers = |m: &&Method| m.spec().needs.clobbers;
    let order = Method::ALL.iter().filter(|m| !clobbers(m)).chain(Method::ALL.iter().filter(clobbers));
    for &m in order {
        let sp = m.spec();
        let slot = m.slot();
        let gate = if sp.needs.logits {
            format!("LOGITS && (P.mask & {}u) != 0u", 1u32 << slot)
        } else {
            format!("(P.mask & {}u) != 0u", 1u32 << slot)
        };
        out.push_str(&format!(
            "    // {id}\n    if ({gate}) {{\n        let v_{id} = {f}(with_method(px, {slot}u), &z);\n        if (live) {{\n            scores[out_row({slot}u) * n + i] = v_{id};\n        }}\n    }}\n",
            id = sp.id,
            f = sp.wgsl,
        ));
    }
    out
}

/// The complete WGSL module: skeleton + method functions + generated
/// dispatch, with the private-array and uniform-view sizes filled in.
pub fn shader_source(max_c: u32, auxu_vec4: u64) -> Result<String> {
    ensure!(
        SKELETON.contains(MAX_C_LINE) && SKELETON.contains(AUXU_LINE) && SKELETON.contains(DISPATCH_LINE),
        "scores.wgsl lost its MAX_C / AUXU_VEC4 / dispatch line"
    );
    for &m in Method::ALL {
        let sig = format!("fn {}(px: Px, z: ptr<function, array<f32, MAX_C>>) -> f32", m.spec().wgsl);
        ensure!(METHODS_WGSL.contains(&sig), "shaders/methods.wgsl has no `{sig}` for method {}", m.id());
    }
    Ok(format!(
        "{}\n{}",
        SKELETON
            .replace(MAX_C_LINE, &format!("const MAX_C: u32 = {max_c}u;"))
            .replace(AUXU_LINE, &format!("const AUXU_VEC4: u32 = {auxu_vec4}u;"))
            .replace(DISPATCH_LINE, dispatch_wgsl().trim_start()),
        METHODS_WGSL
    ))
}
/// Default cap on one tile's logit bytes: small enough that two slots
/// pipeline (pack tile i+1 while tile i runs), large enough that per-tile
/// overhead is noise.
pub const DEFAULT_TILE_BYTES: u64 = 32 << 20;

/// Pipeline variant (the WGSL `override`s and the private-array size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PipelineKey {
    /// logits are raw f16 bits
    f16: bool,
    /// private logit array capacity (32/64/128/256), 0 = no method needs it
    logits_cap: u32,
    /// accumulate `xs` (entropy)
    xs: bool,
    /// distinct temperatures needing a Σ exp (0..=3)
    nt: u32,
    /// class count baked in (0 = dynamic)
    ncls: u32,
    /// HEAT parameters read through the uniform view of `aux`
    aux_ubo: bool,
}
/// The line of the shader the host rewrites to the uniform view's size.
const AUXU_LINE: &str = "const AUXU_VEC4: u32 = 4096u;";

/// The fused pass's bind-group layout and its pipeline cache.
pub struct FusedPass {
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: HashMap<u32, wgpu::ShaderModule>,
    pipelines: HashMap<PipelineKey, wgpu::ComputePipeline>,
}

impl FusedPass {
    /// Create the layout and compile the common variant now, so a broken
    /// driver fails at adapter selection, not in the middle of a sweep.
    pub fn new(ctx: &GpuContext) -> Result<FusedPass> {
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = ctx.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("scores"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                    },
                    count: None,
                },
                storage(1, true),
                storage(2, true),
                storage(3, false),
                wgpu::BindGroupLayoutEntry {
                    binding: 4,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(ctx.ubo_bytes),
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = ctx.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("scores"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let mut pass = FusedPass { layout, pipeline_layout, modules: HashMap::new(), pipelines: HashMap::new() };
        pass.pipeline(
            ctx,
            PipelineKey {
                f16: false,
                logits_cap: 0,
                xs: false,
                nt: 1,
                ncls: 0,
                aux_ubo: false,
            },
        )?;
        Ok(pass)
    }

    fn pipeline(&mut self, ctx: &GpuContext, key: PipelineKey) -> Result<&wgpu::ComputePipeline> {
        if !self.pipelines.contains_key(&key) {
            let PipelineKey {
                f16,
                logits_cap,
                xs,
                nt,
                ncls,
                aux_ubo,
            } = key;
            let cap = if logits_cap == 0 { 4 } else { logits_cap };
            if !self.modules.contains_key(&cap) {
                let src = shader_source(cap, ctx.ubo_bytes / 16)?;
                let module = ctx.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("scores.wgsl"),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                });
                ctx.take_error().context("compiling shaders/scores.wgsl")?;
                self.modules.insert(cap, module);
            }
            let module = &self.modules[&cap];
            let constants = [
                ("F16", if f16 { 1.0 } else { 0.0 }),
                ("LOGITS", if logits_cap > 0 { 1.0 } else { 0.0 }),
                ("XS", if xs { 1.0 } else { 0.0 }),
                ("NT", nt as f64),
                ("NCLS", ncls as f64),
                ("AUX_UBO", if aux_ubo { 1.0 } else { 0.0 }),
            ];
            let p = ctx.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("scores"),
                layout: Some(&self.pipeline_layout),
                module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
            ctx.take_error().context("creating the scores pipeline")?;
            self.pipelines.insert(key, p);
        }
        Ok(&self.pipelines[&key])
    }
}


/// Everything derived from a plan and the image's class count.
#[derive(Debug)]
struct Prepared {
    params: Params,
    aux: Vec<f32>,
    /// private logit array capacity, 0 = none
    key_logits: u32,
    xs: bool,
    nt: u32,
    /// Output row per plan entry (duplicates in `plan.methods` share a row),
    /// then the predicted-class row when SML boundary suppression needs it.
    row_of: Vec<usize>,
    rows: usize,
}

/// Output rows of a plan: one per distinct method (duplicates share it),
/// as `(row per slot or u32::MAX, rows, row per plan entry, slot mask)`.
fn assign_rows(plan: &ScorePlan) -> ([u32; MAX_SLOTS], usize, Vec<usize>, u32) {
    let mut rows_slot = [u32::MAX; MAX_SLOTS];
    let mut rows = 0usize;
    let mut row_of = Vec::with_capacity(plan.methods.len());
    let mut mask = 0u32;
    for &m in &plan.methods {
        let s = m.slot();
        if rows_slot[s] == u32::MAX {
            rows_slot[s] = rows as u32;
            rows += 1;
            mask |= 1 << s;
        }
        row_of.push(rows_slot[s] as usize);
    }
    (rows_slot, rows, row_of, mask)
}

/// The distinct softmax temperatures of the wanted methods, in slot order:
/// each method's entry (`ti`) and temperature (`t`) in `p`, `inv_t` filled;
/// returns how many there are and whether `xs` (entropy) is accumulated.
fn temperatures(plan: &ScorePlan, wanted: &[Method], p: &mut Params) -> Result<(u32, bool)> {
    let mut temps: Vec<f64> = Vec::new();
    let mut xs = false;
    for &m in wanted {
        let sp = m.spec();
        if let Some(t) = m.temperature(plan) {
            ensure!(t.is_finite() && t > 0.0, "{} temperature must be finite and > 0 (got {t})", sp.id);
            let inv = (1.0 / t) as f32;
            ensure!(inv.is_finite() && inv > 0.0 && (t as f32).is_finite(), "{} temperature {t} is outside the f32 range", sp.id);
            let i = temps.iter().position(|&x| x == t).unwrap_or_else(|| {
                temps.push(t);
                temps.len() - 1
            });
            p.ti[m.slot()] = i as u32;
            p.t[m.slot()] = t as f32;
        }
        if sp.needs.xlogx {
            ensure!(m.temperature(plan) == Some(1.0), "{}: xs is accumulated at T = 1 only", sp.id);
            p.t1i = p.ti[m.slot()];
            xs = true;
        }
    }
    for (i, t) in temps.iter().enumerate() {
        p.inv_t[i] = (1.0 / t) as f32;
    }
    Ok((temps.len() as u32, xs))
}

/// The plan for `c` classes as the shader sees it: rows, temperatures, the
/// predicted-class row when a post-processing hook reads it, and every
/// wanted method's fitted statistics packed by its own packer.
fn prepare(plan: &ScorePlan, c: usize) -> Result<Prepared> {
    ensure!(c >= 1, "logits have no classes");
    let (rows_slot, mut rows, mut row_of, mask) = assign_rows(plan);
    let wanted: Vec<Method> = Method::ALL.iter().copied().filter(|m| mask & (1 << m.slot()) != 0).collect();
    let mut pack = Pack { params: Params { c: c as u32, mask, ..Default::default() }, ..Default::default() };
    for (s, r) in rows_slot.iter().enumerate() {
        pack.params.rows[s] = if *r == u32::MAX { 0 } else { *r };
    }
    let (nt, xs) = temperatures(plan, &wanted, &mut pack.params)?;
    super::pack::pack_params(plan, c, &mut pack.params);
    for &m in &wanted {
        if m.spec().needs.logits {
            ensure!(
                c <= MAX_LOGIT_ARRAY,
                "{} on the GPU supports at most {MAX_LOGIT_ARRAY} classes (logits have {c}); use --device cpu",
                m.id()
            );
            pack.private_len = pack.private_len.max(c);
        }
    }
    // Post-processing that reads the class map of the whole image gets an extra row.
    pack.params.pred_row = u32::MAX;
    if plan.needs_pred() {
        ensure!(c <= 1 << 24, "the predicted-class map on the GPU supports at most 2^24 classes");
        pack.params.pred_row = rows as u32;
        row_of.push(rows);
        rows += 1;
    }
    for &m in &wanted {
        if let Some(fit) = m.spec().fit {
            let cal = plan.calibration.as_ref().context("SML/HEAT/KL matching requested without calibration statistics")?;
            (fit.check)(cal, c)?;
            (fit.gpu_pack)(cal, c, &mut pack)?;
        }
    }
    // whole vec4s for the uniform view
    pack.aux.resize(pack.aux.len().div_ceil(4).max(1) * 4, 0.0);
    let key_logits = match pack.private_len {
        0 => 0,
        n => [32u32, 64, 128, 256].into_iter().find(|&cap| n <= cap as usize).unwrap_or(256),
    };
    Ok(Prepared { params: pack.params, aux: pack.aux, key_logits, xs, nt, row_of, rows })
}

/// One in-flight tile.
struct Pending {
    p0: usize,
    len: usize,
    out_bytes: u64,
    submission: wgpu::SubmissionIndex,
    staged: Receiver<Result<(), wgpu::BufferAsyncError>>,
    read: Receiver<Result<(), wgpu::BufferAsyncError>>,
}

/// Buffers of one of the two alternating tile slots.
struct Slot {
    staging: wgpu::Buffer,
    /// Whether `staging` is mapped (idle) and can be written.
    staging_mapped: bool,
    input: wgpu::Buffer,
    output: wgpu::Buffer,
    readback: wgpu::Buffer,
    params: wgpu::Buffer,
    bind: wgpu::BindGroup,
    bind_aux_gen: u64,
    pending: Option<Pending>,
}

/// The GPU scorer: one fused WGSL pass per pixel tile.
pub struct GpuScorer {
    ctx: GpuContext,
    fused: FusedPass,
    slots: Vec<Slot>,
    aux: Option<(wgpu::Buffer, Vec<f32>)>,
    aux_gen: u64,
    max_binding: u64,
    tile_bytes: u64,
    /// The methods' whole-image post-processing passes, compiled on first use.
    post: PostPasses,
}

impl fmt::Debug for GpuScorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuScorer")
            .field("device", &self.ctx.describe())
            .finish_non_exhaustive()
    }
}

impl GpuScorer {
    /// Open the best adapter ("no GPU adapter found" when there is none).
    /// `allow_software = false` skips CPU adapters such as lavapipe.
    pub fn new(allow_software: bool) -> Result<GpuScorer> {
        let instance = new_instance();
        let mut last_err = None;
        for adapter in candidates(&instance, allow_software) {
            match GpuContext::open(&instance, adapter).and_then(Self::from_context) {
                Ok(s) => return Ok(s),
                Err(e) => last_err = Some(e),
            }
        }
        Err(none_found(last_err, allow_software))
    }

    /// The scorer on an opened device (compiles the fused pass's common
    /// variant: a broken driver fails here).
    pub fn from_context(ctx: GpuContext) -> Result<GpuScorer> {
        let fused = FusedPass::new(&ctx)?;
        let l = ctx.limits();
        let max_binding = l.max_storage_buffer_binding_size.min(l.max_buffer_size).min(1 << 31);
        Ok(GpuScorer {
            ctx,
            fused,
            slots: Vec::new(),
            aux: None,
            aux_gen: 0,
            max_binding,
            tile_bytes: DEFAULT_TILE_BYTES,
            post: PostPasses::default(),
        })
    }

    /// Test hook: pretend the adapter's largest binding is `bytes` (≥ 16),
    /// forcing many small tiles. Results must not change.
    pub fn with_max_binding(mut self, bytes: u64) -> GpuScorer {
        self.max_binding = self.max_binding.min(bytes.max(16)) & !3;
        self.slots.clear();
        self
    }

    /// Cap on one tile's logit bytes (default [`DEFAULT_TILE_BYTES`]).
    pub fn with_tile_bytes(mut self, bytes: u64) -> GpuScorer {
        self.tile_bytes = bytes.max(16);
        self
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Largest binding this scorer will create (adapter limit or test cap).
    pub fn max_binding(&self) -> u64 {
        self.max_binding
    }

    fn upload_aux(&mut self, aux: &[f32]) {
        let bits = |v: &[f32]| bytemuck::cast_slice::<f32, u32>(v).to_vec();
        if matches!(&self.aux, Some((_, cur)) if bits(cur) == bits(aux)) {
            return; // same calibration as the previous image
        }
        let bytes = (aux.len() * 4) as u64;
        let reuse = matches!(&self.aux, Some((buf, _)) if buf.size() >= bytes);
        if !reuse {
            let buf = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("scores aux"),
                size: bytes.next_power_of_two().max(self.ctx.ubo_bytes),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.aux = Some((buf, Vec::new()));
            self.aux_gen += 1;
        }
        let (buf, cur) = self.aux.as_mut().unwrap();
        self.ctx.queue.write_buffer(buf, 0, bytemuck::cast_slice(aux));
        *cur = aux.to_vec();
    }

    /// Make slot `s` hold at least `in_bytes` of logits and `out_bytes` of scores.
    fn ensure_slot(&mut self, s: usize, in_bytes: u64, out_bytes: u64) {
        let dev = &self.ctx.device;
        let fits = self
            .slots
            .get(s)
            .is_some_and(|sl| sl.input.size() >= in_bytes && sl.output.size() >= out_bytes && sl.staging_mapped);
        let aux_buf = &self.aux.as_ref().expect("aux uploaded first").0;
        if !fits {
            // grow only (both sizes are within max_binding by construction)
            let old = self.slots.get(s);
            let in_sz = in_bytes.max(old.map_or(0, |o| o.input.size()));
            let out_sz = out_bytes.max(old.map_or(0, |o| o.output.size()));
            let buf = |label, size, usage, mapped| {
                dev.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size,
                    usage,
                    mapped_at_creation: mapped,
                })
            };
            use wgpu::BufferUsages as U;
            let staging = buf("scores staging", in_sz, U::MAP_WRITE | U::COPY_SRC, true);
            let input = buf("scores logits", in_sz, U::STORAGE | U::COPY_DST, false);
            let output = buf("scores out", out_sz, U::STORAGE | U::COPY_SRC, false);
            let readback = buf("scores readback", out_sz, U::MAP_READ | U::COPY_DST, false);
            let params = buf(
                "scores params",
                std::mem::size_of::<Params>() as u64,
                U::UNIFORM | U::COPY_DST,
                false,
            );
            let bind = make_bind(
                dev,
                &self.fused.layout,
                &params,
                &input,
                aux_buf,
                &output,
                self.ctx.ubo_bytes,
            );
            let slot = Slot {
                staging,
                staging_mapped: true,
                input,
                output,
                readback,
                params,
                bind,
                bind_aux_gen: self.aux_gen,
                pending: None,
            };
            if s < self.slots.len() {
                self.slots[s] = slot;
            } else {
                self.slots.push(slot);
            }
        } else if self.slots[s].bind_aux_gen != self.aux_gen {
            let sl = &mut self.slots[s];
            sl.bind = make_bind(
                dev,
                &self.fused.layout,
                &sl.params,
                &sl.input,
                aux_buf,
                &sl.output,
                self.ctx.ubo_bytes,
            );
            sl.bind_aux_gen = self.aux_gen;
        }
    }

    /// Wait for slot `s`'s tile and copy its scores into `maps`.
    fn harvest(&mut self, s: usize, row_of: &[usize], maps: &mut [Vec<f32>]) -> Result<()> {
        let Some(p) = self.slots[s].pending.take() else {
            return Ok(());
        };
        self.ctx
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(p.submission),
                timeout: None,
            })
            .map_err(|e| anyhow!("waiting for the GPU: {e}"))?;
        self.ctx.take_error()?;
        self.ctx.await_map(&p.staged, "GPU staging buffer")?;
        self.ctx.await_map(&p.read, "GPU read-back buffer")?;
        let sl = &mut self.slots[s];
        sl.staging_mapped = true;
        {
            let view = sl
                .readback
                .slice(0..p.out_bytes)
                .get_mapped_range()
                .map_err(|e| anyhow!("GPU read-back: {e:?}"))?;
            let row_bytes = p.len * 4;
            for (map, &r) in maps.iter_mut().zip(row_of) {
                let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut map[p.p0..p.p0 + p.len]);
                dst.copy_from_slice(&view[r * row_bytes..(r + 1) * row_bytes]);
            }
        }
        sl.readback.unmap();
        Ok(())
    }

    fn score_inner(&mut self, logits: &Logits, features: Option<&Logits>, plan: &ScorePlan, maps: &mut [Vec<f32>]) -> Result<()> {
        let c = logits.c;
        let n = logits.pixels();
        let src = Source::new(logits, features)?;
        let prep = prepare(plan, c)?;
        if n == 0 || prep.rows == 0 {
            return Ok(());
        }
        let key = PipelineKey {
            f16: src.f16,
            logits_cap: prep.key_logits,
            xs: prep.xs,
            nt: prep.nt,
            // C baked in: constant loop bounds let the driver unroll the
            // class loops (and keep HEAT's array in registers for small C).
            // One model has one C, so this adds no variants in a sweep.
            ncls: c as u32,
            aux_ubo: prep.key_logits > 0 && (prep.aux.len() * 4) as u64 <= self.ctx.ubo_bytes,
        };
        self.fused.pipeline(&self.ctx, key)?;
        self.upload_aux(&prep.aux);
        let tile = self.tile_len(&src, prep.rows)?;
        let mut t = 0usize;
        let mut p0 = 0usize;
        while p0 < n {
            let len = tile.min(n - p0);
            let s = t % 2;
            if s < self.slots.len() {
                self.harvest(s, &prep.row_of, maps)?;
            }
            self.submit(s, key, &src, &prep, p0, len)?;
            p0 += len;
            t += 1;
        }
        // drain in submission order
        for k in 0..2 {
            let s = (t + k) % 2;
            if s < self.slots.len() {
                self.harvest(s, &prep.row_of, maps)?;
            }
        }
        Ok(())
    }

    /// Pixels per tile: a tile's logits (and features) and its scores each
    /// fit one binding and the tile budget, and its 2-D dispatch the
    /// adapter's workgroup limits.
    fn tile_len(&self, src: &Source, rows: usize) -> Result<usize> {
        let mb = self.max_binding;
        let per_px_in = ((src.c + src.fd) * src.eb) as u64;
        let per_px_out = (rows * 4) as u64;
        let budget = self.tile_bytes.min(mb);
        let mut tile = (budget / per_px_in).min(mb / per_px_out).min(src.n as u64);
        // f16 tiles round up to whole words
        while tile > 0 && (tile * per_px_in).next_multiple_of(4) > mb {
            tile -= 1;
        }
        let max_dim = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        tile = tile.min(max_dim * max_dim * WG as u64);
        ensure!(
            tile >= 1,
            "one pixel's {} logits ({per_px_in} bytes) or {rows} scores exceed the adapter's largest storage binding ({mb} bytes)",
            src.c
        );
        Ok(tile as usize)
    }

    /// Pack pixels `[p0, p0 + len)` into slot `s`'s staging buffer (C rows,
    /// then D feature rows), and submit the copy, the dispatch and the
    /// read-back as one command buffer; the slot's maps are awaited later.
    fn submit(&mut self, s: usize, key: PipelineKey, src: &Source, prep: &Prepared, p0: usize, len: usize) -> Result<()> {
        let (c, fd, eb, n) = (src.c, src.fd, src.eb, src.n);
        let in_bytes = ((len * (c + fd) * eb) as u64).next_multiple_of(4);
        let out_bytes = (len * prep.rows * 4) as u64;
        self.ensure_slot(s, in_bytes, out_bytes);
        let pipeline = self.fused.pipelines[&key].clone();
        let max_dim = self.ctx.limits.max_compute_workgroups_per_dimension.max(1) as u64;
        let sl = &mut self.slots[s];
        {
            let mut view = sl.staging.slice(0..in_bytes).get_mapped_range_mut().map_err(|e| anyhow!("GPU staging: {e:?}"))?;
            let row = len * eb;
            for (k, bytes) in (0..c).map(|k| (k, &src.logits[..])).chain((0..fd).map(|k| (c + k, &src.feats[..]))) {
                let r = if k < c { k } else { k - c };
                let from = (r * n + p0) * eb;
                view.slice(k * row..(k + 1) * row).copy_from_slice(&bytes[from..from + row]);
            }
        }
        sl.staging.unmap();
        sl.staging_mapped = false;

        let wgs = (len as u64).div_ceil(WG as u64);
        let gx = wgs.min(max_dim) as u32;
        let gy = wgs.div_ceil(gx as u64) as u32;
        let mut params = prep.params;
        params.n = len as u32;
        params.row_x = gx * WG;
        self.ctx.queue.write_buffer(&sl.params, 0, bytemuck::bytes_of(&params));

        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("scores") });
        enc.copy_buffer_to_buffer(&sl.staging, 0, &sl.input, 0, in_bytes);
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("scores"), timestamp_writes: None });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &sl.bind, &[]);
            pass.dispatch_workgroups(gx, gy, 1);
        }
        enc.copy_buffer_to_buffer(&sl.output, 0, &sl.readback, 0, out_bytes);
        let submission = self.ctx.queue.submit([enc.finish()]);
        let (tx_s, staged) = channel();
        sl.staging.slice(..).map_async(wgpu::MapMode::Write, move |r| {
            let _ = tx_s.send(r);
        });
        let (tx_r, read) = channel();
        sl.readback.slice(0..out_bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx_r.send(r);
        });
        sl.pending = Some(Pending { p0, len, out_bytes, submission, staged, read });
        self.ctx.take_error()
    }
}

/// An image's bytes as the fused pass uploads them: raw f16 bits or f32,
/// logits `[C, N]` and, for HEAT on features, features `[D, N]` in the
/// same dtype (both widened to f32 when their dtypes differ).
struct Source<'a> {
    f16: bool,
    /// bytes per value
    eb: usize,
    c: usize,
    fd: usize,
    n: usize,
    logits: Cow<'a, [u8]>,
    feats: Cow<'a, [u8]>,
}

impl<'a> Source<'a> {
    fn new(logits: &'a Logits, features: Option<&'a Logits>) -> Result<Source<'a>> {
        fn raw(d: &LogitData) -> (bool, &[u8]) {
            match d {
                LogitData::F32(v) => (false, bytemuck::cast_slice(v)),
                LogitData::F16(v) => {
                    use half::slice::HalfFloatSliceExt;
                    (true, bytemuck::cast_slice(v.reinterpret_cast()))
                }
            }
        }
        fn widened(d: &LogitData) -> Cow<'static, [u8]> {
            let v: Vec<f32> = match d {
                LogitData::F32(v) => v.clone(),
                LogitData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            };
            Cow::Owned(bytemuck::cast_slice(&v).to_vec())
        }
        let (c, n, fd) = (logits.c, logits.pixels(), features.map_or(0, |f| f.c));
        let (f16, lb) = raw(&logits.data);
        let (f16, lbytes, fbytes): (bool, Cow<[u8]>, Cow<[u8]>) = match features {
            Some(f) if raw(&f.data).0 != f16 => (false, widened(&logits.data), widened(&f.data)),
            Some(f) => (f16, Cow::Borrowed(lb), Cow::Borrowed(raw(&f.data).1)),
            None => (f16, Cow::Borrowed(lb), Cow::Borrowed(&[][..])),
        };
        let eb = if f16 { 2usize } else { 4 };
        ensure!(
            fd.checked_mul(n).and_then(|v| v.checked_mul(eb)) == Some(fbytes.len()),
            "features hold {} values but D×H×W = {fd}×{}×{}",
            fbytes.len() / eb,
            logits.h,
            logits.w
        );
        ensure!(
            c.checked_mul(n).and_then(|v| v.checked_mul(eb)) == Some(lbytes.len()),
            "logits hold {} values but C×H×W = {c}×{}×{} = {}",
            lbytes.len() / eb,
            logits.h,
            logits.w,
            c as u128 * n as u128
        );
        Ok(Source { f16, eb, c, fd, n, logits: lbytes, feats: fbytes })
    }
}

fn make_bind(
    dev: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    params: &wgpu::Buffer,
    input: &wgpu::Buffer,
    aux: &wgpu::Buffer,
    output: &wgpu::Buffer,
    ubo_bytes: u64,
) -> wgpu::BindGroup {
    dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("scores"),
        layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: params.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: input.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: aux.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: output.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 4,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: aux,
                    offset: 0,
                    size: wgpu::BufferSize::new(ubo_bytes),
                }),
            },
        ],
    })
}

impl GpuScorer {
    /// Every active whole-image post-processing hook of the plan (see
    /// [`crate::scores::Post`]) on the assembled maps, after all tiles are
    /// in: `maps` ends with the predicted-class row when a hook reads it.
    fn post_process(&mut self, logits: &Logits, plan: &ScorePlan, maps: &mut [Vec<f32>]) -> Result<()> {
        let (h, w) = (logits.h, logits.w);
        let pred: Vec<u32> = if plan.needs_pred() {
            maps.last().context("no predicted-class row")?.iter().map(|&v| v as u32).collect()
        } else {
            vec![0; h * w]
        };
        let img = Image { pred: &pred, h, w, max_binding: self.max_binding };
        for (i, post) in plan.posts() {
            (post.gpu)(&mut self.post, &self.ctx, &mut maps[i], &img, plan)?;
        }
        Ok(())
    }
}

impl Scorer for GpuScorer {
    fn device(&self) -> String {
        self.ctx.describe()
    }

    fn gpu_context(&self) -> Option<&GpuContext> {
        Some(&self.ctx)
    }

    fn score_features(&mut self, logits: &Logits, features: Option<&Logits>, plan: &ScorePlan) -> Result<ScoreMaps> {
        let features = crate::scores::heat_features(logits, features, plan)?;
        let n = logits.pixels();
        let mut maps: Vec<Vec<f32>> = (0..plan.methods.len() + plan.needs_pred() as usize).map(|_| crate::scores::pool::zeroed(n)).collect();
        let mut res = self.score_inner(logits, features, plan, &mut maps);
        if res.is_ok() && plan.posts().next().is_some() && n > 0 {
            res = self.post_process(logits, plan, &mut maps);
        }
        if let Err(e) = res {
            // Leave no half-finished tile behind: the next image starts clean.
            let _ = self.ctx.device.poll(wgpu::PollType::wait_indefinitely());
            self.slots.clear();
            let _ = self.ctx.take_error();
            return Err(e);
        }
        maps.truncate(plan.methods.len());
        Ok(ScoreMaps {
            h: logits.h,
            w: logits.w,
            maps,
        })
    }
}

// A GpuScorer may be handed to another thread (Box<dyn Scorer> in a worker).
const _: () = {
    const fn send<T: Send>() {}
    send::<GpuScorer>();
};

#[cfg(test)]
mod tests {
    //! Host-side planning; the shader itself is tested in tests/gpu_parity.rs.
    use super::*;
    use crate::scores::{Calibration, HeatParams, SmlStats};

    fn cal(c: usize, k: usize) -> Calibration {
        Calibration {
            split: "calibration".into(),
            leakage: false,
            pixels: 10,
            sml: SmlStats {
                mean: vec![1.0 + 1e-9; c],
                std: vec![2.0; c],
                count: vec![5; c],
                pooled_fallback: vec![],
            },
            heat: HeatParams {
                c,
                k,
                classes: (0..k).collect(),
                whiten: (0..c * c).map(|i| i as f64).collect(),
                centers: vec![0.5; k * c],
                ridge: 1e-6,
                feat_dim: 0,
                el_mean: -3.0,
                el_std: 0.5,
                gmm_mean: 7.0,
                gmm_std: 2.0,
            },
            kl: None,
            warnings: vec![],
        }
    }

    fn plan(methods: &[Method], t_msp: f64, t_en: f64, c: usize) -> ScorePlan {
        ScorePlan {
            methods: methods.to_vec(),
            msp_temperature: t_msp,
            energy_temperature: t_en,
            calibration: Some(cal(c, 2)),
            sml_post: Default::default(),
            heat_post: Default::default(), params: Default::default(),
        }
    }

    /// The assembled module has one generated block per method, calling
    /// the method's function, and the `Params` mirror matches WGSL's layout.
    #[test]
    fn shader_is_assembled_from_the_method_table() {
        let src = shader_source(32, 4096).unwrap();
        assert!(!src.contains(DISPATCH_LINE));
        assert!(src.contains("const MAX_C: u32 = 32u;"));
        for &m in Method::ALL {
            let call = format!("{}(with_method(px, {}u), &z)", m.spec().wgsl, m.slot());
            assert_eq!(src.matches(&call).count(), 1, "{}", m.id());
            assert!(src.contains(&format!("scores[out_row({}u) * n + i]", m.slot())));
        }
        // WGSL layout of Params: 8 u32, three array<vec4, 3>, one vec4, 8 scalars
        assert_eq!(std::mem::offset_of!(Params, rows), 32);
        assert_eq!(std::mem::offset_of!(Params, ti), 80);
        assert_eq!(std::mem::offset_of!(Params, t), 128);
        assert_eq!(std::mem::offset_of!(Params, inv_t), 176);
        assert_eq!(std::mem::offset_of!(Params, el_mean_hi), 192);
        assert_eq!(std::mem::size_of::<Params>(), 240);
        // HEAT overwrites the logit array: its block comes after every other
        let heat = src.find("let v_heat").unwrap();
        for id in ["margin", "gen", "rba"] {
            assert!(src.find(&format!("let v_{id}")).unwrap() < heat, "{id} after heat");
        }
    }

    #[test]
    fn rows_follow_plan_order_and_share_duplicates() {
        let p = prepare(
            &plan(
                &[Method::Heat, Method::MaxLogit, Method::Heat, Method::Msp],
                1.0,
                1.0,
                3,
            ),
            3,
        )
        .unwrap();
        assert_eq!(p.rows, 3);
        assert_eq!(p.row_of, vec![0, 1, 0, 2]);
        assert_eq!(p.params.rows[Method::Heat.slot()], 0);
        assert_eq!(p.params.rows[Method::MaxLogit.slot()], 1);
        assert_eq!(p.params.rows[Method::Msp.slot()], 2);
        assert_eq!(
            p.params.mask,
            (1 << Method::Heat.slot()) | (1 << Method::MaxLogit.slot()) | (1 << Method::Msp.slot())
        );
        assert_eq!(p.key_logits, 32);
    }

    #[test]
    fn temperatures_are_shared_when_equal() {
        let all = [Method::Msp, Method::Energy, Method::Heat];
        assert_eq!(prepare(&plan(&all, 1.0, 1.0, 3), 3).unwrap().nt, 1);
        assert_eq!(prepare(&plan(&all, 2.0, 2.0, 3), 3).unwrap().nt, 2);
        let p = prepare(&plan(&all, 0.5, 2.0, 3), 3).unwrap();
        assert_eq!(p.nt, 3);
        assert_eq!(p.params.inv_t, [2.0, 0.5, 1.0, 0.0]);
        let ti = |m: Method| p.params.ti[m.slot()];
        assert_eq!((ti(Method::Msp), ti(Method::Energy), ti(Method::Heat)), (0, 1, 2));
        assert_eq!(p.params.t[Method::Energy.slot()], 2.0);
        assert_eq!(
            prepare(&plan(&[Method::MaxLogit, Method::Sml], 0.5, 2.0, 3), 3)
                .unwrap()
                .nt,
            0
        );
    }

    #[test]
    fn aux_layout_packs_the_lower_triangle() {
        let c = 3;
        let p = prepare(&plan(&[Method::Sml, Method::Heat], 1.0, 1.0, c), c).unwrap();
        // SML: (mean_hi, mean_lo, std, 0) per class, mean split exactly
        let (hi, lo) = (p.aux[0] as f64, p.aux[1] as f64);
        assert_eq!(hi + lo, 1.0 + 1e-9);
        assert_eq!(p.aux[2], 2.0);
        assert_eq!(p.params.off_w, 4 * c as u32);
        let w = &p.aux[p.params.off_w as usize..p.params.off_ctr as usize];
        assert_eq!(w, &[0.0, 3.0, 4.0, 6.0, 7.0, 8.0]); // rows of W[i][0..=i], W = 0..9
        assert_eq!(p.aux.len() % 4, 0);
        assert!(p.aux[p.params.off_ctr as usize..][..2 * c].iter().all(|&v| v == 0.5));
    }

    #[test]
    fn bad_plans_are_errors() {
        assert!(prepare(&plan(&[Method::Msp], 0.0, 1.0, 3), 3).is_err());
        assert!(prepare(&plan(&[Method::Energy], 1.0, f64::NAN, 3), 3).is_err());
        assert!(prepare(&plan(&[Method::Sml], 1.0, 1.0, 3), 4).is_err());
        let mut p = plan(&[Method::Heat], 1.0, 1.0, 3);
        p.calibration.as_mut().unwrap().heat.whiten.clear();
        assert!(prepare(&p, 3).is_err());
        let big = MAX_LOGIT_ARRAY + 1;
        let e = prepare(&plan(&[Method::Heat], 1.0, 1.0, big), big).unwrap_err();
        assert!(e.to_string().contains("at most"), "{e}");
        let p = ScorePlan {
            methods: vec![Method::Sml],
            msp_temperature: 1.0,
            energy_temperature: 1.0,
            calibration: None,
            sml_post: Default::default(),
            heat_post: Default::default(), params: Default::default(),
        };
        assert!(prepare(&p, 3).is_err());
        assert!(prepare(&plan(&[Method::MaxLogit], 1.0, 1.0, 3), 0).is_err());
    }
}

