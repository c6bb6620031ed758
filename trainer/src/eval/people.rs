//! People (sessions) loaded once and turned into every feature set a table
//! compares: log band power, a model's logits, and both side by side. Reading
//! and band power run in parallel; the model runs one batch at a time.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use labram_core::adapt::{FeatureExtractor, Head, LogBandPower};
use labram_core::card::SAMPLE_RATE_HZ;
use rayon::prelude::*;

use super::logits::ModelLogits;
use super::sessions::{self, Block, Layout, SessionError, SessionFeatures};
use crate::data::makers::{EEGMAT_CLASSES, EEGMAT_EXTERNAL};

/// Which features a protocol adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Log band power per channel (the classical baseline).
    Bandpower,
    /// The model's logits.
    Logits,
    /// Band power and logits side by side.
    Both,
}

impl FeatureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Bandpower => "bandpower",
            FeatureKind::Logits => "logits",
            FeatureKind::Both => "both",
        }
    }

    /// Whether it needs `--model`.
    pub fn needs_model(self) -> bool {
        self != FeatureKind::Bandpower
    }
}

impl std::str::FromStr for FeatureKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bandpower" | "band-power" => Ok(FeatureKind::Bandpower),
            "logits" | "model" => Ok(FeatureKind::Logits),
            "both" | "bandpower+logits" => Ok(FeatureKind::Both),
            _ => Err(format!(
                "`{s}` is not a feature set: use bandpower, logits (the model's) or both"
            )),
        }
    }
}

/// One person's session as features.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub bandpower: SessionFeatures,
    pub logits: Option<SessionFeatures>,
}

impl Person {
    /// The features of `kind` (`None` when it needs a model that was not given).
    pub fn features(&self, kind: FeatureKind) -> Option<SessionFeatures> {
        match kind {
            FeatureKind::Bandpower => Some(self.bandpower.clone()),
            FeatureKind::Logits => self.logits.clone(),
            FeatureKind::Both => self.logits.as_ref().map(|l| self.bandpower.concat(l)),
        }
    }
}

/// Reads, preprocesses and windows every session, then extracts band power
/// (in parallel) and the model's logits (when a model is given).
pub fn load(
    sessions: &[Vec<Block>],
    layout: &Layout,
    mut model: Option<&mut ModelLogits>,
) -> Result<Vec<Person>, SessionError> {
    let bar = bar(sessions.len(), "reading sessions");
    let len = layout.window_len;
    let streamed: Vec<_> = sessions
        .par_iter()
        .map(|blocks| {
            let s = sessions::stream(&sessions::session_name(blocks), blocks, layout)?;
            let mut bp = LogBandPower::new(layout.channels.len(), len, SAMPLE_RATE_HZ);
            let f = sessions::features(&s, &mut bp)?;
            bar.inc(1);
            Ok((s, f))
        })
        .collect::<Result<_, SessionError>>()?;
    bar.finish_and_clear();
    let bar = bar_if(model.is_some(), streamed.len(), "model logits");
    let mut people = Vec::with_capacity(streamed.len());
    for (s, bandpower) in streamed {
        let logits = match model.as_deref_mut() {
            Some(m) => Some(sessions::features(&s, m)?),
            None => None,
        };
        bar.inc(1);
        people.push(Person {
            name: s.name,
            bandpower,
            logits,
        });
    }
    bar.finish_and_clear();
    Ok(people)
}

/// The native head of `kind` (the model's softmax for its logits alone).
pub fn native_head(kind: FeatureKind, model: Option<&ModelLogits>) -> Option<Head> {
    match kind {
        FeatureKind::Logits => model.and_then(|m| m.native_head()),
        _ => None,
    }
}

/// eegmat sessions of `subjects`: `rest=SubjectNN_1.edf,arithmetic=SubjectNN_2.edf`,
/// classes by name (`classes` from the model card or the default pair).
/// Refuses the external test people (28-35).
pub fn eegmat_sessions(
    dir: &Path,
    subjects: impl IntoIterator<Item = u32>,
    classes: &[String],
) -> Result<Vec<Vec<Block>>, SessionError> {
    let idx = |name: &str| {
        classes
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                SessionError::Setup(format!(
                    "the model's classes ({}) are not eegmat's ({})",
                    classes.join(", "),
                    EEGMAT_CLASSES.join(", ")
                ))
            })
    };
    let (rest, task) = (idx(EEGMAT_CLASSES[0])?, idx(EEGMAT_CLASSES[1])?);
    subjects
        .into_iter()
        .map(|s| {
            if EEGMAT_EXTERNAL.contains(&s) {
                return Err(SessionError::Setup(format!(
                    "Subject{s:02} is in the external test set (28-35), which the project never uses; choose subjects 0-27"
                )));
            }
            let file = |k: u32| -> PathBuf { dir.join(format!("Subject{s:02}_{k}.edf")) };
            Ok(vec![
                Block {
                    class: rest,
                    path: file(1),
                },
                Block {
                    class: task,
                    path: file(2),
                },
            ])
        })
        .collect()
}

fn bar(n: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {elapsed} elapsed, ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn bar_if(show: bool, n: usize, what: &str) -> ProgressBar {
    if show {
        bar(n, what)
    } else {
        ProgressBar::hidden()
    }
}
