//! Band-power features: for every channel, the log absolute power (and, for the
//! dataset baseline, the relative power) in five EEG bands, from a Welch power
//! spectral density. Two band sets: [`BANDS`] (the dataset baseline of
//! `labram-trainer evaluate --dataset --baseline`) and [`ADAPTATION_BANDS`]
//! (`../shared/bench/adaptation.py`, the reference of the session protocols).
//!
//! Welch as `scipy.signal.welch` computes it with `window="hann"` (periodic),
//! `detrend="constant"`, 50 % overlap and a 2-s segment (0.5 Hz bins, so the
//! delta band's 0.5 Hz lower edge falls on a bin); shorter windows use one
//! segment of their own length. Written on `rustfft` because the whole feature is
//! a dozen lines on top of an FFT and no EEG crate offers these exact features.

use std::sync::Arc;

use rustfft::{num_complex::Complex, Fft, FftPlanner};

/// A band: name, `[low, high)` in Hz.
pub type Band = (&'static str, f64, f64);

/// The dataset baseline's bands, `[low, high)` in Hz (the last one closed: 30–45 Hz).
pub const BANDS: [Band; 5] = [
    ("delta", 0.5, 4.0),
    ("theta", 4.0, 8.0),
    ("alpha", 8.0, 13.0),
    ("beta", 13.0, 30.0),
    ("gamma", 30.0, 45.0),
];

/// The bands of `adaptation.py` (`(f >= lo) & (f < hi)`, every band half-open).
pub const ADAPTATION_BANDS: [Band; 5] = [
    ("delta", 1.0, 4.0),
    ("theta", 4.0, 8.0),
    ("alpha", 8.0, 13.0),
    ("beta", 13.0, 30.0),
    ("gamma", 30.0, 45.0),
];

/// Features per channel: log power and relative power of each band.
pub const FEATURES_PER_CHANNEL: usize = 2 * BANDS.len();

/// Floor under band powers before the logarithm (µV²): a flat (dead) channel
/// gives a finite, very low value instead of −∞.
const POWER_FLOOR: f64 = 1e-12;

/// Welch band-power extractor for windows of one length and rate. Reuses its
/// FFT plan and buffers across windows.
pub struct BandPower {
    rate_hz: f64,
    nperseg: usize,
    step: usize,
    window: Vec<f64>,
    scale: f64,
    fft: Arc<dyn Fft<f64>>,
    /// `(band, first bin, end bin)`.
    bins: Vec<(usize, usize)>,
    buf: Vec<Complex<f64>>,
    psd: Vec<f64>,
}

impl BandPower {
    /// For windows of `samples` samples at `rate_hz`, with the dataset
    /// baseline's [`BANDS`] (the last band closed).
    pub fn new(samples: usize, rate_hz: f64) -> Self {
        Self::with_bands(samples, rate_hz, &BANDS, true)
    }

    /// For windows of `samples` samples at `rate_hz`, with `bands`, each
    /// `[low, high)` except the last when `last_closed`.
    pub fn with_bands(samples: usize, rate_hz: f64, bands: &[Band], last_closed: bool) -> Self {
        let seg = (2.0 * rate_hz).round() as usize;
        let nperseg = seg.min(samples).max(2);
        let step = (nperseg / 2).max(1);
        // Periodic Hann, as scipy's get_window("hann", n) for spectral analysis.
        let window: Vec<f64> = (0..nperseg)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / nperseg as f64).cos())
            .collect();
        let scale = 1.0 / (rate_hz * window.iter().map(|w| w * w).sum::<f64>());
        let df = rate_hz / nperseg as f64;
        let n_bins = nperseg / 2 + 1;
        let bins = bands
            .iter()
            .enumerate()
            .map(|(k, &(_, lo, hi))| {
                let first = (lo / df - 1e-9).ceil().max(0.0) as usize;
                let closed = last_closed && k == bands.len() - 1;
                let end = if closed {
                    (hi / df + 1e-9).floor() as usize + 1
                } else {
                    (hi / df - 1e-9).ceil() as usize
                };
                (first.min(n_bins), end.min(n_bins))
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(nperseg);
        Self {
            rate_hz,
            nperseg,
            step,
            window,
            scale,
            fft,
            bins,
            buf: vec![Complex::default(); nperseg],
            psd: vec![0.0; n_bins],
        }
    }

    /// Frequency resolution of the PSD in Hz.
    pub fn resolution_hz(&self) -> f64 {
        self.rate_hz / self.nperseg as f64
    }

    /// One-sided Welch PSD of `x` (µV²/Hz), left in `self.psd`.
    fn welch(&mut self, x: &[f32]) {
        self.psd.iter_mut().for_each(|p| *p = 0.0);
        let n = self.nperseg;
        let mut segments = 0usize;
        let mut start = 0;
        while start + n <= x.len() {
            let seg = &x[start..start + n];
            let mean = seg.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            for (b, (&v, &w)) in self.buf.iter_mut().zip(seg.iter().zip(&self.window)) {
                *b = Complex::new((v as f64 - mean) * w, 0.0);
            }
            self.fft.process(&mut self.buf);
            for (k, p) in self.psd.iter_mut().enumerate() {
                *p += self.buf[k].norm_sqr();
            }
            segments += 1;
            start += self.step;
        }
        let last = self.psd.len() - 1;
        let even = n.is_multiple_of(2);
        for (k, p) in self.psd.iter_mut().enumerate() {
            // One-sided: double every bin but DC (and Nyquist for even n).
            let one_sided = if k == 0 || (even && k == last) {
                1.0
            } else {
                2.0
            };
            *p *= self.scale * one_sided / segments.max(1) as f64;
        }
    }

    /// Number of bands.
    pub fn bands(&self) -> usize {
        self.bins.len()
    }

    /// Absolute power per band (µV²) of one channel.
    pub fn band_powers(&mut self, x: &[f32]) -> Vec<f64> {
        self.welch(x);
        let df = self.resolution_hz();
        self.bins
            .iter()
            .map(|&(a, b)| self.psd[a..b].iter().sum::<f64>() * df)
            .collect()
    }

    /// Log band power of every channel of a channel-major window, channel by
    /// channel: `adaptation.py`'s feature up to a constant (it takes the log of
    /// the summed PSD, we of the power = sum × bin width; standardisation and
    /// re-centring remove that constant `ln 0.5`).
    pub fn log_features(&mut self, window: &[f32], channels: usize, out: &mut Vec<f64>) {
        if channels == 0 {
            return;
        }
        for row in window.chunks_exact(window.len() / channels) {
            let p = self.band_powers(row);
            out.extend(p.iter().map(|&v| v.max(POWER_FLOOR).ln()));
        }
    }

    /// Appends the features of one channel: `ln(power)` for the five bands,
    /// then `power / total` (total = sum of the five bands).
    pub fn channel_features(&mut self, x: &[f32], out: &mut Vec<f64>) {
        let p = self.band_powers(x);
        let total: f64 = p.iter().sum::<f64>().max(POWER_FLOOR);
        out.extend(p.iter().map(|&v| v.max(POWER_FLOOR).ln()));
        out.extend(p.iter().map(|&v| v / total));
    }

    /// Features of a window stored channel-major (`channels` rows of equal
    /// length): [`FEATURES_PER_CHANNEL`] per channel, channel by channel.
    pub fn window_features(&mut self, window: &[f32], channels: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(channels * FEATURES_PER_CHANNEL);
        if channels == 0 {
            return out;
        }
        let len = window.len() / channels;
        for row in window.chunks_exact(len) {
            self.channel_features(row, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, amp: f64, n: usize, rate: f64) -> Vec<f32> {
        (0..n)
            .map(|i| (amp * (2.0 * std::f64::consts::PI * freq * i as f64 / rate).sin()) as f32)
            .collect()
    }

    #[test]
    fn sine_power_lands_in_its_band_with_parseval_scale() {
        let rate = 200.0;
        let mut bp = BandPower::new(800, rate);
        assert_eq!(bp.resolution_hz(), 0.5);
        // 10 Hz, amplitude 20 µV: power = A²/2 = 200 µV², all in alpha.
        let p = bp.band_powers(&sine(10.0, 20.0, 800, rate));
        assert!((p[2] - 200.0).abs() / 200.0 < 0.01, "{p:?}");
        assert!(p[0] + p[1] + p[3] + p[4] < 1.0, "{p:?}");
        // 20 Hz is beta; 44 Hz is in the closed gamma band.
        let p = bp.band_powers(&sine(20.0, 10.0, 800, rate));
        assert!(p[3] > 45.0 && p[2] < 1.0, "{p:?}");
        let p = bp.band_powers(&sine(44.0, 10.0, 800, rate));
        assert!(p[4] > 45.0, "{p:?}");
    }

    #[test]
    fn features_are_finite_for_flat_channels() {
        let mut bp = BandPower::new(400, 200.0);
        let mut w = vec![0.0f32; 400];
        w.extend(sine(6.0, 5.0, 400, 200.0));
        let f = bp.window_features(&w, 2);
        assert_eq!(f.len(), 2 * FEATURES_PER_CHANNEL);
        assert!(f.iter().all(|v| v.is_finite()), "{f:?}");
        // Second channel: theta dominates the relative powers.
        assert!(f[FEATURES_PER_CHANNEL + 5 + 1] > 0.95, "{f:?}");
    }
}
