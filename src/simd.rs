//! The vector code path of the CPU kernels: which level this CPU runs
//! (detected once), and [`multiversion!`], which compiles one kernel body
//! for each level.
//!
//! Why a module of its own: the release build targets baseline x86-64
//! (SSE2), where a 16-lane loop is four instructions per step; the
//! scorer's kernels (`scores::cpu::fast`) and the metric accumulators'
//! lane loops (`metrics::keyhist`, `metrics::dashboard`) both run several
//! times faster on the wider units, and both must pick the same level (one
//! `BENCH_CPU_SIMD` switch for tests and benchmarks). Rust never
//! reassociates or contracts floating-point operations, so every level
//! gives the same bits.

use std::sync::atomic::{AtomicU8, Ordering};

static LEVEL: AtomicU8 = AtomicU8::new(u8::MAX);

/// The vector code path in use: 0 = portable (SSE2 on x86-64), 1 = AVX2,
/// 2 = AVX-512 (F/BW/DQ/VL). Detected once; `BENCH_CPU_SIMD=0|1|2` lowers
/// it (benchmarks, tests). All levels give bit-identical scores.
pub fn simd_level() -> u8 {
    let l = LEVEL.load(Ordering::Relaxed);
    if l != u8::MAX {
        return l;
    }
    let l = detect().min(std::env::var("BENCH_CPU_SIMD").ok().and_then(|v| v.parse().ok()).unwrap_or(u8::MAX));
    LEVEL.store(l, Ordering::Relaxed);
    l
}

/// Force the vector code path (clamped to what the CPU has); for tests that
/// check all levels agree. Returns the level now in use.
#[doc(hidden)]
pub fn force_simd_level(level: u8) -> u8 {
    let l = detect().min(level);
    LEVEL.store(l, Ordering::Relaxed);
    l
}

fn detect() -> u8 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("f16c")
        {
            return 2;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c") {
            return 1;
        }
    }
    0
}

/// Declares a kernel once and compiles it three times (portable, AVX2,
/// AVX-512), dispatching on [`simd_level`]. The body is plain Rust over
/// fixed-size lane arrays; the compiler vectorises it for each level.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$lt:lifetime>)? ($($a:ident : $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])* $vis fn $name $(<$lt>)? ($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn imp $(<$lt>)? ($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn v2 $(<$lt>)? ($($a: $t),*) $(-> $r)? { imp($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v1 $(<$lt>)? ($($a: $t),*) $(-> $r)? { imp($($a),*) }
                match $crate::simd::simd_level() {
                    // SAFETY: the level was detected on this CPU.
                    2 => return unsafe { v2($($a),*) },
                    1 => return unsafe { v1($($a),*) },
                    _ => {}
                }
            }
            imp($($a),*)
        }
    };
}
pub(crate) use multiversion;
