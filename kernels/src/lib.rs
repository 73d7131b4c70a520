//! Pure compute kernels for per-series online models: no IO, no async, no allocation in hot functions.
//!
//! Every kernel has a scalar oracle in [`scalar`]; the SIMD implementations (`x86_64::avx2`, `x86_64::avx512`,
//! `aarch64::neon`, compiled with the default `simd` feature) follow it operation by operation and agree with it
//! **bit for bit** (no fused multiply-add, IEEE division, max/min/clamp operand orders chosen to match Rust's
//! semantics), so a replay gives the same output whichever implementation a machine picks. The tests assert exact
//! equality against the oracle; see `tests/kernels.rs`.
//!
//! [`Kernels::detect`] picks the implementation once per process (the `FAULTLINE_KERNELS` environment variable can
//! force one) and [`Kernels::name`] says which runs. A SIMD variant carries a token that can only be made after the
//! CPU was checked for its features, so holding a [`Kernels`] value is proof that it is safe to run.

use std::fmt;
use std::sync::OnceLock;

pub mod robust;
pub mod scalar;
pub mod spectral;

#[cfg(all(feature = "simd", target_arch = "x86_64"))]
pub mod x86_64;

#[cfg(all(feature = "simd", target_arch = "aarch64"))]
pub mod aarch64;

#[cfg(all(test, not(target_arch = "aarch64")))]
mod neon_model;

pub use robust::{RobustParams, RobustSlices, RobustState};
pub use spectral::{SpectralParams, SpectralState};

/// The kernel implementation chosen for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The scalar oracle; always available.
    Scalar,
    /// AVX2, 8 series per step.
    #[cfg(all(feature = "simd", target_arch = "x86_64"))]
    Avx2(x86_64::avx2::Avx2),
    /// AVX-512F (+CD for conflict detection in the gathering kernel), 16 series per step.
    #[cfg(all(feature = "simd", target_arch = "x86_64"))]
    Avx512(x86_64::avx512::Avx512),
    /// NEON, 4 series per step.
    #[cfg(all(feature = "simd", target_arch = "aarch64"))]
    Neon(aarch64::neon::Neon),
}

/// Every implementation name [`Kernels::by_name`] knows, whether or not this build or CPU has it.
pub const KERNEL_NAMES: [&str; 4] = ["scalar", "avx2", "avx512", "neon"];

/// Why a requested implementation cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// The name is none of [`KERNEL_NAMES`].
    Unknown(String),
    /// This build has no such implementation: other architecture, or built without the `simd` feature.
    NotCompiled(&'static str),
    /// This CPU lacks the features the implementation needs.
    Unsupported { name: &'static str, needs: &'static str },
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectError::Unknown(name) => {
                write!(f, "unknown kernel implementation {name:?}; expected auto or one of {}", KERNEL_NAMES.join(", "))
            }
            SelectError::NotCompiled(name) => write!(
                f,
                "kernel implementation {name} is not in this build (other architecture, or faultline-kernels built \
                 without its `simd` feature)"
            ),
            SelectError::Unsupported { name, needs } => {
                write!(f, "kernel implementation {name} needs CPU features {needs}, which this CPU lacks")
            }
        }
    }
}

impl std::error::Error for SelectError {}

/// What [`Kernels::detect`] chose, and why.
#[derive(Debug, Clone)]
pub struct Selection {
    pub kernels: Kernels,
    /// True when [`Kernels::ENV`] named the implementation that runs.
    pub forced: bool,
    /// Set when [`Kernels::ENV`] asked for something that cannot run: the process falls back to the best available
    /// implementation, and the caller should log this once.
    pub fallback: Option<SelectError>,
}

impl Kernels {
    /// Environment variable that forces an implementation: `scalar`, `avx2`, `avx512`, `neon`, or `auto` (the same
    /// as unset).
    pub const ENV: &'static str = "FAULTLINE_KERNELS";

    /// The implementation this process uses: [`Kernels::ENV`] if set and runnable, else the fastest this CPU
    /// supports. Decided once; later calls return the cached choice.
    pub fn detect() -> Self {
        Self::selection().kernels
    }

    /// The cached decision behind [`Kernels::detect`], with the reason for a fallback if there was one.
    pub fn selection() -> &'static Selection {
        static SELECTION: OnceLock<Selection> = OnceLock::new();
        SELECTION.get_or_init(|| {
            let requested = std::env::var(Self::ENV).unwrap_or_default();
            Self::select(&requested)
        })
    }

    /// The decision [`Kernels::selection`] makes for the value `requested` of [`Kernels::ENV`] (empty when unset).
    pub fn select(requested: &str) -> Selection {
        let requested = requested.trim();
        if requested.is_empty() || requested.eq_ignore_ascii_case("auto") {
            return Selection { kernels: Self::best(), forced: false, fallback: None };
        }
        match Self::by_name(requested) {
            Ok(kernels) => Selection { kernels, forced: true, fallback: None },
            Err(err) => Selection { kernels: Self::best(), forced: false, fallback: Some(err) },
        }
    }

    /// The fastest implementation this CPU supports.
    pub fn best() -> Self {
        *Self::available().last().expect("scalar is always available")
    }

    /// Every implementation this build and CPU can run, scalar first and the fastest last.
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut all = vec![Kernels::Scalar];
        #[cfg(all(feature = "simd", target_arch = "x86_64"))]
        {
            all.extend(x86_64::avx2::Avx2::try_new().map(Kernels::Avx2));
            all.extend(x86_64::avx512::Avx512::try_new().map(Kernels::Avx512));
        }
        #[cfg(all(feature = "simd", target_arch = "aarch64"))]
        all.extend(aarch64::neon::Neon::try_new().map(Kernels::Neon));
        all
    }

    /// The implementation called `name` (as [`Kernels::name`] spells it), if this build and CPU can run it.
    pub fn by_name(name: &str) -> Result<Self, SelectError> {
        let known = KERNEL_NAMES
            .iter()
            .copied()
            .find(|k| k.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| SelectError::Unknown(name.to_owned()))?;
        if let Some(k) = Self::available().into_iter().find(|k| k.name() == known) {
            return Ok(k);
        }
        match known {
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            "avx2" => Err(SelectError::Unsupported { name: "avx2", needs: x86_64::avx2::Avx2::NEEDS }),
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            "avx512" => Err(SelectError::Unsupported { name: "avx512", needs: x86_64::avx512::Avx512::NEEDS }),
            #[cfg(all(feature = "simd", target_arch = "aarch64"))]
            "neon" => Err(SelectError::Unsupported { name: "neon", needs: aarch64::neon::Neon::NEEDS }),
            other => Err(SelectError::NotCompiled(other)),
        }
    }

    /// Name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Scalar => "scalar",
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            Kernels::Avx2(_) => "avx2",
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            Kernels::Avx512(_) => "avx512",
            #[cfg(all(feature = "simd", target_arch = "aarch64"))]
            Kernels::Neon(_) => "neon",
        }
    }

    /// Series updated per SIMD step (1 for scalar).
    pub fn lanes(self) -> usize {
        match self {
            Kernels::Scalar => 1,
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            Kernels::Avx2(_) => 8,
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            Kernels::Avx512(_) => 16,
            #[cfg(all(feature = "simd", target_arch = "aarch64"))]
            Kernels::Neon(_) => 4,
        }
    }

    /// Updates the robust model of each `slots[i]` with `x[i]`, in order, writing the z-score of `x[i]` against the
    /// model *before* the update into `z[i]` and the sigma it used into `sigma[i]`. A slot may repeat; later points
    /// see earlier updates.
    ///
    /// The SIMD forms take a block of lanes at a time: a run of consecutive slots like the dense form, other
    /// distinct in-bounds slots through gathers or assembled lanes, and a block with a repeated slot through the
    /// scalar oracle. Whether that beats scalar depends on the slot order. Measured on a Zen 4 with AVX-512
    /// (`kernel_table`, best of interleaved rounds, every series once per batch): in slot order 4-9x scalar; in a
    /// random order only 1.7-2.7x while the state is in cache (assembling lanes and scattering the results back
    /// costs most of what the vector step saves) and 4-5x at 1M series, where all forms wait on memory
    /// (14 vs 56-66 Mpoints/s); a batch that repeats slots within blocks runs at scalar speed. The dense form is
    /// 5-11x scalar.
    ///
    /// # Panics
    /// If the four slices differ in length or a slot is out of bounds (after updating the points before it).
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
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            Kernels::Avx2(t) => t.robust_update_gather(state, slots, x, z, sigma, p),
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            Kernels::Avx512(t) => t.robust_update_gather(state, slots, x, z, sigma, p),
            #[cfg(all(feature = "simd", target_arch = "aarch64"))]
            Kernels::Neon(t) => t.robust_update_gather(state, slots, x, z, sigma, p),
        }
    }

    /// Dense form: point `i` updates series `i` of `state` (a tick in which every series reports once), writing
    /// `z[i]` and `sigma[i]` as [`Kernels::robust_update_gather`] does.
    ///
    /// # Panics
    /// If the slices differ in length.
    #[inline]
    pub fn robust_update_dense(
        self,
        state: RobustSlices<'_>,
        x: &[f32],
        z: &mut [f32],
        sigma: &mut [f32],
        p: &RobustParams,
    ) {
        match self {
            Kernels::Scalar => scalar::robust_update_dense(state, x, z, sigma, p),
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            Kernels::Avx2(t) => t.robust_update_dense(state, x, z, sigma, p),
            #[cfg(all(feature = "simd", target_arch = "x86_64"))]
            Kernels::Avx512(t) => t.robust_update_dense(state, x, z, sigma, p),
            #[cfg(all(feature = "simd", target_arch = "aarch64"))]
            Kernels::Neon(t) => t.robust_update_dense(state, x, z, sigma, p),
        }
    }
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
