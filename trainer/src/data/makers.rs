//! The dataset makers behind `labram-trainer make-dataset`: which files, which
//! labels, which split, which windows. Reading and preprocessing is
//! [`super::prepare`], running in parallel is [`super::runner`], writing is
//! [`super::format`] (windows) or [`super::pretrain`] (HDF5 store).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use labram_core::card::{Preprocessing, PATCH_SIZE, SAMPLE_RATE_HZ};

use super::format::{DatasetWriter, FormatError, Meta, Skipped, FORMAT};
use super::prepare::{self, Channels, Prepared};
use super::pretrain::{StoreError, StoreWriter};
use super::runner::{ordered_parallel, SkipReason, Summary};
use super::split::{self, Rounding, SubjectSet};
use super::tuh::{self, TuhError};
use super::windows;

/// The 19 scalp electrodes of the eegmat recordings, in their file order.
pub const EEGMAT_CHANNELS: [&str; 19] = [
    "FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4", "T5", "T6", "P3", "P4", "O1",
    "O2", "FZ", "CZ", "PZ",
];
/// eegmat classes: `_1` files → 0, `_2` files → 1.
pub const EEGMAT_CLASSES: [&str; 2] = ["rest", "arithmetic"];
/// eegmat subjects kept outside the project (the external test set).
pub const EEGMAT_EXTERNAL: std::ops::RangeInclusive<u32> = 28..=35;

/// Errors that stop a maker before or after the per-file work (bad per-file
/// input is skipped and counted instead).
#[derive(Debug, thiserror::Error)]
pub enum MakeError {
    #[error("input {path} does not exist; pass recording files or folders that hold them")]
    NoInput { path: PathBuf },
    #[error("cannot list {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no {what} found in {inputs}")]
    NoFiles { what: String, inputs: String },
    #[error(transparent)]
    Tuh(#[from] TuhError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Usage(String),
}

/// Options every maker shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub output: PathBuf,
    pub preprocessing: Preprocessing,
    pub threads: usize,
    pub overwrite: bool,
    /// Upper bound of one shard, bytes.
    pub shard_bytes: usize,
    /// The command line, recorded in the metadata.
    pub command: String,
    /// Explicit label → electrode overrides (`""` drops a channel).
    pub channel_map: BTreeMap<String, String>,
    /// Seconds dropped at the start of every preprocessed recording (the causal
    /// filters' start-up transient), before any window.
    pub skip_start_s: f64,
}

/// A recording to process, with the name recorded in metadata (relative to
/// the input argument it was found under: never an absolute path).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputFile {
    pub path: PathBuf,
    pub name: String,
}

fn is_recording(p: &Path) -> bool {
    p.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("edf") || x.eq_ignore_ascii_case("bdf"))
}

/// Expands files and folders (recursively) into recordings, sorted by name.
pub fn expand_inputs(inputs: &[PathBuf]) -> Result<Vec<InputFile>, MakeError> {
    expand_inputs_with(inputs, is_recording, "recordings (.edf, .bdf)")
}

/// [`expand_inputs`] for other files: folders are searched recursively for
/// files `wanted` accepts (files named directly are always taken); `what`
/// names them in the error when none is found.
pub fn expand_inputs_with(
    inputs: &[PathBuf],
    wanted: fn(&Path) -> bool,
    what: &str,
) -> Result<Vec<InputFile>, MakeError> {
    let mut out = Vec::new();
    for input in inputs {
        if input.is_file() {
            let name = input
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(InputFile {
                path: input.clone(),
                name,
            });
        } else if input.is_dir() {
            let mut stack = vec![input.clone()];
            while let Some(d) = stack.pop() {
                let entries = std::fs::read_dir(&d).map_err(|source| MakeError::Io {
                    path: d.clone(),
                    source,
                })?;
                for e in entries {
                    let p = e
                        .map_err(|source| MakeError::Io {
                            path: d.clone(),
                            source,
                        })?
                        .path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if wanted(&p) {
                        let rel = p.strip_prefix(input).unwrap_or(&p);
                        let name = rel
                            .components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join("/");
                        out.push(InputFile { path: p, name });
                    }
                }
            }
        } else {
            return Err(MakeError::NoInput {
                path: input.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.path.cmp(&b.path)));
    out.dedup_by(|a, b| a.path == b.path);
    if out.is_empty() {
        let list: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(MakeError::NoFiles {
            what: what.to_string(),
            inputs: list.join(", "),
        });
    }
    Ok(out)
}

/// A file skipped before processing, with why.
pub type FileSkip = (String, SkipReason);

/// Where a recording's labels come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Labeling {
    /// One label for the whole recording: sliding windows.
    File(usize),
    /// EDF+ event annotations whose text is one of the classes.
    Events,
    /// The TUEV `.rec` beside the recording.
    TuevRec,
}

/// One recording's job in a windowed maker.
#[derive(Debug, Clone)]
pub struct Job {
    pub file: InputFile,
    pub subject: String,
    pub split: String,
    pub labeling: Labeling,
}

/// How windows are cut.
#[derive(Debug, Clone)]
pub struct WindowSpec {
    pub kind: String,
    pub task: String,
    pub classes: Vec<String>,
    pub channels: Vec<String>,
    pub window_patches: usize,
    /// Hop between sliding / in-event windows, seconds.
    pub hop_s: f64,
    pub windowing: String,
    pub notes: BTreeMap<String, String>,
}

/// One recording's windows: the preprocessed rows and where each window
/// starts (negative or past the end for TUEV's wrap-around). The writer cuts
/// them straight into the shard.
#[derive(Default)]
struct FileWindows {
    rows: Vec<Vec<f32>>,
    starts: Vec<i64>,
    labels: Vec<usize>,
    offsets: Vec<usize>,
    input_channel_samples: u64,
}

impl FileWindows {
    fn add(&mut self, label: usize, start: i64, offset: usize) {
        self.labels.push(label);
        self.starts.push(start);
        self.offsets.push(offset);
    }
}

fn secs_to_samples(s: f64) -> usize {
    (s * SAMPLE_RATE_HZ).round().max(0.0) as usize
}

fn cut_file(
    job: &Job,
    p: &Prepared,
    spec: &WindowSpec,
    common: &Common,
) -> Result<FileWindows, SkipReason> {
    let len = spec.window_patches * PATCH_SIZE;
    let hop = secs_to_samples(spec.hop_s).max(1);
    let first = secs_to_samples(common.skip_start_s);
    let n = p.samples();
    let mut out = FileWindows::default();
    match &job.labeling {
        Labeling::File(label) => {
            for s in windows::sliding_starts(n, len, hop, first) {
                out.add(*label, s as i64, s);
            }
            if out.labels.is_empty() {
                return Err(SkipReason::new(
                    "too short",
                    format!(
                        "{:.1} s after preprocessing (skipping {:.1} s) holds no {:.1}-s window",
                        n as f64 / SAMPLE_RATE_HZ,
                        common.skip_start_s,
                        len as f64 / SAMPLE_RATE_HZ
                    ),
                ));
            }
        }
        Labeling::Events => {
            let mut matched = 0;
            for ev in &p.events {
                let Some(label) = spec.classes.iter().position(|c| *c == ev.text) else {
                    continue;
                };
                matched += 1;
                let onset = secs_to_samples(ev.onset_s);
                let dur = secs_to_samples(ev.duration_s);
                for s in windows::event_starts(n, onset, dur, len, hop) {
                    if s >= first {
                        out.add(label, s as i64, s);
                    }
                }
            }
            if matched == 0 {
                let texts: BTreeSet<&str> = p.events.iter().map(|e| e.text.as_str()).collect();
                return Err(SkipReason::new(
                    "no labels",
                    format!(
                        "no annotation matches the classes {} (the file has: {})",
                        spec.classes.join(", "),
                        if texts.is_empty() {
                            "no annotations".to_string()
                        } else {
                            texts.into_iter().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ));
            }
            if out.labels.is_empty() {
                return Err(SkipReason::new(
                    "too short",
                    "no event window fits in the recording",
                ));
            }
        }
        Labeling::TuevRec => {
            let rec = job.file.path.with_extension("rec");
            let text = std::fs::read_to_string(&rec).map_err(|e| {
                SkipReason::new("no labels", format!("cannot read {}: {e}", rec.display()))
            })?;
            let events = tuh::parse_rec(&text)
                .map_err(|e| SkipReason::new("no labels", format!("{}: {e}", rec.display())))?;
            if events.is_empty() || n == 0 {
                return Err(SkipReason::new(
                    "no labels",
                    format!("{} lists no event", rec.display()),
                ));
            }
            let ctx = secs_to_samples(tuh::TUEV_CONTEXT_S) as i64;
            for ev in events {
                // As make_TUEV.py: first samples at or after start and end, two
                // seconds either side, wrapping around the recording.
                let s = windows::first_sample_at_or_after(ev.start_s, SAMPLE_RATE_HZ);
                let e = windows::first_sample_at_or_after(ev.end_s, SAMPLE_RATE_HZ);
                if (e - s + 2 * ctx) as usize != len {
                    return Err(SkipReason::new(
                        "no labels",
                        format!(
                            "{}: event {}–{} s is not 1 s long; TUEV windows are 5 s (2 s + event + 2 s)",
                            rec.display(),
                            ev.start_s,
                            ev.end_s
                        ),
                    ));
                }
                let start = s - ctx;
                out.add(ev.label, start, start.rem_euclid(n as i64) as usize);
            }
        }
    }
    Ok(out)
}

/// Runs a windowed maker over `jobs` and writes the dataset. Returns the summary
/// (the caller decides the exit status from it).
pub fn make_windows(
    jobs: &[Job],
    spec: &WindowSpec,
    common: &Common,
) -> Result<(Summary, Option<Meta>), MakeError> {
    let meta = Meta {
        format: FORMAT.into(),
        kind: spec.kind.clone(),
        task: spec.task.clone(),
        classes: spec.classes.clone(),
        channels: spec.channels.clone(),
        patch_size: PATCH_SIZE,
        window_patches: spec.window_patches,
        hop_s: Some(spec.hop_s),
        windowing: spec.windowing.clone(),
        preprocessing: common.preprocessing.clone(),
        subjects: Vec::new(),
        sources: Vec::new(),
        splits: BTreeMap::new(),
        command: common.command.clone(),
        skipped: Vec::new(),
        notes: spec.notes.clone(),
    };
    let mut writer =
        DatasetWriter::create(&common.output, meta, common.shard_bytes, common.overwrite)?;
    let want = Channels::Exactly(spec.channels.clone());
    let mut summary = Summary::default();
    let mut write_error: Option<FormatError> = None;
    ordered_parallel(
        jobs,
        common.threads,
        &format!("make-dataset {}", spec.kind),
        |job| -> Result<FileWindows, SkipReason> {
            let events = job.labeling == Labeling::Events;
            let p = prepare::prepare(
                &job.file.path,
                &common.channel_map,
                &want,
                &common.preprocessing,
                events,
            )?;
            let mut fw = cut_file(job, &p, spec, common)?;
            fw.input_channel_samples = p.input_channel_samples();
            fw.rows = p.data;
            Ok(fw)
        },
        |k, result| {
            if write_error.is_some() {
                return;
            }
            let job = &jobs[k];
            match result {
                Err(reason) => {
                    tracing::warn!(file = %job.file.name, reason = %reason.message, "skipped");
                    summary.skipped.push((job.file.name.clone(), reason));
                }
                Ok(fw) => {
                    let subject = writer.subject_index(&job.subject);
                    let source = writer.source_index(&job.file.name);
                    let count = fw.labels.len();
                    let len = spec.window_patches * PATCH_SIZE;
                    let (rows, starts) = (&fw.rows, &fw.starts);
                    if let Err(e) = writer.push_windows_with(
                        &job.split,
                        &fw.labels,
                        subject,
                        source,
                        &fw.offsets,
                        |k, out| windows::cut_wrapping_to(rows, starts[k], len, out),
                    ) {
                        write_error = Some(e);
                        return;
                    }
                    summary.used_files += 1;
                    summary.items += count;
                    *summary.per_split.entry(job.split.clone()).or_insert(0) += count;
                    summary.input_channel_samples += fw.input_channel_samples;
                }
            }
        },
    );
    if let Some(e) = write_error {
        return Err(e.into());
    }
    writer.meta_mut().skipped = summary
        .skipped
        .iter()
        .map(|(f, r)| Skipped {
            file: f.clone(),
            reason: r.message.clone(),
        })
        .collect();
    if summary.items == 0 {
        writer.abandon();
        return Ok((summary, None));
    }
    let meta = writer.finish()?;
    Ok((summary, Some(meta)))
}

/// eegmat options.
#[derive(Debug, Clone)]
pub struct EegmatOptions {
    pub train: SubjectSet,
    pub val: Option<SubjectSet>,
    pub test: Option<SubjectSet>,
    pub window_patches: usize,
    pub hop_s: f64,
    pub channels: Vec<String>,
}

/// `SubjectNN_K.edf` → (NN, K).
pub fn eegmat_name(name: &str) -> Option<(u32, u32)> {
    let stem = name
        .rsplit('/')
        .next()?
        .strip_suffix(".edf")
        .or_else(|| name.strip_suffix(".EDF"))?;
    let rest = stem.strip_prefix("Subject")?;
    let (num, cond) = rest.split_once('_')?;
    Some((num.parse().ok()?, cond.parse().ok()?))
}

/// Builds the eegmat jobs: labels from the file name, split from the subject
/// sets. Refuses the external test subjects (28–35) in any set or input.
pub fn eegmat_jobs(
    files: &[InputFile],
    opts: &EegmatOptions,
) -> Result<(Vec<Job>, Vec<FileSkip>), MakeError> {
    let sets: Vec<(&str, &SubjectSet)> = [
        ("train", Some(&opts.train)),
        ("val", opts.val.as_ref()),
        ("test", opts.test.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, s)| s.map(|s| (n, s)))
    .collect();
    for (name, set) in &sets {
        let external: Vec<u32> = set
            .0
            .iter()
            .copied()
            .filter(|s| EEGMAT_EXTERNAL.contains(s))
            .collect();
        if !external.is_empty() {
            return Err(MakeError::Usage(format!(
                "--{name} names subject(s) {}: eegmat subjects 28-35 are the external test set, kept outside the project; never train, select or test on them here",
                external.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    for (i, (a, sa)) in sets.iter().enumerate() {
        for (b, sb) in &sets[i + 1..] {
            if let Some(s) = sa.0.intersection(&sb.0).next() {
                return Err(MakeError::Usage(format!(
                    "subject {s} is in both --{a} and --{b}: a subject's windows must all go to one split"
                )));
            }
        }
    }
    let mut jobs = Vec::new();
    let mut skipped = Vec::new();
    for f in files {
        let Some((subject, cond)) = eegmat_name(&f.name) else {
            skipped.push((
                f.name.clone(),
                SkipReason::new(
                    "not eegmat",
                    "name is not SubjectNN_1.edf or SubjectNN_2.edf",
                ),
            ));
            continue;
        };
        if EEGMAT_EXTERNAL.contains(&subject) {
            return Err(MakeError::Usage(format!(
                "{} belongs to subject {subject}: eegmat subjects 28-35 are the external test set; remove it from the inputs",
                f.name
            )));
        }
        let label = match cond {
            1 => 0,
            2 => 1,
            _ => {
                skipped.push((
                    f.name.clone(),
                    SkipReason::new(
                        "not eegmat",
                        format!("condition _{cond} is neither _1 (rest) nor _2 (arithmetic)"),
                    ),
                ));
                continue;
            }
        };
        let Some((split, _)) = sets.iter().find(|(_, s)| s.0.contains(&subject)) else {
            skipped.push((
                f.name.clone(),
                SkipReason::new(
                    "not in a split",
                    format!("subject {subject} is in none of --train/--val/--test"),
                ),
            ));
            continue;
        };
        jobs.push(Job {
            file: f.clone(),
            subject: format!("Subject{subject:02}"),
            split: split.to_string(),
            labeling: Labeling::File(label),
        });
    }
    Ok((jobs, skipped))
}

/// The eegmat maker.
pub fn make_eegmat(
    inputs: &[PathBuf],
    opts: &EegmatOptions,
    common: &Common,
) -> Result<(Summary, Option<Meta>), MakeError> {
    let files = expand_inputs(inputs)?;
    let (jobs, pre_skipped) = eegmat_jobs(&files, opts)?;
    let mut notes = BTreeMap::new();
    notes.insert("train_subjects".into(), opts.train.to_string());
    if let Some(v) = &opts.val {
        notes.insert("val_subjects".into(), v.to_string());
    }
    if let Some(t) = &opts.test {
        notes.insert("test_subjects".into(), t.to_string());
    }
    notes.insert("skip_start_s".into(), common.skip_start_s.to_string());
    let spec = WindowSpec {
        kind: "eegmat".into(),
        task: "rest (_1) vs mental arithmetic (_2), PhysioNet eegmat".into(),
        classes: EEGMAT_CLASSES.iter().map(|s| s.to_string()).collect(),
        channels: opts.channels.clone(),
        window_patches: opts.window_patches,
        hop_s: opts.hop_s,
        windowing: format!(
            "sliding {}-s windows every {} s from {} s into each recording",
            opts.window_patches, opts.hop_s, common.skip_start_s
        ),
        notes,
    };
    finish_with_preskips(make_windows(&jobs, &spec, common), pre_skipped)
}

fn finish_with_preskips(
    result: Result<(Summary, Option<Meta>), MakeError>,
    pre: Vec<FileSkip>,
) -> Result<(Summary, Option<Meta>), MakeError> {
    let (mut summary, meta) = result?;
    let mut all = pre;
    all.append(&mut summary.skipped);
    summary.skipped = all;
    Ok((summary, meta))
}

/// Options of the annotated-EDF+ maker.
#[derive(Debug, Clone)]
pub struct AnnotatedOptions {
    /// Annotation texts used as classes (in label order); `None`: every text found.
    pub classes: Option<Vec<String>>,
    /// Electrodes; `None`: those of the first readable recording.
    pub channels: Option<Vec<String>>,
    pub window_patches: usize,
    pub hop_s: f64,
    pub val_subjects: BTreeSet<String>,
    pub test_subjects: BTreeSet<String>,
}

/// The annotated-EDF+ maker: windows from the onset of each event of a class.
pub fn make_annotated(
    inputs: &[PathBuf],
    opts: &AnnotatedOptions,
    common: &Common,
) -> Result<(Summary, Option<Meta>), MakeError> {
    let files = expand_inputs(inputs)?;
    let mut pre_skipped = Vec::new();
    // Channels: given, or the mapped electrodes of the first readable file.
    let channels = match &opts.channels {
        Some(c) => c.clone(),
        None => {
            let mut found = None;
            for f in &files {
                match prepare::read_header(&f.path).and_then(|h| {
                    prepare::choose_channels(&h.labels, &common.channel_map, &Channels::AllMapped)
                }) {
                    Ok(c) => {
                        found = Some(c.into_iter().map(|(_, e)| e.to_string()).collect());
                        break;
                    }
                    Err(_) => continue,
                }
            }
            found.ok_or_else(|| {
                MakeError::Usage(
                    "no input recording could be read to choose channels; pass --channels".into(),
                )
            })?
        }
    };
    // Classes: given, or every annotation text found (sorted).
    let classes = match &opts.classes {
        Some(c) => c.clone(),
        None => {
            let mut texts = BTreeSet::new();
            for f in &files {
                match prepare::read_events(&f.path) {
                    Ok(ev) => texts.extend(ev.into_iter().map(|e| e.text)),
                    Err(r) => pre_skipped.push((f.name.clone(), r)),
                }
            }
            if texts.is_empty() {
                return Err(MakeError::Usage(
                    "no event annotation found in the inputs; `annotated` needs EDF+ files with annotations (or pass --classes)".into(),
                ));
            }
            texts.into_iter().collect()
        }
    };
    let unreadable: BTreeSet<String> = pre_skipped.iter().map(|(f, _)| f.clone()).collect();
    let jobs: Vec<Job> = files
        .iter()
        .filter(|f| !unreadable.contains(&f.name))
        .map(|f| {
            let stem = Path::new(&f.name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let subject = split::stem_subject(&stem);
            let split = if opts.test_subjects.contains(&subject) {
                "test"
            } else if opts.val_subjects.contains(&subject) {
                "val"
            } else {
                "train"
            };
            Job {
                file: f.clone(),
                subject,
                split: split.into(),
                labeling: Labeling::Events,
            }
        })
        .collect();
    let mut notes = BTreeMap::new();
    if !opts.val_subjects.is_empty() {
        notes.insert(
            "val_subjects".into(),
            opts.val_subjects
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if !opts.test_subjects.is_empty() {
        notes.insert(
            "test_subjects".into(),
            opts.test_subjects
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    let spec = WindowSpec {
        kind: "annotated".into(),
        task: format!("EDF+ event annotations: {}", classes.join(", ")),
        classes,
        channels,
        window_patches: opts.window_patches,
        hop_s: opts.hop_s,
        windowing: format!(
            "{}-s windows from each event's onset, every {} s while inside the event; an event shorter than a window gets one window at its onset",
            opts.window_patches, opts.hop_s
        ),
        notes,
    };
    finish_with_preskips(make_windows(&jobs, &spec, common), pre_skipped)
}

/// TUAB / TUEV options.
#[derive(Debug, Clone)]
pub struct TuhOptions {
    pub root: PathBuf,
    /// TUAB: montage folder to keep (`01_tcp_ar`), `None` for all.
    pub montage: Option<String>,
    pub val_fraction: f64,
    pub seed: u64,
}

fn tuh_jobs(
    files: &[tuh::TuhFile],
    splits: &[&str],
    labeling: impl Fn(&tuh::TuhFile) -> Labeling,
) -> Vec<Job> {
    files
        .iter()
        .zip(splits)
        .map(|(f, s)| Job {
            file: InputFile {
                path: f.path.clone(),
                name: f.rel.clone(),
            },
            subject: f.subject.clone(),
            split: s.to_string(),
            labeling: labeling(f),
        })
        .collect()
}

fn tuh_channels() -> Vec<String> {
    labram_core::electrodes::TUH_STANDARD_23
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The TUAB maker.
pub fn make_tuab(opts: &TuhOptions, common: &Common) -> Result<(Summary, Option<Meta>), MakeError> {
    let files = tuh::scan_tuab(&opts.root, opts.montage.as_deref())?;
    let splits = tuh::assign_splits(
        &files,
        opts.val_fraction,
        opts.seed,
        true,
        Rounding::TrainRoundsDown,
    );
    let jobs = tuh_jobs(&files, &splits, |f| Labeling::File(f.label));
    let mut notes = BTreeMap::new();
    notes.insert("val_fraction".into(), opts.val_fraction.to_string());
    notes.insert("seed".into(), opts.seed.to_string());
    notes.insert(
        "montage".into(),
        opts.montage.clone().unwrap_or_else(|| "any".into()),
    );
    let spec = WindowSpec {
        kind: "tuab".into(),
        task: "TUH abnormal EEG: normal vs abnormal".into(),
        classes: tuh::TUAB_CLASSES.iter().map(|s| s.to_string()).collect(),
        channels: tuh_channels(),
        window_patches: tuh::TUAB_WINDOW_PATCHES,
        hop_s: tuh::TUAB_WINDOW_PATCHES as f64,
        windowing: "10-s windows back to back from the start (make_TUAB.py)".into(),
        notes,
    };
    make_windows(&jobs, &spec, common)
}

/// The TUEV maker.
pub fn make_tuev(opts: &TuhOptions, common: &Common) -> Result<(Summary, Option<Meta>), MakeError> {
    let files = tuh::scan_tuev(&opts.root)?;
    let splits = tuh::assign_splits(
        &files,
        opts.val_fraction,
        opts.seed,
        false,
        Rounding::ValRoundsDown,
    );
    let jobs = tuh_jobs(&files, &splits, |_| Labeling::TuevRec);
    let mut notes = BTreeMap::new();
    notes.insert("val_fraction".into(), opts.val_fraction.to_string());
    notes.insert("seed".into(), opts.seed.to_string());
    let spec = WindowSpec {
        kind: "tuev".into(),
        task: "TUH EEG events: spsw, gped, pled, eyem, artf, bckg".into(),
        classes: tuh::TUEV_CLASSES.iter().map(|s| s.to_string()).collect(),
        channels: tuh_channels(),
        window_patches: tuh::TUEV_WINDOW_PATCHES,
        hop_s: tuh::TUEV_WINDOW_PATCHES as f64,
        windowing: "one 5-s window per .rec row: 2 s before the event to 2 s after, wrapping around the recording (make_TUEV.py); `offsets` hold the start modulo the length".into(),
        notes,
    };
    make_windows(&jobs, &spec, common)
}

/// Options of the pretraining store.
#[derive(Debug, Clone)]
pub struct PretrainOptions {
    /// Seconds dropped at the end of every recording (the official SEED maker drops 10).
    pub drop_last_s: f64,
}

/// The pretraining-store maker: every mapped electrode of every recording.
pub fn make_pretrain_h5(
    inputs: &[PathBuf],
    opts: &PretrainOptions,
    common: &Common,
) -> Result<Summary, MakeError> {
    let files = expand_inputs(inputs)?;
    if common.output.exists() && !common.overwrite {
        return Err(MakeError::Usage(format!(
            "{} exists; pass --overwrite or choose another --output",
            common.output.display()
        )));
    }
    let tmp = common.output.with_extension("h5.partial");
    let mut writer = StoreWriter::create(&tmp, &common.preprocessing)?;
    let mut summary = Summary::default();
    let mut store_error = None;
    let skip = secs_to_samples(common.skip_start_s);
    let drop_last = secs_to_samples(opts.drop_last_s);
    ordered_parallel(
        &files,
        common.threads,
        "make-dataset pretrain-h5",
        |f| -> Result<Prepared, SkipReason> {
            let mut p = prepare::prepare(
                &f.path,
                &common.channel_map,
                &Channels::AllMapped,
                &common.preprocessing,
                false,
            )?;
            let n = p.samples();
            if n <= skip + drop_last {
                return Err(SkipReason::new(
                    "too short",
                    format!(
                        "{:.1} s after preprocessing, nothing left after trimming",
                        n as f64 / SAMPLE_RATE_HZ
                    ),
                ));
            }
            for row in &mut p.data {
                row.truncate(n - drop_last);
                row.drain(..skip);
            }
            Ok(p)
        },
        |k, result| {
            if store_error.is_some() {
                return;
            }
            let f = &files[k];
            match result {
                Err(reason) => {
                    tracing::warn!(file = %f.name, reason = %reason.message, "skipped");
                    summary.skipped.push((f.name.clone(), reason));
                }
                Ok(p) => {
                    let stem = Path::new(&f.name)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let group = writer.unique_name(&stem);
                    if let Err(e) = writer.add(&group, &f.name, &p.channels, &p.data) {
                        store_error = Some(e);
                        return;
                    }
                    summary.used_files += 1;
                    summary.items += 1;
                    summary.input_channel_samples += p.input_channel_samples();
                    *summary.per_split.entry("recordings".into()).or_insert(0) += 1;
                }
            }
        },
    );
    if let Some(e) = store_error {
        return Err(e.into());
    }
    writer.finish()?;
    if summary.items == 0 {
        let _ = std::fs::remove_file(&tmp);
        return Ok(summary);
    }
    std::fs::rename(&tmp, &common.output).map_err(|source| MakeError::Io {
        path: common.output.clone(),
        source,
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<InputFile> {
        names
            .iter()
            .map(|n| InputFile {
                path: PathBuf::from(n),
                name: n.to_string(),
            })
            .collect()
    }

    fn opts(train: &str, val: Option<&str>, test: Option<&str>) -> EegmatOptions {
        EegmatOptions {
            train: train.parse().unwrap(),
            val: val.map(|v| v.parse().unwrap()),
            test: test.map(|v| v.parse().unwrap()),
            window_patches: 4,
            hop_s: 2.0,
            channels: EEGMAT_CHANNELS.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn eegmat_names_labels_and_splits() {
        assert_eq!(eegmat_name("Subject07_2.edf"), Some((7, 2)));
        assert_eq!(eegmat_name("eegmat/Subject22_1.edf"), Some((22, 1)));
        assert_eq!(eegmat_name("S001R04.edf"), None);
        let f = files(&[
            "Subject00_1.edf",
            "Subject00_2.edf",
            "Subject05_1.edf",
            "Subject09_2.edf",
            "S001R04.edf",
        ]);
        let (jobs, skipped) = eegmat_jobs(&f, &opts("0-3", Some("4-5"), None)).unwrap();
        let got: Vec<(&str, &str, Labeling)> = jobs
            .iter()
            .map(|j| (j.subject.as_str(), j.split.as_str(), j.labeling.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Subject00", "train", Labeling::File(0)),
                ("Subject00", "train", Labeling::File(1)),
                ("Subject05", "val", Labeling::File(0)),
            ]
        );
        let cats: Vec<&str> = skipped.iter().map(|(_, r)| r.category).collect();
        assert_eq!(cats, vec!["not in a split", "not eegmat"]);
    }

    #[test]
    fn eegmat_refuses_the_external_test_set_and_overlaps() {
        let f = files(&["Subject00_1.edf"]);
        let e = eegmat_jobs(&f, &opts("0-21", Some("22-24"), Some("25-29"))).unwrap_err();
        assert!(e.to_string().contains("28, 29"), "{e}");
        assert!(e.to_string().contains("external test set"), "{e}");
        let e = eegmat_jobs(&files(&["Subject30_1.edf"]), &opts("0-21", None, None)).unwrap_err();
        assert!(e.to_string().contains("Subject30_1.edf"), "{e}");
        let e = eegmat_jobs(&f, &opts("0-21", Some("21-24"), None)).unwrap_err();
        assert!(
            e.to_string()
                .contains("subject 21 is in both --train and --val"),
            "{e}"
        );
    }
}
