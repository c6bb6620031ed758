//! The daemon's side of session adaptation (`adaptation:` in the config, issue
//! 17): it builds the features and the [`Session`] of `labram_core::adapt` (the
//! code `labram-trainer evaluate --adaptation` drives over recorded sessions,
//! so the two cannot diverge), gives every window its session time, delivers
//! calibration markers in time order and writes what was learned.
//!
//! Session time. `evaluate` stamps the window ending at 200-Hz output sample
//! `e` with `end_s = e / 200`, where `e` is what the resampler has produced
//! after the window's last input frame; the daemon computes it from the
//! window's input frame count with the same function
//! (`labram_core::window::end_seconds`, in [`SessionClock::end_s`]). A
//! reconnect restarts the stage's frame count; the session clock then carries
//! on from the signal time already received (the outage itself takes no
//! session time), so a baseline or calibration cut by a lost stream resumes
//! where it stopped and windows stay in time order.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use labram_core::adapt::{
    AdaptError, Answer, Concat, FeatureError, FeatureExtractor, FeatureSpace, LogBandPower, Mode,
    ModelLogits, PersonState, PopulationModel, Protocol, Session, SessionSpec, StateError,
};
use labram_core::card::{ModelCard, SAMPLE_RATE_HZ};
use labram_core::inference::Classifier;
use labram_core::window::end_seconds;

use crate::config::{AdaptationConfig, FeatureKind};

/// Slack on session-time comparisons (as `labram_core::adapt`).
const EPS: f64 = 1e-6;

/// Why adaptation cannot start; each names the key or file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("adaptation.population {path}: cannot read it: {source}; give the file of a head trained on other people")]
    PopulationIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("adaptation.population {path}: not a population head (labram_core::adapt::PopulationModel YAML): {source}")]
    PopulationParse {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("adaptation.population {path} was trained on {got}, which is none of this model's feature sets (logits: {logits}; bandpower: {bandpower}); set adaptation.features, or train the head for this model")]
    NoFeatureMatch {
        path: PathBuf,
        got: String,
        logits: String,
        bandpower: String,
    },
    #[error("adaptation needs a model with one output per class; this model has a single logit for {class}: re-export it with two classes")]
    SingleLogit { class: String },
    #[error("adaptation: {0}")]
    Adapt(#[source] AdaptError),
    #[error("adaptation.population is missing: baseline re-centres features before a head trained on other people's re-centred features, and neither the config nor the model card ({card}) names one; give adaptation.population (labram_core::adapt::PopulationModel YAML), or use calibration")]
    NoPopulation { card: PathBuf },
    #[error("the model card {card} says the model expects calibration, which needs the marker stream and the seconds per class: add adaptation: {{mode: calibration, markers: {{name: ...}}, calibration_s: {{...}}}} to the config, or adaptation: {{mode: none}} to run the model as it is")]
    CardCalibration { card: PathBuf },
    #[error(
        "the model card {card}: adaptation.features `{value}` is not logits, bandpower or both"
    )]
    CardFeatures { card: PathBuf, value: String },
    #[error("adaptation.state {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: StateError,
    },
}

/// Why one window got no answer (the window is counted as an inference error).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("features: {0}")]
    Features(#[source] FeatureError),
    #[error("session: {0}")]
    Adapt(#[source] AdaptError),
}

/// The adaptation to run. The config's `adaptation:` section, with the
/// `features` it leaves out taken from the model card's and the `population`
/// it leaves out taken from the card's when the card expects the same mode;
/// without a section, the card's own (`None` when the card has none either:
/// the model's softmax as it is). A card expecting `calibration` needs the
/// config's markers and seconds, so it is an error without a section.
pub fn resolve(
    cfg: Option<&AdaptationConfig>,
    card: &ModelCard,
    model: &Path,
) -> Result<Option<AdaptationConfig>, SetupError> {
    let card_file = ModelCard::path_for(model);
    let from_card = card.adaptation.as_ref();
    let card_features = from_card
        .and_then(|a| a.features.as_deref())
        .map(|f| {
            FeatureKind::parse(f).ok_or_else(|| SetupError::CardFeatures {
                card: card_file.clone(),
                value: f.to_string(),
            })
        })
        .transpose()?;
    let resolved = match (cfg, from_card) {
        (Some(c), _) => {
            let mut c = c.clone();
            c.features = c.features.or(card_features);
            if c.population.is_none() && from_card.is_some_and(|a| a.mode == c.mode) {
                c.population = card.population_path(model);
            }
            c
        }
        (None, None) => return Ok(None),
        (None, Some(a)) if a.mode == Mode::Calibration => {
            return Err(SetupError::CardCalibration { card: card_file })
        }
        (None, Some(a)) => AdaptationConfig {
            mode: a.mode,
            baseline_s: a.baseline_s,
            markers: None,
            calibration_s: Vec::new(),
            state: None,
            population: card.population_path(model),
            features: card_features,
        },
    };
    if resolved.mode == Mode::Baseline && resolved.population.is_none() {
        return Err(SetupError::NoPopulation { card: card_file });
    }
    Ok(Some(resolved))
}

/// Session time (seconds since the session's first sample) of the stage's
/// windows, carried across reconnects (see the module documentation).
#[derive(Debug, Clone)]
pub struct SessionClock {
    ratio: (u64, u64),
    /// Session seconds before the current stream connection.
    offset_s: f64,
    /// Input frames of the current connection (received or counted missing).
    frames: u64,
    period_s: f64,
}

impl SessionClock {
    /// For input at `rate_hz` resampled by `ratio` (`L/M`, as the stage's chain).
    pub fn new(rate_hz: f64, ratio: (u64, u64)) -> Self {
        Self {
            ratio,
            offset_s: 0.0,
            frames: 0,
            period_s: 1.0 / rate_hz,
        }
    }

    /// `n` input frames went into the stage (or were counted missing by a gap).
    pub fn advance(&mut self, n: u64) {
        self.frames += n;
    }

    /// A reconnect: the stage counts frames from 0 again.
    pub fn reconnect(&mut self) {
        self.offset_s += end_seconds(self.frames, self.ratio);
        self.frames = 0;
    }

    /// Session time of the end of a window whose last input frame is the
    /// `frames_in`-th of the current connection.
    pub fn end_s(&self, frames_in: u64) -> f64 {
        self.offset_s + end_seconds(frames_in, self.ratio)
    }

    /// Input sample period.
    pub fn period_s(&self) -> f64 {
        self.period_s
    }
}

/// A window for the session: its session end time, the LSL time of its last
/// sample, and its data `[channels][samples]` µV.
pub struct WindowIn<'a> {
    pub end_s: f64,
    pub t_last: f64,
    pub data: &'a [f32],
}

/// What the adapter made of one window.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Still learning: publish nothing (but the seconds left).
    Calibrating { seconds_left: f64 },
    /// Class probabilities to publish.
    Classified { probabilities: Vec<f32> },
}

/// Events worth telling the operator, drained by the caller after each window.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A marker named no class of the model (ignored).
    UnknownClass { text: String, classes: String },
    /// A marker reached the session.
    MarkerUsed { class: Option<String>, at_s: f64 },
    /// The session finished learning; `saved` names the state file written.
    Learned {
        windows: usize,
        saved: Option<PathBuf>,
    },
    /// The state could not be written (the session goes on with it in memory).
    SaveFailed(String),
}

/// The session, its features and its markers.
pub struct Adapter {
    session: Session,
    extractor: Box<dyn FeatureExtractor + Send>,
    kind: FeatureKind,
    state_path: Option<PathBuf>,
    resumed: bool,
    learned: bool,
    /// Markers not yet due (their time is at or after the last window's end).
    pending: VecDeque<crate::markers::Marker>,
    row: Vec<f64>,
    events: Vec<Event>,
}

impl Adapter {
    /// Builds the features and the session for `cfg`; loads the state file if
    /// there is one (the session then classifies from its first window).
    pub fn new(
        cfg: &AdaptationConfig,
        clf: Classifier,
        model_path: &Path,
        window_s: f64,
    ) -> Result<Self, SetupError> {
        let card = clf.card().clone();
        if card.classes.len() < 2 {
            return Err(SetupError::SingleLogit {
                class: card.classes.first().cloned().unwrap_or_default(),
            });
        }
        let samples = (window_s * SAMPLE_RATE_HZ).round() as usize;
        let bandpower = || LogBandPower::new(card.channels.len(), samples, SAMPLE_RATE_HZ);
        let logits = ModelLogits::new(clf, model_path);
        let population = cfg.population.as_deref().map(load_population).transpose()?;
        let kind = match (cfg.features, &population) {
            (Some(k), _) => k,
            (None, Some(pop)) => {
                let (l, b) = (logits.space(), bandpower().space());
                let both = FeatureSpace::concat(&[b.clone(), l.clone()]);
                if pop.space == l {
                    FeatureKind::Logits
                } else if pop.space == b {
                    FeatureKind::Bandpower
                } else if pop.space == both {
                    FeatureKind::Both
                } else {
                    return Err(SetupError::NoFeatureMatch {
                        path: cfg.population.clone().unwrap_or_default(),
                        got: pop.space.to_string(),
                        logits: l.to_string(),
                        bandpower: b.to_string(),
                    });
                }
            }
            (None, None) => FeatureKind::Logits,
        };
        let extractor: Box<dyn FeatureExtractor + Send> = match kind {
            FeatureKind::Logits => Box::new(logits),
            FeatureKind::Bandpower => Box::new(bandpower()),
            FeatureKind::Both => Box::new(Concat(vec![Box::new(bandpower()), Box::new(logits)])),
        };
        let space = extractor.space();
        let population = match (cfg.mode, population, extractor.native_head()) {
            (_, Some(p), _) => Some(p),
            (Mode::None, None, Some(head)) => Some(PopulationModel::native(
                space.clone(),
                card.classes.clone(),
                head,
            )),
            _ => None,
        };
        let protocol = match cfg.mode {
            Mode::None => Protocol::none(),
            Mode::Baseline => Protocol::baseline(cfg.baseline_s),
            Mode::Calibration => Protocol::calibration(cfg.calibration_s.clone()),
        };
        let spec = SessionSpec {
            protocol,
            classes: card.classes.clone(),
            space,
            window_s,
            population,
        };
        // Checks the protocol (classes, lengths, head) even when a state is resumed.
        let fresh = Session::new(spec.clone()).map_err(SetupError::Adapt)?;
        let (session, resumed) = match &cfg.state {
            Some(path) if path.exists() => {
                let state_err = |source| SetupError::State {
                    path: path.clone(),
                    source,
                };
                let state = PersonState::load(path).map_err(state_err)?;
                let session = Session::resume(spec, state).map_err(|e| match e {
                    AdaptError::State(s) => state_err(s),
                    other => SetupError::Adapt(other),
                })?;
                (session, true)
            }
            _ => (fresh, false),
        };
        let mut me = Self::from_parts(session, extractor, kind, cfg.state.clone());
        me.resumed = resumed;
        Ok(me)
    }

    /// An adapter over a session and extractor built elsewhere (tests, tools);
    /// the state is written to `state_path` when the session finishes learning.
    pub fn from_parts(
        session: Session,
        extractor: Box<dyn FeatureExtractor + Send>,
        kind: FeatureKind,
        state_path: Option<PathBuf>,
    ) -> Self {
        Self {
            learned: session.state().is_some(),
            session,
            extractor,
            kind,
            state_path,
            resumed: false,
            pending: VecDeque::new(),
            row: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The feature set in use.
    pub fn kind(&self) -> FeatureKind {
        self.kind
    }

    /// The protocol's mode.
    pub fn mode(&self) -> Mode {
        self.session.spec().protocol.mode
    }

    /// Whether the state came from the state file.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Whether the session is still learning (baseline or calibration).
    pub fn learning(&self) -> bool {
        self.session.state().is_none()
    }

    /// Whether the session waits for calibration markers.
    pub fn wants_markers(&self) -> bool {
        self.learning() && self.mode() == Mode::Calibration
    }

    /// Seconds of baseline or calibration still to come.
    pub fn seconds_left(&self) -> f64 {
        self.session.seconds_left()
    }

    /// The session (for its state and spec).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Queues a marker (local LSL time); it reaches the session before the
    /// first window that ends after it.
    pub fn marker(&mut self, m: crate::markers::Marker) {
        let at = self.pending.partition_point(|p| p.t <= m.t);
        self.pending.insert(at, m);
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Features of the window, then the session's answer. Markers due before
    /// the window's end are delivered first, mapped to session time through the
    /// window's own stamps (`at_s = end_s − period − (t_last − t)`, rounded to
    /// the input sample the marker is stamped at).
    pub fn window(&mut self, w: WindowIn<'_>, clock: &SessionClock) -> Result<Step, StepError> {
        let period = clock.period_s();
        while let Some(m) = self.pending.front() {
            let raw = w.end_s - period - (w.t_last - m.t);
            let at_s = (raw / period).round() * period;
            if at_s >= w.end_s - EPS {
                break;
            }
            let m = self.pending.pop_front().unwrap_or_else(|| unreachable!());
            self.deliver(at_s, &m.text);
        }
        self.row.clear();
        self.extractor
            .extract(w.data, &mut self.row)
            .map_err(StepError::Features)?;
        let answer = self
            .session
            .push(w.end_s, &self.row)
            .map_err(StepError::Adapt)?;
        if !self.learned {
            if let Some(state) = self.session.state() {
                self.learned = true;
                let saved = match &self.state_path {
                    Some(path) => match state.save_atomic(path) {
                        Ok(()) => Some(path.clone()),
                        Err(e) => {
                            self.events.push(Event::SaveFailed(e.to_string()));
                            None
                        }
                    },
                    None => None,
                };
                self.events.push(Event::Learned {
                    windows: state.windows,
                    saved,
                });
            }
        }
        Ok(match answer {
            Answer::Calibrating { seconds_left } => Step::Calibrating { seconds_left },
            Answer::Classified { probabilities } => Step::Classified {
                probabilities: probabilities.into_iter().map(|p| p as f32).collect(),
            },
        })
    }

    /// A marker's text to the session: a class name opens its block; `none`,
    /// `pause`, `end` or `-` (when no class is so named) close the open block;
    /// anything else is reported and ignored.
    fn deliver(&mut self, at_s: f64, text: &str) {
        let classes = self.session.spec().classes.clone();
        let t = text.trim();
        let is_class = classes.iter().any(|c| c.eq_ignore_ascii_case(t));
        let class = if !is_class
            && ["none", "pause", "end", "-"].contains(&t.to_ascii_lowercase().as_str())
        {
            None
        } else {
            Some(t)
        };
        match self.session.marker(at_s, class) {
            Ok(()) => self.events.push(Event::MarkerUsed {
                class: class.map(str::to_string),
                at_s,
            }),
            Err(_) => self.events.push(Event::UnknownClass {
                text: text.to_string(),
                classes: classes.join(", "),
            }),
        }
    }

    /// At shutdown: why the session never finished learning, if it did not.
    pub fn finish(&self) -> Result<(), AdaptError> {
        self.session.finish()
    }
}

/// Reads a population head file.
pub fn load_population(path: &Path) -> Result<PopulationModel, SetupError> {
    let text = std::fs::read_to_string(path).map_err(|source| SetupError::PopulationIo {
        path: path.to_path_buf(),
        source,
    })?;
    serde_norway::from_str(&text).map_err(|source| SetupError::PopulationParse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean and mean square of a window: enough to tell the toy classes apart.
    struct Moments;

    impl FeatureExtractor for Moments {
        fn space(&self) -> FeatureSpace {
            FeatureSpace {
                extractor: "moments".into(),
                dim: 2,
            }
        }

        fn extract(&mut self, w: &[f32], out: &mut Vec<f64>) -> Result<(), FeatureError> {
            let n = w.len() as f64;
            out.push(w.iter().map(|&v| f64::from(v)).sum::<f64>() / n);
            out.push(w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / n);
            Ok(())
        }
    }

    /// Markers reach the session before the first window ending after them,
    /// and not before; `none` closes a block, an unknown class is reported and
    /// ignored; the state is written when the calibration completes, then the
    /// session classifies.
    #[test]
    fn markers_are_delivered_in_time_order_and_the_state_is_saved() {
        use crate::markers::Marker;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("w.yaml");
        let classes = vec!["rest".to_string(), "arithmetic".to_string()];
        let session = Session::new(SessionSpec {
            protocol: Protocol::calibration(vec![("rest".into(), 2.0), ("arithmetic".into(), 2.0)]),
            classes: classes.clone(),
            space: Moments.space(),
            window_s: 1.0,
            population: None,
        })
        .unwrap();
        let mut a = Adapter::from_parts(
            session,
            Box::new(Moments),
            FeatureKind::Bandpower,
            Some(state.clone()),
        );
        // 200 Hz input, no resampling; LSL time t0 = 100 for session time 0.
        let clock = SessionClock::new(200.0, (1, 1));
        let t0 = 100.0;
        for (t, text) in [
            (0.0, "rest"),
            (3.0, "arithmetic"),
            (3.5, "jumping"),
            (2.5, "none"),
        ] {
            a.marker(Marker {
                t: t0 + t,
                text: text.into(),
            });
        }
        assert!(a.wants_markers());
        let mut steps = Vec::new();
        let mut events = Vec::new();
        for k in 1..=6u64 {
            let level = if k <= 3 { 1.0 } else { 5.0 + 0.1 * k as f32 };
            let data: Vec<f32> = (0..200).map(|i| level + 0.01 * (i % 7) as f32).collect();
            let end_s = clock.end_s(200 * k);
            let t_last = t0 + end_s - clock.period_s();
            steps.push(
                a.window(
                    WindowIn {
                        end_s,
                        t_last,
                        data: &data,
                    },
                    &clock,
                )
                .unwrap(),
            );
            events.push(a.take_events());
        }
        // Window 1 gets the rest marker; the `none` at 2.5 s and the arithmetic
        // one at 3 s wait for windows ending after them (3 and 4); the unknown
        // class is reported when due (window 4) and ignored.
        assert_eq!(
            events[0],
            vec![Event::MarkerUsed {
                class: Some("rest".into()),
                at_s: 0.0
            }]
        );
        assert!(events[1].is_empty());
        assert_eq!(
            events[2],
            vec![Event::MarkerUsed {
                class: None,
                at_s: 2.5
            }]
        );
        assert_eq!(
            events[3],
            vec![
                Event::MarkerUsed {
                    class: Some("arithmetic".into()),
                    at_s: 3.0
                },
                Event::UnknownClass {
                    text: "jumping".into(),
                    classes: "rest, arithmetic".into()
                }
            ]
        );
        assert_eq!(
            events[4],
            vec![Event::Learned {
                windows: 4,
                saved: Some(state.clone())
            }]
        );
        for s in &steps[..4] {
            assert!(
                matches!(s, Step::Calibrating { seconds_left } if *seconds_left > 0.0),
                "{s:?}"
            );
        }
        assert_eq!(steps[4], Step::Calibrating { seconds_left: 0.0 });
        match &steps[5] {
            Step::Classified { probabilities } => {
                assert!(probabilities[1] > 0.5, "{probabilities:?}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!a.learning() && !a.wants_markers());
        let saved = PersonState::load(&state).unwrap();
        assert_eq!((saved.mode, saved.windows), (Mode::Calibration, 4));
    }

    #[test]
    fn the_card_supplies_what_the_config_leaves_out() {
        use labram_core::card::{CardAdaptation, Preprocessing, Provenance, CARD_FORMAT};
        let mut card = ModelCard {
            format: CARD_FORMAT,
            adaptation: None,
            architecture: "a".into(),
            trained: true,
            task: "t".into(),
            classes: vec!["rest".into(), "arithmetic".into()],
            channels: vec!["FP1".into()],
            patch_size: 200,
            sample_rate_hz: 200.0,
            window_patches: 4,
            hop_s: 2.0,
            preprocessing: Preprocessing::default(),
            provenance: Provenance::default(),
        };
        let model = Path::new("models/m.onnx");
        assert_eq!(resolve(None, &card, model).unwrap(), None);
        card.adaptation = Some(CardAdaptation {
            mode: Mode::Baseline,
            baseline_s: 45.0,
            features: Some("bandpower".into()),
            population: Some("m.population.yaml".into()),
        });
        let a = resolve(None, &card, model).unwrap().unwrap();
        assert_eq!((a.mode, a.baseline_s), (Mode::Baseline, 45.0));
        assert_eq!(a.features, Some(FeatureKind::Bandpower));
        assert_eq!(
            a.population,
            Some(PathBuf::from("models/m.population.yaml"))
        );
        // The config's section wins; what it leaves out comes from the card.
        let mine = AdaptationConfig {
            mode: Mode::Baseline,
            baseline_s: 60.0,
            markers: None,
            calibration_s: Vec::new(),
            state: Some("w.yaml".into()),
            population: None,
            features: None,
        };
        let a = resolve(Some(&mine), &card, model).unwrap().unwrap();
        assert_eq!(a.baseline_s, 60.0);
        assert_eq!(
            a.population,
            Some(PathBuf::from("models/m.population.yaml"))
        );
        assert_eq!(a.features, Some(FeatureKind::Bandpower));
        // A baseline with no head anywhere, a card expecting calibration: errors.
        card.adaptation = None;
        let e = resolve(Some(&mine), &card, model).unwrap_err().to_string();
        assert!(
            e.contains("adaptation.population is missing") && e.contains("models/m.yaml"),
            "{e}"
        );
        card.adaptation = Some(CardAdaptation {
            mode: Mode::Calibration,
            baseline_s: 60.0,
            features: None,
            population: None,
        });
        let e = resolve(None, &card, model).unwrap_err().to_string();
        assert!(
            e.contains("expects calibration") && e.contains("mode: none"),
            "{e}"
        );
    }

    #[test]
    fn session_clock_matches_evaluate_and_survives_reconnects() {
        // 500 Hz → 200 Hz: L/M = 2/5. 4-s windows every 1 s: the first ends at
        // input frame 2000 → 800 output frames → 4.0 s, as daemon_starts says.
        let mut c = SessionClock::new(500.0, (2, 5));
        assert_eq!(c.end_s(2000), 4.0);
        assert_eq!(c.end_s(2501), 1000.0 / 200.0);
        assert!((c.period_s() - 0.002).abs() < 1e-15);
        c.advance(3000);
        c.reconnect();
        // After the reconnect the stage counts from 0; the session goes on from 6 s.
        assert_eq!(c.end_s(2000), 10.0);
        c.advance(10);
        c.reconnect();
        assert_eq!(c.end_s(0), 6.0 + 4.0 / 200.0);
    }
}
