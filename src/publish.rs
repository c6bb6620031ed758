//! The LSL outlets the daemon publishes.
//!
//! * Predictions: one float32 channel per class (the probability), labelled with the
//!   card's class names, irregular rate; every sample is stamped with the LSL time
//!   (local clock) of the last input sample of its window, so a recorder can line
//!   predictions up with the EEG they came from.
//! * Optional markers (`<name>-markers`, type `Markers`): one string channel with the
//!   winning class name, same timestamp.
//!
//! LSL outlets are not `Send`; a [`Publisher`] is created on the thread that pushes
//! (the inference worker) and closes its outlets when dropped.

use lsl::ExPushable;

use crate::card::ModelCard;
use crate::config::OutputConfig;

/// Errors creating the outlets.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create the LSL outlet {name}: {message}; check output.name")]
    Outlet { name: String, message: String },
}

/// The prediction outlet and the optional marker outlet.
pub struct Publisher {
    outlet: lsl::StreamOutlet,
    markers: Option<lsl::StreamOutlet>,
    sample: Vec<f32>,
    /// One prepared marker sample per possible winner.
    marker_samples: Vec<Vec<String>>,
    n_classes: usize,
}

/// The marker names: the class names, and for a single-logit (binary) model the
/// class name or `not-<class>`.
pub fn marker_names(classes: &[String]) -> Vec<String> {
    if classes.len() == 1 {
        vec![classes[0].clone(), format!("not-{}", classes[0])]
    } else {
        classes.to_vec()
    }
}

/// Index into [`marker_names`] of the winning class.
pub fn winner(probs: &[f32]) -> usize {
    if probs.len() == 1 {
        return usize::from(probs[0] < 0.5);
    }
    let mut best = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > probs[best] {
            best = i;
        }
    }
    best
}

impl Publisher {
    /// Creates the outlet(s) described by `cfg` for a model with `card`.
    /// `input_name` goes into the stream description.
    pub fn new(
        cfg: &OutputConfig,
        card: &ModelCard,
        model_file: &str,
        input_name: &str,
    ) -> Result<Self, PublishError> {
        let err = |name: &str, e: lsl::Error| PublishError::Outlet {
            name: name.to_string(),
            message: format!("{e:?}"),
        };
        let n = card.classes.len();
        let source_id = cfg
            .source_id
            .clone()
            .unwrap_or_else(|| format!("labramd-{}", cfg.name));
        let mut info = lsl::StreamInfo::new(
            &cfg.name,
            &cfg.stream_type,
            n as u32,
            lsl::IRREGULAR_RATE,
            lsl::ChannelFormat::Float32,
            &source_id,
        )
        .map_err(|e| err(&cfg.name, e))?;
        {
            let mut desc = info.desc();
            let mut chans = desc.append_child("channels");
            for class in &card.classes {
                let mut ch = chans.append_child("channel");
                ch.append_child_value("label", class);
                ch.append_child_value("unit", "probability");
                ch.append_child_value("type", "Probability");
            }
            let mut m = desc.append_child("labramd");
            m.append_child_value("version", env!("CARGO_PKG_VERSION"));
            m.append_child_value("model", model_file);
            m.append_child_value("architecture", &card.architecture);
            m.append_child_value("task", &card.task);
            m.append_child_value("trained", if card.trained { "true" } else { "false" });
            m.append_child_value("input_stream", input_name);
            m.append_child_value(
                "timestamp",
                "LSL time of the last input sample of the window",
            );
        }
        let outlet = lsl::StreamOutlet::new(&info, 0, 360).map_err(|e| err(&cfg.name, e))?;
        let markers = if cfg.markers {
            let name = format!("{}-markers", cfg.name);
            let info = lsl::StreamInfo::new(
                &name,
                "Markers",
                1,
                lsl::IRREGULAR_RATE,
                lsl::ChannelFormat::String,
                &format!("{source_id}-markers"),
            )
            .map_err(|e| err(&name, e))?;
            Some(lsl::StreamOutlet::new(&info, 0, 360).map_err(|e| err(&name, e))?)
        } else {
            None
        };
        Ok(Self {
            outlet,
            markers,
            sample: vec![0.0; n],
            marker_samples: marker_names(&card.classes)
                .into_iter()
                .map(|m| vec![m])
                .collect(),
            n_classes: n,
        })
    }

    /// Pushes one prediction (and its marker) stamped `timestamp` (LSL local clock).
    /// An error means the prediction was not published (the caller counts the
    /// window as dropped, `publish_error`); a failed marker push after a published
    /// prediction is logged here and does not make the window unpublished.
    pub fn push(&mut self, probs: &[f32], timestamp: f64) -> Result<(), lsl::Error> {
        self.sample[..self.n_classes].copy_from_slice(&probs[..self.n_classes]);
        self.outlet.push_sample_ex(&self.sample, timestamp, true)?;
        if let Some(m) = &self.markers {
            if let Err(e) = m.push_sample_ex(&self.marker_samples[winner(probs)], timestamp, true) {
                tracing::error!(
                    "cannot push the marker of the prediction at {timestamp:.3}: {e:?}"
                );
            }
        }
        Ok(())
    }

    /// Pushes a status text (e.g. `calibrating 42s`) on the marker outlet, if
    /// there is one; no probability is pushed. While the session calibrates this
    /// is all the daemon says, so a recorder sees why predictions are absent.
    pub fn push_status(&mut self, text: &str, timestamp: f64) -> Result<(), lsl::Error> {
        if let Some(m) = &self.markers {
            m.push_sample_ex(&vec![text.to_string()], timestamp, true)?;
        }
        Ok(())
    }

    /// Whether anyone is listening to the prediction stream.
    pub fn have_consumers(&self) -> bool {
        self.outlet.have_consumers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winners_and_marker_names() {
        assert_eq!(winner(&[0.2, 0.7, 0.1]), 1);
        assert_eq!(winner(&[0.8]), 0);
        assert_eq!(winner(&[0.3]), 1);
        let one = marker_names(&["seizure".to_string()]);
        assert_eq!(one, vec!["seizure".to_string(), "not-seizure".to_string()]);
    }
}
