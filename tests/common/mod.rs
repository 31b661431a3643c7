//! Helpers shared by the integration tests: the `bench` binary with a
//! clean environment, and small synthetic workspaces.
#![allow(dead_code)]

use bench::scores::gpu::GpuScorer;
use rand::{RngExt, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether the environment demands the GPU tests run (CI sets
/// `BENCH_REQUIRE_GPU=1`, with Mesa's lavapipe installed).
pub fn gpu_required() -> bool {
    std::env::var("BENCH_REQUIRE_GPU").as_deref() == Ok("1")
}

/// The GPU scorer, or None (skip, with a notice) when there is no adapter
/// and the environment does not demand one.
pub fn gpu() -> Option<GpuScorer> {
    match GpuScorer::new(true) {
        Ok(g) => Some(g),
        Err(e) => {
            if gpu_required() {
                panic!("BENCH_REQUIRE_GPU=1 but no GPU adapter could be opened: {e:#}");
            }
            eprintln!("SKIP: no GPU adapter ({e:#}); set BENCH_REQUIRE_GPU=1 to make this a failure");
            None
        }
    }
}

/// Deterministic test data: ChaCha8 (`rand_chacha`), seeded.
pub struct Rng(rand_chacha::ChaCha8Rng);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }
    /// Uniform in [0, 1).
    pub fn unif(&mut self) -> f64 {
        self.0.random::<f64>()
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unif().max(1e-300);
        let v = self.unif();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        self.0.random_range(0..n)
    }
    /// `n` label codes: 5 % anomaly (1), 5 % void, the rest normal (one
    /// draw of `below(20)` per pixel).
    pub fn sparse_labels(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| match self.below(20) {
                0 => 1,
                1 => bench::data::label::VOID,
                _ => bench::data::label::NORMAL,
            })
            .collect()
    }
}

/// `bench args...` in `cwd`, as CI runs it (`CI=true`, no Slurm variables).
pub fn bench(args: &[&str], cwd: &Path) -> Output {
    cmd(args, cwd).output().unwrap()
}

/// The `bench` command, not yet run.
pub fn cmd(args: &[&str], cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bench"));
    c.args(args).current_dir(cwd).env("CI", "true");
    for v in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"] {
        c.env_remove(v);
    }
    c
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// The `error:` lines of a run's stderr.
pub fn error_lines(o: &Output) -> Vec<String> {
    stderr(o).lines().filter(|l| l.starts_with("error:")).map(String::from).collect()
}

/// A temp folder with a small synthetic dataset `ds/` (3 images per split,
/// 32×48) and a one-model config `c.toml` writing to `results/small/`.
pub struct Small {
    pub _t: tempfile::TempDir,
    pub root: PathBuf,
}

pub const SMALL_CONFIG: &str = r#"name = "small"
dataset = "ds"
methods = ["max_logit", "msp"]
device = "cpu"
[[models]]
id = "deeplab_r50"
name = "D"
"#;

impl Small {
    pub fn new() -> Small {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let o = bench(&["synth", "--out", "ds", "--images", "3", "--height", "32", "--width", "48", "--drifted", "none"], &root);
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::write(root.join("c.toml"), SMALL_CONFIG).unwrap();
        Small { _t: t, root }
    }
    pub fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    /// Write `c.toml` = the small config with `extra` lines put first.
    pub fn config(&self, extra: &str) {
        std::fs::write(self.p("c.toml"), format!("{extra}\n{SMALL_CONFIG}")).unwrap();
    }
    pub fn run(&self, extra: &[&str]) -> Output {
        let mut a = vec!["run", "c.toml"];
        a.extend_from_slice(extra);
        bench(&a, &self.root)
    }
}

/// Class-major `[C, H, W]` logits from f32 values, stored as float16 when `half`.
pub fn logits(c: usize, h: usize, w: usize, v: &[f32], half: bool) -> bench::data::Logits {
    use bench::data::LogitData;
    let data = if half { LogitData::F16(v.iter().map(|&x| half::f16::from_f32(x)).collect()) } else { LogitData::F32(v.to_vec()) };
    bench::data::Logits { c, h, w, data }
}

/// Every file under `dir` (none when it is missing), relative path → bytes,
/// sorted: two output folders compared byte for byte.
pub fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else { continue };
        for e in rd {
            let e = e.unwrap().path();
            if e.is_dir() {
                stack.push(e);
            } else {
                out.push((e.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&e).unwrap()));
            }
        }
    }
    out.sort();
    out
}
