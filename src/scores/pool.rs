//! Recycled score-map buffers.
//!
//! Why: every image's maps (a few MB each) used to be allocated, faulted
//! in, and freed a moment later on another thread. Handing the same buffers
//! round again skips that per-image churn of the allocator and the page
//! tables. The pool is bounded ([`MAX_BYTES`]); small maps skip it.
//!
//! Maps let go in bulk (a cache giving way) skip it too
//! (`ScoreMaps::free`), and [`release`] then hands the freed pages back to
//! the system. That, not the pool, is what keeps peak RSS flat: at the
//! pass-1/pass-2 boundary the evicted maps stayed resident in glibc's
//! arenas while the rankers built in their place were allocated elsewhere
//! (RSS rose 65 MB in 0.2 s at 300 test images of 512²). The pool is also
//! emptied by [`release`], after every split.
//!
//! A recycled buffer is zero-filled before it is handed out, so results
//! cannot depend on what it held.

use std::sync::{Mutex, MutexGuard};

/// The most the pool keeps between images: the maps of the two or three
/// images in flight at 512² (about 5 MB each over five methods), a few
/// maps at Cityscapes size.
pub const MAX_BYTES: usize = 48 << 20;
/// Maps smaller than this (in floats) come from and go back to malloc.
pub const MIN_LEN: usize = 1 << 15;

/// A bounded set of spare map buffers.
struct Pool(Mutex<Vec<Vec<f32>>>);

/// The process's pool (what [`ScoreMaps`](super::ScoreMaps) give back to).
static POOL: Pool = Pool::new();

impl Pool {
    const fn new() -> Pool {
        Pool(Mutex::new(Vec::new()))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<f32>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn zeroed(&self, n: usize) -> Vec<f32> {
        if n >= MIN_LEN {
            let got = {
                let mut p = self.lock();
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

    fn give(&self, v: Vec<f32>) {
        if v.capacity() < MIN_LEN {
            return;
        }
        let mut p = self.lock();
        let held: usize = p.iter().map(|b| b.capacity() * 4).sum();
        if held + v.capacity() * 4 <= MAX_BYTES {
            p.push(v);
        }
    }

    fn drain(&self) {
        let drained = std::mem::take(&mut *self.lock());
        drop(drained);
    }
}

/// A zeroed map of `n` floats, from the pool when it holds one large enough.
pub fn zeroed(n: usize) -> Vec<f32> {
    POOL.zeroed(n)
}

/// Give a map back for a later [`zeroed`]; dropped when the pool is full.
pub fn give(v: Vec<f32>) {
    POOL.give(v)
}

/// Free every pooled buffer and hand the allocator's free pages back to
/// the system: where a large block of maps is let go for good (a cache
/// giving way to the rankers, the end of a split), so the memory is not
/// counted twice while what replaces it is allocated elsewhere.
pub fn release() {
    POOL.drain();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of its own (the process's is shared with every other test):
    /// a given buffer comes back, zero-filled, for any length it can hold;
    /// small maps never enter; the pool never holds more than MAX_BYTES.
    #[test]
    fn a_recycled_map_comes_back_zeroed_and_the_pool_stays_bounded() {
        let pool = Pool::new();
        let n = MIN_LEN * 2;
        let mut v = pool.zeroed(n);
        v.iter_mut().for_each(|x| *x = 7.0);
        let ptr = v.as_ptr();
        pool.give(v);
        let w = pool.zeroed(n - 5);
        assert_eq!(w.as_ptr(), ptr, "the given buffer is reused");
        assert_eq!(w.len(), n - 5);
        assert!(w.iter().all(|&x| x == 0.0), "a recycled map must be zero-filled");
        assert!(pool.lock().is_empty());
        // too short for what is asked: a fresh buffer, the short one stays
        pool.give(w);
        let big = pool.zeroed(n + 1);
        assert_eq!((big.len(), pool.lock().len()), (n + 1, 1));
        // small maps never enter the pool
        pool.give(vec![1.0; MIN_LEN - 1]);
        assert_eq!(pool.lock().len(), 1);
        // the pool never holds more than MAX_BYTES
        for _ in 0..(MAX_BYTES / (n * 4) + 4) {
            pool.give(vec![0.0; n]);
        }
        let bytes: usize = pool.lock().iter().map(|b| b.capacity() * 4).sum();
        assert!(bytes <= MAX_BYTES && bytes + n * 4 > MAX_BYTES, "{bytes}");
        pool.drain();
        assert!(pool.lock().is_empty());
    }
}
