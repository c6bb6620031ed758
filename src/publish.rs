//! The LSL outlets the daemon publishes.
//!
//! * Predictions: one float32 channel per class (the probability), labelled with the
//!   card's class names, irregular rate; every sample is stamped with the LSL time
//!   (local clock) of the last input sample of its window, so a recorder can line
//!   predictions up with the EEG they came from.
//! * Optional markers (`<name>-markers`, type `Markers`): one channel with the
//!   winning class, same timestamp: its name (`output.marker_format: string`, the
//!   default) or its index into [`marker_names`] as an int32 (`int32`, for
//!   OpenViBE's LSL driver, which reads only int32 markers). While the session
//!   calibrates, the string outlet says `calibrating Ns` and the int32 one -1.
//!
//! Both outlets describe themselves per the XDF meta-data conventions
//! (<https://github.com/sccn/xdf/wiki/Meta-Data>): `desc/channels/channel` with
//! `label`, `unit`, `type` (predictions: the class names, unit `probability`, type
//! `Probability`; markers: `class`, type `Marker`), and `desc/labramd` with the
//! daemon's version, the model's path and file name (`model`, `model_name`), its
//! architecture, classes, the card's checkpoint sha256, the adaptation mode and the
//! marker format.
//!
//! LSL outlets are not `Send`; a [`Publisher`] is created on the thread that pushes
//! (the inference worker) and closes its outlets when dropped.

use lsl::ExPushable;

use crate::card::ModelCard;
use crate::config::{MarkerFormat, OutputConfig};

/// Errors creating the outlets.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create the LSL outlet {name}: {message}; check output.name")]
    Outlet { name: String, message: String },
}

/// The int32 marker pushed while the session calibrates (`marker_format: int32`).
pub const CALIBRATING_INT32: i32 = -1;

/// The marker outlet, in its format.
enum Markers {
    /// One prepared sample per possible winner.
    String(lsl::StreamOutlet, Vec<Vec<String>>),
    Int32(lsl::StreamOutlet),
}

/// The prediction outlet and the optional marker outlet.
pub struct Publisher {
    outlet: lsl::StreamOutlet,
    markers: Option<Markers>,
    sample: Vec<f32>,
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
    /// `input_name` and `adaptation` (the adaptation mode in use, `off` when none)
    /// go into the stream description.
    pub fn new(
        cfg: &OutputConfig,
        card: &ModelCard,
        model_file: &str,
        input_name: &str,
        adaptation: &str,
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
            let file_name = std::path::Path::new(model_file)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| model_file.to_string());
            m.append_child_value("model_name", &file_name);
            m.append_child_value("architecture", &card.architecture);
            m.append_child_value("task", &card.task);
            m.append_child_value("trained", if card.trained { "true" } else { "false" });
            m.append_child_value("classes", &card.classes.join(","));
            m.append_child_value(
                "checkpoint_sha256",
                card.provenance.checkpoint_sha256.as_deref().unwrap_or(""),
            );
            m.append_child_value("adaptation", adaptation);
            m.append_child_value(
                "marker_format",
                if cfg.markers {
                    cfg.marker_format.as_str()
                } else {
                    "none"
                },
            );
            m.append_child_value("input_stream", input_name);
            m.append_child_value(
                "timestamp",
                "LSL time of the last input sample of the window",
            );
        }
        let outlet = lsl::StreamOutlet::new(&info, 0, 360).map_err(|e| err(&cfg.name, e))?;
        let markers = if cfg.markers {
            let name = format!("{}-markers", cfg.name);
            let format = match cfg.marker_format {
                MarkerFormat::String => lsl::ChannelFormat::String,
                MarkerFormat::Int32 => lsl::ChannelFormat::Int32,
            };
            let mut info = lsl::StreamInfo::new(
                &name,
                "Markers",
                1,
                lsl::IRREGULAR_RATE,
                format,
                &format!("{source_id}-markers"),
            )
            .map_err(|e| err(&name, e))?;
            let names = marker_names(&card.classes);
            {
                let mut desc = info.desc();
                let mut ch = desc.append_child("channels").append_child("channel");
                ch.append_child_value("label", "class");
                ch.append_child_value("type", "Marker");
                let mut m = desc.append_child("labramd");
                m.append_child_value("predictions", &cfg.name);
                m.append_child_value("marker_format", cfg.marker_format.as_str());
                m.append_child_value("classes", &names.join(","));
                m.append_child_value(
                    "calibrating",
                    match cfg.marker_format {
                        MarkerFormat::String => "calibrating Ns",
                        MarkerFormat::Int32 => "-1",
                    },
                );
            }
            let outlet = lsl::StreamOutlet::new(&info, 0, 360).map_err(|e| err(&name, e))?;
            Some(match cfg.marker_format {
                MarkerFormat::String => {
                    Markers::String(outlet, names.into_iter().map(|m| vec![m]).collect())
                }
                MarkerFormat::Int32 => Markers::Int32(outlet),
            })
        } else {
            None
        };
        Ok(Self {
            outlet,
            markers,
            sample: vec![0.0; n],
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
        let pushed = match &self.markers {
            None => Ok(()),
            Some(Markers::String(m, samples)) => {
                m.push_sample_ex(&samples[winner(probs)], timestamp, true)
            }
            Some(Markers::Int32(m)) => {
                m.push_sample_ex(&vec![winner(probs) as i32], timestamp, true)
            }
        };
        if let Err(e) = pushed {
            tracing::error!("cannot push the marker of the prediction at {timestamp:.3}: {e:?}");
        }
        Ok(())
    }

    /// Pushes a status text (e.g. `calibrating 42s`) on the marker outlet, if
    /// there is one; no probability is pushed. While the session calibrates this
    /// is all the daemon says, so a recorder sees why predictions are absent. An
    /// int32 marker outlet cannot carry text: it gets [`CALIBRATING_INT32`] (-1).
    pub fn push_status(&mut self, text: &str, timestamp: f64) -> Result<(), lsl::Error> {
        match &self.markers {
            None => {}
            Some(Markers::String(m, _)) => {
                m.push_sample_ex(&vec![text.to_string()], timestamp, true)?
            }
            Some(Markers::Int32(m)) => {
                m.push_sample_ex(&vec![CALIBRATING_INT32], timestamp, true)?
            }
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

    /// An int32 marker outlet: the winner's index after each prediction, -1 for a
    /// calibration status, read back by an LSL inlet.
    #[test]
    fn int32_markers_carry_the_index_and_minus_one_while_calibrating() {
        use lsl::Pullable;
        let name = format!("labramd-unit-int32-{}", std::process::id());
        let cfg = OutputConfig {
            name: name.clone(),
            stream_type: "Prediction".into(),
            source_id: None,
            markers: true,
            marker_format: MarkerFormat::Int32,
        };
        let card = ModelCard {
            format: crate::card::CARD_FORMAT,
            architecture: "labram_base_patch200_200".into(),
            trained: false,
            task: "test".into(),
            classes: vec!["a".into(), "b".into(), "c".into()],
            channels: vec!["CZ".into()],
            patch_size: 200,
            sample_rate_hz: 200.0,
            window_patches: 4,
            hop_s: 1.0,
            preprocessing: Default::default(),
            provenance: Default::default(),
            adaptation: None,
        };
        let mut p = Publisher::new(&cfg, &card, "m.onnx", "eeg", "baseline").unwrap();
        let info = lsl::resolve_byprop("name", &format!("{name}-markers"), 1, 10.0).unwrap();
        let inlet = lsl::StreamInlet::new(&info[0], 360, 0, false).unwrap();
        inlet.open_stream(10.0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        p.push_status("calibrating 3s", 1.0).unwrap();
        p.push(&[0.1, 0.2, 0.7], 2.0).unwrap();
        p.push(&[0.1, 0.8, 0.1], 3.0).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let (s, t): (Vec<i32>, f64) = inlet.pull_sample(10.0).unwrap();
            got.push((s[0], t));
        }
        assert_eq!(got, vec![(-1, 1.0), (2, 2.0), (1, 3.0)]);
    }
}
