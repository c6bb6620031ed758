//! `labramd replay`: streams a recording as an LSL outlet in real time, the way an
//! amplifier would (after MNE-LSL's `Player`): the demo's source, and a test tool
//! where no amplifier is attached.
//!
//! The file is read record by record with [`crate::recording`] (EDF, EDF+, BDF,
//! BDF+), so a long file is never loaded whole. Only the signals at the recording's
//! main rate (the rate most voltage signals share) are streamed, in file order,
//! with their labels as written, unit and type in `desc/channels/channel`; the others
//! are listed once in the log as skipped. Values are physical values converted to
//! µV for voltage signals (unit `microvolts`), unchanged for the rest.
//!
//! Timing: sample `i` is stamped `t0 + i / rate / speed` (the LSL local clock) and its
//! chunk is pushed when that time comes, so timestamps match the wall clock at any
//! speed. EDF+D gaps (record onsets that jump) become timestamp gaps. With `--loop`
//! the file starts again and timestamps keep increasing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lsl::ExPushable;

use crate::electrodes::{classify_label, LabelKind};
use crate::recording::{EdfReader, RecordingError, Unit};

/// Arguments of `labramd replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// EDF, EDF+ or BDF file.
    pub file: PathBuf,
    /// Playback speed (2 = twice real time). Timestamps follow the wall clock, so at
    /// speeds below 0.5 raise the daemon's input.gap_tolerance_s.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Start again at the end of the file (timestamps keep increasing).
    #[arg(long = "loop")]
    pub looping: bool,
    /// LSL stream name (default: the file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// LSL stream type.
    #[arg(long = "type", default_value = "EEG")]
    pub stream_type: String,
    /// LSL source_id (default: `labramd-replay:<name>`), which lets consumers
    /// recover the stream after a restart.
    #[arg(long)]
    pub source_id: Option<String>,
    /// Push the samples in chunks of this many milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub chunk_ms: f64,
    /// Before the first sample, wait up to this many seconds for a consumer (an
    /// inlet, LabRecorder) so that it receives the file from its start; 0: don't wait.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub wait_consumers: f64,
}

/// Errors of `replay`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("{path}: no signal to stream (no data signal with a sample rate)")]
    NoSignals { path: PathBuf },
    #[error("--{flag} is {value}: {fix}")]
    BadArgument {
        flag: &'static str,
        value: String,
        fix: &'static str,
    },
    #[error("cannot create the LSL outlet `{name}`: {message}")]
    Outlet { name: String, message: String },
}

/// What will be streamed from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayPlan {
    /// Signal indices in the file, in file order.
    pub signals: Vec<usize>,
    pub labels: Vec<String>,
    /// `desc/channels/channel/unit` per channel.
    pub units: Vec<String>,
    /// `desc/channels/channel/type` per channel.
    pub types: Vec<String>,
    pub rate_hz: f64,
    /// Signals left out (label and rate), for the log.
    pub skipped: Vec<(String, f64)>,
    pub duration_s: f64,
}

/// The LSL channel type of a label (`EEG`, `ECG`, `EOG`, `EMG`, `STIM`, `MISC`).
fn channel_type(label: &str, voltage: bool) -> String {
    match classify_label(label) {
        LabelKind::Electrode(_) | LabelKind::Reference => "EEG".into(),
        _ => {
            let upper = label.trim().to_ascii_uppercase();
            for t in ["ECG", "EKG", "EOG", "EMG", "RESP"] {
                if upper.starts_with(t) {
                    return if t == "EKG" { "ECG".into() } else { t.into() };
                }
            }
            if upper.starts_with("STATUS") || upper.starts_with("TRIG") || upper.starts_with("STI")
            {
                "STIM".into()
            } else if voltage {
                "EEG".into()
            } else {
                "MISC".into()
            }
        }
    }
}

/// Picks the signals at the main rate of `reader`'s file.
pub fn plan<R>(reader: &EdfReader<R>) -> Result<ReplayPlan, ReplayError>
where
    R: std::io::Read + std::io::Seek,
{
    let h = reader.header();
    let data = h.data_signals();
    let rate = |i: usize| h.sample_rate_hz(i).filter(|r| *r > 0.0);
    // The main rate: the one most voltage signals share (any data signal if none).
    let mut counts: Vec<(f64, usize)> = Vec::new();
    let voltage: Vec<usize> = data
        .iter()
        .copied()
        .filter(|&i| h.signals[i].is_voltage())
        .collect();
    let pool = if voltage.is_empty() { &data } else { &voltage };
    for &i in pool {
        if let Some(r) = rate(i) {
            match counts.iter_mut().find(|(c, _)| *c == r) {
                Some((_, n)) => *n += 1,
                None => counts.push((r, 1)),
            }
        }
    }
    let (main, _) = counts
        .iter()
        .copied()
        .max_by_key(|(_, n)| *n)
        .ok_or_else(|| ReplayError::NoSignals {
            path: h.path.clone(),
        })?;
    let mut p = ReplayPlan {
        signals: Vec::new(),
        labels: Vec::new(),
        units: Vec::new(),
        types: Vec::new(),
        rate_hz: main,
        skipped: Vec::new(),
        duration_s: h.duration_s(),
    };
    for &i in &data {
        let s = &h.signals[i];
        let label = s.label.trim().to_string();
        match rate(i) {
            Some(r) if r == main => {
                let voltage = s.is_voltage();
                p.units.push(match s.unit {
                    Unit::Voltage { .. } => "microvolts".into(),
                    Unit::Other => s.physical_dimension.trim().to_string(),
                });
                p.types.push(channel_type(&label, voltage));
                p.labels.push(label);
                p.signals.push(i);
            }
            r => p.skipped.push((label, r.unwrap_or(0.0))),
        }
    }
    Ok(p)
}

fn outlet_for(
    args: &ReplayArgs,
    name: &str,
    plan: &ReplayPlan,
    file: &Path,
    chunk: usize,
) -> Result<lsl::StreamOutlet, ReplayError> {
    let err = |e: lsl::Error| ReplayError::Outlet {
        name: name.to_string(),
        message: format!("{e:?}"),
    };
    let source_id = args
        .source_id
        .clone()
        .unwrap_or_else(|| format!("labramd-replay:{name}"));
    let mut info = lsl::StreamInfo::new(
        name,
        &args.stream_type,
        plan.labels.len() as u32,
        plan.rate_hz,
        lsl::ChannelFormat::Float32,
        &source_id,
    )
    .map_err(err)?;
    {
        let mut desc = info.desc();
        let mut chans = desc.append_child("channels");
        for ((label, unit), ty) in plan.labels.iter().zip(&plan.units).zip(&plan.types) {
            let mut ch = chans.append_child("channel");
            ch.append_child_value("label", label);
            ch.append_child_value("unit", unit);
            ch.append_child_value("type", ty);
        }
        let mut acq = desc.append_child("acquisition");
        acq.append_child_value("manufacturer", "labramd replay");
        acq.append_child_value(
            "file",
            &file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        acq.append_child_value("speed", &args.speed.to_string());
    }
    lsl::StreamOutlet::new(&info, chunk as i32, 360).map_err(err)
}

/// Sets the returned flag on SIGINT or SIGTERM. The handlers are installed
/// explicitly because a process started in the background by a shell script
/// inherits an ignored SIGINT, and `scripts/demo.sh` stops the replay with one.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build();
    match rt {
        Ok(rt) => {
            let spawned = std::thread::Builder::new()
                .name("labramd-replay-signals".into())
                .spawn(move || {
                    rt.block_on(async {
                        let term = tokio::signal::unix::signal(
                            tokio::signal::unix::SignalKind::terminate(),
                        );
                        match term {
                            Ok(mut term) => {
                                tokio::select! {
                                    _ = tokio::signal::ctrl_c() => {}
                                    _ = term.recv() => {}
                                }
                            }
                            Err(_) => {
                                let _ = tokio::signal::ctrl_c().await;
                            }
                        }
                    });
                    flag.store(true, Ordering::Relaxed);
                });
            if let Err(e) = spawned {
                tracing::warn!(
                    "cannot watch for SIGINT/SIGTERM ({e}); stop the replay with SIGKILL"
                );
            }
        }
        Err(e) => {
            tracing::warn!("cannot watch for SIGINT/SIGTERM ({e}); stop the replay with SIGKILL")
        }
    }
    stop
}

/// Runs `labramd replay` (until the end of the file, forever with `--loop`, or
/// until SIGINT/SIGTERM, which close the stream cleanly).
pub fn run(args: &ReplayArgs) -> Result<(), ReplayError> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(ReplayError::BadArgument {
            flag: "speed",
            value: args.speed.to_string(),
            fix: "give a positive factor, e.g. 1 (real time) or 4",
        });
    }
    if !(args.chunk_ms.is_finite() && args.chunk_ms > 0.0) {
        return Err(ReplayError::BadArgument {
            flag: "chunk-ms",
            value: args.chunk_ms.to_string(),
            fix: "give the chunk length in milliseconds, e.g. 10",
        });
    }
    let mut reader = EdfReader::open(&args.file)?;
    let plan = plan(&reader)?;
    let stop = stop_on_signal();
    let name = args.name.clone().unwrap_or_else(|| {
        args.file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "labramd-replay".into())
    });
    let rate = plan.rate_hz;
    let chunk = ((args.chunk_ms * 1e-3 * rate).round() as usize).max(1);
    let outlet = outlet_for(args, &name, &plan, &args.file, chunk)?;
    if !plan.skipped.is_empty() {
        let list: Vec<String> = plan
            .skipped
            .iter()
            .map(|(l, r)| format!("{l} ({r} Hz)"))
            .collect();
        tracing::info!(
            "skipped signals not at the main rate {rate} Hz: {}",
            list.join(", ")
        );
    }
    tracing::info!(
        "streaming {} as LSL stream `{name}`: {} channels at {rate} Hz, {:.1} s{}, speed {}",
        args.file.display(),
        plan.labels.len(),
        plan.duration_s,
        if args.looping { ", looped" } else { "" },
        args.speed
    );
    if args.wait_consumers > 0.0 {
        let found = outlet.wait_for_consumers(args.wait_consumers);
        tracing::info!("consumer connected: {found}");
        // Let the inlet finish subscribing before the first sample.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let n = plan.labels.len();
    let mut frames: Vec<f32> = Vec::new();
    let mut sample = vec![0.0f32; n];
    let t0 = lsl::local_clock() + 0.05;
    // Seconds of recording before the current pass (grows with --loop).
    let mut pass_offset = 0.0;
    let mut pass_end = 0.0f64;
    'stream: loop {
        frames.clear();
        let Some(block) = reader.read_frames(&plan.signals, &mut frames)? else {
            if !args.looping {
                break;
            }
            reader.seek_record(0)?;
            pass_offset += pass_end.max(plan.duration_s);
            continue;
        };
        let onset = pass_offset + block.onset_s;
        pass_end = pass_end.max(block.onset_s + block.frames as f64 / rate);
        for c0 in (0..block.frames).step_by(chunk) {
            if stop.load(Ordering::Relaxed) {
                tracing::info!("signal received: closing the stream");
                break 'stream;
            }
            let c1 = (c0 + chunk).min(block.frames);
            let stamp = |i: usize| t0 + (onset + i as f64 / rate) / args.speed;
            let due = stamp(c1 - 1);
            let wait = due - lsl::local_clock();
            if wait > 0.0 {
                std::thread::sleep(std::time::Duration::from_secs_f64(wait));
            }
            for i in c0..c1 {
                sample.copy_from_slice(&frames[i * n..(i + 1) * n]);
                outlet
                    .push_sample_ex(&sample, stamp(i), i + 1 == c1)
                    .map_err(|e| ReplayError::Outlet {
                        name: name.clone(),
                        message: format!("{e:?}"),
                    })?;
            }
        }
    }
    if !stop.load(Ordering::Relaxed) {
        tracing::info!("end of {}; closing the stream", args.file.display());
        // Let consumers receive the tail before the outlet goes.
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_types() {
        assert_eq!(channel_type("EEG Fp1", true), "EEG");
        assert_eq!(channel_type("ECG ECG", true), "ECG");
        assert_eq!(channel_type("Status", false), "STIM");
        assert_eq!(channel_type("EEG A2-A1", true), "EEG");
        assert_eq!(channel_type("Temp", false), "MISC");
    }

    #[test]
    fn eegmat_plan_keeps_all_500_hz_signals() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/eegmat/Subject00_1.edf");
        let reader = EdfReader::open(&path).unwrap();
        let p = plan(&reader).unwrap();
        assert_eq!(p.rate_hz, 500.0);
        assert_eq!(p.labels.len(), 21);
        assert_eq!(p.labels[0], "EEG Fp1");
        assert_eq!(p.types[20], "ECG");
        assert!(p.units.iter().all(|u| u == "microvolts"));
        assert!(p.skipped.is_empty());
    }
}
