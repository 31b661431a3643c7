//! `anoseg_bench._native`: the PyO3 layer over the `bench` crate.
//!
//! Only glue lives here: numpy arrays are borrowed (no copy for C-contiguous
//! float32 scores), converted chunk by chunk into what `bench` consumes, and
//! every figure comes from `bench::metrics` (`PositiveCollector` → `Ranker`
//! → `Counts::summary`), every score from `bench::scores` (CPU reference or
//! the WGSL pass). Inputs are validated before any work (shapes, dtypes,
//! finiteness, label values), so nothing panics across the boundary; errors
//! are Python exceptions carrying the CLI's one-line messages.
//!
//! Sign convention everywhere: higher score = more anomalous.

use bench::metrics::conventions::MetricConv;
use anyhow::{Context, Result, anyhow, bail, ensure};
use bench::config::{Config, Device};
use bench::data::{LabelMap, LogitData, Logits, Mask, label};
use bench::metrics::{Counts, Fpr95Rule, PositiveCollector, key, unkey};
use bench::scores::calib::CalibrationFile;
use bench::scores::cpu::CpuScorer;
use bench::scores::gpu::GpuScorer;
use bench::scores::{Method, ScorePlan, Scorer};
use half::f16;
use numpy::{PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Pixels converted per step (labels → codes, f16 → f32, spill reads).
const CHUNK: usize = 1 << 20;

// ---------------------------------------------------------------- errors

/// Why a call failed, i.e. which Python exception it becomes.
enum Kind {
    Value,
    Runtime,
}

struct BErr(Kind, anyhow::Error);

impl From<anyhow::Error> for BErr {
    fn from(e: anyhow::Error) -> Self {
        BErr(Kind::Value, e)
    }
}

impl From<BErr> for PyErr {
    fn from(BErr(kind, e): BErr) -> PyErr {
        // The CLI's one line: the context chain joined.
        let msg = format!("{e:#}");
        for cause in e.chain() {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::NotFound => return PyFileNotFoundError::new_err(msg),
                    std::io::ErrorKind::PermissionDenied => return PyPermissionError::new_err(msg),
                    _ => {}
                }
            }
        }
        // the main crate sometimes formats an io::Error into its message
        if msg.contains("(os error 2)") {
            return PyFileNotFoundError::new_err(msg);
        }
        if msg.contains("(os error 13)") {
            return PyPermissionError::new_err(msg);
        }
        match kind {
            Kind::Value => PyValueError::new_err(msg),
            Kind::Runtime => PyRuntimeError::new_err(msg),
        }
    }
}

type R<T> = std::result::Result<T, BErr>;

fn value_err(msg: String) -> PyErr {
    PyValueError::new_err(msg)
}

// ---------------------------------------------------------------- inputs

/// Borrowed scores of one array.
enum Sc<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

/// Borrowed labels of one array.
enum Lb<'a> {
    U8(&'a [u8]),
    U16(&'a [u16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl Sc<'_> {
    fn len(&self) -> usize {
        match self {
            Sc::F32(v) => v.len(),
            Sc::F16(v) => v.len(),
        }
    }
}

impl Lb<'_> {
    fn len(&self) -> usize {
        match self {
            Lb::U8(v) => v.len(),
            Lb::U16(v) => v.len(),
            Lb::I32(v) => v.len(),
            Lb::I64(v) => v.len(),
        }
    }
}

/// The numpy borrows kept alive while the GIL is released.
enum ScoreArr<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F16(PyReadonlyArrayDyn<'py, f16>),
}

enum LabelArr<'py> {
    U8(PyReadonlyArrayDyn<'py, u8>),
    U16(PyReadonlyArrayDyn<'py, u16>),
    I32(PyReadonlyArrayDyn<'py, i32>),
    I64(PyReadonlyArrayDyn<'py, i64>),
}

fn contiguous<'a, T>(r: std::result::Result<&'a [T], numpy::AsSliceError>, what: &str) -> PyResult<&'a [T]> {
    r.map_err(|_| value_err(format!("{what}: array is not C-contiguous (use numpy.ascontiguousarray)")))
}

impl<'py> ScoreArr<'py> {
    fn extract(o: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(a) = o.extract::<PyReadonlyArrayDyn<f32>>() {
            return Ok(ScoreArr::F32(a));
        }
        if let Ok(a) = o.extract::<PyReadonlyArrayDyn<f16>>() {
            return Ok(ScoreArr::F16(a));
        }
        let dt = o.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| "not an array".into());
        Err(value_err(format!("{what}: must be float32 or float16 (got {dt})")))
    }
    fn shape(&self) -> Vec<usize> {
        match self {
            ScoreArr::F32(a) => a.shape().to_vec(),
            ScoreArr::F16(a) => a.shape().to_vec(),
        }
    }
    fn slice(&self, what: &str) -> PyResult<Sc<'_>> {
        Ok(match self {
            ScoreArr::F32(a) => Sc::F32(contiguous(a.as_slice(), what)?),
            ScoreArr::F16(a) => Sc::F16(contiguous(a.as_slice(), what)?),
        })
    }
}

impl<'py> LabelArr<'py> {
    fn extract(o: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(a) = o.extract::<PyReadonlyArrayDyn<u8>>() {
            return Ok(LabelArr::U8(a));
        }
        if let Ok(a) = o.extract::<PyReadonlyArrayDyn<u16>>() {
            return Ok(LabelArr::U16(a));
        }
        if let Ok(a) = o.extract::<PyReadonlyArrayDyn<i32>>() {
            return Ok(LabelArr::I32(a));
        }
        if let Ok(a) = o.extract::<PyReadonlyArrayDyn<i64>>() {
            return Ok(LabelArr::I64(a));
        }
        let dt = o.getattr("dtype").map(|d| d.to_string()).unwrap_or_else(|_| "not an array".into());
        Err(value_err(format!("{what}: must be an integer array (uint8, uint16, int32 or int64; got {dt})")))
    }
    fn shape(&self) -> Vec<usize> {
        match self {
            LabelArr::U8(a) => a.shape().to_vec(),
            LabelArr::U16(a) => a.shape().to_vec(),
            LabelArr::I32(a) => a.shape().to_vec(),
            LabelArr::I64(a) => a.shape().to_vec(),
        }
    }
    fn slice(&self, what: &str) -> PyResult<Lb<'_>> {
        Ok(match self {
            LabelArr::U8(a) => Lb::U8(contiguous(a.as_slice(), what)?),
            LabelArr::U16(a) => Lb::U16(contiguous(a.as_slice(), what)?),
            LabelArr::I32(a) => Lb::I32(contiguous(a.as_slice(), what)?),
            LabelArr::I64(a) => Lb::I64(contiguous(a.as_slice(), what)?),
        })
    }
}

/// Multi-index of flat index `i` in a C-order array of `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> String {
    let mut idx = vec![0; shape.len()];
    for (d, &n) in shape.iter().enumerate().rev() {
        if n > 0 {
            idx[d] = i % n;
            i /= n;
        }
    }
    format!("({})", idx.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
}

fn nonfinite_kind(x: f32) -> &'static str {
    bench::data::npy::kind_of(x as f64)
}

// ---------------------------------------------------------------- labels

/// The label convention of the CLI (`--anomaly`, `--ignore`), as a lookup
/// table built by `bench::data::LabelMap::apply` itself.
#[derive(Clone)]
struct Labels {
    map: LabelMap,
    lut: Vec<u8>,
}

impl Labels {
    fn new(anomaly: Vec<i64>, ignore: Vec<i64>) -> Result<Labels> {
        let conv = |v: Vec<i64>, what: &str| -> Result<Vec<u16>> {
            v.into_iter()
                .map(|x| u16::try_from(x).map_err(|_| anyhow!("`{what}` label value {x} is outside 0..=65535")))
                .collect()
        };
        let map = LabelMap::new(conv(anomaly, "anomaly")?, conv(ignore, "ignore")?)?;
        let all = Mask { h: 1, w: 65536, values: (0..=u16::MAX).collect() };
        let lut = map.apply(&all);
        Ok(Labels { map, lut })
    }

    fn listed(&self, v: u16) -> bool {
        self.map.anomaly.contains(&v) || self.map.ignore.contains(&v)
    }

    /// Label codes of `lab[range]` into `out`. With `check`, the values are
    /// validated (the CLI's rule: values above 255 must be listed); without,
    /// invalid values become void (pass 2 never panics, and a changed input
    /// is caught by the negative-count check of `Ranker::finish`).
    fn codes(&self, lab: &Lb, start: usize, end: usize, out: &mut Vec<u8>, check: Option<(&str, &[usize])>) -> Result<()> {
        out.clear();
        let lut = &self.lut;
        let bad = |i: usize, v: i64| -> anyhow::Error {
            let (what, shape) = check.unwrap();
            if (0..=65535).contains(&v) {
                anyhow!(
                    "{what}: mask value {v} at {} is above 255 and not listed in `anomaly` or `ignore` (a 16-bit export of 8-bit labels?); list it to accept it",
                    unravel(i, shape)
                )
            } else {
                anyhow!("{what}: label value {v} at {} is outside 0..=65535", unravel(i, shape))
            }
        };
        macro_rules! wide {
            ($v:expr) => {{
                for (j, &x) in $v[start..end].iter().enumerate() {
                    let x = x as i64;
                    let code = if (0..=65535).contains(&x) { lut[x as usize] } else { label::VOID };
                    if check.is_some() && (x > 255 || x < 0) && !(x <= 65535 && x >= 0 && self.listed(x as u16)) {
                        return Err(bad(start + j, x));
                    }
                    out.push(code);
                }
            }};
        }
        match lab {
            Lb::U8(v) => out.extend(v[start..end].iter().map(|&x| lut[x as usize])),
            Lb::U16(v) => wide!(v),
            Lb::I32(v) => wide!(v),
            Lb::I64(v) => wide!(v),
        }
        Ok(())
    }
}

/// A convention switch given by name (`"first"`, `"trapezoid"`, `"f16"`,
/// ...), spelled as in the config and the CLI.
fn switch<T: serde::de::DeserializeOwned>(key: &str, v: Option<&str>) -> Result<Option<T>> {
    v.map(|s| serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| anyhow::anyhow!("`{key}`: {e}")))
        .transpose()
}

fn rule_of(s: &str) -> Result<Fpr95Rule> {
    match s {
        "first" => Ok(Fpr95Rule::First),
        "interp" => Ok(Fpr95Rule::Interp),
        _ => bail!("fpr95 must be \"first\" or \"interp\" (got {s:?})"),
    }
}

/// Scores of `sc[start..end]` as f32 (borrowed when already f32), checked
/// finite when `check` names the array.
fn scores_f32<'a>(sc: &'a Sc, start: usize, end: usize, buf: &'a mut Vec<f32>, check: Option<(&str, &[usize])>) -> Result<&'a [f32]> {
    let s: &[f32] = match sc {
        Sc::F32(v) => &v[start..end],
        Sc::F16(v) => {
            buf.clear();
            buf.extend(v[start..end].iter().map(|x| x.to_f32()));
            buf
        }
    };
    if let Some((what, shape)) = check
        && let Some(j) = s.iter().position(|x| !x.is_finite())
    {
        bail!(
            "{what}: non-finite score ({}) at {} (flat index {}); scores must be finite",
            nonfinite_kind(s[j]),
            unravel(start + j, shape),
            start + j
        );
    }
    Ok(s)
}

/// The object `bench eval --json` prints (same keys, same serde_json
/// rendering: shortest round-trip floats, `null` when undefined).
fn eval_json(c: &Counts, void: u64, images: u64, rule: Fpr95Rule) -> String {
    let conv = MetricConv { fpr95: rule, ..Default::default() };
    let sm = conv.summary(c);
    let o = bench::metrics::conventions::EvalOut {
        main: [sm.auroc, sm.aupr, sm.fpr95, sm.f1],
        threshold: sm.threshold,
        normal: None,
        positives: c.positives,
        negatives: c.negatives,
        void,
        per_image: None,
    };
    serde_json::Value::Object(bench::report::eval::eval_object(&o, images, &conv, None)).to_string()
}

struct Pair<'a> {
    what: String,
    lwhat: String,
    shape: Vec<usize>,
    s: Sc<'a>,
    l: Lb<'a>,
}

/// Both passes of `bench eval` over in-memory arrays.
fn metrics_pairs(pairs: &[Pair], labels: &Labels, conv: &MetricConv, name: Option<&str>, images: u64) -> Result<String> {
    use bench::metrics::conventions::ScorePrecision;
    let prec = conv.score_precision;
    let (mut codes, mut buf) = (Vec::new(), Vec::new());
    // One image at a time (a batch array [B, ...] holds B images), as
    // `bench eval` visits its files: per-image averaging needs the bounds.
    let mut each = |f: &mut dyn FnMut(&[f32], &[u8])| -> Result<()> {
        for p in pairs {
            let n = p.s.len();
            let k = if p.shape.len() >= 3 { p.shape[0].max(1) } else { 1 };
            let hw = (n / k).max(1);
            for start in (0..n).step_by(hw) {
                let end = (start + hw).min(n);
                let s = scores_f32(&p.s, start, end, &mut buf, Some((p.what.as_str(), &p.shape[..])))?;
                labels.codes(&p.l, start, end, &mut codes, Some((p.lwhat.as_str(), &p.shape[..])))?;
                if prec == ScorePrecision::F32 {
                    f(s, &codes);
                } else {
                    let mut v = s.to_vec();
                    prec.apply(&mut v).with_context(|| format!("{}: score_precision", p.what))?;
                    f(&v, &codes);
                }
            }
        }
        Ok(())
    };
    let o = bench::metrics::conventions::evaluate(&mut each, conv)?;
    Ok(serde_json::Value::Object(bench::report::eval::eval_object(&o, images, conv, name)).to_string())
}

fn borrow_pairs<'py>(
    scores: &[Bound<'py, PyAny>],
    labels: &[Bound<'py, PyAny>],
) -> PyResult<Vec<(String, String, ScoreArr<'py>, LabelArr<'py>)>> {
    if scores.len() != labels.len() {
        return Err(value_err(format!("{} score arrays but {} label arrays", scores.len(), labels.len())));
    }
    let many = scores.len() > 1;
    let mut out = Vec::with_capacity(scores.len());
    for (i, (s, l)) in scores.iter().zip(labels).enumerate() {
        let (ws, wl) = if many { (format!("scores[{i}]"), format!("labels[{i}]")) } else { ("scores".into(), "labels".into()) };
        let sa = ScoreArr::extract(s, &ws)?;
        let la = LabelArr::extract(l, &wl)?;
        if sa.shape() != la.shape() {
            return Err(value_err(format!("{ws}: shape {:?} but {wl} has shape {:?}", sa.shape(), la.shape())));
        }
        out.push((ws, wl, sa, la));
    }
    Ok(out)
}

/// Exact pixel metrics of score arrays against label arrays (the body of
/// `anoseg_bench.metrics`). Returns the `bench eval --json` object as text.
#[pyfunction]
#[pyo3(signature = (scores, labels, anomaly, ignore, images, convention=None, fpr95=None, aupr=None, average=None, positive=None, score_precision=None))]
fn metrics_json(
    py: Python<'_>,
    scores: Vec<Bound<'_, PyAny>>,
    labels: Vec<Bound<'_, PyAny>>,
    anomaly: Vec<i64>,
    ignore: Vec<i64>,
    images: u64,
    convention: Option<String>,
    fpr95: Option<&str>,
    aupr: Option<&str>,
    average: Option<&str>,
    positive: Option<&str>,
    score_precision: Option<&str>,
) -> PyResult<String> {
    let lm = Labels::new(anomaly, ignore).map_err(BErr::from)?;
    let name = convention.clone();
    let conv = (|| -> Result<MetricConv> {
        bench::metrics::conventions::ConvOverrides {
            convention,
            fpr95: switch("fpr95", fpr95)?,
            aupr: switch("aupr", aupr)?,
            average: switch("average", average)?,
            positive: switch("positive", positive)?,
            score_precision: switch("score_precision", score_precision)?,
        }
        .resolve()
    })()
    .map_err(BErr::from)?;
    let arrs = borrow_pairs(&scores, &labels)?;
    let mut pairs = Vec::with_capacity(arrs.len());
    for (w, wl, s, l) in &arrs {
        pairs.push(Pair { what: w.clone(), lwhat: wl.clone(), shape: s.shape(), s: s.slice(w)?, l: l.slice(wl)? });
    }
    let out = py.detach(|| metrics_pairs(&pairs, &lm, &conv, name.as_deref(), images));
    Ok(out.map_err(BErr::from)?)
}

// ---------------------------------------------------------------- Evaluator

/// One method's streaming state: pass 1 as the data arrives, the negatives
/// kept for pass 2 at `compute()`.
struct Acc {
    name: String,
    pc: PositiveCollector,
    void: u64,
    images: u64,
    /// Keys of normal pixels with f32 scores, in memory (up to `buffer`).
    neg: Vec<u32>,
    /// Spilled keys (4 bytes each), an unnamed temporary file.
    spill: Option<std::fs::File>,
    spilled: u64,
    /// Normal pixels with float16 scores: an exact histogram over the
    /// 65 536 f16 bit patterns (no per-pixel storage).
    hist: Option<Vec<u64>>,
}

impl Acc {
    fn new(name: String) -> Acc {
        Acc { name, pc: PositiveCollector::new(), void: 0, images: 0, neg: vec![], spill: None, spilled: 0, hist: None }
    }

    /// Pass 1 on one chunk; the normal pixels' scores are kept.
    fn add(&mut self, sc: &Sc, start: usize, end: usize, codes: &[u8], buf: &mut Vec<f32>, lim: &Limits) -> Result<()> {
        let s = scores_f32(sc, start, end, buf, None)?;
        self.void += codes.iter().filter(|&&l| l == label::VOID).count() as u64;
        self.pc.add(s, codes, None);
        match sc {
            Sc::F16(v) => {
                let h = self.hist.get_or_insert_with(|| vec![0u64; 65536]);
                for (x, &l) in v[start..end].iter().zip(codes) {
                    if l == label::NORMAL {
                        h[x.to_bits() as usize] += 1;
                    }
                }
            }
            Sc::F32(_) => {
                for (&x, &l) in s.iter().zip(codes) {
                    if l == label::NORMAL {
                        self.neg.push(key(x));
                    }
                }
                if self.neg.len() * 4 >= lim.buffer_bytes {
                    self.flush(lim)?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, lim: &Limits) -> Result<()> {
        if self.neg.is_empty() {
            return Ok(());
        }
        if self.spill.is_none() {
            let f = match &lim.spill_dir {
                Some(d) => tempfile::tempfile_in(d).with_context(|| format!("{}: cannot create the spill file", d.display()))?,
                None => tempfile::tempfile().context("cannot create the spill file in the temporary directory")?,
            };
            self.spill = Some(f);
        }
        let mut bytes = Vec::with_capacity(self.neg.len() * 4);
        for k in &self.neg {
            bytes.extend_from_slice(&k.to_le_bytes());
        }
        self.spill.as_mut().unwrap().write_all(&bytes).context("writing the spill file")?;
        self.spilled += self.neg.len() as u64;
        self.neg.clear();
        Ok(())
    }

    /// Pass 2 over the kept negatives; `self` is unchanged (more updates may follow).
    fn compute(&self, rule: Fpr95Rule) -> Result<String> {
        let mut r = self.pc.clone().finish();
        let zeros = vec![label::NORMAL; CHUNK];
        let mut s = Vec::with_capacity(CHUNK);
        if let Some(f) = &self.spill {
            use std::os::unix::fs::FileExt;
            let mut bytes = vec![0u8; CHUNK * 4];
            let mut done = 0u64;
            while done < self.spilled {
                let n = ((self.spilled - done) as usize).min(CHUNK);
                f.read_exact_at(&mut bytes[..n * 4], done * 4).context("reading the spill file")?;
                s.clear();
                s.extend(bytes[..n * 4].chunks_exact(4).map(|b| unkey(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))));
                r.add(&s, &zeros[..n]);
                done += n as u64;
            }
        }
        for ch in self.neg.chunks(CHUNK) {
            s.clear();
            s.extend(ch.iter().map(|&k| unkey(k)));
            r.add(&s, &zeros[..ch.len()]);
        }
        if let Some(h) = &self.hist {
            s.clear();
            for (bits, &n) in h.iter().enumerate() {
                let x = f16::from_bits(bits as u16).to_f32();
                for _ in 0..n {
                    s.push(x);
                    if s.len() == CHUNK {
                        r.add(&s, &zeros);
                        s.clear();
                    }
                }
            }
            r.add(&s, &zeros[..s.len()]);
        }
        let counts = r.finish()?;
        Ok(eval_json(&counts, self.void, self.images, rule))
    }

    fn memory_bytes(&self) -> u64 {
        (self.pc.positives() * 4 + self.neg.capacity() as u64 * 4) + self.hist.as_ref().map_or(0, |h| h.len() as u64 * 8)
    }
}

struct Limits {
    buffer_bytes: usize,
    spill_dir: Option<PathBuf>,
}

enum AnyScorer {
    Cpu(CpuScorer),
    Gpu(Box<GpuScorer>),
}

impl AnyScorer {
    fn get(&mut self) -> &mut dyn Scorer {
        match self {
            AnyScorer::Cpu(s) => s,
            AnyScorer::Gpu(g) => g.as_mut(),
        }
    }
}

/// Streaming exact evaluation (the Rust side of `anoseg_bench.Evaluator`).
#[pyclass(module = "anoseg_bench._native")]
struct NativeEvaluator {
    labels: Labels,
    rule: Fpr95Rule,
    accs: Vec<Acc>,
    lim: Limits,
    plan: ScorePlan,
    device: String,
    /// In a Mutex only so the class is Sync (wgpu's map callbacks are not); always reached through `&mut self`.
    scorer: Option<std::sync::Mutex<AnyScorer>>,
    calibration: Option<(PathBuf, String)>,
}

impl NativeEvaluator {
    fn acc(&mut self, name: &str) -> usize {
        if let Some(i) = self.accs.iter().position(|a| a.name == name) {
            return i;
        }
        self.accs.push(Acc::new(name.to_string()));
        self.accs.len() - 1
    }

    fn scorer(&mut self) -> R<&mut dyn Scorer> {
        if self.scorer.is_none() {
            let s = match self.device.as_str() {
                "cpu" => AnyScorer::Cpu(CpuScorer),
                "gpu" => AnyScorer::Gpu(Box::new(GpuScorer::new(true).context("device=\"gpu\"").map_err(|e| BErr(Kind::Runtime, e))?)),
                _ => match GpuScorer::new(false) {
                    Ok(g) => AnyScorer::Gpu(Box::new(g)),
                    Err(_) => AnyScorer::Cpu(CpuScorer),
                },
            };
            self.scorer = Some(std::sync::Mutex::new(s));
        }
        Ok(self.scorer.as_mut().unwrap().get_mut().unwrap_or_else(|e| e.into_inner()).get())
    }

    /// Load SML/HEAT statistics for `c` classes on first use.
    fn ensure_calibration(&mut self, c: usize) -> Result<()> {
        if !self.plan.methods.iter().any(|m| m.needs_calibration()) {
            return Ok(());
        }
        if let Some(cal) = &self.plan.calibration {
            ensure!(cal.sml.mean.len() == c, "calibration has {} classes but logits have {c}", cal.sml.mean.len());
            return Ok(());
        }
        let Some((path, model)) = &self.calibration else {
            bail!("sml, heat and kl_matching need calibration statistics: pass calibration=\"results/<name>/calibration.json\" and model=\"<id>\" (written by `bench run`); they are never guessed");
        };
        let f = CalibrationFile::load(path)?;
        let heat = self.plan.methods.contains(&Method::Heat);
        self.plan.calibration = Some(f.model(path, model, c, heat)?);
        Ok(())
    }
}

#[pymethods]
impl NativeEvaluator {
    #[new]
    #[pyo3(signature = (methods, anomaly, ignore, fpr95, msp_temperature, energy_temperature, device, calibration, model, buffer_bytes, spill_dir))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        methods: Vec<String>,
        anomaly: Vec<i64>,
        ignore: Vec<i64>,
        fpr95: &str,
        msp_temperature: f64,
        energy_temperature: f64,
        device: &str,
        calibration: Option<PathBuf>,
        model: Option<String>,
        buffer_bytes: usize,
        spill_dir: Option<PathBuf>,
    ) -> PyResult<Self> {
        let labels = Labels::new(anomaly, ignore).map_err(BErr::from)?;
        let rule = rule_of(fpr95).map_err(BErr::from)?;
        let ms: Vec<Method> = methods.iter().map(|m| Method::parse(m)).collect::<Result<_>>().map_err(BErr::from)?;
        for (t, what) in [(msp_temperature, "msp_temperature"), (energy_temperature, "energy_temperature")] {
            if !(t.is_finite() && t > 0.0) {
                return Err(value_err(format!("{what} must be a finite number > 0 (got {t})")));
            }
        }
        if !["auto", "cpu", "gpu"].contains(&device) {
            return Err(value_err(format!("device must be \"auto\", \"cpu\" or \"gpu\" (got {device:?})")));
        }
        let calibration = match (calibration, model) {
            (Some(p), Some(m)) => Some((p, m)),
            (None, None) => None,
            _ => return Err(value_err("calibration and model go together: the file and the model id in it".into())),
        };
        if let Some(d) = &spill_dir
            && !d.is_dir()
        {
            return Err(PyFileNotFoundError::new_err(format!("{}: spill_dir is not a folder", d.display())));
        }
        Ok(NativeEvaluator {
            labels,
            rule,
            accs: vec![],
            lim: Limits { buffer_bytes: buffer_bytes.max(4 * 1024), spill_dir },
            plan: ScorePlan {
                methods: ms,
                msp_temperature,
                energy_temperature,
                calibration: None,
                sml_post: Default::default(),
                heat_post: Default::default(), params: Default::default(),
            },
            device: device.to_string(),
            scorer: None,
            calibration,
        })
    }

    /// Add one batch of precomputed scores for `method` (any name).
    fn update_scores(&mut self, py: Python<'_>, method: &str, scores: Bound<'_, PyAny>, labels: Bound<'_, PyAny>, images: u64) -> PyResult<()> {
        let arrs = borrow_pairs(std::slice::from_ref(&scores), std::slice::from_ref(&labels))?;
        let (w, wl, sa, la) = &arrs[0];
        let shape = sa.shape();
        let (s, l) = (sa.slice(w)?, la.slice(wl)?);
        let fresh = !self.accs.iter().any(|a| a.name == method);
        let i = self.acc(method);
        let lm = &self.labels;
        let lim = &self.lim;
        let acc = &mut self.accs[i];
        let out: Result<()> = py.detach(|| {
            // validate the whole batch first: a bad batch leaves the state untouched
            let (mut codes, mut buf) = (Vec::new(), Vec::new());
            let n = s.len();
            for start in (0..n).step_by(CHUNK) {
                let end = (start + CHUNK).min(n);
                scores_f32(&s, start, end, &mut buf, Some((w, &shape)))?;
                lm.codes(&l, start, end, &mut codes, Some(("labels", &shape)))?;
            }
            for start in (0..n).step_by(CHUNK) {
                let end = (start + CHUNK).min(n);
                lm.codes(&l, start, end, &mut codes, None)?;
                acc.add(&s, start, end, &codes, &mut buf, lim)?;
            }
            acc.images += images;
            Ok(())
        });
        if out.is_err() && fresh {
            self.accs.remove(i); // a rejected first batch adds no method
        }
        Ok(out.map_err(BErr::from)?)
    }

    /// Add one batch of logits `[B, C, H, W]` with labels `[B, H, W]`: every
    /// configured method is scored (GPU or CPU) and accumulated.
    fn update_logits(&mut self, py: Python<'_>, logits: Bound<'_, PyAny>, labels: Bound<'_, PyAny>) -> PyResult<()> {
        let la = LabelArr::extract(&labels, "labels")?;
        let lg = ScoreArr::extract(&logits, "logits").map_err(|_| {
            let dt = logits.getattr("dtype").map(|d| d.to_string()).unwrap_or_default();
            value_err(format!("logits: must be float32 or float16 (got {dt})"))
        })?;
        let (ls, lshape) = (lg.shape(), la.shape());
        let (b, c, h, w) = logit_dims(&ls, &lshape, "logits")?;
        if self.plan.methods.is_empty() {
            return Err(value_err("update with logits needs methods=[...] (built-in: max_logit, msp, energy, entropy, sml, heat)".into()));
        }
        let s = lg.slice("logits")?;
        let l = la.slice("labels")?;
        self.ensure_calibration(c).map_err(BErr::from)?;
        // the scorer is made with the GIL held (adapter probing is quick and once)
        self.scorer()?;
        let this = &mut *self;
        let out: Result<()> = py.detach(|| {
            let hw = h * w;
            let mut codes = Vec::new();
            // validate first: a bad batch leaves the state untouched
            for start in (0..l.len()).step_by(CHUNK) {
                this.labels.codes(&l, start, (start + CHUNK).min(l.len()), &mut codes, Some(("labels", &lshape)))?;
            }
            check_logits(&s, "logits", c, h, w)?;
            let idx: Vec<usize> = this.plan.methods.clone().iter().map(|m| this.acc(m.id())).collect();
            let scorer = this.scorer.as_mut().unwrap().get_mut().unwrap_or_else(|e| e.into_inner()).get();
            for i in 0..b {
                let maps = scorer.score(&image_logits(&s, i, c, h, w), &this.plan)?;
                this.labels.codes(&l, i * hw, (i + 1) * hw, &mut codes, None)?;
                let lim = &this.lim;
                let codes = &codes;
                let res: Vec<Result<()>> = this
                    .accs
                    .par_iter_mut()
                    .enumerate()
                    .filter_map(|(j, acc)| idx.iter().position(|&k| k == j).map(|k| (acc, &maps.maps[k])))
                    .map(|(acc, map)| {
                        let mut buf = Vec::new();
                        let sc = Sc::F32(map);
                        acc.add(&sc, 0, hw, codes, &mut buf, lim)?;
                        acc.images += 1;
                        Ok(())
                    })
                    .collect();
                res.into_iter().collect::<Result<()>>()?;
            }
            Ok(())
        });
        Ok(out.map_err(BErr::from)?)
    }

    /// Fit SML / HEAT / KL-matching statistics on calibration logits (arrays `[B, C, H, W]`
    /// with labels `[B, H, W]`), exactly as `bench run` fits them on its
    /// calibration split (`Calibration::fit`; in-distribution pixels only).
    fn calibrate(&mut self, py: Python<'_>, logits: Vec<Bound<'_, PyAny>>, labels: Vec<Bound<'_, PyAny>>) -> PyResult<()> {
        if logits.len() != labels.len() || logits.is_empty() {
            return Err(value_err(format!("calibrate: {} logits arrays but {} label arrays", logits.len(), labels.len())));
        }
        if self.plan.methods.iter().any(|m| m.needs_calibration() && self.accs.iter().any(|a| a.name == m.id())) {
            return Err(value_err("calibrate() must come before the first update with logits".into()));
        }
        let mut arrs = vec![];
        for (i, (z, l)) in logits.iter().zip(&labels).enumerate() {
            let what = if logits.len() > 1 { format!("logits[{i}]") } else { "logits".into() };
            let lwhat = if logits.len() > 1 { format!("labels[{i}]") } else { "labels".into() };
            let za = ScoreArr::extract(z, &what).map_err(|_| value_err(format!("{what}: must be float32 or float16")))?;
            let la = LabelArr::extract(l, &lwhat)?;
            let dims = logit_dims(&za.shape(), &la.shape(), &what)?;
            arrs.push((what, lwhat, za, la, dims));
        }
        let mut views = vec![];
        for (what, lwhat, za, la, dims) in &arrs {
            views.push((what.as_str(), lwhat.as_str(), za.slice(what)?, la.slice(lwhat)?, *dims, la.shape()));
        }
        let heat = self.plan.methods.contains(&Method::Heat);
        let kl = self.plan.methods.contains(&Method::KlMatching);
        let labels = self.labels.clone();
        let out: Result<bench::scores::Calibration> = py.detach(|| {
            let mut codes = Vec::new();
            for (what, lwhat, s, l, (_, c, h, w), lshape) in &views {
                check_logits(s, what, *c, *h, *w)?;
                for start in (0..l.len()).step_by(CHUNK) {
                    labels.codes(l, start, (start + CHUNK).min(l.len()), &mut codes, Some((lwhat, lshape)))?;
                }
            }
            let mut visit = |f: &mut dyn FnMut(&Logits, Option<&Logits>, &[u8]) -> Result<()>| -> Result<()> {
                let mut codes = Vec::new();
                for (_, _, s, l, (b, c, h, w), _) in &views {
                    let hw = h * w;
                    for i in 0..*b {
                        labels.codes(l, i * hw, (i + 1) * hw, &mut codes, None)?;
                        f(&image_logits(s, i, *c, *h, *w), None, &codes)?;
                    }
                }
                Ok(())
            };
            let mut cal = bench::scores::Calibration::fit("calibrate", false, heat, &mut visit)?;
            if kl {
                cal.kl = Some(bench::scores::kl::fit_visit("calibrate", &mut visit, &mut cal.warnings)?);
            }
            Ok(cal)
        });
        self.plan.calibration = Some(out.map_err(BErr::from)?);
        self.calibration = None;
        Ok(())
    }

    /// `{method: bench-eval-json, ...}` in method order, as text.
    fn compute_json(&self, py: Python<'_>) -> PyResult<String> {
        let (accs, rule) = (&self.accs, self.rule);
        let out: Result<String> = py.detach(|| {
            let mut parts = vec![];
            for a in accs {
                parts.push(format!("{}:{}", serde_json::to_string(&a.name)?, a.compute(rule)?));
            }
            Ok(format!("{{{}}}", parts.join(",")))
        });
        Ok(out.map_err(BErr::from)?)
    }

    /// Method names with state, in order.
    fn names(&self) -> Vec<String> {
        self.accs.iter().map(|a| a.name.clone()).collect()
    }

    /// The scorer's device ("cpu (N threads)" or the adapter), once logits were scored.
    fn device(&self) -> Option<String> {
        self.scorer.as_ref().map(|s| match &*s.lock().unwrap_or_else(|e| e.into_inner()) {
            AnyScorer::Cpu(c) => c.device(),
            AnyScorer::Gpu(g) => g.device(),
        })
    }

    /// (bytes in memory, bytes spilled to disk) of the kept state.
    fn footprint(&self) -> (u64, u64) {
        (self.accs.iter().map(Acc::memory_bytes).sum(), self.accs.iter().map(|a| a.spilled * 4).sum())
    }

    /// Forget everything seen (the configuration stays).
    fn reset(&mut self) {
        for a in &mut self.accs {
            *a = Acc::new(a.name.clone());
        }
    }
}

/// Reject NaN/±inf logits of a `[B, C, H, W]` array, naming the first one.
fn check_logits(s: &Sc, what: &str, c: usize, h: usize, w: usize) -> Result<()> {
    let (chw, hw) = (c * h * w, h * w);
    let bad = match s {
        Sc::F32(v) => v.par_chunks(CHUNK).position_first(|ch| ch.iter().any(|x| !x.is_finite())).map(|k| {
            let j = k * CHUNK + v[k * CHUNK..].iter().position(|x| !x.is_finite()).unwrap_or(0);
            (j, nonfinite_kind(v[j]))
        }),
        Sc::F16(v) => v.par_chunks(CHUNK).position_first(|ch| ch.iter().any(|x| !x.is_finite())).map(|k| {
            let j = k * CHUNK + v[k * CHUNK..].iter().position(|x| !x.is_finite()).unwrap_or(0);
            (j, nonfinite_kind(v[j].to_f32()))
        }),
    };
    if let Some((j, kind)) = bad {
        let r = j % chw;
        bail!(
            "{what}: non-finite logit ({kind}) at image {}, class {}, y {}, x {} (flat index {j}); logits must be finite",
            j / chw,
            r / hw,
            (r % hw) / w,
            r % w
        );
    }
    Ok(())
}

/// Image `i` of a `[B, C, H, W]` array as bench's `Logits` (one copy).
fn image_logits(s: &Sc, i: usize, c: usize, h: usize, w: usize) -> Logits {
    let chw = c * h * w;
    let data = match s {
        Sc::F32(v) => LogitData::F32(v[i * chw..(i + 1) * chw].to_vec()),
        Sc::F16(v) => LogitData::F16(v[i * chw..(i + 1) * chw].to_vec()),
    };
    Logits { c, h, w, data }
}

/// Check a logits / labels pair of shapes `[B, C, H, W]` / `[B, H, W]`.
fn logit_dims(ls: &[usize], lshape: &[usize], what: &str) -> PyResult<(usize, usize, usize, usize)> {
    if ls.len() != 4 || lshape.len() != 3 || ls[0] != lshape[0] || ls[2..] != lshape[1..] {
        return Err(value_err(format!("{what}: shape {ls:?} must be [B, C, H, W] with labels [B, H, W] (labels have shape {lshape:?})")));
    }
    if ls[1] == 0 {
        return Err(value_err(format!("{what}: zero classes")));
    }
    Ok((ls[0], ls[1], ls[2], ls[3]))
}

// ---------------------------------------------------------------- results

fn device_of(s: &str) -> Result<Device> {
    Ok(match s {
        "auto" => Device::Auto,
        "cpu" => Device::Cpu,
        "gpu" => Device::Gpu,
        _ => bail!("device must be \"auto\", \"cpu\" or \"gpu\" (got {s:?})"),
    })
}

/// `bench run <config> --device D` in-process: `[(dataset name or None,
/// results.json text)]`; with `write`, the results folder is written
/// atomically exactly as the CLI writes it.
#[pyfunction]
#[pyo3(signature = (config, device, write))]
fn run_json(py: Python<'_>, config: PathBuf, device: &str, write: bool) -> PyResult<Vec<(Option<String>, String)>> {
    let dev = device_of(device).map_err(BErr::from)?;
    let out: Result<Vec<(Option<String>, String)>> = py.detach(|| {
        let bytes = std::fs::read(&config).with_context(|| format!("{}: cannot read config", config.display()))?;
        let cfg = Config::load(&config)?;
        let opts = bench::pipeline::RunOptions { device: Some(dev), progress: false, verbose: false };
        let outs = cfg.expand()?.into_iter().map(|c| Ok((bench::pipeline::run(&c, &bytes, &opts)?, c))).collect::<Result<Vec<_>>>()?;
        if write {
            bench::pipeline::output::write(&cfg, &outs)?;
        }
        Ok(outs.into_iter().map(|(o, c)| (c.tag.clone(), o.results.to_json())).collect())
    });
    Ok(out.map_err(BErr::from)?)
}

/// `Results::load_sets(dir)` as `[(dataset name or None, results.json text)]`.
#[pyfunction]
fn load_json(dir: PathBuf) -> PyResult<Vec<(Option<String>, String)>> {
    let sets = bench::report::Results::load_sets(&dir).map_err(BErr::from)?;
    Ok(sets.into_iter().map(|(n, r)| (n, r.to_json())).collect())
}

/// `bench table` of one results.json text.
#[pyfunction]
fn table(results_json: &str, format: &str) -> PyResult<String> {
    let r = bench::report::Results::from_json(results_json).map_err(BErr::from)?;
    Ok(bench::report::tables::render_sets(&[(None, r)], format, true).map_err(BErr::from)?)
}

/// Whether a wgpu adapter exists (hardware only unless `software`).
#[pyfunction]
fn adapters() -> Vec<String> {
    bench::scores::gpu::list_adapters().into_iter().map(|a| a.to_string()).collect()
}

#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[allow(dead_code)]
fn _assert_path(_: &Path) {}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(metrics_json, m)?)?;
    m.add_function(wrap_pyfunction!(run_json, m)?)?;
    m.add_function(wrap_pyfunction!(load_json, m)?)?;
    m.add_function(wrap_pyfunction!(table, m)?)?;
    m.add_function(wrap_pyfunction!(adapters, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_class::<NativeEvaluator>()?;
    Ok(())
}
