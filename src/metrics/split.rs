//! The per-split accumulators of the two streaming metric passes.
//!
//! Why here: [`Pass1`] (positives, probe thresholds, image scores, region
//! and component sums, normal-score moments) and [`Pass2`] (every negative
//! ranked among pass 1's positives, percentile refinement) are the metrics
//! room's mechanism; every field merges exactly over consecutive image
//! ranges (`absorb`), which is what makes sharded runs equal single ones.
//! The wiring decides only which images feed them.

use crate::data::label;
use crate::metrics::dashboard::ImageStats;
use crate::metrics::drift::{NormalStats, Refiner};
use crate::metrics::engine::{Ranker, Tally};
use crate::metrics::failure::TypeHits;
use crate::metrics::operating::{RankHist, RankRefiner, RankTally};
use crate::metrics::bootgrid::{HistCollector, HistSet};
use crate::metrics::region::{ComponentConfig, ComponentStats, region_weights};
use crate::metrics::{PositiveCollector, ThresholdCounter, counts_of};
use crate::scores::ScoreMaps;
use anyhow::{Result, ensure};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Score maps of a split are kept between the two passes up to this many
/// bytes (the default of `metrics.score_cache_mib`): the longest prefix of
/// the split's images whose maps fit is kept, and pass 2 scores only the
/// images after it again. Only a speed trade: no figure depends on it (the
/// bootstrap reads per-image histograms, not the maps).
pub const SCORE_CACHE_BYTES: usize = 256 << 20;

/// Pass 1 over a split: positives, probe thresholds, image scores. Every
/// field merges exactly over consecutive image ranges ([`Pass1::absorb`]),
/// which is what makes sharded runs equal single ones.
#[derive(Serialize, Deserialize)]
pub struct Pass1 {
    pub pos: Vec<PositiveCollector>,
    pub tpos: Vec<Vec<PositiveCollector>>,
    pub normal: Vec<NormalStats>,
    pub regions: u64,
    pub comps: Vec<Option<ComponentStats>>,
    pub probes: Vec<ThresholdCounter>,
    pub image_scores: Vec<Vec<f32>>,
    pub image_labels: Vec<u8>,
    pub void: u64,
    /// Logit dtype of the last image seen.
    pub dtype: Option<String>,
    /// The score maps of this range's first images, as many as fit
    /// `cache_budget` bytes (`None`: none kept).
    pub cache: Option<Vec<(ScoreMaps, Vec<u8>)>>,
    /// Bytes of the maps in `cache`.
    pub cached_bytes: u64,
    /// An image of this range did not fit: `cache` stops before it, so no
    /// later image (nor a later range's) may join the prefix.
    #[serde(default)]
    pub cache_closed: bool,
    /// [`SplitOpts::cache_bytes`] (kept here so a merge applies it too).
    #[serde(default = "default_cache_budget")]
    pub cache_budget: u64,
    /// `average = "images"`: per method, each image's AUROC / AUPR /
    /// FPR95 / F1 (images with both classes), in image order, and the
    /// number of images skipped. Four numbers per image: bounded.
    #[serde(default)]
    pub per_image: Vec<Vec<[Option<f64>; 6]>>,
    #[serde(default)]
    pub per_image_skipped: Vec<u64>,
    /// `average = "images"`: per image (all images, in order), whether it
    /// has both classes (labels only, so the same for every method).
    #[serde(default)]
    pub per_image_defined: Vec<bool>,
    /// `positive = "normal"`: per method, the normal pixels' keys (the
    /// positives of the swapped statistic). Empty otherwise.
    #[serde(default)]
    pub pos_in: Vec<PositiveCollector>,
    /// Pixel-level `far_at_frr`: per method, the normal-score histogram of
    /// the split the thresholds are chosen on (empty elsewhere).
    #[serde(default)]
    pub ranks: Vec<RankHist>,
    /// Failure modes: per image and anomaly type, the pixels at or above
    /// each method's soft threshold ([`SplitOpts::soft`]; None without).
    #[serde(default)]
    pub type_hits: Option<TypeHits>,
    /// Drift sensitivity (`SplitOpts::dashboard`): per method, one record
    /// per image at the probe thresholds (empty otherwise).
    #[serde(default)]
    pub dash: Vec<ImageStats>,
    /// `metrics.binning = "smiyc"` (SplitOpts::binned): per method SMIYC's
    /// binned curve, one frame per image (empty otherwise).
    #[serde(default)]
    pub binned: Vec<crate::metrics::binned::BinnedCurve>,
}

fn default_cache_budget() -> u64 {
    SCORE_CACHE_BYTES as u64
}

impl Pass1 {
    pub fn new(nm: usize, nt: usize, opts: &SplitOpts, probes: Vec<Vec<f32>>) -> Self {
        let probes_of = probes.clone();
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
            cache_closed: false,
            cache_budget: opts.cache_bytes,
            per_image: if opts.per_image.is_some() { vec![vec![]; nm] } else { vec![] },
            per_image_skipped: if opts.per_image.is_some() { vec![0; nm] } else { vec![] },
            per_image_defined: vec![],
            pos_in: if opts.normal_positive { (0..nm).map(|_| PositiveCollector::new()).collect() } else { vec![] },
            ranks: if opts.frr_budgets.is_empty() { vec![] } else { vec![RankHist::default(); nm] },
            type_hits: (!opts.soft.is_empty()).then(|| TypeHits::new(opts.soft.clone())),
            dash: match opts.dashboard {
                Some(keep_hist) => probes_of.into_iter().map(|t| ImageStats::new(t, keep_hist)).collect(),
                None => vec![],
            },
            binned: if opts.binned { vec![Default::default(); nm] } else { vec![] },
        }
    }

    pub fn add(&mut self, maps: ScoreMaps, lab: Vec<u8>, dtype: &str, opts: &SplitOpts) -> Result<()> {
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
        if opts.per_image.is_some() {
            self.per_image_defined.push(lab.iter().any(|&l| label::is_anomaly(l)) && lab.iter().any(|&l| l == label::NORMAL));
        }
        let img = Image { lab: &lab, h: maps.h, w: maps.w, rw: rw.as_ref(), valid };
        // the methods in parallel (each touches only its own accumulators,
        // in image order: results do not depend on the schedule); the first
        // error in method order wins
        self.per_method()
            .into_par_iter()
            .zip(maps.maps.par_iter())
            .enumerate()
            .map(|(m, (acc, s))| acc.add(s, &img, opts.components[m].as_ref(), opts))
            .collect::<Vec<Result<()>>>()
            .into_iter()
            .collect::<Result<()>>()?;
        if let Some(h) = self.type_hits.as_mut() {
            h.add(&maps.maps, &lab, opts.types);
        }
        self.keep((maps, lab));
        Ok(())
    }

    /// Append one image's maps to the cached prefix while the budget holds;
    /// the first image that does not fit closes it. The positive collectors
    /// share the budget: they grow with the split, the cache need not, so as
    /// they grow the prefix gives back its last images (pass 2 scores them
    /// again; [`fit_cache`], which pass 2 applies to the rankers too).
    fn keep(&mut self, img: (ScoreMaps, Vec<u8>)) {
        let bytes = cached_size(&img);
        let collected: u64 = self.pos.iter().chain(self.tpos.iter().flatten()).chain(&self.pos_in).map(PositiveCollector::heap_bytes).sum();
        match self.cache.as_mut() {
            Some(c) if !self.cache_closed && self.cached_bytes + bytes + collected <= self.cache_budget => {
                c.push(img);
                self.cached_bytes += bytes;
            }
            Some(c) => {
                self.cache_closed = true;
                self.cached_bytes = fit_cache(c, collected, self.cache_budget);
            }
            None => self.cache_closed = true,
        }
    }

    /// Each method's accumulators, borrowed apart.
    fn per_method(&mut self) -> Vec<MethodPass1<'_>> {
        let mut comps = self.comps.iter_mut();
        let mut ranks = self.ranks.iter_mut();
        let mut pos_in = self.pos_in.iter_mut();
        let mut per_image = self.per_image.iter_mut().zip(self.per_image_skipped.iter_mut());
        let mut dash = self.dash.iter_mut();
        let mut binned = self.binned.iter_mut();
        self.pos
            .iter_mut()
            .zip(self.tpos.iter_mut())
            .zip(self.normal.iter_mut())
            .zip(self.probes.iter_mut())
            .zip(self.image_scores.iter_mut())
            .map(|((((pos, tpos), normal), probes), image_scores)| MethodPass1 {
                pos,
                tpos,
                normal,
                probes,
                image_scores,
                comps: comps.next().and_then(|c| c.as_mut()),
                ranks: ranks.next(),
                pos_in: pos_in.next(),
                per_image: per_image.next(),
                dash: dash.next(),
                binned: binned.next(),
            })
            .collect()
    }

    /// What a shard writes: everything, the score maps only when `maps`
    /// (without them the merged state has none: pass 2 re-scores, exactly).
    pub fn shipped(&self, maps: bool) -> Pass1 {
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
            cached_bytes: if maps { self.cached_bytes } else { 0 },
            cache_closed: self.cache_closed || !maps,
            cache_budget: self.cache_budget,
            per_image: self.per_image.clone(),
            per_image_skipped: self.per_image_skipped.clone(),
            per_image_defined: self.per_image_defined.clone(),
            pos_in: self.pos_in.clone(),
            ranks: self.ranks.clone(),
            type_hits: self.type_hits.clone(),
            dash: self.dash.clone(),
            binned: self.binned.clone(),
        }
    }

    /// `average = "images"`: per method, the mean of each per-image figure
    /// (AUROC, AUPR, FPR95, F1, AUPR-In, FPR95-In) over the images that had
    /// both classes, how many were averaged and how many skipped.
    pub fn image_means(&self, opts: &SplitOpts) -> Vec<Option<([Option<f64>; 6], u64, u64)>> {
        (0..self.pos.len())
            .map(|m| {
                opts.per_image.as_ref()?;
                let v = &self.per_image[m];
                let mut out = [None; 6];
                for (k, o) in out.iter_mut().enumerate() {
                    let col: Option<Vec<f64>> = v.iter().map(|x| x[k]).collect();
                    *o = col.filter(|c| !c.is_empty()).map(|c| crate::metrics::conventions::np_mean(&c));
                }
                Some((out, v.len() as u64, self.per_image_skipped[m]))
            })
            .collect()
    }

    /// Fold in the state of the images that follow this one's.
    pub fn absorb(&mut self, o: Pass1) -> Result<()> {
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
        self.per_image_defined.extend(o.per_image_defined);
        for (a, b) in self.per_image_skipped.iter_mut().zip(o.per_image_skipped) {
            *a += b;
        }
        ensure!(o.pos_in.len() == self.pos_in.len(), "merging pass states with and without normal-positive statistics");
        for (a, b) in self.pos_in.iter_mut().zip(o.pos_in) {
            a.absorb(b)?;
        }
        ensure!(o.ranks.len() == self.ranks.len(), "merging pass states with and without FRR-budget histograms");
        for (a, b) in self.ranks.iter_mut().zip(&o.ranks) {
            a.absorb(b);
        }
        match (self.type_hits.as_mut(), o.type_hits) {
            (Some(a), Some(b)) => a.absorb(b)?,
            (None, None) => {}
            _ => anyhow::bail!("merging pass states with and without per-type hit counts"),
        }
        ensure!(o.binned.len() == self.binned.len(), "merging pass states with and without SMIYC binned curves");
        for (a, b) in self.binned.iter_mut().zip(o.binned) {
            a.absorb(b);
        }
        ensure!(o.dash.len() == self.dash.len(), "merging pass states with and without per-image drift records");
        for (a, b) in self.dash.iter_mut().zip(o.dash) {
            a.absorb(b)?;
        }
        self.void += o.void;
        if o.dtype.is_some() {
            self.dtype = o.dtype;
        }
        // the prefix continues into the next range only while it is whole
        match o.cache {
            Some(b) => b.into_iter().for_each(|img| self.keep(img)),
            None => self.cache_closed = true,
        }
        self.cache_closed |= o.cache_closed;
        Ok(())
    }
}

/// One image as every method's pass-1 accumulators see it.
struct Image<'a> {
    lab: &'a [u8],
    h: usize,
    w: usize,
    /// AUPRO's per-pixel region weights, when asked for.
    rw: Option<&'a crate::metrics::region::RegionWeights>,
    /// Whether the image has a non-void pixel (it gets an image score).
    valid: bool,
}

/// One method's pass-1 accumulators, borrowed from [`Pass1`]'s per-method
/// vectors so the methods of an image can be accumulated in parallel.
struct MethodPass1<'a> {
    pos: &'a mut PositiveCollector,
    tpos: &'a mut Vec<PositiveCollector>,
    normal: &'a mut NormalStats,
    probes: &'a mut ThresholdCounter,
    image_scores: &'a mut Vec<f32>,
    comps: Option<&'a mut ComponentStats>,
    ranks: Option<&'a mut RankHist>,
    pos_in: Option<&'a mut PositiveCollector>,
    per_image: Option<(&'a mut Vec<[Option<f64>; 6]>, &'a mut u64)>,
    dash: Option<&'a mut ImageStats>,
    binned: Option<&'a mut crate::metrics::binned::BinnedCurve>,
}

impl MethodPass1<'_> {
    /// One method's score map `s` of one image.
    fn add(self, s: &[f32], img: &Image, cfg: Option<&ComponentConfig>, opts: &SplitOpts) -> Result<()> {
        let lab = img.lab;
        match img.rw {
            Some(rw) => self.pos.add_weighted(s, lab, &rw.weights),
            None => self.pos.add(s, lab, None),
        }
        if let (Some(cfg), Some(acc)) = (cfg, self.comps) {
            crate::metrics::region::component_metrics(s, lab, img.h, img.w, cfg, acc)?;
        }
        for (t, c) in self.tpos.iter_mut().enumerate() {
            c.add(s, lab, Some(t as u8 + 1));
        }
        // the normal-score histogram(s), the probe counts and the drift
        // record see the same pixels at the same thresholds (Pass1::new
        // builds `probes` and `dash` from one list): one walk feeds them
        let score = img.valid.then(|| image_score(s, lab, opts.topk));
        match (self.dash, self.ranks) {
            (Some(d), ranks) => {
                let normal = match ranks {
                    Some(r) => {
                        self.normal.add_with(r.hist_mut(), s, lab);
                        None
                    }
                    None => Some(&mut *self.normal),
                };
                let c = d.add_with(s, lab, score, normal);
                if !self.probes.add_counts(&d.thresholds, &c.caught, &c.rejected, c.anomalies, c.normals) {
                    self.probes.add(s, lab);
                }
            }
            (None, Some(r)) => {
                self.normal.add_with(r.hist_mut(), s, lab);
                self.probes.add(s, lab);
            }
            (None, None) => {
                self.normal.add(s, lab);
                self.probes.add(s, lab);
            }
        }
        let swapped = opts.normal_positive.then(|| crate::metrics::conventions::swap_classes(s, lab));
        if let (Some((s2, l2)), Some(p)) = (&swapped, self.pos_in) {
            p.add(s2, l2, None);
        }
        if let (Some(conv), Some((per_image, skipped))) = (&opts.per_image, self.per_image) {
            // one image's exact statistic, summarised and dropped
            let c = counts_of(s, lab);
            if c.defined() {
                let sm = conv.summary(&c);
                let (ai, fi) = match &swapped {
                    Some((s2, l2)) => {
                        let ci = counts_of(s2, l2);
                        (ci.aupr(conv.aupr), ci.fpr_at_tpr(0.95, conv.fpr95))
                    }
                    None => (None, None),
                };
                per_image.push([sm.auroc, sm.aupr, sm.fpr95, sm.f1, ai, fi]);
            } else {
                *skipped += 1;
            }
        }
        if let Some(v) = score {
            self.image_scores.push(v);
        }
        if let Some(b) = self.binned {
            b.add_frame(s, lab)?;
        }
        Ok(())
    }
}

/// Pass 2 over a split: ranks of the negatives among pass 1's positives,
/// and the refinement of the normal-score percentiles.
pub struct Pass2 {
    pub rankers: Vec<Ranker>,
    pub trankers: Vec<Vec<Ranker>>,
    pub refiners: Vec<Refiner>,
    /// `positive = "normal"`: the swapped statistic (empty otherwise).
    pub rankers_in: Vec<Ranker>,
    /// Pixel-level `far_at_frr` (empty unless the split chooses thresholds).
    pub ranks: Vec<RankRefiner>,
    /// The bootstrap's per-image histograms ([`SplitOpts::boot`]): the one
    /// pass-2 accumulator that reads every score map on the host.
    pub boot: Option<HistCollector>,
}

/// What a shard ships of [`Pass2`]: integer counts only.
#[derive(Serialize, Deserialize)]
pub struct Pass2Tally {
    pub rankers: Vec<Tally>,
    pub trankers: Vec<Vec<Tally>>,
    pub refiners: Vec<Vec<Vec<u64>>>,
    #[serde(default)]
    pub rankers_in: Vec<Tally>,
    #[serde(default)]
    pub ranks: Vec<RankTally>,
    /// The shard's images' bootstrap histograms, in image order.
    #[serde(default)]
    pub boot: Option<HistSet>,
}

impl Pass2 {
    pub fn add(&mut self, maps: &ScoreMaps, lab: &[u8]) -> Result<()> {
        self.add_methods(maps, lab, true)
    }

    /// [`add`](Self::add) without the exact rankers (`rankers`,
    /// `trankers`): what stays on the host when a device ranks the
    /// negatives (`pipeline::passes`, `scores::gpu::rank::RankSet`) and
    /// absorbs its counts at the end of the range.
    pub fn add_rest(&mut self, maps: &ScoreMaps, lab: &[u8]) -> Result<()> {
        self.add_methods(maps, lab, false)
    }

    /// One image into every method's accumulators (with the exact rankers
    /// when `exact`), the methods in parallel beside the bootstrap
    /// histograms: each method touches only its own accumulators, so the
    /// counts do not depend on the schedule.
    fn add_methods(&mut self, maps: &ScoreMaps, lab: &[u8], exact: bool) -> Result<()> {
        use rayon::prelude::*;
        ensure!(maps.maps.len() == self.rankers.len(), "internal error: {} score maps for {} rankers", maps.maps.len(), self.rankers.len());
        let (mut rankers_in, mut ranks) = (self.rankers_in.iter_mut(), self.ranks.iter_mut());
        let jobs: Vec<_> = self
            .rankers
            .iter_mut()
            .zip(self.trankers.iter_mut())
            .zip(self.refiners.iter_mut())
            .zip(&maps.maps)
            .map(|(((r, t), f), s)| (r, t, f, rankers_in.next(), ranks.next(), s))
            .collect();
        let boot = self.boot.as_mut();
        let ((), b) = rayon::join(
            || {
                jobs.into_par_iter().for_each(|(r, t, f, r_in, rank, s)| {
                    if exact {
                        r.add(s, lab);
                        for x in t.iter_mut() {
                            x.add(s, lab);
                        }
                    }
                    f.add(s, lab);
                    if let Some(r) = r_in {
                        let (s2, l2) = crate::metrics::conventions::swap_classes(s, lab);
                        r.add(&s2, &l2);
                    }
                    if let Some(r) = rank {
                        r.add(s, lab);
                    }
                })
            },
            || boot.map_or(Ok(()), |b| b.add(maps, lab)),
        );
        b
    }

    pub fn tally(&self) -> Pass2Tally {
        Pass2Tally {
            rankers: self.rankers.iter().map(|r| r.tally()).collect(),
            trankers: self.trankers.iter().map(|v| v.iter().map(|r| r.tally()).collect()).collect(),
            refiners: self.refiners.iter().map(|r| r.tally()).collect(),
            rankers_in: self.rankers_in.iter().map(|r| r.tally()).collect(),
            ranks: self.ranks.iter().map(|r| r.tally()).collect(),
            boot: self.boot.as_ref().map(|b| b.tally()),
        }
    }

    pub fn absorb(&mut self, t: Pass2Tally) -> Result<()> {
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
        ensure!(t.ranks.len() == self.ranks.len(), "merging rank counts with and without FRR-budget refinements");
        for (a, b) in self.ranks.iter_mut().zip(&t.ranks) {
            a.absorb(b)?;
        }
        match (self.boot.as_mut(), &t.boot) {
            (Some(a), Some(b)) => a.absorb(b)?,
            (None, None) => {}
            _ => anyhow::bail!("merging rank counts with and without bootstrap histograms"),
        }
        Ok(())
    }
}

/// Bytes one cached image holds: its maps and labels.
fn cached_size(img: &(ScoreMaps, Vec<u8>)) -> u64 {
    (img.0.maps.iter().map(|v| v.len() * 4).sum::<usize>() + img.1.len()) as u64
}

/// Cut a split's cached prefix of maps back to the longest one that fits
/// `budget` beside `reserved` bytes (the positive collectors, or pass 2's
/// exact rankers: they grow with the split's anomaly pixels), and return
/// the bytes it keeps. The cache is only a speed trade: the images cut off
/// are scored again in pass 2, so a large split costs re-scoring, not
/// memory beyond the budget.
pub fn fit_cache(cache: &mut Vec<(ScoreMaps, Vec<u8>)>, reserved: u64, budget: u64) -> u64 {
    let mut used = reserved;
    let keep = cache
        .iter()
        .take_while(|img| {
            used += cached_size(img);
            used <= budget
        })
        .count();
    if keep < cache.len() {
        for (maps, _) in cache.drain(keep..) {
            maps.free();
        }
        // hand the freed maps back to the system: what grew instead is
        // allocated elsewhere
        crate::scores::pool::release();
    }
    cache.iter().map(cached_size).sum()
}

/// Per-split options of the evaluation.
#[derive(Clone)]
pub struct SplitOpts {
    /// AUPRO: weight positives by 1/|region|.
    pub regions: bool,
    /// Per method: component-metric configuration (threshold from val).
    pub components: Vec<Option<ComponentConfig>>,
    /// Number of anomaly types (values in the `anomaly` list).
    pub types: usize,
    /// Image score: mean of the top-k non-void pixel scores (k ≤ 1: max).
    pub topk: usize,
    /// Shards ship their score maps with the pass-1 state (they only spare
    /// a re-scoring, rarely worth a file; the bootstrap does not need them).
    pub ship_maps: bool,
    /// Collect the bootstrap's per-image histograms in pass 2 (with
    /// `regions`, also AUPRO's region weights: `bootgrid`).
    pub boot: bool,
    /// `metrics.score_cache_mib` in bytes: keep the maps between the passes
    /// while they fit.
    pub cache_bytes: u64,
    /// `average = "images"`: the rules of the per-image metrics.
    pub per_image: Option<crate::metrics::conventions::MetricConv>,
    /// `positive = "normal"`: also the swapped statistic.
    pub normal_positive: bool,
    /// FRR budgets whose pixel-level `far_at_frr` thresholds are chosen on
    /// this split (the normal-score order statistics they need); empty on a
    /// split that only applies thresholds.
    pub frr_budgets: Vec<f64>,
    /// Failure modes: per method, the pixel soft threshold chosen on val
    /// (empty: no per-image type hits are counted).
    pub soft: Vec<Option<f32>>,
    /// Drift sensitivity: per-image records at the probe thresholds
    /// (`Some(keep_hist)`: also each image's normal-score histogram, on the
    /// baseline split); `None` on splits that need none (val).
    pub dashboard: Option<bool>,
    /// `metrics.binning = "smiyc"`: SMIYC's binned curve per method (test).
    pub binned: bool,
}

/// Image score: max (k ≤ 1) or mean of the k largest non-void pixel scores.
pub fn image_score(s: &[f32], lab: &[u8], k: usize) -> f32 {
    if k <= 1 {
        // independent running maxima per lane so the loop vectorises (max
        // is exact, so the lane split cannot change the value); void
        // padding of the last chunk is −∞ like any void pixel
        let mut m = [f32::NEG_INFINITY; crate::metrics::LANES];
        crate::metrics::for_lanes(s, lab, |a, l| {
            for j in 0..m.len() {
                m[j] = m[j].max(if l[j] != label::VOID { a[j] } else { f32::NEG_INFINITY });
            }
        });
        return m.into_iter().fold(f32::NEG_INFINITY, f32::max);
    }
    let valid = s.iter().zip(lab).filter(|p| *p.1 != label::VOID).map(|p| *p.0);
    let mut v: Vec<f32> = valid.collect();
    let k = k.min(v.len());
    let n = v.len();
    v.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
    let mut top = v[n - k..].to_vec();
    top.sort_unstable_by(|a, b| a.total_cmp(b)); // fixed summation order
    (top.iter().map(|&x| x as f64).sum::<f64>() / k as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(cache_bytes: u64) -> SplitOpts {
        SplitOpts {
            regions: false,
            components: vec![None],
            types: 1,
            topk: 1,
            ship_maps: true,
            boot: false,
            cache_bytes,
            per_image: None,
            normal_positive: false,
            frr_budgets: vec![],
            soft: vec![],
            dashboard: None,
            binned: false,
        }
    }

    /// 1,000 pixels of one method: 4,000 + 1,000 bytes of cache each.
    fn image(i: usize) -> (ScoreMaps, Vec<u8>) {
        let maps = ScoreMaps { h: 10, w: 100, maps: vec![(0..1000).map(|p| (p * 7 + i) as f32 % 13.0).collect()] };
        (maps, (0..1000).map(|p| (p % 17 == 0) as u8).collect())
    }

    fn pass(budget: u64, images: std::ops::Range<usize>) -> Pass1 {
        let o = opts(budget);
        let mut p = Pass1::new(1, 0, &o, vec![vec![]]);
        for i in images {
            let (m, l) = image(i);
            p.add(m, l, "f32", &o).unwrap();
        }
        p
    }

    fn cached(p: &Pass1) -> Vec<f32> {
        p.cache.iter().flatten().map(|(m, _)| m.maps[0][0]).collect()
    }

    /// The cache keeps the longest prefix of images that fits its budget
    /// (pass 2 then scores only the rest), and a merge of consecutive
    /// ranges continues the prefix only while the first range's is whole.
    #[test]
    fn score_cache_keeps_the_longest_prefix_that_fits() {
        let p = pass(12_500, 0..4);
        assert_eq!((cached(&p), p.cached_bytes, p.cache_closed), (vec![0.0, 1.0], 10_000, true));
        let whole = pass(1 << 20, 0..4);
        assert_eq!((cached(&whole).len(), whole.cache_closed), (4, false));
        assert_eq!(cached(&pass(0, 0..4)), Vec::<f32>::new());

        // a whole first range: the second range's images join until full
        let mut a = pass(17_000, 0..2);
        a.absorb(pass(17_000, 2..5)).unwrap();
        assert_eq!((cached(&a), a.cache_closed), (vec![0.0, 1.0, 2.0], true));
        // a closed first range: nothing of the next joins
        let mut a = pass(12_500, 0..3);
        a.absorb(pass(12_500, 3..4)).unwrap();
        assert_eq!((cached(&a), a.cache_closed), (vec![0.0, 1.0], true));
        // a range shipped without its maps ends the prefix
        let mut a = pass(1 << 20, 0..2);
        a.absorb(pass(1 << 20, 2..4).shipped(false)).unwrap();
        let mut b = pass(1 << 20, 0..2).shipped(false);
        b.absorb(pass(1 << 20, 2..4)).unwrap();
        assert_eq!((cached(&a).len(), a.cache_closed, cached(&b).len(), b.cache_closed), (2, true, 0, true));
    }

    /// The positive collectors share the cache's budget: as they grow, the
    /// cached prefix gives back its last images, and stays a prefix.
    #[test]
    fn score_cache_gives_way_to_the_positives() {
        let o = opts(40_000);
        let mut p = Pass1::new(1, 0, &o, vec![vec![]]);
        let mut most = 0;
        for i in 0..12 {
            let (m, _) = image(i);
            // every pixel positive: 4,000 bytes of keys per image
            p.add(m, vec![1; 1000], "f32", &o).unwrap();
            let collected = p.pos[0].heap_bytes();
            assert!(p.cached_bytes + collected <= 40_000 || cached(&p).is_empty(), "image {i}: {} + {collected}", p.cached_bytes);
            let c = cached(&p);
            assert_eq!(c, (0..c.len()).map(|j| image(j).0.maps[0][0]).collect::<Vec<_>>(), "a prefix");
            most = most.max(c.len());
        }
        assert!(most >= 4 && cached(&p).len() < most, "the prefix grew to {most}, then gave way (now {})", cached(&p).len());
        assert!(p.cache_closed);
    }

    /// The lane-split maximum equals the plain fold over non-void pixels
    /// at every length around the lane width, with void anywhere (also
    /// at the maximum) and all-void images (−∞).
    #[test]
    fn image_max_equals_the_plain_fold() {
        let mut x = 0x9e37_79b9u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for n in [0usize, 1, 15, 16, 17, 31, 32, 33, 100, 1000] {
            for void_share in [0u32, 3, 10] {
                let s: Vec<f32> = (0..n).map(|_| (next() % 2001) as f32 / 100.0 - 10.0).collect();
                let lab: Vec<u8> = (0..n).map(|_| if next() % 10 < void_share { label::VOID } else { (next() % 2) as u8 }).collect();
                let want = s.iter().zip(&lab).filter(|p| *p.1 != label::VOID).map(|p| *p.0).fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(image_score(&s, &lab, 1).to_bits(), want.to_bits(), "n {n} void {void_share}");
                assert_eq!(image_score(&s, &lab, 0).to_bits(), want.to_bits());
            }
        }
    }
}
