//! Scalar oracle of every kernel. The reference the SIMD and GPU implementations are tested against.
// Hot path: no IO, no allocation, no logging.

pub mod robust;

pub use robust::{robust_update_dense, robust_update_gather, robust_update_one};
