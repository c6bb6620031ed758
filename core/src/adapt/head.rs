//! Heads: what turns a (re-centred) feature vector into class probabilities.

use super::features::FeatureSpace;
use super::logreg::{FitOptions, LogisticRegression};
use super::standardize::Standardizer;
use super::AdaptError;

/// Regularisation of a per-person calibration head (`adaptation.py`: `C = 1`).
pub const CALIBRATION_C: f64 = 1.0;
/// Regularisation of a head trained on other people (`adaptation.py`: `C = 0.01`).
pub const POPULATION_C: f64 = 0.01;

/// A classifier on feature vectors.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Head {
    /// The features are a model's logits: their softmax (a sigmoid for a single
    /// logit, as `[1 − p, p]`).
    Softmax,
    /// Standardisation, then L2 logistic regression with balanced class weights.
    Logistic {
        standardizer: Standardizer,
        model: LogisticRegression,
    },
}

impl Head {
    /// Fits standardisation + logistic regression (balanced classes) on `rows`
    /// labelled `labels < classes.len()`. Every class needs at least one row.
    pub fn fit_logistic(
        rows: &[Vec<f64>],
        labels: &[usize],
        classes: &[String],
        c: f64,
    ) -> Result<Self, AdaptError> {
        for (k, name) in classes.iter().enumerate() {
            if !labels.contains(&k) {
                return Err(AdaptError::MissingClass {
                    class: name.clone(),
                    classes: classes.join(", "),
                });
            }
        }
        let standardizer = Standardizer::fit(rows);
        let mut x = rows.to_vec();
        standardizer.apply(&mut x);
        let model = LogisticRegression::fit(
            &x,
            labels,
            classes.len(),
            FitOptions {
                c,
                balanced: true,
                max_iter: 5000,
                ..FitOptions::default()
            },
        );
        Ok(Head::Logistic {
            standardizer,
            model,
        })
    }

    /// Class probabilities of one feature vector.
    pub fn probabilities(&self, row: &[f64]) -> Vec<f64> {
        match self {
            Head::Softmax => softmax(row),
            Head::Logistic {
                standardizer,
                model,
            } => {
                let mut x = row.to_vec();
                standardizer.apply_row(&mut x);
                model.predict_proba(&x)
            }
        }
    }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    if z.len() == 1 {
        let p = 1.0 / (1.0 + (-z[0]).exp());
        return vec![1.0 - p, p];
    }
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// A head trained on other people, for `none` (raw features) or `baseline`
/// (features re-centred by each person's baseline mean): it names the features
/// and protocol it was trained for, and a session refuses any other.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PopulationModel {
    pub space: FeatureSpace,
    pub classes: Vec<String>,
    /// Trained on re-centred features (`baseline`) or raw ones (`none`).
    pub recentred: bool,
    pub head: Head,
}

impl PopulationModel {
    /// Standardisation + logistic regression (`C` = [`POPULATION_C`] as
    /// `adaptation.py`) on training people's rows.
    pub fn fit(
        space: FeatureSpace,
        classes: Vec<String>,
        recentred: bool,
        rows: &[Vec<f64>],
        labels: &[usize],
    ) -> Result<Self, AdaptError> {
        let head = Head::fit_logistic(rows, labels, &classes, POPULATION_C)?;
        Ok(Self {
            space,
            classes,
            recentred,
            head,
        })
    }

    /// A model's own softmax as the head of `none`.
    pub fn native(space: FeatureSpace, classes: Vec<String>, head: Head) -> Self {
        Self {
            space,
            classes,
            recentred: false,
            head,
        }
    }

    /// What it was trained for, in words.
    pub fn describe(&self) -> String {
        format!(
            "{} ({} features)",
            self.space,
            if self.recentred { "re-centred" } else { "raw" }
        )
    }
}
