//! The classical baseline every LaBraM figure stands beside: per channel, the log
//! power and the relative power in delta, theta, alpha, beta and gamma
//! ([`super::bandpower`]), standardised with the training windows' mean and
//! standard deviation, then L2 logistic regression ([`super::logreg`]).
//!
//! Trained on the `train` split with balanced class weights by default
//! (sklearn's `class_weight="balanced"`: the paper's balanced accuracy
//! thresholds probabilities at 0.5, and eegmat's windows are 3:1 rest, so an
//! unweighted model would rarely say "arithmetic"). The regularisation `C` is
//! chosen from a small grid on the `val` split's balanced accuracy (ties → the
//! stronger regularisation); with no `val` split `C = 1`. The test split is
//! only scored.

use rayon::prelude::*;

use super::bandpower::{BandPower, FEATURES_PER_CHANNEL};
use super::logreg::{FitOptions, LogisticRegression};
use super::metrics::{MetricError, Report};
use crate::data::format::{Dataset, FormatError};

/// The `C` grid searched on the validation split.
pub const C_GRID: [f64; 7] = [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0];

/// Errors of the baseline.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("the dataset has no `train` windows: the baseline trains on the train split")]
    NoTrain,
    #[error("the train split holds only class `{0}`: the baseline needs at least two classes")]
    OneClass(String),
}

/// What the baseline found.
#[derive(Debug, Clone)]
pub struct BaselineResult {
    /// The chosen regularisation.
    pub c: f64,
    /// Validation balanced accuracy for every `C` tried.
    pub grid: Vec<(f64, f64)>,
    pub train_windows: usize,
    pub features: usize,
    pub val: Option<Report>,
    pub test: Option<Report>,
    /// Whether classes were weighted (balanced).
    pub balanced: bool,
}

/// Feature rows and their labels.
type Features = (Vec<Vec<f64>>, Vec<usize>);

pub use labram_core::adapt::standardize::Standardizer;

/// Band-power features of the windows `indices` of `ds`, in parallel.
pub fn features(ds: &Dataset, indices: &[usize]) -> Result<Vec<Vec<f64>>, FormatError> {
    let [c, p, s] = ds.window_shape();
    indices
        .par_chunks(64)
        .map(|chunk| {
            let mut bp = BandPower::new(p * s, labram_core::card::SAMPLE_RATE_HZ);
            let mut buf = vec![0.0f32; c * p * s];
            chunk
                .iter()
                .map(|&i| {
                    ds.window_into(i, &mut buf)?;
                    Ok(bp.window_features(&buf, c))
                })
                .collect::<Result<Vec<_>, FormatError>>()
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.into_iter().flatten().collect())
}

fn labels(ds: &Dataset, idx: &[usize]) -> Vec<usize> {
    idx.iter().map(|&i| ds.labels()[i] as usize).collect()
}

fn score(model: &LogisticRegression, x: &[Vec<f64>], y: &[usize]) -> Result<Report, MetricError> {
    let probs: Vec<Vec<f64>> = x.iter().map(|r| model.predict_proba(r)).collect();
    Report::from_probs(y, &probs)
}

/// Options of [`run_with`].
#[derive(Debug, Clone, Copy)]
pub struct BaselineOptions {
    /// Balanced class weights (default) or every window weighted 1.
    pub balanced: bool,
}

impl Default for BaselineOptions {
    fn default() -> Self {
        Self { balanced: true }
    }
}

/// [`run_with`] with the default options (balanced class weights).
pub fn run(ds: &Dataset) -> Result<BaselineResult, BaselineError> {
    run_with(ds, BaselineOptions::default())
}

/// Trains on `train`, selects `C` on `val`, scores `val` and `test`.
pub fn run_with(ds: &Dataset, opts: BaselineOptions) -> Result<BaselineResult, BaselineError> {
    let classes = ds.classes().len().max(2);
    let train_idx = ds.split_indices("train");
    if train_idx.is_empty() {
        return Err(BaselineError::NoTrain);
    }
    let y_train = labels(ds, &train_idx);
    if y_train.iter().all(|&l| l == y_train[0]) {
        let name = ds.classes().get(y_train[0]).cloned().unwrap_or_default();
        return Err(BaselineError::OneClass(name));
    }
    let mut x_train = features(ds, &train_idx)?;
    let standardizer = Standardizer::fit(&x_train);
    standardizer.apply(&mut x_train);
    let load = |split: &str| -> Result<Option<Features>, FormatError> {
        let idx = ds.split_indices(split);
        if idx.is_empty() {
            return Ok(None);
        }
        let mut x = features(ds, &idx)?;
        standardizer.apply(&mut x);
        Ok(Some((x, labels(ds, &idx))))
    };
    let val = load("val")?;
    let test = load("test")?;
    let fit = |c: f64| {
        LogisticRegression::fit(
            &x_train,
            &y_train,
            classes,
            FitOptions {
                c,
                balanced: opts.balanced,
                ..FitOptions::default()
            },
        )
    };
    let mut grid = Vec::new();
    let (c, model) = match &val {
        Some((xv, yv)) => {
            let fitted: Vec<(f64, LogisticRegression)> =
                C_GRID.par_iter().map(|&c| (c, fit(c))).collect();
            let mut best: Option<(f64, f64, LogisticRegression)> = None;
            for (c, m) in fitted {
                let ba = score(&m, xv, yv)?.balanced_accuracy();
                grid.push((c, ba));
                if best.as_ref().is_none_or(|(_, b, _)| ba > *b + 1e-12) {
                    best = Some((c, ba, m));
                }
            }
            let (c, _, m) = best.ok_or(BaselineError::NoTrain)?;
            (c, m)
        }
        None => (1.0, fit(1.0)),
    };
    let val_report = val.as_ref().map(|(x, y)| score(&model, x, y)).transpose()?;
    let test_report = test
        .as_ref()
        .map(|(x, y)| score(&model, x, y))
        .transpose()?;
    Ok(BaselineResult {
        c,
        grid,
        train_windows: train_idx.len(),
        features: ds.channels().len() * FEATURES_PER_CHANNEL,
        val: val_report,
        test: test_report,
        balanced: opts.balanced,
    })
}
