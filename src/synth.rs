//! Deterministic synthetic dataset (TODO: data helper).
