//! Per-step schedules: linear warm-up, then a half cosine down to a floor.
//!
//! Same values as the official `utils.cosine_scheduler(base, final, epochs,
//! steps_per_epoch, warmup_epochs, start_warmup_value, warmup_steps)`: the warm-up is
//! `numpy.linspace(start, base, warmup_iters)` (both ends included) and step `i` of the
//! remaining `n` steps gets `final + ½(base − final)(1 + cos(π i / n))`. The whole
//! table is computed up front, so the value of any global step is known after a resume.

/// Errors in schedule parameters.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("warm-up of {warmup} steps leaves no step for the cosine part of a {total}-step run: lower `optim.warmup_epochs` (or `optim.warmup_steps`) or raise `train.epochs`")]
    WarmupTooLong { warmup: usize, total: usize },
    #[error("a run of 0 steps: the training set is smaller than one batch or `train.epochs` is 0")]
    Empty,
}

/// The parameters of one schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cosine {
    pub base: f64,
    pub final_value: f64,
    pub epochs: usize,
    pub steps_per_epoch: usize,
    pub warmup_epochs: usize,
    pub start_warmup: f64,
    /// Overrides `warmup_epochs` when set (official `--warmup_steps > 0`).
    pub warmup_steps: Option<usize>,
}

impl Cosine {
    /// The value of every global step, `epochs · steps_per_epoch` of them.
    pub fn table(&self) -> Result<Vec<f64>, ScheduleError> {
        let total = self.epochs * self.steps_per_epoch;
        if total == 0 {
            return Err(ScheduleError::Empty);
        }
        let warmup = self
            .warmup_steps
            .filter(|&w| w > 0)
            .unwrap_or(self.warmup_epochs * self.steps_per_epoch);
        if warmup >= total {
            return Err(ScheduleError::WarmupTooLong { warmup, total });
        }
        let mut out = Vec::with_capacity(total);
        if self.warmup_epochs > 0 || self.warmup_steps.is_some_and(|w| w > 0) {
            out.extend(linspace(self.start_warmup, self.base, warmup));
        }
        let n = total - out.len();
        for i in 0..n {
            let c = (std::f64::consts::PI * i as f64 / n as f64).cos();
            out.push(self.final_value + 0.5 * (self.base - self.final_value) * (1.0 + c));
        }
        Ok(out)
    }
}

/// `numpy.linspace(start, stop, num)`: `start + i·step` with `step = (stop − start)/(num − 1)`,
/// the last value set to `stop` exactly.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            v[num - 1] = stop;
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ft(epochs: usize, spe: usize, warm: usize) -> Cosine {
        Cosine {
            base: 5e-4,
            final_value: 1e-6,
            epochs,
            steps_per_epoch: spe,
            warmup_epochs: warm,
            start_warmup: 1e-6,
            warmup_steps: None,
        }
    }

    #[test]
    fn warmup_then_cosine() {
        let t = ft(10, 4, 2).table().unwrap();
        assert_eq!(t.len(), 40);
        assert_eq!(t[0], 1e-6);
        assert_eq!(t[7], 5e-4, "warm-up ends exactly on the base value");
        assert!(t[1] > t[0] && t[6] < t[7]);
        assert_eq!(t[8], 5e-4, "cosine starts at the base value");
        for w in t[8..].windows(2) {
            assert!(w[1] < w[0]);
        }
        // Last value: final + ½(base−final)(1+cos(π·31/32)).
        let want = 1e-6 + 0.5 * (5e-4 - 1e-6) * (1.0 + (std::f64::consts::PI * 31.0 / 32.0).cos());
        assert_eq!(t[39], want);
        assert!(t[39] > 1e-6 && t[39] < 3e-6);
    }

    #[test]
    fn no_warmup_and_warmup_steps_override() {
        let t = ft(2, 3, 0).table().unwrap();
        assert_eq!(t[0], 5e-4);
        let mut c = ft(2, 3, 1);
        c.warmup_steps = Some(2);
        let t = c.table().unwrap();
        assert_eq!(&t[..2], &[1e-6, 5e-4]);
    }

    #[test]
    fn errors_name_the_fix() {
        assert_eq!(ft(0, 3, 0).table(), Err(ScheduleError::Empty));
        let e = ft(2, 3, 2).table().unwrap_err();
        assert!(e.to_string().contains("warmup_epochs"), "{e}");
    }
}
