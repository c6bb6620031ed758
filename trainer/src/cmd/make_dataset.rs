//! `labram-trainer make-dataset <kind>`: recordings in, a dataset out.
//!
//! Every kind reads recordings with the daemon crate's reader, maps channel
//! labels to electrodes, applies the paper's preprocessing in the mode asked
//! for (`zero-phase` as the official MNE makers, or `causal`, the daemon's live
//! chain) and records that preprocessing in the dataset. Files are processed in
//! parallel; a bad file is reported and skipped, and the run fails only when
//! nothing usable was written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use labram_core::card::{FilterMode, Preprocessing, SAMPLE_RATE_HZ};
use labram_trainer::data::makers::{self, Common, EEGMAT_CHANNELS};
use labram_trainer::data::runner::{default_threads, Summary};
use labram_trainer::data::split::SubjectSet;
use labram_trainer::data::xdf;

/// Dataset kinds.
#[derive(Subcommand, Debug)]
pub enum Kind {
    /// Pretraining store: HDF5 in the official layout, every electrode of every recording.
    ///
    /// One group per recording, dataset `eeg` [channels, samples] float32 in µV at 200 Hz,
    /// chunks (channels, 200), attributes lFreq, hFreq, rsFreq and chOrder (upper-case
    /// electrode names), as the official make_h5dataset_for_pretrain.py; h5py reads it.
    ///
    /// Example:
    ///   labram-trainer make-dataset pretrain-h5 --output store.h5 ../shared/data/eegmat
    #[command(name = "pretrain-h5", verbatim_doc_comment)]
    PretrainH5(PretrainArgs),
    /// TUH Abnormal (TUAB), as the official make_TUAB.py.
    ///
    /// Reads <root>/{train,eval}/{normal,abnormal}/01_tcp_ar/*.edf; keeps the 23 channels of
    /// chOrder_standard in order; 10-s windows back to back; label 0 normal, 1 abnormal;
    /// eval → test; per class, 20 % of the train subjects → val (subject = name up to `_`).
    ///
    /// Example:
    ///   labram-trainer make-dataset tuab --root TUH_Abnormal/v3.0.0/edf --output out/tuab
    #[command(verbatim_doc_comment)]
    Tuab(TuhArgs),
    /// TUH Events (TUEV), as the official make_TUEV.py.
    ///
    /// Reads <root>/{train,eval}/**/<name>.edf with <name>.rec beside each; keeps the 23
    /// channels of chOrder_standard; one 5-s window per .rec row (2 s before the event to
    /// 2 s after, wrapping around the recording); classes spsw, gped, pled, eyem, artf,
    /// bckg; eval → test; 20 % of the train subjects → val.
    ///
    /// Example:
    ///   labram-trainer make-dataset tuev --root TUH_Event/v2.0.0/edf --output out/tuev
    #[command(verbatim_doc_comment)]
    Tuev(TuhArgs),
    /// Any EDF+ with event annotations: windows labelled with the annotation text.
    ///
    /// A window starts at each event's onset (and every --hop-s while inside the event);
    /// an event shorter than a window still gets one window. Subjects come from the file
    /// name (`S001R04` → `S001`) and go to --val-subjects / --test-subjects, else train.
    ///
    /// Example (PhysioNet eegmmidb, imagined left/right fist, T0/T1/T2):
    ///   labram-trainer make-dataset annotated --output out/mi ../shared/data/eegmmidb
    #[command(verbatim_doc_comment)]
    Annotated(AnnotatedArgs),
    /// PhysioNet eegmat (mental arithmetic), split by subject as given.
    ///
    /// Label from the file name: SubjectNN_1 rest (0), SubjectNN_2 arithmetic (1); the 19
    /// scalp electrodes; sliding windows. Subjects 28-35 are the external test set, kept
    /// outside the project, and are refused.
    ///
    /// Example (the training data of the shipped model):
    ///   labram-trainer make-dataset eegmat --mode causal --train 0-21 --val 22-24 \
    ///     --test 25-27 --window-patches 4 --hop-s 2 --output out/eegmat-causal \
    ///     ../shared/data/eegmat
    #[command(verbatim_doc_comment)]
    Eegmat(EegmatArgs),
    /// XDF recordings (LabRecorder): windows locked to the markers of a marker stream.
    ///
    /// Every file is read as pyxdf reads it (clock synchronisation, dejittering), so the
    /// markers and the EEG share one clock. A marker whose text is one of --classes opens
    /// one window from --tmin to --tmax seconds after it, starting at the EEG sample
    /// nearest marker + tmin; with --blocks, a marker opens a block of its class until
    /// the next marker (or the end of the EEG), cut into windows every --hop-s. The EEG
    /// stream's channel labels (desc/channels/channel/label) map to electrodes as for
    /// EDF files; units (desc/.../unit) are converted to µV. Windows that run past the
    /// end of the EEG are dropped and counted; a class never seen is warned about.
    /// Subjects come from the file name (`sub01_rest.xdf` → `sub01`) and go to
    /// --val-subjects / --test-subjects, else train.
    ///
    /// Example (record one with core/tests/xdf_record.py, see the README):
    ///   labram-trainer make-dataset xdf --eeg-stream eegmat-demo \
    ///     --marker-stream eegmat-demo-markers --classes rest,arithmetic \
    ///     --tmin 0 --tmax 4 --output out/xdf rec.xdf
    /// Blocks of 4-s windows every 2 s, the daemon's causal chain:
    ///   labram-trainer make-dataset xdf --blocks --hop-s 2 --mode causal ... rec.xdf
    #[command(verbatim_doc_comment)]
    Xdf(XdfArgs),
}

/// Filtering mode on the command line.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The paper's offline filters (MNE's zero-phase FIR band-pass and notch, FFT resampling).
    ZeroPhase,
    /// The daemon's online chain (IIR band-pass and notch, polyphase resampler):
    /// train on what the daemon will feed the model live.
    Causal,
}

/// Options shared by every kind.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Filtering: `zero-phase` (the paper's offline MNE chain) or `causal` (the daemon's live chain).
    #[arg(long, value_enum, default_value = "zero-phase")]
    pub mode: Mode,
    /// Band-pass edges in Hz, `LOW,HIGH`, or `off`.
    #[arg(long, default_value = "0.1,75")]
    pub band: String,
    /// Notch frequency in Hz (50 or 60), or `off`.
    #[arg(long, default_value = "50")]
    pub notch: String,
    /// Seconds dropped at the start of every recording before windows are cut
    /// (e.g. the causal filters' start-up transient).
    #[arg(long, default_value_t = 0.0)]
    pub skip_start_s: f64,
    /// Label → electrode override, `LABEL=ELECTRODE` (or `LABEL=` to drop a channel); repeatable.
    #[arg(long = "map", value_name = "LABEL=ELECTRODE")]
    pub map: Vec<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing output.
    #[arg(long)]
    pub overwrite: bool,
}

/// Window-dataset output options.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output directory (safetensors shards + meta.json).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Largest shard size in MiB (each split buffers up to one shard in memory).
    #[arg(long, default_value_t = 512)]
    pub shard_mb: usize,
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Output HDF5 file.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Seconds dropped at the end of every recording (the official SEED maker drops 10).
    #[arg(long, default_value_t = 0.0)]
    pub drop_last_s: f64,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Recordings (.edf, .bdf) or folders holding them (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TuhArgs {
    /// Corpus root: the folder holding `train/` and `eval/`.
    #[arg(long)]
    pub root: PathBuf,
    /// TUAB only: montage folder to read (the official maker reads `01_tcp_ar`); `any` for all.
    #[arg(long, default_value = "01_tcp_ar")]
    pub montage: String,
    /// Share of the train subjects held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Seed of the subject shuffle (TUEV's official seed is 4523).
    #[arg(long, default_value_t = 4523)]
    pub seed: u64,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct AnnotatedArgs {
    /// Annotation texts to use as classes, comma-separated, in label order
    /// (default: every text found, sorted).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Electrodes to keep, comma-separated, in order (default: every electrode
    /// of the first recording).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Patches (seconds) per window, 1-16.
    #[arg(long, default_value_t = 4)]
    pub window_patches: usize,
    /// Hop between windows inside one event, seconds (default: one window length).
    #[arg(long)]
    pub hop_s: Option<f64>,
    /// Subjects (file-name prefix, e.g. `S001`) for validation, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub val_subjects: Vec<String>,
    /// Subjects for test, comma-separated; all others train.
    #[arg(long, value_delimiter = ',')]
    pub test_subjects: Vec<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub common: CommonArgs,
    /// EDF+ recordings or folders holding them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EegmatArgs {
    /// Training subjects, e.g. `0-21`.
    #[arg(long)]
    pub train: SubjectSet,
    /// Validation subjects, e.g. `22-24`.
    #[arg(long)]
    pub val: Option<SubjectSet>,
    /// Test subjects, e.g. `25-27`.
    #[arg(long)]
    pub test: Option<SubjectSet>,
    /// Patches (seconds) per window, 1-16.
    #[arg(long, default_value_t = 4)]
    pub window_patches: usize,
    /// Hop between windows, seconds.
    #[arg(long, default_value_t = 2.0)]
    pub hop_s: f64,
    /// Electrodes, comma-separated, in order (default: the 19 scalp electrodes).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub common: CommonArgs,
    /// The eegmat recordings (SubjectNN_1.edf, SubjectNN_2.edf) or their folder.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct XdfArgs {
    /// Name of the EEG stream (its `<name>`, as LabRecorder lists it).
    #[arg(long)]
    pub eeg_stream: String,
    /// Name of the marker stream.
    #[arg(long)]
    pub marker_stream: String,
    /// Marker texts used as classes, comma-separated, in label order (e.g. `rest,arithmetic`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub classes: Vec<String>,
    /// Window start relative to the marker, seconds (may be negative).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub tmin: f64,
    /// Window end relative to the marker, seconds: tmax − tmin is the window
    /// length, a whole number of seconds (1-s patches), 1-16.
    #[arg(long, default_value_t = 4.0, allow_negative_numbers = true)]
    pub tmax: f64,
    /// A marker opens a block of its class lasting until the next marker, cut
    /// into windows every --hop-s (instead of one window per marker).
    #[arg(long)]
    pub blocks: bool,
    /// Hop between windows inside a block, seconds (default: one window length).
    #[arg(long, requires = "blocks")]
    pub hop_s: Option<f64>,
    /// Electrodes to keep, comma-separated, in order (default: every electrode
    /// of the first recording's EEG stream).
    #[arg(long, value_delimiter = ',')]
    pub channels: Option<Vec<String>>,
    /// Subjects (file-name prefix, e.g. `sub01`) for validation, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub val_subjects: Vec<String>,
    /// Subjects for test, comma-separated; all others train.
    #[arg(long, value_delimiter = ',')]
    pub test_subjects: Vec<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub common: CommonArgs,
    /// XDF recordings or folders holding them (searched for .xdf).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

fn parse_off(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "off" | "none" | "no" | "0"
    )
}

/// The preprocessing record from the command line.
pub fn preprocessing(c: &CommonArgs) -> anyhow::Result<Preprocessing> {
    let bandpass_hz = if parse_off(&c.band) {
        None
    } else {
        let parts: Vec<&str> = c.band.split(',').collect();
        let nums: Vec<f64> = parts
            .iter()
            .filter_map(|p| p.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .collect();
        if parts.len() != 2 || nums.len() != 2 || nums[0] <= 0.0 || nums[1] <= nums[0] {
            bail!(
                "--band `{}` is not `LOW,HIGH` with 0 < LOW < HIGH (e.g. `0.1,75`) or `off`",
                c.band
            );
        }
        Some([nums[0], nums[1]])
    };
    let notch_hz = if parse_off(&c.notch) {
        None
    } else {
        Some(
            c.notch
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| *f > 0.0)
                .with_context(|| {
                    format!("--notch `{}` is not a frequency (50, 60) or `off`", c.notch)
                })?,
        )
    };
    Ok(Preprocessing {
        mode: match c.mode {
            Mode::ZeroPhase => FilterMode::ZeroPhase,
            Mode::Causal => FilterMode::Causal,
        },
        bandpass_hz,
        notch_hz,
        sample_rate_hz: SAMPLE_RATE_HZ,
        unit: "uV".into(),
    })
}

fn channel_map(c: &CommonArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for item in &c.map {
        let (label, electrode) = item.split_once('=').with_context(|| {
            format!("--map `{item}` is not LABEL=ELECTRODE (or LABEL= to drop)")
        })?;
        m.insert(label.to_string(), electrode.trim().to_string());
    }
    Ok(m)
}

/// The command line as typed, for the dataset's metadata (program name only,
/// no local path).
fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.first_mut() {
        *first = "labram-trainer".into();
    }
    args.join(" ")
}

fn common(c: &CommonArgs, output: PathBuf, shard_mb: usize) -> anyhow::Result<Common> {
    if c.skip_start_s.is_nan() || c.skip_start_s < 0.0 {
        bail!("--skip-start-s must be ≥ 0 seconds");
    }
    Ok(Common {
        output,
        preprocessing: preprocessing(c)?,
        threads: c.threads.unwrap_or_else(default_threads).max(1),
        overwrite: c.overwrite,
        shard_bytes: shard_mb.max(1) << 20,
        command: command_line(),
        channel_map: channel_map(c)?,
        skip_start_s: c.skip_start_s,
    })
}

fn check_window(patches: usize, hop_s: f64) -> anyhow::Result<()> {
    if patches == 0 || patches > labram_core::card::MAX_PATCHES {
        bail!(
            "--window-patches {patches}: LaBraM takes 1-{} patches of 1 s",
            labram_core::card::MAX_PATCHES
        );
    }
    if hop_s.is_nan() || hop_s <= 0.0 {
        bail!("--hop-s {hop_s}: the hop must be > 0 seconds");
    }
    Ok(())
}

/// Prints the summary; fails when nothing usable was written.
fn conclude(
    summary: &Summary,
    what: &str,
    output: &std::path::Path,
    elapsed: std::time::Duration,
) -> anyhow::Result<()> {
    eprint!("{}", summary.render(what));
    if summary.items == 0 {
        bail!(
            "nothing usable was written to {} (see the skipped files above)",
            output.display()
        );
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "{:.1} s, {:.2e} input channel-samples/s; output: {}",
        secs,
        summary.input_channel_samples as f64 / secs,
        output.display()
    );
    Ok(())
}

pub fn run(kind: Kind) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    match kind {
        Kind::PretrainH5(a) => {
            let common = common(&a.common, a.output.clone(), 1024)?;
            let opts = makers::PretrainOptions {
                drop_last_s: a.drop_last_s.max(0.0),
            };
            let summary = makers::make_pretrain_h5(&a.inputs, &opts, &common)?;
            conclude(&summary, "recordings", &a.output, t0.elapsed())
        }
        Kind::Tuab(a) | Kind::Tuev(a) if !(0.0..1.0).contains(&a.val_fraction) => {
            bail!("--val-fraction {} must be in [0, 1)", a.val_fraction)
        }
        Kind::Tuab(a) => {
            let common = common(&a.common, a.out.output.clone(), a.out.shard_mb)?;
            let opts = tuh_options(&a);
            let (summary, _) = makers::make_tuab(&opts, &common)?;
            conclude(&summary, "windows", &a.out.output, t0.elapsed())
        }
        Kind::Tuev(a) => {
            let common = common(&a.common, a.out.output.clone(), a.out.shard_mb)?;
            let opts = tuh_options(&a);
            let (summary, _) = makers::make_tuev(&opts, &common)?;
            conclude(&summary, "windows", &a.out.output, t0.elapsed())
        }
        Kind::Annotated(a) => {
            let hop_s = a.hop_s.unwrap_or(a.window_patches as f64);
            check_window(a.window_patches, hop_s)?;
            let common = common(&a.common, a.out.output.clone(), a.out.shard_mb)?;
            let opts = makers::AnnotatedOptions {
                classes: a.classes.clone(),
                channels: a.channels.clone(),
                window_patches: a.window_patches,
                hop_s,
                val_subjects: a.val_subjects.iter().cloned().collect::<BTreeSet<_>>(),
                test_subjects: a.test_subjects.iter().cloned().collect::<BTreeSet<_>>(),
            };
            let (summary, _) = makers::make_annotated(&a.inputs, &opts, &common)?;
            conclude(&summary, "windows", &a.out.output, t0.elapsed())
        }
        Kind::Eegmat(a) => {
            check_window(a.window_patches, a.hop_s)?;
            let common = common(&a.common, a.out.output.clone(), a.out.shard_mb)?;
            let opts = makers::EegmatOptions {
                train: a.train.clone(),
                val: a.val.clone(),
                test: a.test.clone(),
                window_patches: a.window_patches,
                hop_s: a.hop_s,
                channels: a
                    .channels
                    .clone()
                    .unwrap_or_else(|| EEGMAT_CHANNELS.iter().map(|s| s.to_string()).collect()),
            };
            let (summary, _) = makers::make_eegmat(&a.inputs, &opts, &common)?;
            conclude(&summary, "windows", &a.out.output, t0.elapsed())
        }
        Kind::Xdf(a) => {
            let common = common(&a.common, a.out.output.clone(), a.out.shard_mb)?;
            let opts = xdf::XdfOptions {
                eeg_stream: a.eeg_stream.clone(),
                marker_stream: a.marker_stream.clone(),
                classes: a.classes.clone(),
                tmin_s: a.tmin,
                tmax_s: a.tmax,
                blocks: a.blocks,
                hop_s: a.hop_s.unwrap_or(a.tmax - a.tmin),
                channels: a.channels.clone(),
                val_subjects: a.val_subjects.iter().cloned().collect::<BTreeSet<_>>(),
                test_subjects: a.test_subjects.iter().cloned().collect::<BTreeSet<_>>(),
            };
            let (summary, report, _) = xdf::make_xdf(&a.inputs, &opts, &common)?;
            let unseen = report.unseen(&opts.classes);
            if !unseen.is_empty() && summary.used_files > 0 {
                eprintln!(
                    "warning: no marker of class {} in the files used (markers per class: {}); check --classes against the marker texts",
                    unseen.join(", "),
                    report.marker_counts(&opts.classes)
                );
            }
            eprint!("{}", report.render(&opts.classes));
            conclude(&summary, "windows", &a.out.output, t0.elapsed())
        }
    }
}

fn tuh_options(a: &TuhArgs) -> makers::TuhOptions {
    makers::TuhOptions {
        root: a.root.clone(),
        montage: (a.montage != "any").then(|| a.montage.clone()),
        val_fraction: a.val_fraction,
        seed: a.seed,
    }
}
