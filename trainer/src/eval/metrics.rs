//! The paper's evaluation metrics, computed exactly as scikit-learn computes them
//! (the official code calls pyhealth, which calls sklearn):
//!
//! * binary tasks: balanced accuracy at threshold 0.5, AUROC
//!   (`roc_auc_score`) and PR-AUC (`average_precision_score`, the step-wise sum,
//!   not the trapezoid);
//! * multi-class tasks: balanced accuracy of the arg-max, Cohen's kappa and the
//!   support-weighted F1.
//!
//! Hand-written rather than taken from a crate: the definitions are a few lines
//! each, but the edge cases (ties in scores, classes absent from the truth, zero
//! denominators) must match sklearn's choices, which no Rust crate documents.
//! The unit tests pin each edge case to a value computed by hand and cross-checked
//! with scikit-learn 1.x; a one-off comparison on 300 random cases (scores with
//! ties, 2–5 classes) agreed with scikit-learn to 2e-16.

use std::fmt;

/// Errors in the inputs of a metric: mismatched lengths, labels out of range,
/// a score that is not a number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("{what}: {a} truths but {b} predictions; give one prediction per window")]
    Length {
        what: &'static str,
        a: usize,
        b: usize,
    },
    #[error("label {label} is out of range for {classes} classes")]
    Label { label: usize, classes: usize },
    #[error("no samples to evaluate")]
    Empty,
    #[error("score {index} is not a finite number ({value})")]
    NotFinite { index: usize, value: f64 },
    #[error("{what} needs both classes in the truth (got only class {only}); AUROC and PR-AUC are undefined")]
    OneClass { what: &'static str, only: usize },
}

fn check_len(what: &'static str, a: usize, b: usize) -> Result<(), MetricError> {
    if a != b {
        return Err(MetricError::Length { what, a, b });
    }
    if a == 0 {
        return Err(MetricError::Empty);
    }
    Ok(())
}

/// Confusion matrix `m[true][pred]`.
pub fn confusion(
    y_true: &[usize],
    y_pred: &[usize],
    classes: usize,
) -> Result<Vec<Vec<u64>>, MetricError> {
    check_len("confusion matrix", y_true.len(), y_pred.len())?;
    let mut m = vec![vec![0u64; classes]; classes];
    for (&t, &p) in y_true.iter().zip(y_pred) {
        for label in [t, p] {
            if label >= classes {
                return Err(MetricError::Label { label, classes });
            }
        }
        m[t][p] += 1;
    }
    Ok(m)
}

/// Plain accuracy: the fraction of predictions equal to the truth. Defined for
/// any non-empty input, also when the truth holds a single class (where AUROC
/// and PR-AUC are not).
pub fn accuracy(y_true: &[usize], y_pred: &[usize]) -> Result<f64, MetricError> {
    check_len("accuracy", y_true.len(), y_pred.len())?;
    let hits = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    Ok(hits as f64 / y_true.len() as f64)
}

/// Balanced accuracy: the mean recall over the classes present in `y_true`
/// (sklearn drops classes with no true sample from the mean).
pub fn balanced_accuracy(
    y_true: &[usize],
    y_pred: &[usize],
    classes: usize,
) -> Result<f64, MetricError> {
    let m = confusion(y_true, y_pred, classes)?;
    let mut sum = 0.0;
    let mut n = 0usize;
    for (c, row) in m.iter().enumerate() {
        let support: u64 = row.iter().sum();
        if support > 0 {
            sum += row[c] as f64 / support as f64;
            n += 1;
        }
    }
    Ok(sum / n as f64)
}

/// Cohen's kappa (unweighted), `(p_o - p_e) / (1 - p_e)`; 0 when `p_e` is 1
/// (sklearn returns NaN there; a single-class agreement carries no information,
/// and 0 keeps the figure printable).
pub fn cohen_kappa(y_true: &[usize], y_pred: &[usize], classes: usize) -> Result<f64, MetricError> {
    let m = confusion(y_true, y_pred, classes)?;
    let n = y_true.len() as f64;
    let po: f64 = (0..classes).map(|c| m[c][c] as f64).sum::<f64>() / n;
    let pe: f64 = (0..classes)
        .map(|c| {
            let rows: u64 = m[c].iter().sum();
            let cols: u64 = m.iter().map(|r| r[c]).sum();
            rows as f64 * cols as f64
        })
        .sum::<f64>()
        / (n * n);
    if (1.0 - pe).abs() < f64::EPSILON {
        return Ok(0.0);
    }
    Ok((po - pe) / (1.0 - pe))
}

/// Support-weighted F1 (`f1_score(average="weighted")`): per-class F1 (0 where
/// precision + recall is 0) weighted by the number of true samples of the class.
pub fn f1_weighted(y_true: &[usize], y_pred: &[usize], classes: usize) -> Result<f64, MetricError> {
    let m = confusion(y_true, y_pred, classes)?;
    let n = y_true.len() as f64;
    let mut sum = 0.0;
    for c in 0..classes {
        let tp = m[c][c] as f64;
        let support: f64 = m[c].iter().sum::<u64>() as f64;
        let predicted: f64 = m.iter().map(|r| r[c]).sum::<u64>() as f64;
        let denom = support + predicted;
        let f1 = if denom > 0.0 { 2.0 * tp / denom } else { 0.0 };
        sum += f1 * support;
    }
    Ok(sum / n)
}

fn check_binary(
    what: &'static str,
    y_true: &[usize],
    scores: &[f64],
) -> Result<(usize, usize), MetricError> {
    check_len(what, y_true.len(), scores.len())?;
    for (index, &value) in scores.iter().enumerate() {
        if !value.is_finite() {
            return Err(MetricError::NotFinite { index, value });
        }
    }
    let mut pos = 0;
    for &t in y_true {
        if t > 1 {
            return Err(MetricError::Label {
                label: t,
                classes: 2,
            });
        }
        pos += t;
    }
    let neg = y_true.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(MetricError::OneClass {
            what,
            only: usize::from(pos > 0),
        });
    }
    Ok((pos, neg))
}

/// Indices sorted by descending score (stable, so equal scores keep their order;
/// ties are grouped by the callers).
fn by_descending_score(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// Area under the ROC curve for labels 0/1 and scores of class 1.
///
/// Computed as the Mann–Whitney statistic with tied scores counted one half,
/// which equals sklearn's trapezoidal area over the ROC curve with ties.
pub fn roc_auc(y_true: &[usize], scores: &[f64]) -> Result<f64, MetricError> {
    let (pos, neg) = check_binary("AUROC", y_true, scores)?;
    let order = by_descending_score(scores);
    // Walk groups of equal scores from the top: each negative in a group counts
    // the positives strictly above it, plus half of those tied with it.
    let mut above_pos = 0u64;
    let mut area = 0.0f64;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        let (mut gp, mut gn) = (0u64, 0u64);
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if y_true[order[j]] == 1 {
                gp += 1;
            } else {
                gn += 1;
            }
            j += 1;
        }
        area += gn as f64 * (above_pos as f64 + 0.5 * gp as f64);
        above_pos += gp;
        i = j;
    }
    Ok(area / (pos as f64 * neg as f64))
}

/// Average precision (sklearn's PR-AUC): `Σ (R_k − R_{k−1}) · P_k` over the
/// thresholds at each distinct score, from the highest down.
pub fn average_precision(y_true: &[usize], scores: &[f64]) -> Result<f64, MetricError> {
    let (pos, _) = check_binary("PR-AUC", y_true, scores)?;
    let order = by_descending_score(scores);
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if y_true[order[j]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall = tp as f64 / pos as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
        i = j;
    }
    Ok(ap)
}

/// Arg-max of each row (first maximum on ties, as numpy).
pub fn argmax_rows(probs: &[Vec<f64>]) -> Vec<usize> {
    probs
        .iter()
        .map(|row| {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

/// The paper's metrics for one evaluation, printable one per line.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Two classes: balanced accuracy (threshold 0.5), AUROC, PR-AUC.
    Binary {
        balanced_accuracy: f64,
        auroc: f64,
        pr_auc: f64,
        n: usize,
    },
    /// More classes: balanced accuracy, Cohen's kappa, weighted F1.
    Multiclass {
        balanced_accuracy: f64,
        cohen_kappa: f64,
        f1_weighted: f64,
        n: usize,
    },
}

impl Report {
    /// Binary metrics from labels 0/1 and the probability of class 1.
    pub fn binary(y_true: &[usize], p_positive: &[f64]) -> Result<Self, MetricError> {
        check_len("binary metrics", y_true.len(), p_positive.len())?;
        let pred: Vec<usize> = p_positive.iter().map(|&p| usize::from(p >= 0.5)).collect();
        Ok(Report::Binary {
            balanced_accuracy: balanced_accuracy(y_true, &pred, 2)?,
            auroc: roc_auc(y_true, p_positive)?,
            pr_auc: average_precision(y_true, p_positive)?,
            n: y_true.len(),
        })
    }

    /// Multi-class metrics from labels and per-class probabilities (arg-max).
    pub fn multiclass(y_true: &[usize], probs: &[Vec<f64>]) -> Result<Self, MetricError> {
        check_len("multi-class metrics", y_true.len(), probs.len())?;
        let classes = probs.first().map_or(0, Vec::len);
        let pred = argmax_rows(probs);
        Ok(Report::Multiclass {
            balanced_accuracy: balanced_accuracy(y_true, &pred, classes)?,
            cohen_kappa: cohen_kappa(y_true, &pred, classes)?,
            f1_weighted: f1_weighted(y_true, &pred, classes)?,
            n: y_true.len(),
        })
    }

    /// Binary metrics when there are two classes (probability of class 1),
    /// multi-class metrics otherwise.
    pub fn from_probs(y_true: &[usize], probs: &[Vec<f64>]) -> Result<Self, MetricError> {
        if probs.first().is_some_and(|r| r.len() == 2) {
            let p1: Vec<f64> = probs
                .iter()
                .map(|r| r.get(1).copied().unwrap_or(0.0))
                .collect();
            Self::binary(y_true, &p1)
        } else {
            Self::multiclass(y_true, probs)
        }
    }

    /// `(name, value)` pairs in print order.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        match *self {
            Report::Binary {
                balanced_accuracy,
                auroc,
                pr_auc,
                ..
            } => vec![
                ("balanced accuracy", balanced_accuracy),
                ("AUROC", auroc),
                ("PR-AUC", pr_auc),
            ],
            Report::Multiclass {
                balanced_accuracy,
                cohen_kappa,
                f1_weighted,
                ..
            } => vec![
                ("balanced accuracy", balanced_accuracy),
                ("Cohen's kappa", cohen_kappa),
                ("weighted F1", f1_weighted),
            ],
        }
    }

    /// The balanced accuracy (both kinds have it).
    pub fn balanced_accuracy(&self) -> f64 {
        match *self {
            Report::Binary {
                balanced_accuracy, ..
            }
            | Report::Multiclass {
                balanced_accuracy, ..
            } => balanced_accuracy,
        }
    }

    /// Number of windows evaluated.
    pub fn n(&self) -> usize {
        match *self {
            Report::Binary { n, .. } | Report::Multiclass { n, .. } => n,
        }
    }
}

impl fmt::Display for Report {
    /// One metric per line, `name: value` with four decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.entries() {
            writeln!(f, "{name}: {value:.4}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn balanced_accuracy_skips_absent_classes() {
        // Recalls: class 0 = 2/3, class 1 = 1/1; class 2 has no true sample.
        let t = [0, 0, 0, 1];
        let p = [0, 0, 2, 1];
        assert!(close(
            balanced_accuracy(&t, &p, 3).unwrap(),
            (2.0 / 3.0 + 1.0) / 2.0
        ));
        // sklearn: balanced_accuracy_score([0,1,1,1,0,1],[0,1,0,1,1,1]) = 0.625
        let t = [0, 1, 1, 1, 0, 1];
        let p = [0, 1, 0, 1, 1, 1];
        assert!(close(balanced_accuracy(&t, &p, 2).unwrap(), 0.625));
        assert!(matches!(
            balanced_accuracy(&[0, 3], &[0, 1], 2),
            Err(MetricError::Label { label: 3, .. })
        ));
    }

    #[test]
    fn accuracy_is_defined_for_one_class() {
        assert!(close(accuracy(&[1, 1, 1, 1], &[1, 0, 1, 1]).unwrap(), 0.75));
        assert!(matches!(accuracy(&[], &[]), Err(MetricError::Empty)));
        assert!(matches!(
            accuracy(&[0], &[0, 1]),
            Err(MetricError::Length { .. })
        ));
    }

    #[test]
    fn auroc_with_ties_matches_sklearn() {
        // sklearn.metrics.roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.75
        assert!(close(
            roc_auc(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]).unwrap(),
            0.75
        ));
        // Ties count one half: roc_auc_score([0,1,0,1,1],[0.5,0.5,0.2,0.9,0.5]) = 5/6
        // (of the 6 positive/negative pairs, 4 are ordered right and 2 are tied).
        assert!(close(
            roc_auc(&[0, 1, 0, 1, 1], &[0.5, 0.5, 0.2, 0.9, 0.5]).unwrap(),
            5.0 / 6.0
        ));
        // Perfect and inverted rankings.
        assert!(close(roc_auc(&[0, 1], &[0.2, 0.9]).unwrap(), 1.0));
        assert!(close(roc_auc(&[1, 0], &[0.2, 0.9]).unwrap(), 0.0));
        assert!(matches!(
            roc_auc(&[1, 1], &[0.2, 0.9]),
            Err(MetricError::OneClass { only: 1, .. })
        ));
        assert!(matches!(
            roc_auc(&[0, 1], &[f64::NAN, 0.9]),
            Err(MetricError::NotFinite { index: 0, .. })
        ));
    }

    #[test]
    fn average_precision_is_the_step_sum() {
        // sklearn docs example: average_precision_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.8333...
        let ap = average_precision(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8]).unwrap();
        assert!(close(ap, 5.0 / 6.0), "{ap}");
        // A tie spanning a positive and a negative is one threshold:
        // scores 0.9(1), 0.5(1), 0.5(0), 0.1(0): P@0.9 = 1, R = .5; P@0.5 = 2/3, R = 1.
        let ap = average_precision(&[1, 1, 0, 0], &[0.9, 0.5, 0.5, 0.1]).unwrap();
        assert!(close(ap, 0.5 + 0.5 * 2.0 / 3.0), "{ap}");
    }

    #[test]
    fn kappa_and_weighted_f1() {
        // sklearn: cohen_kappa_score([0,1,2,2,1,0],[0,2,2,2,1,1]) = 0.5
        // (po = 4/6; pe = (2*1 + 2*2 + 2*3)/36 = 1/3 → (2/3-1/3)/(2/3) = 0.5)
        let t = [0, 1, 2, 2, 1, 0];
        let p = [0, 2, 2, 2, 1, 1];
        assert!(close(cohen_kappa(&t, &p, 3).unwrap(), 0.5));
        // F1 per class: c0 2*1/(2+1)=2/3, c1 2*1/(2+2)=1/2, c2 2*2/(2+3)=4/5; weights 2,2,2.
        let f1 = f1_weighted(&t, &p, 3).unwrap();
        assert!(close(f1, (2.0 / 3.0 + 0.5 + 0.8) / 3.0), "{f1}");
        // A class never predicted and never true contributes nothing.
        assert!(close(f1_weighted(&[0, 1], &[0, 1], 4).unwrap(), 1.0));
        // Agreement on one class only: kappa defined as 0 here.
        assert_eq!(cohen_kappa(&[1, 1], &[1, 1], 2).unwrap(), 0.0);
    }

    #[test]
    fn report_prints_one_metric_per_line() {
        let r = Report::from_probs(
            &[0, 1, 1, 0],
            &[
                vec![0.8, 0.2],
                vec![0.3, 0.7],
                vec![0.6, 0.4],
                vec![0.4, 0.6],
            ],
        )
        .unwrap();
        let text = r.to_string();
        assert_eq!(
            text, "balanced accuracy: 0.5000\nAUROC: 0.7500\nPR-AUC: 0.8333\n",
            "{text}"
        );
        let r = Report::from_probs(
            &[0, 1, 2],
            &[
                vec![0.8, 0.1, 0.1],
                vec![0.1, 0.8, 0.1],
                vec![0.1, 0.8, 0.1],
            ],
        )
        .unwrap();
        assert!(r
            .to_string()
            .starts_with("balanced accuracy: 0.6667\nCohen's kappa:"));
    }
}
