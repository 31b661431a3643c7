//! Pass 2 of the exact metrics on the device (`shaders/rank.wgsl`): the
//! negatives of a device-resident score range ranked against a split's
//! sorted distinct positive keys, per-slot counts accumulated on the device.
//!
//! How the sweep uses it (`pipeline::passes::pass2` with a GPU scorer),
//! per split, model and shard range: a [`RankSet`] holds one
//! [`GpuRanker`] per method and per anomaly type, built from the host
//! rankers' own tables (uploaded once); each image's score maps and labels
//! are written once into buffers kept across images and every ranker's
//! dispatch is recorded into one submission; at the end of the range the
//! u64 tallies are absorbed into the host rankers, so the statistic, a
//! shard's tally and results.json are the CPU path's, integer for integer.
//!
//! ```text
//! let pass = RankPass::new(&ctx)?;
//! let mut set = RankSet::new(&ctx, &pass, &[(0, ranker0.table()), (1, ranker1.table())])?;
//! for each image: set.add_image(&ctx, &maps.maps, &labels)?;
//! for (r, t) in rankers.zip(set.tallies(&ctx)?) { r.absorb(&t)?; }
//! ```
//!
//! Still on the host: the score maps come back from the fused pass (and
//! are uploaded again here) because pass 2's other accumulators — the drift
//! refiners, `far_at_frr`'s rank refiners, `positive = "normal"` — and
//! SML/HEAT's whole-image post-processing read them there. Ranking the
//! fused pass's output buffer in place needs those on the device first.
//!
//! Inputs of a dispatch: `scores`, any buffer with `STORAGE` usage holding
//! the f32 scores (read as raw bits, so the key is bit-exact whatever the
//! adapter does with subnormals or NaNs), and `labels`, a buffer with the
//! pixels' [`label`](crate::data::label) codes, one byte per pixel, four per
//! word, little-endian (what the fused pass's tile mask would be uploaded
//! as); a pixel is a negative iff its code is `label::NORMAL`, exactly as
//! [`Ranker::add`](crate::metrics::engine::Ranker::add) decides. Both
//! offsets are in bytes (scores: a multiple of 4); they need no alignment
//! (the binding is aligned down, the remainder goes into the uniform).
//!
//! Counting and the flush rule: the device keeps one u32 counter per slot
//! (2m + 1) and adds with atomics; sums do not depend on scheduling, so the
//! counts are deterministic. A counter grows by at most one per pixel
//! dispatched, so none can wrap while fewer than 2^32 pixels have been
//! dispatched since the last flush. [`GpuRanker`] tracks the pixels
//! dispatched (negatives or not) and flushes — copy the counters back, add
//! them to its u64 totals, clear them on the device — before a dispatch
//! would take that number past [`FLUSH_PIXELS`] (2^32 − 1), and splits
//! larger ranges into dispatches of at most that many pixels (also at most
//! what one storage binding holds). [`GpuRanker::with_flush_limit`] lowers
//! the limit (tests use a few hundred pixels to exercise many flushes).
//!
//! When 2m + 1 ≤ 4000 (heavily tied or few positives) the shader's
//! `main_local` entry point counts in a workgroup histogram first and adds
//! each non-zero count to the global counter once per workgroup.

use super::context::{GpuContext, WG};
use crate::metrics::engine::{RankTable, Tally, WINDOW};
use anyhow::{Context, Result, anyhow, ensure};
use wgpu::util::DeviceExt;

const SHADER: &str = include_str!("../../../shaders/rank.wgsl");
/// Largest number of pixels dispatched between two flushes of the u32
/// counters: each counter then holds at most 2^32 − 1.
pub const FLUSH_PIXELS: u64 = u32::MAX as u64;
/// `LOCAL_SLOTS` of `rank.wgsl`.
const LOCAL_SLOTS: usize = 4000;
/// First-level descriptors of the table (2^16).
const DESC: usize = 1 << 16;
/// Workgroups of one dispatch at most (grid-stride beyond).
const MAX_GROUPS: u32 = 4096;

/// Uniform block of `rank.wgsl` (`struct Params`, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    score_base: u32,
    label_base: u32,
    m: u32,
    bounds_off: u32,
    keys_off: u32,
    stride: u32,
    _pad: u32,
}

/// The compiled rank pipelines (one per run and device).
pub struct RankPass {
    layout: wgpu::BindGroupLayout,
    global: wgpu::ComputePipeline,
    local: wgpu::ComputePipeline,
}

impl RankPass {
    pub fn new(ctx: &GpuContext) -> Result<RankPass> {
        let dev = &ctx.device;
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
        let layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("rank"),
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
                storage(3, true),
                storage(4, false),
            ],
        });
        let pipeline_layout = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("rank"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("rank.wgsl"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        ctx.take_error().context("compiling shaders/rank.wgsl")?;
        let pipe = |entry| {
            dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let (global, local) = (pipe("main"), pipe("main_local"));
        ctx.take_error().context("creating the rank pipelines")?;
        Ok(RankPass { layout, global, local })
    }

    /// A ranker over one split's (and method's) positives: uploads the
    /// table and keys of [`RankTable`] once.
    pub fn ranker(&self, ctx: &GpuContext, table: &RankTable) -> Result<GpuRanker> {
        let m = table.padded_keys().len() - WINDOW;
        let (desc, bounds, keys) = (table.desc(), table.bounds(), table.padded_keys());
        ensure!(desc.len() == DESC, "rank table: {} first-level entries, the shader expects {DESC}", desc.len());
        let mut words = Vec::with_capacity(desc.len() + bounds.len() + keys.len());
        words.extend_from_slice(desc);
        words.extend_from_slice(bounds);
        words.extend_from_slice(keys);
        let bytes = (words.len() * 4) as u64;
        let max = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
        ensure!(bytes <= max, "rank table of {m} positive keys ({bytes} bytes) exceeds the adapter's largest storage binding ({max} bytes)");
        let nslots = 2 * m + 1;
        let counts_bytes = (nslots * 4) as u64;
        ensure!(counts_bytes <= max, "{nslots} rank counters exceed the adapter's largest storage binding ({max} bytes)");
        let dev = &ctx.device;
        use wgpu::BufferUsages as U;
        let table_buf = dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("rank table"),
            contents: bytemuck::cast_slice(&words),
            usage: U::STORAGE,
        });
        let empty = |label, size, usage| dev.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false });
        let counts = empty("rank counts", counts_bytes, U::STORAGE | U::COPY_SRC | U::COPY_DST);
        let readback = empty("rank readback", counts_bytes, U::MAP_READ | U::COPY_DST);
        let params = empty("rank params", std::mem::size_of::<Params>() as u64, U::UNIFORM | U::COPY_DST);
        ctx.take_error().context("allocating the rank buffers")?;
        Ok(GpuRanker {
            layout: self.layout.clone(),
            pipeline: if nslots <= LOCAL_SLOTS { self.local.clone() } else { self.global.clone() },
            local: nslots <= LOCAL_SLOTS,
            table: table_buf,
            counts,
            readback,
            params,
            m: m as u32,
            bounds_off: desc.len() as u32,
            keys_off: (desc.len() + bounds.len()) as u32,
            slots: vec![0; nslots],
            pending: 0,
            flush_limit: FLUSH_PIXELS,
            dirty: false,
        })
    }
}

/// Device-side pass 2 over one split's positives (see the module docs).
pub struct GpuRanker {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    local: bool,
    table: wgpu::Buffer,
    counts: wgpu::Buffer,
    readback: wgpu::Buffer,
    params: wgpu::Buffer,
    m: u32,
    bounds_off: u32,
    keys_off: u32,
    /// Totals flushed so far, widened.
    slots: Vec<u64>,
    /// Pixels dispatched since the last flush.
    pending: u64,
    flush_limit: u64,
    /// Whether the device counters may hold something.
    dirty: bool,
}

impl GpuRanker {
    /// Flush the device counters after at most `px` pixels (≥ 1, at most
    /// [`FLUSH_PIXELS`]): tests exercise the flush with a small limit.
    pub fn with_flush_limit(mut self, px: u64) -> GpuRanker {
        self.flush_limit = px.clamp(1, FLUSH_PIXELS);
        self
    }

    /// Whether the workgroup-histogram variant is in use (2m + 1 ≤ 4000).
    pub fn uses_local_histogram(&self) -> bool {
        self.local
    }

    /// Rank the negatives among the `n` pixels whose f32 scores start at
    /// byte `score_offset` of `scores` and whose label codes start at byte
    /// `label_offset` of `labels` (see the module docs for the layouts).
    /// Records and submits the dispatches; flushes as the rule says.
    pub fn add_buffers(&mut self, ctx: &GpuContext, scores: &wgpu::Buffer, score_offset: u64, labels: &wgpu::Buffer, label_offset: u64, n: u64) -> Result<()> {
        ensure!(score_offset.is_multiple_of(4), "rank: score offset {score_offset} is not a multiple of 4");
        ensure!(score_offset + 4 * n <= scores.size(), "rank: {n} scores from byte {score_offset} overrun a {}-byte buffer", scores.size());
        ensure!(label_offset + n <= labels.size(), "rank: {n} labels from byte {label_offset} overrun a {}-byte buffer", labels.size());
        ensure!(labels.size().is_multiple_of(4), "rank: the label buffer's size must be a multiple of 4 bytes");
        let (per, align) = self.per_dispatch(ctx)?;
        let mut done = 0u64;
        while done < n {
            let k = per.min(n - done);
            if self.pending + k > self.flush_limit {
                self.flush(ctx)?;
            }
            let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rank") });
            self.record(ctx, &mut enc, scores, score_offset + 4 * done, labels, label_offset + done, k, align);
            ctx.queue.submit([enc.finish()]);
            ctx.take_error().context("rank dispatch")?;
            self.pending += k;
            done += k;
        }
        Ok(())
    }

    /// Pixels one dispatch may cover — within a binding (after up to
    /// `align` bytes of alignment slack), within the flush limit, and small
    /// enough that the grid stride cannot wrap u32 — and that alignment.
    fn per_dispatch(&self, ctx: &GpuContext) -> Result<(u64, u64)> {
        let align = ctx.limits.min_storage_buffer_offset_alignment.max(4) as u64;
        let max_binding = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size) & !3;
        let per = ((max_binding.saturating_sub(align)) / 4).min(self.flush_limit).min(1 << 30);
        ensure!(per > 0, "rank: the adapter's storage bindings are too small");
        Ok((per, align))
    }

    /// [`add_buffers`](Self::add_buffers) of a whole range from offset 0
    /// recorded into `enc` (submitted by the caller: one submission for many
    /// rankers) when it fits one dispatch; `false` (nothing recorded) when
    /// it does not, and the caller uses `add_buffers`. Its parameters go
    /// through a queue write, so a ranker records at most one dispatch per
    /// submission.
    fn add_recorded(&mut self, ctx: &GpuContext, enc: &mut wgpu::CommandEncoder, scores: &wgpu::Buffer, labels: &wgpu::Buffer, n: u64) -> Result<bool> {
        let (per, align) = self.per_dispatch(ctx)?;
        if n > per || 4 * n > scores.size() || n > labels.size() || !labels.size().is_multiple_of(4) {
            return Ok(false);
        }
        if self.pending + n > self.flush_limit {
            self.flush(ctx)?;
        }
        self.record(ctx, enc, scores, 0, labels, 0, n, align);
        self.pending += n;
        Ok(true)
    }

    /// Record one dispatch of `k` pixels into `enc` (after writing its
    /// parameters to the queue).
    #[allow(clippy::too_many_arguments)]
    fn record(&mut self, ctx: &GpuContext, enc: &mut wgpu::CommandEncoder, scores: &wgpu::Buffer, s_off: u64, labels: &wgpu::Buffer, l_off: u64, k: u64, align: u64) {
        let s_at = s_off / align * align;
        let s_size = (s_off - s_at + 4 * k).min(scores.size() - s_at);
        let l_at = l_off / align * align;
        let l_size = ((l_off - l_at + k).div_ceil(4) * 4).min(labels.size() - l_at);
        let groups = (k.div_ceil(WG as u64) as u32).clamp(1, MAX_GROUPS.min(ctx.limits.max_compute_workgroups_per_dimension));
        let params = Params {
            n: k as u32,
            score_base: ((s_off - s_at) / 4) as u32,
            label_base: (l_off - l_at) as u32,
            m: self.m,
            bounds_off: self.bounds_off,
            keys_off: self.keys_off,
            stride: groups * WG,
            _pad: 0,
        };
        ctx.queue.write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        fn bind(buf: &wgpu::Buffer, at: u64, size: u64) -> wgpu::BindingResource<'_> {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding { buffer: buf, offset: at, size: wgpu::BufferSize::new(size) })
        }
        let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("rank"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: self.params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: bind(scores, s_at, s_size) },
                wgpu::BindGroupEntry { binding: 2, resource: bind(labels, l_at, l_size) },
                wgpu::BindGroupEntry { binding: 3, resource: self.table.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 4, resource: self.counts.as_entire_binding() },
            ],
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("rank"), timestamp_writes: None });
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups, 1, 1);
        self.dirty = true;
    }

    /// Copy the device counters back, add them to the u64 totals and clear
    /// them on the device (waits for the device).
    pub fn flush(&mut self, ctx: &GpuContext) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rank flush") });
        enc.copy_buffer_to_buffer(&self.counts, 0, &self.readback, 0, self.counts.size());
        enc.clear_buffer(&self.counts, 0, None);
        let sub = ctx.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        self.readback.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        ctx.device
            .poll(wgpu::PollType::Wait { submission_index: Some(sub), timeout: None })
            .map_err(|e| anyhow!("waiting for the GPU: {e}"))?;
        ctx.take_error().context("rank flush")?;
        ctx.await_map(&rx, "rank: read-back buffer")?;
        {
            let view = self.readback.slice(..).get_mapped_range().map_err(|e| anyhow!("GPU read-back: {e:?}"))?;
            let c: &[u32] = bytemuck::cast_slice(&view);
            for (a, &b) in self.slots.iter_mut().zip(c) {
                *a += b as u64;
            }
        }
        self.readback.unmap();
        self.pending = 0;
        self.dirty = false;
        Ok(())
    }

    /// Convenience (tests, benches): upload host slices and rank them.
    /// `labels` are [`label`](crate::data::label) codes, as for
    /// [`Ranker::add`](crate::metrics::engine::Ranker::add).
    pub fn add(&mut self, ctx: &GpuContext, scores: &[f32], labels: &[u8]) -> Result<()> {
        ensure!(scores.len() == labels.len(), "rank: {} scores but {} labels", scores.len(), labels.len());
        if scores.is_empty() {
            return Ok(());
        }
        let (s, l) = upload(ctx, scores, labels);
        self.add_buffers(ctx, &s, 0, &l, 0, scores.len() as u64)
    }

    /// Flush, then the counts so far as a [`Tally`] (negatives = their sum),
    /// ready for [`Ranker::absorb`](crate::metrics::engine::Ranker::absorb).
    pub fn tally(&mut self, ctx: &GpuContext) -> Result<Tally> {
        self.flush(ctx)?;
        Ok(Tally { slots: self.slots.clone(), negatives: self.slots.iter().sum() })
    }
}

/// Device buffers holding `scores` (f32) and `labels` (one byte per pixel,
/// padded to a multiple of 4 bytes), usable by [`GpuRanker::add_buffers`].
pub fn upload(ctx: &GpuContext, scores: &[f32], labels: &[u8]) -> (wgpu::Buffer, wgpu::Buffer) {
    use wgpu::BufferUsages as U;
    let mut lab = labels.to_vec();
    lab.resize(labels.len().div_ceil(4).max(1) * 4, crate::data::label::VOID);
    let mut sc = scores;
    let one = [0f32];
    if sc.is_empty() {
        sc = &one;
    }
    let s = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("rank scores"),
        contents: bytemuck::cast_slice(sc),
        usage: U::STORAGE | U::COPY_DST | U::COPY_SRC,
    });
    let l = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("rank labels"),
        contents: &lab,
        usage: U::STORAGE | U::COPY_DST | U::COPY_SRC,
    });
    (s, l)
}

/// Pass 2 of one split on the device for several rankers at once (per
/// method, and per anomaly type): each image's score maps and labels are
/// uploaded once (one write per map, into buffers kept across images) and
/// every ranker's dispatch reads them there. The dispatches are submitted
/// without waiting, so the host reads and scores the next image while the
/// device ranks this one; only the counters come back, at
/// [`tallies`](Self::tallies).
pub struct RankSet {
    /// Per ranker: the index of the score map it ranks, and the ranker.
    rankers: Vec<(usize, GpuRanker)>,
    /// One buffer per score map (grow-only), and the labels' buffer.
    maps: Vec<Option<wgpu::Buffer>>,
    labels: Option<wgpu::Buffer>,
}

impl RankSet {
    /// One device ranker per `(map index, table)`, in that order; the tables
    /// are uploaded here, once.
    pub fn new(ctx: &GpuContext, pass: &RankPass, tables: &[(usize, &RankTable)]) -> Result<RankSet> {
        let rankers = tables.iter().map(|&(m, t)| Ok((m, pass.ranker(ctx, t)?))).collect::<Result<Vec<_>>>()?;
        let nmaps = tables.iter().map(|&(m, _)| m + 1).max().unwrap_or(0);
        Ok(RankSet { rankers, maps: (0..nmaps).map(|_| None).collect(), labels: None })
    }

    /// [`GpuRanker::with_flush_limit`] for every ranker (tests).
    pub fn with_flush_limit(mut self, px: u64) -> RankSet {
        self.rankers = self.rankers.into_iter().map(|(m, g)| (m, g.with_flush_limit(px))).collect();
        self
    }

    /// Rank one image's negatives: `maps[m]` holds map `m`'s f32 scores,
    /// each as long as `labels` ([`label`](crate::data::label) codes).
    pub fn add_image(&mut self, ctx: &GpuContext, maps: &[Vec<f32>], labels: &[u8]) -> Result<()> {
        let n = labels.len();
        ensure!(maps.len() >= self.maps.len(), "rank: {} score maps, the rankers read {}", maps.len(), self.maps.len());
        if n == 0 || self.rankers.is_empty() {
            return Ok(());
        }
        for (m, s) in maps.iter().enumerate().take(self.maps.len()) {
            ensure!(s.len() == n, "rank: score map {} has {} pixels but the mask {n}", m + 1, s.len());
            write_grown(ctx, &mut self.maps[m], "rank scores", bytemuck::cast_slice(s));
        }
        let mut lab = labels.to_vec();
        lab.resize(n.next_multiple_of(4), crate::data::label::VOID);
        write_grown(ctx, &mut self.labels, "rank labels", &lab);
        let l = self.labels.as_ref().expect("written above");
        let mut enc = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("rank image") });
        for (m, g) in self.rankers.iter_mut() {
            let s = self.maps[*m].as_ref().expect("written above");
            if !g.add_recorded(ctx, &mut enc, s, l, n as u64)? {
                g.add_buffers(ctx, s, 0, l, 0, n as u64)?;
            }
        }
        ctx.queue.submit([enc.finish()]);
        ctx.take_error().context("rank dispatch")
    }

    /// Wait for the device, then every ranker's counts (in the order of
    /// [`new`](Self::new)), widened to u64.
    pub fn tallies(&mut self, ctx: &GpuContext) -> Result<Vec<Tally>> {
        self.rankers.iter_mut().map(|(_, g)| g.tally(ctx)).collect()
    }
}

/// Write `bytes` (a multiple of 4 long) at the start of `buf`, first
/// replacing it by a larger one when it is missing or too small. Queue
/// writes are ordered with submissions, so dispatches already submitted
/// still read the previous contents.
fn write_grown(ctx: &GpuContext, buf: &mut Option<wgpu::Buffer>, label: &str, bytes: &[u8]) {
    let need = (bytes.len() as u64).max(4);
    if buf.as_ref().is_none_or(|b| b.size() < need) {
        use wgpu::BufferUsages as U;
        *buf = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: need.next_multiple_of(4),
            usage: U::STORAGE | U::COPY_DST,
            mapped_at_creation: false,
        }));
    }
    ctx.queue.write_buffer(buf.as_ref().expect("set above"), 0, bytes);
}
