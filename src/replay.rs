//! `labramd replay`: streams recordings as an LSL outlet in real time, the way an
//! amplifier would (after MNE-LSL's `Player`): the demo's source, and a test tool
//! where no amplifier is attached.
//!
//! Each file is read record by record with [`crate::recording`] (EDF, EDF+, BDF,
//! BDF+), so a long file is never loaded whole. Only the signals at the recording's
//! main rate (the rate most voltage signals share) are streamed, in file order,
//! with their labels as written, unit and type in `desc/channels/channel`; the others
//! are listed once in the log as skipped. Values are physical values converted to
//! µV for voltage signals (unit `microvolts`), unchanged for the rest.
//!
//! Several files play back to back as one stream: they must have the same channels
//! (labels, order, units) and rate, else the replay refuses to start and names the
//! file and what differs. The next file's first sample comes one sample period
//! after the previous file's last.
//!
//! Timing: sample `i` of the stream is stamped `t0 + i / rate / speed` (the LSL
//! local clock) and its chunk is pushed when that time comes, so timestamps match the
//! wall clock at any speed. EDF+D gaps (record onsets that jump) become timestamp
//! gaps. With `--loop` the list starts again and timestamps keep increasing.
//!
//! Markers: the files' EDF+/BDF+ annotations, and with several files the start of
//! each file (its stem), go out on a second outlet `<name>-markers` (type
//! `Markers`, one string channel, irregular rate), each stamped at its onset on the
//! EEG samples' clock and pushed once the EEG has reached that time.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lsl::ExPushable;

use crate::electrodes::{classify_label, LabelKind};
use crate::recording::{Annotation, EdfReader, RecordingError, Unit};

/// Arguments of `labramd replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// EDF, EDF+ or BDF files, streamed back to back as one stream (they must have
    /// the same channels, units and sample rate).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Playback speed (2 = twice real time). Timestamps follow the wall clock, so at
    /// speeds below 0.5 raise the daemon's input.gap_tolerance_s.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Start again after the last file (timestamps keep increasing).
    #[arg(long = "loop")]
    pub looping: bool,
    /// LSL stream name (default: the first file's stem). The markers go out as
    /// `<name>-markers`.
    #[arg(long)]
    pub name: Option<String>,
    /// LSL stream type.
    #[arg(long = "type", default_value = "EEG")]
    pub stream_type: String,
    /// LSL source_id (default: `labramd-replay:<name>`; the markers' is
    /// `<source_id>-markers`), which lets consumers recover the stream after a restart.
    #[arg(long)]
    pub source_id: Option<String>,
    /// Push the samples in chunks of this many milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub chunk_ms: f64,
    /// Before the first sample, wait up to this many seconds for a consumer of the
    /// EEG stream (an inlet, LabRecorder), then at most 2 s more for one of the marker
    /// stream, so that they receive the files from their start; 0: don't wait.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub wait_consumers: f64,
    /// Don't publish the marker stream `<name>-markers` (the files' annotations and,
    /// with several files, the start of each).
    #[arg(long)]
    pub no_markers: bool,
}

/// Errors of `replay`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("{path}: no signal to stream (no data signal with a sample rate)")]
    NoSignals { path: PathBuf },
    #[error(
        "{path} cannot follow {first} in one stream: {what} (files replayed together must \
         have the same channels, in the same order, with the same units and sample rate)"
    )]
    Incompatible {
        path: PathBuf,
        first: PathBuf,
        what: String,
    },
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

/// What differs between the streamed layout of `first` and that of `other` (`None`:
/// `other` can follow `first` in one stream).
pub fn layout_difference(first: &ReplayPlan, other: &ReplayPlan) -> Option<String> {
    if other.rate_hz != first.rate_hz {
        return Some(format!(
            "its sample rate is {} Hz, not {} Hz",
            other.rate_hz, first.rate_hz
        ));
    }
    for (i, (a, b)) in first.labels.iter().zip(&other.labels).enumerate() {
        if a != b {
            return Some(format!("its channel {} is `{b}`, not `{a}`", i + 1));
        }
    }
    if other.labels.len() != first.labels.len() {
        let (more, which) = if other.labels.len() > first.labels.len() {
            (&other.labels, "extra")
        } else {
            (&first.labels, "missing")
        };
        let list: Vec<&str> = more[first.labels.len().min(other.labels.len())..]
            .iter()
            .map(String::as_str)
            .collect();
        return Some(format!(
            "it has {} channels, not {} ({which}: {})",
            other.labels.len(),
            first.labels.len(),
            list.join(", ")
        ));
    }
    for ((label, a), b) in first.labels.iter().zip(&first.units).zip(&other.units) {
        if a != b {
            return Some(format!("its channel `{label}` is in {b}, not {a}"));
        }
    }
    None
}

/// A marker of the marker stream, due `at_s` seconds of recording after the stream's
/// first sample (the wall-clock time is `at_s / speed` later).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub at_s: f64,
    pub text: String,
}

/// The markers of one file that starts `offset_s` seconds into the stream and whose
/// first record's onset is `first_onset_s` (EDF+ onsets count from the file's start
/// time): its name first when `boundary` is given, then its annotations, in time
/// order (file order for equal onsets).
pub fn file_markers(
    boundary: Option<&str>,
    annotations: &[Annotation],
    offset_s: f64,
    first_onset_s: f64,
) -> Vec<Marker> {
    let mut out: Vec<Marker> = boundary
        .map(|b| Marker {
            at_s: offset_s,
            text: b.to_string(),
        })
        .into_iter()
        .collect();
    let mut ann: Vec<Marker> = annotations
        .iter()
        .map(|a| Marker {
            at_s: offset_s + (a.onset_s - first_onset_s),
            text: a.text.clone(),
        })
        .collect();
    ann.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    out.extend(ann);
    out
}

/// One file of the list, opened and planned.
struct Source {
    path: PathBuf,
    reader: EdfReader<BufReader<File>>,
    plan: ReplayPlan,
    /// Its annotations (empty with `--no-markers`).
    annotations: Vec<Annotation>,
}

impl Source {
    /// The stem, for the stream name and the file's start marker.
    fn stem(&self) -> String {
        stem(&self.path)
    }
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "labramd-replay".into())
}

/// Opens and plans every file; checks that all share the first one's layout.
fn open_sources(files: &[PathBuf], with_annotations: bool) -> Result<Vec<Source>, ReplayError> {
    let mut out: Vec<Source> = Vec::with_capacity(files.len());
    for path in files {
        let mut reader = EdfReader::open(path)?;
        let plan = plan(&reader)?;
        if let Some(first) = out.first() {
            if let Some(what) = layout_difference(&first.plan, &plan) {
                return Err(ReplayError::Incompatible {
                    path: path.clone(),
                    first: first.path.clone(),
                    what,
                });
            }
        }
        let annotations = if with_annotations {
            let a = reader.annotations()?;
            reader.seek_record(0)?;
            a
        } else {
            Vec::new()
        };
        out.push(Source {
            path: path.clone(),
            reader,
            plan,
            annotations,
        });
    }
    Ok(out)
}

fn outlet_error(name: &str) -> impl Fn(lsl::Error) -> ReplayError + '_ {
    move |e| ReplayError::Outlet {
        name: name.to_string(),
        message: format!("{e:?}"),
    }
}

/// `desc/acquisition` of both outlets.
fn describe_acquisition(info: &mut lsl::StreamInfo, args: &ReplayArgs) {
    let files: Vec<String> = args
        .files
        .iter()
        .map(|f| {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let mut desc = info.desc();
    let mut acq = desc.append_child("acquisition");
    acq.append_child_value("manufacturer", "labramd replay");
    acq.append_child_value("file", &files.join(", "));
    acq.append_child_value("speed", &args.speed.to_string());
    acq.append_child_value("loop", if args.looping { "true" } else { "false" });
}

fn eeg_outlet(
    args: &ReplayArgs,
    name: &str,
    source_id: &str,
    plan: &ReplayPlan,
    chunk: usize,
) -> Result<lsl::StreamOutlet, ReplayError> {
    let mut info = lsl::StreamInfo::new(
        name,
        &args.stream_type,
        plan.labels.len() as u32,
        plan.rate_hz,
        lsl::ChannelFormat::Float32,
        source_id,
    )
    .map_err(outlet_error(name))?;
    {
        let mut desc = info.desc();
        let mut chans = desc.append_child("channels");
        for ((label, unit), ty) in plan.labels.iter().zip(&plan.units).zip(&plan.types) {
            let mut ch = chans.append_child("channel");
            ch.append_child_value("label", label);
            ch.append_child_value("unit", unit);
            ch.append_child_value("type", ty);
        }
    }
    describe_acquisition(&mut info, args);
    lsl::StreamOutlet::new(&info, chunk as i32, 360).map_err(outlet_error(name))
}

fn marker_outlet(
    args: &ReplayArgs,
    name: &str,
    source_id: &str,
) -> Result<lsl::StreamOutlet, ReplayError> {
    let mut info = lsl::StreamInfo::new(
        name,
        "Markers",
        1,
        lsl::IRREGULAR_RATE,
        lsl::ChannelFormat::String,
        source_id,
    )
    .map_err(outlet_error(name))?;
    {
        let mut desc = info.desc();
        let mut ch = desc.append_child("channels").append_child("channel");
        ch.append_child_value("label", "annotation");
        ch.append_child_value("type", "Markers");
    }
    describe_acquisition(&mut info, args);
    lsl::StreamOutlet::new(&info, 1, 360).map_err(outlet_error(name))
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

/// How long `--wait-consumers` waits for a consumer of the marker stream once the EEG
/// stream has one.
const MARKER_CONSUMER_GRACE_S: f64 = 2.0;

/// Runs `labramd replay` (until the end of the last file, forever with `--loop`, or
/// until SIGINT/SIGTERM, which close the streams cleanly).
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
    let mut sources = open_sources(&args.files, !args.no_markers)?;
    let Some(first) = sources.first() else {
        return Err(ReplayError::BadArgument {
            flag: "files",
            value: "empty".into(),
            fix: "give at least one EDF/BDF file",
        });
    };
    let plan = first.plan.clone();
    let name = args.name.clone().unwrap_or_else(|| first.stem());
    let source_id = args
        .source_id
        .clone()
        .unwrap_or_else(|| format!("labramd-replay:{name}"));
    let rate = plan.rate_hz;
    let chunk = ((args.chunk_ms * 1e-3 * rate).round() as usize).max(1);
    let several = sources.len() > 1;
    let n_annotations: usize = sources.iter().map(|s| s.annotations.len()).sum();
    let outlet = eeg_outlet(args, &name, &source_id, &plan, chunk)?;
    let marker_name = format!("{name}-markers");
    let markers = if args.no_markers {
        None
    } else if several || n_annotations > 0 {
        Some(marker_outlet(
            args,
            &marker_name,
            &format!("{source_id}-markers"),
        )?)
    } else {
        tracing::info!("no annotations in the file: no marker stream");
        None
    };
    let stop = stop_on_signal();
    for s in &sources {
        if !s.plan.skipped.is_empty() {
            let list: Vec<String> = s
                .plan
                .skipped
                .iter()
                .map(|(l, r)| format!("{l} ({r} Hz)"))
                .collect();
            tracing::info!(
                "{}: skipped signals not at the main rate {rate} Hz: {}",
                s.path.display(),
                list.join(", ")
            );
        }
    }
    let total_s: f64 = sources.iter().map(|s| s.plan.duration_s).sum();
    let list: Vec<String> = sources
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    tracing::info!(
        "streaming {} as LSL stream `{name}`: {} channels at {rate} Hz, {total_s:.1} s{}, speed {}",
        list.join(" then "),
        plan.labels.len(),
        if args.looping { ", looped" } else { "" },
        args.speed
    );
    if markers.is_some() {
        tracing::info!(
            "markers on `{marker_name}`: {n_annotations} annotations{}",
            if several {
                ", and each file's stem at its start"
            } else {
                ""
            }
        );
    }
    if args.wait_consumers > 0.0 {
        let t = std::time::Instant::now();
        let found = outlet.wait_for_consumers(args.wait_consumers);
        tracing::info!("consumer connected: {found}");
        if let Some(m) = &markers {
            let left = args.wait_consumers - t.elapsed().as_secs_f64();
            let found = m.wait_for_consumers(left.clamp(0.0, MARKER_CONSUMER_GRACE_S));
            tracing::info!("marker consumer connected: {found}");
        }
        // Let the inlets finish subscribing before the first sample.
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let n = plan.labels.len();
    let mut frames: Vec<f32> = Vec::new();
    let mut sample = vec![0.0f32; n];
    let t0 = lsl::local_clock() + 0.05;
    let stamp = |at_s: f64| t0 + at_s / args.speed;

    // Markers queued in time order, pushed once the EEG reaches them.
    let mut pending: VecDeque<Marker> = VecDeque::new();
    let push_due = |pending: &mut VecDeque<Marker>, upto_s: f64| -> Result<(), ReplayError> {
        let Some(m) = &markers else {
            pending.clear();
            return Ok(());
        };
        while pending.front().is_some_and(|p| p.at_s <= upto_s) {
            if let Some(p) = pending.pop_front() {
                m.push_sample_ex(&vec![p.text], stamp(p.at_s), true)
                    .map_err(outlet_error(&marker_name))?;
            }
        }
        Ok(())
    };
    // Seconds of recording streamed before the current file.
    let mut offset = 0.0f64;
    let mut pass = 0usize;
    'stream: loop {
        let offset_at_pass = offset;
        for (k, src) in sources.iter_mut().enumerate() {
            src.reader.seek_record(0)?;
            tracing::info!(
                "file {}/{}{}: {} from LSL time {:.3}",
                k + 1,
                args.files.len(),
                if pass > 0 {
                    format!(" (pass {})", pass + 1)
                } else {
                    String::new()
                },
                src.path.display(),
                stamp(offset)
            );
            let boundary = several.then(|| src.stem());
            let mut first_onset: Option<f64> = None;
            // Length of this file in the stream (seconds).
            let mut end = 0.0f64;
            loop {
                frames.clear();
                let Some(block) = src.reader.read_frames(&src.plan.signals, &mut frames)? else {
                    break;
                };
                let first = match first_onset {
                    Some(f) => f,
                    None => {
                        first_onset = Some(block.onset_s);
                        let queued = file_markers(
                            boundary.as_deref(),
                            &src.annotations,
                            offset,
                            block.onset_s,
                        );
                        queue(&mut pending, queued);
                        block.onset_s
                    }
                };
                let onset = offset + (block.onset_s - first);
                end = end.max(block.onset_s - first + block.frames as f64 / rate);
                for c0 in (0..block.frames).step_by(chunk) {
                    if stop.load(Ordering::Relaxed) {
                        tracing::info!("signal received: closing the stream");
                        break 'stream;
                    }
                    let c1 = (c0 + chunk).min(block.frames);
                    let at = |i: usize| onset + i as f64 / rate;
                    let wait = stamp(at(c1 - 1)) - lsl::local_clock();
                    if wait > 0.0 {
                        std::thread::sleep(std::time::Duration::from_secs_f64(wait));
                    }
                    for i in c0..c1 {
                        sample.copy_from_slice(&frames[i * n..(i + 1) * n]);
                        outlet
                            .push_sample_ex(&sample, stamp(at(i)), i + 1 == c1)
                            .map_err(outlet_error(&name))?;
                    }
                    // Half a sample of slack: an onset on a sample is due with it.
                    push_due(&mut pending, at(c1 - 1) + 0.5 / rate)?;
                }
            }
            if first_onset.is_none() {
                // A file without data records: only its markers.
                queue(
                    &mut pending,
                    file_markers(boundary.as_deref(), &src.annotations, offset, 0.0),
                );
                push_due(&mut pending, offset)?;
            }
            offset += end;
        }
        if !args.looping {
            break;
        }
        if offset <= offset_at_pass {
            tracing::warn!("the files hold no samples: nothing to loop over");
            break;
        }
        pass += 1;
    }
    if !stop.load(Ordering::Relaxed) {
        // Annotations after the last sample.
        push_due(&mut pending, f64::INFINITY)?;
        tracing::info!("end of the replay; closing the stream");
        // Let consumers receive the tail before the outlets go.
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    Ok(())
}

/// Adds `markers` to `pending`, keeping it in time order (stable for equal times).
fn queue(pending: &mut VecDeque<Marker>, markers: Vec<Marker>) {
    pending.extend(markers);
    pending
        .make_contiguous()
        .sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
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

    fn shared(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data")
            .join(rel)
    }

    fn plan_of(rel: &str) -> ReplayPlan {
        plan(&EdfReader::open(shared(rel)).unwrap()).unwrap()
    }

    #[test]
    fn eegmat_plan_keeps_all_500_hz_signals() {
        let p = plan_of("eegmat/Subject00_1.edf");
        assert_eq!(p.rate_hz, 500.0);
        assert_eq!(p.labels.len(), 21);
        assert_eq!(p.labels[0], "EEG Fp1");
        assert_eq!(p.types[20], "ECG");
        assert!(p.units.iter().all(|u| u == "microvolts"));
        assert!(p.skipped.is_empty());
    }

    #[test]
    fn layouts_that_differ_are_named() {
        let rest = plan_of("eegmat/Subject00_1.edf");
        let task = plan_of("eegmat/Subject00_2.edf");
        assert_eq!(layout_difference(&rest, &task), None);
        let mmidb = plan_of("eegmmidb/S001R04.edf");
        assert_eq!(
            layout_difference(&rest, &mmidb).as_deref(),
            Some("its sample rate is 160 Hz, not 500 Hz")
        );
        let mut renamed = task.clone();
        renamed.labels[2] = "EEG F4".into();
        assert_eq!(
            layout_difference(&rest, &renamed).as_deref(),
            Some("its channel 3 is `EEG F4`, not `EEG F3`")
        );
        let mut fewer = task.clone();
        fewer.labels.pop();
        fewer.units.pop();
        assert_eq!(
            layout_difference(&rest, &fewer).as_deref(),
            Some("it has 20 channels, not 21 (missing: ECG ECG)")
        );
        assert_eq!(
            layout_difference(&fewer, &rest).as_deref(),
            Some("it has 21 channels, not 20 (extra: ECG ECG)")
        );
        let mut unit = task;
        unit.units[20] = "mV".into();
        assert_eq!(
            layout_difference(&rest, &unit).as_deref(),
            Some("its channel `ECG ECG` is in mV, not microvolts")
        );
    }

    #[test]
    fn markers_follow_the_file_offset_in_time_order() {
        let ann = |onset_s: f64, text: &str| Annotation {
            onset_s,
            duration_s: None,
            text: text.into(),
        };
        let a = [ann(4.2, "T2"), ann(0.5, "T0"), ann(4.2, "x")];
        let m = file_markers(Some("rec2"), &a, 100.0, 0.25);
        let got: Vec<(f64, &str)> = m.iter().map(|m| (m.at_s, m.text.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (100.0, "rec2"),
                (100.25, "T0"),
                (103.95, "T2"),
                (103.95, "x")
            ]
        );
        assert!(file_markers(None, &[], 5.0, 0.0).is_empty());
        let mut pending: VecDeque<Marker> =
            file_markers(None, &[ann(9.0, "late")], 0.0, 0.0).into();
        queue(&mut pending, m);
        assert_eq!(pending.front().map(|m| m.text.as_str()), Some("late"));
        assert_eq!(pending.back().map(|m| m.text.as_str()), Some("x"));
    }

    #[test]
    fn mismatched_files_are_refused_with_the_file_named() {
        let files = [
            shared("eegmat/Subject00_1.edf"),
            shared("eegmmidb/S001R04.edf"),
        ];
        let e = match open_sources(&files, false) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("an eegmat and an eegmmidb file cannot be one stream"),
        };
        assert!(
            e.contains("S001R04.edf cannot follow") && e.contains("160 Hz, not 500 Hz"),
            "{e}"
        );
        let ok = open_sources(&[files[1].clone()], true).unwrap();
        assert_eq!(ok[0].annotations.len(), 30);
    }
}
