//! Dataset discovery (TODO: data helper).
use std::path::PathBuf;

pub struct Dataset {
    pub root: PathBuf,
    pub splits: Vec<Split>,
}

pub struct Split {
    pub name: String,
    pub dir: PathBuf,
    pub stems: Vec<String>,
}
