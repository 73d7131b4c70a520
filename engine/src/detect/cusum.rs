//! Level-shift detection: a two-sided CUSUM (Page 1954) on the robust model's standardised residuals.
//!
//! Each side accumulates `z − k` (upwards) or `−z − k` (downwards), floored at 0, with `z` clipped so one outlier cannot
//! fill it. A side that reaches `h` means the level has moved and stayed moved: a change point. The values since that
//! side last left 0, each weighted by how much it pushed the side up, estimate the new level (a few noise points that
//! happened to lift the side before the change weigh little against the points after it); the caller re-baselines
//! to it.
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
    /// Fraction of the points since a side left 0 that must have pushed it up: a shifted level moves nearly every
    /// point, intermittent outliers only some (they are anomalies, not a new normal).
    pub persistence: f32,
}

/// One series' CUSUM: 32 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cusum {
    /// Upward and downward statistics, in sigmas.
    pub up: f32,
    pub down: f32,
    /// Weighted sum of the values (in the metric's unit) and sum of the weights since each side last left 0.
    pub up_sum: f32,
    pub down_sum: f32,
    pub up_w: f32,
    pub down_w: f32,
    /// Points since each side left 0, and how many of them pushed it up.
    pub up_n: u16,
    pub up_pushed: u16,
    pub down_n: u16,
    pub down_pushed: u16,
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
            let (push_up, push_down) = ((zc - p.drift).max(0.0), (-zc - p.drift).max(0.0));
            if self.up > 0.0 {
                self.up_sum += push_up * y;
                self.up_w += push_up;
                self.up_n = self.up_n.saturating_add(1);
                self.up_pushed = self.up_pushed.saturating_add(u16::from(push_up > 0.0));
            } else {
                (self.up_sum, self.up_w, self.up_n, self.up_pushed) = (0.0, 0.0, 0, 0);
            }
            if self.down > 0.0 {
                self.down_sum += push_down * y;
                self.down_w += push_down;
                self.down_n = self.down_n.saturating_add(1);
                self.down_pushed = self.down_pushed.saturating_add(u16::from(push_down > 0.0));
            } else {
                (self.down_sum, self.down_w, self.down_n, self.down_pushed) = (0.0, 0.0, 0, 0);
            }
        }
        (self.stat(), self.up >= self.down)
    }

    /// Whether a side has reached the decision threshold with persistent pushes.
    #[inline]
    pub fn changed(&self, p: &CusumParams) -> bool {
        let persistent = |n: u16, pushed: u16| f32::from(pushed) >= p.persistence * f32::from(n);
        (self.up >= p.threshold && persistent(self.up_n, self.up_pushed))
            || (self.down >= p.threshold && persistent(self.down_n, self.down_pushed))
    }

    /// The level after the change on the larger side: the weighted mean of the values since that side left 0.
    #[inline]
    pub fn new_level(&self) -> Option<f32> {
        let (sum, w) = if self.up >= self.down { (self.up_sum, self.up_w) } else { (self.down_sum, self.down_w) };
        (w > 0.0).then(|| sum / w)
    }

    /// Starts again from 0 (after the caller re-baselined, the old residuals are stale).
    #[inline]
    pub fn reset(&mut self) {
        *self = Cusum::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: CusumParams = CusumParams { drift: 0.5, threshold: 20.0, clip: 4.0, persistence: 0.5 };

    #[test]
    fn noise_stays_below_the_threshold() {
        let mut c = Cusum::default();
        for i in 0..10_000 {
            // Deterministic residuals in [-1.5, 1.5): mean 0.
            let z = ((i * 7919) % 3000) as f32 / 1000.0 - 1.5;
            c.update(z, 10.0 + z, &P);
            assert!(!c.changed(&P), "point {i}: {}", c.stat());
        }
    }

    #[test]
    fn a_shift_is_found_with_its_new_level() {
        let mut c = Cusum::default();
        for _ in 0..100 {
            c.update(0.0, 10.0, &P);
        }
        // The level moves from 10 to 13 (3 sigmas): each point adds 3 − 0.5.
        let mut points = 0;
        while !c.changed(&P) {
            let (_, up) = c.update(3.0, 13.0, &P);
            assert!(up);
            points += 1;
        }
        assert_eq!(points, 8, "20 / 2.5 points");
        assert_eq!(c.new_level(), Some(13.0));
        c.reset();
        assert_eq!(c.stat(), 0.0);
    }

    #[test]
    fn intermittent_outliers_are_no_shift() {
        let mut c = Cusum::default();
        // Two +10 sigma points in every 8, the rest at the level: the clipped mean is up by a sigma, but most points
        // do not push.
        for i in 0..400 {
            let z = if i % 8 < 2 { 10.0 } else { 0.0 };
            c.update(z, 100.0 + z, &P);
            assert!(!c.changed(&P), "point {i}: {:?}", c);
        }
        assert!(c.stat() >= P.threshold, "the statistic itself is past the threshold");
    }

    #[test]
    fn one_outlier_cannot_fill_it_and_downward_shifts_count_too() {
        let mut c = Cusum::default();
        c.update(1000.0, 1e6, &P);
        assert_eq!(c.stat(), 3.5, "clipped at 4 sigmas");
        let mut c = Cusum::default();
        for _ in 0..6 {
            let (_, up) = c.update(-4.0, 2.0, &P);
            assert!(!up);
        }
        assert!(c.changed(&P));
        assert_eq!(c.new_level(), Some(2.0));
    }
}
