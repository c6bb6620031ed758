//! The streaming session: windows in, "calibrating (s left)" or class
//! probabilities out, one window at a time and in time order.
//!
//! Times are seconds since the session started (the first sample the daemon
//! received, or the first file of an evaluated session). A window is the span
//! `[end − window_s, end]`; it is learned from only when it lies wholly inside
//! the baseline span or a calibration block, so calibration data and the
//! windows scored after it never share a sample.

use super::features::FeatureSpace;
use super::head::{Head, PopulationModel, CALIBRATION_C};
use super::state::{PersonState, STATE_FORMAT};
use super::{AdaptError, Mode, Protocol};

/// Slack on time comparisons: window ends are sample counts / 200 Hz.
const EPS: f64 = 1e-6;

/// The answer to one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Still learning; no probabilities may be published.
    Calibrating { seconds_left: f64 },
    /// Class probabilities, in the classes' order.
    Classified { probabilities: Vec<f64> },
}

/// What a session is built from.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub protocol: Protocol,
    /// Class names, in the order of the probabilities.
    pub classes: Vec<String>,
    /// The features the windows will carry.
    pub space: FeatureSpace,
    /// Length of a window in seconds.
    pub window_s: f64,
    /// A head trained on other people: `none` (raw features, or a model's own
    /// softmax) and `baseline` (re-centred features) need one; `calibration`
    /// ignores it.
    pub population: Option<PopulationModel>,
}

/// Mean features over the first `baseline_s` seconds of a session. Public so
/// that training people are re-centred by exactly the statistics a live
/// session computes.
#[derive(Debug, Clone)]
pub struct BaselineStats {
    baseline_s: f64,
    window_s: f64,
    sum: Vec<f64>,
    windows: usize,
    now_s: f64,
}

impl BaselineStats {
    pub fn new(baseline_s: f64, window_s: f64) -> Self {
        Self {
            baseline_s,
            window_s,
            sum: Vec::new(),
            windows: 0,
            now_s: 0.0,
        }
    }

    /// Whether the window ending at `end_s` lies inside the baseline span.
    pub fn contains(&self, end_s: f64) -> bool {
        end_s - self.window_s >= -EPS && end_s <= self.baseline_s + EPS
    }

    /// Offers a window; returns whether it was used.
    pub fn offer(&mut self, end_s: f64, row: &[f64]) -> bool {
        self.now_s = self.now_s.max(end_s);
        if !self.contains(end_s) {
            return false;
        }
        if self.sum.is_empty() {
            self.sum = vec![0.0; row.len()];
        }
        for (s, v) in self.sum.iter_mut().zip(row) {
            *s += v;
        }
        self.windows += 1;
        true
    }

    /// Seconds of the baseline still to come.
    pub fn seconds_left(&self) -> f64 {
        (self.baseline_s - self.now_s).max(0.0)
    }

    /// Whether the session has passed the end of the baseline span.
    pub fn is_complete(&self) -> bool {
        self.now_s >= self.baseline_s - EPS
    }

    /// Windows used so far.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// The mean features of the baseline windows (`None` before the first).
    pub fn centre(&self) -> Option<Vec<f64>> {
        (self.windows > 0).then(|| self.sum.iter().map(|s| s / self.windows as f64).collect())
    }
}

/// A labelled block opened by a marker: class, start, and its end once the
/// class's remaining seconds are used up or the next marker closes it.
#[derive(Debug, Clone)]
struct Block {
    class: usize,
    start_s: f64,
    cap_s: f64,
}

/// Labelled calibration blocks and the windows learned from them.
#[derive(Debug, Clone)]
struct Calibration {
    want_s: Vec<f64>,
    closed_s: Vec<f64>,
    open: Option<Block>,
    window_s: f64,
    now_s: f64,
    rows: Vec<Vec<f64>>,
    labels: Vec<usize>,
}

impl Calibration {
    fn new(want_s: Vec<f64>, window_s: f64) -> Self {
        let n = want_s.len();
        Self {
            want_s,
            closed_s: vec![0.0; n],
            open: None,
            window_s,
            now_s: 0.0,
            rows: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// A marker at `at_s`: closes the open block, opens one of `class`.
    fn marker(&mut self, at_s: f64, class: Option<usize>) {
        if let Some(b) = self.open.take() {
            self.closed_s[b.class] += (at_s.min(b.cap_s) - b.start_s).max(0.0);
        }
        self.open = class.map(|c| Block {
            class: c,
            start_s: at_s,
            cap_s: at_s + (self.want_s[c] - self.closed_s[c]).max(0.0),
        });
    }

    /// Seconds of class `c` covered so far.
    fn got_s(&self, c: usize) -> f64 {
        let open = match &self.open {
            Some(b) if b.class == c => (self.now_s.min(b.cap_s) - b.start_s).max(0.0),
            _ => 0.0,
        };
        self.closed_s[c] + open
    }

    fn offer(&mut self, end_s: f64, row: &[f64]) -> bool {
        self.now_s = self.now_s.max(end_s);
        let Some(b) = &self.open else {
            return false;
        };
        let inside = end_s - self.window_s >= b.start_s - EPS && end_s <= b.cap_s + EPS;
        if inside {
            self.rows.push(row.to_vec());
            self.labels.push(b.class);
        }
        inside
    }

    fn seconds_left(&self) -> f64 {
        (0..self.want_s.len())
            .map(|c| (self.want_s[c] - self.got_s(c)).max(0.0))
            .sum()
    }

    fn is_complete(&self) -> bool {
        (0..self.want_s.len()).all(|c| self.got_s(c) >= self.want_s[c] - EPS)
    }
}

/// What a session is still learning.
#[derive(Debug, Clone)]
enum Learner {
    Baseline(BaselineStats),
    Calibration(Calibration),
}

#[derive(Debug, Clone)]
enum Phase {
    Learning(Learner),
    Ready(PersonState),
}

/// One wearer's session under one protocol. Feed it markers and windows in
/// time order; it answers each window once and never revisits it.
#[derive(Debug, Clone)]
pub struct Session {
    spec: SessionSpec,
    last_end_s: f64,
    phase: Phase,
}

impl Session {
    /// A fresh session; checks the protocol against the classes, window length
    /// and population head before any window arrives.
    pub fn new(spec: SessionSpec) -> Result<Self, AdaptError> {
        let phase = match spec.protocol.mode {
            Mode::None => Phase::Ready(PersonState {
                format: STATE_FORMAT,
                space: spec.space.clone(),
                mode: Mode::None,
                classes: spec.classes.clone(),
                centre: None,
                head: population_head(&spec, false)?.clone(),
                windows: 0,
            }),
            Mode::Baseline => {
                population_head(&spec, true)?;
                check_length("baseline_s", spec.protocol.baseline_s, spec.window_s)?;
                Phase::Learning(Learner::Baseline(BaselineStats::new(
                    spec.protocol.baseline_s,
                    spec.window_s,
                )))
            }
            Mode::Calibration => Phase::Learning(Learner::Calibration(Calibration::new(
                want_s(&spec)?,
                spec.window_s,
            ))),
        };
        Ok(Self {
            spec,
            last_end_s: f64::NEG_INFINITY,
            phase,
        })
    }

    /// A session that resumes from a saved state (no new calibration); refuses
    /// a state made for other features, another protocol or other classes.
    pub fn resume(spec: SessionSpec, state: PersonState) -> Result<Self, AdaptError> {
        state.check(&spec.space, spec.protocol.mode, &spec.classes)?;
        Ok(Self {
            spec,
            last_end_s: f64::NEG_INFINITY,
            phase: Phase::Ready(state),
        })
    }

    /// A calibration marker at `at_s`: the block that follows is of `class`
    /// (`None`: no labelled block, e.g. a pause). Ignored outside
    /// `calibration` and once calibration is complete; a class the model does
    /// not have is an error.
    pub fn marker(&mut self, at_s: f64, class: Option<&str>) -> Result<(), AdaptError> {
        let idx = class
            .map(|c| class_index(&self.spec.classes, c))
            .transpose()?;
        if let Phase::Learning(Learner::Calibration(cal)) = &mut self.phase {
            cal.marker(at_s, idx);
        }
        Ok(())
    }

    /// The answer to the window ending at `end_s` (session seconds) with these
    /// features. Windows must come in time order.
    pub fn push(&mut self, end_s: f64, features: &[f64]) -> Result<Answer, AdaptError> {
        if features.len() != self.spec.space.dim {
            return Err(AdaptError::FeatureDim {
                got: features.len(),
                want: self.spec.space.dim,
                space: self.spec.space.extractor.clone(),
            });
        }
        if features.iter().any(|v| !v.is_finite()) {
            return Err(AdaptError::NonFinite);
        }
        if end_s < self.last_end_s - EPS {
            return Err(AdaptError::OutOfOrder {
                end_s,
                last_s: self.last_end_s,
            });
        }
        self.last_end_s = end_s;
        let learner = match &mut self.phase {
            Phase::Ready(state) => {
                return Ok(Answer::Classified {
                    probabilities: state.classify(features),
                })
            }
            Phase::Learning(l) => l,
        };
        let (used, complete, left) = match learner {
            Learner::Baseline(b) => (b.offer(end_s, features), b.is_complete(), b.seconds_left()),
            Learner::Calibration(c) => {
                (c.offer(end_s, features), c.is_complete(), c.seconds_left())
            }
        };
        if !complete {
            return Ok(Answer::Calibrating { seconds_left: left });
        }
        let state = self.learn()?;
        let answer = if used {
            Answer::Calibrating { seconds_left: 0.0 }
        } else {
            Answer::Classified {
                probabilities: state.classify(features),
            }
        };
        self.phase = Phase::Ready(state);
        Ok(answer)
    }

    /// Turns what was collected into the person's state.
    fn learn(&self) -> Result<PersonState, AdaptError> {
        let Phase::Learning(learner) = &self.phase else {
            unreachable!("learn is only called while learning");
        };
        let (centre, head, windows) = match learner {
            Learner::Baseline(b) => {
                let centre = b.centre().ok_or(AdaptError::TooShort {
                    what: "baseline_s".into(),
                    value: self.spec.protocol.baseline_s,
                    window_s: self.spec.window_s,
                })?;
                (
                    Some(centre),
                    population_head(&self.spec, true)?.clone(),
                    b.windows(),
                )
            }
            Learner::Calibration(c) => {
                for (k, name) in self.spec.classes.iter().enumerate() {
                    if !c.labels.contains(&k) {
                        return Err(AdaptError::NoWindows {
                            class: name.clone(),
                            window_s: self.spec.window_s,
                        });
                    }
                }
                let head =
                    Head::fit_logistic(&c.rows, &c.labels, &self.spec.classes, CALIBRATION_C)?;
                (None, head, c.rows.len())
            }
        };
        Ok(PersonState {
            format: STATE_FORMAT,
            space: self.spec.space.clone(),
            mode: self.spec.protocol.mode,
            classes: self.spec.classes.clone(),
            centre,
            head,
            windows,
        })
    }

    /// Seconds of calibration (or baseline) still to come; 0 once ready.
    pub fn seconds_left(&self) -> f64 {
        match &self.phase {
            Phase::Ready(_) => 0.0,
            Phase::Learning(Learner::Baseline(b)) => b.seconds_left(),
            Phase::Learning(Learner::Calibration(c)) => c.seconds_left(),
        }
    }

    /// What was learned, once ready (write it to the `state:` file).
    pub fn state(&self) -> Option<&PersonState> {
        match &self.phase {
            Phase::Ready(s) => Some(s),
            Phase::Learning(_) => None,
        }
    }

    /// The protocol this session follows.
    pub fn spec(&self) -> &SessionSpec {
        &self.spec
    }

    /// At the end of a session: an error naming what was short if it never
    /// finished calibrating.
    pub fn finish(&self) -> Result<(), AdaptError> {
        match &self.phase {
            Phase::Ready(_) => Ok(()),
            Phase::Learning(Learner::Baseline(b)) => Err(AdaptError::BaselineShort {
                got_s: self.spec.protocol.baseline_s - b.seconds_left(),
                want_s: self.spec.protocol.baseline_s,
            }),
            Phase::Learning(Learner::Calibration(c)) => {
                let k = (0..c.want_s.len())
                    .find(|&k| c.got_s(k) < c.want_s[k] - EPS)
                    .unwrap_or(0);
                let got_s = c.got_s(k);
                if got_s <= EPS {
                    return Err(AdaptError::CalibrationMissing {
                        class: self.spec.classes[k].clone(),
                        want_s: c.want_s[k],
                    });
                }
                Err(AdaptError::CalibrationShort {
                    class: self.spec.classes[k].clone(),
                    got_s,
                    want_s: c.want_s[k],
                    got_floor: got_s.floor() as u64,
                })
            }
        }
    }
}

/// The population head for `none` (raw) or `baseline` (re-centred), checked
/// against the session's features and classes.
fn population_head(spec: &SessionSpec, recentred: bool) -> Result<&Head, AdaptError> {
    let pop = spec
        .population
        .as_ref()
        .ok_or_else(|| AdaptError::NoPopulationHead {
            mode: spec.protocol.mode,
            space: spec.space.to_string(),
        })?;
    if pop.space != spec.space || pop.recentred != recentred || pop.classes != spec.classes {
        let want = PopulationModel {
            space: spec.space.clone(),
            classes: spec.classes.clone(),
            recentred,
            head: Head::Softmax,
        };
        return Err(AdaptError::PopulationMismatch {
            got: format!("{} [{}]", pop.describe(), pop.classes.join(", ")),
            want: format!("{} [{}]", want.describe(), spec.classes.join(", ")),
        });
    }
    Ok(&pop.head)
}

/// Seconds asked per class, in the classes' order; every class must be asked
/// for, at least one window long, and every name must be a class.
fn want_s(spec: &SessionSpec) -> Result<Vec<f64>, AdaptError> {
    let mut want = vec![None; spec.classes.len()];
    for (name, s) in &spec.protocol.calibration_s {
        let k = class_index(&spec.classes, name)?;
        check_length(&format!("calibration_s.{name}"), *s, spec.window_s)?;
        want[k] = Some(*s);
    }
    want.into_iter()
        .enumerate()
        .map(|(k, w)| {
            w.ok_or_else(|| AdaptError::MissingClass {
                class: spec.classes[k].clone(),
                classes: spec.classes.join(", "),
            })
        })
        .collect()
}

fn check_length(what: &str, value: f64, window_s: f64) -> Result<(), AdaptError> {
    if value.is_nan() || value + EPS < window_s {
        return Err(AdaptError::TooShort {
            what: what.to_string(),
            value,
            window_s,
        });
    }
    Ok(())
}

fn class_index(classes: &[String], name: &str) -> Result<usize, AdaptError> {
    classes
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| AdaptError::UnknownClass {
            class: name.to_string(),
            classes: classes.join(", "),
        })
}
