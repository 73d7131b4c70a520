//! Spectral residual (Ren et al., "Time-Series Anomaly Detection Service at Microsoft", KDD 2019) over a per-series
//! sliding window of [`WINDOW`] points, in struct-of-arrays form (a ring of the last 64 values and a count per series:
//! 260 bytes per series).
//!
//! Per point: the window's newest `WINDOW − extend` values, minus their mean, followed by `extend` copies of a
//! one-step extrapolation (the paper's trick so the newest point is not at the edge of the window), go through a
//! 64-point FFT. The log-amplitude spectrum minus its local (circular, `mag-window`-bin) average is the *spectral
//! residual*; transforming back with the original phases gives the saliency map, in which the parts of the window
//! that the spectrum cannot explain as "more of the same" stand out. The point's score is its saliency relative to
//! the mean saliency of the newest `score-window` real points: `(S − mean) / mean` (0 while the window fills).
//!
//! `exp(L − avg L) / |F| = exp(−avg L)`, so the residual spectrum is `F · exp(−avg L)`: one `ln` and one `exp` per
//! bin, no trigonometry (the twiddles are a table, [`twiddles`], that the GPU gets in its uniform block so both sides
//! use the same bits). The DC bin (removed with the mean) is dropped and its log-amplitude copied from bin 1.
//!
//! Why the spectral residual rather than a windowed nearest-neighbour (matrix-profile) distance: its cost per point is
//! fixed and data-independent (two 64-point FFTs, no search, no branches that depend on the data), its state is the
//! window alone (260 bytes), and it is scale-free; so it maps onto one GPU invocation per point with nothing shared and
//! no divergence. A left matrix profile over the same window needs the window's subsequence distances, an `O(W · m)`
//! search per point (or `W` more floats of state per series for STOMP's incremental dot products), and is
//! normalisation-sensitive on the flat stretches common in service metrics.
//!
//! This is the reference for `shaders/wgsl/spectral_update.wgsl` and its CPU twin; there are no SIMD variants (the
//! work per point is two FFTs, where the GPU is the accelerator that pays off).
// Hot path: no IO, no allocation per point (the FFT scratch lives on the stack).

use std::sync::LazyLock;

/// Points per window: a power of two (radix-2 FFT), fixed so state and shader arrays have a static size.
pub const WINDOW: usize = 64;

/// Floor of a squared amplitude and of a mean saliency, so flat windows give finite logs and zero scores.
pub const TINY: f32 = 1e-30;

/// Parameters of the spectral residual. Plain old data so that the GPU twin can mirror it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpectralParams {
    /// Extrapolated points appended after the newest real one (the paper's κ); `WINDOW − extend` real points.
    pub extend: u32,
    /// Preceding points whose mean slope extrapolates the series (the paper's m), at most `WINDOW − extend − 2`; extrapolated
    /// from the points before the newest.
    pub look: u32,
    /// Bins of the centred, circular average of the log-amplitude spectrum (odd; the paper's q).
    pub mag_window: u32,
    /// Newest real points whose mean saliency the point's saliency is measured against (the paper's z).
    pub score_window: u32,
}

impl Default for SpectralParams {
    fn default() -> Self {
        Self { extend: 5, look: 5, mag_window: 3, score_window: 21 }
    }
}

impl SpectralParams {
    /// Real points in the window.
    pub fn real_points(&self) -> u32 {
        WINDOW as u32 - self.extend
    }

    /// Why these parameters cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let l = WINDOW as u32 - self.extend.min(WINDOW as u32);
        if !(1..=WINDOW as u32 / 2).contains(&self.extend) {
            return Err(format!("extend must be in 1..={}", WINDOW / 2));
        }
        if self.look == 0 || self.look + 1 >= l {
            return Err(format!("look must be in 1..{}", l - 1));
        }
        if self.mag_window.is_multiple_of(2) || self.mag_window > WINDOW as u32 - 1 {
            return Err(format!("mag-window must be odd and below {WINDOW}"));
        }
        if self.score_window == 0 || self.score_window > l {
            return Err(format!("score-window must be in 1..={l}"));
        }
        Ok(())
    }
}

/// The forward FFT's twiddles `(cos 2πk/64, −sin 2πk/64)` for `k < 32`, computed in f64 and rounded once.
pub fn twiddles() -> &'static [[f32; 2]; WINDOW / 2] {
    static T: LazyLock<[[f32; 2]; WINDOW / 2]> = LazyLock::new(|| {
        std::array::from_fn(|k| {
            let a = std::f64::consts::TAU * k as f64 / WINDOW as f64;
            [a.cos() as f32, -a.sin() as f32]
        })
    });
    &T
}

/// Every series' window ring and point count, one slot per series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpectralState {
    /// `WINDOW` values per series: series `s`, point `c` (0-based) at `window[s * WINDOW + c % WINDOW]`.
    pub window: Vec<f32>,
    /// Points seen per series; wraps from `u32::MAX` to `WINDOW` (same ring position, still full).
    pub count: Vec<u32>,
}

impl SpectralState {
    pub const BYTES_PER_SERIES: usize = WINDOW * size_of::<f32>() + size_of::<u32>();

    /// Adds a fresh series and returns its slot.
    pub fn push(&mut self) -> u32 {
        self.window.extend_from_slice(&[0.0; WINDOW]);
        self.count.push(0);
        (self.count.len() - 1) as u32
    }

    /// Makes slot `s` fresh again, as [`SpectralState::push`] leaves a new one (a slot reused for another series).
    pub fn reset(&mut self, s: usize) {
        self.window[s * WINDOW..(s + 1) * WINDOW].fill(0.0);
        self.count[s] = 0;
    }

    pub fn len(&self) -> usize {
        self.count.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count.is_empty()
    }
}

/// The count after one more point (wrapping to `WINDOW`, which keeps the ring position and the "full" state).
#[inline]
pub fn next_count(c: u32) -> u32 {
    let n = c.wrapping_add(1);
    if n == 0 { WINDOW as u32 } else { n }
}

/// Appends `x[i]` to series `slots[i]`'s window and writes its spectral-residual score into `scores[i]` (0 while
/// the window holds fewer than `WINDOW − extend` points). Slots may repeat: points are taken in order.
pub fn spectral_update_gather(
    st: &mut SpectralState,
    slots: &[u32],
    x: &[f32],
    scores: &mut [f32],
    p: &SpectralParams,
) {
    assert!(slots.len() == x.len() && x.len() == scores.len(), "one entry per point");
    let tw = twiddles();
    let mut scratch = Scratch::default();
    for i in 0..slots.len() {
        let s = slots[i] as usize;
        let c = st.count[s];
        let ring = &mut st.window[s * WINDOW..(s + 1) * WINDOW];
        ring[(c as usize) % WINDOW] = x[i];
        let c = next_count(c);
        st.count[s] = c;
        scores[i] = if c >= p.real_points() { score_window(ring, c, p, tw, &mut scratch) } else { 0.0 };
    }
}

/// The FFT's working arrays.
pub struct Scratch {
    re: [f32; WINDOW],
    im: [f32; WINDOW],
    lg: [f32; WINDOW],
}

impl Default for Scratch {
    fn default() -> Self {
        Self { re: [0.0; WINDOW], im: [0.0; WINDOW], lg: [0.0; WINDOW] }
    }
}

#[inline(always)]
fn rev(j: usize) -> usize {
    ((j as u32).reverse_bits() >> (32 - WINDOW.trailing_zeros())) as usize
}

/// In-place radix-2 decimation-in-time FFT of data already in bit-reversed order; output in natural order.
#[inline]
fn fft(re: &mut [f32; WINDOW], im: &mut [f32; WINDOW], tw: &[[f32; 2]; WINDOW / 2]) {
    let mut half = 1;
    while half < WINDOW {
        let step = WINDOW / 2 / half;
        let mut start = 0;
        while start < WINDOW {
            for k in 0..half {
                let w = tw[k * step];
                let (a, b) = (start + k, start + k + half);
                let vr = re[b] * w[0] - im[b] * w[1];
                let vi = re[b] * w[1] + im[b] * w[0];
                re[b] = re[a] - vr;
                im[b] = im[a] - vi;
                re[a] += vr;
                im[a] += vi;
            }
            start += 2 * half;
        }
        half *= 2;
    }
}

/// The score of the newest point of a full window (`c` points seen, the newest at ring position `(c − 1) % WINDOW`).
#[inline]
pub fn score_window(ring: &[f32], c: u32, p: &SpectralParams, tw: &[[f32; 2]; WINDOW / 2], sc: &mut Scratch) -> f32 {
    let l = p.real_points() as usize;
    let start = c.wrapping_sub(l as u32) as usize;
    let at = |j: usize| ring[(start.wrapping_add(j)) % WINDOW];
    let mut sum = 0.0f32;
    for j in 0..l {
        sum += at(j);
    }
    let mean = sum / l as f32;
    // The extrapolation, from the points before the newest (as Microsoft's implementation does, so a spike does not
    // extrapolate itself): x[e−m+1] + m · mean slope to x[e] = x[e−m+1] + Σ (x[e] − x[e−i]) / i, with e = n − 1.
    let e = l - 2;
    let base = at(e) - mean;
    let look = p.look as usize;
    let mut g = 0.0f32;
    for i in 1..=look {
        g += (base - (at(e - i) - mean)) / i as f32;
    }
    let next = (at(e + 1 - look) - mean) + g;
    let Scratch { re, im, lg } = sc;
    for j in 0..WINDOW {
        let v = if j < l { at(j) - mean } else { next };
        re[rev(j)] = v;
        im[rev(j)] = 0.0;
    }
    fft(re, im, tw);
    for k in 0..WINDOW {
        lg[k] = 0.5 * (re[k] * re[k] + im[k] * im[k]).max(TINY).ln();
    }
    lg[0] = lg[1];
    // Residual spectrum F · exp(−avg L), conjugated so the forward FFT inverts it (up to 1/64 and a conjugation,
    // which the magnitudes below do not see).
    let q = p.mag_window as usize;
    let h = q / 2;
    for k in 0..WINDOW {
        let mut a = 0.0f32;
        for t in 0..q {
            a += lg[(k + WINDOW - h + t) % WINDOW];
        }
        let f = (-(a / q as f32)).exp();
        re[k] *= f;
        im[k] = -(im[k] * f);
    }
    re[0] = 0.0;
    im[0] = 0.0;
    for j in 0..WINDOW {
        let r = rev(j);
        if j < r {
            re.swap(j, r);
            im.swap(j, r);
        }
    }
    fft(re, im, tw);
    let z = p.score_window as usize;
    let mut total = 0.0f32;
    let mut newest = 0.0f32;
    for j in l - z..l {
        newest = (re[j] * re[j] + im[j] * im[j]).sqrt();
        total += newest;
    }
    let avg = total / z as f32;
    (newest - avg) / avg.max(TINY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(xs: &[f32], p: &SpectralParams) -> Vec<f32> {
        let mut st = SpectralState::default();
        st.push();
        let mut out = vec![0.0; xs.len()];
        for (i, &x) in xs.iter().enumerate() {
            spectral_update_gather(&mut st, &[0], &[x], &mut out[i..=i], p);
        }
        out
    }

    fn noise(i: usize) -> f32 {
        let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((h >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn the_fft_matches_a_naive_dft() {
        let tw = twiddles();
        let x: Vec<f32> = (0..WINDOW).map(noise).collect();
        let (mut re, mut im) = ([0.0f32; WINDOW], [0.0f32; WINDOW]);
        for j in 0..WINDOW {
            re[rev(j)] = x[j];
        }
        fft(&mut re, &mut im, tw);
        for k in 0..WINDOW {
            let (mut dr, mut di) = (0.0f64, 0.0f64);
            for (j, &v) in x.iter().enumerate() {
                let a = -std::f64::consts::TAU * (j * k) as f64 / WINDOW as f64;
                dr += f64::from(v) * a.cos();
                di += f64::from(v) * a.sin();
            }
            assert!((f64::from(re[k]) - dr).abs() < 1e-4 && (f64::from(im[k]) - di).abs() < 1e-4, "bin {k}");
        }
    }

    #[test]
    fn a_spike_stands_out_and_noise_does_not() {
        let p = SpectralParams::default();
        let mut xs: Vec<f32> = (0..400).map(|i| 10.0 + (i as f32 * 0.3).sin() + 0.1 * noise(i)).collect();
        xs[300] += 8.0;
        let sc = run(&xs, &p);
        assert!(sc[..58].iter().all(|&s| s == 0.0), "no score while the window fills");
        let before = sc[100..300].iter().cloned().fold(f32::MIN, f32::max);
        assert!(sc[300] > 3.0 * before.max(0.1), "spike {} vs the largest normal score {before}", sc[300]);
    }

    #[test]
    fn scores_are_shift_and_scale_invariant_and_flat_series_score_zero() {
        let p = SpectralParams::default();
        let xs: Vec<f32> = (0..200).map(|i| noise(i) + if i == 150 { 5.0 } else { 0.0 }).collect();
        let a = run(&xs, &p);
        let b = run(&xs.iter().map(|x| 1000.0 + 4.0 * x).collect::<Vec<_>>(), &p);
        for i in 0..xs.len() {
            assert!((a[i] - b[i]).abs() <= 2e-2 * a[i].abs().max(1.0), "{i}: {} vs {}", a[i], b[i]);
        }
        assert!(run(&[7.0; 100], &p).iter().all(|&s| s == 0.0));
    }

    #[test]
    fn the_count_wraps_to_a_full_window() {
        assert_eq!(next_count(u32::MAX), WINDOW as u32);
        assert_eq!(next_count(u32::MAX) as usize % WINDOW, (u32::MAX as usize + 1) % WINDOW);
    }

    #[test]
    fn bad_parameters_are_named() {
        assert!(SpectralParams::default().check().is_ok());
        assert!(SpectralParams { mag_window: 4, ..Default::default() }.check().unwrap_err().contains("mag-window"));
        assert!(SpectralParams { extend: 0, ..Default::default() }.check().unwrap_err().contains("extend"));
        assert!(SpectralParams { score_window: 60, ..Default::default() }.check().is_err());
    }
}
