//! x86_64 SIMD implementations, each behind `#[target_feature]` and a token that proves its CPU check was made.

pub mod avx2;
pub mod avx512;
