//! Acquisition: the LSL inlet, on its own thread, feeding lock-free SPSC rings.
//!
//! The thread resolves the configured stream, reads its metadata (labels, units,
//! rate) for the start-up checks, then pulls every sample into three `ringbuf`
//! rings shared with the DSP thread: the samples (interleaved f32), one
//! [`FrameStamp`] per frame (LSL time post-processed by [`TimestampFilter`], and
//! arrival time), and [`Marker`]s for discontinuities. It never waits on the DSP
//! thread: when the ring is full the sample is dropped, counted
//! (`labramd_ring_overruns_total`) and an overrun marker tells the DSP stage that
//! the signal is not continuous there (and how many samples are missing).
//!
//! Timestamps and gaps (`input.timestamps`, default `[clocksync, dejitter,
//! monotonize]`): many amplifiers (Bluetooth and consumer devices in particular)
//! stamp each chunk when they push it, so consecutive chunks' timestamps jitter by
//! tens of milliseconds although no sample is missing; comparing consecutive raw
//! timestamps then reports a "gap" at every other chunk (issue 14: 500 Hz, 10-sample
//! chunks, 0-40 ms of delay gave ~24 false gaps a second and no window at all).
//! [`TimestampFilter`] therefore fits the timestamps against the sample count (a
//! recursive least-squares line with liblsl's 90-s half-life) and a gap is what a
//! real outage is: samples missing against that line, i.e. a timestamp further from
//! the line than two sample periods, `input.gap_tolerance_s` and six times the
//! measured mean jitter. The number of missing samples travels with the gap marker,
//! so the window stage can count every hop point the outage swallowed.
//!
//! Why not liblsl's own post-processing (`set_postprocessing(proc_ALL)`): its
//! dejitter is the same regression on sample count, but it hides real outages. A
//! pylsl check (liblsl 1.18, 500 Hz, 10-sample chunks stamped at push time with 0-40 ms
//! of delay, a 2-s pause in the middle): the raw timestamps show a 1993 ms step, the
//! `proc_ALL` ones a largest step of 11 ms: the regression maps the first sample after
//! the pause to one period after the last one before it, and with the raw timestamps
//! no longer visible nothing downstream could tell. Doing the regression here keeps
//! both the raw timestamp (to detect the gap) and the smoothed one (to stamp
//! windows), and re-anchors the line after a gap instead of smearing it over 90 s.
//! Arrival times were not used either: a stream delivered late but complete (a
//! network hiccup) is not a gap, and a stream with missing samples delivered on time
//! is one.
//!
//! A lost stream (the inlet reports it, or no data for `input.stall_timeout_s`) is
//! counted, reported in the log, `/healthz` and `labramd_stream_connected`, and
//! resolved again until it is back with the same channels and rate; the reconnect is
//! a marker too, and the timestamp filter starts afresh.
//!
//! Waiting for data: liblsl 1.13 (the version `lsl-sys` bundles; the project links
//! 1.18 instead, see `.cargo/config.toml`, but a build against 1.13 works) waits in a pull
//! with a timeout by sleeping 1 ms at a time, which would add up to a millisecond of
//! latency to the window whose last sample it is waiting for. With that library the
//! thread polls without timeout and sleeps [`POLL_INTERVAL`] between empty polls,
//! but only while the next window's last sample is near ([`NextWindow`], kept up to
//! date by the DSP thread); the rest of the time it lets liblsl wait, which costs
//! less CPU. Newer liblsl versions (1.14+) wake a blocking pull at once, and the
//! thread always uses that.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use lsl::Pullable;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use crate::config::{InputConfig, TimestampProcessing};
use crate::metrics::{Health, Metrics};
use crate::window::FrameStamp;

/// Sleep between empty polls with liblsl < 1.14 (see the module documentation).
pub const POLL_INTERVAL: Duration = Duration::from_micros(200);
/// Within this many seconds of input before a window's last sample, liblsl 1.13 is
/// polled finely (see the module documentation).
pub const NEAR_WINDOW_S: f64 = 0.05;

/// The absolute input frame (counted like [`Marker::at_frame`]) that completes the
/// next window: written by the DSP thread, read by the acquisition thread to pace
/// its polling. `u64::MAX` until known.
pub type NextWindow = Arc<AtomicU64>;

/// A [`NextWindow`] that is not known yet.
pub fn next_window() -> NextWindow {
    Arc::new(AtomicU64::new(u64::MAX))
}

/// Seconds of input the rings hold.
pub const RING_SECONDS: f64 = 10.0;

/// What a stream says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMeta {
    pub name: String,
    pub stream_type: String,
    pub source_id: String,
    pub hostname: String,
    pub channel_count: usize,
    pub nominal_rate_hz: f64,
    pub format: String,
    /// `desc/channels/channel/label`, one per channel (empty if absent).
    pub labels: Vec<String>,
    /// `desc/channels/channel/unit`, one per channel (empty if absent).
    pub units: Vec<String>,
}

impl StreamMeta {
    fn same_layout(&self, other: &StreamMeta) -> bool {
        self.channel_count == other.channel_count
            && self.nominal_rate_hz == other.nominal_rate_hz
            && self.labels == other.labels
    }
}

/// Why the input cannot be (or is no longer) continuous before a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    /// Timestamps jumped (forwards beyond tolerance, or backwards).
    Gap,
    /// The stream was lost and found again.
    Reconnect,
    /// Samples were dropped because the ring was full.
    Overrun,
    /// Acquisition ended (shutdown): nothing follows.
    End,
}

/// A marker placed before absolute frame `at_frame` (frames counted since start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub at_frame: u64,
    pub kind: MarkerKind,
    /// Input frames missing at this point, as far as known: for a gap, the samples
    /// the timestamps skip; for an overrun, the samples dropped; 0 for a reconnect
    /// (a new stream session, see `Stage::restart`) and the end.
    pub missing: u64,
}

/// The producer halves of the rings (owned by the acquisition thread).
pub struct RingProducers {
    data: HeapProd<f32>,
    stamps: HeapProd<FrameStamp>,
    markers: HeapProd<Marker>,
}

/// The consumer halves of the rings (owned by the DSP thread).
pub struct RingConsumers {
    pub data: HeapCons<f32>,
    pub stamps: HeapCons<FrameStamp>,
    pub markers: HeapCons<Marker>,
}

/// Rings for `n_channels` holding `frames` frames.
pub fn rings(n_channels: usize, frames: usize) -> (RingProducers, RingConsumers) {
    let (dp, dc) = HeapRb::<f32>::new(n_channels * frames).split();
    let (sp, sc) = HeapRb::<FrameStamp>::new(frames).split();
    let (mp, mc) = HeapRb::<Marker>::new(1024).split();
    (
        RingProducers {
            data: dp,
            stamps: sp,
            markers: mp,
        },
        RingConsumers {
            data: dc,
            stamps: sc,
            markers: mc,
        },
    )
}

/// Half-life of the dejitter regression, in seconds of input (liblsl's default
/// `smoothing_halftime`): long enough to average out delivery jitter, short enough
/// to follow an amplifier clock's drift.
pub const DEJITTER_HALFTIME_S: f64 = 90.0;
/// The mean absolute jitter assumed before any is measured, so the first chunks of
/// a push-stamped stream are not taken for gaps; the estimate then follows the
/// measured residuals over [`JITTER_TAU_S`].
pub const JITTER_PRIOR_S: f64 = 0.025;
/// Time constant of the jitter estimate, in seconds of input.
pub const JITTER_TAU_S: f64 = 10.0;
/// A timestamp further from the regression line than this many times the mean
/// absolute jitter (plus two sample periods and `input.gap_tolerance_s`) is a gap.
/// Six times the mean absolute deviation is about 7.5 standard deviations of
/// Gaussian jitter and three times the largest deviation of uniform jitter. A
/// simulation of the stream (0-40 ms uniform delay, 120 s) found the largest
/// residual at 0.8 mean deviations above the fixed part; with 1 % of chunks delayed
/// by a further exponential 30 ms, factor 4 took 7-19 such spikes for gaps, factor 6
/// 4-8 (a spike that long cannot be told from a short outage as it arrives).
pub const JITTER_FACTOR: f64 = 6.0;
/// Longest stretch of missing input a single gap reports (a day): a larger jump is a
/// clock fault rather than an outage, and counting it in full could overflow the
/// hop grid's frame counter.
pub const MAX_MISSING_S: f64 = 86_400.0;
/// The line's origin moves to the newest sample every this many seconds of input,
/// so the regression's sample index stays small (the fit is unchanged).
const REBASE_S: f64 = 600.0;

/// A discontinuity in the timestamps, found by [`TimestampFilter::process`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jump {
    /// How far the timestamp was from where the stream's sample clock put it
    /// (dejitter), or from the previous timestamp (without dejitter), in seconds;
    /// negative when it went backwards.
    pub jump_s: f64,
    /// Samples missing before this one according to the timestamps (0 backwards,
    /// at most [`MAX_MISSING_S`] worth).
    pub missing_frames: u64,
}

/// Recursive least-squares fit `t ≈ t0 + w0 + w1·x` of timestamps on sample index
/// `x` (counted from the line's origin), with exponential forgetting.
#[derive(Debug, Clone)]
struct Line {
    t0: f64,
    /// Index of the next sample.
    x: f64,
    w0: f64,
    w1: f64,
    p00: f64,
    p01: f64,
    p11: f64,
}

impl Line {
    /// Prior variance of the intercept (relative to unit residual variance): unknown.
    const P00: f64 = 1e6;

    /// A line through `t` with the nominal slope. The slope's prior: the nominal
    /// rate trusted to 0.1 % against residuals of 10 ms.
    fn new(t: f64, rate: f64, w1: f64) -> Self {
        Self {
            t0: t,
            x: 0.0,
            w0: 0.0,
            w1,
            p00: Self::P00,
            p01: 0.0,
            p11: (0.1 / rate).powi(2),
        }
    }

    /// Where the line puts the next sample.
    fn predict(&self) -> f64 {
        self.t0 + self.w0 + self.w1 * self.x
    }

    /// Adds the next sample's timestamp; returns the line's value for it.
    fn update(&mut self, t: f64, lambda: f64) -> f64 {
        let (x, y) = (self.x, t - self.t0);
        let pi0 = self.p00 + self.p01 * x;
        let pi1 = self.p01 + self.p11 * x;
        let gamma = lambda + pi0 + pi1 * x;
        let e = y - (self.w0 + self.w1 * x);
        self.w0 += pi0 / gamma * e;
        self.w1 += pi1 / gamma * e;
        self.p00 = (self.p00 - pi0 * pi0 / gamma) / lambda;
        self.p01 = (self.p01 - pi0 * pi1 / gamma) / lambda;
        self.p11 = (self.p11 - pi1 * pi1 / gamma) / lambda;
        let fitted = self.t0 + self.w0 + self.w1 * x;
        self.x += 1.0;
        fitted
    }

    /// Moves the origin to the next sample (same line, same uncertainty).
    fn rebase(&mut self) {
        let x = self.x;
        self.w0 += self.w1 * x;
        self.p00 += 2.0 * x * self.p01 + x * x * self.p11;
        self.p01 += x * self.p11;
        self.x = 0.0;
    }
}

/// Post-processes one stream's timestamps (`input.timestamps`) and finds its gaps;
/// see the module documentation for why this is done here and not by liblsl.
///
/// * `clocksync` adds the LSL clock offset of the source's host;
/// * `dejitter` replaces each timestamp by the value of a recursive least-squares
///   line of timestamps on sample index (half-life [`DEJITTER_HALFTIME_S`]): the
///   stream's sample clock, free of delivery jitter, following clock drift. A
///   timestamp too far from the line is a gap ([`Jump`]); the line then skips the
///   missing samples' indices and lets its intercept be learnt again;
/// * `monotonize` never lets a timestamp go below the previous one, except right
///   after a gap (the gap marker already says the stream is not continuous there).
///
/// Without `dejitter`, gaps are jumps between consecutive timestamps beyond two
/// sample periods plus `input.gap_tolerance_s`, or backwards beyond the tolerance:
/// right for sources whose timestamps are exact, wrong for push-stamped ones.
///
/// Limit: a real gap shorter than about six times the mean delivery jitter cannot be
/// told from jitter by timestamps and goes undetected (the line absorbs it).
#[derive(Debug, Clone)]
pub struct TimestampFilter {
    steps: TimestampProcessing,
    rate: f64,
    gap_tolerance_s: f64,
    /// Forgetting factor per sample.
    lambda: f64,
    /// Weight of one sample in the jitter estimate.
    alpha: f64,
    line: Option<Line>,
    /// Mean absolute residual against the line (seconds).
    jitter: f64,
    prev_raw: Option<f64>,
    last_out: Option<f64>,
}

impl TimestampFilter {
    /// A filter for a stream of nominal rate `rate_hz` (> 0).
    pub fn new(steps: TimestampProcessing, rate_hz: f64, gap_tolerance_s: f64) -> Self {
        let samples_per_halftime = (rate_hz * DEJITTER_HALFTIME_S).max(1.0);
        Self {
            steps,
            rate: rate_hz,
            gap_tolerance_s,
            lambda: 0.5f64.powf(1.0 / samples_per_halftime),
            alpha: 1.0 / (rate_hz * JITTER_TAU_S).max(1.0),
            line: None,
            jitter: JITTER_PRIOR_S,
            prev_raw: None,
            last_out: None,
        }
    }

    /// The current estimate of the mean absolute delivery jitter (seconds).
    pub fn jitter_s(&self) -> f64 {
        self.jitter
    }

    /// The stream's sample period as fitted (seconds), once dejitter has seen data.
    pub fn fitted_period_s(&self) -> Option<f64> {
        self.line.as_ref().map(|l| l.w1)
    }

    /// Processes the next sample's timestamp `ts` (source clock) given the current
    /// clock offset `offset` (added with `clocksync`): returns the timestamp to use
    /// and the gap before this sample, if any.
    pub fn process(&mut self, ts: f64, offset: f64) -> (f64, Option<Jump>) {
        let raw = if self.steps.clocksync {
            ts + offset
        } else {
            ts
        };
        let period = 1.0 / self.rate;
        let base_limit = 2.0 * period + self.gap_tolerance_s;
        let mut jump = None;
        let mut t = raw;
        if self.steps.dejitter {
            let line = match &mut self.line {
                Some(l) => {
                    let e = raw - l.predict();
                    let limit = base_limit + JITTER_FACTOR * self.jitter;
                    if e.abs() > limit {
                        let skip = (e * self.rate).round();
                        jump = Some(Jump {
                            jump_s: e,
                            missing_frames: skip.clamp(0.0, MAX_MISSING_S * self.rate) as u64,
                        });
                        // The samples after the gap start a new line with the
                        // fitted slope; only the intercept is learnt again.
                        *l = Line::new(raw, self.rate, l.w1);
                    } else {
                        self.jitter += self.alpha * (e.abs() - self.jitter);
                    }
                    l
                }
                None => self.line.insert(Line::new(raw, self.rate, period)),
            };
            if line.x * period > REBASE_S {
                line.rebase();
            }
            t = line.update(raw, self.lambda);
        } else if let Some(prev) = self.prev_raw {
            let dt = raw - prev;
            if dt > base_limit || dt < -self.gap_tolerance_s {
                jump = Some(Jump {
                    jump_s: dt,
                    missing_frames: ((dt * self.rate).round() - 1.0)
                        .clamp(0.0, MAX_MISSING_S * self.rate)
                        as u64,
                });
            }
        }
        self.prev_raw = Some(raw);
        if self.steps.monotonize {
            if let (Some(last), None) = (self.last_out, jump) {
                t = t.max(last);
            }
            self.last_out = Some(t);
        }
        (t, jump)
    }
}

/// Errors finding the stream at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AcquisitionError {
    #[error("no LSL stream matching {predicate} appeared within {timeout_s} s (input.resolve_timeout_s); is the source running (e.g. `labramd replay FILE --name NAME`)? check input.name / input.type / input.source_id")]
    NotFound { predicate: String, timeout_s: f64 },
    #[error("cannot open the LSL stream {name}: {message}")]
    Open { name: String, message: String },
}

/// Start signal from the main thread after it checked the stream's metadata.
pub enum Go {
    /// Start pulling into these rings; unpark `consumer` when data arrives.
    Start {
        producers: RingProducers,
        consumer: Thread,
        next_window: NextWindow,
    },
    /// The start-up checks failed: stop.
    Abort,
}

/// The running acquisition thread.
pub struct Acquisition {
    pub handle: JoinHandle<()>,
    /// The stream's metadata, or why it could not be found (sent once).
    pub meta: mpsc::Receiver<Result<StreamMeta, AcquisitionError>>,
    /// Send [`Go`] once.
    pub go: mpsc::Sender<Go>,
}

/// Starts the acquisition thread. It resolves the stream and sends its metadata,
/// then waits for [`Go`].
pub fn spawn(
    cfg: InputConfig,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<Acquisition> {
    let (meta_tx, meta_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("labramd-acq".into())
        .spawn(move || {
            let (inlet, meta) = match connect(&cfg, cfg.resolve_timeout_s) {
                Ok(x) => x,
                Err(e) => {
                    let _ = meta_tx.send(Err(e));
                    return;
                }
            };
            if meta_tx.send(Ok(meta.clone())).is_err() {
                return;
            }
            let (producers, consumer, next_window) = match go_rx.recv() {
                Ok(Go::Start {
                    producers,
                    consumer,
                    next_window,
                }) => (producers, consumer, next_window),
                _ => return,
            };
            let mut acq = Puller {
                cfg,
                metrics,
                health,
                shutdown,
                meta,
                rings: producers,
                consumer,
                next_window,
                frames: 0,
                pending_overrun: false,
                overrun_dropped: 0,
                pending_marker: None,
                gaps_unreported: 0,
                last_gap_warning: None,
            };
            acq.run(inlet);
        })?;
    Ok(Acquisition {
        handle,
        meta: meta_rx,
        go: go_tx,
    })
}

/// Resolves the configured stream, opens an inlet and reads its metadata.
fn connect(
    cfg: &InputConfig,
    timeout_s: f64,
) -> Result<(lsl::StreamInlet, StreamMeta), AcquisitionError> {
    let predicate = cfg.predicate();
    let found = lsl::resolve_bypred(&predicate, 1, timeout_s).unwrap_or_default();
    let info = found
        .into_iter()
        .next()
        .ok_or_else(|| AcquisitionError::NotFound {
            predicate: predicate.clone(),
            timeout_s,
        })?;
    let name = info.stream_name();
    let open_err = |e: lsl::Error| AcquisitionError::Open {
        name: name.clone(),
        message: format!("{e:?}"),
    };
    // recover = false: a lost stream surfaces as an error here and is resolved again
    // by `Puller`, which counts and reports it.
    let inlet = lsl::StreamInlet::new(&info, 30, 0, false).map_err(open_err)?;
    inlet.open_stream(10.0).map_err(open_err)?;
    let mut full = inlet.info(5.0).map_err(open_err)?;
    let channel_count = full.channel_count().max(0) as usize;
    let mut labels = Vec::with_capacity(channel_count);
    let mut units = Vec::with_capacity(channel_count);
    let mut ch = full.desc().child("channels").child("channel");
    while !ch.empty() && labels.len() < channel_count {
        labels.push(ch.child_value_named("label"));
        units.push(ch.child_value_named("unit"));
        ch = ch.next_sibling_named("channel");
    }
    labels.resize(channel_count, String::new());
    units.resize(channel_count, String::new());
    let meta = StreamMeta {
        name: full.stream_name(),
        stream_type: full.stream_type(),
        source_id: full.source_id(),
        hostname: full.hostname(),
        channel_count,
        nominal_rate_hz: full.nominal_srate(),
        format: format!("{:?}", full.channel_format()).to_lowercase(),
        labels,
        units,
    };
    Ok((inlet, meta))
}

/// The pulling loop's state.
struct Puller {
    cfg: InputConfig,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: Arc<AtomicBool>,
    meta: StreamMeta,
    rings: RingProducers,
    consumer: Thread,
    next_window: NextWindow,
    /// Frames pushed into the rings since start.
    frames: u64,
    pending_overrun: bool,
    /// Frames dropped in the current overrun (travels with its marker).
    overrun_dropped: u64,
    /// A marker that found the marker ring full (retried before the next frame).
    pending_marker: Option<Marker>,
    /// Gaps found since the last gap warning (warnings are rate-limited).
    gaps_unreported: u64,
    /// `local_clock()` of the last gap warning.
    last_gap_warning: Option<f64>,
}

/// At most one gap warning per this many seconds (each gap is still a marker and
/// its windows are counted; the warning says how many gaps it stands for).
const GAP_WARNING_INTERVAL_S: f64 = 5.0;

enum PullEnd {
    Shutdown,
    Lost(String),
}

impl Puller {
    fn run(&mut self, inlet: lsl::StreamInlet) {
        self.metrics
            .input_nominal_rate
            .set(self.meta.nominal_rate_hz);
        let mut inlet = Some(inlet);
        while let Some(i) = inlet.take() {
            self.set_connected(true);
            match self.pull_loop(&i) {
                PullEnd::Shutdown => break,
                PullEnd::Lost(why) => {
                    drop(i);
                    self.set_connected(false);
                    self.metrics.stream_losses.inc();
                    tracing::warn!(
                        stream = %self.meta.name,
                        "input stream lost ({why}); windows in flight are still published; resolving it again"
                    );
                    inlet = self.reconnect();
                    if inlet.is_some() {
                        self.metrics.stream_recoveries.inc();
                        self.mark(MarkerKind::Reconnect, 0);
                        tracing::info!(stream = %self.meta.name, "input stream found again; resuming");
                    }
                }
            }
        }
        self.set_connected(false);
        self.mark(MarkerKind::End, 0);
        self.flush_marker();
        self.consumer.unpark();
    }

    fn set_connected(&self, on: bool) {
        self.metrics.stream_connected.set(i64::from(on));
        self.health.connected.store(on, Ordering::Relaxed);
    }

    /// Resolves the stream again until it is back (same layout) or shutdown.
    fn reconnect(&mut self) -> Option<lsl::StreamInlet> {
        while !self.shutdown.load(Ordering::Relaxed) {
            match connect(&self.cfg, 1.0) {
                Ok((inlet, meta)) if meta.same_layout(&self.meta) => return Some(inlet),
                Ok((_, meta)) => {
                    tracing::error!(
                        "a stream matching {} is back but with a different layout ({} channels at {} Hz, was {} at {} Hz); waiting for the original",
                        self.cfg.predicate(),
                        meta.channel_count,
                        meta.nominal_rate_hz,
                        self.meta.channel_count,
                        self.meta.nominal_rate_hz
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(_) => {}
            }
        }
        None
    }

    fn pull_loop(&mut self, inlet: &lsl::StreamInlet) -> PullEnd {
        let n_ch = self.meta.channel_count;
        let rate = self.meta.nominal_rate_hz;
        let blocking_pull = lsl::library_version() >= 114;
        let mut buf: Vec<f32> = vec![0.0; n_ch];
        let clocksync = self.cfg.timestamps.clocksync;
        let mut tc = if clocksync {
            inlet.time_correction(5.0).unwrap_or(0.0)
        } else {
            0.0
        };
        self.metrics.time_correction.set(tc);
        // A new connection is a new stream session: the filter starts afresh.
        let mut filter = TimestampFilter::new(self.cfg.timestamps, rate, self.cfg.gap_tolerance_s);
        let mut last_tc = lsl::local_clock();
        let mut last_data: Option<f64> = None;
        let connected_at = lsl::local_clock();
        let (mut rate_t0, mut rate_n) = (connected_at, 0u64);
        // Largest batch seen: a window's last sample may arrive with that many more.
        let mut largest_batch = 1u64;
        let near_frames = (NEAR_WINDOW_S * rate) as u64;
        loop {
            // At shutdown, what the inlet already holds is still taken (then nothing
            // more is waited for).
            let stopping = self.shutdown.load(Ordering::Relaxed);
            // liblsl 1.13: far from the next window's last sample, let liblsl wait
            // (1 ms steps); near it, poll (see the module documentation).
            let next = self.next_window.load(Ordering::Relaxed);
            let coarse = !blocking_pull
                && next != u64::MAX
                && next.saturating_sub(self.frames) > near_frames.max(2 * largest_batch);
            let timeout = if stopping {
                0.0
            } else if blocking_pull {
                0.05
            } else if coarse {
                0.002
            } else {
                0.0
            };
            let mut got = 0u64;
            loop {
                let ts = match inlet.pull_sample_buf(&mut buf, if got == 0 { timeout } else { 0.0 })
                {
                    Ok(ts) => ts,
                    Err(lsl::Error::StreamLost) => {
                        return PullEnd::Lost("the inlet reported it".into())
                    }
                    Err(e) => return PullEnd::Lost(format!("pull failed: {e:?}")),
                };
                if ts == 0.0 {
                    break;
                }
                let arrival = lsl::local_clock();
                got += 1;
                let (t, jump) = filter.process(ts, tc);
                if let Some(j) = jump {
                    self.gap(j, &filter, arrival);
                }
                self.push_frame(&buf, FrameStamp { t, arrival });
                if got >= 4096 {
                    break;
                }
            }
            if stopping && got == 0 {
                return PullEnd::Shutdown;
            }
            let now = lsl::local_clock();
            if got > 0 {
                largest_batch = largest_batch.max(got);
                self.metrics.samples_received.inc_by(got);
                self.consumer.unpark();
                last_data = Some(now);
                rate_n += got;
            } else {
                let idle_since = last_data.unwrap_or(connected_at);
                if last_data.is_some() && now - idle_since > self.cfg.stall_timeout_s {
                    return PullEnd::Lost(format!(
                        "no data for {:.1} s (input.stall_timeout_s)",
                        now - idle_since
                    ));
                }
                if !blocking_pull && !coarse {
                    std::thread::sleep(POLL_INTERVAL);
                }
            }
            if now - rate_t0 >= 2.0 {
                self.metrics.input_rate.set(rate_n as f64 / (now - rate_t0));
                rate_t0 = now;
                rate_n = 0;
            }
            if clocksync && now - last_tc >= 5.0 {
                if let Ok(v) = inlet.time_correction(0.1) {
                    tc = v;
                    self.metrics.time_correction.set(tc);
                }
                last_tc = now;
            }
        }
    }

    /// A gap before the next frame: a marker (with the missing samples) and a
    /// warning, at most one per [`GAP_WARNING_INTERVAL_S`].
    fn gap(&mut self, j: Jump, filter: &TimestampFilter, now: f64) {
        self.mark(MarkerKind::Gap, j.missing_frames);
        self.gaps_unreported += 1;
        if self
            .last_gap_warning
            .is_some_and(|t| now - t < GAP_WARNING_INTERVAL_S)
        {
            return;
        }
        let against = if self.cfg.timestamps.dejitter {
            format!(
                "from the stream's sample clock (measured jitter {:.1} ms)",
                filter.jitter_s() * 1e3
            )
        } else {
            "between consecutive samples (input.timestamps has no dejitter)".to_string()
        };
        tracing::warn!(
            gaps = self.gaps_unreported,
            missing_samples = j.missing_frames,
            "gap in the input timestamps: {:.1} ms {against}; windows spanning it are dropped (labramd_windows_dropped_total{{reason=\"gap\"}}){}",
            j.jump_s * 1e3,
            if self.gaps_unreported > 1 {
                format!("; {} gaps since the last such warning", self.gaps_unreported)
            } else {
                String::new()
            }
        );
        self.gaps_unreported = 0;
        self.last_gap_warning = Some(now);
    }

    /// Queues a marker before the next frame.
    fn mark(&mut self, kind: MarkerKind, missing: u64) {
        self.flush_marker();
        let m = Marker {
            at_frame: self.frames,
            kind,
            missing,
        };
        if let Err(m) = self.rings.markers.try_push(m) {
            self.pending_marker = Some(m);
        }
    }

    fn flush_marker(&mut self) {
        if let Some(m) = self.pending_marker.take() {
            if let Err(m) = self.rings.markers.try_push(m) {
                self.pending_marker = Some(m);
            }
        }
    }

    fn push_frame(&mut self, sample: &[f32], stamp: FrameStamp) {
        self.flush_marker();
        let n_ch = sample.len();
        if self.pending_marker.is_some()
            || self.rings.data.vacant_len() < n_ch
            || self.rings.stamps.is_full()
        {
            if !self.pending_overrun {
                tracing::warn!("acquisition ring full: the DSP thread is not keeping up; dropping samples (counted in labramd_ring_overruns_total)");
            }
            self.metrics.ring_overruns.inc();
            self.pending_overrun = true;
            self.overrun_dropped += 1;
            return;
        }
        if self.pending_overrun {
            self.pending_overrun = false;
            self.mark(MarkerKind::Overrun, self.overrun_dropped);
            self.overrun_dropped = 0;
            if self.pending_marker.is_some() {
                self.metrics.ring_overruns.inc();
                self.pending_overrun = true;
                self.overrun_dropped = 1;
                return;
            }
        }
        self.rings.data.push_slice(sample);
        let _ = self.rings.stamps.try_push(stamp);
        self.frames += 1;
    }
}

/// Pops up to `max_frames` frames (and their stamps) from the rings into `data` /
/// `stamps`, stopping before the next marker's frame. Returns the frames popped.
pub fn pop_frames(
    rings: &mut RingConsumers,
    n_channels: usize,
    consumed: u64,
    max_frames: usize,
    data: &mut Vec<f32>,
    stamps: &mut Vec<FrameStamp>,
) -> usize {
    let mut n = rings
        .stamps
        .occupied_len()
        .min(rings.data.occupied_len() / n_channels);
    n = n.min(max_frames);
    if let Some(m) = rings.markers.first() {
        n = n.min(m.at_frame.saturating_sub(consumed) as usize);
    }
    data.resize(n * n_channels, 0.0);
    stamps.resize(n, FrameStamp::default());
    let got_d = rings.data.pop_slice(data);
    let got_s = rings.stamps.pop_slice(stamps);
    debug_assert_eq!(got_d, n * n_channels);
    debug_assert_eq!(got_s, n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic uniform generator (no test dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn uniform(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Issue 14's producer: `rate` Hz, `chunk`-sample chunks, chunk k ready at
    /// t0 + (k+1)·chunk/rate (plus `pause_s` from chunk `pause_at` on), pushed after
    /// a further uniform 0..`jitter_s` delay (never before the previous push) and
    /// stamped at push time; liblsl back-dates the chunk's other samples by one
    /// period each. Returns (true sampling time, timestamp) per sample.
    fn push_stamped(
        rate: f64,
        chunk: usize,
        seconds: f64,
        jitter_s: f64,
        pause: Option<(usize, f64)>,
        seed: u64,
    ) -> Vec<(f64, f64)> {
        let mut rng = Lcg(seed);
        let (t0, mut last_push) = (1000.0, 0.0f64);
        let chunks = (seconds * rate) as usize / chunk;
        let mut out = Vec::new();
        for k in 0..chunks {
            let shift = match pause {
                Some((at, s)) if k >= at => s,
                _ => 0.0,
            };
            let ready = t0 + shift + ((k + 1) * chunk) as f64 / rate;
            let push = (ready + jitter_s * rng.uniform()).max(last_push);
            last_push = push;
            for i in 0..chunk {
                let back = (chunk - 1 - i) as f64 / rate;
                out.push((ready - back - 1.0 / rate, push - back));
            }
        }
        out
    }

    fn filter_all(
        f: &mut TimestampFilter,
        stamps: &[(f64, f64)],
    ) -> (Vec<f64>, Vec<(usize, Jump)>) {
        let mut out = Vec::new();
        let mut jumps = Vec::new();
        for (i, &(_, ts)) in stamps.iter().enumerate() {
            let (t, j) = f.process(ts, 0.0);
            out.push(t);
            if let Some(j) = j {
                jumps.push((i, j));
            }
        }
        (out, jumps)
    }

    #[test]
    fn jittered_push_stamps_are_smoothed_not_gaps() {
        let rate = 500.0;
        let stamps = push_stamped(rate, 10, 120.0, 0.040, None, 7);
        // Raw consecutive differences, the old check: gaps all the time.
        let mut raw = TimestampFilter::new(
            TimestampProcessing {
                dejitter: false,
                ..TimestampProcessing::ALL
            },
            rate,
            0.01,
        );
        let (_, raw_jumps) = filter_all(&mut raw, &stamps);
        assert!(raw_jumps.len() > 1000, "{} raw gaps", raw_jumps.len());
        // Dejittered: none, and the timestamps step by one period, in order.
        let mut f = TimestampFilter::new(TimestampProcessing::ALL, rate, 0.01);
        let (t, jumps) = filter_all(&mut f, &stamps);
        assert!(jumps.is_empty(), "{jumps:?}");
        assert!(t.windows(2).all(|w| w[1] >= w[0]), "monotonic");
        let settled = &t[5000..];
        let worst = settled
            .windows(2)
            .map(|w| (w[1] - w[0] - 1.0 / rate).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-4, "step deviates by {worst} s from 2 ms");
        // Against the true sampling times: a constant offset (the mean push delay,
        // which no timestamp filter can know) with little scatter left.
        let off: Vec<f64> = stamps[5000..]
            .iter()
            .zip(settled)
            .map(|(&(truth, _), &t)| t - truth)
            .collect();
        let (lo, hi) = off
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        assert!(hi - lo < 0.005, "offset spread {lo}..{hi}");
        assert!(lo > 0.0 && hi < 0.045, "offset {lo}..{hi}");
        assert!(
            f.jitter_s() > 0.005 && f.jitter_s() < 0.02,
            "jitter {}",
            f.jitter_s()
        );
        assert!((f.fitted_period_s().unwrap() * rate - 1.0).abs() < 1e-5);
    }

    #[test]
    fn a_real_outage_in_a_jittered_stream_is_one_gap() {
        let rate = 500.0;
        // 60 s, then the producer stops for 2 s, then 30 s more.
        let stamps = push_stamped(rate, 10, 92.0, 0.040, Some((3000, 2.0)), 11);
        let mut f = TimestampFilter::new(TimestampProcessing::ALL, rate, 0.01);
        let (t, jumps) = filter_all(&mut f, &stamps);
        assert_eq!(jumps.len(), 1, "{jumps:?}");
        let (at, j) = jumps[0];
        assert_eq!(at, 30_000, "the first sample after the pause");
        assert!((j.jump_s - 2.0).abs() < 0.045, "{j:?}");
        assert!(j.missing_frames.abs_diff(1000) <= 22, "{j:?}");
        // The smoothed timestamps show the outage too (and stay in order).
        assert!((t[at] - t[at - 1] - 2.0).abs() < 0.045);
        assert!(t.windows(2).all(|w| w[1] >= w[0]));
    }

    #[test]
    fn exact_timestamps_pass_through_and_small_gaps_are_found() {
        let rate = 256.0;
        let mut f = TimestampFilter::new(TimestampProcessing::ALL, rate, 0.01);
        let ts = |i: u64| 50.0 + i as f64 / rate;
        let n = (60.0 * rate) as u64;
        for i in 0..n {
            let (t, j) = f.process(ts(i), 0.25);
            assert!(j.is_none());
            assert!((t - (ts(i) + 0.25)).abs() < 1e-6, "{t} vs {}", ts(i) + 0.25);
        }
        // With no jitter measured, 10 missing samples (39 ms) are a gap.
        let (_, j) = f.process(ts(n + 10), 0.25);
        assert_eq!(j.map(|j| j.missing_frames), Some(10));
        let (t, j) = f.process(ts(n + 11), 0.25);
        assert!(j.is_none());
        assert!((t - (ts(n + 11) + 0.25)).abs() < 1e-6);
        // Backwards by 5 s: a gap with nothing missing, and monotonize lets it through.
        let (t, j) = f.process(ts(n + 12) - 5.0, 0.25);
        assert_eq!(j.map(|j| j.missing_frames), Some(0));
        assert!(j.is_some_and(|j| (j.jump_s + 5.0).abs() < 1e-3));
        assert!((t - (ts(n + 12) - 4.75)).abs() < 1e-6);
    }

    #[test]
    fn clock_drift_is_followed_not_taken_for_gaps() {
        // An amplifier 200 ppm fast for 20 minutes (the line rebases twice).
        let (rate, true_rate) = (500.0, 500.1);
        let mut f = TimestampFilter::new(TimestampProcessing::ALL, rate, 0.01);
        let mut rng = Lcg(3);
        let n = (1200.0 * true_rate) as usize;
        let mut worst = 0.0f64;
        for i in 0..n {
            let truth = i as f64 / true_rate;
            let (t, j) = f.process(truth + 0.002 * rng.uniform(), 0.0);
            assert!(j.is_none(), "sample {i}: {j:?}");
            if i > n / 2 {
                worst = worst.max((t - truth - 0.001).abs());
            }
        }
        assert!(worst < 5e-4, "{worst}");
        assert!((f.fitted_period_s().unwrap() * true_rate - 1.0).abs() < 1e-6);
    }

    #[test]
    fn absurd_jumps_are_capped() {
        let mut f = TimestampFilter::new(TimestampProcessing::ALL, 1000.0, 0.01);
        f.process(1.0, 0.0);
        let (_, j) = f.process(1e12, 0.0);
        assert_eq!(j.map(|j| j.missing_frames), Some(86_400_000));
    }

    #[test]
    fn steps_can_be_turned_off() {
        let mut f = TimestampFilter::new(TimestampProcessing::NONE, 100.0, 0.01);
        assert_eq!(f.process(10.0, 3.0), (10.0, None), "no clocksync");
        assert_eq!(
            f.process(9.995, 3.0),
            (9.995, None),
            "not monotonized, within tolerance"
        );
        let (t, j) = f.process(10.5, 3.0);
        assert_eq!(t, 10.5);
        assert_eq!(j.map(|j| j.missing_frames), Some(50));
        let mut m = TimestampFilter::new(
            TimestampProcessing {
                monotonize: true,
                ..TimestampProcessing::NONE
            },
            100.0,
            0.01,
        );
        m.process(10.0, 0.0);
        assert_eq!(
            m.process(9.995, 0.0),
            (10.0, None),
            "held at the previous one"
        );
    }

    #[test]
    fn pop_stops_at_markers() {
        let (mut p, mut c) = rings(2, 100);
        for i in 0..10 {
            p.data.push_slice(&[i as f32, -(i as f32)]);
            let _ = p.stamps.try_push(FrameStamp {
                t: i as f64,
                arrival: 0.0,
            });
        }
        let _ = p.markers.try_push(Marker {
            at_frame: 4,
            kind: MarkerKind::Gap,
            missing: 0,
        });
        let (mut d, mut s) = (Vec::new(), Vec::new());
        assert_eq!(pop_frames(&mut c, 2, 0, 100, &mut d, &mut s), 4);
        assert_eq!(d, vec![0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 3.0, -3.0]);
        assert_eq!(pop_frames(&mut c, 2, 4, 100, &mut d, &mut s), 0);
        assert_eq!(c.markers.try_pop().map(|m| m.kind), Some(MarkerKind::Gap));
        assert_eq!(pop_frames(&mut c, 2, 4, 3, &mut d, &mut s), 3);
        assert_eq!(s[0].t, 4.0);
    }
}
