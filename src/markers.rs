//! The calibration marker inlet: an LSL string stream (one channel) whose
//! samples name the class of the block that follows (`adaptation.markers`).
//!
//! It runs on its own thread because LSL inlets block and the inference thread
//! must never wait on the network for more than a bounded moment. Every marker
//! is stamped on this host's clock (its timestamp plus the source's
//! `time_correction`, as the EEG's `clocksync` does), so a marker and the EEG
//! samples it labels compare directly.
//!
//! Ordering: a marker must reach the session before the first window whose
//! samples come after it, or that window would be learned as the previous
//! block's. Markers and EEG come over separate connections, so the thread
//! publishes a *watermark*: the local time at which its last empty pull began.
//! Every marker pushed before then has been received (liblsl delivers in
//! order per stream), so the inference thread, while calibrating, waits (a
//! bounded few tens of ms) for the watermark to pass a window's arrival before
//! it hands the window to the session.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use lsl::Pullable;

use crate::config::MarkerInputConfig;

/// One marker: local LSL time and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub t: f64,
    pub text: String,
}

/// Errors finding or opening the marker stream; each names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("adaptation.markers: no LSL stream matching {predicate} appeared within {timeout_s} s; start the marker source first, or check adaptation.markers.name / type / source_id")]
    NotFound { predicate: String, timeout_s: f64 },
    #[error("adaptation.markers: stream `{name}` carries {channels} channel(s) of {format}; calibration markers are one string channel naming a class")]
    NotMarkers {
        name: String,
        channels: i32,
        format: String,
    },
    #[error("adaptation.markers: cannot open stream `{name}`: {message}")]
    Open { name: String, message: String },
    #[error("cannot start the marker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What the inference thread holds of the marker thread.
pub struct MarkerFeed {
    pub rx: Receiver<Marker>,
    watermark: Arc<AtomicU64>,
    pub handle: std::thread::JoinHandle<()>,
}

impl MarkerFeed {
    /// Local time up to which every marker pushed has been received.
    pub fn watermark(&self) -> f64 {
        f64::from_bits(self.watermark.load(Ordering::Acquire))
    }

    /// Waits (at most `max_wait_s`) until the watermark passes `t`: markers
    /// pushed before the sample that arrived at `t` are then in `rx`.
    pub fn wait_past(&self, t: f64, max_wait_s: f64) {
        let deadline = lsl::local_clock() + max_wait_s;
        while self.watermark() < t && lsl::local_clock() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// Resolves the marker stream (up to `resolve_timeout_s`; the caller waits:
/// a missing stream is a start-up error) and starts pulling it. LSL inlets are
/// not `Send`, so the thread resolves and opens the inlet itself.
pub fn spawn(
    cfg: &MarkerInputConfig,
    shutdown: Arc<AtomicBool>,
) -> Result<MarkerFeed, MarkerError> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let watermark = Arc::new(AtomicU64::new(f64::NEG_INFINITY.to_bits()));
    let wm = watermark.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let cfg = cfg.clone();
    let handle = std::thread::Builder::new()
        .name("labramd-markers".into())
        .spawn(move || match open(&cfg) {
            Ok((inlet, name)) => {
                let _ = ready_tx.send(Ok(()));
                pull_loop(inlet, tx, wm, shutdown, name)
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })
        .map_err(MarkerError::Thread)?;
    ready_rx
        .recv()
        .unwrap_or(Err(MarkerError::Thread(std::io::Error::other(
            "the marker thread stopped",
        ))))?;
    Ok(MarkerFeed {
        rx,
        watermark,
        handle,
    })
}

fn open(cfg: &MarkerInputConfig) -> Result<(lsl::StreamInlet, String), MarkerError> {
    let predicate = cfg.predicate();
    let info = lsl::resolve_bypred(&predicate, 1, cfg.resolve_timeout_s)
        .unwrap_or_default()
        .into_iter()
        .next()
        .ok_or_else(|| MarkerError::NotFound {
            predicate: predicate.clone(),
            timeout_s: cfg.resolve_timeout_s,
        })?;
    let name = info.stream_name();
    let format = format!("{:?}", info.channel_format()).to_lowercase();
    if info.channel_count() != 1 || format != "string" {
        return Err(MarkerError::NotMarkers {
            name,
            channels: info.channel_count(),
            format,
        });
    }
    let open = |e: lsl::Error| MarkerError::Open {
        name: name.clone(),
        message: format!("{e:?}"),
    };
    // recover = true: liblsl reconnects a lost marker source by itself; the
    // calibration only waits for the markers, it does not count them as losses.
    let inlet = lsl::StreamInlet::new(&info, 360, 0, true).map_err(open)?;
    inlet.open_stream(10.0).map_err(open)?;
    tracing::info!(stream = %name, "calibration marker stream opened");
    Ok((inlet, name))
}

fn pull_loop(
    inlet: lsl::StreamInlet,
    tx: Sender<Marker>,
    watermark: Arc<AtomicU64>,
    shutdown: Arc<AtomicBool>,
    name: String,
) {
    let mut tc = inlet.time_correction(5.0).unwrap_or(0.0);
    let mut last_tc = lsl::local_clock();
    while !shutdown.load(Ordering::Relaxed) {
        let started = lsl::local_clock();
        let pulled: Result<(Vec<String>, f64), lsl::Error> = inlet.pull_sample(0.02);
        match pulled {
            Ok((v, ts)) if ts != 0.0 => {
                let text = v.into_iter().next().unwrap_or_default();
                tracing::debug!(marker = %text, t = ts + tc, "calibration marker");
                if tx.send(Marker { t: ts + tc, text }).is_err() {
                    return;
                }
            }
            Ok(_) => watermark.store(started.to_bits(), Ordering::Release),
            Err(e) => {
                tracing::warn!("marker stream `{name}`: pull failed ({e:?}); retrying");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        }
        let now = lsl::local_clock();
        if now - last_tc >= 5.0 {
            if let Ok(v) = inlet.time_correction(0.1) {
                tc = v;
            }
            last_tc = now;
        }
    }
}
