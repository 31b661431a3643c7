//! The sweep config (TOML, SPEC §6).
//!
//! Why: a sweep must be reproducible from one small file that a reviewer can
//! read. Every key is declared here with `deny_unknown_fields`, so a typo is
//! an error naming the key instead of a silently ignored option.
//!
//! One deliberate deviation from SPEC §6: the spec writes per-method options
//! as `[methods.msp]`, but `methods` is already the array of method ids and
//! TOML forbids a key that is both an array and a table. Options therefore
//! live under `[method.<id>]`.

use crate::data::resize::Resize;
use crate::metrics::conventions::{Average, ConvOverrides, MetricConv, Positive, ScorePrecision};
use crate::metrics::{AuprRule, Fpr95Rule};
use crate::scores::Method;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Results go to `<output>/<name>/`.
    pub name: String,
    /// Dataset folder (SPEC §3), relative to the current directory. Empty
    /// when the sweep lists `[[datasets]]` instead.
    #[serde(default)]
    pub dataset: PathBuf,
    /// Several datasets in one sweep (instead of `dataset`): each gets its
    /// own results folder `results/<name>/<dataset>/` and table set.
    #[serde(default)]
    pub datasets: Vec<DatasetCfg>,
    /// On the per-dataset configs of [`Config::expand`]: the dataset's name
    /// (None for a single-`dataset` sweep).
    #[serde(skip)]
    pub tag: Option<String>,
    /// Label convention by name (see [`PRESETS`]); explicit `anomaly` /
    /// `ignore` override it.
    #[serde(default)]
    pub preset: Option<Preset>,
    #[serde(rename = "anomaly", default)]
    anomaly_cfg: Option<Vec<u16>>,
    #[serde(rename = "ignore", default)]
    ignore_cfg: Option<Vec<u16>>,
    /// Mask values that are anomalies (resolved: config, else preset, else `[1]`).
    #[serde(skip)]
    pub anomaly: Vec<u16>,
    /// Mask values that are void (resolved: config, else preset, else `[255]`).
    #[serde(skip)]
    pub ignore: Vec<u16>,
    /// Method ids, in column order.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Outside methods whose precomputed maps are read from
    /// `scores/<id>/` (see `external.rs` for the layout); columns after
    /// `methods`, in this order.
    #[serde(default)]
    pub external: Vec<String>,
    /// Array to read from each score-map `.npz` of `external` methods
    /// (unset: the archive must hold exactly one array).
    #[serde(default)]
    pub npz_score_key: Option<String>,
    pub models: Vec<ModelCfg>,
    /// auto | gpu | cpu
    #[serde(default)]
    pub device: Option<Device>,
    /// `"demo"`: the dataset is `bench synth`'s deterministic demo; it is
    /// generated on first use when the folder is missing.
    #[serde(default)]
    pub synthetic: Option<Synthetic>,
    /// Parent folder of the results (default `results`).
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Logits whose H×W differ from the mask: `"none"` (default: an
    /// error), `"nearest"` or `"bilinear"` (upsample the logits to the mask,
    /// as `F.interpolate(..., align_corners=False)`).
    #[serde(default)]
    pub resize: Option<Resize>,
    /// Logits layout on disk: `"chw"` (default, `[C,H,W]`) or `"hwc"`.
    #[serde(default)]
    pub layout: Option<Layout>,
    /// Array to read from each logits `.npz` (`np.savez(f, logits=...)` →
    /// `"logits"`); unset: the archive must hold exactly one array.
    #[serde(default)]
    pub npz_key: Option<String>,
    #[serde(default)]
    pub method: MethodOptions,
    #[serde(default)]
    pub metrics: MetricsCfg,
    /// `[report]`: what the report shows beyond results.json's numbers.
    #[serde(default)]
    pub report: ReportCfg,
    /// Reuse the SML/HEAT statistics of an earlier run
    /// (`results/<x>/calibration.json`) instead of fitting them.
    #[serde(default)]
    pub calibration: Option<PathBuf>,
}

/// Range of `temperature` (ODIN's 1000 is inside): beyond it f32 scores
/// overflow or become constant.
pub const MIN_TEMPERATURE: f64 = 1e-3;
pub const MAX_TEMPERATURE: f64 = 1e4;
fn default_cache_mib() -> u64 {
    (crate::metrics::split::SCORE_CACHE_BYTES >> 20) as u64
}

/// Most bootstrap replicates (each costs a pass over the test split's maps).
pub const MAX_BOOTSTRAP: u32 = 100_000;
/// Largest `image_topk` (2^24 pixels: a 4096×4096 image).
pub const MAX_TOPK: u32 = 1 << 24;

/// A benchmark's label convention (`preset = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Streethazards,
    Smiyc,
    Fishyscapes,
    Lostandfound,
}

/// Label conventions of the public benchmarks: (preset, anomaly, ignore, source).
pub const PRESETS: [(Preset, &[u16], &[u16], &str); 4] = [
    (Preset::Streethazards, &[13], &[], "Hendrycks et al. 2022, CAOS StreetHazards: anomaly class 13, no void"),
    (Preset::Smiyc, &[1], &[255], "Chan et al. 2021, SegmentMeIfYouCan: 0 normal, 1 anomaly, 255 void"),
    (Preset::Fishyscapes, &[1], &[255], "Blum et al. 2021, Fishyscapes: 0 normal, 1 anomaly, 255 void"),
    (Preset::Lostandfound, &[1], &[255], "Pinggera et al. 2016 as packaged by Fishyscapes: 0 normal, 1 anomaly, 255 void"),
];

impl Preset {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Streethazards => "streethazards",
            Preset::Smiyc => "smiyc",
            Preset::Fishyscapes => "fishyscapes",
            Preset::Lostandfound => "lostandfound",
        }
    }
    /// (anomaly values, void values).
    pub fn labels(self) -> (&'static [u16], &'static [u16]) {
        let p = PRESETS.iter().find(|p| p.0 == self).expect("every preset is listed");
        (p.1, p.2)
    }
}

/// How logits are laid out on disk (`layout = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[C, H, W]`, class-major (PyTorch).
    #[default]
    Chw,
    /// `[H, W, C]`, channel-last (TensorFlow, a `permute` before saving).
    Hwc,
}

/// A dataset bench generates when its folder is missing (`synthetic = "demo"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synthetic {
    Demo,
}

impl Synthetic {
    pub fn name(self) -> &'static str {
        match self {
            Synthetic::Demo => "demo",
        }
    }
}

/// One entry of `[[datasets]]`: a dataset folder and the input conventions
/// that differ per dataset (each falls back to the top-level key).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetCfg {
    /// Subfolder of the results and heading of its tables.
    pub name: String,
    /// Dataset folder (SPEC §3).
    pub path: PathBuf,
    #[serde(default)]
    pub preset: Option<Preset>,
    #[serde(default)]
    pub anomaly: Option<Vec<u16>>,
    #[serde(default)]
    pub ignore: Option<Vec<u16>>,
    #[serde(default)]
    pub resize: Option<Resize>,
    #[serde(default)]
    pub layout: Option<Layout>,
    #[serde(default)]
    pub synthetic: Option<Synthetic>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCfg {
    /// Folder under `logits/`.
    pub id: String,
    /// Row label in the tables.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Auto,
    Gpu,
    Cpu,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MethodOptions {
    #[serde(default)]
    pub msp: TemperatureOpt,
    #[serde(default)]
    pub energy: TemperatureOpt,
    #[serde(default)]
    pub sml: SmlOpt,
    #[serde(default)]
    pub heat: HeatOpt,
    #[serde(default)]
    pub max_logit: EmptyOpt,
    /// `[method.gen]`: γ and M (Liu et al. 2023; defaults 0.1, all classes).
    #[serde(default)]
    #[serde(rename = "gen")]
    pub gen_opt: crate::scores::params::GenParams,
    /// `[method.margin]`: `on = "logits"` (default) or `"probs"`.
    #[serde(default)]
    pub margin: crate::scores::params::MarginParams,
}

impl MethodOptions {
    /// The gen / margin parameters as the scorers read them.
    pub fn params(&self) -> crate::scores::params::MethodParams {
        crate::scores::params::MethodParams { gen_entropy: self.gen_opt, margin: self.margin }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureOpt {
    #[serde(default = "one")]
    pub temperature: f64,
}
impl Default for TemperatureOpt {
    fn default() -> Self {
        TemperatureOpt { temperature: 1.0 }
    }
}
fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyOpt {}

/// `[method.sml]`: boundary suppression and dilated smoothing (Jung et al.
/// 2021); keys and defaults in [`crate::scores::SmlPost`].
pub type SmlOpt = crate::scores::SmlPost;

/// `[method.heat]`: the optional spatial-consistency term
/// (`spatial_window`, `spatial_weight`); see [`crate::scores::HeatPost`].
pub type HeatOpt = crate::scores::HeatPost;

/// Most failure-mode example images per anomaly type (each is one PNG
/// panel and one image re-scored after the test passes).
pub const MAX_FAILURE_EXAMPLES: u32 = 32;

/// `[report]`: the failure-mode example panels.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportCfg {
    /// The K worst test images per anomaly type drawn as PNG panels
    /// (`failures/<model>/<method>/`); 0 = none.
    #[serde(default = "default_failure_examples")]
    pub failure_examples: u32,
    /// The one method whose example panels are drawn (default: the first
    /// column, `methods[0]`, else `external[0]`): one method keeps the
    /// file count at models × types × K.
    #[serde(default)]
    pub failure_method: Option<String>,
}

fn default_failure_examples() -> u32 {
    4
}

impl Default for ReportCfg {
    fn default() -> Self {
        ReportCfg { failure_examples: default_failure_examples(), failure_method: None }
    }
}

impl Config {
    /// The column id whose failure examples are drawn (see [`ReportCfg::failure_method`]).
    pub fn failure_method(&self) -> Option<&str> {
        self.report.failure_method.as_deref().or(self.methods.first().map(String::as_str)).or(self.external.first().map(String::as_str))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsCfg {
    /// A named convention (`sklearn`, `smiyc`, `streethazards`, …; see
    /// [`crate::metrics::conventions::PRESETS`]); the keys below override it.
    #[serde(default)]
    pub convention: Option<String>,
    /// `first` (SMIYC / Fishyscapes), `strict`, `interp`, `nearest`, `thinned`.
    #[serde(rename = "fpr95", default)]
    fpr95_cfg: Option<Fpr95Rule>,
    /// `ap` (step sum, default), `trapezoid`, `trapezoid_reorder`.
    #[serde(default)]
    aupr: Option<AuprRule>,
    /// `pixels` (default) or `images`.
    #[serde(default)]
    average: Option<Average>,
    /// `anomaly` (default) or `normal` (extra AUPR-In / FPR95-In keys).
    #[serde(default)]
    positive: Option<Positive>,
    /// `f32` (default), `f16` or `u16`: scores rounded before every metric.
    #[serde(default)]
    score_precision: Option<ScorePrecision>,
    /// Resolved FPR95 rule (convention, then explicit key).
    #[serde(skip)]
    pub fpr95: Fpr95Rule,
    /// Every resolved switch.
    #[serde(skip)]
    pub conv: MetricConv,
    /// FAR budgets (share of anomalous pixels/images *accepted*, score <
    /// t: defects that slip through), each giving an `frr_at_far` point;
    /// the first is the soft threshold. Chosen on val, reported on test.
    /// (Before results format 2 this key was a budget on the FPR.)
    #[serde(default = "default_far")]
    pub far: Vec<f64>,
    /// FRR budgets (share of normal pixels/images *rejected*, score ≥ t:
    /// good parts thrown out), each giving a `far_at_frr` point; the first
    /// is the hard threshold. (Before format 2: a budget on the miss rate.)
    #[serde(default = "default_frr")]
    pub frr: Vec<f64>,
    /// Bootstrap replicates (resampling test images) for 95 % confidence
    /// intervals of AUROC, AUPR, FPR95, image AUROC, the operating points
    /// and the paired method differences; 0 = off.
    #[serde(default)]
    pub bootstrap: u32,
    #[serde(default)]
    pub bootstrap_seed: u64,
    /// Keep a split's score maps between the two metric passes while they
    /// fit this many MiB (else score it twice). Speed only: no figure
    /// depends on it.
    #[serde(default = "default_cache_mib")]
    pub score_cache_mib: u64,
    /// Image score = mean of the top-k pixel scores; 0 or 1 = max.
    #[serde(default)]
    pub image_topk: u32,
    /// Region metrics: AUPRO (FPR ≤ 0.3) and SegmentMeIfYouCan component
    /// metrics at the val-F1-optimal threshold. Opt-in (costs a
    /// connected-component labelling per image).
    #[serde(default)]
    pub regions: bool,
    /// SMIYC size filters: "anomaly" (pred ≥ 500 px, GT ≥ 100 px) or
    /// "obstacle" (50 / 10).
    #[serde(default)]
    pub component_track: crate::metrics::region::Track,
    /// `"smiyc"`: also SMIYC's 768-bin approximation of the test cells'
    /// pixel metric (`cells[].binned`, labelled approximate); the exact
    /// metrics stay what every table reports.
    #[serde(default)]
    binning: Option<String>,
    /// `binning = "smiyc"`, resolved.
    #[serde(skip)]
    pub smiyc_binning: bool,
    /// Also write `conventions.md`: the test cells under every convention
    /// preset (two extra passes over the test split).
    #[serde(default)]
    pub all_conventions: bool,
}
impl Default for MetricsCfg {
    fn default() -> Self {
        MetricsCfg {
            convention: None,
            fpr95_cfg: None,
            aupr: None,
            average: None,
            positive: None,
            score_precision: None,
            fpr95: Fpr95Rule::First,
            conv: MetricConv::default(),
            far: default_far(),
            frr: default_frr(),
            bootstrap: 0,
            bootstrap_seed: 0,
            score_cache_mib: default_cache_mib(),
            image_topk: 0,
            regions: false,
            component_track: Default::default(),
            binning: None,
            smiyc_binning: false,
            all_conventions: false,
        }
    }
}

impl MetricsCfg {
    /// The switches as written (convention name and explicit keys).
    pub fn overrides(&self) -> ConvOverrides {
        ConvOverrides {
            convention: self.convention.clone(),
            fpr95: self.fpr95_cfg,
            aupr: self.aupr,
            average: self.average,
            positive: self.positive,
            score_precision: self.score_precision,
        }
    }

    /// Resolve convention + keys into `conv` / `fpr95`. Switches that
    /// `bench run` does not compute yet are errors naming the key.
    fn resolve(&mut self) -> Result<()> {
        self.conv = self.overrides().resolve().context("`metrics.convention`")?;
        self.fpr95 = self.conv.fpr95;
        if let Some(b) = &self.binning {
            anyhow::ensure!(b == "smiyc", "`metrics.binning = {b:?}`: unknown binning; the only one is \"smiyc\" (SMIYC's 768-bin pixel metric, an extra approximate value)");
            self.smiyc_binning = true;
        }
        Ok(())
    }
}
fn default_far() -> Vec<f64> {
    vec![0.001, 0.01]
}
fn default_frr() -> Vec<f64> {
    vec![0.02]
}

impl Config {
    /// Parse and validate a config file. Errors are one line naming the file
    /// and the key.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read config", path.display()))?;
        let cfg = Self::parse(&text).with_context(|| format!("{}", path.display()))?;
        cfg.check_paths(path).with_context(|| format!("{}", path.display()))?;
        Ok(cfg)
    }

    /// Every input path the config names exists, or the error names the key,
    /// the path as written, the absolute path it was resolved to and the
    /// directory relative paths resolve against — the current directory, as
    /// for every path on the command line (see README "Paths") — plus the
    /// config's own folder when the path exists relative to it instead.
    fn check_paths(&self, config_path: &Path) -> Result<()> {
        let mut inputs: Vec<(String, &Path, bool)> = vec![];
        if self.datasets.is_empty() {
            inputs.push(("`dataset`".into(), &self.dataset, self.synthetic.is_some()));
        }
        for d in &self.datasets {
            inputs.push((format!("[[datasets]] '{}' `path`", d.name), &d.path, d.synthetic.is_some() || self.synthetic.is_some()));
        }
        if let Some(c) = &self.calibration {
            inputs.push(("`calibration`".into(), c, false));
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        for (key, p, generated) in inputs {
            if p.exists() || generated {
                continue;
            }
            let mut msg = format!("{key} = {:?}: {} does not exist", p.display().to_string(), absolute(p).display());
            if p.is_relative() {
                msg += &format!(" (relative paths resolve against the current directory, {})", cwd.display());
                if let Some(alt) = config_path.parent().map(|d| d.join(p)).filter(|a| a.exists()) {
                    msg += &format!("; it exists relative to the config's folder ({}): run bench from there or write the path from here", absolute(&alt).display());
                }
            }
            bail!("{msg}");
        }
        Ok(())
    }

    pub fn parse(text: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // toml's message is multi-line with a source excerpt; keep its
            // first line, which names the key.
            let msg = e.message().lines().next().unwrap_or("invalid TOML").to_string();
            match e.span() {
                Some(sp) => {
                    let start = sp.start.min(text.len());
                    let line = text[..start].lines().count().max(1);
                    // the key whose value is wrong, when the error points at a value
                    let at = &text[text[..start].rfind('\n').map_or(0, |i| i + 1)..];
                    let key = at.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.contains(['[', ']', '"', ' ']) && !msg.contains(&format!("`{k}`")));
                    match key {
                        Some(k) => anyhow::anyhow!("line {line}: {}: {msg}", key_path(text, start, k)),
                        None => anyhow::anyhow!("line {line}: {msg}"),
                    }
                }
                None => anyhow::anyhow!("{msg}"),
            }
        })?;
        let mut cfg = cfg;
        match (cfg.dataset.as_os_str().is_empty(), cfg.datasets.is_empty()) {
            (true, true) => bail!("`dataset` is missing (or list several as [[datasets]])"),
            (false, false) => bail!("`dataset` and [[datasets]] cannot both be given"),
            _ => {}
        }
        cfg.metrics.resolve()?;
        cfg.resolve_labels()?;
        cfg.validate()?;
        let names: Vec<&str> = cfg.datasets.iter().map(|d| d.name.as_str()).collect();
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || n.contains(['/', '\\']) || n.starts_with('.') || *n == "shards" {
                bail!("[[datasets]]: invalid name {n:?} (a plain folder name other than \"shards\")");
            }
            if names[..i].contains(n) {
                bail!("[[datasets]]: duplicate name '{n}'");
            }
        }
        cfg.expand()?;
        Ok(cfg)
    }

    /// `anomaly` / `ignore` from the explicit keys, else the preset, else
    /// the SPEC defaults.
    fn resolve_labels(&mut self) -> Result<()> {
        let preset = self.preset.map(Preset::labels);
        self.anomaly = self.anomaly_cfg.clone().or(preset.map(|p| p.0.to_vec())).unwrap_or_else(|| vec![1]);
        self.ignore = self.ignore_cfg.clone().or(preset.map(|p| p.1.to_vec())).unwrap_or_else(|| vec![255]);
        Ok(())
    }

    /// One single-dataset config per dataset of the sweep (itself when it
    /// has one `dataset`), each validated.
    pub fn expand(&self) -> Result<Vec<Config>> {
        if self.datasets.is_empty() {
            return Ok(vec![self.clone()]);
        }
        self.datasets
            .iter()
            .map(|d| {
                let ctx = || format!("[[datasets]] '{}'", d.name);
                let mut c = self.clone();
                c.datasets = vec![];
                c.dataset = d.path.clone();
                c.tag = Some(d.name.clone());
                if d.preset.is_some() {
                    // a dataset's preset replaces the top-level label keys
                    (c.preset, c.anomaly_cfg, c.ignore_cfg) = (d.preset, None, None);
                }
                c.anomaly_cfg = d.anomaly.clone().or(c.anomaly_cfg);
                c.ignore_cfg = d.ignore.clone().or(c.ignore_cfg);
                c.resize = d.resize.or(c.resize);
                c.layout = d.layout.or(c.layout);
                c.synthetic = d.synthetic.or(c.synthetic);
                c.resolve_labels().with_context(ctx)?;
                c.validate().with_context(ctx)?;
                Ok(c)
            })
            .collect()
    }

    /// Where this (possibly per-dataset) config's results go.
    pub fn dataset_dir(&self) -> PathBuf {
        match &self.tag {
            Some(t) => self.output_dir().join(t),
            None => self.output_dir(),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            bail!("`name` must be a plain folder name, got {:?}", self.name);
        }
        if self.methods.is_empty() && self.external.is_empty() {
            bail!("`methods` is empty (and no `external` methods)");
        }
        for (i, e) in self.external.iter().enumerate() {
            if e.is_empty() || e.contains(['/', '\\']) || e.starts_with('.') {
                bail!("`external`: {e:?} is not a folder name under scores/");
            }
            if self.external[..i].contains(e) {
                bail!("`external`: '{e}' is listed twice");
            }
            if Method::parse(e).is_ok() {
                bail!("`external`: '{e}' is a built-in method id; rename its scores/ folder so the two cannot be confused");
            }
        }
        let ms = self.parsed_methods()?;
        for (i, m) in ms.iter().enumerate() {
            if ms[..i].contains(m) {
                bail!("`methods`: '{}' is listed twice", m.id());
            }
        }
        if self.models.is_empty() {
            bail!("no [[models]] given");
        }
        for (i, m) in self.models.iter().enumerate() {
            if self.models[..i].iter().any(|o| o.id == m.id) {
                bail!("[[models]]: duplicate model id '{}'", m.id);
            }
            if m.id.is_empty() || m.id.contains(['/', '\\']) {
                bail!("[[models]]: invalid model id {:?}", m.id);
            }
        }
        for (k, t) in [("method.msp.temperature", self.method.msp.temperature), ("method.energy.temperature", self.method.energy.temperature)] {
            // Outside this range the f32 scores overflow (z/T) or collapse
            // to a constant (softmax of z/T ≈ uniform, T·log C swamping the
            // logits), and every metric would be meaningless.
            if !(t.is_finite() && (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t)) {
                bail!("`{k}` must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}] (f32 scores overflow or become constant outside), got {t:e}");
            }
        }
        if self.metrics.bootstrap > MAX_BOOTSTRAP {
            bail!("`metrics.bootstrap` must be at most {MAX_BOOTSTRAP} replicates (1,000–10,000 is usual), got {}", self.metrics.bootstrap);
        }
        if self.metrics.image_topk > MAX_TOPK {
            bail!("`metrics.image_topk` must be at most {MAX_TOPK} pixels, got {}", self.metrics.image_topk);
        }
        for (k, v) in self.metrics.far.iter().map(|v| ("metrics.far", v)).chain(self.metrics.frr.iter().map(|v| ("metrics.frr", v))) {
            if !(0.0..=1.0).contains(v) {
                bail!("`{k}` values are rates in [0, 1], got {v}");
            }
        }
        if let Some(v) = self.metrics.far.iter().find(|&&v| v >= 1.0) {
            bail!("`metrics.far` budgets (share of defects accepted) must be below 1, got {v}: accepting every defect has no highest threshold");
        }
        self.method.gen_opt.validate()?;
        self.method.sml.validate()?;
        self.method.heat.validate()?;
        self.validate_report()?;
        crate::data::LabelMap::new(self.anomaly.clone(), self.ignore.clone())?;
        Ok(())
    }

    fn validate_report(&self) -> Result<()> {
        if self.report.failure_examples > MAX_FAILURE_EXAMPLES {
            bail!("`report.failure_examples` must be at most {MAX_FAILURE_EXAMPLES} images per anomaly type, got {}", self.report.failure_examples);
        }
        if let Some(m) = &self.report.failure_method
            && !self.methods.contains(m)
            && !self.external.contains(m)
        {
            bail!("`report.failure_method`: '{m}' is not one of the sweep's `methods` or `external` columns");
        }
        Ok(())
    }

    pub fn parsed_methods(&self) -> Result<Vec<Method>> {
        self.methods.iter().map(|m| Method::parse(m).with_context(|| "`methods`".to_string())).collect()
    }

    /// Refuse an output folder that is, holds, or lies inside a folder the
    /// sweep reads (a dataset, a reused calibration file): replacing the
    /// results would delete the inputs. Errors name the keys.
    pub fn check_output_location(&self) -> Result<()> {
        let out = absolute(&self.output_dir());
        let mut reads: Vec<(String, PathBuf)> = vec![];
        if self.datasets.is_empty() {
            reads.push(("`dataset`".into(), self.dataset.clone()));
        }
        for d in &self.datasets {
            reads.push((format!("[[datasets]] '{}' `path`", d.name), d.path.clone()));
        }
        if let Some(c) = &self.calibration {
            // the file may live in the results folder it was written to:
            // it is read before anything is replaced, so only its dataset
            // matters; but an output *inside* its folder would lose it.
            if let Some(parent) = c.parent().filter(|p| !p.as_os_str().is_empty()) {
                let pa = absolute(parent);
                if pa != out && pa.starts_with(&out) {
                    bail!("`output`/`name`: {} would replace {}, which holds the `calibration` file this sweep reads", out.display(), pa.display());
                }
            }
        }
        for (key, p) in reads {
            let pa = absolute(&p);
            if out == pa {
                bail!("`output`/`name`: the results folder {} is the folder {key} reads; choose an `output` outside the dataset", out.display());
            }
            if out.starts_with(&pa) {
                bail!("`output`/`name`: the results folder {} is inside the folder {key} reads ({}); choose an `output` outside the dataset", out.display(), pa.display());
            }
            if pa.starts_with(&out) {
                bail!("`output`/`name`: the results folder {} holds the folder {key} reads ({}); replacing it would delete the dataset", out.display(), pa.display());
            }
        }
        Ok(())
    }

    /// The `[[datasets]]` names: the subfolders a sweep writes into its
    /// results folder.
    pub fn dataset_names(&self) -> Vec<String> {
        self.datasets.iter().map(|d| d.name.clone()).collect()
    }

    pub fn output_dir(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| PathBuf::from("results")).join(&self.name)
    }
}

/// How an error names `key` at byte `at` of the config: `` `key` `` at
/// the top level, `` `table.key` `` in a `[table]`, and
/// `` [[datasets]] 'name' `key` `` in an array-of-tables entry.
fn key_path(text: &str, at: usize, key: &str) -> String {
    let before = &text[..at];
    let header = before.lines().rev().map(str::trim).find(|l| l.starts_with('['));
    match header {
        Some(h) if h.starts_with("[[") => {
            let table = h.trim_matches(|c| c == '[' || c == ']').trim();
            // the entry's `name`, before or after the error within the entry
            let start = before.rfind(h).unwrap_or(0);
            let entry = &text[start..];
            let end = entry[h.len()..].find("\n[").map_or(entry.len(), |i| i + h.len());
            let name = entry[..end].lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
            });
            match name {
                Some(n) => format!("[[{table}]] '{n}' `{key}`"),
                None => format!("[[{table}]] `{key}`"),
            }
        }
        Some(h) => format!("`{}.{key}`", h.trim_matches(|c| c == '[' || c == ']').trim()),
        None => format!("`{key}`"),
    }
}

/// `p` as an absolute path with symlinks resolved as far as it exists
/// (the rest appended), so two spellings of one folder compare equal.
pub fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut base = abs.clone();
    let mut rest = vec![];
    loop {
        if let Ok(c) = base.canonicalize() {
            return rest.iter().rev().fold(c, |acc: PathBuf, r| acc.join(r));
        }
        match (base.file_name().map(|f| f.to_os_string()), base.parent()) {
            (Some(f), Some(parent)) => {
                rest.push(f);
                base = parent.to_path_buf();
            }
            _ => return abs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
name = "demo"
dataset = "datasets/demo"
methods = ["max_logit", "msp"]
[[models]]
id = "a"
name = "A"
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.anomaly, vec![1]);
        assert_eq!(c.ignore, vec![255]);
        assert_eq!(c.metrics.fpr95, Fpr95Rule::First);
    }

    #[test]
    fn presets_set_label_conventions_and_explicit_values_win() {
        let c = Config::parse(&format!("preset = \"streethazards\"\n{MIN}")).unwrap();
        assert_eq!((c.anomaly.clone(), c.ignore.clone()), (vec![13], vec![]));
        let c = Config::parse(&format!("preset = \"streethazards\"\nignore = [0]\n{MIN}")).unwrap();
        assert_eq!((c.anomaly.clone(), c.ignore.clone()), (vec![13], vec![0]));
        let e = Config::parse(&format!("preset = \"cityscapes\"\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("preset") && e.contains("cityscapes"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse(&format!("{MIN}\n[metrics]\nfpr96 = \"first\"\n")).unwrap_err().to_string();
        assert!(e.contains("fpr96"), "{e}");
        let e = Config::parse(&MIN.replace("name = \"demo\"", "name = \"demo\"\nnmae = 1")).unwrap_err().to_string();
        assert!(e.contains("nmae"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::parse(&MIN.replace("\"msp\"", "\"mspp\"")).unwrap_err();
        assert!(format!("{e:#}").contains("mspp"), "{e:#}");
        let e = Config::parse(&format!("{MIN}\n[[models]]\nid = \"a\"\nname = \"B\"\n")).unwrap_err().to_string();
        assert!(e.contains("duplicate model id 'a'"), "{e}");
        let e = Config::parse(&format!("{MIN}\n[method.msp]\ntemperature = 0\n")).unwrap_err().to_string();
        assert!(e.contains("method.msp.temperature"), "{e}");
        let e = Config::parse(&format!("external = [\"rba_m2f\", \"rba_m2f\"]\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("`external`") && e.contains("twice"), "{e}");
        let e = Config::parse(&format!("external = [\"msp\"]\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("built-in"), "{e}");
        let e = Config::parse(&format!("external = [\"../x\"]\n{MIN}")).unwrap_err().to_string();
        assert!(e.contains("../x"), "{e}");
        let c = Config::parse(&format!("external = [\"rba_m2f\"]\n{}", MIN.replace("methods = [\"max_logit\", \"msp\"]", "methods = []"))).unwrap();
        assert_eq!(c.external, ["rba_m2f"]);
        let e = Config::parse(&MIN.replace("dataset = \"datasets/demo\"", "dataset = 3")).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
    }
}
