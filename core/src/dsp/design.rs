//! Filter design helpers shared by the causal and zero-phase chains: the
//! rational resampling ratio, Kaiser-windowed sinc low-pass prototypes, and
//! the Butterworth biquad sections (designed by the `biquad` crate).

use biquad::{Coefficients, Hertz, Type};

use super::DspError;

/// Largest interpolation factor `L` the polyphase resampler accepts. Beyond it
/// the prototype filter (`L × K` taps) gets large for no practical benefit:
/// every nominal EEG rate reduces to `L ≤ 25` against 200 Hz.
pub const MAX_UP: u64 = 640;
/// Largest prototype length (`L × K`) the resampler accepts (32 MiB of `f64`).
pub const MAX_PROTOTYPE: u64 = 1 << 22;
/// Lowest and highest input rates accepted.
pub const MIN_RATE_HZ: f64 = 100.0;
pub const MAX_RATE_HZ: f64 = 100_000.0;

/// The sentence every unsupported-rate error ends with.
pub const SUPPORTED_RATES: &str =
    "supported: 200 Hz (passes through) and any rate from 100 Hz to 100 kHz whose ratio to 200 Hz \
     reduces to M/L with L <= 640, e.g. 160, 250, 256, 500, 512, 1000, 1024, 2048, 4096, 44100 Hz";

/// `fs_out / fs_in = L / M` in lowest terms, or an error naming the rate.
pub fn rational_ratio(fs_in: f64, fs_out: f64) -> Result<(u64, u64), DspError> {
    let unsupported = |reason: String| DspError::UnsupportedRate {
        rate_hz: fs_in,
        reason,
    };
    if !fs_in.is_finite() || fs_in <= 0.0 {
        return Err(unsupported("it is not a positive finite number".into()));
    }
    if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&fs_in) {
        return Err(unsupported(format!(
            "it is outside {MIN_RATE_HZ}..={MAX_RATE_HZ} Hz"
        )));
    }
    for l in 1..=MAX_UP {
        let m = fs_in * l as f64 / fs_out;
        let mr = m.round();
        if mr >= 1.0 && (m - mr).abs() <= 1e-9 * mr.max(1.0) {
            let (l, m) = (l, mr as u64);
            let g = gcd(l, m);
            return Ok((l / g, m / g));
        }
    }
    Err(unsupported(format!(
        "its ratio to {fs_out} Hz is not a fraction with a denominator <= {MAX_UP}"
    )))
}

pub fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Zeroth-order modified Bessel function of the first kind (power series;
/// converges fast for the β ≤ 15 used by Kaiser windows).
pub fn bessel_i0(x: f64) -> f64 {
    let q = x * x / 4.0;
    let (mut term, mut sum, mut k) = (1.0f64, 1.0f64, 1.0f64);
    loop {
        term *= q / (k * k);
        sum += term;
        if term < sum * 1e-17 {
            return sum;
        }
        k += 1.0;
    }
}

/// Kaiser's β for a stop-band attenuation of `atten_db` (> 50 dB branch).
pub fn kaiser_beta(atten_db: f64) -> f64 {
    if atten_db > 50.0 {
        0.1102 * (atten_db - 8.7)
    } else if atten_db >= 21.0 {
        0.5842 * (atten_db - 21.0).powf(0.4) + 0.07886 * (atten_db - 21.0)
    } else {
        0.0
    }
}

/// Kaiser's estimate of the taps needed for `atten_db` with a transition of
/// `transition_hz` at rate `fs`.
pub fn kaiser_taps(atten_db: f64, transition_hz: f64, fs: f64) -> usize {
    let dw = 2.0 * std::f64::consts::PI * transition_hz / fs;
    (((atten_db - 7.95) / (2.285 * dw)).ceil() as usize + 1).max(1)
}

/// Linear-phase windowed-sinc low-pass of `n` taps, cutoff `fc` (Hz, the
/// -6 dB point) at rate `fs`, Kaiser window `beta`, scaled to unit DC gain.
pub fn kaiser_lowpass(n: usize, fc: f64, fs: f64, beta: f64) -> Vec<f64> {
    let centre = (n as f64 - 1.0) / 2.0;
    let wc = 2.0 * fc / fs; // cutoff as a fraction of Nyquist
    let i0b = bessel_i0(beta);
    let mut h: Vec<f64> = (0..n)
        .map(|i| {
            let t = i as f64 - centre;
            let sinc = if t == 0.0 {
                wc
            } else {
                (std::f64::consts::PI * wc * t).sin() / (std::f64::consts::PI * t)
            };
            let r = if n > 1 { t / centre } else { 0.0 };
            let w = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / i0b;
            sinc * w
        })
        .collect();
    let s: f64 = h.iter().sum();
    if s != 0.0 {
        h.iter_mut().for_each(|v| *v /= s);
    }
    h
}

/// Q of the two sections of a 4th-order Butterworth (poles at ±π/8, ±3π/8).
pub const BUTTER4_Q: [f64; 2] = [0.541_196_100_146_197, 1.306_562_964_876_376_5];
/// Q of the IIR notch (bandwidth f0/Q: 50 Hz → 1.7 Hz), as scipy's `iirnotch(Q=30)`.
pub const NOTCH_Q: f64 = 30.0;

/// The biquad sections of the causal chain: 4th-order Butterworth high-pass
/// at the low band edge, 4th-order Butterworth low-pass at the high edge
/// (together a band-pass with the cost of scipy's `butter(4, band)`), then
/// the notch. Designed by the `biquad` crate (RBJ cookbook bilinear transform,
/// pre-warped at the corner, which for these Q values is Butterworth).
pub fn causal_sections(
    fs: f64,
    bandpass: Option<[f64; 2]>,
    notch: Option<f64>,
) -> Result<Vec<Coefficients<f64>>, DspError> {
    let nyq = fs / 2.0;
    let mut out = Vec::new();
    let design = |t: Type<f64>, f0: f64, q: f64| {
        let fs_h = Hertz::<f64>::from_hz(fs).map_err(|e| DspError::Design(format!("{e:?}")))?;
        let f0_h = Hertz::<f64>::from_hz(f0).map_err(|e| DspError::Design(format!("{e:?}")))?;
        Coefficients::<f64>::from_params(t, fs_h, f0_h, q)
            .map_err(|e| DspError::Design(format!("{t:?} at {f0} Hz, fs {fs} Hz: {e:?}")))
    };
    if let Some([lo, hi]) = bandpass {
        if !(lo.is_finite() && hi.is_finite() && lo >= 0.0 && lo < hi) {
            return Err(DspError::BadBand {
                low: lo,
                high: hi,
                reason: "the edges must be finite with 0 <= low < high".into(),
            });
        }
        if hi >= nyq {
            return Err(DspError::BadBand {
                low: lo,
                high: hi,
                reason: format!(
                    "the high edge is not below the Nyquist frequency ({nyq} Hz) of the {fs} Hz input"
                ),
            });
        }
        if lo > 0.0 {
            for q in BUTTER4_Q {
                out.push(design(Type::HighPass, lo, q)?);
            }
        }
        for q in BUTTER4_Q {
            out.push(design(Type::LowPass, hi, q)?);
        }
    }
    if let Some(f0) = notch {
        if !(f0.is_finite() && f0 > 0.0 && f0 < nyq) {
            return Err(DspError::BadNotch {
                notch_hz: f0,
                reason: format!(
                    "it must lie between 0 and the Nyquist frequency ({nyq} Hz) of the {fs} Hz input"
                ),
            });
        }
        out.push(design(Type::Notch, f0, NOTCH_Q)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_of_common_rates() {
        let cases = [
            (200.0, (1, 1)),
            (250.0, (4, 5)),
            (256.0, (25, 32)),
            (500.0, (2, 5)),
            (512.0, (25, 64)),
            (1000.0, (1, 5)),
            (1024.0, (25, 128)),
            (2048.0, (25, 256)),
            (160.0, (5, 4)),
            (44100.0, (2, 441)),
        ];
        for (fs, lm) in cases {
            assert_eq!(rational_ratio(fs, 200.0).unwrap(), lm, "{fs}");
        }
        for bad in [f64::NAN, -1.0, 0.0, 50.0, 1e6, 512.0001] {
            let e = rational_ratio(bad, 200.0).unwrap_err().to_string();
            assert!(e.contains("supported"), "{e}");
        }
    }

    #[test]
    fn bessel_and_kaiser() {
        assert!((bessel_i0(0.0) - 1.0).abs() < 1e-15);
        // scipy.special.i0(5.0)
        assert!((bessel_i0(5.0) - 27.239871823604442).abs() < 1e-9);
        let h = kaiser_lowpass(101, 10.0, 100.0, 8.0);
        assert!((h.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // symmetric (linear phase)
        for i in 0..50 {
            assert!((h[i] - h[100 - i]).abs() < 1e-15);
        }
    }
}
