//! Acquisition: the LSL inlet, on its own thread, feeding lock-free SPSC rings.
//!
//! The thread resolves the configured stream, reads its metadata (labels, units,
//! rate) for the start-up checks, then pulls every sample into three `ringbuf`
//! rings shared with the DSP thread: the samples (interleaved f32), one
//! [`FrameStamp`] per frame (LSL time corrected to the local clock, and arrival
//! time), and [`Marker`]s for discontinuities. It never waits on the DSP thread:
//! when the ring is full the sample is dropped, counted
//! (`labramd_ring_overruns_total`) and an overrun marker tells the DSP stage that
//! the signal is not continuous there.
//!
//! Faults: a jump between consecutive timestamps larger than two sample periods
//! plus `input.gap_tolerance_s` (or backwards) is a gap marker. A lost stream (the
//! inlet reports it, or no data for `input.stall_timeout_s`) is counted, reported in
//! the log, `/healthz` and `labramd_stream_connected`, and resolved again until it is
//! back with the same channels and rate; the reconnect is a marker too.
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

use crate::config::InputConfig;
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
                prev_ts: None,
                pending_overrun: false,
                pending_marker: None,
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
    prev_ts: Option<f64>,
    pending_overrun: bool,
    /// A marker that found the marker ring full (retried before the next frame).
    pending_marker: Option<Marker>,
}

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
                        self.mark(MarkerKind::Reconnect);
                        self.prev_ts = None;
                        tracing::info!(stream = %self.meta.name, "input stream found again; resuming");
                    }
                }
            }
        }
        self.set_connected(false);
        self.mark(MarkerKind::End);
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
        let mut tc = inlet.time_correction(5.0).unwrap_or(0.0);
        self.metrics.time_correction.set(tc);
        let mut last_tc = lsl::local_clock();
        let mut last_data: Option<f64> = None;
        let connected_at = lsl::local_clock();
        let (mut rate_t0, mut rate_n) = (connected_at, 0u64);
        let max_step = 2.0 / rate + self.cfg.gap_tolerance_s;
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
                let t = ts + tc;
                if let Some(prev) = self.prev_ts {
                    let dt = t - prev;
                    if dt > max_step || dt < -self.cfg.gap_tolerance_s {
                        tracing::warn!(
                            "gap in the input timestamps: {:.1} ms between consecutive samples (expected {:.1} ms); the window restarts",
                            dt * 1e3,
                            1e3 / rate
                        );
                        self.mark(MarkerKind::Gap);
                    }
                }
                self.prev_ts = Some(t);
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
            if now - last_tc >= 5.0 {
                if let Ok(v) = inlet.time_correction(0.1) {
                    tc = v;
                    self.metrics.time_correction.set(tc);
                }
                last_tc = now;
            }
        }
    }

    /// Queues a marker before the next frame.
    fn mark(&mut self, kind: MarkerKind) {
        self.flush_marker();
        let m = Marker {
            at_frame: self.frames,
            kind,
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
            return;
        }
        if self.pending_overrun {
            self.pending_overrun = false;
            self.mark(MarkerKind::Overrun);
            if self.pending_marker.is_some() {
                self.metrics.ring_overruns.inc();
                self.pending_overrun = true;
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
