//! One split's two streaming metric passes for one model, each run as a
//! collective (all images here, one shard's range, or a merge).

use super::*;
use crate::metrics::{PackedCounts, PositiveCollector, Ranker};
use crate::metrics::bootgrid::{Grid, HistCollector, HistSet};
use crate::scores::gpu::GpuContext;
use crate::scores::gpu::rank::{RankPass, RankSet};
use anyhow::ensure;

/// Score maps of image `i`: the built-in methods computed from its logits,
/// then the outside methods' precomputed maps read at the mask's size.
pub(crate) fn score_image(scorer: &mut dyn Scorer, lg: &Logits, plan: &ScorePlan, inp: &Inputs, split: &Split, model: &str, i: usize) -> Result<ScoreMaps> {
    let mut maps = score_image_raw(scorer, lg, plan, inp, split, model, i)?;
    if inp.precision != crate::metrics::conventions::ScorePrecision::F32 {
        for (k, m) in maps.maps.iter_mut().enumerate() {
            inp.precision.apply(m).with_context(|| format!("`metrics.score_precision`, score map {} of image {i}", k + 1))?;
        }
    }
    Ok(maps)
}

/// [`score_image`] before `metrics.score_precision` rounding.
pub(crate) fn score_image_raw(scorer: &mut dyn Scorer, lg: &Logits, plan: &ScorePlan, inp: &Inputs, split: &Split, model: &str, i: usize) -> Result<ScoreMaps> {
    // HEAT fitted on per-pixel features reads this image's features.
    let uses_features = plan.uses_features();
    let feat = if uses_features { Some(load_features(split, model, i, lg, inp)?) } else { None };
    let mut maps = if plan.methods.is_empty() {
        ScoreMaps { h: lg.h, w: lg.w, maps: vec![] }
    } else {
        scorer.score_features(lg, feat.as_ref(), plan)?
    };
    for e in &inp.external {
        let (p, v) = e.read(split, model, i, inp.npz_score_key.as_deref(), inp.resize, maps.h, maps.w)?;
        inp.sums.add(&p)?;
        maps.maps.push(v);
    }
    Ok(maps)
}

/// What one split yields for one model: per method, the exact statistic,
/// the counts at the probe thresholds and the image-level scores.
pub(crate) struct SplitEval {
    /// Per method, the exact statistic, packed while it is kept (see
    /// [`counts`](Self::counts)).
    pub(crate) packed: Vec<PackedCounts>,
    /// Per method: AUPRO (when `regions`), and the region count.
    pub(crate) aupro: Vec<Option<f64>>,
    pub(crate) regions: u64,
    pub(crate) components: Vec<Option<ComponentStats>>,
    /// Per method, per anomaly type (only when there are several types).
    pub(crate) type_counts: Vec<Vec<PackedCounts>>,
    pub(crate) drift: Vec<DriftStats>,
    pub(crate) probes: Vec<ThresholdCounter>,
    pub(crate) image_scores: Vec<Vec<f32>>,
    pub(crate) image_labels: Vec<u8>,
    pub(crate) void: u64,
    pub(crate) images: u64,
    pub(crate) dtype: String,
    /// Per method (`average = "images"`): mean AUROC / AUPR / FPR95 / F1
    /// over images with both classes, images averaged, images skipped.
    pub(crate) image_means: Vec<Option<([Option<f64>; 6], u64, u64)>>,
    /// `average = "images"`: per method the per-image values (images with
    /// both classes, in order) and per image whether it has both classes,
    /// for the per-image bootstrap.
    pub(crate) per_image: (Vec<Vec<[Option<f64>; 6]>>, Vec<bool>),
    /// Per method (`positive = "normal"`): the statistic with normal pixels
    /// positive and the score negated.
    pub(crate) counts_in: Vec<Option<Counts>>,
    /// Per method, per FRR budget of [`SplitOpts::frr_budgets`]: the normal
    /// order statistic of pixel-level `far_at_frr` (empty when none).
    pub(crate) rank_picks: Vec<Vec<crate::metrics::operating::RankPick>>,
    /// [`SplitOpts::boot`]: per method its bootstrap grid, and the
    /// per-image histograms on them.
    pub(crate) boot: Option<(Vec<Grid>, HistSet)>,
    /// Failure modes: per image and type, pixels at the soft thresholds
    /// (the test split only; see `metrics::failure`).
    pub(crate) type_hits: Option<crate::metrics::failure::TypeHits>,
    /// Per method (`SplitOpts::dashboard`): one record per image, for the
    /// drift-sensitivity resamples (empty otherwise).
    pub(crate) dash: Vec<crate::metrics::dashboard::ImageStats>,
    /// Per method (`metrics.binning = "smiyc"`, test): SMIYC's binned
    /// curve, finished (empty otherwise).
    pub(crate) binned: Vec<crate::metrics::binned::BinnedCurve>,
}

impl SplitEval {
    /// The histogram bootstrap's view of this split ([`SplitOpts::boot`]):
    /// its per-image histograms and image scores, counted at `points`;
    /// `None` when it was evaluated without histograms.
    pub(crate) fn hist_boot<'a>(&'a self, points: &'a [Vec<Option<crate::metrics::bootstrap::Threshold>>], cfg: &Config) -> Option<crate::metrics::bootstrap::HistBoot<'a>> {
        let (grids, hists) = self.boot.as_ref()?;
        Some(crate::metrics::bootstrap::HistBoot { hists, grids, image_scores: &self.image_scores, image_labels: &self.image_labels, points, rule: (cfg.metrics.conv.fpr95, cfg.metrics.conv.aupr) })
    }

    /// The per-image bootstrap's view of this split (`average = "images"`;
    /// empty otherwise).
    pub(crate) fn per_image_values(&self) -> crate::metrics::bootstrap::PerImage<'_> {
        crate::metrics::bootstrap::PerImage { per_image: &self.per_image.0, defined: &self.per_image.1 }
    }

    /// Column `mi`'s headline AUROC / AUPR / FPR95 / F1: the image means
    /// under `average = "images"` (no threshold: no single one attains a
    /// mean F1), else the pooled statistic's.
    pub(crate) fn headline(&self, mi: usize, conv: &crate::metrics::conventions::MetricConv) -> crate::metrics::Summary {
        match self.image_means.get(mi).copied().flatten() {
            Some(([auroc, aupr, fpr95, f1, ..], ..)) => crate::metrics::Summary { auroc, aupr, fpr95, f1, threshold: None },
            None => conv.summary(&self.counts(mi)),
        }
    }

    /// Column `mi`'s exact statistic, unpacked (kept packed: it lives until
    /// the report, beside the next splits' rankers).
    pub(crate) fn counts(&self, mi: usize) -> Counts {
        self.packed[mi].unpack()
    }

    /// Column `mi`'s statistic per anomaly type (the whole split's with one
    /// type), unpacked.
    pub(crate) fn type_counts(&self, mi: usize) -> Vec<Counts> {
        match self.type_counts[mi].is_empty() {
            true => vec![self.counts(mi)],
            false => self.type_counts[mi].iter().map(PackedCounts::unpack).collect(),
        }
    }
}

/// What every pass of a run shares: inputs, the execution mode (local,
/// shard, merge), progress.
pub(crate) struct Ctx<'a> {
    pub(crate) inp: &'a Inputs,
    pub(crate) exec: &'a Exec,
    pub(crate) progress: &'a Progress,
    pub(crate) device: DeviceKind,
    /// Prefix of the pass ids: `<dataset>.` in a `[[datasets]]` sweep.
    pub(crate) tag: String,
    /// Every model's passes in order ([`super::Sweep::passes`]); each
    /// collective checks it is the next one, so the plan `--rounds` counts
    /// is the one that runs.
    pub(crate) plan: Vec<super::PassKind>,
    /// Index into `plan` of the current model's next pass.
    pub(crate) next: std::sync::atomic::AtomicUsize,
    /// The current model's phase timings (a lock, not a cell: scoring the
    /// next image and accumulating the last one run on two threads at once).
    pub(crate) phases: std::sync::Mutex<Phases>,
    /// Names of the drifted test copies (`test@<name>`), in plan order.
    pub(crate) drifted: Vec<String>,
}

impl Ctx<'_> {
    /// The current model's phase timings so far.
    pub(crate) fn phases(&self) -> Phases {
        *self.phases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add `secs` to one phase of the current model.
    pub(crate) fn charge(&self, phase: fn(&mut Phases) -> &mut f64, secs: f64) {
        *phase(&mut self.phases.lock().unwrap_or_else(|e| e.into_inner())) += secs;
    }

    /// Run `f`, adding its wall time to one phase of the current model.
    pub(crate) fn timed<T>(&self, phase: fn(&mut Phases) -> &mut f64, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.charge(phase, t.elapsed().as_secs_f64());
        out
    }
}

impl Ctx<'_> {
    /// `[<dataset>/]<model>`, as progress lines name it.
    pub(crate) fn who(&self, model: &str) -> String {
        match self.tag.strip_suffix('.') {
            Some(t) => format!("{t}/{model}"),
            None => model.to_string(),
        }
    }

    /// [`Exec::collective`] with this run's device and input checksums;
    /// `label` names the pass in the progress bar / line.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn collective<S, D: Serialize + serde::de::DeserializeOwned>(
        &self,
        kind: super::PassKind,
        label: String,
        pass: &str,
        images: usize,
        state: &mut S,
        run: impl FnOnce(&mut S, Range<usize>) -> Result<()>,
        export: impl Fn(&S) -> D,
        absorb: impl FnMut(&mut S, D) -> Result<()>,
    ) -> Result<()> {
        let i = self.next.load(std::sync::atomic::Ordering::Relaxed);
        if self.plan.get(i) != Some(&kind) {
            bail!("internal error: pass {kind:?} ran as step {i} of the plan {:?}", self.plan);
        }
        self.next.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        let inputs = || self.inp.sums.snapshot();
        let run = |st: &mut S, r: Range<usize>| {
            self.progress.start(label, r.len());
            let out = run(st, r);
            if out.is_ok() {
                self.progress.finish();
            }
            out
        };
        self.exec.collective(pass, images, self.device, &inputs, state, run, export, absorb)
    }
}

/// Dropped last in [`eval_split`] (declared first): empties the map pool
/// and hands the heap's free pages back to the system
/// ([`crate::scores::pool::release`]) once the split's score cache and
/// rankers are gone. Scoring one image while the last is accumulated allocates maps on
/// several threads, hence in several glibc arenas, whose freed space is not
/// returned on its own; the next split's cache, and the report after the
/// last split, then land beside it. Measured at 300 StreetHazards-sized test
/// images plus the drifted copy: peak RSS 758 MB without this, 609–626 MB
/// with it (619 MB before the overlap); trimming before each split instead left
/// 692–705 MB.
struct TrimOnDrop;

impl Drop for TrimOnDrop {
    fn drop(&mut self) {
        crate::scores::pool::release();
    }
}

/// One split for one model: pass 1, pass 2, and the statistics they yield.
pub(crate) fn eval_split(
    cx: &Ctx,
    split: &Split,
    model: &str,
    scorer: &mut dyn Scorer,
    plan: &ScorePlan,
    probes: Vec<Vec<f32>>,
    opts: &SplitOpts,
) -> Result<SplitEval> {
    let _trim = TrimOnDrop;
    let nm = plan.methods.len() + cx.inp.external.len();
    let boot_thresholds = probes.clone();
    let mut p1 = pass1(cx, split, model, scorer, plan, probes, opts)?;
    let image_means = p1.image_means(opts);
    let per_image = (std::mem::take(&mut p1.per_image), std::mem::take(&mut p1.per_image_defined));
    let Pass1 { pos, tpos, normal, regions, comps, probes, image_scores, image_labels, void, dtype, cache, pos_in, ranks, type_hits, dash, binned, .. } = p1;
    // the rankers are built one at a time while the cache gives way (see
    // `finish_within`)
    let mut cache = cache;
    let held = |c: &[PositiveCollector]| c.iter().map(PositiveCollector::heap_bytes).sum::<u64>();
    let mut reserved = held(&pos) + tpos.iter().map(|t| held(t)).sum::<u64>() + held(&pos_in);
    let mut finish = |cs: Vec<PositiveCollector>| finish_within(cs, &mut cache, &mut reserved, opts.cache_bytes);
    let rankers = finish(pos);
    let trankers = tpos.into_iter().map(&mut finish).collect();
    let rankers_in = finish(pos_in);
    // AUPRO intervals only where AUPRO is computed (the labelling per image)
    let boot = match opts.boot {
        true => {
            let grids = boot_grids(&rankers, &normal, &boot_thresholds)?;
            Some(if opts.regions { HistCollector::with_regions(grids) } else { HistCollector::new(grids) })
        }
        false => None,
    };
    let p2 = Pass2 {
        rankers,
        trankers,
        refiners: normal.into_iter().map(|n| n.refine()).collect(),
        rankers_in,
        ranks: ranks.into_iter().map(|r| r.refine(&opts.frr_budgets)).collect(),
        boot,
    };
    // the cache goes into pass 2 by value: each cached image's maps are
    // freed once ranked, so the split's Counts are not built beside them
    let Pass2 { rankers, trankers, refiners, rankers_in, ranks, boot } = pass2(cx, split, model, scorer, plan, cache, p2)?;
    if let Some(b) = &boot {
        ensure!(b.set.images.len() == split.stems.len(), "internal error: bootstrap histograms of {} of {} images", b.set.images.len(), split.stems.len());
    }
    let counts_in: Vec<Option<Counts>> = if rankers_in.is_empty() {
        vec![None; nm]
    } else {
        rankers_in.into_iter().map(|r| r.finish().map(Some)).collect::<Result<Vec<_>>>()?
    };
    let rank_picks = ranks.into_iter().map(|r| r.finish()).collect();
    let drift = refiners.into_iter().map(|r| r.finish()).collect();
    let type_counts = trankers
        .into_iter()
        .map(|v| v.into_iter().map(|r| r.finish().map(|c| PackedCounts::pack(&c))).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    // one method's statistic unpacked at a time: AUPRO, then packed
    let (aupro_v, packed) = rankers
        .into_iter()
        .map(|r| {
            let w = r.finish_weighted().with_context(|| format!("split {} [{model}]", split.name))?;
            let au = if opts.regions { aupro(&w.counts, &w.tp_weight, regions, crate::metrics::region::MAX_FPR) } else { None };
            Ok((au, PackedCounts::pack(&w.counts)))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    Ok(SplitEval {
        packed,
        aupro: aupro_v,
        regions,
        components: comps,
        type_counts,
        drift,
        probes,
        image_scores,
        image_labels,
        void,
        images: split.stems.len() as u64,
        dtype: dtype.unwrap_or_else(|| "float32".into()),
        image_means,
        per_image,
        counts_in,
        rank_picks,
        boot: boot.map(|b| (b.grids, b.set)),
        type_hits,
        dash,
        binned,
    })
}

/// Finish collectors into rankers one at a time, the cache handed from
/// pass 1 to pass 2 (if any) giving way as they are built
/// ([`fit_cache`](crate::metrics::split::fit_cache)): room for each build
/// is made first, since the collector and its ranker coexist while it runs
/// ([`PositiveCollector::finish_bytes_bound`]). `reserved` holds the bytes
/// of the collectors not yet finished and the rankers built so far.
fn finish_within(cs: Vec<PositiveCollector>, cache: &mut Option<Vec<(ScoreMaps, Vec<u8>)>>, reserved: &mut u64, budget: u64) -> Vec<Ranker> {
    cs.into_iter()
        .map(|p| {
            if let Some(c) = cache.as_mut() {
                crate::metrics::split::fit_cache(c, *reserved + p.finish_bytes_bound(), budget);
            }
            *reserved -= p.heap_bytes();
            let r = p.finish();
            *reserved += r.heap_bytes();
            r
        })
        .collect()
}

/// Per method, the bootstrap grid fixed from pass 1: its anomaly keys, its
/// normal keys' coarse histogram and the thresholds test counts at.
fn boot_grids(rankers: &[Ranker], normal: &[crate::metrics::drift::NormalStats], thresholds: &[Vec<f32>]) -> Result<Vec<Grid>> {
    rankers
        .iter()
        .zip(normal)
        .enumerate()
        .map(|(m, (r, n))| Grid::build(r.keys(), &r.positive_counts(), n.coarse(), thresholds.get(m).map_or(&[][..], |t| &t[..]), crate::metrics::bootgrid::PER_CLASS))
        .collect()
}

/// Pass `step` of `split` in the plan: test's, a drifted copy's, else val's.
fn split_pass(cx: &Ctx, split: &Split, step: u8) -> super::PassKind {
    match cx.drifted.iter().position(|d| *d == split.name) {
        _ if split.name == "test" => super::PassKind::Test(step),
        Some(i) => super::PassKind::Drifted(i as u16, step),
        None => super::PassKind::Val(step),
    }
}

/// `[<dataset>/]<model>`'s pass `step` of `split`: its progress label and
/// its collective id.
fn pass_names(cx: &Ctx, split: &Split, model: &str, step: u32) -> (String, String) {
    (format!("[{}] {} pass {step}/2", cx.who(model), split.name), format!("{}{model}.{}.{step}", cx.tag, split.name))
}

/// Score `images` of `split` in order and hand each image's maps, labels
/// and logits dtype to `add`, with one image of overlap: image `i + 1` is
/// scored while image `i` is accumulated (`rayon::join`), so the threads one
/// stage leaves idle (five methods on two cores, a serial tail, a GPU
/// dispatch) work on the other. `add` still sees the images one at a time,
/// in image order, so the results do not depend on the overlap. Errors are
/// those of the plain loop: an earlier image's failure wins. Seconds waiting
/// for the reader thread are charged to `read`; `score` and `rank` are each
/// stage's own wall time (they overlap, so they may sum to more than the
/// pass took).
#[allow(clippy::too_many_arguments)]
fn stream_scored(
    cx: &Ctx,
    split: &Split,
    model: &str,
    scorer: &mut dyn Scorer,
    plan: &ScorePlan,
    images: Range<usize>,
    mut add: impl FnMut(usize, ScoreMaps, Vec<u8>, &'static str) -> Result<()> + Send,
) -> Result<()> {
    let inp = cx.inp;
    let ctx = |i: usize| format!("{}/{} [{}]", split.name, split.stems[i], model);
    type Scored = (usize, ScoreMaps, Vec<u8>, &'static str);
    let mut add_one = |(i, maps, lab, dtype): Scored| cx.timed(|p| &mut p.rank, || add(i, maps, lab, dtype)).with_context(|| ctx(i));
    let t = Instant::now();
    let mut inside = 0.0;
    let mut pending: Option<Scored> = None;
    let out = for_each_image(split, model, inp, images, |i, lg, lab| {
        let t0 = Instant::now();
        let dtype = if inp.logits { lg.dtype() } else { "none" };
        let prev = pending.take();
        let (scored, added) = rayon::join(
            || cx.timed(|p| &mut p.score, || score_image(scorer, lg, plan, inp, split, model, i)).with_context(|| ctx(i)),
            || prev.map(&mut add_one).transpose(),
        );
        added?;
        pending = Some((i, scored?, lab, dtype));
        inside += t0.elapsed().as_secs_f64();
        Ok(())
    });
    let t1 = Instant::now();
    // the last image (also when a later one failed to read: its error, if
    // any, comes first, as in the plain loop)
    let last = pending.take().map(&mut add_one).transpose();
    inside += t1.elapsed().as_secs_f64();
    cx.charge(|p| &mut p.read, (t.elapsed().as_secs_f64() - inside).max(0.0));
    last?;
    out
}

/// Pass 1: positives, probe thresholds, image scores (and the score maps
/// while they fit the cache).
fn pass1(cx: &Ctx, split: &Split, model: &str, scorer: &mut dyn Scorer, plan: &ScorePlan, probes: Vec<Vec<f32>>, opts: &SplitOpts) -> Result<Pass1> {
    let (inp, bar) = (cx.inp, cx.progress);
    let nm = plan.methods.len() + inp.external.len();
    let nt = if opts.types > 1 { opts.types } else { 0 };
    let (label, id) = pass_names(cx, split, model, 1);
    let mut p1 = Pass1::new(nm, nt, opts, probes);
    cx.collective(
        split_pass(cx, split, 1),
        label,
        &id,
        split.stems.len(),
        &mut p1,
        |st, images| {
            stream_scored(cx, split, model, scorer, plan, images, |_, maps, lab, dtype| {
                st.add(maps, lab, dtype, opts)?;
                bar.inc();
                Ok(())
            })
        },
        |st| st.shipped(opts.ship_maps),
        |st, d| st.absorb(d),
    )?;
    Ok(p1)
}

/// Pass 2: rank every negative among pass 1's positives, from the cached
/// score maps or by scoring the images again. With a GPU scorer the exact
/// ranking runs on the same device ([`DeviceRank`]); the other pass-2
/// accumulators stay on the host.
#[allow(clippy::too_many_arguments)]
fn pass2(cx: &Ctx, split: &Split, model: &str, scorer: &mut dyn Scorer, plan: &ScorePlan, cache: Option<Vec<(ScoreMaps, Vec<u8>)>>, mut p2: Pass2) -> Result<Pass2> {
    let bar = cx.progress;
    let ctx = |i: usize| format!("{}/{} [{}]", split.name, split.stems[i], model);
    let (label, id) = pass_names(cx, split, model, 2);
    let gpu = scorer.gpu_context().cloned();
    cx.collective(
        split_pass(cx, split, 2),
        label,
        &id,
        split.stems.len(),
        &mut p2,
        |st, images| {
            let mut dev = DeviceRank::new(cx, gpu.as_ref(), st);
            // the cached prefix first, then the images after it scored
            // again: image order either way
            let mut cached = cache.unwrap_or_default();
            let split_at = cached.len().clamp(images.start, images.end);
            for i in images.start..split_at {
                let (maps, lab) = std::mem::take(&mut cached[i]);
                cx.timed(|p| &mut p.rank, || DeviceRank::add(cx, &mut dev, st, &maps, &lab)).with_context(|| ctx(i))?;
                bar.inc();
            }
            drop(cached);
            if split_at < images.end {
                stream_scored(cx, split, model, scorer, plan, split_at..images.end, |_, maps, lab, _| {
                    DeviceRank::add(cx, &mut dev, st, &maps, &lab)?;
                    bar.inc();
                    Ok(())
                })?;
            }
            cx.timed(|p| &mut p.rank, || DeviceRank::finish(cx, dev, st)).with_context(|| format!("split {} [{model}]: ranking on the GPU", split.name))
        },
        |st| st.tally(),
        |st, t| st.absorb(t),
    )?;
    Ok(p2)
}

/// Pass 2's exact rankers on the GPU: per method the split's ranker and
/// its per-anomaly-type rankers, as one [`RankSet`] whose counts are
/// absorbed into [`Pass2`]'s host rankers at the end of the range (so a
/// shard ships the same tally either way, and the statistic is the same
/// integer counts as the CPU's).
struct DeviceRank {
    ctx: GpuContext,
    set: RankSet,
}

impl DeviceRank {
    /// The device ranking over `st`'s positives, or `None` (rank on the
    /// host) without a GPU, or with a notice when the device cannot hold
    /// the tables.
    fn new(cx: &Ctx, gpu: Option<&GpuContext>, st: &Pass2) -> Option<DeviceRank> {
        let ctx = gpu?;
        let mut tables = Vec::new();
        for (m, r) in st.rankers.iter().enumerate() {
            tables.push((m, r.table()));
            tables.extend(st.trankers[m].iter().map(|t| (m, t.table())));
        }
        let set = RankPass::new(ctx).and_then(|pass| RankSet::new(ctx, &pass, &tables));
        match set {
            Ok(set) => Some(DeviceRank { ctx: ctx.clone(), set }),
            Err(e) => {
                cx.progress.println(&format!("notice: ranking on the CPU: the GPU could not take the rank tables ({e:#})"));
                None
            }
        }
    }

    /// One image into pass 2: the exact ranks on the device when there is
    /// one, everything else (or everything) on the host.
    fn add(cx: &Ctx, dev: &mut Option<DeviceRank>, st: &mut Pass2, maps: &ScoreMaps, lab: &[u8]) -> Result<()> {
        match dev {
            Some(d) => {
                cx.timed(|p| &mut p.rank_device, || d.set.add_image(&d.ctx, &maps.maps, lab))?;
                st.add_rest(maps, lab)?;
            }
            None => st.add(maps, lab)?,
        }
        Ok(())
    }

    /// Wait for the device and add its counts to the host rankers, in
    /// [`new`](Self::new)'s order.
    fn finish(cx: &Ctx, dev: Option<DeviceRank>, st: &mut Pass2) -> Result<()> {
        let Some(mut d) = dev else { return Ok(()) };
        let mut tallies = cx.timed(|p| &mut p.rank_device, || d.set.tallies(&d.ctx))?.into_iter();
        for (m, r) in st.rankers.iter_mut().enumerate() {
            r.absorb(&tallies.next().context("internal error: a device tally is missing")?)?;
            for t in st.trankers[m].iter_mut() {
                t.absorb(&tallies.next().context("internal error: a device tally is missing")?)?;
            }
        }
        Ok(())
    }
}

/// A run-level warning: shown on stderr now (above the progress bar),
/// recorded in results.json.
pub(crate) fn warn(cx: &Ctx, warnings: &mut Vec<String>, w: String) {
    cx.progress.println(&format!("warning: {w}"));
    warnings.push(w);
}
