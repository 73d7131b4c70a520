//! Robust level and scale per series: a Huber-clipped EWMA of the level and an EWMA of the clipped absolute
//! deviation, in struct-of-arrays form (12 bytes per series).

use std::ops::Range;

/// Parameters of the robust model. Plain old data so that the GPU twin can mirror it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RobustParams {
    /// EWMA weight of a normal point for the level, in (0, 1].
    pub alpha: f32,
    /// EWMA weight of a normal point for the scale, in (0, 1].
    pub beta: f32,
    /// Huber clip: residuals beyond `huber` scales are clipped before they update the model.
    pub huber: f32,
    /// |z| at or above which a point counts as anomalous for learning purposes.
    pub threshold: f32,
    /// Weight multiplier applied to the level update of anomalous points (0 = they do not move it at all); anomalous
    /// points never update the scale.
    pub anomaly_weight: f32,
    /// Absolute floor on the scale (in the metric's unit), so constant series do not give infinite z.
    pub abs_floor: f32,
    /// Relative floor on the scale, as a fraction of |level|.
    pub rel_floor: f32,
}

impl Default for RobustParams {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            beta: 0.05,
            huber: 3.0,
            threshold: 4.0,
            anomaly_weight: 0.05,
            abs_floor: 1e-6,
            rel_floor: 0.005,
        }
    }
}

/// Mean absolute deviation of a normal distribution is `sigma * sqrt(2 / pi)`; this turns one into the other.
pub const MAD_TO_SIGMA: f32 = 1.253_314_1;

/// Struct-of-arrays state of the robust model, one slot per series.
#[derive(Debug, Default, Clone)]
pub struct RobustState {
    pub level: Vec<f32>,
    /// Exponentially weighted mean absolute deviation (not yet converted to sigma).
    pub mad: Vec<f32>,
    /// Points seen, saturating.
    pub count: Vec<u32>,
}

impl RobustState {
    pub fn len(&self) -> usize {
        self.level.len()
    }

    pub fn is_empty(&self) -> bool {
        self.level.is_empty()
    }

    /// Adds a fresh slot and returns its index.
    pub fn push(&mut self) -> u32 {
        self.level.push(0.0);
        self.mad.push(0.0);
        self.count.push(0);
        (self.level.len() - 1) as u32
    }

    /// Makes slot `i` fresh again, as [`RobustState::push`] leaves a new one (a slot reused for another series).
    pub fn reset(&mut self, i: usize) {
        (self.level[i], self.mad[i], self.count[i]) = (0.0, 0.0, 0);
    }

    /// Sigma estimate of slot `i`, floored as the kernel floors it.
    #[inline]
    pub fn sigma(&self, i: usize, p: &RobustParams) -> f32 {
        floored_sigma(self.level[i], self.mad[i], p)
    }

    /// Bytes of state per series.
    pub const BYTES_PER_SERIES: usize = 4 + 4 + 4;

    /// Mutable view of the slots in `range`, for the dense kernels (point `i` updates slot `range.start + i`).
    ///
    /// # Panics
    /// If `range` is out of bounds.
    pub fn slices_mut(&mut self, range: Range<usize>) -> RobustSlices<'_> {
        RobustSlices {
            level: &mut self.level[range.clone()],
            mad: &mut self.mad[range.clone()],
            count: &mut self.count[range],
        }
    }

    /// Mutable view of every slot.
    pub fn as_slices_mut(&mut self) -> RobustSlices<'_> {
        RobustSlices { level: &mut self.level, mad: &mut self.mad, count: &mut self.count }
    }
}

/// Borrowed struct-of-arrays state of a run of consecutive series: what the dense kernels update. The three slices
/// must have the same length (the kernels check).
#[derive(Debug)]
pub struct RobustSlices<'a> {
    pub level: &'a mut [f32],
    pub mad: &'a mut [f32],
    pub count: &'a mut [u32],
}

impl RobustSlices<'_> {
    /// Number of series, once the kernels have checked that the three slices agree.
    pub fn len(&self) -> usize {
        self.level.len()
    }

    pub fn is_empty(&self) -> bool {
        self.level.is_empty()
    }
}

/// Sigma with the absolute and relative floors applied.
#[inline(always)]
pub fn floored_sigma(level: f32, mad: f32, p: &RobustParams) -> f32 {
    (mad * MAD_TO_SIGMA).max(p.abs_floor).max(p.rel_floor * level.abs())
}
