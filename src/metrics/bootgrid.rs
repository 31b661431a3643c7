//! Per-image histograms of score keys on a fixed per-method grid: the
//! state the bootstrap resamples instead of the score maps.
//!
//! Why: resampling images needs, per image, enough of its scores to rebuild
//! every metric of any multiset of images. Holding the maps stops at a
//! memory budget; a histogram per image on a grid fixed *before* pass 2
//! (from pass 1's per-method key distribution) costs a few KiB per image
//! and merges over image ranges by concatenation, so sharded runs equal
//! local ones byte for byte.
//!
//! **The grid** ([`Grid::build`]) of one method is a sorted list of bin
//! lower edges in key space ([`key`], order-preserving f32 → u32): up to
//! [`PER_CLASS`] equal-mass bins of the split's anomaly keys (exact keys
//! from pass 1; a key holding more than its share gets a bin of its own,
//! `[k, k+1)`), up to [`PER_CLASS`] equal-mass bins of its normal keys
//! (pass 1 only knows them on the 2^16 coarse grid; a coarse bucket heavier
//! than its share is cut into up to 16 equal key ranges), and one edge at
//! each threshold chosen on val ([`SplitOpts`](super::split::SplitOpts)
//! probes): a bin starting exactly at `t` makes the counts at `score ≥ t`
//! of any resample exact. At most 2 + 4·PER_CLASS + thresholds edges
//! (well under the 32,768 a `u16` bin index allows).
//!
//! **Memory** per image and method: 6 bytes per non-empty (bin, class)
//! cell (`u16` index = 2·bin + anomaly, `u32` count), at most
//! 6 · 2 · bins. At StreetHazards scale (1,500 test images of 512² pixels,
//! five methods, bins ≈ 4,100): worst case 1,500 · 5 · 6 · 2 · 4,100 B
//! ≈ 369 MB; measured on the demo (12,288 pixels per image) see the README
//! ("Bootstrap"). Score maps of the same split: 1,500 · 5 · 4 · 512² B
//! = 7.9 GB.
//!
//! **AUPRO** (`metrics.regions`, [`HistCollector::with_regions`]): PRO is a
//! TPR in which each anomaly pixel of region k weighs 1/|R_k|
//! (`region::region_weights`), so per image the bootstrap also needs, per
//! non-empty *anomaly* cell, the sum of its pixels' weights (`f64`,
//! [`ImageHist::pro`]: 8 more bytes per anomaly cell, at most 8 · bins) and
//! per image its region count K_i ([`HistSet::regions`]: 4 bytes per image,
//! shared by the methods). Per image × method then at most
//! 6 · 2 · bins + 8 · bins = 20 · bins bytes (≈ 82 KB at 4,100 bins; the
//! StreetHazards worst case above becomes ≈ 615 MB). Runs without regions
//! hold and ship none of it.

use super::key;
use crate::data::label;
use crate::scores::ScoreMaps;
use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

/// Target bins per class (anomaly, normal) of a method's grid.
pub const PER_CLASS: usize = 2048;

/// Most bins a grid may have (bin index and class share a `u16`).
const MAX_BINS: usize = 1 << 15;

/// One method's bins: `edges[b]` is the lowest key of bin `b`; bin `b`
/// holds keys in `[edges[b], edges[b+1])` (the last up to `u32::MAX`).
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    edges: Vec<u32>,
    /// Per coarse bucket (top 16 key bits): the bin holding its lowest key.
    lut: Vec<u32>,
}

/// Equal-mass cut points over ascending (key, count) runs: a new bin
/// starts where adding the run would exceed `total / per` (and the bin is
/// not empty); a run heavier than that gets `split(key, count, cap)` edges.
fn equal_mass(runs: impl Iterator<Item = (u32, u64)>, total: u64, per: usize, mut heavy: impl FnMut(u32, u64, u64, &mut Vec<u32>), out: &mut Vec<u32>) {
    if total == 0 {
        return;
    }
    let cap = total.div_ceil(per as u64).max(1);
    let mut acc = 0u64;
    for (k, c) in runs.filter(|r| r.1 > 0) {
        if c >= cap {
            heavy(k, c, cap, out);
            acc = 0;
            continue;
        }
        if acc > 0 && acc + c > cap {
            out.push(k);
            acc = 0;
        }
        acc += c;
    }
}

impl Grid {
    /// The grid of one method from pass 1: the anomaly keys (distinct,
    /// ascending, with counts), the normal keys' coarse histogram (2^16
    /// buckets of the top key bits) and the thresholds the bootstrap must
    /// count exactly.
    pub fn build(pos_keys: &[u32], pos_counts: &[u64], normal_coarse: &[u64], thresholds: &[f32], per_class: usize) -> Result<Grid> {
        ensure!(pos_keys.len() == pos_counts.len(), "internal error: {} anomaly keys with {} counts", pos_keys.len(), pos_counts.len());
        let mut e = vec![0u32];
        let p: u64 = pos_counts.iter().sum();
        let own_bin = |k: u32, _c: u64, _cap: u64, out: &mut Vec<u32>| {
            out.push(k);
            out.extend(k.checked_add(1));
        };
        equal_mass(pos_keys.iter().copied().zip(pos_counts.iter().copied()), p, per_class, own_bin, &mut e);
        let n: u64 = normal_coarse.iter().sum();
        let cut_bucket = |lo: u32, c: u64, cap: u64, out: &mut Vec<u32>| {
            let parts = c.div_ceil(cap).min(16);
            out.extend((0..parts).map(|j| lo + (j * 65536 / parts) as u32));
            out.extend(lo.checked_add(65536));
        };
        let runs = normal_coarse.iter().enumerate().map(|(b, &c)| ((b as u32) << 16, c));
        equal_mass(runs, n, per_class, cut_bucket, &mut e);
        e.extend(thresholds.iter().map(|&t| key(t)));
        e.sort_unstable();
        e.dedup();
        ensure!(e.len() <= MAX_BINS, "internal error: a bootstrap grid of {} bins (at most {MAX_BINS})", e.len());
        let lut = (0..1u64 << 16).map(|c| (e.partition_point(|&x| (x as u64) <= c << 16) - 1) as u32).collect();
        Ok(Grid { edges: e, lut })
    }

    pub fn bins(&self) -> usize {
        self.edges.len()
    }

    /// The bin holding key `k`.
    #[inline]
    pub fn bin(&self, k: u32) -> usize {
        let c = (k >> 16) as usize;
        let lo = self.lut[c] as usize;
        let hi = if c + 1 < self.lut.len() { self.lut[c + 1] as usize + 1 } else { self.edges.len() };
        lo + self.edges[lo + 1..hi].partition_point(|&x| x <= k)
    }

    /// Whether bin `b` holds one key only (its pixels all tie: no binning
    /// error there).
    pub fn single_key(&self, b: usize) -> bool {
        let hi = self.edges.get(b + 1).map_or(1u64 << 32, |&x| x as u64);
        hi - self.edges[b] as u64 == 1
    }

    /// The bin starting exactly at threshold `t`'s key (counts at
    /// `score ≥ t` are then exact), if there is one.
    pub fn bin_at(&self, t: f32) -> Option<usize> {
        let k = key(t);
        let b = self.bin(k);
        (self.edges[b] == k).then_some(b)
    }

    /// Lowest score of bin `b`.
    pub fn lower(&self, b: usize) -> f32 {
        super::unkey(self.edges[b])
    }
}

/// One image's counts for one method: `idx[j] = 2·bin + anomaly`
/// ascending, `cnt[j]` the pixels there (non-empty cells only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageHist {
    pub idx: Vec<u16>,
    pub cnt: Vec<u32>,
    /// With regions (AUPRO): per anomaly cell (odd `idx`, in `idx` order)
    /// the sum of its pixels' region weights 1/|R_k|, summed in pixel
    /// order; empty without. Always written: shard states are postcard,
    /// which is not self-describing, so a skipped field would not decode.
    #[serde(default)]
    pub pro: Vec<f64>,
}

impl ImageHist {
    /// Count one image's non-void pixels of one method on `g` (and, with
    /// `weights`, sum the anomaly pixels' region weights per bin).
    fn of(g: &Grid, scores: &[f32], labels: &[u8], weights: Option<&[f64]>) -> ImageHist {
        let mut dense = vec![0u32; 2 * g.bins()];
        let mut dense_w = if weights.is_some() { vec![0.0f64; g.bins()] } else { vec![] };
        for (p, (&s, &l)) in scores.iter().zip(labels).enumerate() {
            if l != label::VOID {
                let b = g.bin(key(s));
                let anomaly = l != label::NORMAL;
                dense[2 * b + anomaly as usize] += 1;
                if let (true, Some(w)) = (anomaly, weights) {
                    dense_w[b] += w[p];
                }
            }
        }
        let mut h = ImageHist::default();
        for (i, &c) in dense.iter().enumerate().filter(|p| *p.1 > 0) {
            h.idx.push(i as u16);
            h.cnt.push(c);
            if weights.is_some() && i % 2 == 1 {
                h.pro.push(dense_w[i / 2]);
            }
        }
        h
    }

    /// Bytes held (the memory figure of the module doc).
    pub fn bytes(&self) -> usize {
        self.idx.len() * 2 + self.cnt.len() * 4 + self.pro.len() * 8
    }
}

/// The per-image histograms of a split, in image order, and which images
/// have a non-void pixel (those have an image score).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistSet {
    /// `images[i][m]`: image i, method m.
    pub images: Vec<Vec<ImageHist>>,
    pub valid: Vec<bool>,
    /// With regions (AUPRO): per image its number of ground-truth regions
    /// K_i; empty without (then no AUPRO interval). Always written (see
    /// [`ImageHist::pro`]).
    #[serde(default)]
    pub regions: Vec<u32>,
}

impl HistSet {
    /// Whether the histograms carry AUPRO's region weights (one region
    /// count per image; a split without images has no interval anyway).
    pub fn has_regions(&self) -> bool {
        !self.regions.is_empty()
    }
}

/// Pass 2's bootstrap accumulator: the grids (fixed from pass 1) and the
/// histograms of the images seen so far.
#[derive(Debug, Clone)]
pub struct HistCollector {
    pub grids: Vec<Grid>,
    pub set: HistSet,
    /// Also AUPRO's per-cell region weights and per-image region counts.
    pub regions: bool,
}

impl HistCollector {
    pub fn new(grids: Vec<Grid>) -> Self {
        HistCollector { grids, set: HistSet::default(), regions: false }
    }

    /// [`new`](Self::new) that also records what AUPRO's intervals need
    /// (only for runs that compute AUPRO: it costs a labelling per image).
    pub fn with_regions(grids: Vec<Grid>) -> Self {
        HistCollector { regions: true, ..Self::new(grids) }
    }

    /// Count one image of every method (methods in parallel). Errors when
    /// the maps and labels disagree in shape (the labelling needs `h·w`).
    pub fn add(&mut self, maps: &ScoreMaps, labels: &[u8]) -> Result<()> {
        use rayon::prelude::*;
        let rw = if self.regions {
            let rw = crate::metrics::region::region_weights(labels, maps.h, maps.w)?;
            ensure!(rw.regions <= u32::MAX as usize, "an image with {} anomaly regions", rw.regions);
            Some(rw)
        } else {
            None
        };
        let w = rw.as_ref().map(|r| &r.weights[..]);
        let row = maps.maps.par_iter().zip(&self.grids).map(|(s, g)| ImageHist::of(g, s, labels, w)).collect();
        self.set.images.push(row);
        self.set.valid.push(labels.iter().any(|&l| l != label::VOID));
        if let Some(rw) = rw {
            self.set.regions.push(rw.regions as u32);
        }
        Ok(())
    }

    /// What a shard ships: its images' histograms.
    pub fn tally(&self) -> HistSet {
        self.set.clone()
    }

    /// Append the histograms of the images that follow (shard merge).
    pub fn absorb(&mut self, t: &HistSet) -> Result<()> {
        ensure!(t.images.len() == t.valid.len(), "merging bootstrap histograms: {} images with {} validity flags", t.images.len(), t.valid.len());
        let nm = self.grids.len();
        ensure!(t.images.iter().all(|r| r.len() == nm), "merging bootstrap histograms of a different method list");
        let bins: Vec<usize> = self.grids.iter().map(|g| 2 * g.bins()).collect();
        ensure!(
            t.images.iter().all(|r| r.iter().zip(&bins).all(|(h, &b)| h.idx.len() == h.cnt.len() && h.idx.iter().all(|&i| (i as usize) < b))),
            "merging bootstrap histograms of a different grid (shards of another pass 1?)"
        );
        let want = if self.regions { t.images.len() } else { 0 };
        let pro_ok = |h: &ImageHist| h.pro.len() == if self.regions { h.idx.iter().filter(|&&i| i % 2 == 1).count() } else { 0 };
        ensure!(
            t.regions.len() == want && t.images.iter().flatten().all(pro_ok),
            "merging bootstrap histograms with and without AUPRO region weights"
        );
        self.set.images.extend(t.images.iter().cloned());
        self.set.valid.extend(&t.valid);
        self.set.regions.extend(&t.regions);
        Ok(())
    }

    /// Histogram bytes held (per-image cells).
    pub fn bytes(&self) -> usize {
        self.set.images.iter().flatten().map(|h| h.bytes()).sum::<usize>() + self.set.regions.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_keys_in_order_and_thresholds_start_bins() {
        let pos: Vec<u32> = (0..5000u32).map(|i| key(i as f32 * 0.001 - 1.0)).collect();
        let cnt = vec![1u64; pos.len()];
        let mut coarse = vec![0u64; 1 << 16];
        coarse[(key(0.5) >> 16) as usize] = 1_000_000; // one heavy bucket
        coarse[(key(-3.0) >> 16) as usize] = 10;
        let g = Grid::build(&pos, &cnt, &coarse, &[0.123, -7.5], 64).unwrap();
        assert!(g.bins() > 64 && g.bins() < 4 * 64 + 40, "{}", g.bins());
        let mut last = 0;
        for x in [-1e30f32, -7.6, -7.5, -3.0, -1.0, -0.2, 0.0, 0.123, 0.5, 0.51, 1e30] {
            let b = g.bin(key(x));
            assert!(b >= last, "{x}");
            last = b;
            // the bin's range holds the key: the plain search agrees
            assert_eq!(b, g.edges.partition_point(|&e| e <= key(x)) - 1, "{x}");
        }
        assert!(g.bin_at(0.123).is_some() && g.bin_at(-7.5).is_some());
        assert_eq!(g.lower(g.bin_at(0.123).unwrap()), 0.123);
        // the heavy normal bucket is cut
        let h = (key(0.5) >> 16) << 16;
        assert!(g.edges.iter().filter(|&&e| e >> 16 == h >> 16).count() >= 8);
    }

    #[test]
    fn a_heavy_anomaly_key_gets_its_own_bin() {
        let g = Grid::build(&[key(1.0), key(2.0), key(3.0)], &[1, 100, 1], &vec![0; 1 << 16], &[], 4).unwrap();
        assert!(g.single_key(g.bin(key(2.0))));
        assert!(!g.single_key(0));
    }

    #[test]
    fn absorb_checks_shape() {
        let g = Grid::build(&[key(1.0)], &[1], &vec![0; 1 << 16], &[], 4).unwrap();
        let maps = ScoreMaps { h: 1, w: 3, maps: vec![vec![1.0, 0.5, 2.0]] };
        let mut a = HistCollector::new(vec![g.clone()]);
        a.add(&maps, &[label::NORMAL, label::VOID, 1]).unwrap();
        let mut b = HistCollector::new(vec![g.clone()]);
        b.absorb(&a.tally()).unwrap();
        assert_eq!(b.set, a.set);
        assert_eq!(a.set.images[0][0].cnt.iter().sum::<u32>(), 2);
        let mut bad = a.tally();
        bad.images[0][0].idx[0] = 9999;
        assert!(b.absorb(&bad).unwrap_err().to_string().contains("different grid"));
        let mut c = HistCollector::new(vec![g.clone(), g]);
        assert!(c.absorb(&a.tally()).is_err());
    }
}
