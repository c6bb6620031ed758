//! The official training criteria, written on tch ops.
//!
//! * Fine-tuning, several classes: timm's `LabelSmoothingCrossEntropy(0.1)`:
//!   `mean((1 − s)·nll + s·mean_k(−log p_k))`.
//! * Fine-tuning, one logit: `BCEWithLogitsLoss` against the 0/1 label.
//! * Pretraining: `CrossEntropyLoss` of the masked rows against the tokenizer's codes
//!   plus the same for the symmetric mask ([`masked_code_loss`]).
//! * Tokenizer: mean squared errors, in [`crate::model`] next to the quantizer.
use tch::{Kind, Reduction, Tensor};

/// Label-smoothing cross-entropy over `logits` `[B, K]` and class ids `target` `[B]` (i64).
/// `smoothing = 0` is the plain cross-entropy.
pub fn label_smoothing_ce(logits: &Tensor, target: &Tensor, smoothing: f64) -> Tensor {
    let logprobs = logits.log_softmax(-1, Kind::Float);
    if smoothing == 0.0 {
        return logprobs.nll_loss(target);
    }
    let nll = -logprobs
        .gather(-1, &target.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let smooth = -logprobs.mean_dim(-1, false, Kind::Float);
    ((1.0 - smoothing) * nll + smoothing * smooth).mean(Kind::Float)
}

/// BCE with logits for a single-logit head: `logits` `[B, 1]`, `target` `[B]` class ids.
pub fn bce_single_logit(logits: &Tensor, target: &Tensor) -> Tensor {
    let t = target.to_kind(Kind::Float).unsqueeze(-1);
    logits.binary_cross_entropy_with_logits::<Tensor>(&t, None, None, Reduction::Mean)
}

/// The fine-tuning criterion of the official script: BCE when the head has one logit,
/// label-smoothing cross-entropy otherwise.
pub fn classification_loss(logits: &Tensor, target: &Tensor, smoothing: f64) -> Tensor {
    if logits.size().last() == Some(&1) {
        bce_single_logit(logits, target)
    } else {
        label_smoothing_ce(logits, target, smoothing)
    }
}

/// [`classification_loss`] with a weight per class (`class_weights` `[K]`, f32): the
/// per-sample losses are averaged with weights `w[y]`, `Σ w[yᵢ]·lᵢ / Σ w[yᵢ]`, as
/// torch's weighted cross-entropy averages. Not part of the official recipe: an option
/// for imbalanced tasks whose selection metric is the balanced accuracy.
pub fn weighted_classification_loss(
    logits: &Tensor,
    target: &Tensor,
    smoothing: f64,
    class_weights: &Tensor,
) -> Tensor {
    let w = class_weights.index_select(0, target);
    let per = if logits.size().last() == Some(&1) {
        let t = target.to_kind(Kind::Float).unsqueeze(-1);
        logits
            .binary_cross_entropy_with_logits::<Tensor>(&t, None, None, Reduction::None)
            .squeeze_dim(-1)
    } else {
        let logprobs = logits.log_softmax(-1, Kind::Float);
        let nll = -logprobs
            .gather(-1, &target.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let smooth = -logprobs.mean_dim(-1, false, Kind::Float);
        (1.0 - smoothing) * nll + smoothing * smooth
    };
    (per * &w).sum(Kind::Float) / w.sum(Kind::Float)
}

/// Class probabilities from logits: sigmoid for one logit (returned as [B, 2] with
/// `p(class 1)` in column 1), softmax otherwise.
pub fn probabilities(logits: &Tensor) -> Tensor {
    if logits.size().last() == Some(&1) {
        let p1 = logits.sigmoid();
        Tensor::cat(&[1.0 - &p1, p1], -1)
    } else {
        logits.softmax(-1, Kind::Float)
    }
}

/// Pretraining loss: `CE(x_rec, codes[mask]) + CE(x_rec_sym, codes[~mask])`, with the
/// rows of `x_rec`/`x_rec_sym` in boolean-gather order (batch-major, ascending token),
/// as the model returns them. Returns (loss, masked accuracy, symmetric accuracy).
pub fn masked_code_loss(
    x_rec: &Tensor,
    x_rec_sym: &Tensor,
    codes: &Tensor,
    mask: &Tensor,
) -> (Tensor, Tensor, Tensor) {
    let labels = codes.masked_select(mask);
    let labels_sym = codes.masked_select(&mask.logical_not());
    let loss =
        x_rec.cross_entropy_for_logits(&labels) + x_rec_sym.cross_entropy_for_logits(&labels_sym);
    (
        loss,
        accuracy(x_rec, &labels),
        accuracy(x_rec_sym, &labels_sym),
    )
}

/// Top-1 accuracy of `logits` `[n, K]` against ids `labels` `[n]`, as a 0-d tensor.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits
        .detach()
        .argmax(-1, false)
        .eq_tensor(labels)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_smoothing_matches_its_definition() {
        let logits = Tensor::from_slice(&[2.0f32, -1.0, 0.5, 0.0, 1.0, 3.0]).view([2, 3]);
        let target = Tensor::from_slice(&[0i64, 2]);
        let got = label_smoothing_ce(&logits, &target, 0.1).double_value(&[]);
        // By hand in f64.
        let rows = [[2.0f64, -1.0, 0.5], [0.0, 1.0, 3.0]];
        let mut want = 0.0;
        for (r, t) in rows.iter().zip([0usize, 2]) {
            let lse = r.iter().map(|v| v.exp()).sum::<f64>().ln();
            let lp: Vec<f64> = r.iter().map(|v| v - lse).collect();
            want += 0.9 * -lp[t] + 0.1 * -(lp.iter().sum::<f64>() / 3.0);
        }
        want /= 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // Zero smoothing is plain CE.
        let ce = logits.cross_entropy_for_logits(&target).double_value(&[]);
        assert!((label_smoothing_ce(&logits, &target, 0.0).double_value(&[]) - ce).abs() < 1e-7);
    }

    #[test]
    fn class_weights_average_like_torch() {
        let logits = Tensor::from_slice(&[2.0f32, -1.0, 0.5, 0.0, 1.0, 3.0]).view([3, 2]);
        let target = Tensor::from_slice(&[0i64, 1, 1]);
        let ones = Tensor::from_slice(&[1.0f32, 1.0]);
        let a = weighted_classification_loss(&logits, &target, 0.1, &ones).double_value(&[]);
        let b = label_smoothing_ce(&logits, &target, 0.1).double_value(&[]);
        assert!((a - b).abs() < 1e-6, "unit weights = unweighted");
        // Weight 3 on class 0: its one sample counts like three.
        let w = Tensor::from_slice(&[3.0f32, 1.0]);
        let got = weighted_classification_loss(&logits, &target, 0.0, &w).double_value(&[]);
        let per: Vec<f64> = Vec::try_from(
            &logits
                .log_softmax(-1, Kind::Double)
                .gather(-1, &target.unsqueeze(-1), false)
                .squeeze_dim(-1)
                .neg(),
        )
        .unwrap();
        let want = (3.0 * per[0] + per[1] + per[2]) / 5.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn bce_for_one_logit() {
        let logits = Tensor::from_slice(&[0.0f32, 2.0]).view([2, 1]);
        let target = Tensor::from_slice(&[1i64, 0]);
        let got = classification_loss(&logits, &target, 0.1).double_value(&[]);
        let want = (std::f64::consts::LN_2 + (1.0 + 2f64.exp()).ln()) / 2.0;
        assert!((got - want).abs() < 1e-6);
        let p = probabilities(&logits);
        assert_eq!(p.size(), vec![2, 2]);
        assert!((p.double_value(&[1, 1]) - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-6);
    }

    #[test]
    fn masked_loss_uses_gather_order() {
        // Two samples, two tokens; codes [[3,1],[0,2]], mask [[T,F],[F,T]].
        let codes = Tensor::from_slice(&[3i64, 1, 0, 2]).view([2, 2]);
        let mask = Tensor::from_slice(&[true, false, false, true]).view([2, 2]);
        // Perfect logits for [3, 2] (masked) and [1, 0] (symmetric).
        let mk = |ids: &[i64]| Tensor::from_slice(ids).one_hot(4).to_kind(Kind::Float) * 20.0;
        let (loss, acc, acc_sym) = masked_code_loss(&mk(&[3, 2]), &mk(&[1, 0]), &codes, &mask);
        assert!(loss.double_value(&[]) < 1e-6);
        assert_eq!(acc.double_value(&[]), 1.0);
        assert_eq!(acc_sym.double_value(&[]), 1.0);
        let (_, acc_bad, _) = masked_code_loss(&mk(&[2, 3]), &mk(&[1, 0]), &codes, &mask);
        assert_eq!(acc_bad.double_value(&[]), 0.0);
    }
}
