//! L2-regularised logistic regression, as scikit-learn's `LogisticRegression`
//! (`penalty="l2"`, intercept not penalised): a sigmoid on one weight vector for
//! two classes, a softmax for more. The objective is
//! `Σ_i w_i · loss_i + ‖W‖² / (2C)`, minimised with L-BFGS, where the sample
//! weight `w_i` is 1, or with `balanced` sklearn's `class_weight="balanced"`:
//! `n / (classes · n_class)`, so that a rare class counts as much as a common one.
//!
//! Hand-written because the crates that offer it (`linfa-logistic`,
//! `smartcore`) bring `ndarray`/`argmin` stacks of another version than the
//! workspace's, for a convex problem on a few hundred features that L-BFGS solves
//! in a hundred lines. The test checks the optimum by its gradient, and a
//! separable toy problem by its predictions.

/// A fitted model. Serialisable: a person's calibration head is part of the
/// state the daemon writes so that a restart needs no new calibration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogisticRegression {
    classes: usize,
    features: usize,
    /// Binary: `[w (features), b]`. Multi-class: `classes` rows of `[w, b]`.
    params: Vec<f64>,
}

/// Options of [`LogisticRegression::fit`].
#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// Inverse regularisation strength (sklearn's `C`).
    pub c: f64,
    /// Maximum L-BFGS iterations.
    pub max_iter: usize,
    /// Stop when the gradient's max-norm falls below this (relative to `n`).
    pub tol: f64,
    /// Weigh classes inversely to their frequency (sklearn's `class_weight="balanced"`).
    pub balanced: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            c: 1.0,
            max_iter: 500,
            tol: 1e-6,
            balanced: false,
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `log(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

impl LogisticRegression {
    /// Fits on rows `x` (all of one length) and labels `y < classes`.
    /// `classes` must be ≥ 2; rows must be non-empty.
    pub fn fit(x: &[Vec<f64>], y: &[usize], classes: usize, opts: FitOptions) -> Self {
        let features = x.first().map_or(0, Vec::len);
        let classes = classes.max(2);
        let n_params = if classes == 2 {
            features + 1
        } else {
            classes * (features + 1)
        };
        let model = Self {
            classes,
            features,
            params: vec![0.0; n_params],
        };
        let cw = class_weights(y, classes, opts.balanced);
        let objective = |p: &[f64], g: &mut [f64]| model.loss_grad(p, x, y, &cw, opts.c, g);
        let params = lbfgs(
            model.params.clone(),
            objective,
            opts.max_iter,
            opts.tol * x.len().max(1) as f64,
        );
        Self { params, ..model }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    fn loss_grad(
        &self,
        p: &[f64],
        x: &[Vec<f64>],
        y: &[usize],
        cw: &[f64],
        c: f64,
        g: &mut [f64],
    ) -> f64 {
        let d = self.features;
        g.iter_mut().for_each(|v| *v = 0.0);
        let mut loss = 0.0;
        if self.classes == 2 {
            let (w, b) = p.split_at(d);
            for (row, &t) in x.iter().zip(y) {
                let z = dot(w, row) + b[0];
                // -log σ(z) for t=1, -log(1-σ(z)) for t=0.
                loss += cw[t] * if t == 1 { softplus(-z) } else { softplus(z) };
                let r = cw[t] * (sigmoid(z) - t as f64);
                for (gj, &xj) in g[..d].iter_mut().zip(row) {
                    *gj += r * xj;
                }
                g[d] += r;
            }
            loss += dot(w, w) / (2.0 * c);
            for (gj, &wj) in g[..d].iter_mut().zip(w) {
                *gj += wj / c;
            }
        } else {
            let k = self.classes;
            let stride = d + 1;
            let mut z = vec![0.0; k];
            for (row, &t) in x.iter().zip(y) {
                for (c_, zc) in z.iter_mut().enumerate() {
                    let w = &p[c_ * stride..c_ * stride + d];
                    *zc = dot(w, row) + p[c_ * stride + d];
                }
                let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = z.iter().map(|v| (v - m).exp()).sum();
                let lse = m + sum.ln();
                loss += cw[t] * (lse - z[t]);
                for (c_, &zc) in z.iter().enumerate() {
                    let r = cw[t] * ((zc - lse).exp() - f64::from(u8::from(c_ == t)));
                    let gw = &mut g[c_ * stride..(c_ + 1) * stride];
                    for (gj, &xj) in gw[..d].iter_mut().zip(row) {
                        *gj += r * xj;
                    }
                    gw[d] += r;
                }
            }
            for c_ in 0..k {
                let w = &p[c_ * stride..c_ * stride + d];
                loss += dot(w, w) / (2.0 * c);
                for j in 0..d {
                    g[c_ * stride + j] += p[c_ * stride + j] / c;
                }
            }
        }
        loss
    }

    /// Class probabilities of one row.
    pub fn predict_proba(&self, row: &[f64]) -> Vec<f64> {
        let d = self.features;
        if self.classes == 2 {
            let p1 = sigmoid(dot(&self.params[..d], row) + self.params[d]);
            vec![1.0 - p1, p1]
        } else {
            let stride = d + 1;
            let z: Vec<f64> = (0..self.classes)
                .map(|c| {
                    dot(&self.params[c * stride..c * stride + d], row) + self.params[c * stride + d]
                })
                .collect();
            let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect()
        }
    }

    /// The gradient of the training objective at the fitted parameters
    /// (for tests and diagnostics: near zero at the optimum).
    pub fn gradient_at_fit(&self, x: &[Vec<f64>], y: &[usize], opts: FitOptions) -> Vec<f64> {
        let mut g = vec![0.0; self.params.len()];
        let cw = class_weights(y, self.classes, opts.balanced);
        self.loss_grad(&self.params, x, y, &cw, opts.c, &mut g);
        g
    }
}

/// Per-class sample weights: all 1, or `n / (classes · n_class)` when balanced.
fn class_weights(y: &[usize], classes: usize, balanced: bool) -> Vec<f64> {
    let mut counts = vec![0usize; classes];
    for &t in y {
        if let Some(c) = counts.get_mut(t) {
            *c += 1;
        }
    }
    counts
        .iter()
        .map(|&n_c| {
            if balanced && n_c > 0 {
                y.len() as f64 / (classes as f64 * n_c as f64)
            } else {
                1.0
            }
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// L-BFGS (memory 10) with a backtracking Armijo line search. `f(x, g)` returns
/// the objective and writes the gradient. Stops when `max |g| < gtol`, after
/// `max_iter` iterations, or when no step decreases the objective.
fn lbfgs<F>(mut x: Vec<f64>, mut f: F, max_iter: usize, gtol: f64) -> Vec<f64>
where
    F: FnMut(&[f64], &mut [f64]) -> f64,
{
    const M: usize = 10;
    let n = x.len();
    let mut g = vec![0.0; n];
    let mut fx = f(&x, &mut g);
    let mut s_hist: Vec<Vec<f64>> = Vec::new();
    let mut y_hist: Vec<Vec<f64>> = Vec::new();
    let mut rho: Vec<f64> = Vec::new();
    let mut x_new = vec![0.0; n];
    let mut g_new = vec![0.0; n];
    for _ in 0..max_iter {
        if g.iter().fold(0.0f64, |m, v| m.max(v.abs())) < gtol {
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alpha = vec![0.0; s_hist.len()];
        for i in (0..s_hist.len()).rev() {
            alpha[i] = rho[i] * dot(&s_hist[i], &q);
            for (qj, yj) in q.iter_mut().zip(&y_hist[i]) {
                *qj -= alpha[i] * yj;
            }
        }
        if let (Some(s), Some(y)) = (s_hist.last(), y_hist.last()) {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|v| *v *= gamma);
        } else {
            let norm = dot(&g, &g).sqrt().max(1e-12);
            q.iter_mut().for_each(|v| *v /= norm);
        }
        for i in 0..s_hist.len() {
            let beta = rho[i] * dot(&y_hist[i], &q);
            for (qj, sj) in q.iter_mut().zip(&s_hist[i]) {
                *qj += sj * (alpha[i] - beta);
            }
        }
        let d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        let d = if slope >= 0.0 {
            // Not a descent direction (numerical trouble): restart on -g.
            s_hist.clear();
            y_hist.clear();
            rho.clear();
            slope = -dot(&g, &g);
            g.iter().map(|v| -v).collect()
        } else {
            d
        };
        let mut step = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            for ((xn, &xi), &di) in x_new.iter_mut().zip(&x).zip(&d) {
                *xn = xi + step * di;
            }
            let f_new = f(&x_new, &mut g_new);
            if f_new.is_finite() && f_new <= fx + 1e-4 * step * slope {
                let s: Vec<f64> = x_new.iter().zip(&x).map(|(a, b)| a - b).collect();
                let y: Vec<f64> = g_new.iter().zip(&g).map(|(a, b)| a - b).collect();
                let sy = dot(&s, &y);
                if sy > 1e-12 {
                    if s_hist.len() == M {
                        s_hist.remove(0);
                        y_hist.remove(0);
                        rho.remove(0);
                    }
                    s_hist.push(s);
                    y_hist.push(y);
                    rho.push(1.0 / sy);
                }
                std::mem::swap(&mut x, &mut x_new);
                std::mem::swap(&mut g, &mut g_new);
                fx = f_new;
                accepted = true;
                break;
            }
            step *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(classes: usize) -> (Vec<Vec<f64>>, Vec<usize>) {
        // Gaussian-ish clusters from a deterministic sequence.
        let mut x = Vec::new();
        let mut y = Vec::new();
        let mut s = 12345u64;
        let mut rnd = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        for i in 0..300 {
            let c = i % classes;
            let cx = (c as f64 * 2.0).cos() * 2.0;
            let cy = (c as f64 * 2.0).sin() * 2.0;
            x.push(vec![cx + rnd(), cy + rnd(), rnd()]);
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn binary_fit_reaches_the_optimum_and_separates() {
        let (x, y) = toy(2);
        let opts = FitOptions {
            c: 1.0,
            ..FitOptions::default()
        };
        let m = LogisticRegression::fit(&x, &y, 2, opts);
        let g = m.gradient_at_fit(&x, &y, opts);
        assert!(g.iter().all(|v| v.abs() < 1e-3), "{g:?}");
        let correct = x
            .iter()
            .zip(&y)
            .filter(|(r, &t)| usize::from(m.predict_proba(r)[1] >= 0.5) == t)
            .count();
        assert_eq!(correct, x.len());
    }

    #[test]
    fn multiclass_fit_reaches_the_optimum() {
        let (x, y) = toy(3);
        let opts = FitOptions {
            c: 0.1,
            ..FitOptions::default()
        };
        let m = LogisticRegression::fit(&x, &y, 3, opts);
        let g = m.gradient_at_fit(&x, &y, opts);
        assert!(g.iter().all(|v| v.abs() < 1e-3), "{g:?}");
        let p = m.predict_proba(&x[0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let best = (0..p.len()).fold(0, |b, c| if p[c] > p[b] { c } else { b });
        assert_eq!(best, y[0]);
    }

    #[test]
    fn balanced_weights_shift_the_intercept_towards_the_rare_class() {
        // One uninformative feature, 3:1 labels: the unweighted optimum
        // predicts p(1) = 1/4, the balanced one p(1) = 1/2.
        let x: Vec<Vec<f64>> = (0..400)
            .map(|i| vec![((i * 7919) % 13) as f64 / 13.0 - 0.5])
            .collect();
        let y: Vec<usize> = (0..400).map(|i| usize::from(i % 4 == 0)).collect();
        let plain = FitOptions {
            c: 1e-6,
            ..FitOptions::default()
        };
        let m = LogisticRegression::fit(&x, &y, 2, plain);
        assert!((m.predict_proba(&[0.0])[1] - 0.25).abs() < 1e-3);
        let balanced = FitOptions {
            balanced: true,
            ..plain
        };
        let m = LogisticRegression::fit(&x, &y, 2, balanced);
        assert!((m.predict_proba(&[0.0])[1] - 0.5).abs() < 1e-3);
        let g = m.gradient_at_fit(&x, &y, balanced);
        assert!(g.iter().all(|v| v.abs() < 1e-3), "{g:?}");
    }
}
