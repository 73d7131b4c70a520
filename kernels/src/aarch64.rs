//! aarch64 SIMD implementations, each behind `#[target_feature]` and a token that proves its CPU check was made.

pub mod neon;

/// What `neon.rs` takes from `std::arch`. On other hosts the tests compile `neon.rs` against a lane-exact software
/// model of the same intrinsics instead (`neon_model.rs`), so its logic is checked on every CI run.
mod arch {
    pub(super) use std::arch::aarch64::*;

    pub(super) fn neon_detected() -> bool {
        std::arch::is_aarch64_feature_detected!("neon")
    }
}
