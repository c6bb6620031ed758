//! The paper's preprocessing: band-pass (default 0.1–75 Hz), notch (50/60 Hz
//! or off), resampling to 200 Hz, in µV, in two modes from one module:
//!
//! * **causal** ([`CausalChain`]): the daemon's online chain. Biquad cascades
//!   (4th-order Butterworth high-pass + low-pass, IIR notch Q = 30, designed
//!   by the `biquad` crate) then a linear-phase polyphase FIR resampler
//!   (Kaiser, 75 dB design, ≥ 74 dB measured above 100 Hz). Streaming in chunks of any size gives
//!   bit-identical output to one whole-signal call; the dataset makers call
//!   [`preprocess`] in this mode, which runs the very same `CausalChain`, so a
//!   model trained on it sees live what it saw in training.
//! * **zero-phase** ([`zerophase`]): the official dataset makers' MNE-Python
//!   chain (`raw.filter(0.1, 75)`, `raw.notch_filter(50)`, `raw.resample(200)`)
//!   re-implemented with FFTs; see that module for what differs from MNE.
//!
//! Both modes take their parameters from [`crate::card::Preprocessing`], the
//! record that goes into every dataset's metadata and every model card.

mod causal;
pub mod design;
mod kernels;
pub mod zerophase;

pub use causal::{CausalChain, ChunkReport};

use crate::card::{FilterMode, Preprocessing};

/// Why a chain cannot be built or run. Each message names the bad value and
/// what is supported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DspError {
    #[error(
        "input sample rate {rate_hz} Hz cannot be resampled to 200 Hz: {reason}; {}",
        design::SUPPORTED_RATES
    )]
    UnsupportedRate { rate_hz: f64, reason: String },
    #[error("band-pass {low}–{high} Hz cannot be applied: {reason}")]
    BadBand { low: f64, high: f64, reason: String },
    #[error("notch at {notch_hz} Hz cannot be applied: {reason}; use 50, 60 or off")]
    BadNotch { notch_hz: f64, reason: String },
    #[error("output sample rate {rate_hz} Hz is not supported: LaBraM runs at 200 Hz (set `sample_rate_hz: 200`)")]
    BadOutputRate { rate_hz: f64 },
    #[error("no channels: the chain needs at least one channel")]
    NoChannels,
    #[error("channel {channel} has {len} samples but channel 0 has {expected}: all channels must be equally long")]
    RaggedChannels {
        channel: usize,
        len: usize,
        expected: usize,
    },
    #[error("filter design failed: {0}")]
    Design(String),
}

/// Whole-signal preprocessing in either mode: channel-major
/// `[channels][samples]` µV at `input_rate_hz` → `[channels][samples at 200 Hz]`.
///
/// In `causal` mode this streams the signal through a [`CausalChain`] (the
/// daemon's code path); the output has `⌊(n·L − M)/M⌋ + 1` samples for the
/// ratio `200/fs = L/M`, the ones whose input had arrived. In `zero-phase`
/// mode it is [`zerophase::preprocess`] (MNE's lengths: `round(n · 200/fs)`).
pub fn preprocess(
    signals: &[Vec<f32>],
    input_rate_hz: f64,
    pre: &Preprocessing,
) -> Result<Vec<Vec<f32>>, DspError> {
    let n_ch = signals.len();
    if n_ch == 0 {
        return Err(DspError::NoChannels);
    }
    let n = signals[0].len();
    for (c, s) in signals.iter().enumerate() {
        if s.len() != n {
            return Err(DspError::RaggedChannels {
                channel: c,
                len: s.len(),
                expected: n,
            });
        }
    }
    match pre.mode {
        FilterMode::Causal => preprocess_causal(signals, input_rate_hz, pre),
        FilterMode::ZeroPhase => zerophase::preprocess(signals, input_rate_hz, pre),
    }
}

fn preprocess_causal(
    signals: &[Vec<f32>],
    input_rate_hz: f64,
    pre: &Preprocessing,
) -> Result<Vec<Vec<f32>>, DspError> {
    let n_ch = signals.len();
    let n = signals[0].len();
    let mut chain = CausalChain::new(n_ch, input_rate_hz, pre)?;
    let (l, m) = chain.ratio();
    let n_out_max = (n as u64 * l / m + 1) as usize;
    let mut outputs: Vec<Vec<f32>> = (0..n_ch).map(|_| Vec::with_capacity(n_out_max)).collect();
    const FRAMES: usize = 4096;
    let mut inter = vec![0.0f32; FRAMES * n_ch];
    let mut out = Vec::with_capacity((FRAMES + 1) * n_ch);
    let mut f0 = 0;
    while f0 < n {
        let nb = (n - f0).min(FRAMES);
        // Channel rows to frames, 16 frames at a time: the rows are read in
        // short runs and the block is written contiguously (a row-at-a-time
        // scatter with a stride of one frame cost 5 % of a dataset maker's time).
        const BLOCK: usize = 16;
        let mut i0 = 0;
        while i0 < nb {
            let bn = (nb - i0).min(BLOCK);
            let block = &mut inter[i0 * n_ch..(i0 + bn) * n_ch];
            for (c, s) in signals.iter().enumerate() {
                for (k, &v) in s[f0 + i0..f0 + i0 + bn].iter().enumerate() {
                    block[k * n_ch + c] = v;
                }
            }
            i0 += bn;
        }
        out.clear();
        chain.process(&inter[..nb * n_ch], &mut out);
        // Frame-major back to one vector per channel: a channel at a time into
        // pre-sized rows (per-value pushes cost 6 % of a dataset maker's time).
        let rows = out.len() / n_ch;
        for (c, o) in outputs.iter_mut().enumerate() {
            let start = o.len();
            o.resize(start + rows, 0.0);
            for (d, row) in o[start..].iter_mut().zip(out.chunks_exact(n_ch)) {
                *d = row[c];
            }
        }
        f0 += nb;
    }
    Ok(outputs)
}
