//! Functions compiled for the widest vector extension the CPU has. The crate is built for
//! baseline x86-64 (SSE2) so that one binary runs anywhere; the `gemm` crate picks its kernels
//! at run time, and `wide_fn!` gives the element-wise loops around it (softmax, exp, SiLU)
//! the same: the body is compiled three times (AVX-512, AVX2, baseline) and the first the CPU
//! supports runs.
//!
//! No result changes with the width chosen: the loops use no fused multiply-add (Rust never
//! contracts `a * b + c` on its own) and every reduction fixes its own order (`reduce`), so
//! each element sees the same IEEE operations in the same order on every path.

/// The vector extension `wide_fn!` functions use on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2,
    Baseline,
}

/// Detected once per call site by std's cached CPUID query (an atomic load).
#[inline(always)]
pub fn level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// Defines `fn name(args) -> ret { body }` whose body runs compiled for `simd::level()`.
/// Arguments are plain `name: type` pairs (no generics, no patterns).
macro_rules! wide_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match $crate::backend::cpu::simd::level() {
                    // SAFETY: `level` detected the features each function enables.
                    $crate::backend::cpu::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::backend::cpu::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::backend::cpu::simd::Level::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use wide_fn;
