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
//! [`Stage::discontinuity`] (a gap in the timestamps, a ring overrun) and
//! [`Stage::restart`] (a reconnect) reset the filters and the assembler, and a
//! NaN/Inf input restarts the assembler; windows that would have included such a
//! point are reported as dropped with the reason, never classified as if the signal
//! were continuous.
//!
//! Accounting: every hop point of the input is either a window or a
//! [`StageOutput::Dropped`], except the hop points before a stream's first window
//! can be full (start-up is not a loss). Within one stream session the hop grid
//! runs on through a discontinuity, counting the frames the timestamps say are
//! missing, so the hop points inside an outage and those while the window fills
//! again are all counted. Restarting the grid at every gap instead (as the daemon
//! did before issue 14) lost that count: with gaps closer together than one hop no
//! hop point was ever reached, and nothing was published or counted. A reconnect is
//! a new session (the source may have restarted with another clock): the grid
//! starts again, and its hop points until the window is full count as drops.

use crate::card::{Preprocessing, PATCH_SIZE};
use crate::dsp::{CausalChain, DspError};

/// Why a window that the hop grid called for was not published (label `reason` of
/// `labramd_windows_dropped_total`). Every hop point of the input either publishes a
/// prediction or counts one of these: nothing is skipped silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The inference queue was full: the oldest waiting window was dropped.
    QueueFull,
    /// The window would have spanned a gap in the input: a timestamp jump (the
    /// hop points inside the missing stretch count too) or a lost and recovered
    /// stream.
    Gap,
    /// The window would have included input samples the daemon itself dropped
    /// because its acquisition ring was full (`labramd_ring_overruns_total`).
    Overrun,
    /// The window held NaN/Inf input samples.
    Nonfinite,
    /// The model failed on the window (logged), or the inference thread is gone.
    InferenceError,
    /// The prediction was computed but could not be pushed to the outlet (logged).
    PublishError,
}

impl DropReason {
    pub const ALL: [DropReason; 6] = [
        DropReason::QueueFull,
        DropReason::Gap,
        DropReason::Overrun,
        DropReason::Nonfinite,
        DropReason::InferenceError,
        DropReason::PublishError,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Gap => "gap",
            DropReason::Overrun => "overrun",
            DropReason::Nonfinite => "nonfinite",
            DropReason::InferenceError => "inference_error",
            DropReason::PublishError => "publish_error",
        }
    }
}

/// The hop between windows in input frames for a hop of `hop_s` seconds at
/// `input_rate_hz`: the nearest whole frame, at least one. The daemon and
/// `evaluate` both cut on this grid.
pub fn hop_frames(hop_s: f64, input_rate_hz: f64) -> u64 {
    (hop_s * input_rate_hz).round().max(1.0) as u64
}

/// 200-Hz output frames the causal chain has produced after `n_in` input frames
/// at the rate ratio `L/M` (`200 / input rate`): `⌊(n·L − M)/M⌋ + 1`, the samples
/// whose input has arrived.
pub fn output_frames(n_in: u64, (l, m): (u64, u64)) -> u64 {
    if n_in * l < m {
        0
    } else {
        (n_in * l - m) / m + 1
    }
}

/// Session time of the end of a window whose last input frame is the
/// `frames_in`-th since the stream started: the output frames produced by then,
/// over 200 Hz. The one definition of a window's time that the daemon's session
/// adaptation and `labram-trainer evaluate` both use.
pub fn end_seconds(frames_in: u64, ratio: (u64, u64)) -> f64 {
    output_frames(frames_in, ratio) as f64 / crate::card::SAMPLE_RATE_HZ
}

/// LSL time of one input frame and when the daemon received it (both in the local
/// LSL clock, seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameStamp {
    /// The frame's timestamp as `input.timestamps` made it (by default on the local
    /// clock, dejittered and monotonic; see `acquisition::TimestampFilter`).
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
    /// `windows` hop points (consecutive) whose windows were not cut, and why.
    Dropped { reason: DropReason, windows: u64 },
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
    /// Input frames of this stream session (missing ones included).
    n_in: u64,
    next_trigger: u64,
    /// Hop points before this frame count are the session's start-up fill, not
    /// drops (the frames a first window needs; 0 after a reconnect).
    due_from: u64,
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
        // The resampler has emitted floor(n·L/M) frames after n input frames.
        let (up, down) = chain.ratio();
        let due_from = (len as u64 * down).div_ceil(up.max(1));
        Ok(Self {
            assembler: Assembler::new(n, len),
            chain,
            sel: Vec::new(),
            out: Vec::new(),
            n_in: 0,
            next_trigger: cfg.hop_frames.max(1),
            due_from,
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

    /// The resampler's rate ratio `L/M` (`200 / input rate`, lowest terms).
    pub fn ratio(&self) -> (u64, u64) {
        self.chain.ratio()
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

    /// Input frames a first window needs (its hop points before that are start-up).
    pub fn frames_for_first_window(&self) -> u64 {
        self.due_from
    }

    /// The input stops being continuous here, `missing` input frames having been
    /// lost (a gap in the timestamps, a ring overrun): the filters and the window
    /// restart and the hop grid runs on through the missing frames. Every hop point
    /// among them is a drop for `reason` (emitted at once, in one
    /// [`StageOutput::Dropped`]), as is every later one until the window is full.
    pub fn discontinuity(
        &mut self,
        reason: DropReason,
        missing: u64,
        mut emit: impl FnMut(StageOutput<'_>),
    ) {
        self.chain.reset();
        self.assembler.restart();
        self.restart_reason = Some(reason);
        let hop = self.cfg.hop_frames.max(1);
        let end = self.n_in.saturating_add(missing);
        if self.next_trigger <= end {
            let passed = (end - self.next_trigger) / hop + 1;
            let first_due = if self.next_trigger >= self.due_from {
                self.next_trigger
            } else {
                self.next_trigger + (self.due_from - self.next_trigger).div_ceil(hop) * hop
            };
            let due = if first_due <= end {
                (end - first_due) / hop + 1
            } else {
                0
            };
            self.next_trigger += passed * hop;
            self.seq += passed;
            if due > 0 {
                emit(StageOutput::Dropped {
                    reason,
                    windows: due,
                });
            }
        }
        self.n_in = end;
    }

    /// A new stream session (a reconnect): the filters, the window and the hop
    /// grid start again from the next frame; its hop points until the window is
    /// full are drops for `reason` (the old session's windows were lost to it).
    pub fn restart(&mut self, reason: DropReason) {
        self.chain.reset();
        self.assembler.restart();
        self.n_in = 0;
        self.next_trigger = self.cfg.hop_frames.max(1);
        self.due_from = 0;
        self.restart_reason = Some(reason);
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
                } else if self.n_in >= self.due_from {
                    // Past start-up a window is only short after a restart; the
                    // fallback keeps a miscount visible rather than silent.
                    debug_assert!(self.restart_reason.is_some());
                    emit(StageOutput::Dropped {
                        reason: self.restart_reason.unwrap_or(DropReason::Gap),
                        windows: 1,
                    });
                }
                self.seq += 1;
            }
        }
    }

    /// Streams a recording through the stage as the daemon would receive it:
    /// `signals[c][t]` are the stage's input channels at its input rate, pushed
    /// in chunks of `chunk` frames and stamped `t / rate` (continuous, no gap).
    /// `emit` sees every hop point, as with [`Stage::push`]. This is how
    /// `labram-trainer evaluate` windows a file, so its windows are the daemon's,
    /// bit for bit (the causal chain does not depend on how input is chunked).
    pub fn push_signals(
        &mut self,
        signals: &[Vec<f32>],
        chunk: usize,
        mut emit: impl FnMut(StageOutput<'_>),
    ) {
        let n_ch = self.cfg.n_input_channels;
        if signals.len() != n_ch {
            debug_assert!(false, "{} signals for {n_ch} input channels", signals.len());
            return;
        }
        let n = signals.iter().map(Vec::len).min().unwrap_or(0);
        let rate = self.cfg.input_rate_hz;
        let chunk = chunk.max(1);
        let mut frames = Vec::with_capacity(chunk * n_ch);
        let mut stamps = Vec::with_capacity(chunk);
        let mut start = 0;
        while start < n {
            let end = (start + chunk).min(n);
            frames.clear();
            stamps.clear();
            for t in start..end {
                frames.extend(signals.iter().map(|s| s[t]));
                let at = t as f64 / rate;
                stamps.push(FrameStamp { t: at, arrival: at });
            }
            self.push(&frames, &stamps, &mut emit);
            start = end;
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

    /// The output frames the chain has produced, and so a window's session time:
    /// 500 Hz (2/5) after 2000 inputs 800 outputs (4 s); 256 Hz (25/32) after
    /// 256·k inputs 200·k outputs; none before one output's input has arrived.
    #[test]
    fn output_frames_and_end_seconds() {
        assert_eq!(output_frames(2000, (2, 5)), 800);
        assert_eq!(output_frames(2, (2, 5)), 0);
        assert_eq!(output_frames(3, (2, 5)), 1);
        for k in 1..5 {
            assert_eq!(output_frames(256 * k, (25, 32)), 200 * k);
        }
        assert_eq!(end_seconds(2000, (2, 5)), 4.0);
        assert_eq!(end_seconds(750, (2, 5)), 1.5);
    }

    /// A recording streamed by `push_signals` is cut on the daemon's grid: at
    /// 500 Hz → 200 Hz, 4-s windows every 4 s end at input frames 2000, 4000; every
    /// 1.5 s the hop points are 750, 1500, 2250, 3000 and the first full window
    /// (800 outputs need 2000 inputs) ends at 2250. The windows equal those of
    /// one `push` of the whole signal (chunking does not matter).
    #[test]
    fn push_signals_cuts_the_daemon_grid_whatever_the_chunks() {
        let signals: Vec<Vec<f32>> = (0..3)
            .map(|c| {
                (0..5000)
                    .map(|i| ((i as f32) * 0.01 * (c + 1) as f32).sin() * 20.0)
                    .collect()
            })
            .collect();
        let grid = |hop: u64, chunk: usize| {
            let mut st = stage(500.0, 4, hop);
            let mut got = Vec::new();
            st.push_signals(&signals, chunk, |o| {
                if let StageOutput::Window(w) = o {
                    got.push((w.frames_in, w.data.clone()));
                }
            });
            got
        };
        let four = grid(hop_frames(4.0, 500.0), 64);
        assert_eq!(
            four.iter().map(|w| w.0).collect::<Vec<_>>(),
            vec![2000, 4000]
        );
        let one_and_half = grid(hop_frames(1.5, 500.0), 7);
        assert_eq!(
            one_and_half.iter().map(|w| w.0).collect::<Vec<_>>(),
            vec![2250, 3000, 3750, 4500]
        );
        assert_eq!(grid(hop_frames(1.5, 500.0), 5000), one_and_half);
    }

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

    fn collect(o: StageOutput<'_>, w: &mut Vec<Window>, d: &mut Vec<DropReason>) {
        match o {
            StageOutput::Window(win) => w.push(win.clone()),
            StageOutput::Dropped { reason, windows } => {
                d.extend(std::iter::repeat_n(reason, windows as usize))
            }
        }
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
            st.push(xc, sc, |o| collect(o, &mut w, &mut d));
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

        // A gap of 600 missing frames after frame 3000: the grid runs on through
        // them (hop point 3500 falls inside: dropped at once), the window fills
        // again from the next real frame (hop points 4000 and 4500 dropped) and
        // the first window after it ends 1000 real frames after the gap, on the grid.
        let (x, s) = input(6000, rate, 0.0);
        let mut st = stage(rate, 2, 500);
        let (a, d0) = run(&mut st, &x[..3000 * 3], &s[..3000], 100);
        assert_eq!(
            (a.len(), d0.len()),
            (5, 0),
            "windows at 1000, 1500, ..., 3000"
        );
        let (mut w_gap, mut d_gap) = (Vec::new(), Vec::new());
        st.discontinuity(DropReason::Gap, 600, |o| collect(o, &mut w_gap, &mut d_gap));
        assert!(w_gap.is_empty());
        assert_eq!(
            d_gap,
            vec![DropReason::Gap],
            "hop point 3500 is inside the gap"
        );
        let (b, d) = run(&mut st, &x[3000 * 3..4600 * 3], &s[3000..4600], 100);
        assert_eq!(d, vec![DropReason::Gap; 2]);
        assert_eq!(b.len(), 1);
        assert_eq!(
            b[0].frames_in, 5000,
            "on the grid: 3000 + 600 missing + 1400 real"
        );
        assert!((b[0].t_last - s[4399].t).abs() < 1e-12);
        assert!(
            b[0].seq > a[4].seq + 3,
            "dropped hop points keep their numbers"
        );
    }

    /// Issue 14: gaps closer together than one hop used to restart the grid each
    /// time, so no hop point was reached and nothing was published or counted. Now
    /// every hop point from the first window's on is accounted for.
    #[test]
    fn frequent_gaps_count_every_hop_point() {
        let rate = 500.0;
        let (x, s) = input(5000, rate, 0.0);
        let mut st = stage(rate, 2, 250);
        let (mut w, mut d) = (Vec::new(), Vec::new());
        for (xc, sc) in x.chunks(20 * 3).zip(s.chunks(20)) {
            st.discontinuity(DropReason::Gap, 0, |o| collect(o, &mut w, &mut d));
            st.push(xc, sc, |o| collect(o, &mut w, &mut d));
        }
        assert!(w.is_empty(), "no window survives a gap every 20 frames");
        // Hop points 1000, 1250, ..., 5000 (before 1000 no window was possible).
        assert_eq!(d, vec![DropReason::Gap; (5000 - 1000) / 250 + 1]);
    }

    #[test]
    fn overrun_and_reconnect_reasons_and_accounting() {
        let rate = 500.0;
        let (x, s) = input(8000, rate, 0.0);
        let mut st = stage(rate, 2, 500);
        let (w0, d0) = run(&mut st, &x[..2000 * 3], &s[..2000], 100);
        assert_eq!((w0.len(), d0.len()), (3, 0));
        // An overrun that dropped 1200 frames: hop points 2500 and 3000 inside it.
        let (mut w, mut d) = (Vec::new(), Vec::new());
        st.discontinuity(DropReason::Overrun, 1200, |o| collect(o, &mut w, &mut d));
        let (w1, d1) = run(&mut st, &x[2000 * 3..4000 * 3], &s[2000..4000], 100);
        d.extend(d1);
        w.extend(w1);
        // n_in 3200 → 5200: hop points 3500 (not full), 4000 (not full), 4500, 5000 windows.
        assert_eq!(d, vec![DropReason::Overrun; 4]);
        assert_eq!(w.len(), 2);
        // A reconnect is a new session: the grid restarts, and its hop points until
        // the window is full again are gap drops (500, the window full at 1000).
        st.restart(DropReason::Gap);
        let (w2, d2) = run(&mut st, &x[4000 * 3..6000 * 3], &s[4000..6000], 100);
        assert_eq!(d2, vec![DropReason::Gap]);
        assert_eq!(w2.len(), 3);
        assert_eq!(w2[0].frames_in, 1000);
    }

    /// The first window comes at the first hop point at or after
    /// `frames_for_first_window`, whatever the input rate: the hop points before it
    /// are start-up, and none after it is ever short without a reason.
    #[test]
    fn first_window_is_due_where_the_resampler_fills_it() {
        for rate in [
            160.0, 200.0, 250.0, 256.0, 300.0, 500.0, 512.0, 1000.0, 1024.0,
        ] {
            let (x, s) = input(4 * rate as usize, rate, 0.0);
            let mut st = stage(rate, 2, 1);
            let due = st.frames_for_first_window();
            assert_eq!(due, 2 * rate as u64, "{rate} Hz");
            let (w, d) = run(&mut st, &x, &s, 37);
            assert!(d.is_empty(), "{rate} Hz: {d:?}");
            assert_eq!(w[0].frames_in, due, "{rate} Hz");
            assert_eq!(w.len() as u64, 4 * rate as u64 - due + 1, "{rate} Hz");
        }
    }
}
