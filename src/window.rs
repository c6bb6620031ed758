//! The DSP stage: raw input frames → model windows.
//!
//! [`Stage`] takes interleaved frames of the input stream (all its channels, in its
//! unit, each with an LSL timestamp), picks and orders the model's channels, converts
//! them to µV, runs them through the causal chain ([`crate::dsp::CausalChain`]) and
//! keeps the last `patches × 200` output frames in an [`Assembler`]. Every `hop` of
//! input (counted in input frames, so the grid never drifts) it cuts a [`Window`]
//! `[channels, patches, 200]` stamped with the LSL time of its last input sample.
//!
//! The stage is plain single-threaded code with no I/O, so it is tested (and used by
//! the integration tests' offline reference) without LSL. Faults are explicit:
//! [`Stage::discontinuity`] (a gap, a reconnect, a ring overrun) resets the filters
//! and the assembler, and a NaN/Inf input restarts the assembler; windows that would
//! have included such a point are reported as dropped with the reason, never
//! classified as if the signal were continuous.

use crate::card::{Preprocessing, PATCH_SIZE};
use crate::dsp::{CausalChain, DspError};
use crate::metrics::DropReason;

/// LSL time of one input frame and when the daemon received it (both in the local
/// LSL clock, seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameStamp {
    /// The frame's timestamp, already corrected to the local clock.
    pub t: f64,
    /// `lsl::local_clock()` when the acquisition thread pulled it.
    pub arrival: f64,
}

/// One model input, ready for inference.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// `[channels][patches][200]` in µV.
    pub data: Vec<f32>,
    /// Sequence number since start (counts every cut window, dropped or not).
    pub seq: u64,
    /// LSL time (local clock) of the window's last input sample.
    pub t_last: f64,
    /// When that sample was pulled (local clock): the start of the latency measure.
    pub arrival: f64,
    /// Input frames since the last (re)start of the chain up to and including the
    /// window's last one.
    pub frames_in: u64,
}

/// Ring of the last `len` frames at 200 Hz, `n_ch` channels, time-major.
#[derive(Debug, Clone)]
pub struct Assembler {
    n_ch: usize,
    len: usize,
    ring: Vec<f32>,
    /// Next write position (frame).
    pos: usize,
    /// Frames written since the last restart (saturates at `len`).
    filled: usize,
}

impl Assembler {
    pub fn new(n_ch: usize, len: usize) -> Self {
        Self {
            n_ch,
            len,
            ring: vec![0.0; n_ch * len],
            pos: 0,
            filled: 0,
        }
    }

    /// Appends interleaved frames `[n][n_ch]`.
    pub fn push(&mut self, frames: &[f32]) {
        let n = frames.len() / self.n_ch;
        let skip = n.saturating_sub(self.len);
        for f in frames[skip * self.n_ch..].chunks_exact(self.n_ch) {
            let at = self.pos * self.n_ch;
            self.ring[at..at + self.n_ch].copy_from_slice(f);
            self.pos = (self.pos + 1) % self.len;
        }
        self.filled = (self.filled + n).min(self.len);
    }

    /// Whether a whole window's worth of frames arrived since the last restart.
    pub fn is_full(&self) -> bool {
        self.filled >= self.len
    }

    /// Forgets the frames (the next window needs `len` new ones).
    pub fn restart(&mut self) {
        self.filled = 0;
    }

    /// Writes the last `len` frames channel-major (`out[c·len + t]`), oldest first.
    pub fn copy_window(&self, out: &mut [f32]) {
        let (n_ch, len) = (self.n_ch, self.len);
        for t in 0..len {
            let src = ((self.pos + t) % len) * n_ch;
            for c in 0..n_ch {
                out[c * len + t] = self.ring[src + c];
            }
        }
    }
}

/// How the stage picks and scales the input channels.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// Channels in the input stream.
    pub n_input_channels: usize,
    /// For each model channel (card order), its index in the input stream.
    pub selection: Vec<usize>,
    /// For each model channel, the factor to µV.
    pub to_microvolts: Vec<f32>,
    /// Input sample rate (Hz).
    pub input_rate_hz: f64,
    /// Window length in patches of 200 samples.
    pub patches: usize,
    /// Hop between windows, in input frames.
    pub hop_frames: u64,
    /// Band-pass / notch / 200 Hz.
    pub preprocessing: Preprocessing,
}

/// What the stage produced for one piece of input.
#[derive(Debug)]
pub enum StageOutput<'a> {
    /// A window to classify (the buffer is the caller's, see [`Stage::push`]).
    Window(&'a Window),
    /// A hop point whose window was not cut, and why.
    Dropped(DropReason),
}

/// The DSP stage (see the module documentation).
#[derive(Debug)]
pub struct Stage {
    cfg: StageConfig,
    chain: CausalChain,
    assembler: Assembler,
    /// Selected, scaled input, interleaved `[frames][model channels]`.
    sel: Vec<f32>,
    /// Chain output, interleaved.
    out: Vec<f32>,
    /// Input frames since the last chain (re)start.
    n_in: u64,
    next_trigger: u64,
    /// Why the assembler last restarted (None at start-up: filling the first window
    /// is not a drop).
    restart_reason: Option<DropReason>,
    window: Window,
    seq: u64,
    /// Non-finite values seen in the model's channels.
    pub nonfinite_total: u64,
}

impl Stage {
    /// Builds the chain; fails (with the rate / band named) if it cannot be served.
    pub fn new(cfg: StageConfig) -> Result<Self, DspError> {
        let n = cfg.selection.len();
        let chain = CausalChain::new(n, cfg.input_rate_hz, &cfg.preprocessing)?;
        let len = cfg.patches * PATCH_SIZE;
        Ok(Self {
            assembler: Assembler::new(n, len),
            chain,
            sel: Vec::new(),
            out: Vec::new(),
            n_in: 0,
            next_trigger: cfg.hop_frames.max(1),
            restart_reason: None,
            window: Window {
                data: vec![0.0; n * len],
                ..Window::default()
            },
            seq: 0,
            nonfinite_total: 0,
            cfg,
        })
    }

    pub fn config(&self) -> &StageConfig {
        &self.cfg
    }

    /// Number of values of one window (`channels × patches × 200`).
    pub fn window_len(&self) -> usize {
        self.window.data.len()
    }

    /// Input frames still to come before the next hop point (the last sample of the
    /// next window, if the window is full by then).
    pub fn frames_to_next_hop(&self) -> u64 {
        self.next_trigger - self.n_in
    }

    /// The input stops being continuous here (gap, reconnect, overrun): restart the
    /// filters and the window; the hop grid starts again from the next frame.
    pub fn discontinuity(&mut self) {
        self.chain.reset();
        self.assembler.restart();
        self.n_in = 0;
        self.next_trigger = self.cfg.hop_frames.max(1);
        self.restart_reason = Some(DropReason::Gap);
    }

    /// Processes interleaved input frames (`frames.len() == stamps.len() ×
    /// n_input_channels`). `emit` is called for every hop point, in order, with the
    /// window (valid during the call) or the reason it was dropped.
    pub fn push(
        &mut self,
        frames: &[f32],
        stamps: &[FrameStamp],
        mut emit: impl FnMut(StageOutput<'_>),
    ) {
        let n_src = self.cfg.n_input_channels;
        let n = stamps.len().min(frames.len() / n_src);
        let mut i = 0;
        while i < n {
            let take = ((self.next_trigger - self.n_in) as usize).min(n - i);
            self.select(&frames[i * n_src..(i + take) * n_src]);
            let last_bad = self.last_nonfinite_frame();
            match last_bad {
                None => self.filter_selected(0, take),
                Some(j) => {
                    // Frames up to the bad one go in, then the window restarts: no
                    // window may include a NaN/Inf sample (the chain zeroes it and
                    // resets that channel's filter).
                    self.filter_selected(0, j + 1);
                    self.assembler.restart();
                    self.restart_reason = Some(DropReason::Nonfinite);
                    self.filter_selected(j + 1, take);
                }
            }
            self.n_in += take as u64;
            i += take;
            if self.n_in == self.next_trigger {
                self.next_trigger += self.cfg.hop_frames.max(1);
                let stamp = stamps[i - 1];
                if self.assembler.is_full() {
                    self.assembler.copy_window(&mut self.window.data);
                    self.window.seq = self.seq;
                    self.window.t_last = stamp.t;
                    self.window.arrival = stamp.arrival;
                    self.window.frames_in = self.n_in;
                    self.restart_reason = None;
                    emit(StageOutput::Window(&self.window));
                } else if let Some(r) = self.restart_reason {
                    emit(StageOutput::Dropped(r));
                }
                self.seq += 1;
            }
        }
    }

    /// Picks and scales the model channels of `frames` into `self.sel`.
    fn select(&mut self, frames: &[f32]) {
        let n_src = self.cfg.n_input_channels;
        let n = self.cfg.selection.len();
        self.sel.clear();
        self.sel.reserve(frames.len() / n_src * n);
        for f in frames.chunks_exact(n_src) {
            for (&src, &k) in self.cfg.selection.iter().zip(&self.cfg.to_microvolts) {
                self.sel.push(f[src] * k);
            }
        }
    }

    /// Index (frame) of the last non-finite value in `self.sel`, counting them.
    fn last_nonfinite_frame(&mut self) -> Option<usize> {
        let n = self.cfg.selection.len();
        let mut last = None;
        for (i, v) in self.sel.iter().enumerate() {
            if !v.is_finite() {
                self.nonfinite_total += 1;
                last = Some(i / n);
            }
        }
        last
    }

    /// Runs selected frames `[a, b)` through the chain into the assembler.
    fn filter_selected(&mut self, a: usize, b: usize) {
        if a >= b {
            return;
        }
        let n = self.cfg.selection.len();
        self.out.clear();
        self.chain.process(&self.sel[a * n..b * n], &mut self.out);
        self.assembler.push(&self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(rate: f64, patches: usize, hop: u64) -> Stage {
        Stage::new(StageConfig {
            n_input_channels: 3,
            selection: vec![2, 0],
            to_microvolts: vec![1.0, 1e6],
            input_rate_hz: rate,
            patches,
            hop_frames: hop,
            preprocessing: Preprocessing::default(),
        })
        .unwrap()
    }

    fn input(n: usize, rate: f64, t0: f64) -> (Vec<f32>, Vec<FrameStamp>) {
        let mut x = Vec::new();
        let mut s = Vec::new();
        for i in 0..n {
            let t = i as f64 / rate;
            x.push((1e-6 * (2.0 * std::f64::consts::PI * 10.0 * t).sin()) as f32); // ch0 in V
            x.push(5.0);
            x.push((20.0 * (2.0 * std::f64::consts::PI * 7.0 * t).cos()) as f32); // ch2 in µV
            s.push(FrameStamp {
                t: t0 + t,
                arrival: t0 + t + 0.001,
            });
        }
        (x, s)
    }

    fn run(
        st: &mut Stage,
        x: &[f32],
        s: &[FrameStamp],
        chunk: usize,
    ) -> (Vec<Window>, Vec<DropReason>) {
        let mut w = Vec::new();
        let mut d = Vec::new();
        for (xc, sc) in x.chunks(chunk * 3).zip(s.chunks(chunk)) {
            st.push(xc, sc, |o| match o {
                StageOutput::Window(win) => w.push(win.clone()),
                StageOutput::Dropped(r) => d.push(r),
            });
        }
        (w, d)
    }

    #[test]
    fn assembler_orders_oldest_first() {
        let mut a = Assembler::new(2, 3);
        a.push(&[1.0, 10.0, 2.0, 20.0]);
        assert!(!a.is_full());
        a.push(&[3.0, 30.0, 4.0, 40.0]);
        assert!(a.is_full());
        let mut out = [0.0; 6];
        a.copy_window(&mut out);
        assert_eq!(out, [2.0, 3.0, 4.0, 20.0, 30.0, 40.0]);
        a.push(&[5.0, 50.0, 6.0, 60.0, 7.0, 70.0, 8.0, 80.0]);
        a.copy_window(&mut out);
        assert_eq!(out, [6.0, 7.0, 8.0, 60.0, 70.0, 80.0]);
    }

    #[test]
    fn windows_on_the_hop_grid_whatever_the_chunking() {
        let rate = 500.0;
        let (x, s) = input(5000, rate, 100.0);
        let mut a = stage(rate, 2, 250);
        let (wa, da) = run(&mut a, &x, &s, 7);
        let mut b = stage(rate, 2, 250);
        let (wb, _) = run(&mut b, &x, &s, 1000);
        // 2 patches = 2 s = 1000 input frames; hops every 250 frames up to 5000.
        assert!(da.is_empty());
        assert_eq!(wa.len(), wb.len());
        assert_eq!(wa.len(), (5000 - 1000) / 250 + 1);
        for (p, q) in wa.iter().zip(&wb) {
            assert_eq!(p.data, q.data, "chunking changed a window");
            assert_eq!(p.t_last, q.t_last);
        }
        // Stamped with the last input frame of the hop.
        assert_eq!(wa[0].frames_in, 1000);
        assert!((wa[0].t_last - (100.0 + 999.0 / rate)).abs() < 1e-9);
        assert!((wa[0].arrival - wa[0].t_last - 0.001).abs() < 1e-9);
        // Channel order = selection: the 7 Hz µV channel first, then the V channel ×1e6.
        let w = &wa.last().unwrap().data;
        let len = 400;
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        assert!(
            (rms(&w[..len]) - 20.0 / 2f32.sqrt()).abs() < 2.0,
            "{}",
            rms(&w[..len])
        );
        assert!(
            (rms(&w[len..]) - 1.0 / 2f32.sqrt()).abs() < 0.1,
            "{}",
            rms(&w[len..])
        );
    }

    #[test]
    fn window_equals_offline_chain_on_the_same_samples() {
        let rate = 256.0;
        let (x, s) = input(4096, rate, 0.0);
        let mut st = stage(rate, 4, 256);
        let (w, _) = run(&mut st, &x, &s, 33);
        let last = w.last().unwrap();
        // Offline: the same selected, scaled samples through a fresh chain in one call.
        let n = last.frames_in as usize;
        let sel: Vec<f32> = x[..n * 3]
            .chunks_exact(3)
            .flat_map(|f| [f[2], f[0] * 1e6])
            .collect();
        let mut chain = CausalChain::new(2, rate, &Preprocessing::default()).unwrap();
        let mut out = Vec::new();
        chain.process(&sel, &mut out);
        let frames = out.len() / 2;
        let tail = &out[(frames - 800) * 2..];
        for t in 0..800 {
            assert_eq!(last.data[t], tail[t * 2]);
            assert_eq!(last.data[800 + t], tail[t * 2 + 1]);
        }
    }

    #[test]
    fn gaps_and_nonfinite_drop_the_windows_they_touch() {
        let rate = 500.0;
        let (mut x, s) = input(6000, rate, 0.0);
        // NaN on a used channel at frame 3100, Inf on the unused channel 1 at 3200.
        x[3100 * 3 + 2] = f32::NAN;
        x[3200 * 3 + 1] = f32::INFINITY;
        let mut st = stage(rate, 2, 500);
        let (w, d) = run(&mut st, &x, &s, 50);
        assert_eq!(st.nonfinite_total, 1, "only the model's channels count");
        // Hops at 1000, 1500, ..., 6000 = 11; those ending at 3500, 4000 contain frame
        // 3100 (their 2 s reach back 1000 frames): dropped.
        assert_eq!(d, vec![DropReason::Nonfinite; 2]);
        assert_eq!(w.len(), 11 - 2);
        assert!(w.iter().all(|w| w.data.iter().all(|v| v.is_finite())));
        assert!(w.iter().all(|w| w.frames_in <= 3100 || w.frames_in >= 4500));

        // A discontinuity restarts the grid: after it, 1000 frames before a window.
        let (x, s) = input(6000, rate, 0.0);
        let mut st = stage(rate, 2, 500);
        let (a, _) = run(&mut st, &x[..3000 * 3], &s[..3000], 100);
        st.discontinuity();
        let (b, d) = run(
            &mut st,
            &x[3000 * 3..3000 * 3 + 1600 * 3],
            &s[3000..4600],
            100,
        );
        assert_eq!(a.len(), 5);
        assert_eq!(d, vec![DropReason::Gap]);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].frames_in, 1000);
        assert!((b[0].t_last - s[3999].t).abs() < 1e-12);
    }
}
