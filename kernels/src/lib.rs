//! Pure compute kernels for per-series online models: no IO, no async, no allocation in hot functions.
//!
//! Every kernel has a scalar oracle in [`scalar`]; faster implementations must agree with it within the tolerance
//! their tests state. [`Kernels::detect`] picks the implementation once and [`Kernels::name`] says which runs.

pub mod robust;
pub mod scalar;

pub use robust::{RobustParams, RobustState};

/// The kernel implementation chosen for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    Scalar,
}

impl Kernels {
    /// Chooses the best implementation this CPU supports. Call once at start and keep the value.
    pub fn detect() -> Self {
        Kernels::Scalar
    }

    /// Name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Scalar => "scalar",
        }
    }

    /// Updates the robust model of each `slots[i]` with `x[i]`, in order, writing the z-score of `x[i]` against the
    /// model *before* the update into `z[i]` and the sigma it used into `sigma[i]`. A slot may repeat; later points
    /// see earlier updates.
    #[inline]
    pub fn robust_update_gather(
        self,
        state: &mut RobustState,
        slots: &[u32],
        x: &[f32],
        z: &mut [f32],
        sigma: &mut [f32],
        p: &RobustParams,
    ) {
        match self {
            Kernels::Scalar => scalar::robust_update_gather(state, slots, x, z, sigma, p),
        }
    }
}
