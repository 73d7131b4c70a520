//! The burst channel: the recent mean of a series' standardised residual, scored by how far it breaks the record
//! range that mean has kept so far.
//!
//! A spike a series has often shown is not rare, so neither the value's nor the residual's rarity flags it, and
//! fatigue discounts a series that alarms often. What is new when spikes come denser than ever (errors in bursts, a
//! retry storm building up) is their rate: the exponentially weighted mean of the residual, over about `half-life`
//! points, reaches a height it never reached before. The channel keeps the lowest and highest value that mean has
//! taken (the record range) and scores a point by how far past it the mean goes: `alarm · beyond / (record · range)`,
//! the alarm level when the mean breaks its record by the fraction `record` of the range, more the further out.
//! Inside the range the surprise is 0.
//!
//! The range only grows, as the rarity sketches' ranges do: a record is a record, and an old incident raises the bar
//! instead of teaching the series a lower one. Residuals are clipped at [`CLIP`] sigmas, so one huge outlier moves the
//! mean by a bounded step. State: 12 bytes a series.
// Hot path: no IO, no allocation, no logging.

/// Residuals enter the mean clipped to ±`CLIP` sigmas.
pub const CLIP: f32 = 8.0;

/// Settings of the burst channel (from `[detector.burst]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstParams {
    /// Weight of one point in the mean: `1 − 0.5^(1 / half_life)`.
    pub weight: f32,
    /// The fraction of the record range the mean must go beyond it to reach the alarm level.
    pub record: f32,
}

impl BurstParams {
    pub fn new(half_life: f64, record: f64) -> Self {
        Self { weight: (1.0 - 0.5f64.powf(1.0 / half_life)) as f32, record: record as f32 }
    }
}

/// One series' recent mean residual and the record range it has kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    pub mean: f32,
    /// Lowest and highest mean so far (NaN before the first point).
    pub lo: f32,
    pub hi: f32,
}

impl Default for Burst {
    fn default() -> Self {
        Self { mean: 0.0, lo: f32::NAN, hi: f32::NAN }
    }
}

impl Burst {
    /// Moves the mean by residual `z` and returns its surprise when `score` (0 otherwise): `alarm`, the alarm level's
    /// surprise, where the mean breaks its record by `record` of the range, in proportion beyond and 0 inside. Then
    /// widens the record range to the mean. A non-finite `z` changes nothing.
    #[inline]
    pub fn observe(&mut self, z: f32, score: bool, alarm: f64, p: &BurstParams) -> f64 {
        if !z.is_finite() {
            return 0.0;
        }
        self.mean += p.weight * (z.clamp(-CLIP, CLIP) - self.mean);
        let m = self.mean;
        if self.lo.is_nan() {
            (self.lo, self.hi) = (m, m);
            return 0.0;
        }
        let beyond = if m > self.hi {
            m - self.hi
        } else if m < self.lo {
            self.lo - m
        } else {
            return 0.0;
        };
        let range = self.hi - self.lo;
        (self.lo, self.hi) = (self.lo.min(m), self.hi.max(m));
        if score && range > 0.0 { alarm * f64::from(beyond / (p.record * range)) } else { 0.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALARM: f64 = 3.4;

    fn params() -> BurstParams {
        BurstParams::new(14.0, 0.3)
    }

    /// Residuals of a series with a spike of `height` sigmas every `every` points and small noise between.
    fn spikes(every: usize, height: f32, n: usize, start: usize) -> impl Iterator<Item = f32> {
        (start..start + n)
            .map(move |i| if i % every == 0 { height } else { 0.2 * ((i * 7919 % 13) as f32 / 6.0 - 1.0) })
    }

    fn peak(b: &mut Burst, zs: impl Iterator<Item = f32>) -> f64 {
        let p = params();
        zs.map(|z| b.observe(z, true, ALARM, &p)).fold(0.0, f64::max)
    }

    #[test]
    fn spikes_at_their_usual_rate_stay_quiet_and_denser_ones_alarm() {
        let mut b = Burst::default();
        // Learn a spike every 20 points for a while: the record range settles.
        peak(&mut b, spikes(20, 6.0, 4000, 0));
        let usual = peak(&mut b, spikes(20, 6.0, 2000, 4000));
        assert!(usual < 0.5, "the usual rate broke a record: {usual}");
        // The same spikes, four times as often: the mean climbs past anything seen.
        let dense = peak(&mut b, spikes(5, 6.0, 200, 6000));
        assert!(dense >= ALARM, "a burst four times denser scored only {dense}");
    }

    #[test]
    fn a_record_raises_the_bar_and_nan_changes_nothing() {
        let mut b = Burst::default();
        peak(&mut b, spikes(20, 6.0, 4000, 0));
        let first = peak(&mut b, spikes(5, 6.0, 200, 4000));
        assert!(first >= ALARM);
        // Back to the usual rate, then the same burst again: it is no longer a record.
        peak(&mut b, spikes(20, 6.0, 2000, 4200));
        let again = peak(&mut b, spikes(5, 6.0, 200, 6200));
        assert!(again < 0.1 * first, "the second burst scored {again} against the first's {first}");
        let before = b;
        assert_eq!(b.observe(f32::NAN, true, ALARM, &params()), 0.0);
        assert_eq!(b, before);
    }

    #[test]
    fn the_alarm_level_is_reached_at_the_record_fraction() {
        let p = BurstParams { weight: 1.0, record: 0.3 };
        let mut b = Burst::default();
        for z in [0.0, 1.0] {
            b.observe(z, true, ALARM, &p);
        }
        // Range [0, 1]; a mean of 1.3 is 0.3 of the range beyond it.
        let s = b.observe(1.3, true, ALARM, &p);
        assert!((s - ALARM).abs() < 1e-5, "{s}");
        assert_eq!((b.lo, b.hi), (0.0, 1.3));
        // Not scoring still widens the range.
        assert_eq!(b.observe(-1.0, false, ALARM, &p), 0.0);
        assert_eq!(b.lo, -1.0);
    }
}
