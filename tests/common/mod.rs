//! Helpers shared by the integration tests: the `bench` binary with a
//! clean environment, and small synthetic workspaces.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
        let o = bench(&["synth", "--out", "ds", "--images", "3", "--height", "32", "--width", "48"], &root);
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
