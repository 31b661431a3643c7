//! Recycled score-map buffers.
//!
//! Why: every image's maps (a few MB each) are allocated on a scoring thread
//! and freed on the ranking thread a moment later. glibc keeps freed blocks
//! of that size in the allocating thread's arena, where the long-lived
//! statistics growing between them fragment it, so the peak RSS of a sweep
//! grew with its image count (1.2–1.5 B per test pixel at 300 images of
//! 512², against 0.22 B of live heap). Handing the same buffers round again
//! keeps the maps out of the allocator altogether. The pool is bounded
//! ([`MAX_BYTES`]), maps let go in bulk skip it (`ScoreMaps::free`), and
//! it is emptied whenever a cache gives way and after every split
//! ([`release`]); small maps skip it. A recycled buffer is zero-filled before it is handed out, so
//! results cannot depend on what it held.

use std::sync::Mutex;

static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// The most the pool keeps between images: the maps of the two or three
/// images in flight at 512² (about 5 MB each over five methods), a few
/// maps at Cityscapes size.
pub const MAX_BYTES: usize = 48 << 20;
/// Maps smaller than this (in floats) come from and go back to malloc.
pub const MIN_LEN: usize = 1 << 15;

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<f32>>> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A zeroed map of `n` floats, from the pool when it holds one large enough.
pub fn zeroed(n: usize) -> Vec<f32> {
    if n >= MIN_LEN {
        let got = {
            let mut p = pool();
            p.iter().position(|v| v.capacity() >= n).map(|k| p.swap_remove(k))
        };
        if let Some(mut v) = got {
            v.clear();
            v.resize(n, 0.0);
            return v;
        }
    }
    vec![0f32; n]
}

/// Give a map back for a later [`zeroed`]; dropped when the pool is full.
pub fn give(v: Vec<f32>) {
    if v.capacity() < MIN_LEN {
        return;
    }
    let mut p = pool();
    let held: usize = p.iter().map(|b| b.capacity() * 4).sum();
    if held + v.capacity() * 4 <= MAX_BYTES {
        p.push(v);
    }
}

/// Free every pooled buffer and hand the allocator's free pages back to
/// the system: where a large block of maps is let go for good (a cache
/// giving way to the rankers, the end of a split), so the memory is not
/// counted twice while what replaces it is allocated elsewhere.
pub fn release() {
    let drained = std::mem::take(&mut *pool());
    drop(drained);
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Buffers the pool holds now (for tests).
pub fn held() -> usize {
    pool().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_map_comes_back_zeroed_and_the_pool_stays_bounded() {
        // the pool is process-wide and other tests pass through it, so
        // nothing here assumes which buffer comes back
        let n = MIN_LEN * 2;
        let mut v = zeroed(n);
        v.iter_mut().for_each(|x| *x = 7.0);
        give(v);
        let w = zeroed(n - 5);
        assert_eq!(w.len(), n - 5);
        assert!(w.iter().all(|&x| x == 0.0), "a recycled map must be zero-filled");
        give(w);
        // small maps never enter the pool
        let before = held();
        give(vec![1.0; MIN_LEN - 1]);
        assert!(held() <= before);
        // the pool never holds more than MAX_BYTES
        for _ in 0..(MAX_BYTES / (n * 4) + 4) {
            give(vec![0.0; n]);
        }
        let bytes: usize = pool().iter().map(|b| b.capacity() * 4).sum();
        assert!(bytes <= MAX_BYTES, "{bytes}");
    }
}
