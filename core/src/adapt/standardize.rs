//! Per-feature standardisation (scikit-learn's `StandardScaler`: population
//! standard deviation, a constant feature left unscaled), fitted on the rows a
//! head is trained on and applied to every row it classifies.

/// Means and standard deviations of each feature.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standardizer {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Standardizer {
    /// Fits on `rows` (all of one length).
    pub fn fit(rows: &[Vec<f64>]) -> Self {
        let d = rows.first().map_or(0, Vec::len);
        let n = rows.len().max(1) as f64;
        let mut mean = vec![0.0; d];
        for r in rows {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / n;
            }
        }
        let mut var = vec![0.0; d];
        for r in rows {
            for ((s, v), m) in var.iter_mut().zip(r).zip(&mean) {
                *s += (v - m) * (v - m) / n;
            }
        }
        let std = var
            .into_iter()
            .map(|v| if v > 1e-24 { v.sqrt() } else { 1.0 })
            .collect();
        Self { mean, std }
    }

    /// Number of features it was fitted on.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Standardises every row in place.
    pub fn apply(&self, rows: &mut [Vec<f64>]) {
        for r in rows {
            self.apply_row(r);
        }
    }

    /// Standardises one row in place.
    pub fn apply_row(&self, row: &mut [f64]) {
        for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
            *v = (*v - m) / s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardised_rows_have_zero_mean_unit_std_and_constants_stay_finite() {
        let mut rows = vec![vec![1.0, 5.0], vec![3.0, 5.0], vec![5.0, 5.0]];
        let s = Standardizer::fit(&rows);
        s.apply(&mut rows);
        let col0: Vec<f64> = rows.iter().map(|r| r[0]).collect();
        assert!(col0.iter().sum::<f64>().abs() < 1e-12);
        let var = col0.iter().map(|v| v * v).sum::<f64>() / 3.0;
        assert!((var - 1.0).abs() < 1e-12, "{var}");
        assert!(rows.iter().all(|r| r[1] == 0.0), "{rows:?}");
    }
}
