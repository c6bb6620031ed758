//! Running an exported model (ONNX + card) over labelled data, the way the
//! daemon would: each recording is streamed through the daemon's own window
//! stage (`labram_core::window::Stage`: the card's electrodes in the card's
//! order, the card's preprocessing as live inference applies it, always causal,
//! a window of the card's length every card hop on the daemon's grid), then
//! inference through `labram_core::inference`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use labram_core::card::{ModelCard, PATCH_SIZE, SAMPLE_RATE_HZ};
use labram_core::inference::{Classifier, Device, InferenceError};
use labram_core::window::{self, Stage, StageConfig, StageOutput};

use super::metrics::{self, MetricError, Report};
use crate::data::format::{Dataset, FormatError};
use crate::data::prepare::{self, Channels};

/// Windows per inference call.
const BATCH: usize = 32;

/// Errors of `evaluate`.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    /// `message` names the file (see [`EvalError::recording`]).
    #[error("{message}")]
    Recording { file: String, message: String },
    #[error("class `{class}` of {file} is not one of the model's classes ({classes}); write --recording <file>=<class> with one of those")]
    UnknownClass {
        file: String,
        class: String,
        classes: String,
    },
    #[error("dataset does not fit the model: {0}")]
    Mismatch(String),
}

impl EvalError {
    /// An error about one recording: `message` prefixed with the file, unless it
    /// names the file already (the recording reader's errors do), so that the path
    /// is never printed twice (`a.edf: a.edf is …`).
    pub fn recording(file: &str, message: impl Into<String>) -> EvalError {
        let message = message.into();
        EvalError::Recording {
            file: file.to_string(),
            message: if message.contains(file) {
                message
            } else {
                format!("{file}: {message}")
            },
        }
    }
}

/// Per-recording result.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingResult {
    pub file: String,
    pub label: usize,
    pub windows: usize,
    /// Mean probability of each class over the recording's windows.
    pub mean_probs: Vec<f64>,
}

/// Labels, probabilities and the metrics over all windows.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub labels: Vec<usize>,
    pub probs: Vec<Vec<f64>>,
    /// The paper's metrics, or why they are undefined for these windows: the binary
    /// ones (AUROC, PR-AUC) need windows of both classes, so a one-class evaluation
    /// holds [`MetricError::OneClass`] here. Any other metric error fails the
    /// evaluation instead.
    pub report: Result<Report, MetricError>,
    /// Fraction of windows whose predicted class (probability ≥ 0.5 for two
    /// classes, arg-max otherwise) is the true one; defined for any windows.
    pub accuracy: f64,
    /// Mean recall over the classes present; with one class, its recall.
    pub balanced_accuracy: f64,
    pub recordings: Vec<RecordingResult>,
}

/// Predicted classes as the reports threshold them: class 1 when its probability
/// is at least 0.5 for two classes, the arg-max otherwise.
fn predictions(probs: &[Vec<f64>]) -> Vec<usize> {
    if probs.first().is_some_and(|r| r.len() == 2) {
        probs.iter().map(|r| usize::from(r[1] >= 0.5)).collect()
    } else {
        metrics::argmax_rows(probs)
    }
}

/// Everything the metrics say about `labels` vs `probs`: the paper's report where
/// defined, plus the accuracies, which always are.
fn evaluation(
    labels: Vec<usize>,
    probs: Vec<Vec<f64>>,
    recordings: Vec<RecordingResult>,
) -> Result<Evaluation, EvalError> {
    let report = match Report::from_probs(&labels, &probs) {
        Ok(r) => Ok(r),
        Err(e @ MetricError::OneClass { .. }) => Err(e),
        Err(e) => return Err(e.into()),
    };
    let pred = predictions(&probs);
    let classes = probs.first().map_or(0, Vec::len);
    Ok(Evaluation {
        accuracy: metrics::accuracy(&labels, &pred)?,
        balanced_accuracy: metrics::balanced_accuracy(&labels, &pred, classes)?,
        labels,
        probs,
        report,
        recordings,
    })
}

/// Class names as the metrics see them: a single-logit model is binary with
/// `not <name>` as class 0 and its one name as class 1.
pub fn class_names(card: &ModelCard) -> Vec<String> {
    if card.classes.len() == 1 {
        vec![format!("not {}", card.classes[0]), card.classes[0].clone()]
    } else {
        card.classes.clone()
    }
}

/// Looks a class up by name (case-insensitive) or index.
pub fn class_index(card: &ModelCard, file: &str, class: &str) -> Result<usize, EvalError> {
    let names = class_names(card);
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(class)) {
        return Ok(i);
    }
    match class.parse::<usize>() {
        Ok(i) if i < names.len() => Ok(i),
        _ => Err(EvalError::UnknownClass {
            file: file.to_string(),
            class: class.to_string(),
            classes: names.join(", "),
        }),
    }
}

/// Probabilities per class for `batch` windows (two columns for a single logit).
fn classify(
    clf: &mut Classifier,
    x: &[f32],
    batch: usize,
) -> Result<Vec<Vec<f64>>, InferenceError> {
    let probs = clf.classify(x, batch)?;
    Ok(probs
        .into_iter()
        .map(|p| {
            if p.len() == 1 {
                vec![1.0 - p[0] as f64, p[0] as f64]
            } else {
                p.into_iter().map(f64::from).collect()
            }
        })
        .collect())
}

/// Loads the model (and its card) for CPU inference.
pub fn load_model(model: &Path, threads: usize) -> Result<Classifier, EvalError> {
    Ok(Classifier::new(model, Device::Cpu, threads)?)
}

/// Runs the model over labelled recordings: `(path, class)` pairs.
pub fn evaluate_recordings(
    clf: &mut Classifier,
    recordings: &[(PathBuf, String)],
    channel_map: &BTreeMap<String, String>,
) -> Result<Evaluation, EvalError> {
    let card = clf.card().clone();
    let len = card.window_patches * PATCH_SIZE;
    let window_values = card.channels.len() * len;
    let mut labels = Vec::new();
    let mut probs = Vec::new();
    let mut per_rec = Vec::new();
    for (path, class) in recordings {
        let file = path.display().to_string();
        let label = class_index(&card, &file, class)?;
        let x = daemon_windows(&card, path, channel_map, &file)?;
        let n_windows = x.len() / window_values;
        if n_windows == 0 {
            return Err(EvalError::recording(
                &file,
                format!(
                    "it is shorter than one {:.0}-s window of the model",
                    len as f64 / SAMPLE_RATE_HZ
                ),
            ));
        }
        let mut rec_probs = Vec::new();
        for chunk in x.chunks(BATCH * window_values) {
            rec_probs.extend(classify(clf, chunk, chunk.len() / window_values)?);
        }
        let k = rec_probs[0].len();
        let mean_probs = (0..k)
            .map(|c| rec_probs.iter().map(|r| r[c]).sum::<f64>() / rec_probs.len() as f64)
            .collect();
        per_rec.push(RecordingResult {
            file,
            label,
            windows: rec_probs.len(),
            mean_probs,
        });
        labels.extend(std::iter::repeat_n(label, rec_probs.len()));
        probs.extend(rec_probs);
    }
    evaluation(labels, probs, per_rec)
}

/// Input frames pushed into the window stage at a time (a stream's chunks; the
/// causal chain's output does not depend on their size).
const STREAM_CHUNK: usize = 64;

/// The windows the daemon would classify if `path` were streamed to it: the
/// card's electrodes, the card's preprocessing as live inference applies it
/// (always causal), the daemon's window stage and hop grid. Window after window,
/// `[channels][patches × 200]` µV each.
fn daemon_windows(
    card: &ModelCard,
    path: &Path,
    channel_map: &BTreeMap<String, String>,
    file: &str,
) -> Result<Vec<f32>, EvalError> {
    let want = Channels::Exactly(card.channels.clone());
    let raw = prepare::read_raw(path, channel_map, &want, false)
        .map_err(|r| EvalError::recording(file, r.message))?;
    let n_ch = raw.signals.len();
    let mut stage = Stage::new(StageConfig {
        n_input_channels: n_ch,
        selection: (0..n_ch).collect(),
        to_microvolts: vec![1.0; n_ch],
        input_rate_hz: raw.rate_hz,
        patches: card.window_patches,
        hop_frames: window::hop_frames(card.hop_s, raw.rate_hz),
        preprocessing: card.preprocessing.live(),
    })
    .map_err(|e| EvalError::recording(file, e.to_string()))?;
    let mut out = Vec::new();
    stage.push_signals(&raw.signals, STREAM_CHUNK, |o| {
        if let StageOutput::Window(w) = o {
            out.extend_from_slice(&w.data);
        }
    });
    Ok(out)
}

/// Runs the model over one split of a `make-dataset` output. The dataset's
/// channels must be the card's (same order) and its classes the card's.
pub fn evaluate_dataset(clf: &mut Classifier, ds: &Dataset) -> Result<Evaluation, EvalError> {
    let card = clf.card().clone();
    let want: Vec<String> = card.channels.iter().map(|c| c.to_uppercase()).collect();
    let have: Vec<String> = ds.channels().iter().map(|c| c.to_uppercase()).collect();
    if want != have {
        return Err(EvalError::Mismatch(format!(
            "the model takes {} but the dataset holds {}; make the dataset with the model's channels",
            card.channels.join(" "),
            ds.channels().join(" ")
        )));
    }
    let names = class_names(&card);
    if names.len() != ds.classes().len() {
        return Err(EvalError::Mismatch(format!(
            "the model has classes {} but the dataset {}",
            names.join(", "),
            ds.classes().join(", ")
        )));
    }
    if ds.meta().preprocessing.mode != card.preprocessing.mode {
        tracing::warn!(
            dataset = %ds.meta().preprocessing.mode,
            model = %card.preprocessing.mode,
            "the dataset was preprocessed in another mode than the model was trained on"
        );
    }
    let idx: Vec<usize> = (0..ds.len()).collect();
    let mut probs = Vec::with_capacity(ds.len());
    for chunk in idx.chunks(BATCH) {
        let b = ds.batch(chunk)?;
        probs.extend(classify(clf, &b.x, chunk.len())?);
    }
    let labels: Vec<usize> = ds.labels().iter().map(|&l| l as usize).collect();
    evaluation(labels, probs, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_class_keeps_what_is_defined() {
        // Four windows, all class 1; three predicted right.
        let probs = vec![
            vec![0.2, 0.8],
            vec![0.6, 0.4],
            vec![0.5, 0.5],
            vec![0.1, 0.9],
        ];
        let ev = evaluation(vec![1; 4], probs, Vec::new()).unwrap();
        assert!(matches!(
            ev.report,
            Err(MetricError::OneClass { only: 1, .. })
        ));
        assert_eq!(ev.accuracy, 0.75);
        assert_eq!(ev.balanced_accuracy, 0.75);
        // Other metric errors still fail the evaluation.
        let e = evaluation(
            vec![0, 1],
            vec![vec![f64::NAN, 0.5], vec![0.5, f64::NAN]],
            Vec::new(),
        );
        assert!(matches!(e, Err(EvalError::Metric(_))), "{e:?}");
    }

    #[test]
    fn recording_errors_name_the_file_once() {
        let e = EvalError::recording("a.edf", "cannot read a.edf: no such file");
        assert_eq!(e.to_string(), "cannot read a.edf: no such file");
        let e = EvalError::recording("a.edf", "missing electrode(s) O1");
        assert_eq!(e.to_string(), "a.edf: missing electrode(s) O1");
    }
}
