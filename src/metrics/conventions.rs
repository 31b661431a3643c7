//! Metric conventions of other evaluation codes, and presets naming them.
//!
//! Why: the same scores give different numbers in different codes, and
//! almost always because of a convention, not a bug: how FPR95 is read off
//! the ROC, whether the PR area is a step sum or trapezoids, whether pixels
//! are pooled or metrics averaged per image, which class is "positive",
//! and whether scores were rounded before the metric. Each switch here is a
//! few lines on the sufficient statistic [`Counts`](super::Counts) (or, for
//! the rounding and the per-image mean, on the scores that feed it), so
//! bench can print any of those numbers exactly, and name the code.

use super::{AuprRule, Counts, Fpr95Rule, Summary};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Pooled pixels, or the mean of per-image metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Average {
    /// Every non-void pixel of the split in one statistic.
    #[default]
    Pixels,
    /// Mean over images that have both classes of each image's metrics
    /// (StreetHazards' `eval_ood.py`, pytorch-ood `mode="segmentation"`).
    Images,
}

/// Which class is positive for the extra AUPR / FPR95 keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Positive {
    /// Anomalies are positive (every headline number).
    #[default]
    Anomaly,
    /// Also report AUPR-In and FPR95-In: in-distribution pixels positive,
    /// scored by the negated anomaly score (ood-metrics' documented
    /// convention). Extra keys; the anomaly-positive ones stay.
    Normal,
}

/// Rounding applied to every score before the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ScorePrecision {
    /// The f32 scores as computed.
    #[default]
    F32,
    /// Cast to IEEE float16, round to nearest even (numpy's
    /// `astype(np.float16)`, SegmentMeIfYouCan's `save_output`).
    F16,
    /// `min(floor(s · 65536), 65535)` on scores in [0, 1] (BRAVO's 16-bit
    /// levels; the bin that `bravo_codec.py` dequantises as `(q+0.5)/65536`).
    U16,
}

impl ScorePrecision {
    pub fn name(self) -> &'static str {
        match self {
            ScorePrecision::F32 => "f32",
            ScorePrecision::F16 => "f16",
            ScorePrecision::U16 => "u16",
        }
    }

    /// Round `scores` in place. Errors (naming nothing: the caller adds the
    /// file) when `u16` meets a score outside [0, 1] or NaN.
    pub fn apply(self, scores: &mut [f32]) -> Result<()> {
        match self {
            ScorePrecision::F32 => {}
            ScorePrecision::F16 => {
                for s in scores.iter_mut() {
                    *s = half::f16::from_f32(*s).to_f32();
                }
            }
            ScorePrecision::U16 => {
                if let Some(bad) = scores.iter().find(|s| !(0.0..=1.0).contains(*s)) {
                    bail!("score_precision = \"u16\" needs scores in [0, 1], found {bad}");
                }
                for s in scores.iter_mut() {
                    // exact: s·65536 only shifts the exponent of an f32
                    *s = ((*s * 65536.0).floor()).min(65535.0);
                }
            }
        }
        Ok(())
    }
}

/// Every metric convention switch, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MetricConv {
    pub fpr95: Fpr95Rule,
    pub aupr: AuprRule,
    pub average: Average,
    pub positive: Positive,
    pub score_precision: ScorePrecision,
}

impl MetricConv {
    /// The headline figures of a pooled statistic under these rules.
    pub fn summary(&self, c: &Counts) -> Summary {
        c.summary_with(self.fpr95, self.aupr)
    }

    /// One line for table footers and the CLI: every switch, by name.
    pub fn describe(&self) -> String {
        format!(
            "fpr95 `{}`, aupr `{}`, average `{}`, positive `{}`, score_precision `{}`",
            self.fpr95.name(),
            self.aupr.name(),
            match self.average {
                Average::Pixels => "pixels",
                Average::Images => "images",
            },
            match self.positive {
                Positive::Anomaly => "anomaly",
                Positive::Normal => "normal",
            },
            self.score_precision.name()
        )
    }
}

/// A named convention: what one evaluation code does, and where.
pub struct Preset {
    pub name: &'static str,
    pub conv: MetricConv,
    /// Repository (and commit read).
    pub code: &'static str,
    /// File and function.
    pub file: &'static str,
    /// What bench does not reproduce of it, if anything.
    pub note: &'static str,
}

const fn conv(fpr95: Fpr95Rule, aupr: AuprRule, average: Average, positive: Positive, score_precision: ScorePrecision) -> MetricConv {
    MetricConv { fpr95, aupr, average, positive, score_precision }
}

use Average::{Images, Pixels};
use AuprRule::{Ap, Trapezoid, TrapezoidReorder};
use Fpr95Rule::{First, Interp, Nearest, Thinned};
use Positive::{Anomaly, Normal};
use ScorePrecision::{F16, F32, U16};

/// The presets, in the order of `--all-conventions`.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "sklearn",
        conv: conv(First, Ap, Pixels, Anomaly, F32),
        code: "scikit-learn 1.x (bench's default)",
        file: "sklearn/metrics/_ranking.py: roc_auc_score, average_precision_score; FPR95 = first ROC point with TPR ≥ 0.95",
        note: "",
    },
    Preset {
        name: "smiyc",
        conv: conv(First, Ap, Pixels, Anomaly, F16),
        code: "SegmentMeIfYouCan/road-anomaly-benchmark @1c7804e",
        file: "road_anomaly_benchmark/evaluation.py save_output (float16); metrics/pixel_classification_curves.py curves_from_cmats",
        note: "exact curve; SMIYC's published numbers use its 768-bin approximation: `[metrics] binning = \"smiyc\"` / `bench eval --binning smiyc`",
    },
    Preset {
        name: "fishyscapes",
        conv: conv(First, Ap, Pixels, Anomaly, F32),
        code: "hermannsblum/bdl-benchmark @03773d6",
        file: "bdlb/fishyscapes/benchmark.py calculate_metrics_perpixAP",
        note: "",
    },
    Preset {
        name: "streethazards",
        conv: conv(Nearest, Ap, Images, Anomaly, F32),
        code: "hendrycks/anomaly-seg @4e7b1de",
        file: "eval_ood.py eval_ood_measure (per image, skips one-class images); anom_utils.py fpr_and_fdr_at_recall",
        note: "",
    },
    Preset {
        name: "openood",
        conv: conv(Thinned, Trapezoid, Pixels, Normal, F32),
        code: "Jingkang50/OpenOOD @3c35632",
        file: "openood/evaluators/metrics.py auc_and_fpr_recall (aupr_in, aupr_out)",
        note: "",
    },
    Preset {
        name: "pytorch-ood",
        conv: conv(First, Trapezoid, Pixels, Normal, F32),
        code: "kkirchheim/pytorch-ood @d047673",
        file: "src/pytorch_ood/utils/metrics.py OODMetrics (mode=\"classification\"), fpr_at_tpr",
        note: "torchmetrics computes rates in float32; bench in float64",
    },
    Preset {
        name: "pytorch-ood-seg",
        conv: conv(First, Trapezoid, Images, Normal, F32),
        code: "kkirchheim/pytorch-ood @d047673",
        file: "src/pytorch_ood/utils/metrics.py OODMetrics(mode=\"segmentation\")",
        note: "pytorch-ood raises on an image without both classes; bench skips it and counts it",
    },
    Preset {
        name: "ood-metrics",
        conv: conv(Interp, Trapezoid, Pixels, Normal, F32),
        code: "tayden/ood-metrics @4544abe",
        file: "ood_metrics/metrics.py calc_metrics (fpr_at_95_tpr, aupr_in, aupr_out)",
        note: "its fpr_at_95_tpr is documented with normal as positive: bench's fpr95_in",
    },
    Preset {
        name: "anomalib",
        conv: conv(First, TrapezoidReorder, Pixels, Anomaly, F32),
        code: "openvinotoolkit/anomalib @161bb36",
        file: "src/anomalib/metrics/aupr.py AUPR.compute: auc(rec, prec, reorder=True); auroc.py",
        note: "anomalib has no FPR95: the column uses bench's default rule",
    },
    Preset {
        name: "bravo",
        conv: conv(First, Ap, Pixels, Anomaly, U16),
        code: "valeoai/bravo_challenge @d54005d",
        file: "bravo_toolkit/eval/eval_script.py get_curve_metrics; eval/metrics.py get_auroc, get_auprc",
        note: "the server subsamples pixels per image; bench uses all of them",
    },
];

pub fn preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown convention {name:?} (known: {})",
            PRESETS.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
        )
    })
}

/// Explicit switches over a preset over the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConvOverrides {
    pub convention: Option<String>,
    pub fpr95: Option<Fpr95Rule>,
    pub aupr: Option<AuprRule>,
    pub average: Option<Average>,
    pub positive: Option<Positive>,
    pub score_precision: Option<ScorePrecision>,
}

impl ConvOverrides {
    pub fn resolve(&self) -> Result<MetricConv> {
        let base = match &self.convention {
            Some(n) => preset(n)?.conv,
            None => MetricConv::default(),
        };
        Ok(MetricConv {
            fpr95: self.fpr95.unwrap_or(base.fpr95),
            aupr: self.aupr.unwrap_or(base.aupr),
            average: self.average.unwrap_or(base.average),
            positive: self.positive.unwrap_or(base.positive),
            score_precision: self.score_precision.unwrap_or(base.score_precision),
        })
    }
}

/// `positive = "normal"`: in-distribution pixels as the positives (label
/// 1), anomalies as the negatives (label 0), void kept, scored by the
/// negated score. Its statistic is exact like the anomaly one, but its
/// pass 1 keeps a key per normal pixel.
pub fn swap_classes(scores: &[f32], labels: &[u8]) -> (Vec<f32>, Vec<u8>) {
    use crate::data::label;
    let s = scores.iter().map(|&x| -x).collect();
    let l = labels
        .iter()
        .map(|&l| match l {
            label::VOID => label::VOID,
            label::NORMAL => 1,
            _ => label::NORMAL,
        })
        .collect();
    (s, l)
}

/// Per-image metrics averaged over the images that have both classes
/// (`np.mean` of the per-image values). Memory: four numbers per image.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageMean {
    vals: Vec<[Option<f64>; 4]>,
    pub skipped: u64,
}

impl ImageMean {
    /// Add one image's statistic (skipped, and counted, without both classes).
    pub fn add(&mut self, c: &Counts, conv: &MetricConv) {
        if !c.defined() {
            self.skipped += 1;
            return;
        }
        let s = conv.summary(c);
        self.vals.push([s.auroc, s.aupr, s.fpr95, s.f1]);
    }

    pub fn images(&self) -> u64 {
        self.vals.len() as u64
    }

    /// Append the images another accumulator saw after this one's (shard
    /// merge in image order: the mean is then the single-pass one).
    pub fn absorb(&mut self, o: ImageMean) {
        self.vals.extend(o.vals);
        self.skipped += o.skipped;
    }

    /// Mean AUROC, AUPR, FPR95, F1 (None when no image had both classes).
    pub fn mean(&self) -> [Option<f64>; 4] {
        let mut out = [None; 4];
        for (k, o) in out.iter_mut().enumerate() {
            let v: Option<Vec<f64>> = self.vals.iter().map(|x| x[k]).collect();
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                *o = Some(np_mean(&v));
            }
        }
        out
    }
}

/// `np.mean` of a float64 array: numpy's pairwise summation (blocks of 8
/// partial sums below 128 elements), then one division.
pub fn np_mean(v: &[f64]) -> f64 {
    pairwise_sum(v) / v.len() as f64
}

fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |s, &x| s + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_resolve_and_explicit_keys_win() {
        let o = ConvOverrides { convention: Some("streethazards".into()), fpr95: Some(Fpr95Rule::First), ..Default::default() };
        let c = o.resolve().unwrap();
        assert_eq!((c.fpr95, c.average), (Fpr95Rule::First, Average::Images));
        assert_eq!(ConvOverrides::default().resolve().unwrap(), MetricConv::default());
        let e = ConvOverrides { convention: Some("sklaern".into()), ..Default::default() }.resolve().unwrap_err().to_string();
        assert!(e.contains("sklaern") && e.contains("smiyc"), "{e}");
        for (i, p) in PRESETS.iter().enumerate() {
            assert!(PRESETS[..i].iter().all(|q| q.name != p.name), "{} twice", p.name);
        }
    }

    #[test]
    fn score_rounding() {
        let mut v = vec![0.1f32, 1.0, 0.0, 0.99999994, 1.0 / 65536.0];
        ScorePrecision::U16.apply(&mut v).unwrap();
        assert_eq!(v, vec![6553.0, 65535.0, 0.0, 65535.0, 1.0]);
        let mut v = vec![0.1f32, 65520.0, 1e-8];
        ScorePrecision::F16.apply(&mut v).unwrap();
        assert_eq!(v, vec![0.099975586, f32::INFINITY, 0.0]);
        assert!(ScorePrecision::U16.apply(&mut [1.5]).is_err());
        assert!(ScorePrecision::U16.apply(&mut [f32::NAN]).is_err());
    }

    #[test]
    fn np_mean_is_pairwise() {
        let v: Vec<f64> = (0..300).map(|i| 1.0 / (i as f64 + 3.0)).collect();
        let seq: f64 = v.iter().sum::<f64>() / 300.0;
        assert!((np_mean(&v) - seq).abs() < 1e-15);
        assert_eq!(np_mean(&[0.5]), 0.5);
    }
}

/// What `bench eval` (and the Python package's `metrics()`) computes over
/// a set of score maps under one convention.
/// What `bench eval` reports under one convention.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOut {
    /// AUROC, AUPR, FPR95, F1: pooled or image means.
    pub main: [Option<f64>; 4],
    pub threshold: Option<f64>,
    /// AUPR-In, FPR95-In (positive = normal).
    pub normal: Option<[Option<f64>; 2]>,
    pub positives: u64,
    pub negatives: u64,
    pub void: u64,
    /// average = images: images averaged, images skipped (one class only).
    pub per_image: Option<(u64, u64)>,
}

/// Both streaming passes over the images `each` visits (it is called once
/// for `average = "images"`, twice otherwise: positives, then the ranks of
/// the negatives), under `conv`: pooled or per-image metrics, and with
/// `positive = "normal"` the swapped statistic too. `each` applies
/// `conv.score_precision` itself (it owns the score buffers).
pub fn evaluate(each: &mut dyn FnMut(&mut dyn FnMut(&[f32], &[u8])) -> Result<()>, conv: &MetricConv) -> Result<EvalOut> {
    let normal = conv.positive == Positive::Normal;
    let (mut void, mut positives, mut negatives) = (0u64, 0u64, 0u64);
    if conv.average == Average::Images {
        let (mut out_m, mut in_m) = (ImageMean::default(), ImageMean::default());
        each(&mut |sc, lab| {
            void += lab.iter().filter(|&&l| l == crate::data::label::VOID).count() as u64;
            let c = super::counts_of(sc, lab);
            positives += c.positives;
            negatives += c.negatives;
            out_m.add(&c, conv);
            if normal {
                let (s2, l2) = swap_classes(sc, lab);
                in_m.add(&super::counts_of(&s2, &l2), conv);
            }
        })?;
        let n = in_m.mean();
        return Ok(EvalOut {
            main: out_m.mean(),
            threshold: None,
            normal: normal.then_some([n[1], n[2]]),
            positives,
            negatives,
            void,
            per_image: Some((out_m.images(), out_m.skipped)),
        });
    }
    let (mut pc, mut pc_in) = (super::PositiveCollector::new(), super::PositiveCollector::new());
    each(&mut |sc, lab| {
        void += lab.iter().filter(|&&l| l == crate::data::label::VOID).count() as u64;
        pc.add(sc, lab, None);
        if normal {
            let (s2, l2) = swap_classes(sc, lab);
            pc_in.add(&s2, &l2, None);
        }
    })?;
    let (mut r, mut r_in) = (pc.finish(), normal.then(|| pc_in.finish()));
    each(&mut |sc, lab| {
        r.add(sc, lab);
        if let Some(r_in) = r_in.as_mut() {
            let (s2, l2) = swap_classes(sc, lab);
            r_in.add(&s2, &l2);
        }
    })?;
    let counts = r.finish()?;
    let sm = conv.summary(&counts);
    let normal = match r_in {
        Some(r_in) => {
            let c = r_in.finish()?;
            Some([c.aupr(conv.aupr), c.fpr_at_tpr(0.95, conv.fpr95)])
        }
        None => None,
    };
    Ok(EvalOut {
        main: [sm.auroc, sm.aupr, sm.fpr95, sm.f1],
        threshold: sm.threshold,
        normal,
        positives: counts.positives,
        negatives: counts.negatives,
        void,
        per_image: None,
    })
}
