//! `bench run`: wires the rooms together for one sweep.
//!
//! Why it is separate from the rooms: the order of work (calibration, then
//! val, then test with the val thresholds) is policy, not mechanism. Each
//! split is visited in two streaming passes (positives, then ranks of the
//! negatives; see `metrics::engine`); small splits keep their score maps
//! between the passes, large ones are re-scored, so memory never grows with
//! the pixel count. A reader thread decodes the next image while the current
//! one is scored.

use crate::config::{Config, Device};
use crate::data::npy::read_logits_into;
use crate::data::resize::{Resize, resize_logits};
use crate::data::{Dataset, LabelMap, Logits, Split, label, read_logits, read_mask};
use crate::external::{External, MethodRef};
use crate::metrics::drift::{DriftStats, NormalStats, kl, mmd2};
use crate::metrics::region::{ComponentConfig, ComponentStats, aupro, region_weights};
use crate::metrics::{Counts, OperatingPoint, PositiveCollector, ThresholdCounter, counts_of};
use crate::report::results::*;
use crate::scores::calib::{CalibrationFile, ModelCalibration};
use crate::scores::{Calibration, Method, ScoreMaps, ScorePlan, Scorer};
use anyhow::{Context, Result, bail, ensure};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use crate::metrics::drift::Refiner;
use crate::metrics::engine::{Ranker, Tally};
use crate::shard::{Exec, is_pending};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::time::Instant;

/// Score maps of a split are kept between the two passes when they fit in
/// this many bytes; otherwise the split is scored twice.
pub const SCORE_CACHE_BYTES: usize = 256 << 20;

pub struct RunOptions {
    /// Overrides the config's `device`.
    pub device: Option<Device>,
    pub progress: bool,
}

pub struct RunOutput {
    pub results: Results,
    pub manifest: serde_json::Value,
    /// Test-split statistic per (model, method), with the thresholds of the
    /// honest evaluation, for curves and plots.
    pub curves: Vec<(String, MethodRef, Counts, Vec<f64>)>,
    /// `drift.json`: per (model, method, split) normal-score histograms, the
    /// input of `bench drift a b`.
    pub drift: serde_json::Value,
    /// `calibration.json` (when SML or HEAT ran): the full fitted statistics
    /// per model, reusable with the `calibration` config key.
    pub calibration: Option<String>,
    /// `conventions.md` (`metrics.all_conventions`).
    pub conventions_md: Option<String>,
}

/// The scorer for a device choice, and `cpu` / `gpu`.
pub fn make_scorer(device: Device) -> Result<(Box<dyn Scorer>, &'static str)> {
    use crate::scores::cpu::CpuScorer;
    use crate::scores::gpu::GpuScorer;
    match device {
        Device::Cpu => Ok((Box::new(CpuScorer), "cpu")),
        Device::Gpu => {
            let g = GpuScorer::new(true).context("--device gpu")?;
            eprintln!("device: {}", g.device());
            Ok((Box::new(g), "gpu"))
        }
        Device::Auto => match GpuScorer::new(false) {
            Ok(g) => {
                eprintln!("device: {}", g.device());
                Ok((Box::new(g), "gpu"))
            }
            Err(e) => {
                eprintln!("notice: no hardware GPU adapter ({e:#}); scoring on the CPU (use --device gpu to accept a software adapter)");
                Ok((Box::new(CpuScorer), "cpu"))
            }
        },
    }
}

/// Read one image's mask and logits (into `buf`'s allocation when given) and
/// check they describe the same pixels.
/// SHA-256 of every input file read, for manifest.json (each file hashed
/// once, on the reader thread, from the page cache).
#[derive(Default)]
pub struct Checksums(std::sync::Mutex<std::collections::BTreeMap<String, String>>);

impl Checksums {
    fn add(&self, p: &std::path::Path) -> Result<()> {
        let k = p.display().to_string();
        if self.0.lock().unwrap().contains_key(&k) {
            return Ok(());
        }
        let bytes = std::fs::read(p).with_context(|| format!("{k}: cannot read"))?;
        let h = sha256_hex(&bytes);
        self.0.lock().unwrap().insert(k, h);
        Ok(())
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.0.lock().unwrap()).unwrap_or_default()
    }
}

/// How input files are read: label convention, resizing, checksums.
pub struct Inputs {
    pub labels: LabelMap,
    pub resize: Resize,
    /// Logits stored `[H, W, C]`.
    pub hwc: bool,
    /// Array of each logits `.npz` to read (`None`: the only one).
    pub npz_key: Option<String>,
    /// Outside methods' precomputed maps, appended after the computed ones.
    pub external: Vec<External>,
    /// Array of each external score-map `.npz` to read.
    pub npz_score_key: Option<String>,
    pub sums: Checksums,
    /// Rounding of every score map before the metrics (`metrics.score_precision`).
    pub precision: crate::metrics::conventions::ScorePrecision,
    /// Whether any built-in method needs the logits. A sweep of external
    /// score maps only (`methods = []`) never opens a logits file.
    pub logits: bool,
}

fn load(split: &Split, model: &str, i: usize, inp: &Inputs, buf: Option<Logits>) -> Result<(Logits, Vec<u8>)> {
    let (lm, sums, rs) = (&inp.labels, &inp.sums, inp.resize);
    let mask = read_mask(&split.labels[i])?;
    lm.check(&mask, &split.labels[i])?;
    if !inp.logits {
        // external maps only: an empty stand-in of the mask's size
        sums.add(&split.labels[i])?;
        let none = Logits { c: 0, h: mask.h, w: mask.w, data: crate::data::LogitData::F32(vec![]) };
        return Ok((none, lm.apply(&mask)));
    }
    let lp = split.logits_path(model, &split.stems[i])?;
    sums.add(&split.labels[i])?;
    sums.add(&lp)?;
    let lg = match buf {
        Some(mut b) => {
            read_logits_into(&lp, inp.npz_key.as_deref(), &mut b)?;
            b
        }
        None => crate::data::npy::read_logits_key(&lp, inp.npz_key.as_deref())?,
    };
    let lg = if inp.hwc { lg.from_hwc() } else { lg };
    if (lg.h, lg.w) != (mask.h, mask.w) && rs != Resize::None {
        let up = resize_logits(&lg, mask.h, mask.w, rs).with_context(|| lp.display().to_string())?;
        return Ok((up, lm.apply(&mask)));
    }
    if (lg.h, lg.w) != (mask.h, mask.w) {
        bail!(
            "{}: logits are {}×{} but the mask {} is {}×{} (set `resize = \"nearest\"` or `\"bilinear\"` to upsample)",
            lp.display(),
            lg.h,
            lg.w,
            split.labels[i].display(),
            mask.h,
            mask.w
        );
    }
    Ok((lg, lm.apply(&mask)))
}

/// Visit every image of a split in order, decoding the next one on a reader
/// thread while `f` works on the current one. Logit buffers travel back to
/// the reader for reuse (fresh allocations cost more than the decoding).
fn for_each_image(
    split: &Split,
    model: &str,
    inp: &Inputs,
    images: Range<usize>,
    mut f: impl FnMut(usize, &Logits, Vec<u8>) -> Result<()>,
) -> Result<()> {
    let first = images.start;
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Logits>();
        s.spawn(move || {
            for i in images {
                let r = load(split, model, i, inp, free_rx.try_recv().ok());
                let failed = r.is_err();
                if tx.send(r).is_err() || failed {
                    break;
                }
            }
        });
        for (i, item) in rx.into_iter().enumerate() {
            let (lg, lab) = item?;
            f(first + i, &lg, lab)?;
            let _ = free_tx.send(lg);
        }
        Ok(())
    })
}

/// Score maps of image `i`: the built-in methods computed from its logits,
/// then the outside methods' precomputed maps read at the mask's size.
fn score_image(scorer: &mut dyn Scorer, lg: &Logits, plan: &ScorePlan, inp: &Inputs, split: &Split, model: &str, i: usize) -> Result<ScoreMaps> {
    let mut maps = score_image_raw(scorer, lg, plan, inp, split, model, i)?;
    if inp.precision != crate::metrics::conventions::ScorePrecision::F32 {
        for (k, m) in maps.maps.iter_mut().enumerate() {
            inp.precision.apply(m).with_context(|| format!("`metrics.score_precision`, score map {} of image {i}", k + 1))?;
        }
    }
    Ok(maps)
}

/// [`score_image`] before `metrics.score_precision` rounding.
fn score_image_raw(scorer: &mut dyn Scorer, lg: &Logits, plan: &ScorePlan, inp: &Inputs, split: &Split, model: &str, i: usize) -> Result<ScoreMaps> {
    // HEAT fitted on per-pixel features reads this image's features.
    let uses_features = plan.methods.contains(&Method::Heat) && plan.heat().is_some_and(|h| h.features());
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

/// One row of `conventions.md`: AUROC, AUPR, FPR95, F1 and a note.
type ConvRow = ([Option<f64>; 4], String);

/// `metrics.all_conventions`: per method, the split's metrics under every
/// preset of [`crate::metrics::conventions::PRESETS`], from the raw scores
/// (two extra passes; the pooled statistic once per score precision, the
/// per-image presets one image at a time). Anomaly-positive numbers only.
fn convention_rows(cx: &Ctx, split: &Split, model: &str, scorer: &mut dyn Scorer, plan: &ScorePlan, nm: usize) -> Result<Vec<Vec<ConvRow>>> {
    use crate::metrics::conventions::{Average, ImageMean, PRESETS, ScorePrecision};
    if !matches!(cx.exec, Exec::Local) {
        bail!("`metrics.all_conventions` is not implemented for sharded runs yet (run without --shard, or use `bench eval --all-conventions` on saved score maps)");
    }
    let precs = [ScorePrecision::F32, ScorePrecision::F16, ScorePrecision::U16];
    let pi = |p: ScorePrecision| precs.iter().position(|&q| q == p).unwrap_or(0);
    let inp = cx.inp;
    let ctx = |i: usize| format!("{}/{} [{}] (all_conventions)", split.name, split.stems[i], model);
    let mut pcs: Vec<Vec<PositiveCollector>> = (0..3).map(|_| (0..nm).map(|_| PositiveCollector::new()).collect()).collect();
    // u16 needs scores in [0, 1]: a method outside it gets no bravo row
    let mut bad: Vec<Vec<Option<String>>> = vec![vec![None; nm]; 3];
    let mut means: Vec<Vec<ImageMean>> = PRESETS.iter().map(|_| (0..nm).map(|_| ImageMean::default()).collect()).collect();
    let round = |p: ScorePrecision, s: &[f32]| -> Result<Vec<f32>> {
        let mut v = s.to_vec();
        p.apply(&mut v)?;
        Ok(v)
    };
    for_each_image(split, model, inp, 0..split.stems.len(), |i, lg, lab| {
        let maps = score_image_raw(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?;
        for (m, s) in maps.maps.iter().enumerate() {
            for (k, &p) in precs.iter().enumerate() {
                if bad[k][m].is_some() {
                    continue;
                }
                match round(p, s) {
                    Ok(v) => pcs[k][m].add(&v, &lab, None),
                    Err(e) => bad[k][m] = Some(e.to_string()),
                }
            }
            for (j, pr) in PRESETS.iter().enumerate() {
                if pr.conv.average == Average::Images && bad[pi(pr.conv.score_precision)][m].is_none() {
                    let v = round(pr.conv.score_precision, s)?;
                    means[j][m].add(&counts_of(&v, &lab), &pr.conv);
                }
            }
        }
        Ok(())
    })?;
    let mut rankers: Vec<Vec<Ranker>> = pcs.into_iter().map(|v| v.into_iter().map(|p| p.finish()).collect()).collect();
    for_each_image(split, model, inp, 0..split.stems.len(), |i, lg, lab| {
        let maps = score_image_raw(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?;
        for (m, s) in maps.maps.iter().enumerate() {
            for (k, &p) in precs.iter().enumerate() {
                if bad[k][m].is_none() {
                    rankers[k][m].add(&round(p, s)?, &lab);
                }
            }
        }
        Ok(())
    })?;
    let mut counts: Vec<Vec<Counts>> = vec![];
    for v in rankers {
        counts.push(v.into_iter().map(|r| r.finish()).collect::<Result<Vec<_>>>()?);
    }
    let mut out = vec![vec![]; nm];
    for (m, rows) in out.iter_mut().enumerate() {
        for (j, pr) in PRESETS.iter().enumerate() {
            let k = pi(pr.conv.score_precision);
            rows.push(if let Some(e) = &bad[k][m] {
                ([None; 4], e.clone())
            } else if pr.conv.average == Average::Images {
                let im = &means[j][m];
                (im.mean(), format!("mean over {} images ({} skipped)", im.images(), im.skipped))
            } else {
                let s = pr.conv.summary(&counts[k][m]);
                ([s.auroc, s.aupr, s.fpr95, s.f1], String::new())
            });
        }
    }
    Ok(out)
}

/// `conventions.md`: per (model, method), one row per preset.
fn conventions_markdown(cfg: &Config, rows: &[(String, String, Vec<ConvRow>)]) -> String {
    use crate::metrics::conventions::PRESETS;
    let p = |v: Option<f64>| v.map_or("—".to_string(), |x| format!("{:.4}", 100.0 * x));
    let mut s = format!(
        "# Metric conventions: `{}`, split `test`\n\nThe same scores and pixels under each code's metric convention (README, Metric conventions): AUROC / AUPR / FPR95 / F1 in %, anomaly positive (AUPR-In / FPR95-In: `bench eval --positive normal`). Exact curves; SMIYC's 768-bin approximation is not reproduced.\n",
        cfg.name
    );
    for (model, method, r) in rows {
        s += &format!("\n## {model} — {method}\n\n| convention | AUROC | AUPR | FPR95 | F1 | fpr95 | aupr | precision | note |\n|---|---|---|---|---|---|---|---|---|\n");
        for (pr, (v, note)) in PRESETS.iter().zip(r) {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                pr.name,
                p(v[0]),
                p(v[1]),
                p(v[2]),
                p(v[3]),
                pr.conv.fpr95.name(),
                pr.conv.aupr.name(),
                pr.conv.score_precision.name(),
                note
            );
        }
    }
    s
}

/// What one split yields for one model: per method, the exact statistic,
/// the counts at the probe thresholds and the image-level scores.
struct SplitEval {
    counts: Vec<Counts>,
    /// Per method: AUPRO (when `regions`), and the region count.
    aupro: Vec<Option<f64>>,
    regions: u64,
    components: Vec<Option<ComponentStats>>,
    /// Per method, per anomaly type (only when there are several types).
    type_counts: Vec<Vec<Counts>>,
    /// Score maps kept in memory (small splits), for the bootstrap.
    cache: Option<Vec<(ScoreMaps, Vec<u8>)>>,
    drift: Vec<DriftStats>,
    probes: Vec<ThresholdCounter>,
    image_scores: Vec<Vec<f32>>,
    image_labels: Vec<u8>,
    void: u64,
    images: u64,
    dtype: String,
    /// Per method (`average = "images"`): mean AUROC / AUPR / FPR95 / F1
    /// over images with both classes, images averaged, images skipped.
    image_means: Vec<Option<([Option<f64>; 6], u64, u64)>>,
    /// Per method (`positive = "normal"`): the statistic with normal pixels
    /// positive and the score negated.
    counts_in: Vec<Option<Counts>>,
}

/// Pass 1 over a split: positives, probe thresholds, image scores. Every
/// field merges exactly over consecutive image ranges ([`Pass1::absorb`]),
/// which is what makes sharded runs equal single ones.
#[derive(Serialize, Deserialize)]
struct Pass1 {
    pos: Vec<PositiveCollector>,
    tpos: Vec<Vec<PositiveCollector>>,
    normal: Vec<NormalStats>,
    regions: u64,
    comps: Vec<Option<ComponentStats>>,
    probes: Vec<ThresholdCounter>,
    image_scores: Vec<Vec<f32>>,
    image_labels: Vec<u8>,
    void: u64,
    /// Logit dtype of the last image seen.
    dtype: Option<String>,
    /// The score maps, while they fit [`SCORE_CACHE_BYTES`].
    cache: Option<Vec<(ScoreMaps, Vec<u8>)>>,
    cached_bytes: u64,
    /// `average = "images"`: per method, each image's AUROC / AUPR /
    /// FPR95 / F1 (images with both classes), in image order, and the
    /// number of images skipped. Four numbers per image: bounded.
    #[serde(default)]
    per_image: Vec<Vec<[Option<f64>; 6]>>,
    #[serde(default)]
    per_image_skipped: Vec<u64>,
    /// `positive = "normal"`: per method, the normal pixels' keys (the
    /// positives of the swapped statistic). Empty otherwise.
    #[serde(default)]
    pos_in: Vec<PositiveCollector>,
}

impl Pass1 {
    fn new(nm: usize, nt: usize, opts: &SplitOpts, probes: Vec<Vec<f32>>) -> Self {
        Pass1 {
            pos: (0..nm).map(|_| PositiveCollector::new()).collect(),
            tpos: (0..nm).map(|_| (0..nt).map(|_| PositiveCollector::new()).collect()).collect(),
            normal: (0..nm).map(|_| NormalStats::new()).collect(),
            regions: 0,
            comps: opts.components.iter().map(|c| c.as_ref().map(|c| ComponentStats::new(&c.deltas))).collect(),
            probes: probes.into_iter().map(ThresholdCounter::new).collect(),
            image_scores: vec![Vec::new(); nm],
            image_labels: vec![],
            void: 0,
            dtype: None,
            cache: Some(vec![]),
            cached_bytes: 0,
            per_image: if opts.per_image.is_some() { vec![vec![]; nm] } else { vec![] },
            per_image_skipped: if opts.per_image.is_some() { vec![0; nm] } else { vec![] },
            pos_in: if opts.normal_positive { (0..nm).map(|_| PositiveCollector::new()).collect() } else { vec![] },
        }
    }

    fn add(&mut self, maps: ScoreMaps, lab: Vec<u8>, dtype: &str, opts: &SplitOpts) -> Result<()> {
        self.dtype = Some(dtype.into());
        self.void += lab.iter().filter(|&&l| l == label::VOID).count() as u64;
        let valid = lab.iter().any(|&l| l != label::VOID);
        let rw = if opts.regions {
            let rw = region_weights(&lab, maps.h, maps.w)?;
            self.regions += rw.regions as u64;
            Some(rw)
        } else {
            None
        };
        if valid {
            self.image_labels.push(lab.iter().any(|&l| label::is_anomaly(l)) as u8);
        }
        for (m, s) in maps.maps.iter().enumerate() {
            match &rw {
                Some(rw) => self.pos[m].add_weighted(s, &lab, &rw.weights),
                None => self.pos[m].add(s, &lab, None),
            }
            if let (Some(cfg), Some(acc)) = (&opts.components[m], self.comps[m].as_mut()) {
                crate::metrics::region::component_metrics(s, &lab, maps.h, maps.w, cfg, acc)?;
            }
            for (t, c) in self.tpos[m].iter_mut().enumerate() {
                c.add(s, &lab, Some(t as u8 + 1));
            }
            self.normal[m].add(s, &lab);
            self.probes[m].add(s, &lab);
            let swapped = opts.normal_positive.then(|| crate::metrics::conventions::swap_classes(s, &lab));
            if let Some((s2, l2)) = &swapped {
                self.pos_in[m].add(s2, l2, None);
            }
            if let Some(conv) = &opts.per_image {
                // one image's exact statistic, summarised and dropped
                let c = counts_of(s, &lab);
                if c.defined() {
                    let sm = conv.summary(&c);
                    let (ai, fi) = match &swapped {
                        Some((s2, l2)) => {
                            let ci = counts_of(s2, l2);
                            (ci.aupr(conv.aupr), ci.fpr_at_tpr(0.95, conv.fpr95))
                        }
                        None => (None, None),
                    };
                    self.per_image[m].push([sm.auroc, sm.aupr, sm.fpr95, sm.f1, ai, fi]);
                } else {
                    self.per_image_skipped[m] += 1;
                }
            }
            if valid {
                self.image_scores[m].push(image_score(s, &lab, opts.topk));
            }
        }
        self.cached_bytes += (maps.maps.iter().map(|v| v.len() * 4).sum::<usize>() + lab.len()) as u64;
        if self.cached_bytes > SCORE_CACHE_BYTES as u64 {
            self.cache = None;
        }
        if let Some(c) = self.cache.as_mut() {
            c.push((maps, lab));
        }
        Ok(())
    }

    /// What a shard writes: everything, the score maps only when `maps`
    /// (without them the merged state has none: pass 2 re-scores, exactly).
    fn shipped(&self, maps: bool) -> Pass1 {
        Pass1 {
            pos: self.pos.clone(),
            tpos: self.tpos.clone(),
            normal: self.normal.clone(),
            regions: self.regions,
            comps: self.comps.clone(),
            probes: self.probes.clone(),
            image_scores: self.image_scores.clone(),
            image_labels: self.image_labels.clone(),
            void: self.void,
            dtype: self.dtype.clone(),
            cache: if maps { self.cache.clone() } else { None },
            cached_bytes: self.cached_bytes,
            per_image: self.per_image.clone(),
            per_image_skipped: self.per_image_skipped.clone(),
            pos_in: self.pos_in.clone(),
        }
    }

    /// Fold in the state of the images that follow this one's.
    fn absorb(&mut self, o: Pass1) -> Result<()> {
        ensure!(
            o.pos.len() == self.pos.len() && o.tpos.len() == self.tpos.len() && o.normal.len() == self.normal.len() && o.image_scores.len() == self.image_scores.len(),
            "merging pass states of a different method list"
        );
        for (a, b) in self.pos.iter_mut().zip(o.pos) {
            a.absorb(b)?;
        }
        for (a, b) in self.tpos.iter_mut().zip(o.tpos) {
            for (x, y) in a.iter_mut().zip(b) {
                x.absorb(y)?;
            }
        }
        for (a, b) in self.normal.iter_mut().zip(o.normal) {
            a.absorb(b);
        }
        self.regions += o.regions;
        for (a, b) in self.comps.iter_mut().zip(&o.comps) {
            if let (Some(a), Some(b)) = (a.as_mut(), b.as_ref()) {
                a.merge(b)?;
            }
        }
        for (a, b) in self.probes.iter_mut().zip(&o.probes) {
            a.absorb(b)?;
        }
        for (a, b) in self.image_scores.iter_mut().zip(o.image_scores) {
            a.extend(b);
        }
        self.image_labels.extend(o.image_labels);
        ensure!(o.per_image.len() == self.per_image.len(), "merging pass states with and without per-image metrics");
        for (a, b) in self.per_image.iter_mut().zip(o.per_image) {
            a.extend(b);
        }
        for (a, b) in self.per_image_skipped.iter_mut().zip(o.per_image_skipped) {
            *a += b;
        }
        ensure!(o.pos_in.len() == self.pos_in.len(), "merging pass states with and without normal-positive statistics");
        for (a, b) in self.pos_in.iter_mut().zip(o.pos_in) {
            a.absorb(b)?;
        }
        self.void += o.void;
        if o.dtype.is_some() {
            self.dtype = o.dtype;
        }
        self.cached_bytes += o.cached_bytes;
        self.cache = match (self.cache.take(), o.cache) {
            (Some(mut a), Some(b)) if self.cached_bytes <= SCORE_CACHE_BYTES as u64 => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        Ok(())
    }
}

/// Pass 2 over a split: ranks of the negatives among pass 1's positives,
/// and the refinement of the normal-score percentiles.
struct Pass2 {
    rankers: Vec<Ranker>,
    trankers: Vec<Vec<Ranker>>,
    refiners: Vec<Refiner>,
    /// `positive = "normal"`: the swapped statistic (empty otherwise).
    rankers_in: Vec<Ranker>,
}

/// What a shard ships of [`Pass2`]: integer counts only.
#[derive(Serialize, Deserialize)]
struct Pass2Tally {
    rankers: Vec<Tally>,
    trankers: Vec<Vec<Tally>>,
    refiners: Vec<Vec<Vec<u64>>>,
    #[serde(default)]
    rankers_in: Vec<Tally>,
}

impl Pass2 {
    fn add(&mut self, maps: &ScoreMaps, lab: &[u8]) {
        for (m, s) in maps.maps.iter().enumerate() {
            self.rankers[m].add(s, lab);
            for r in self.trankers[m].iter_mut() {
                r.add(s, lab);
            }
            self.refiners[m].add(s, lab);
            if let Some(r) = self.rankers_in.get_mut(m) {
                let (s2, l2) = crate::metrics::conventions::swap_classes(s, lab);
                r.add(&s2, &l2);
            }
        }
    }

    fn tally(&self) -> Pass2Tally {
        Pass2Tally {
            rankers: self.rankers.iter().map(|r| r.tally()).collect(),
            trankers: self.trankers.iter().map(|v| v.iter().map(|r| r.tally()).collect()).collect(),
            refiners: self.refiners.iter().map(|r| r.tally()).collect(),
            rankers_in: self.rankers_in.iter().map(|r| r.tally()).collect(),
        }
    }

    fn absorb(&mut self, t: Pass2Tally) -> Result<()> {
        for (a, b) in self.rankers.iter_mut().zip(&t.rankers) {
            a.absorb(b)?;
        }
        for (a, b) in self.trankers.iter_mut().zip(&t.trankers) {
            for (x, y) in a.iter_mut().zip(b) {
                x.absorb(y)?;
            }
        }
        for (a, b) in self.refiners.iter_mut().zip(&t.refiners) {
            a.absorb(b)?;
        }
        ensure!(t.rankers_in.len() == self.rankers_in.len(), "merging rank counts with and without normal-positive statistics");
        for (a, b) in self.rankers_in.iter_mut().zip(&t.rankers_in) {
            a.absorb(b)?;
        }
        Ok(())
    }
}

/// What every pass of a run shares: inputs, the execution mode (local,
/// shard, merge), progress.
struct Ctx<'a> {
    inp: &'a Inputs,
    exec: &'a Exec,
    bar: &'a ProgressBar,
    device: &'static str,
    /// Prefix of the pass ids: `<dataset>.` in a `[[datasets]]` sweep.
    tag: String,
}

impl Ctx<'_> {
    /// [`Exec::collective`] with this run's device and input checksums.
    fn collective<S, D: Serialize + serde::de::DeserializeOwned>(
        &self,
        pass: &str,
        images: usize,
        state: &mut S,
        run: impl FnOnce(&mut S, Range<usize>) -> Result<()>,
        export: impl Fn(&S) -> D,
        absorb: impl FnMut(&mut S, D) -> Result<()>,
    ) -> Result<()> {
        let inputs = || self.inp.sums.0.lock().unwrap().clone();
        self.exec.collective(pass, images, self.device, &inputs, state, run, export, absorb)
    }
}

fn eval_split(
    cx: &Ctx,
    split: &Split,
    model: &str,
    scorer: &mut dyn Scorer,
    plan: &ScorePlan,
    probes: Vec<Vec<f32>>,
    opts: &SplitOpts,
) -> Result<SplitEval> {
    let (inp, bar) = (cx.inp, cx.bar);
    let nm = plan.methods.len() + inp.external.len();
    let nt = if opts.types > 1 { opts.types } else { 0 };
    let n = split.stems.len();
    let ctx = |i: usize| format!("{}/{} [{}]", split.name, split.stems[i], model);
    let pass = |step: u32| format!("{}{model}.{}.{step}", cx.tag, split.name);

    // pass 1: positives, probe thresholds, image scores
    let mut p1 = Pass1::new(nm, nt, opts, probes);
    cx.collective(
        &pass(1),
        n,
        &mut p1,
        |st, images| {
            for_each_image(split, model, inp, images, |i, lg, lab| {
                let maps = score_image(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?;
                st.add(maps, lab, if inp.logits { lg.dtype() } else { "none" }, opts).with_context(|| ctx(i))?;
                bar.inc(1);
                Ok(())
            })
        },
        |st| st.shipped(opts.ship_maps),
        |st, d| st.absorb(d),
    )?;
    let Pass1 { pos, tpos, normal, regions, comps, probes, image_scores, image_labels, void, dtype, cache, per_image, per_image_skipped, pos_in, .. } = p1;
    let image_means = (0..nm)
        .map(|m| {
            opts.per_image.as_ref()?;
            let v = &per_image[m];
            let mut out = [None; 6];
            for (k, o) in out.iter_mut().enumerate() {
                let col: Option<Vec<f64>> = v.iter().map(|x| x[k]).collect();
                *o = col.filter(|c| !c.is_empty()).map(|c| crate::metrics::conventions::np_mean(&c));
            }
            Some((out, v.len() as u64, per_image_skipped[m]))
        })
        .collect();

    // pass 2: rank every negative among the positives
    let mut p2 = Pass2 {
        rankers: pos.into_iter().map(|p| p.finish()).collect(),
        trankers: tpos.into_iter().map(|v| v.into_iter().map(|p| p.finish()).collect()).collect(),
        refiners: normal.into_iter().map(|n| n.refine()).collect(),
        rankers_in: pos_in.into_iter().map(|p| p.finish()).collect(),
    };
    cx.collective(
        &pass(2),
        n,
        &mut p2,
        |st, images| match &cache {
            Some(c) => {
                for (maps, lab) in &c[images] {
                    st.add(maps, lab);
                    bar.inc(1);
                }
                Ok(())
            }
            None => for_each_image(split, model, inp, images, |i, lg, lab| {
                st.add(&score_image(scorer, lg, plan, inp, split, model, i).with_context(|| ctx(i))?, &lab);
                bar.inc(1);
                Ok(())
            }),
        },
        |st| st.tally(),
        |st, t| st.absorb(t),
    )?;
    let Pass2 { rankers, trankers, refiners, rankers_in } = p2;
    let counts_in: Vec<Option<Counts>> = if rankers_in.is_empty() {
        vec![None; nm]
    } else {
        rankers_in.into_iter().map(|r| r.finish().map(Some)).collect::<Result<Vec<_>>>()?
    };
    let drift = refiners.into_iter().map(|r| r.finish()).collect();
    let type_counts = trankers
        .into_iter()
        .map(|v| v.into_iter().map(|r| r.finish()).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    let weighted = rankers
        .into_iter()
        .map(|r| r.finish_weighted().with_context(|| format!("split {} [{model}]", split.name)))
        .collect::<Result<Vec<_>>>()?;
    let aupro_v = weighted.iter().map(|w| if opts.regions { aupro(&w.counts, &w.tp_weight, regions, 0.3) } else { None }).collect();
    let counts = weighted.into_iter().map(|w| w.counts).collect();
    Ok(SplitEval {
        counts,
        aupro: aupro_v,
        regions,
        components: comps,
        type_counts,
        cache,
        drift,
        probes,
        image_scores,
        image_labels,
        void,
        images: n as u64,
        dtype: dtype.unwrap_or_else(|| "float32".into()),
        image_means,
        counts_in,
    })
}

/// Per-split options of the evaluation.
struct SplitOpts {
    /// AUPRO: weight positives by 1/|region|.
    regions: bool,
    /// Per method: component-metric configuration (threshold from val).
    components: Vec<Option<ComponentConfig>>,
    /// Number of anomaly types (values in the `anomaly` list).
    types: usize,
    /// Image score: mean of the top-k non-void pixel scores (k ≤ 1: max).
    topk: usize,
    /// Shards ship their score maps with the pass-1 state (the bootstrap
    /// needs them; elsewhere they only spare a re-scoring, not worth a file).
    ship_maps: bool,
    /// `average = "images"`: the rules of the per-image metrics.
    per_image: Option<crate::metrics::conventions::MetricConv>,
    /// `positive = "normal"`: also the swapped statistic.
    normal_positive: bool,
}

/// Image score: max (k ≤ 1) or mean of the k largest non-void pixel scores.
fn image_score(s: &[f32], lab: &[u8], k: usize) -> f32 {
    let valid = s.iter().zip(lab).filter(|p| *p.1 != label::VOID).map(|p| *p.0);
    if k <= 1 {
        return valid.fold(f32::NEG_INFINITY, f32::max);
    }
    let mut v: Vec<f32> = valid.collect();
    let k = k.min(v.len());
    let n = v.len();
    v.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
    let mut top = v[n - k..].to_vec();
    top.sort_unstable_by(|a, b| a.total_cmp(b)); // fixed summation order
    (top.iter().map(|&x| x as f64).sum::<f64>() / k as f64) as f32
}

/// 95 % percentile-bootstrap intervals over resampled images, per method:
/// replicate r draws n images with replacement from a ChaCha8 stream seeded
/// by (seed, r); all methods see the same draws (paired).
fn bootstrap(cache: &[(ScoreMaps, Vec<u8>)], nm: usize, samples: u32, seed: u64, rule: (crate::metrics::Fpr95Rule, crate::metrics::AuprRule)) -> Vec<Bootstrap> {
    use rand::{RngExt, SeedableRng};
    use rayon::prelude::*;
    let n = cache.len();
    let reps: Vec<Vec<Option<(f64, f64, f64)>>> = (0..samples)
        .into_par_iter()
        .map(|r| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(r as u64));
            let draw: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            (0..nm)
                .map(|m| {
                    let mut pc = PositiveCollector::new();
                    for &i in &draw {
                        pc.add(&cache[i].0.maps[m], &cache[i].1, None);
                    }
                    let mut rk = pc.finish();
                    for &i in &draw {
                        rk.add(&cache[i].0.maps[m], &cache[i].1);
                    }
                    let c = rk.finish().ok()?;
                    let s = c.summary_with(rule.0, rule.1);
                    Some((s.auroc?, s.aupr?, s.fpr95?))
                })
                .collect()
        })
        .collect();
    (0..nm)
        .map(|m| {
            let vals: Vec<(f64, f64, f64)> = reps.iter().filter_map(|r| r[m]).collect();
            let ci = |f: fn(&(f64, f64, f64)) -> f64| {
                let mut v: Vec<f64> = vals.iter().map(f).collect();
                v.sort_by(|a, b| a.total_cmp(b));
                Some([crate::metrics::np_percentile(&v, 0.025)?, crate::metrics::np_percentile(&v, 0.975)?])
            };
            Bootstrap { samples, seed, defined: vals.len() as u32, auroc: ci(|x| x.0), aupr: ci(|x| x.1), fpr95: ci(|x| x.2) }
        })
        .collect()
}

fn point(rule: &str, target: Option<f64>, op: Option<OperatingPoint>) -> Point {
    Point {
        rule: rule.into(),
        target,
        threshold: op.map(|o| o.threshold),
        far: op.and_then(|o| o.far()),
        frr: op.and_then(|o| o.frr()),
        precision: op.and_then(|o| o.precision()),
        recall: op.and_then(|o| o.recall()),
        f1: op.and_then(|o| o.f1()),
    }
}

/// Thresholds chosen on `c` for the honest evaluation, in the order
/// f1_optimal, far budgets, frr budgets (None where undefined).
fn choose_thresholds(c: &Counts, cfg: &Config) -> Vec<(String, Option<f64>, Option<OperatingPoint>)> {
    let mut v = vec![(
        "f1_optimal".to_string(),
        None,
        c.best_f1().and_then(|(_, t)| c.thresholds.iter().position(|&x| x == t)).map(|i| c.at_index(i)),
    )];
    for &t in &cfg.metrics.far {
        v.push(("far".into(), Some(t), c.threshold_at_far(t)));
    }
    for &t in &cfg.metrics.frr {
        v.push(("frr".into(), Some(t), c.threshold_at_frr(t)));
    }
    v
}

fn cell(model: &str, m: &MethodRef, split: &str, e: &SplitEval, mi: usize, cfg: &Config, leakage: bool) -> Cell {
    let c = &e.counts[mi];
    let s = cfg.metrics.conv.summary(c);
    let mut warnings = vec![];
    if c.positives == 0 {
        warnings.push(format!("split '{split}' has no anomaly pixels: pixel metrics are undefined"));
    }
    if c.negatives == 0 {
        warnings.push(format!("split '{split}' has no in-distribution pixels: pixel metrics are undefined"));
    }
    let img = counts_of(&e.image_scores[mi], &e.image_labels);
    let mut s = s;
    let mut per_image = None;
    let (mut aupr_in, mut fpr95_in) = match &e.counts_in[mi] {
        Some(ci) => (ci.aupr(cfg.metrics.conv.aupr), ci.fpr_at_tpr(0.95, cfg.metrics.conv.fpr95)),
        None => (None, None),
    };
    if let Some(([auroc, aupr, fpr95, f1, ai, fi], n, skipped)) = e.image_means[mi] {
        if e.counts_in[mi].is_some() {
            (aupr_in, fpr95_in) = (ai, fi);
        }
        // average = "images": the headline numbers are image means; no
        // single threshold attains a mean F1
        s = crate::metrics::Summary { auroc, aupr, fpr95, f1, threshold: None };
        per_image = Some(crate::report::results::ImageAverage { averaged: n, skipped });
        if skipped > 0 {
            warnings.push(format!("average = images: {skipped} image(s) of split '{split}' without both classes skipped, {n} averaged"));
        }
    }
    Cell {
        model: model.into(),
        method: m.id().into(),
        split: split.into(),
        auroc: s.auroc,
        aupr: s.aupr,
        fpr95: s.fpr95,
        f1: s.f1,
        threshold: s.threshold,
        positives: c.positives,
        negatives: c.negatives,
        void: e.void,
        images: e.images,
        distinct_positive_scores: c.thresholds.len() as u64,
        leakage,
        image_auroc: img.auroc(),
        image_aupr: img.average_precision(),
        anomalous_images: img.positives,
        normal_images: img.negatives,
        normal_mean: e.drift[mi].mean,
        normal_p50: e.drift[mi].quantile(0.5),
        normal_p95: e.drift[mi].quantile(0.95),
        normal_p99: e.drift[mi].quantile(0.99),
        aupro: e.aupro[mi],
        regions: e.regions,
        components: None,
        bootstrap: None,
        per_image,
        aupr_in,
        fpr95_in,
        warnings,
    }
}

fn honest(model: &str, m: &MethodRef, src: &str, leakage: bool, pts: Vec<Point>, test: &Counts) -> HonestCell {
    let hard = pts.iter().find(|p| p.rule == "far").and_then(|p| p.threshold);
    let soft = pts.iter().find(|p| p.rule == "frr").and_then(|p| p.threshold);
    HonestCell {
        model: model.into(),
        method: m.id().into(),
        threshold_split: src.into(),
        eval_split: "test".into(),
        leakage,
        oracle_f1: test.best_f1().map(|x| x.0),
        hard_threshold: hard,
        soft_threshold: soft,
        block_fraction: None,
        review_fraction: None,
        points: pts,
    }
}

/// Fraction of the split's non-void pixels at or above `t` (exact when `t`
/// is one of the probe thresholds, which it always is here).
fn frac_at(op: &OperatingPoint) -> f64 {
    (op.tp + op.fp) as f64 / (op.positives + op.negatives).max(1) as f64
}

/// A run-level warning: shown on stderr now, recorded in results.json.
fn warn(warnings: &mut Vec<String>, w: String) {
    eprintln!("warning: {w}");
    warnings.push(w);
}

/// Fit SML / HEAT statistics for one model on `split`: pass 1 (per-image
/// sums), then for HEAT pass 2 (energy moments), each a collective.
fn calibrate(cx: &Ctx, split: &Split, leakage: bool, heat: bool, features: bool, model: &str) -> Result<Calibration> {
    use crate::scores::calib::{EnergyMoments, Sums, first_normal_features, image_sums_features};
    // HEAT on per-pixel features: this image's features, else None.
    let feat_of = |i: usize, lg: &Logits| -> Result<Option<Logits>> {
        if features { Ok(Some(load_features(split, model, i, lg, cx.inp)?)) } else { Ok(None) }
    };
    let (inp, bar, n) = (cx.inp, cx.bar, split.stems.len());
    let pass = |step: &str| format!("{}{model}.{}.{step}", cx.tag, split.name);
    let ctx = |i: usize| format!("{}/{} [{model}]", split.name, split.stems[i]);
    // (shift of the HEAT sums, per-image sums)
    type Cal1 = (Option<Vec<f64>>, Vec<Sums>);
    let mut st: Cal1 = (None, vec![]);
    cx.collective(
        &pass("cal1"),
        n,
        &mut st,
        |st, images| {
            // The shift: the split's first in-distribution pixel, whichever
            // images this process visits (the scan stops at the first image
            // that has one).
            if heat {
                for_each_image(split, model, inp, 0..n, |i, lg, lab| {
                    st.0 = first_normal_features(lg, feat_of(i, lg)?.as_ref(), &lab);
                    if st.0.is_some() { Err(FoundShift.into()) } else { Ok(()) }
                })
                .or_else(|e| if e.is::<FoundShift>() { Ok(()) } else { Err(e) })?;
            }
            let shift = st.0.clone().unwrap_or_default();
            for_each_image(split, model, inp, images, |i, lg, lab| {
                if let Some(f) = st.1.first().map(|s| s.classes())
                    && f != lg.c
                {
                    bail!("{}: {} classes, but earlier calibration images have {f}", ctx(i), lg.c);
                }
                st.1.push(image_sums_features(lg, feat_of(i, lg)?.as_ref(), &lab, heat, &shift));
                bar.inc(1);
                Ok(())
            })
        },
        |st| st.clone(),
        |st, d: Cal1| {
            if d.0.is_some() {
                st.0 = d.0;
            }
            st.1.extend(d.1);
            Ok(())
        },
    )?;
    let mut cal = Calibration::from_sums(&split.name, leakage, heat, &st.1, st.0.as_deref().unwrap_or(&[]))
        .with_context(|| format!("model {model}"))?;
    if heat {
        let mut em: Vec<EnergyMoments> = vec![];
        cx.collective(
            &pass("cal2"),
            n,
            &mut em,
            |em, images| {
                for_each_image(split, model, inp, images, |i, lg, lab| {
                    em.push(cal.energy_moments_features(lg, feat_of(i, lg)?.as_ref(), &lab));
                    bar.inc(1);
                    Ok(())
                })
            },
            |em| em.clone(),
            |em, d: Vec<EnergyMoments>| {
                em.extend(d);
                Ok(())
            },
        )?;
        cal.standardise(&em);
    }
    Ok(cal)
}

/// Stops the scan for the HEAT shift at the first image that has one.
#[derive(Debug)]
struct FoundShift;
impl std::fmt::Display for FoundShift {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("found")
    }
}
impl std::error::Error for FoundShift {}

/// The fitted statistics as reported in results.json.
fn calibration_row(model: &str, cal: &Calibration, heat: bool) -> CalibrationRow {
    CalibrationRow {
        model: model.into(),
        split: cal.split.clone(),
        leakage: cal.leakage,
        pixels: cal.pixels,
        sml_mean: cal.sml.mean.clone(),
        sml_std: cal.sml.std.clone(),
        sml_count: cal.sml.count.clone(),
        heat_classes: if heat { cal.heat.classes.clone() } else { vec![] },
        heat_ridge: cal.heat.ridge,
        heat_el_mean: cal.heat.el_mean,
        heat_el_std: cal.heat.el_std,
        heat_gmm_mean: cal.heat.gmm_mean,
        heat_gmm_std: cal.heat.gmm_std,
    }
}

/// `<split>/features/<model>/`: per-pixel features for HEAT (SPEC §4.1).
fn features_dir(split: &Split, model: &str) -> std::path::PathBuf {
    split.dir.join("features").join(model)
}

/// The features `[D, H, W]` (f32/f16) of image `i`, same H×W as the mask
/// (= the logits after any resize); errors name the file.
fn load_features(split: &Split, model: &str, i: usize, lg: &Logits, inp: &Inputs) -> Result<Logits> {
    let stem = &split.stems[i];
    let p = features_dir(split, model).join(format!("{stem}.npy"));
    if !p.is_file() {
        bail!("{}: missing features file for image `{stem}` of model `{model}`", p.display());
    }
    inp.sums.add(&p)?;
    let f = read_logits(&p)?;
    if (f.h, f.w) != (lg.h, lg.w) {
        bail!("{}: features are {}×{} but the mask is {}×{} (features are not resized)", p.display(), f.h, f.w, lg.h, lg.w);
    }
    Ok(f)
}

/// Class count of `model`'s logits (from the first test image), to check a
/// reused calibration against before scoring.
fn classes_of(test: &Split, model: &str, inp: &Inputs) -> Result<usize> {
    let Some(stem) = test.stems.first() else { bail!("the test split has no images") };
    let lg = read_logits(&test.logits_path(model, stem)?)?;
    Ok(if inp.hwc { lg.w } else { lg.c })
}

/// The conventions block of results.json.
fn conventions(cfg: &Config, feat_models: &[String]) -> Result<Conventions> {
    Ok(Conventions {
        fpr95: serde_json::to_value(cfg.metrics.fpr95)?.as_str().unwrap_or_default().to_string(),
        convention: cfg.metrics.convention.clone(),
        aupr: (cfg.metrics.conv.aupr != crate::metrics::AuprRule::Ap).then(|| cfg.metrics.conv.aupr.name().to_string()),
        score_precision: (cfg.metrics.conv.score_precision != crate::metrics::conventions::ScorePrecision::F32)
            .then(|| cfg.metrics.conv.score_precision.name().to_string()),
        average: (cfg.metrics.conv.average == crate::metrics::conventions::Average::Images).then(|| "images".to_string()),
        positive: (cfg.metrics.conv.positive == crate::metrics::conventions::Positive::Normal).then(|| "normal".to_string()),
        positive_when: "score >= threshold".into(),
        pooling: "all non-void pixels of the split pooled; exact (no subsampling, no binning)".into(),
        anomaly_values: cfg.anomaly.clone(),
        ignore_values: cfg.ignore.clone(),
        msp_temperature: cfg.method.msp.temperature,
        energy_temperature: cfg.method.energy.temperature,
        sml_variant: cfg.method.sml.variant(),
        heat_variant: (if feat_models.is_empty() {
            format!(
                "logits-only soft-min of z-scored logit energy and tied-covariance class-Gaussian energy (ridge {})",
                crate::scores::calib::RIDGE
            )
        } else {
            format!(
                "soft-min of z-scored logit energy and tied-covariance class-Gaussian energy (ridge {}) on per-pixel features for models [{}], on logits for the others",
                crate::scores::calib::RIDGE,
                feat_models.join(", ")
            )
        }) + &cfg.method.heat.variant(),
        resize: cfg.resize.clone().unwrap_or_else(|| "none".into()),
        image_score: if cfg.metrics.image_topk > 1 {
            format!("mean of the top {} non-void pixel scores", cfg.metrics.image_topk)
        } else {
            "max over non-void pixels".into()
        },
    })
}

/// One model's sweep: calibration, val, then test with val's thresholds.
fn run_model(cx: &Ctx, cfg: &Config, sw: &Sweep, scorer: &mut dyn Scorer, mc: &crate::config::ModelCfg) -> Result<ModelOut> {
    let (methods, cols, test, val, calib, need_cal) = (&sw.methods, &sw.cols, sw.test, sw.val, sw.calib, sw.need_cal);
    let mut o = ModelOut::default();
    let calibration = if need_cal {
        let (split, leakage) = match calib {
            Some(c) => (c, false),
            None => (test, true),
        };
        let cal = match &sw.reuse {
            Some((path, file)) => file.model(path, &mc.id, classes_of(test, &mc.id, cx.inp)?, sw.need_heat)?,
            None => {
                let feat = sw.need_heat && features_dir(split, &mc.id).is_dir();
                calibrate(cx, split, leakage, sw.need_heat, feat, &mc.id)?
            }
        };
        o.cal_file = Some(ModelCalibration { model: mc.id.clone(), classes: cal.sml.mean.len(), calibration: cal.clone() });
        for w in &cal.warnings {
            warn(&mut o.warnings, format!("{}: {w}", mc.id));
        }
        o.calibration = Some(calibration_row(&mc.id, &cal, sw.need_heat));
        Some(cal)
    } else {
        None
    };
    let cal_split = calibration.as_ref().map(|c| c.split.clone());
    // HEAT on features: every evaluated split must have them.
    let use_feat = sw.need_heat && calibration.as_ref().is_some_and(|c| c.heat.features());
    for s in [Some(test), val].into_iter().flatten() {
        let dir = features_dir(s, &mc.id);
        if use_feat && !dir.is_dir() {
            bail!("{}: missing: HEAT of model {} was fitted on per-pixel features, so every split needs them", dir.display(), mc.id);
        }
        if sw.need_heat && !use_feat && dir.is_dir() {
            warn(&mut o.warnings, format!("{}: features ignored: HEAT of model {} was fitted on logits (no features in its calibration)", dir.display(), mc.id));
        }
    }
    o.features = use_feat;
    let plan = ScorePlan {
        methods: methods.clone(),
        msp_temperature: cfg.method.msp.temperature,
        energy_temperature: cfg.method.energy.temperature,
        calibration,
        sml_post: cfg.method.sml,
        heat_post: cfg.method.heat,
    };
    let leak = |m: &MethodRef, split: &str| m.needs_calibration() && cal_split.as_deref() == Some(split);

    // val first: its thresholds are probes on test
    let track = |t: f32| match cfg.metrics.component_track.as_str() {
        "obstacle" => ComponentConfig::obstacle_track(t),
        _ => ComponentConfig::anomaly_track(t),
    };
    let mut sopts = SplitOpts {
        regions: cfg.metrics.regions,
        components: vec![None; cols.len()],
        types: cfg.anomaly.len(),
        topk: cfg.metrics.image_topk as usize,
        ship_maps: false,
        per_image: (cfg.metrics.conv.average == crate::metrics::conventions::Average::Images).then_some(cfg.metrics.conv),
        normal_positive: cfg.metrics.conv.positive == crate::metrics::conventions::Positive::Normal,
    };
    let val_eval = match val {
        Some(v) => Some(eval_split(cx, v, &mc.id, scorer, &plan, vec![vec![]; cols.len()], &sopts)?),
        None => None,
    };
    let chosen: Vec<_> = match &val_eval {
        Some(ve) => ve.counts.iter().map(|c| choose_thresholds(c, cfg)).collect(),
        None => vec![vec![]; cols.len()],
    };
    let probes: Vec<Vec<f32>> = chosen.iter().map(|ch| ch.iter().filter_map(|x| x.2.map(|o| o.threshold as f32)).collect()).collect();
    if cfg.metrics.regions {
        // components at the val-F1-optimal threshold (never a test-chosen one)
        sopts.components = chosen.iter().map(|ch| ch.first().and_then(|x| x.2).map(|o| track(o.threshold as f32))).collect();
    }
    sopts.ship_maps = cfg.metrics.bootstrap > 0;
    let te = eval_split(cx, test, &mc.id, scorer, &plan, probes, &sopts)?;
    if cfg.metrics.all_conventions {
        let rows = convention_rows(cx, test, &mc.id, scorer, &plan, cols.len())?;
        for (m, r) in cols.iter().zip(rows) {
            o.conv_rows.push((mc.name.clone(), m.display().to_string(), r));
        }
    }
    let boots = match (&te.cache, cfg.metrics.bootstrap) {
        (_, 0) => None,
        (Some(c), b) => Some(bootstrap(c, cols.len(), b, cfg.metrics.bootstrap_seed, (cfg.metrics.conv.fpr95, cfg.metrics.conv.aupr))),
        (None, _) => {
            let w = format!(
                "{}: bootstrap skipped: the test split's score maps exceed the {} MiB in-memory budget",
                mc.id,
                SCORE_CACHE_BYTES >> 20
            );
            warn(&mut o.warnings, w);
            None
        }
    };
    o.model = Some(ModelRow { id: mc.id.clone(), name: mc.name.clone(), dtype: te.dtype.clone() });

    if let Some(ve) = &val_eval {
        for (mi, m) in cols.iter().enumerate() {
            o.cells.push(cell(&mc.id, m, "val", ve, mi, cfg, leak(m, "val")));
            let (a, b) = (&ve.drift[mi], &te.drift[mi]);
            let shift = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
            o.drift_rows.push(DriftRow {
                model: mc.id.clone(),
                method: m.id().into(),
                reference: "val".into(),
                split: "test".into(),
                mean_shift: shift(a.mean, b.mean),
                p95_shift: shift(a.quantile(0.95), b.quantile(0.95)),
                kl: kl(b, a),
                mmd2: mmd2(b, a),
            });
            o.drift_hists.push(serde_json::json!({"model": mc.id, "method": m.id(), "split": "val", "stats": a}));
        }
    }
    for (mi, m) in cols.iter().enumerate() {
        o.drift_hists.push(serde_json::json!({"model": mc.id, "method": m.id(), "split": "test", "stats": &te.drift[mi]}));
    }
    for (mi, m) in cols.iter().enumerate() {
        let mut c = cell(&mc.id, m, "test", &te, mi, cfg, leak(m, "test"));
        c.bootstrap = boots.as_ref().map(|b| b[mi].clone());
        if let (Some(acc), Some(cc)) = (&te.components[mi], &sopts.components[mi]) {
            let s = acc.summary();
            c.components = Some(Components {
                threshold: cc.threshold as f64,
                threshold_split: "val".into(),
                track: cfg.metrics.component_track.clone(),
                siou: s.siou_gt,
                ppv: s.ppv,
                mean_f1: s.mean_f1,
                gt_components: s.gt_components,
                pred_components: s.pred_components,
            });
        }
        o.cells.push(c);
        for (t, tc) in te.type_counts[mi].iter().enumerate() {
            let s = cfg.metrics.conv.summary(tc);
            let vt = chosen[mi].first().and_then(|x| x.2).map(|o| o.threshold as f32);
            o.failure_rows.push(FailureRow {
                model: mc.id.clone(),
                method: m.id().into(),
                split: "test".into(),
                anomaly_value: cfg.anomaly[t],
                positives: tc.positives,
                auroc: s.auroc,
                aupr: s.aupr,
                fpr95: s.fpr95,
                recall_at_val_threshold: vt.and_then(|t| {
                    let i = tc.thresholds.iter().rposition(|&x| x >= t)?;
                    Some(tc.tp[i] as f64 / tc.positives as f64)
                }),
            });
        }
        let tc = &te.counts[mi];
        let (src, ops): (&str, Vec<(String, Option<f64>, Option<OperatingPoint>)>) = match &val_eval {
            Some(_) => {
                let mut k = 0;
                let ops = chosen[mi]
                    .iter()
                    .map(|(rule, target, op)| {
                        let on_test = op.map(|_| {
                            k += 1;
                            te.probes[mi].point(k - 1)
                        });
                        (rule.clone(), *target, on_test)
                    })
                    .collect();
                ("val", ops)
            }
            // No val split: thresholds come from test itself (leakage);
            // they are test positive scores, so test counts are exact there.
            None => ("test", choose_thresholds(tc, cfg)),
        };
        let pts: Vec<Point> = ops.iter().map(|(r, t, op)| point(r, *t, *op)).collect();
        let mut h = honest(&mc.id, m, src, val_eval.is_none() || leak(m, "test"), pts, tc);
        let hard_op = ops.iter().find(|o| o.0 == "far").and_then(|o| o.2);
        let soft_op = ops.iter().find(|o| o.0 == "frr").and_then(|o| o.2);
        if let Some(hop) = hard_op {
            h.block_fraction = Some(frac_at(&hop));
            h.review_fraction = soft_op.map(|sop| (frac_at(&sop) - frac_at(&hop)).max(0.0));
        }
        let keep = h.points.iter().filter_map(|p| p.threshold).collect();
        o.honest.push(h);
        o.curves.push((mc.id.clone(), m.clone(), te.counts[mi].clone(), keep));
    }
    if val_eval.is_none() {
        let w = format!("{}: no `val` split: honest-evaluation thresholds were chosen on `test` (leakage)", mc.id);
        warn(&mut o.warnings, w);
    }
    Ok(o)
}

/// Everything one model contributes to the results.
#[derive(Default)]
struct ModelOut {
    cells: Vec<Cell>,
    honest: Vec<HonestCell>,
    calibration: Option<CalibrationRow>,
    model: Option<ModelRow>,
    drift_rows: Vec<DriftRow>,
    drift_hists: Vec<serde_json::Value>,
    failure_rows: Vec<FailureRow>,
    curves: Vec<(String, MethodRef, Counts, Vec<f64>)>,
    warnings: Vec<String>,
    /// This model's entry of calibration.json.
    cal_file: Option<ModelCalibration>,
    /// HEAT read per-pixel features.
    features: bool,
    /// `metrics.all_conventions`: (model, method display name, rows).
    conv_rows: Vec<(String, String, Vec<ConvRow>)>,
}

/// What `run_exec` produced: the results, or (shards, merges before the
/// last round) the models still waiting for another round.
pub enum RunStatus {
    Done(Box<RunOutput>),
    Waiting { models: Vec<String> },
}

/// The splits and methods of a sweep, resolved once.
struct Sweep<'a> {
    test: &'a Split,
    val: Option<&'a Split>,
    calib: Option<&'a Split>,
    methods: Vec<Method>,
    /// Table columns: the built-in methods, then the outside ones.
    cols: Vec<MethodRef>,
    need_cal: bool,
    need_heat: bool,
    /// `calibration = "..."`: saved statistics reused instead of fitting.
    reuse: Option<(std::path::PathBuf, CalibrationFile)>,
}

/// Number of rounds a sharded run of `cfg` takes: one per streaming pass of
/// a model (calibration 1–2, val 2, test 2).
pub fn rounds(cfg: &Config) -> Result<usize> {
    let mut r = 0;
    for c in cfg.expand()? {
        ensure_synthetic(&c)?;
        let ds = Dataset::open(&c.dataset)?;
        let methods = c.parsed_methods()?;
        // a reused calibration (`calibration = "..."`) takes no rounds
        let need_cal = methods.iter().any(|m| m.needs_calibration()) && c.calibration.is_none();
        let need_heat = methods.contains(&Method::Heat);
        r = r.max(2 + 2 * ds.split("val").is_some() as usize + need_cal as usize * (1 + need_heat as usize));
    }
    Ok(r)
}

/// Generate the synthetic dataset of a `synthetic = "demo"` config when its
/// folder is missing.
fn ensure_synthetic(cfg: &Config) -> Result<()> {
    if let Some(kind) = &cfg.synthetic
        && !cfg.dataset.exists()
    {
        eprintln!(
            "notice: {} does not exist; generating the deterministic synthetic '{kind}' dataset there",
            cfg.dataset.display()
        );
        crate::synth::generate(&cfg.dataset, &crate::synth::SynthSpec::demo())?;
    }
    Ok(())
}

pub fn run(cfg: &Config, cfg_bytes: &[u8], opts: &RunOptions) -> Result<RunOutput> {
    match run_exec(cfg, cfg_bytes, opts, &Exec::Local)? {
        RunStatus::Done(out) => Ok(*out),
        RunStatus::Waiting { .. } => bail!("internal error: a local run waited for shards"),
    }
}

/// [`run`] as a normal run, one shard's round, or a merge (see `shard`).
pub fn run_exec(cfg: &Config, cfg_bytes: &[u8], opts: &RunOptions, exec: &Exec) -> Result<RunStatus> {
    let t0 = Instant::now();
    if cfg.metrics.all_conventions && !matches!(exec, Exec::Local) {
        bail!("`metrics.all_conventions` is not implemented for sharded runs yet (run without --shard, or use `bench eval --all-conventions` on saved score maps)");
    }
    let mut inp = Inputs {
        labels: LabelMap::new(cfg.anomaly.clone(), cfg.ignore.clone())?,
        resize: Resize::parse(cfg.resize.as_deref())?,
        hwc: cfg.layout.as_deref() == Some("hwc"),
        npz_key: cfg.npz_key.clone(),
        external: vec![],
        npz_score_key: cfg.npz_score_key.clone(),
        sums: Checksums::default(),
        precision: cfg.metrics.conv.score_precision,
        logits: !cfg.methods.is_empty(),
    };
    ensure_synthetic(cfg)?;
    let ds = Dataset::open(&cfg.dataset)?;
    let test = ds.split("test").with_context(|| format!("{}: no `test` split", cfg.dataset.display()))?;
    let methods = cfg.parsed_methods()?;
    let model_ids: Vec<String> = cfg.models.iter().map(|m| m.id.clone()).collect();
    let read_splits: Vec<&Split> = [Some(test), ds.split("val")].into_iter().flatten().collect();
    inp.external = crate::external::resolve(&cfg.external, &read_splits, &model_ids)?;
    let inp = inp;
    let sw = Sweep {
        test,
        val: ds.split("val"),
        calib: ds.split("calibration"),
        need_cal: methods.iter().any(|m| m.needs_calibration()),
        need_heat: methods.contains(&Method::Heat),
        cols: methods.iter().map(|&m| MethodRef::Builtin(m)).chain(inp.external.iter().map(|e| e.column())).collect(),
        reuse: match (&cfg.calibration, methods.iter().any(|m| m.needs_calibration())) {
            (Some(p), true) => Some((p.clone(), CalibrationFile::load(p).context("`calibration`")?)),
            _ => None,
        },
        methods,
    };
    let fit_cal = sw.need_cal && sw.reuse.is_none();

    // Fail fast on missing files before any long work.
    for mc in cfg.models.iter().filter(|_| inp.logits) {
        for s in [Some(test), sw.val, if fit_cal { sw.calib } else { None }].into_iter().flatten() {
            s.check_model(&mc.id)?;
        }
    }

    let (mut scorer, device_kind): (Box<dyn Scorer>, &'static str) = match exec {
        // a merge scores nothing
        Exec::Merge(_) => (Box::new(crate::scores::cpu::CpuScorer), "cpu"),
        _ => make_scorer(opts.device.or(cfg.device).unwrap_or_default())?,
    };
    let visits_per_model = {
        let split_visits = |s: &Split| 2 * s.stems.len() as u64;
        let cal_visits = match (fit_cal, sw.calib) {
            (false, _) => 0,
            (true, Some(c)) => (1 + sw.need_heat as u64) * c.stems.len() as u64,
            (true, None) => (1 + sw.need_heat as u64) * test.stems.len() as u64,
        };
        split_visits(test) + sw.val.map_or(0, split_visits) + cal_visits
    };
    let bar = if opts.progress && std::io::stderr().is_terminal() && matches!(exec, Exec::Local) {
        let b = ProgressBar::new(visits_per_model * cfg.models.len() as u64);
        b.set_style(ProgressStyle::with_template("{spinner} {msg:24} [{bar:40}] {pos}/{len} images ({eta})").unwrap().progress_chars("=> "));
        b
    } else {
        ProgressBar::hidden()
    };
    let tag = cfg.tag.as_ref().map(|t| format!("{t}.")).unwrap_or_default();
    let cx = Ctx { inp: &inp, exec, bar: &bar, device: device_kind, tag };

    let mut outs = Vec::new();
    let mut waiting = Vec::new();
    let mut timings = serde_json::Map::new();
    for mc in &cfg.models {
        let tm = Instant::now();
        bar.set_message(mc.id.clone());
        match run_model(&cx, cfg, &sw, scorer.as_mut(), mc) {
            Ok(o) => outs.push(o),
            Err(e) if is_pending(&e) => waiting.push(mc.id.clone()),
            Err(e) => return Err(e),
        }
        timings.insert(mc.id.clone(), serde_json::json!(tm.elapsed().as_secs_f64()));
    }
    bar.finish_and_clear();
    if !waiting.is_empty() {
        return Ok(RunStatus::Waiting { models: waiting });
    }

    let mut warnings = Vec::new();
    let (mut cells, mut honest_cells, mut cal_rows, mut model_rows) = (vec![], vec![], vec![], vec![]);
    let (mut drift_rows, mut drift_hists, mut failure_rows, mut curves) = (vec![], vec![], vec![], vec![]);
    let (mut cal_file, mut feat_models, mut conv_rows) = (vec![], vec![], vec![]);
    for m in outs {
        cal_file.extend(m.cal_file);
        if m.features {
            feat_models.extend(m.model.as_ref().map(|r| r.id.clone()));
        }
        warnings.extend(m.warnings);
        cells.extend(m.cells);
        honest_cells.extend(m.honest);
        cal_rows.extend(m.calibration);
        model_rows.extend(m.model);
        drift_rows.extend(m.drift_rows);
        drift_hists.extend(m.drift_hists);
        failure_rows.extend(m.failure_rows);
        curves.extend(m.curves);
        conv_rows.extend(m.conv_rows);
    }
    let device = exec.device_kind(device_kind);
    let results = Results {
        format: FORMAT.into(),
        name: cfg.name.clone(),
        dataset: cfg.dataset.display().to_string(),
        device: device.clone(),
        conventions: conventions(cfg, &feat_models)?,
        models: model_rows,
        methods: sw
            .cols
            .iter()
            .map(|m| MethodRow {
                id: m.id().into(),
                name: m.display().into(),
                external: inp.external.iter().find(|e| e.id == m.id() && matches!(m, MethodRef::External { .. })).map(|e| e.layout.as_str().into()),
            })
            .collect(),
        cells,
        honest: honest_cells,
        calibration: cal_rows,
        drift: drift_rows,
        failure_modes: failure_rows,
        warnings: warnings.clone(),
    };
    let (adapter, inputs, shards) = match exec {
        Exec::Merge(sh) => (format!("merged from {} shards ({device})", sh.count), serde_json::to_value(&*sh.inputs.lock().unwrap())?, Some(sh.count)),
        _ => (scorer.device(), inp.sums.to_json(), None),
    };
    let manifest = serde_json::json!({
        "tool": "bench",
        "version": env!("CARGO_PKG_VERSION"),
        "git_revision": option_env!("BENCH_GIT_REVISION"),
        "config_sha256": sha256_hex(cfg_bytes),
        "dataset": cfg.dataset.display().to_string(),
        "device": adapter,
        "shards": shards,
        "threads": rayon::current_num_threads(),
        "timings_s": { "total": t0.elapsed().as_secs_f64(), "per_model": timings },
        "warnings": warnings,
        "inputs_sha256": inputs,
        "calibration": match &sw.reuse {
            Some((p, _)) => serde_json::json!(p.display().to_string()),
            None if sw.need_cal => serde_json::json!("fitted"),
            None => serde_json::Value::Null,
        },
    });
    let drift = serde_json::json!({ "format": "bench-drift/1", "cells": drift_hists });
    let calibration = if sw.need_cal { Some(CalibrationFile::new(cal_file).to_json()?) } else { None };
    let conventions_md = cfg.metrics.all_conventions.then(|| conventions_markdown(cfg, &conv_rows));
    Ok(RunStatus::Done(Box::new(RunOutput { results, manifest, curves, drift, calibration, conventions_md })))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
