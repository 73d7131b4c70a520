//! Level-shift detection: a two-sided CUSUM (Page 1954) on the robust model's standardised residuals.
//!
//! Each side accumulates `z − k` (upwards) or `−z − k` (downwards), floored at 0, with `z` clipped so one outlier cannot
//! fill it. A side that reaches `h` means the level has moved and stayed moved: a change point. The mean of the values
//! since that side last left 0 estimates the new level (the classical CUSUM estimate of the post-change mean), which
//! is what the caller re-baselines to.
// Hot path: no IO, no allocation, no logging.

/// Settings of the CUSUM (from `[detector.level-shift]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CusumParams {
    /// Reference value `k`, in sigmas: half the smallest shift worth detecting.
    pub drift: f32,
    /// Decision threshold `h`, in sigmas.
    pub threshold: f32,
    /// Residuals are clipped to ±`clip` sigmas before they accumulate.
    pub clip: f32,
}

/// One series' CUSUM: 24 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cusum {
    /// Upward and downward statistics, in sigmas.
    pub up: f32,
    pub down: f32,
    /// Sum and count of the values, in the metric's unit, since each side last left 0.
    pub up_sum: f32,
    pub down_sum: f32,
    pub up_n: u32,
    pub down_n: u32,
}

impl Cusum {
    /// Larger of the two statistics, in sigmas.
    #[inline]
    pub fn stat(&self) -> f32 {
        self.up.max(self.down)
    }

    /// Adds value `y` with standardised residual `z`; returns the statistic and whether the upward side is the
    /// larger one.
    #[inline]
    pub fn update(&mut self, z: f32, y: f32, p: &CusumParams) -> (f32, bool) {
        if z.is_finite() && y.is_finite() {
            let zc = z.clamp(-p.clip, p.clip);
            self.up = (self.up + zc - p.drift).max(0.0);
            self.down = (self.down - zc - p.drift).max(0.0);
            if self.up > 0.0 {
                self.up_sum += y;
                self.up_n += 1;
            } else {
                (self.up_sum, self.up_n) = (0.0, 0);
            }
            if self.down > 0.0 {
                self.down_sum += y;
                self.down_n += 1;
            } else {
                (self.down_sum, self.down_n) = (0.0, 0);
            }
        }
        (self.stat(), self.up >= self.down)
    }

    /// Whether a side has reached the decision threshold.
    #[inline]
    pub fn changed(&self, p: &CusumParams) -> bool {
        self.stat() >= p.threshold
    }

    /// The level after the change on the larger side: the mean of the values since that side left 0.
    #[inline]
    pub fn new_level(&self) -> Option<f32> {
        let (sum, n) = if self.up >= self.down { (self.up_sum, self.up_n) } else { (self.down_sum, self.down_n) };
        (n > 0).then(|| sum / n as f32)
    }

    /// Starts again from 0 (after the caller re-baselined, the old residuals are stale).
    #[inline]
    pub fn reset(&mut self) {
        *self = Cusum::default();
    }
}
