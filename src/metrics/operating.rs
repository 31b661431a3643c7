//! Operating points of the honest evaluation, in the production line's
//! words (seed 000).
//!
//! A pixel or image is *rejected* when `score ≥ t`, *accepted* otherwise.
//! - **FAR(t)** (false accept rate) = share of anomalous pixels/images with
//!   `score < t`: defects accepted, the ones that slip through.
//! - **FRR(t)** (false reject rate) = share of normal pixels/images with
//!   `score ≥ t`: good parts rejected.
//!
//! Two rules pick a threshold on one split (val) to be applied unchanged to
//! another (test):
//! - `frr_at_far(b)`: the highest `t` with `FAR(t) ≤ b` (as few good parts
//!   rejected as the defect budget allows). FAR only moves at anomaly
//!   scores, so `t` is a distinct anomaly score; undefined without
//!   anomalies.
//! - `far_at_frr(b)`: the lowest `t` among the split's distinct scores
//!   (normal and anomalous) with `FRR(t) ≤ b` (as many defects caught as
//!   the good-reject budget allows). It needs no anomaly to be set, only
//!   normals; undefined without them, or when even the top score rejects
//!   more than `b` of the normals (ties at the top).
//!
//! Both are exact. At image level the image scores are a few numbers per
//! image and sit in memory ([`ImageScores`]); at pixel level `frr_at_far`
//! reads the exact statistic [`Counts`] and `far_at_frr` needs one order
//! statistic of the normal scores, found in the two streaming passes by
//! [`RankHist`] (pass 1: histogram of the top 16 key bits) and
//! [`RankRefiner`] (pass 2: the low 16 bits inside the one bucket that holds
//! it, plus the smallest normal key above that bucket).

use super::keyhist::{COARSE, KeyHist};
use super::{Counts, OperatingPoint, unkey};
use serde::{Deserialize, Serialize};


/// Pixel or image level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Pixel,
    Image,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Pixel => "pixel",
            Level::Image => "image",
        }
    }
    /// Plural noun for messages and tables.
    pub fn units(self) -> &'static str {
        match self {
            Level::Pixel => "pixels",
            Level::Image => "images",
        }
    }
}

/// A threshold, or why there is none.
pub type Pick = Result<OperatingPoint, String>;

/// Largest count `c ≤ n` with `c / n ≤ b` (the same f64 division the
/// definition compares).
pub fn max_count_within(b: f64, n: u64) -> u64 {
    let nf = n as f64;
    let mut c = ((b * nf).floor().max(0.0) as u64).min(n);
    while c < n && ((c + 1) as f64 / nf) <= b {
        c += 1;
    }
    while c > 0 && (c as f64 / nf) > b {
        c -= 1;
    }
    c
}

fn pct(b: f64) -> String {
    format!("{}", 100.0 * b)
}

impl Counts {
    /// `frr_at_far(b)` on this split: the highest threshold with
    /// FAR = (anomalies < t) / anomalies ≤ `b` — a distinct anomaly score.
    pub fn frr_at_far(&self, b: f64, level: Level) -> Pick {
        if self.positives == 0 {
            return Err(format!("no anomalous {} in the threshold split: FAR, and so `frr_at_far`, is undefined", level.units()));
        }
        let p = self.positives as f64;
        // descending thresholds, FAR non-increasing as i grows: the first
        // index within the budget is the highest threshold
        let i = self
            .tp
            .iter()
            .position(|&t| (self.positives - t) as f64 / p <= b)
            .expect("FAR is 0 at the lowest anomaly score");
        Ok(self.at_index(i))
    }

    /// Anomalies with score ≥ `t`.
    pub fn tp_at(&self, t: f32) -> u64 {
        let j = self.thresholds.partition_point(|&x| x >= t);
        if j == 0 { 0 } else { self.tp[j - 1] }
    }

    /// `far_at_frr(b)` at pixel level from the normal-score order statistic
    /// of [`RankRefiner::finish`].
    pub fn far_at_frr(&self, pick: &RankPick, b: f64) -> Pick {
        if pick.n == 0 {
            return Err("no normal pixels in the threshold split: FRR, and so `far_at_frr`, is undefined".into());
        }
        let min_pos = self.thresholds.last().copied();
        let (t, fp) = if pick.inclusive {
            // every threshold meets the budget: the lowest score of the split
            let t = min_pos.map_or(pick.v, |m| m.min(pick.v));
            (t, pick.n)
        } else {
            // the lowest score strictly above v
            let j = self.thresholds.partition_point(|&x| x > pick.v);
            let pos = (j > 0).then(|| self.thresholds[j - 1]);
            let t = match (pos, pick.next_normal) {
                (Some(a), Some(c)) => a.min(c),
                (Some(a), None) => a,
                (None, Some(c)) => c,
                (None, None) => return Err(no_score_within(b, Level::Pixel)),
            };
            (t, pick.n - pick.le_v)
        };
        Ok(OperatingPoint { threshold: t as f64, tp: self.tp_at(t), fp, positives: self.positives, negatives: pick.n })
    }
}

fn no_score_within(b: f64, level: Level) -> String {
    format!(
        "no score of the threshold split meets FRR ≤ {} %: the highest-scoring {} are normal, so every threshold rejects more good {} than the budget",
        pct(b),
        level.units(),
        level.units()
    )
}

/// Scores and labels (1 anomalous, 0 normal) of a split's images.
pub struct ImageScores<'a> {
    pub scores: &'a [f32],
    pub labels: &'a [u8],
}

impl ImageScores<'_> {
    fn split(&self) -> (Vec<f32>, Vec<f32>) {
        let (mut pos, mut neg) = (vec![], vec![]);
        for (&s, &l) in self.scores.iter().zip(self.labels) {
            if l != 0 { pos.push(s) } else { neg.push(s) }
        }
        pos.sort_unstable_by(|a, b| a.total_cmp(b));
        neg.sort_unstable_by(|a, b| a.total_cmp(b));
        (pos, neg)
    }

    /// Confusion counts at `score ≥ t` (exact).
    pub fn at(&self, t: f64) -> OperatingPoint {
        let t = t as f32;
        let (mut tp, mut fp, mut p, mut n) = (0, 0, 0, 0);
        for (&s, &l) in self.scores.iter().zip(self.labels) {
            if l != 0 {
                p += 1;
                tp += (s >= t) as u64;
            } else {
                n += 1;
                fp += (s >= t) as u64;
            }
        }
        OperatingPoint { threshold: t as f64, tp, fp, positives: p, negatives: n }
    }

    /// `frr_at_far(b)`: the highest anomaly score `t` with (anomalies < t) /
    /// anomalies ≤ b.
    pub fn frr_at_far(&self, b: f64) -> Pick {
        let (pos, _) = self.split();
        if pos.is_empty() {
            return Err("no anomalous images in the threshold split: FAR, and so `frr_at_far`, is undefined".into());
        }
        let pf = pos.len() as f64;
        // ascending: FAR at pos[i] = (anomalies strictly below pos[i]) / P
        let mut best = pos[0];
        let mut i = 0;
        while i < pos.len() {
            let below = pos.partition_point(|&x| x < pos[i]);
            if below as f64 / pf <= b {
                best = pos[i];
            }
            i = pos.partition_point(|&x| x <= pos[i]);
        }
        Ok(self.at(best as f64))
    }

    /// `far_at_frr(b)`: the lowest image score `t` (any image) with
    /// (normals ≥ t) / normals ≤ b.
    pub fn far_at_frr(&self, b: f64) -> Pick {
        let (_, neg) = self.split();
        if neg.is_empty() {
            return Err("no normal images in the threshold split: FRR, and so `far_at_frr`, is undefined".into());
        }
        let n = neg.len() as u64;
        let k = max_count_within(b, n);
        let mut all: Vec<f32> = self.scores.to_vec();
        all.sort_unstable_by(|a, b| a.total_cmp(b));
        let t = if k >= n {
            Some(all[0])
        } else {
            let v = neg[(n - 1 - k) as usize];
            let j = all.partition_point(|&x| x <= v);
            all.get(j).copied()
        };
        match t {
            Some(t) => Ok(self.at(t as f64)),
            None => Err(no_score_within(b, Level::Image)),
        }
    }
}

/// Pass 1 of the pixel-level `far_at_frr`: normal pixels' key histogram
/// over the top 16 bits. Merges exactly over image ranges.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RankHist {
    hist: KeyHist,
}

/// The ascending rank of the normal order statistic one budget needs.
#[derive(Debug, Clone, Copy)]
struct Target {
    rank: u64,
    inclusive: bool,
}

impl RankHist {
    pub fn add(&mut self, scores: &[f32], labels: &[u8]) {
        self.hist.add_normals_unsummed(scores, labels);
    }

    pub fn absorb(&mut self, o: &RankHist) {
        self.hist.absorb(&o.hist);
    }

    /// The histogram, for a walk that counts it beside another
    /// (`NormalStats::add_with`).
    pub(crate) fn hist_mut(&mut self) -> &mut KeyHist {
        &mut self.hist
    }

    /// Start pass 2 for the FRR budgets `budgets`.
    pub fn refine(self, budgets: &[f64]) -> RankRefiner {
        let targets: Vec<Target> = if self.hist.n == 0 {
            vec![]
        } else {
            budgets
                .iter()
                .map(|&b| {
                    let k = max_count_within(b, self.hist.n);
                    if k >= self.hist.n { Target { rank: 0, inclusive: true } } else { Target { rank: self.hist.n - 1 - k, inclusive: false } }
                })
                .collect()
        };
        let mut buckets: Vec<u32> = targets.iter().map(|t| self.hist.locate(t.rank).0 as u32).collect();
        buckets.sort_unstable();
        buckets.dedup();
        let fine = buckets.iter().map(|_| vec![0u64; COARSE]).collect();
        let above = vec![None; buckets.len()];
        RankRefiner { hist: self, budgets: budgets.len(), targets, buckets, fine, above }
    }
}

/// What one budget's order statistic says (see [`Counts::far_at_frr`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankPick {
    /// Normal pixels of the split.
    pub n: u64,
    /// `inclusive`: the minimum normal score (every threshold meets the
    /// budget); otherwise the normal score the threshold must exceed.
    pub v: f32,
    pub inclusive: bool,
    /// The lowest normal score strictly above `v`.
    pub next_normal: Option<f32>,
    /// Normal pixels with score ≤ `v`.
    pub le_v: u64,
}

/// Pass 2: full 32-bit counts inside the buckets holding the targets, and
/// the smallest normal key above each such bucket.
#[derive(Debug, Clone)]
pub struct RankRefiner {
    hist: RankHist,
    budgets: usize,
    targets: Vec<Target>,
    /// The refined coarse buckets, ascending (u32: the lanes of
    /// `keyhist::refine_lanes` compare them).
    buckets: Vec<u32>,
    fine: Vec<Vec<u64>>,
    above: Vec<Option<u32>>,
}

/// What a shard ships of a [`RankRefiner`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RankTally {
    pub fine: Vec<Vec<u64>>,
    pub above: Vec<Option<u32>>,
}

impl RankRefiner {
    pub fn add(&mut self, scores: &[f32], labels: &[u8]) {
        if self.buckets.is_empty() {
            return;
        }
        let n = scores.len().min(labels.len());
        super::keyhist::refine_lanes(&scores[..n], &labels[..n], &self.buckets, &mut self.fine, Some(&mut self.above));
    }

    pub fn tally(&self) -> RankTally {
        RankTally { fine: self.fine.clone(), above: self.above.clone() }
    }

    pub fn absorb(&mut self, t: &RankTally) -> anyhow::Result<()> {
        anyhow::ensure!(t.fine.len() == self.fine.len() && t.above.len() == self.above.len(), "merging FRR-budget refinements of different buckets");
        for (a, b) in self.fine.iter_mut().zip(&t.fine) {
            anyhow::ensure!(a.len() == b.len(), "merging FRR-budget refinements of different buckets");
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for (a, b) in self.above.iter_mut().zip(&t.above) {
            if let Some(y) = *b
                && a.is_none_or(|x| y < x)
            {
                *a = Some(y);
            }
        }
        Ok(())
    }

    /// Per budget, the order statistic (None without normal pixels: every
    /// pick then has `n = 0`).
    pub fn finish(self) -> Vec<RankPick> {
        if self.hist.hist.n == 0 {
            return vec![RankPick { n: 0, v: f32::NAN, inclusive: false, next_normal: None, le_v: 0 }; self.budgets];
        }
        self.targets
            .iter()
            .map(|t| {
                let (b, mut r) = self.hist.hist.locate(t.rank);
                let i = self.buckets.binary_search(&(b as u32)).expect("bucket refined in pass 2");
                let fine = &self.fine[i];
                let mut lo = 0usize;
                while r >= fine[lo] {
                    r -= fine[lo];
                    lo += 1;
                }
                let k = ((b as u32) << 16) | lo as u32;
                let le_v = self.hist.hist.coarse[..b].iter().sum::<u64>() + fine[..=lo].iter().sum::<u64>();
                let next = fine[lo + 1..].iter().position(|&c| c > 0).map(|d| ((b as u32) << 16) | (lo + 1 + d) as u32).or(self.above[i]);
                RankPick { n: self.hist.hist.n, v: unkey(k), inclusive: t.inclusive, next_normal: next.map(unkey), le_v }
            })
            .collect()
    }
}

/// The review band of one level: auto-reject at `score ≥ hard`, review in
/// `[soft, hard)`, auto-accept below `soft`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BandShares {
    pub auto_rejected: f64,
    pub review: f64,
    pub auto_accepted: f64,
    /// Anomalies with score < soft, over anomalies (FAR at soft).
    pub defects_auto_accepted: Option<f64>,
    /// Normals with score ≥ hard, over normals (FRR at hard).
    pub good_auto_rejected: Option<f64>,
}

/// Shares of the evaluated split at the hard and soft operating points
/// (both counted on the same split); `Err` when soft > hard.
pub fn band(hard: &OperatingPoint, soft: &OperatingPoint) -> Result<BandShares, String> {
    if soft.threshold > hard.threshold {
        return Err(incompatible(hard.threshold, soft.threshold));
    }
    let total = (hard.positives + hard.negatives) as f64;
    if total == 0.0 {
        return Err("the evaluated split is empty".into());
    }
    let rej = hard.tp + hard.fp;
    let acc = soft.positives + soft.negatives - (soft.tp + soft.fp);
    let rev = (hard.positives + hard.negatives) - rej - acc;
    Ok(BandShares {
        auto_rejected: rej as f64 / total,
        review: rev as f64 / total,
        auto_accepted: acc as f64 / total,
        defects_auto_accepted: soft.far(),
        good_auto_rejected: hard.frr(),
    })
}

/// The message when the FAR budget's soft threshold lies above the FRR
/// budget's hard threshold.
pub fn incompatible(hard: f64, soft: f64) -> String {
    format!(
        "incompatible budgets: the soft threshold {soft} (auto-accept below, from the FAR budget) is above the hard threshold {hard} (auto-reject at or above, from the FRR budget), so no review band [soft, hard) exists: no single threshold keeps both budgets; relax one of them"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::counts_of;

    fn brute_far_at_frr(s: &[f32], l: &[u8], b: f64) -> Option<f32> {
        let n = l.iter().filter(|&&x| x == 0).count() as f64;
        let mut c: Vec<f32> = s.to_vec();
        c.sort_by(|a, b| a.total_cmp(b));
        c.dedup();
        c.into_iter().find(|&t| s.iter().zip(l).filter(|p| *p.1 == 0 && *p.0 >= t).count() as f64 / n <= b)
    }

    fn brute_frr_at_far(s: &[f32], l: &[u8], b: f64) -> Option<f32> {
        let p = l.iter().filter(|&&x| x == 1).count() as f64;
        let mut c: Vec<f32> = s.iter().zip(l).filter(|x| *x.1 == 1).map(|x| *x.0).collect();
        c.sort_by(|a, b| b.total_cmp(a));
        c.dedup();
        c.into_iter().find(|&t| s.iter().zip(l).filter(|q| *q.1 == 1 && *q.0 < t).count() as f64 / p <= b)
    }

    #[test]
    fn pixel_and_image_rules_match_brute_force() {
        let mut rnd = crate::metrics::xorshift(12345);
        for case in 0..200 {
            let n = 1 + (rnd() % 60) as usize;
            let levels = (1 + rnd() % 12) as f32;
            // odd cases: every score inside one 16-bit key bucket
            let (scale, off) = if case % 2 == 1 { (1e-6f32, 1.0f32) } else { (1.0, -3.0) };
            let s: Vec<f32> = (0..n).map(|_| ((rnd() % 1000) as f32 / 1000.0 * levels).floor() * scale + off).collect();
            let l: Vec<u8> = (0..n).map(|_| (rnd() % 3 == 0) as u8).collect();
            let c = counts_of(&s, &l);
            for b in [0.0, 0.01, 0.1, 0.25, 0.5, 0.99, 1.0] {
                let mut h = RankHist::default();
                let (a, z) = s.split_at(n / 2);
                let (la, lz) = l.split_at(n / 2);
                h.add(a, la);
                let mut h2 = RankHist::default();
                h2.add(z, lz);
                h.absorb(&h2);
                let mut r = h.refine(&[b]);
                r.add(a, la);
                let mut r2 = r.clone();
                r2.fine.iter_mut().for_each(|f| f.fill(0));
                r2.above.fill(None);
                r2.add(z, lz);
                r.absorb(&r2.tally()).unwrap();
                let pick = r.finish()[0];
                let want = brute_far_at_frr(&s, &l, b);
                let got = c.far_at_frr(&pick, b).ok().map(|o| o.threshold as f32);
                let img = ImageScores { scores: &s, labels: &l };
                assert_eq!(got, want, "case {case} b {b} far_at_frr pixel");
                assert_eq!(img.far_at_frr(b).ok().map(|o| o.threshold as f32), want, "case {case} image");
                if b < 1.0 {
                    let want = brute_frr_at_far(&s, &l, b);
                    assert_eq!(c.frr_at_far(b, Level::Pixel).ok().map(|o| o.threshold as f32), want, "case {case} b {b} frr_at_far");
                    assert_eq!(img.frr_at_far(b).ok().map(|o| o.threshold as f32), want, "case {case} image frr_at_far");
                }
                if let Ok(o) = c.far_at_frr(&pick, b) {
                    assert_eq!(o, img.at(o.threshold), "case {case}: counts at the pick");
                }
            }
        }
    }

    #[test]
    fn empty_and_one_class_splits_say_why() {
        let none = ImageScores { scores: &[], labels: &[] };
        assert!(none.frr_at_far(0.1).unwrap_err().contains("no anomalous images"));
        assert!(none.far_at_frr(0.1).unwrap_err().contains("no normal images"));
        let c = counts_of(&[], &[]);
        assert!(c.frr_at_far(0.1, Level::Pixel).unwrap_err().contains("no anomalous pixels"));
        let pick = RankHist::default().refine(&[0.1]).finish()[0];
        assert!(c.far_at_frr(&pick, 0.1).unwrap_err().contains("no normal pixels"));
        // only normal pixels: far_at_frr is still set (a line needs no defects)
        let (s, l) = ([0.1f32, 0.2, 0.3, 0.4], [0u8; 4]);
        let c = counts_of(&s, &l);
        let mut h = RankHist::default();
        h.add(&s, &l);
        let mut r = h.refine(&[0.25]);
        r.add(&s, &l);
        let o = c.far_at_frr(&r.finish()[0], 0.25).unwrap();
        assert_eq!((o.threshold as f32, o.fp, o.frr(), o.far()), (0.4, 1, Some(0.25), None));
        // ties at the top: no val score rejects at most 25 % of the normals
        let (s, l) = ([0.5f32, 0.5, 0.1, 0.2], [0u8; 4]);
        let img = ImageScores { scores: &s, labels: &l };
        assert!(img.far_at_frr(0.25).unwrap_err().contains("highest-scoring images are normal"));
    }

    #[test]
    fn band_and_incompatible() {
        let op = |t: f64, tp, fp| OperatingPoint { threshold: t, tp, fp, positives: 10, negatives: 90 };
        let b = band(&op(2.0, 5, 1), &op(1.0, 9, 20)).unwrap();
        assert_eq!(b.auto_rejected, 0.06);
        assert_eq!(b.auto_accepted, 0.71);
        assert!((b.review - 0.23).abs() < 1e-15);
        assert_eq!(b.defects_auto_accepted, Some(0.1));
        let e = band(&op(1.0, 9, 20), &op(2.0, 5, 1)).unwrap_err();
        assert!(e.contains("incompatible budgets"), "{e}");
    }
}
