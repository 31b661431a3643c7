//! Records the git revision (when building from a checkout) for manifest.json.
fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    if let Ok(o) = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output()
        && o.status.success()
    {
        let rev = String::from_utf8_lossy(&o.stdout).trim().to_string();
        println!("cargo:rustc-env=BENCH_GIT_REVISION={rev}");
    }
}
