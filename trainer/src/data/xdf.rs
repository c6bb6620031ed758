//! `make-dataset xdf`: windows locked to the markers of an XDF recording
//! (LabRecorder's files), read with [`labram_core::recording::xdf`].
//!
//! Per file: [`xdf::load_partial`] with pyxdf's defaults (clock
//! synchronisation, dejittering), so markers and EEG share the recorder's
//! synchronised clock; the EEG stream's channel labels map to electrodes as
//! every other reader's do ([`prepare::choose_channels`]); the chosen channels
//! go through [`labram_core::dsp::preprocess`] in the mode asked for, as in
//! every other maker; then windows are cut:
//!
//! * **markers** (default): a marker whose text is one of the classes opens
//!   one window from `tmin` to `tmax` seconds after it. The window starts at
//!   the EEG sample nearest `marker time + tmin` (input rate, sample `i`),
//!   which is sample `round(i × 200 / rate)` after resampling to 200 Hz.
//! * **blocks**: a marker of a class opens a block of that class lasting until
//!   the next marker (of any text) or the end of the EEG; windows of
//!   `tmax − tmin` seconds start at the marker + `tmin` and every `hop_s`
//!   while they end inside the block.
//!
//! Nothing is lost silently: a window that runs past the end of the EEG (or
//! starts before it, or inside `--skip-start-s`) is counted per reason in the
//! [`XdfReport`] and in the dataset's notes; a class whose marker never
//! appears is reported with the counts per class; a file cut off by a crash
//! is read up to the fault and named in the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use labram_core::card::{PATCH_SIZE, SAMPLE_RATE_HZ};
use labram_core::recording::xdf::{self, ChunkBody, LoadOptions, SampleData, Stream, XdfReader};

use super::format::{DatasetWriter, FormatError, Meta, Skipped, FORMAT};
use super::makers::{expand_inputs_with, Common, InputFile, MakeError};
use super::prepare::{self, Channels};
use super::runner::{ordered_parallel, SkipReason, Summary};
use super::split;
use super::windows;

/// Why a window was not written (the keys of [`XdfReport::dropped`]).
pub const PAST_END: &str = "past the end of the EEG";
pub const BEFORE_START: &str = "before the start of the EEG";
pub const IN_SKIP: &str = "inside --skip-start-s";
pub const SHORT_BLOCK: &str = "block shorter than a window";

/// Options of the XDF maker.
#[derive(Debug, Clone)]
pub struct XdfOptions {
    /// Name of the EEG stream (`<name>` in its header).
    pub eeg_stream: String,
    /// Name of the marker stream.
    pub marker_stream: String,
    /// Marker texts used as classes, in label order.
    pub classes: Vec<String>,
    /// Window start relative to the marker, seconds (may be negative).
    pub tmin_s: f64,
    /// Window end relative to the marker, seconds; `tmax − tmin` is the window
    /// length and must be a whole number of 1-s patches (1-16).
    pub tmax_s: f64,
    /// Blocks: a marker opens a block until the next marker, cut every `hop_s`.
    pub blocks: bool,
    /// Hop between windows inside a block, seconds.
    pub hop_s: f64,
    /// Electrodes; `None`: every mapped channel of the first file's EEG stream.
    pub channels: Option<Vec<String>>,
    pub val_subjects: BTreeSet<String>,
    pub test_subjects: BTreeSet<String>,
}

impl XdfOptions {
    /// Patches per window (`tmax − tmin` in whole seconds), checked.
    pub fn window_patches(&self) -> Result<usize, MakeError> {
        let len = self.tmax_s - self.tmin_s;
        let patches = len.round();
        if !len.is_finite()
            || (len - patches).abs() > 1e-9
            || patches < 1.0
            || patches > labram_core::card::MAX_PATCHES as f64
        {
            return Err(MakeError::Usage(format!(
                "--tmin {} --tmax {}: the window (tmax − tmin = {len} s) must be a whole number of 1-s patches, 1-{} (e.g. --tmin 0 --tmax 4)",
                self.tmin_s,
                self.tmax_s,
                labram_core::card::MAX_PATCHES
            )));
        }
        if self.blocks && (self.hop_s.is_nan() || self.hop_s <= 0.0) {
            return Err(MakeError::Usage(format!(
                "--hop-s {}: the hop must be > 0 seconds",
                self.hop_s
            )));
        }
        Ok(patches as usize)
    }
}

/// What the markers gave, over all files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XdfReport {
    /// Markers seen per class (index = label).
    pub markers: Vec<usize>,
    /// Markers whose text is no class, per text.
    pub other_markers: BTreeMap<String, usize>,
    /// Windows written per class.
    pub windows: Vec<usize>,
    /// Windows not written, per reason ([`PAST_END`], …).
    pub dropped: BTreeMap<&'static str, usize>,
    /// Files read only up to a fault (a recording cut off by a crash), with the fault.
    pub truncated: Vec<(String, String)>,
}

impl XdfReport {
    fn add(&mut self, other: &XdfReport) {
        add_counts(&mut self.markers, &other.markers);
        add_counts(&mut self.windows, &other.windows);
        for (k, v) in &other.other_markers {
            *self.other_markers.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &other.dropped {
            *self.dropped.entry(k).or_insert(0) += v;
        }
        self.truncated.extend(other.truncated.iter().cloned());
    }

    /// Classes whose marker never appeared in a file used.
    pub fn unseen<'a>(&self, classes: &'a [String]) -> Vec<&'a str> {
        classes
            .iter()
            .enumerate()
            .filter(|(k, _)| self.markers.get(*k).copied().unwrap_or(0) == 0)
            .map(|(_, c)| c.as_str())
            .collect()
    }

    /// Markers per class, e.g. `rest 3, arithmetic 0`.
    pub fn marker_counts(&self, classes: &[String]) -> String {
        counts(classes, &self.markers)
    }

    /// The closing lines: markers and windows per class, windows dropped and why.
    pub fn render(&self, classes: &[String]) -> String {
        let mut s = format!(
            "markers per class: {}\nwindows per class: {}\n",
            self.marker_counts(classes),
            counts(classes, &self.windows)
        );
        if !self.other_markers.is_empty() {
            let other: Vec<String> = self
                .other_markers
                .iter()
                .map(|(k, v)| format!("`{k}` {v}"))
                .collect();
            s.push_str(&format!(
                "markers of no class (ignored): {}\n",
                other.join(", ")
            ));
        }
        let total: usize = self.dropped.values().sum();
        if total == 0 {
            s.push_str("dropped 0 windows\n");
        } else {
            let parts: Vec<String> = self
                .dropped
                .iter()
                .map(|(k, v)| format!("{v} {k}"))
                .collect();
            s.push_str(&format!(
                "dropped {total} window(s): {}\n",
                parts.join(", ")
            ));
        }
        for (f, e) in &self.truncated {
            s.push_str(&format!("  read {f} up to a fault: {e}\n"));
        }
        s
    }
}

fn add_counts(a: &mut Vec<usize>, b: &[usize]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

fn counts(classes: &[String], v: &[usize]) -> String {
    classes
        .iter()
        .enumerate()
        .map(|(k, c)| format!("{c} {}", v.get(k).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Index of the timestamp nearest `t` in the ascending `ts` (the earlier on a tie).
pub fn nearest_sample(ts: &[f64], t: f64) -> usize {
    let i = ts.partition_point(|&x| x < t);
    if i == 0 {
        return 0;
    }
    if i >= ts.len() {
        return ts.len().saturating_sub(1);
    }
    if t - ts[i - 1] <= ts[i] - t {
        i - 1
    } else {
        i
    }
}

/// A marker on the synchronised clock; `class` is its label, `None` for a
/// marker of no class (it still closes a block).
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub time_s: f64,
    pub class: Option<usize>,
}

/// Where windows go in one recording: `(label, start)` at 200 Hz, and the
/// windows dropped per reason.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub windows: Vec<(usize, usize)>,
    pub dropped: BTreeMap<&'static str, usize>,
}

/// The EEG's clock, as the planner needs it.
#[derive(Debug, Clone, Copy)]
pub struct EegClock<'a> {
    /// Synchronised timestamps of the input samples.
    pub time_stamps: &'a [f64],
    /// Nominal input rate, Hz.
    pub rate_hz: f64,
    /// Samples per channel after preprocessing (200 Hz).
    pub samples_200: usize,
}

impl EegClock<'_> {
    /// The 200-Hz sample of the input sample nearest `t`, or where `t` lies
    /// outside the EEG (more than half a period before its first sample or
    /// after its last).
    fn locate(&self, t: f64) -> Result<usize, &'static str> {
        let ts = self.time_stamps;
        let half = 0.5 / self.rate_hz;
        match (ts.first(), ts.last()) {
            (Some(&a), Some(&b)) => {
                if t < a - half {
                    Err(BEFORE_START)
                } else if t > b + half {
                    Err(PAST_END)
                } else {
                    let i = nearest_sample(ts, t);
                    Ok((i as f64 * SAMPLE_RATE_HZ / self.rate_hz).round() as usize)
                }
            }
            _ => Err(PAST_END),
        }
    }
}

/// Plans the windows of one recording. `markers` in time order; `len` and
/// `hop` in 200-Hz samples; `first`: the first sample a window may start at
/// (`--skip-start-s`).
pub fn plan(
    markers: &[Marker],
    eeg: EegClock<'_>,
    tmin_s: f64,
    len: usize,
    blocks: Option<usize>,
    first: usize,
) -> Plan {
    let mut out = Plan::default();
    let n = eeg.samples_200;
    let mut drop = |why: &'static str, k: usize| *out.dropped.entry(why).or_insert(0) += k;
    let mut windows = Vec::new();
    for (k, m) in markers.iter().enumerate() {
        let Some(label) = m.class else { continue };
        let start = match eeg.locate(m.time_s + tmin_s) {
            Ok(s) => s,
            Err(why) => {
                drop(why, 1);
                continue;
            }
        };
        match blocks {
            None => {
                if start < first {
                    drop(IN_SKIP, 1);
                } else if start + len > n {
                    drop(PAST_END, 1);
                } else {
                    windows.push((label, start));
                }
            }
            Some(hop) => {
                // The block ends at the next marker (or the end of the EEG).
                let end = match markers.get(k + 1) {
                    Some(next) => eeg.locate(next.time_s).unwrap_or(n),
                    None => n,
                };
                let starts = windows::sliding_starts(end.min(n), len, hop, start);
                if starts.is_empty() {
                    drop(if end < n { SHORT_BLOCK } else { PAST_END }, 1);
                }
                for s in starts {
                    if s < first {
                        drop(IN_SKIP, 1);
                    } else {
                        windows.push((label, s));
                    }
                }
            }
        }
    }
    out.windows = windows;
    out
}

/// Marker texts of a marker stream (string markers as they are; numeric ones
/// as numbers, `3` not `3.0`: OpenViBE's int32 markers), first channel.
pub fn marker_texts(s: &Stream) -> Vec<String> {
    let ch = s.header.channel_count.max(1);
    match &s.data {
        SampleData::String(v) => v.iter().step_by(ch).cloned().collect(),
        other => other
            .to_f64()
            .unwrap_or_default()
            .iter()
            .step_by(ch)
            .map(|x| {
                if x.fract() == 0.0 && x.abs() < 1e15 {
                    format!("{}", *x as i64)
                } else {
                    x.to_string()
                }
            })
            .collect(),
    }
}

/// The `<unit>` of every `desc/channels/channel` in a header's XML, in order
/// (empty when there is none).
fn channel_units(xml: &str) -> Vec<String> {
    let Some(start) = xml.find("<channels>") else {
        return Vec::new();
    };
    let end = xml[start..]
        .find("</channels>")
        .map_or(xml.len(), |e| start + e);
    let block = &xml[start..end];
    let mut out = Vec::new();
    for ch in block.split("<channel>").skip(1) {
        let unit = ch
            .find("<unit>")
            .and_then(|a| {
                let rest = &ch[a + 6..];
                rest.find("</unit>").map(|b| rest[..b].trim().to_string())
            })
            .unwrap_or_default();
        out.push(unit);
    }
    out
}

/// Factor from a channel unit to µV; `None` for a unit that is no voltage.
/// An absent unit is taken as µV (LSL's EEG convention).
pub fn to_microvolts(unit: &str) -> Option<f64> {
    match unit.trim().to_ascii_lowercase().as_str() {
        "" | "uv" | "µv" | "μv" | "microvolt" | "microvolts" => Some(1.0),
        "mv" | "millivolt" | "millivolts" => Some(1e3),
        "v" | "volt" | "volts" => Some(1e6),
        "nv" | "nanovolt" | "nanovolts" => Some(1e-3),
        _ => None,
    }
}

fn stream_list(streams: &[Stream]) -> String {
    if streams.is_empty() {
        return "no stream".into();
    }
    streams
        .iter()
        .map(|s| {
            format!(
                "`{}` ({}, {} ch, {} Hz)",
                s.header.name,
                s.header.content_type,
                s.header.channel_count,
                s.header.nominal_srate
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn find<'a>(streams: &'a [Stream], name: &str, what: &str) -> Result<&'a Stream, SkipReason> {
    let hits: Vec<&Stream> = streams.iter().filter(|s| s.header.name == name).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(SkipReason::new(
            "streams",
            format!(
                "no {what} stream named `{name}`; the file's streams: {}",
                stream_list(streams)
            ),
        )),
        _ => Err(SkipReason::new(
            "streams",
            format!(
                "{} streams are named `{name}`; the file's streams: {}",
                hits.len(),
                stream_list(streams)
            ),
        )),
    }
}

/// One channel of sample-major `v` (`nch` values per sample), scaled to µV.
fn column<T: Copy>(v: &[T], nch: usize, src: usize, scale: f64, f: impl Fn(T) -> f64) -> Vec<f32> {
    v.iter()
        .skip(src)
        .step_by(nch)
        .map(|&x| (f(x) * scale) as f32)
        .collect()
}

/// The EEG stream's chosen channels in µV, `[channels][samples]` (only those
/// channels are converted: a long recording is not copied whole).
fn eeg_rows(s: &Stream, chosen: &[(usize, &'static str)]) -> Result<Vec<Vec<f32>>, SkipReason> {
    let units = channel_units(&s.header.xml);
    let nch = s.header.channel_count.max(1);
    let mut rows = Vec::with_capacity(chosen.len());
    for &(src, electrode) in chosen {
        let unit = units.get(src).map_or("", String::as_str);
        let scale = to_microvolts(unit).ok_or_else(|| {
            SkipReason::new(
                "units",
                format!("electrode {electrode}: unit `{unit}` is not a voltage (µV, mV, V)"),
            )
        })?;
        rows.push(match &s.data {
            SampleData::Int8(v) => column(v, nch, src, scale, f64::from),
            SampleData::Int16(v) => column(v, nch, src, scale, f64::from),
            SampleData::Int32(v) => column(v, nch, src, scale, f64::from),
            SampleData::Int64(v) => column(v, nch, src, scale, |x| x as f64),
            SampleData::Float32(v) => column(v, nch, src, scale, f64::from),
            SampleData::Double64(v) => column(v, nch, src, scale, |x| x),
            SampleData::String(_) => {
                return Err(SkipReason::new(
                    "streams",
                    format!("EEG stream `{}` holds strings, not samples", s.header.name),
                ))
            }
        });
    }
    Ok(rows)
}

/// One file's windows, preprocessed rows and report.
struct FileOut {
    rows: Vec<Vec<f32>>,
    plan: Plan,
    report: XdfReport,
    input_channel_samples: u64,
}

fn process(
    file: &InputFile,
    opts: &XdfOptions,
    channels: &[String],
    len: usize,
    common: &Common,
) -> Result<FileOut, SkipReason> {
    let partial = xdf::load_partial(&file.path, &LoadOptions::default());
    let mut report = XdfReport {
        markers: vec![0; opts.classes.len()],
        windows: vec![0; opts.classes.len()],
        ..XdfReport::default()
    };
    if let Some(e) = partial.error {
        if partial.xdf.streams.is_empty() {
            return Err(SkipReason::new("unreadable", e.to_string()));
        }
        tracing::warn!(file = %file.name, error = %e, "read up to a fault");
        report.truncated.push((file.name.clone(), e.to_string()));
    }
    let streams = &partial.xdf.streams;
    let eeg = find(streams, &opts.eeg_stream, "EEG")?;
    let marks = find(streams, &opts.marker_stream, "marker")?;
    if eeg.header.nominal_srate <= 0.0 {
        return Err(SkipReason::new(
            "streams",
            format!(
                "stream `{}` is irregular (nominal rate 0): not an EEG stream",
                eeg.header.name
            ),
        ));
    }
    if eeg.header.channel_labels.len() != eeg.header.channel_count {
        return Err(SkipReason::new(
            "channels",
            format!(
                "EEG stream `{}` labels {} of its {} channels in desc/channels/channel/label",
                eeg.header.name,
                eeg.header.channel_labels.len(),
                eeg.header.channel_count
            ),
        ));
    }
    let chosen = prepare::choose_channels(
        &eeg.header.channel_labels,
        &common.channel_map,
        &Channels::Exactly(channels.to_vec()),
    )?;
    let raw = eeg_rows(eeg, &chosen)?;
    let input_samples = eeg.time_stamps.len();
    let rows = labram_core::dsp::preprocess(&raw, eeg.header.nominal_srate, &common.preprocessing)
        .map_err(|e| SkipReason::new("preprocessing", e.to_string()))?;
    drop(raw);

    let texts = marker_texts(marks);
    let mut markers: Vec<Marker> = texts
        .iter()
        .zip(&marks.time_stamps)
        .map(|(text, &t)| {
            let class = opts.classes.iter().position(|c| c == text);
            match class {
                Some(k) => report.markers[k] += 1,
                None => *report.other_markers.entry(text.clone()).or_insert(0) += 1,
            }
            Marker { time_s: t, class }
        })
        .collect();
    markers.sort_by(|a, b| a.time_s.total_cmp(&b.time_s));
    let clock = EegClock {
        time_stamps: &eeg.time_stamps,
        rate_hz: eeg.header.nominal_srate,
        samples_200: rows.first().map_or(0, Vec::len),
    };
    let hop = opts
        .blocks
        .then(|| ((opts.hop_s * SAMPLE_RATE_HZ).round() as usize).max(1));
    let first = (common.skip_start_s * SAMPLE_RATE_HZ).round().max(0.0) as usize;
    let plan = plan(&markers, clock, opts.tmin_s, len, hop, first);
    for &(label, _) in &plan.windows {
        report.windows[label] += 1;
    }
    report.dropped = plan.dropped.clone();
    Ok(FileOut {
        rows,
        plan,
        report,
        input_channel_samples: (chosen.len() * input_samples) as u64,
    })
}

/// The EEG stream's electrodes in the first file that has the stream (its
/// header is read, not its samples).
fn first_channels(
    files: &[InputFile],
    eeg_stream: &str,
    common: &Common,
) -> Result<Vec<String>, MakeError> {
    for f in files {
        let Ok(reader) = XdfReader::open(&f.path) else {
            continue;
        };
        for chunk in reader {
            let Ok(chunk) = chunk else { break };
            match chunk.body {
                ChunkBody::StreamHeader { header, .. } if header.name == eeg_stream => {
                    if let Ok(c) = prepare::choose_channels(
                        &header.channel_labels,
                        &common.channel_map,
                        &Channels::AllMapped,
                    ) {
                        return Ok(c.into_iter().map(|(_, e)| e.to_string()).collect());
                    }
                    break;
                }
                _ => {}
            }
        }
    }
    Err(MakeError::Usage(format!(
        "no input file has an EEG stream named `{eeg_stream}` whose channel labels map to electrodes; check --eeg-stream against the streams listed above, or pass --channels"
    )))
}

fn is_xdf(p: &Path) -> bool {
    p.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("xdf"))
}

/// The XDF maker. Returns the run's summary (files, windows per split,
/// skipped files), the marker report and the metadata written (`None` when
/// nothing usable was found).
pub fn make_xdf(
    inputs: &[PathBuf],
    opts: &XdfOptions,
    common: &Common,
) -> Result<(Summary, XdfReport, Option<Meta>), MakeError> {
    let patches = opts.window_patches()?;
    if opts.classes.is_empty() {
        return Err(MakeError::Usage(
            "--classes names no class; list the marker texts, e.g. --classes rest,arithmetic"
                .into(),
        ));
    }
    let files = expand_inputs_with(inputs, is_xdf, "XDF recordings (.xdf)")?;
    let channels = match &opts.channels {
        Some(c) => c.clone(),
        None => match first_channels(&files, &opts.eeg_stream, common) {
            Ok(c) => c,
            Err(e) => {
                // Say why per file (its streams) before failing.
                for f in &files {
                    let streams = xdf::load_partial(&f.path, &LoadOptions::default())
                        .xdf
                        .streams;
                    if let Err(r) = find(&streams, &opts.eeg_stream, "EEG") {
                        eprintln!("  {}: {}", f.name, r.message);
                    }
                }
                return Err(e);
            }
        },
    };
    let len = patches * PATCH_SIZE;
    let mut notes = BTreeMap::new();
    notes.insert("eeg_stream".into(), opts.eeg_stream.clone());
    notes.insert("marker_stream".into(), opts.marker_stream.clone());
    notes.insert("tmin_s".into(), opts.tmin_s.to_string());
    notes.insert("tmax_s".into(), opts.tmax_s.to_string());
    notes.insert("skip_start_s".into(), common.skip_start_s.to_string());
    for (k, v) in [
        ("val_subjects", &opts.val_subjects),
        ("test_subjects", &opts.test_subjects),
    ] {
        if !v.is_empty() {
            notes.insert(k.into(), v.iter().cloned().collect::<Vec<_>>().join(","));
        }
    }
    let windowing = if opts.blocks {
        format!(
            "blocks: a marker of a class opens a block until the next marker (or the end of the EEG); {patches}-s windows from the EEG sample nearest marker + {} s, every {} s, while they end inside the block (XDF timestamps synchronised as pyxdf)",
            opts.tmin_s, opts.hop_s
        )
    } else {
        format!(
            "one window per marker of a class, {} s to {} s after it, starting at the EEG sample nearest marker + {} s (XDF timestamps synchronised as pyxdf)",
            opts.tmin_s, opts.tmax_s, opts.tmin_s
        )
    };
    let meta = Meta {
        format: FORMAT.into(),
        kind: "xdf".into(),
        task: format!("XDF markers: {}", opts.classes.join(", ")),
        classes: opts.classes.clone(),
        channels: channels.clone(),
        patch_size: PATCH_SIZE,
        window_patches: patches,
        hop_s: opts.blocks.then_some(opts.hop_s),
        windowing,
        preprocessing: common.preprocessing.clone(),
        subjects: Vec::new(),
        sources: Vec::new(),
        splits: BTreeMap::new(),
        command: common.command.clone(),
        skipped: Vec::new(),
        notes,
    };
    let mut writer =
        DatasetWriter::create(&common.output, meta, common.shard_bytes, common.overwrite)?;
    let mut summary = Summary::default();
    let mut report = XdfReport {
        markers: vec![0; opts.classes.len()],
        windows: vec![0; opts.classes.len()],
        ..XdfReport::default()
    };
    let mut write_error: Option<FormatError> = None;
    ordered_parallel(
        &files,
        common.threads,
        "make-dataset xdf",
        |f| process(f, opts, &channels, len, common),
        |k, result| {
            if write_error.is_some() {
                return;
            }
            let f = &files[k];
            match result {
                Err(reason) => {
                    tracing::warn!(file = %f.name, reason = %reason.message, "skipped");
                    summary.skipped.push((f.name.clone(), reason));
                }
                Ok(out) => {
                    report.add(&out.report);
                    if out.plan.windows.is_empty() {
                        summary.skipped.push((
                            f.name.clone(),
                            SkipReason::new(
                                "no windows",
                                format!(
                                    "no window of a class fits (markers per class: {}; dropped: {:?})",
                                    out.report.marker_counts(&opts.classes),
                                    out.report.dropped
                                ),
                            ),
                        ));
                        return;
                    }
                    let stem = Path::new(&f.name)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let subject_name = split::stem_subject(&stem);
                    let split = if opts.test_subjects.contains(&subject_name) {
                        "test"
                    } else if opts.val_subjects.contains(&subject_name) {
                        "val"
                    } else {
                        "train"
                    };
                    let subject = writer.subject_index(&subject_name);
                    let source = writer.source_index(&f.name);
                    let labels: Vec<usize> = out.plan.windows.iter().map(|w| w.0).collect();
                    let offsets: Vec<usize> = out.plan.windows.iter().map(|w| w.1).collect();
                    let rows = &out.rows;
                    if let Err(e) = writer.push_windows_with(
                        split,
                        &labels,
                        subject,
                        source,
                        &offsets,
                        |k, o| windows::cut_wrapping_to(rows, offsets[k] as i64, len, o),
                    ) {
                        write_error = Some(e);
                        return;
                    }
                    summary.used_files += 1;
                    summary.items += labels.len();
                    *summary.per_split.entry(split.to_string()).or_insert(0) += labels.len();
                    summary.input_channel_samples += out.input_channel_samples;
                }
            }
        },
    );
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let m = writer.meta_mut();
    m.skipped = summary
        .skipped
        .iter()
        .map(|(f, r)| Skipped {
            file: f.clone(),
            reason: r.message.clone(),
        })
        .collect();
    m.notes.insert(
        "markers_per_class".into(),
        report.marker_counts(&opts.classes),
    );
    for (why, n) in &report.dropped {
        m.notes.insert(format!("dropped: {why}"), n.to_string());
    }
    for (f, e) in &report.truncated {
        m.notes
            .insert(format!("read up to a fault: {f}"), e.clone());
    }
    if summary.items == 0 {
        writer.abandon();
        return Ok((summary, report, None));
    }
    let meta = writer.finish()?;
    Ok((summary, report, Some(meta)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: f64, class: Option<usize>) -> Marker {
        Marker { time_s: t, class }
    }

    /// 200 Hz input from t = 100 s, `n` samples.
    fn clock(ts: &[f64]) -> EegClock<'_> {
        EegClock {
            time_stamps: ts,
            rate_hz: 200.0,
            samples_200: ts.len(),
        }
    }

    #[test]
    fn nearest_sample_ties_and_ends() {
        let ts = [1.0, 2.0, 3.0];
        assert_eq!(nearest_sample(&ts, 0.0), 0);
        assert_eq!(nearest_sample(&ts, 1.4), 0);
        assert_eq!(nearest_sample(&ts, 1.5), 0);
        assert_eq!(nearest_sample(&ts, 1.6), 1);
        assert_eq!(nearest_sample(&ts, 9.0), 2);
        assert_eq!(nearest_sample(&[], 9.0), 0);
    }

    #[test]
    fn marker_windows_start_at_the_nearest_sample_and_past_end_is_counted() {
        let ts: Vec<f64> = (0..2000).map(|i| 100.0 + i as f64 / 200.0).collect();
        let marks = [
            m(100.0, Some(0)),
            m(101.0021, Some(1)), // nearest sample 200.42 → 200
            m(101.5, None),       // no class
            m(102.0, Some(0)),
            m(108.0, Some(1)), // 1600 + 800 > 2000: past the end
            m(99.0, Some(0)),  // tmin -0.5 → 98.5: before the EEG
        ];
        let p = plan(&marks, clock(&ts), -0.5, 800, None, 0);
        // 100 − 0.5 is before the first sample too.
        assert_eq!(p.windows, vec![(1, 100), (0, 300)]);
        assert_eq!(p.dropped[BEFORE_START], 2);
        assert_eq!(p.dropped[PAST_END], 1);
        let p = plan(&marks, clock(&ts), 0.0, 800, None, 250);
        assert_eq!(p.windows, vec![(0, 400)]);
        assert_eq!(p.dropped[IN_SKIP], 2);
        // A 500-Hz input: sample i is 200-Hz sample round(i × 0.4).
        let ts: Vec<f64> = (0..5000).map(|i| i as f64 / 500.0).collect();
        let c = EegClock {
            time_stamps: &ts,
            rate_hz: 500.0,
            samples_200: 2000,
        };
        let p = plan(&[m(1.0031, Some(0))], c, 0.0, 200, None, 0);
        assert_eq!(p.windows, vec![(0, 201)]); // sample 502 → 200.8 → 201
    }

    #[test]
    fn blocks_run_to_the_next_marker_or_the_end() {
        let ts: Vec<f64> = (0..4000).map(|i| i as f64 / 200.0).collect();
        let marks = [
            m(0.0, Some(0)),  // block 0-5 s: 2-s windows every 2 s at 0, 2 s
            m(5.0, Some(1)),  // block 5-6 s: shorter than a window
            m(6.0, None),     // closes it
            m(10.0, Some(1)), // block 10-20 s (the end): 10, 12, 14, 16, 18
        ];
        let p = plan(&marks, clock(&ts), 0.0, 400, Some(400), 0);
        let want: Vec<(usize, usize)> = vec![
            (0, 0),
            (0, 400),
            (1, 2000),
            (1, 2400),
            (1, 2800),
            (1, 3200),
            (1, 3600),
        ];
        assert_eq!(p.windows, want);
        assert_eq!(p.dropped[SHORT_BLOCK], 1);
        // tmin shifts the block's first window, hop 1 s.
        let p = plan(&marks[..1], clock(&ts[..1000]), 0.5, 400, Some(200), 0);
        assert_eq!(
            p.windows.iter().map(|w| w.1).collect::<Vec<_>>(),
            vec![100, 300, 500]
        );
    }

    #[test]
    fn units_and_window_length() {
        let xml = "<info><desc><channels><channel><label>Fp1</label><unit>microvolts</unit></channel><channel><label>Fp2</label><unit>mV</unit></channel><channel><label>X</label></channel></channels></desc></info>";
        assert_eq!(channel_units(xml), vec!["microvolts", "mV", ""]);
        assert_eq!(to_microvolts("microvolts"), Some(1.0));
        assert_eq!(to_microvolts("mV"), Some(1e3));
        assert_eq!(to_microvolts("V"), Some(1e6));
        assert_eq!(to_microvolts(""), Some(1.0));
        assert_eq!(to_microvolts("counts"), None);
        let mut o = XdfOptions {
            eeg_stream: "e".into(),
            marker_stream: "m".into(),
            classes: vec!["a".into()],
            tmin_s: -0.5,
            tmax_s: 3.5,
            blocks: false,
            hop_s: 1.0,
            channels: None,
            val_subjects: BTreeSet::new(),
            test_subjects: BTreeSet::new(),
        };
        assert_eq!(o.window_patches().unwrap(), 4);
        o.tmax_s = 3.0;
        let e = o.window_patches().unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
        o.tmax_s = 20.0;
        assert!(o.window_patches().is_err());
    }

    #[test]
    fn eeg_rows_pick_channels_and_scale_to_microvolts() {
        use labram_core::recording::xdf::{ChannelFormat, StreamHeader};
        let xml = "<info><desc><channels><channel><unit>mV</unit></channel><channel><unit>uV</unit></channel><channel><unit>counts</unit></channel></channels></desc></info>";
        let mut s = Stream {
            id: 1,
            header: StreamHeader {
                name: "amp".into(),
                content_type: "EEG".into(),
                channel_count: 3,
                nominal_srate: 200.0,
                channel_format: ChannelFormat::Int16,
                source_id: String::new(),
                channel_labels: vec!["Fp1".into(), "Fp2".into(), "X".into()],
                can_drop_samples: false,
                xml: xml.into(),
            },
            footer: None,
            time_stamps: vec![0.0, 0.005],
            data: SampleData::Int16(vec![1, 10, 100, 2, 20, 200]),
            clock_times: Vec::new(),
            clock_values: Vec::new(),
            effective_srate: 200.0,
            segments: Vec::new(),
            clock_segments: Vec::new(),
        };
        let rows = eeg_rows(&s, &[(1, "FP2"), (0, "FP1")]).unwrap();
        assert_eq!(rows, vec![vec![10.0, 20.0], vec![1000.0, 2000.0]]);
        let e = eeg_rows(&s, &[(2, "CZ")]).unwrap_err();
        assert_eq!(e.category, "units");
        assert!(e.message.contains("`counts`"), "{}", e.message);
        s.data = SampleData::String(vec!["a".into(); 6]);
        assert_eq!(eeg_rows(&s, &[(0, "FP1")]).unwrap_err().category, "streams");
    }

    #[test]
    fn report_renders_counts_and_unseen_classes() {
        let classes = vec!["rest".to_string(), "arithmetic".to_string()];
        let mut r = XdfReport {
            markers: vec![3, 0],
            windows: vec![2, 0],
            ..XdfReport::default()
        };
        r.dropped.insert(PAST_END, 1);
        assert_eq!(r.unseen(&classes), vec!["arithmetic"]);
        let s = r.render(&classes);
        assert!(s.contains("markers per class: rest 3, arithmetic 0"), "{s}");
        assert!(
            s.contains("dropped 1 window(s): 1 past the end of the EEG"),
            "{s}"
        );
    }
}
