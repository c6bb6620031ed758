//! Sessions under the adaptation protocols of [`labram_core::adapt`]: a
//! person's recordings streamed as one signal through the daemon's causal
//! chain, cut on the daemon's window grid, turned into features, and fed
//! window by window to the very [`Session`] the daemon runs.
//!
//! Layout of the stream. A session is its files in order (`rest`, then
//! `arithmetic`); each file's first `holdout` seconds are what a protocol may
//! learn from (under `baseline` the rest span is the unlabelled baseline, under
//! `calibration` both spans are the labelled calibration blocks) and the
//! windows after them are scored, the same windows under every protocol. A
//! live calibrated session runs its calibration blocks first, so the stream
//! puts the holdout spans first (rest 0–60 s, arithmetic 0–20 s), then the
//! remainder of each file in order: every scored window then comes after
//! everything the adaptation learns from, as causality demands. Windows that
//! straddle two spans are fed (the daemon would see them) but never learned
//! from nor scored.

use std::collections::BTreeMap;
use std::path::PathBuf;

use labram_core::adapt::{
    AdaptError, Answer, BaselineStats, FeatureError, FeatureExtractor, FeatureSpace, Mode,
    PopulationModel, Session, SessionSpec,
};
use labram_core::card::{Preprocessing, PATCH_SIZE, SAMPLE_RATE_HZ};
use labram_core::window::{self, Stage, StageConfig, StageOutput};

use super::metrics::{self, MetricError};
use crate::data::prepare::{self, Channels};

/// Windows per feature-extraction call (one model batch).
const BATCH: usize = 32;
/// Slack on time comparisons (window ends are sample counts / 200 Hz).
const EPS: f64 = 1e-6;

/// Errors of session evaluation; each names the session or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("--session `{spec}`: {message}; write CLASS=FILE,CLASS=FILE (e.g. rest=Subject25_1.edf,arithmetic=Subject25_2.edf)")]
    Spec { spec: String, message: String },
    #[error("--holdout `{spec}`: {message}; write CLASS=SECONDS,... (e.g. rest=60,arithmetic=20)")]
    Holdout { spec: String, message: String },
    #[error("{file}: {message}")]
    Recording { file: String, message: String },
    #[error("session {session}")]
    Adapt {
        session: String,
        #[source]
        source: AdaptError,
    },
    #[error("session {session}")]
    Features {
        session: String,
        #[source]
        source: FeatureError,
    },
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("{0}")]
    Setup(String),
}

/// One file of a session and the class of what it records.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub class: usize,
    pub path: PathBuf,
}

/// Parses `rest=a.edf,arithmetic=b.edf` against the class names.
pub fn parse_session(spec: &str, classes: &[String]) -> Result<Vec<Block>, SessionError> {
    let err = |message: String| SessionError::Spec {
        spec: spec.to_string(),
        message,
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (class, file) = part
            .split_once('=')
            .ok_or_else(|| err(format!("`{part}` is not CLASS=FILE")))?;
        let class = class_index(classes, class).map_err(err)?;
        out.push(Block {
            class,
            path: PathBuf::from(file.trim()),
        });
    }
    if out.is_empty() {
        return Err(err("names no file".into()));
    }
    Ok(out)
}

/// Parses `rest=60,arithmetic=20` into seconds per class (classes not named: 0).
pub fn parse_holdout(spec: &str, classes: &[String]) -> Result<Vec<f64>, SessionError> {
    let err = |message: String| SessionError::Holdout {
        spec: spec.to_string(),
        message,
    };
    let mut out = vec![0.0; classes.len()];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (class, secs) = part
            .split_once('=')
            .ok_or_else(|| err(format!("`{part}` is not CLASS=SECONDS")))?;
        let k = class_index(classes, class).map_err(err)?;
        out[k] = secs
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| err(format!("`{secs}` is not a number of seconds ≥ 0")))?;
    }
    Ok(out)
}

fn class_index(classes: &[String], name: &str) -> Result<usize, String> {
    classes
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            format!(
                "class `{}` is not one of {}",
                name.trim(),
                classes.join(", ")
            )
        })
}

/// How every session is read, preprocessed and windowed.
#[derive(Debug, Clone)]
pub struct Layout {
    pub classes: Vec<String>,
    /// Electrodes, in the order windows hold them.
    pub channels: Vec<String>,
    /// Label → electrode overrides.
    pub channel_map: BTreeMap<String, String>,
    /// The daemon's chain (always causal: it is the live one).
    pub preprocessing: Preprocessing,
    /// Window length in samples at 200 Hz.
    pub window_len: usize,
    /// Hop between windows in seconds, counted in input frames as the daemon does.
    pub hop_s: f64,
    /// Seconds of each class (by index) at the start of each file that a
    /// protocol may learn from; the windows after them are scored.
    pub holdout_s: Vec<f64>,
}

impl Layout {
    /// Window length in seconds.
    pub fn window_s(&self) -> f64 {
        self.window_len as f64 / SAMPLE_RATE_HZ
    }
}

/// A span of the stream: part of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub class: usize,
    /// A holdout span (learned from) or a remainder (scored).
    pub holdout: bool,
    pub start_s: f64,
    pub end_s: f64,
}

/// Input frames pushed into the window stage at a time: a stream arrives in
/// chunks; the causal chain's output does not depend on their size.
const STREAM_CHUNK: usize = 64;

/// A session streamed through the daemon's window stage.
#[derive(Debug, Clone)]
pub struct Streamed {
    pub name: String,
    pub segments: Vec<Segment>,
    /// Every window the stage cut, in order.
    pub windows: Vec<StreamedWindow>,
}

/// One window of a streamed session.
#[derive(Debug, Clone)]
pub struct StreamedWindow {
    /// `[channels][patches × 200]` µV, as the daemon classifies it.
    pub data: Vec<f32>,
    /// Session time of the window's end ([`window::end_seconds`]), the `end_s`
    /// the daemon gives the session too.
    pub end_s: f64,
    /// The segment the window lies wholly inside, if any.
    pub segment: Option<usize>,
}

/// Reads a session's files, lays them out (holdout spans first, then the
/// remainders), runs the daemon's causal chain over the whole stream and cuts
/// the daemon's window grid.
pub fn stream(name: &str, blocks: &[Block], layout: &Layout) -> Result<Streamed, SessionError> {
    let want = Channels::Exactly(layout.channels.clone());
    let mut raws = Vec::with_capacity(blocks.len());
    for b in blocks {
        let file = b.path.display().to_string();
        let raw = prepare::read_raw(&b.path, &layout.channel_map, &want, false).map_err(|r| {
            SessionError::Recording {
                file: file.clone(),
                message: r.message,
            }
        })?;
        raws.push((b, file, raw));
    }
    let rate = raws[0].2.rate_hz;
    if let Some((_, file, r)) = raws.iter().find(|(_, _, r)| r.rate_hz != rate) {
        return Err(SessionError::Recording {
            file: file.clone(),
            message: format!(
                "sampled at {} Hz but the session's first file at {rate} Hz: a stream has one rate",
                r.rate_hz
            ),
        });
    }
    // (file, first frame, end frame, holdout): holdout spans first.
    let mut pieces = Vec::new();
    for (k, (b, _, r)) in raws.iter().enumerate() {
        let n = r.signals[0].len();
        let h = ((layout.holdout_s[b.class] * rate).round() as usize).min(n);
        pieces.push((k, 0, h, true));
    }
    for (k, (b, _, r)) in raws.iter().enumerate() {
        let n = r.signals[0].len();
        let h = ((layout.holdout_s[b.class] * rate).round() as usize).min(n);
        pieces.push((k, h, n, false));
    }
    let mut signals = vec![Vec::new(); layout.channels.len()];
    let mut segments = Vec::new();
    for (k, from, to, holdout) in pieces.into_iter().filter(|p| p.2 > p.1) {
        let start_s = signals[0].len() as f64 / rate;
        for (dst, src) in signals.iter_mut().zip(&raws[k].2.signals) {
            dst.extend_from_slice(&src[from..to]);
        }
        segments.push(Segment {
            class: raws[k].0.class,
            holdout,
            start_s,
            end_s: signals[0].len() as f64 / rate,
        });
    }
    let setup = |e: String| SessionError::Recording {
        file: raws[0].1.clone(),
        message: e,
    };
    // The daemon's window stage itself, fed the stream as the daemon would
    // receive it: the same causal chain, hop grid and window cut.
    let patches = layout.window_len / PATCH_SIZE;
    let mut stage = Stage::new(StageConfig {
        n_input_channels: signals.len(),
        selection: (0..signals.len()).collect(),
        to_microvolts: vec![1.0; signals.len()],
        input_rate_hz: rate,
        patches,
        hop_frames: window::hop_frames(layout.hop_s, rate),
        preprocessing: layout.preprocessing.live(),
    })
    .map_err(|e| setup(e.to_string()))?;
    let window_s = layout.window_s();
    let ratio = stage.ratio();
    let mut windows = Vec::new();
    stage.push_signals(&signals, STREAM_CHUNK, |out| {
        if let StageOutput::Window(w) = out {
            let t1 = window::end_seconds(w.frames_in, ratio);
            let t0 = t1 - window_s;
            let seg = segments
                .iter()
                .position(|g| t0 >= g.start_s - EPS && t1 <= g.end_s + EPS);
            windows.push(StreamedWindow {
                data: w.data.clone(),
                end_s: t1,
                segment: seg,
            });
        }
    });
    Ok(Streamed {
        name: name.to_string(),
        segments,
        windows,
    })
}

/// A session's windows as features, ready for the protocols.
#[derive(Debug, Clone)]
pub struct SessionFeatures {
    pub name: String,
    pub space: FeatureSpace,
    pub rows: Vec<Vec<f64>>,
    /// Session time of each window's last sample.
    pub end_s: Vec<f64>,
    pub segment: Vec<Option<usize>>,
    pub segments: Vec<Segment>,
}

impl SessionFeatures {
    /// The class of window `i` if it lies inside one span.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.segment[i].map(|g| self.segments[g].class)
    }

    /// Whether window `i` is scored (inside a remainder span).
    pub fn scored(&self, i: usize) -> bool {
        self.segment[i].is_some_and(|g| !self.segments[g].holdout)
    }

    /// Two feature sets of the same windows side by side.
    pub fn concat(&self, other: &SessionFeatures) -> SessionFeatures {
        SessionFeatures {
            space: FeatureSpace::concat(&[self.space.clone(), other.space.clone()]),
            rows: self
                .rows
                .iter()
                .zip(&other.rows)
                .map(|(a, b)| a.iter().chain(b).copied().collect())
                .collect(),
            ..self.clone()
        }
    }
}

/// Features of every window of a streamed session, in batches.
pub fn features(
    s: &Streamed,
    extractor: &mut dyn FeatureExtractor,
) -> Result<SessionFeatures, SessionError> {
    let mut rows = Vec::with_capacity(s.windows.len());
    let mut buf = Vec::new();
    for chunk in s.windows.chunks(BATCH) {
        buf.clear();
        for w in chunk {
            buf.extend_from_slice(&w.data);
        }
        rows.extend(
            extractor
                .extract_batch(&buf, chunk.len())
                .map_err(|source| SessionError::Features {
                    session: s.name.clone(),
                    source,
                })?,
        );
    }
    Ok(SessionFeatures {
        name: s.name.clone(),
        space: extractor.space(),
        rows,
        end_s: s.windows.iter().map(|w| w.end_s).collect(),
        segment: s.windows.iter().map(|w| w.segment).collect(),
        segments: s.segments.clone(),
    })
}

/// The answer to one window a session was fed.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowAnswer {
    /// Session time of the window's last sample.
    pub end_s: f64,
    /// The class of the span it lies in (`None`: it straddles two).
    pub truth: Option<usize>,
    pub scored: bool,
    pub answer: Answer,
}

/// Labels and probabilities of scored windows, and the answer to every window
/// (for `--predictions`, and to compare with the daemon's).
#[derive(Debug, Clone, Default)]
pub struct Scores {
    pub labels: Vec<usize>,
    pub probs: Vec<Vec<f64>>,
    pub windows: Vec<WindowAnswer>,
}

impl Scores {
    pub fn extend(&mut self, other: &Scores) {
        self.labels.extend_from_slice(&other.labels);
        self.probs.extend(other.probs.iter().cloned());
        self.windows.extend(other.windows.iter().cloned());
    }

    /// Balanced accuracy (arg-max; 0.5 threshold for two classes).
    pub fn balanced_accuracy(&self) -> Result<f64, MetricError> {
        let classes = self.probs.first().map_or(2, Vec::len);
        metrics::balanced_accuracy(&self.labels, &metrics::argmax_rows(&self.probs), classes)
    }

    /// AUROC of class 1's probability (two classes only).
    pub fn auroc(&self) -> Option<Result<f64, MetricError>> {
        (self.probs.first().map(Vec::len) == Some(2)).then(|| {
            let p1: Vec<f64> = self.probs.iter().map(|r| r[1]).collect();
            metrics::roc_auc(&self.labels, &p1)
        })
    }
}

/// Feeds a session, window by window in time order, to a [`Session`] under
/// `spec` (a marker at the start of every span: its class for a holdout span,
/// none for a remainder) and keeps the answers of the scored windows.
pub fn run_session(sf: &SessionFeatures, spec: SessionSpec) -> Result<Scores, SessionError> {
    let adapt = |source| SessionError::Adapt {
        session: sf.name.clone(),
        source,
    };
    let classes = spec.classes.clone();
    let mut session = Session::new(spec).map_err(adapt)?;
    let mut next_marker = 0;
    let mut out = Scores::default();
    for (i, row) in sf.rows.iter().enumerate() {
        let end_s = sf.end_s[i];
        while next_marker < sf.segments.len() && sf.segments[next_marker].start_s < end_s - EPS {
            let g = &sf.segments[next_marker];
            let class = g.holdout.then(|| classes[g.class].as_str());
            session.marker(g.start_s, class).map_err(adapt)?;
            next_marker += 1;
        }
        let answer = session.push(end_s, row).map_err(adapt)?;
        out.windows.push(WindowAnswer {
            end_s,
            truth: sf.label(i),
            scored: sf.scored(i),
            answer: answer.clone(),
        });
        if !sf.scored(i) {
            continue;
        }
        match answer {
            Answer::Classified { probabilities } => {
                out.labels.push(sf.label(i).unwrap_or_default());
                out.probs.push(probabilities);
            }
            Answer::Calibrating { seconds_left } => {
                // Scored windows come after every holdout span: what is
                // short is what finish names.
                session.finish().map_err(adapt)?;
                return Err(SessionError::Setup(format!(
                    "session {}: the window ending at {end_s:.1} s is scored but the session is still calibrating ({seconds_left:.1} s left): the calibration asks for more than the holdout spans hold",
                    sf.name
                )));
            }
        }
    }
    session.finish().map_err(adapt)?;
    Ok(out)
}

/// Rows a population head for `mode` learns from on a training person, as
/// `adaptation.py` does: under `none` every window inside a span, raw; under
/// `baseline` the scored windows, re-centred by the mean of the windows in the
/// first `baseline_s` seconds (the same [`BaselineStats`] a live session uses).
pub fn training_rows(
    sf: &SessionFeatures,
    mode: Mode,
    baseline_s: f64,
    window_s: f64,
) -> Result<(Vec<Vec<f64>>, Vec<usize>), SessionError> {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    let centre = if mode == Mode::Baseline {
        let mut b = BaselineStats::new(baseline_s, window_s);
        for (row, &e) in sf.rows.iter().zip(&sf.end_s) {
            b.offer(e, row);
        }
        if !b.is_complete() {
            return Err(SessionError::Adapt {
                session: sf.name.clone(),
                source: AdaptError::BaselineShort {
                    got_s: baseline_s - b.seconds_left(),
                    want_s: baseline_s,
                },
            });
        }
        b.centre()
    } else {
        None
    };
    for (i, row) in sf.rows.iter().enumerate() {
        let Some(label) = sf.label(i) else { continue };
        if mode == Mode::Baseline && !sf.scored(i) {
            continue;
        }
        rows.push(match &centre {
            Some(c) => row.iter().zip(c).map(|(v, m)| v - m).collect(),
            None => row.clone(),
        });
        labels.push(label);
    }
    Ok((rows, labels))
}

/// A population head for `mode` (`none` or `baseline`) trained on `people`.
pub fn fit_population(
    people: &[&SessionFeatures],
    classes: &[String],
    mode: Mode,
    baseline_s: f64,
    window_s: f64,
) -> Result<PopulationModel, SessionError> {
    let space = people
        .first()
        .map(|p| p.space.clone())
        .ok_or_else(|| SessionError::Setup("no training sessions".into()))?;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for p in people {
        let (r, l) = training_rows(p, mode, baseline_s, window_s)?;
        rows.extend(r);
        labels.extend(l);
    }
    PopulationModel::fit(
        space,
        classes.to_vec(),
        mode == Mode::Baseline,
        &rows,
        &labels,
    )
    .map_err(|source| SessionError::Adapt {
        session: "training sessions".into(),
        source,
    })
}

/// What a protocol needs besides the sessions.
#[derive(Debug, Clone)]
pub struct ProtocolOptions {
    pub classes: Vec<String>,
    pub baseline_s: f64,
    /// Holdout seconds per class: the calibration asks for exactly these.
    pub holdout_s: Vec<f64>,
    pub window_s: f64,
}

impl ProtocolOptions {
    /// The [`labram_core::adapt::Protocol`] for `mode`.
    pub fn protocol(&self, mode: Mode) -> labram_core::adapt::Protocol {
        use labram_core::adapt::Protocol;
        match mode {
            Mode::None => Protocol::none(),
            Mode::Baseline => Protocol::baseline(self.baseline_s),
            Mode::Calibration => Protocol::calibration(
                self.classes
                    .iter()
                    .cloned()
                    .zip(self.holdout_s.iter().copied())
                    .collect(),
            ),
        }
    }
}

/// The head trained on other people that `mode` uses: under `none` the
/// features' own head when they bring one (a model's softmax: the model as it
/// is), else one trained on `train`; under `baseline` one trained on `train`'s
/// re-centred features; `calibration` needs none.
pub fn population_for(
    mode: Mode,
    train: &[&SessionFeatures],
    native: Option<&labram_core::adapt::Head>,
    space: &FeatureSpace,
    opts: &ProtocolOptions,
) -> Result<Option<PopulationModel>, SessionError> {
    match (mode, native) {
        (Mode::Calibration, _) => Ok(None),
        (Mode::None, Some(head)) => Ok(Some(PopulationModel::native(
            space.clone(),
            opts.classes.clone(),
            head.clone(),
        ))),
        _ if train.is_empty() => Ok(None),
        _ => fit_population(train, &opts.classes, mode, opts.baseline_s, opts.window_s).map(Some),
    }
}

/// Runs every test session under `mode`; one [`Scores`] per session.
pub fn evaluate_protocol(
    test: &[&SessionFeatures],
    population: Option<&PopulationModel>,
    mode: Mode,
    opts: &ProtocolOptions,
) -> Result<Vec<Scores>, SessionError> {
    if mode == Mode::Calibration {
        check_calibration_spans(opts)?;
    }
    test.iter()
        .map(|sf| {
            if mode == Mode::Baseline {
                check_baseline_span(sf, opts.baseline_s)?;
            }
            run_session(
                sf,
                SessionSpec {
                    protocol: opts.protocol(mode),
                    classes: opts.classes.clone(),
                    space: sf.space.clone(),
                    window_s: opts.window_s,
                    population: population.cloned(),
                },
            )
        })
        .collect()
}

/// Calibration learns from the holdout spans: each class needs one window's worth.
fn check_calibration_spans(opts: &ProtocolOptions) -> Result<(), SessionError> {
    for (class, &h) in opts.classes.iter().zip(&opts.holdout_s) {
        if h + EPS < opts.window_s {
            return Err(SessionError::Setup(format!(
                "--holdout {class}={h} is shorter than one window ({} s): calibration learns from the holdout spans; give every class at least {} s",
                opts.window_s, opts.window_s
            )));
        }
    }
    Ok(())
}

/// The baseline must lie inside the first holdout span, or it would learn
/// from windows that are scored (or from the other class's calibration).
fn check_baseline_span(sf: &SessionFeatures, baseline_s: f64) -> Result<(), SessionError> {
    match sf.segments.first() {
        Some(g) if g.holdout && baseline_s <= g.end_s + EPS => Ok(()),
        Some(g) => Err(SessionError::Setup(format!(
            "session {}: --baseline-s {baseline_s} is longer than the first file's holdout span ({:.1} s): the baseline would learn from scored windows; raise that class's --holdout or lower --baseline-s",
            sf.name,
            if g.holdout { g.end_s } else { 0.0 }
        ))),
        None => Err(SessionError::Setup(format!("session {} is empty", sf.name))),
    }
}

/// A name for a session: its first file's stem up to `_` (`Subject25`).
pub fn session_name(blocks: &[Block]) -> String {
    blocks
        .first()
        .and_then(|b| b.path.file_stem())
        .map(|s| {
            let s = s.to_string_lossy();
            s.split('_').next().unwrap_or(&s).to_string()
        })
        .unwrap_or_else(|| "session".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["rest".into(), "arithmetic".into()]
    }

    #[test]
    fn session_and_holdout_specs_parse_and_name_the_fix() {
        let b = parse_session("rest=a.edf, arithmetic=b.edf", &classes()).expect("parse");
        assert_eq!(b[1].class, 1);
        assert_eq!(b[1].path, PathBuf::from("b.edf"));
        let e = parse_session("rest=a.edf,maths=b.edf", &classes()).unwrap_err();
        assert!(
            e.to_string()
                .contains("`maths` is not one of rest, arithmetic"),
            "{e}"
        );
        let e = parse_session("a.edf", &classes()).unwrap_err();
        assert!(e.to_string().contains("CLASS=FILE"), "{e}");
        assert_eq!(
            parse_holdout("rest=60,arithmetic=20", &classes()).expect("parse"),
            vec![60.0, 20.0]
        );
        let e = parse_holdout("rest=-1", &classes()).unwrap_err();
        assert!(e.to_string().contains("seconds ≥ 0"), "{e}");
    }

    /// Toy session: 8 windows, spans rest-holdout [0,8], arith-holdout [8,12],
    /// rest remainder [12,20], arith remainder [20,28]; 4-s windows every 4 s.
    fn toy(offset: f64) -> SessionFeatures {
        let segs = vec![
            Segment {
                class: 0,
                holdout: true,
                start_s: 0.0,
                end_s: 8.0,
            },
            Segment {
                class: 1,
                holdout: true,
                start_s: 8.0,
                end_s: 12.0,
            },
            Segment {
                class: 0,
                holdout: false,
                start_s: 12.0,
                end_s: 20.0,
            },
            Segment {
                class: 1,
                holdout: false,
                start_s: 20.0,
                end_s: 28.0,
            },
        ];
        let seg = vec![0, 0, 1, 2, 2, 3, 3];
        let rows = seg
            .iter()
            .map(|&g| {
                vec![
                    offset + if segs[g].class == 1 { 1.0 } else { -1.0 },
                    0.1 * offset,
                ]
            })
            .collect();
        SessionFeatures {
            name: format!("toy{offset}"),
            space: FeatureSpace {
                extractor: "toy".into(),
                dim: 2,
            },
            rows,
            end_s: (1..=7).map(|k| 4.0 * k as f64).collect(),
            segment: seg.into_iter().map(Some).collect(),
            segments: segs,
        }
    }

    #[test]
    fn every_protocol_scores_the_same_windows_and_baseline_recentres() {
        let opts = ProtocolOptions {
            classes: classes(),
            baseline_s: 8.0,
            holdout_s: vec![8.0, 4.0],
            window_s: 4.0,
        };
        let train = [toy(-3.0), toy(5.0)];
        let train: Vec<&SessionFeatures> = train.iter().collect();
        let test = toy(30.0);
        for mode in Mode::ALL {
            let pop = population_for(mode, &train, None, &test.space, &opts).expect("fit");
            let s = evaluate_protocol(&[&test], pop.as_ref(), mode, &opts).expect("run");
            assert_eq!(s[0].labels, vec![0, 0, 1, 1], "{mode}");
            let ba = s[0].balanced_accuracy().expect("ba");
            // Far from the training people: only the adapted protocols get it.
            if mode == Mode::None {
                assert!(ba <= 0.5, "{mode}: {ba}");
            } else {
                assert_eq!(ba, 1.0, "{mode}");
            }
        }
        // (None, baseline) rows on a training person: all 7 raw / 4 scored re-centred.
        let (r, _) = training_rows(&train[0].clone(), Mode::None, 8.0, 4.0).expect("rows");
        assert_eq!(r.len(), 7);
        let (r, l) = training_rows(train[1], Mode::Baseline, 8.0, 4.0).expect("rows");
        assert_eq!((r.len(), l), (4, vec![0, 0, 1, 1]));
        assert!((r[0][0] - 0.0).abs() < 1e-12, "{r:?}");
        // A baseline longer than the rest holdout is refused.
        let long = ProtocolOptions {
            baseline_s: 12.0,
            ..opts
        };
        let pop = population_for(Mode::Baseline, &train, None, &test.space, &long).expect("fit");
        let e = evaluate_protocol(&[&test], pop.as_ref(), Mode::Baseline, &long).unwrap_err();
        assert!(e.to_string().contains("lower --baseline-s"), "{e}");
    }
}
