//! The WGSL path (TODO: gpu helper).
