//! Input planning: from what a source (an LSL stream or a recording) declares
//! about itself, the model card and the input settings, the window stage's
//! [`StageConfig`], or one error that names the source, what is wrong and the fix.
//!
//! Warnings are returned as data ([`PlanNote`]) for the caller to log; this
//! module does no logging itself.

use std::collections::{BTreeMap, BTreeSet};

use crate::card::{FilterMode, ModelCard, Preprocessing};
use crate::electrodes::{self, MappingError};
use crate::window::{self, StageConfig};

/// Unit of the incoming samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Volt,
    Millivolt,
    Microvolt,
    /// Read from the stream's channel metadata (`desc/channels/channel/unit`).
    Auto,
}

impl Unit {
    /// Factor that turns a value in this unit into microvolts (`Auto` → `None`).
    pub fn to_microvolts(self) -> Option<f32> {
        match self {
            Unit::Volt => Some(1e6),
            Unit::Millivolt => Some(1e3),
            Unit::Microvolt => Some(1.0),
            Unit::Auto => None,
        }
    }

    /// Parses a unit as written in configs and in LSL/XDF channel metadata
    /// (`uV`, `µV`, `microvolts`, `mV`, `V`, …). `None` for anything else.
    pub fn parse_metadata(text: &str) -> Option<Unit> {
        let t = text.trim();
        match t {
            "V" | "v" => return Some(Unit::Volt),
            "mV" | "mv" => return Some(Unit::Millivolt),
            "uV" | "µV" | "μV" | "uv" | "UV" => return Some(Unit::Microvolt),
            _ => {}
        }
        match t.to_ascii_lowercase().as_str() {
            "volt" | "volts" => Some(Unit::Volt),
            "millivolt" | "millivolts" => Some(Unit::Millivolt),
            "microvolt" | "microvolts" => Some(Unit::Microvolt),
            _ => None,
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unit::Volt => "V",
            Unit::Millivolt => "mV",
            Unit::Microvolt => "uV",
            Unit::Auto => "auto",
        })
    }
}

/// What a source declares about itself (an LSL stream's info, a recording's header).
#[derive(Debug, Clone, PartialEq)]
pub struct Source<'a> {
    pub name: &'a str,
    /// One label per channel (empty if absent).
    pub labels: &'a [String],
    /// One unit per channel as written in the metadata (empty if absent).
    pub units: &'a [String],
    pub nominal_rate_hz: f64,
    /// Channel format as LSL names it (`float32`, `int16`, `string`, …).
    pub format: &'a str,
    pub channel_count: usize,
}

/// The input settings the plan follows.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings<'a> {
    /// Stream label → electrode name (`""` or `"-"` drops the channel).
    pub channel_map: &'a BTreeMap<String, String>,
    pub unit: Unit,
    /// Window length in patches of 200 samples.
    pub patches: usize,
    /// Hop between windows in seconds.
    pub hop_s: f64,
}

/// A warning of the plan, for the caller to log.
#[derive(Debug, Clone, PartialEq)]
pub enum PlanNote {
    /// Stream labels that name no electrode; those channels are left out.
    LabelsLeftOut(Vec<String>),
    /// Channels with no unit in their metadata, taken as µV.
    UnitsDefaulted { stream: String, labels: Vec<String> },
    /// The hop is not a whole number of input samples.
    HopRounded {
        hop_s: f64,
        rate_hz: f64,
        hop_frames: u64,
        served_s: f64,
    },
    /// A configured band-pass that differs from the card's.
    BandpassDiffers {
        config: Option<[f64; 2]>,
        card: Option<[f64; 2]>,
    },
    /// A configured notch that differs from the card's.
    NotchDiffers {
        config: Option<f64>,
        card: Option<f64>,
    },
    /// The card was trained with non-causal filtering; live filtering is causal.
    NotCausal(FilterMode),
}

impl PlanNote {
    /// Whether the note is a warning (the rest are information).
    pub fn is_warning(&self) -> bool {
        !matches!(self, PlanNote::LabelsLeftOut(_))
    }
}

impl std::fmt::Display for PlanNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanNote::LabelsLeftOut(list) => write!(
                f,
                "stream labels that name no electrode are left out: {}",
                list.join(", ")
            ),
            PlanNote::UnitsDefaulted { stream, labels } => write!(
                f,
                "input stream `{stream}` declares no unit for {}; assuming µV (set input.unit to be explicit)",
                labels.join(", ")
            ),
            PlanNote::HopRounded {
                hop_s,
                rate_hz,
                hop_frames,
                served_s,
            } => write!(
                f,
                "window.hop_s {hop_s} s is not a whole number of input samples at {rate_hz} Hz: windows are cut every {hop_frames} samples ({:.2} ms)",
                served_s * 1e3
            ),
            PlanNote::BandpassDiffers { config, card } => write!(
                f,
                "preprocessing.bandpass_hz {config:?} differs from the model card's {card:?}: the model was trained on the card's"
            ),
            PlanNote::NotchDiffers { config, card } => write!(
                f,
                "preprocessing.notch_hz {config:?} differs from the model card's {card:?}: the model was trained on the card's"
            ),
            PlanNote::NotCausal(mode) => write!(
                f,
                "the model was trained on {mode} filtering; live inference can only filter causally"
            ),
        }
    }
}

/// Why a source cannot feed the model.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("input stream `{stream}` has no regular sample rate (nominal rate {rate_hz} Hz); the daemon needs a regularly sampled EEG stream")]
    NoRegularRate { stream: String, rate_hz: f64 },
    #[error(
        "input stream `{stream}` carries {format} samples; the daemon needs numeric EEG samples"
    )]
    NotNumeric { stream: String, format: String },
    #[error("input stream `{stream}` has no channel labels (desc/channels/channel/label); label the channels at the source or map them with input.channel_map (label → electrode)")]
    Unlabelled { stream: String },
    #[error("input stream `{stream}`: {source} (input.channel_map)")]
    Mapping {
        stream: String,
        source: MappingError,
    },
    #[error("input stream `{stream}` lacks electrodes the model needs: {} (the stream has: {}); map its labels with input.channel_map (label: electrode) or use a model exported for these channels", .missing.join(", "), .have.join(", "))]
    MissingElectrodes {
        stream: String,
        missing: Vec<String>,
        have: Vec<String>,
    },
    #[error("input stream `{stream}`: channel `{label}` has unit `{unit}`, which is not a voltage; set input.unit (V, mV or uV) if its values are voltages")]
    NotVoltage {
        stream: String,
        label: String,
        unit: String,
    },
}

/// The preprocessing live inference applies: the card's, made causal at 200 Hz
/// ([`Preprocessing::live`]), with the config's overrides (`Some(None)`: off).
/// Overrides that differ from the card, and a card that is not causal, are notes.
pub fn preprocessing(
    card: &ModelCard,
    bandpass_hz: Option<Option<[f64; 2]>>,
    notch_hz: Option<Option<f64>>,
) -> (Preprocessing, Vec<PlanNote>) {
    let mut p = card.preprocessing.live();
    let mut notes = Vec::new();
    if let Some(b) = bandpass_hz {
        if b != p.bandpass_hz {
            notes.push(PlanNote::BandpassDiffers {
                config: b,
                card: p.bandpass_hz,
            });
        }
        p.bandpass_hz = b;
    }
    if let Some(n) = notch_hz {
        if n != p.notch_hz {
            notes.push(PlanNote::NotchDiffers {
                config: n,
                card: p.notch_hz,
            });
        }
        p.notch_hz = n;
    }
    if card.preprocessing.mode != FilterMode::Causal {
        notes.push(PlanNote::NotCausal(card.preprocessing.mode));
    }
    (p, notes)
}

/// Checks the source (rate, format, labels, electrodes, units) and plans the
/// window stage: the model's channels picked in card order, their factors to µV,
/// the hop in input frames.
pub fn plan(
    src: &Source<'_>,
    card: &ModelCard,
    settings: &Settings<'_>,
    preprocessing: Preprocessing,
) -> Result<(StageConfig, Vec<PlanNote>), PlanError> {
    let stream = || src.name.to_string();
    let mut notes = Vec::new();
    if src.nominal_rate_hz.is_nan() || src.nominal_rate_hz <= 0.0 {
        return Err(PlanError::NoRegularRate {
            stream: stream(),
            rate_hz: src.nominal_rate_hz,
        });
    }
    if src.format == "string" || src.format == "undefined" {
        return Err(PlanError::NotNumeric {
            stream: stream(),
            format: src.format.to_string(),
        });
    }
    if src.labels.iter().all(|l| l.is_empty()) {
        return Err(PlanError::Unlabelled { stream: stream() });
    }
    // Labels the model does not need may be anything; unknown ones are left out
    // (with a note) instead of failing the whole mapping.
    let mut overrides = settings.channel_map.clone();
    let mapping = match electrodes::map_labels(src.labels, &overrides) {
        Ok(m) => m,
        Err(MappingError::Unmapped(unknown)) => {
            notes.push(PlanNote::LabelsLeftOut(
                unknown.iter().map(|(l, _)| l.clone()).collect(),
            ));
            for (l, _) in &unknown {
                overrides.insert(l.clone(), "-".into());
            }
            electrodes::map_labels(src.labels, &overrides).map_err(|source| PlanError::Mapping {
                stream: stream(),
                source,
            })?
        }
        Err(source) => {
            return Err(PlanError::Mapping {
                stream: stream(),
                source,
            })
        }
    };
    let mut selection = Vec::new();
    let mut missing = Vec::new();
    for ch in &card.channels {
        let want = electrodes::canonical(ch);
        match mapping.electrodes.iter().find(|(_, e)| **e == want) {
            Some((i, _)) => selection.push(*i),
            None => missing.push(want),
        }
    }
    if !missing.is_empty() {
        let have: BTreeSet<&str> = mapping.electrodes.iter().map(|(_, e)| *e).collect();
        return Err(PlanError::MissingElectrodes {
            stream: stream(),
            missing,
            have: have.into_iter().map(String::from).collect(),
        });
    }
    let mut to_microvolts = Vec::with_capacity(selection.len());
    let mut defaulted = Vec::new();
    for &i in &selection {
        let factor = match settings.unit {
            Unit::Auto => {
                let u = src.units.get(i).map(String::as_str).unwrap_or("");
                if u.trim().is_empty() {
                    defaulted.push(src.labels[i].clone());
                    1.0
                } else {
                    Unit::parse_metadata(u)
                        .and_then(Unit::to_microvolts)
                        .ok_or_else(|| PlanError::NotVoltage {
                            stream: stream(),
                            label: src.labels[i].clone(),
                            unit: u.to_string(),
                        })?
                }
            }
            fixed => fixed.to_microvolts().unwrap_or(1.0),
        };
        to_microvolts.push(factor);
    }
    if !defaulted.is_empty() {
        notes.push(PlanNote::UnitsDefaulted {
            stream: stream(),
            labels: defaulted,
        });
    }
    let hop_s = settings.hop_s;
    let hop_frames = window::hop_frames(hop_s, src.nominal_rate_hz);
    let served_s = hop_frames as f64 / src.nominal_rate_hz;
    if (served_s - hop_s).abs() > 0.01 * hop_s {
        notes.push(PlanNote::HopRounded {
            hop_s,
            rate_hz: src.nominal_rate_hz,
            hop_frames,
            served_s,
        });
    }
    let config = StageConfig {
        n_input_channels: src.channel_count,
        selection,
        to_microvolts,
        input_rate_hz: src.nominal_rate_hz,
        patches: settings.patches,
        hop_frames,
        preprocessing,
    };
    Ok((config, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(channels: &[&str]) -> ModelCard {
        ModelCard {
            format: 1,
            architecture: "labram_base_patch200_200".into(),
            trained: true,
            task: "test".into(),
            classes: vec!["a".into(), "b".into()],
            channels: channels.iter().map(|s| s.to_string()).collect(),
            patch_size: 200,
            sample_rate_hz: 200.0,
            window_patches: 4,
            hop_s: 0.5,
            preprocessing: Preprocessing::default(),
            provenance: Default::default(),
            adaptation: None,
        }
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        labels: &[&str],
        units: &[&str],
        format: &str,
        unit: Unit,
        map: &BTreeMap<String, String>,
        card_ch: &[&str],
        hop_s: f64,
        rate: f64,
    ) -> Result<(StageConfig, Vec<PlanNote>), PlanError> {
        let labels = strings(labels);
        let units = strings(units);
        let src = Source {
            name: "eeg",
            labels: &labels,
            units: &units,
            nominal_rate_hz: rate,
            format,
            channel_count: labels.len(),
        };
        let settings = Settings {
            channel_map: map,
            unit,
            patches: 4,
            hop_s,
        };
        plan(&src, &card(card_ch), &settings, Preprocessing::default())
    }

    fn simple(
        labels: &[&str],
        units: &[&str],
        unit: Unit,
    ) -> Result<(StageConfig, Vec<PlanNote>), PlanError> {
        run(
            labels,
            units,
            "float32",
            unit,
            &BTreeMap::new(),
            &["Fp1", "Cz"],
            0.5,
            250.0,
        )
    }

    #[test]
    fn missing_electrodes_are_listed() {
        let e = run(
            &["Fp1", "Fp2"],
            &["", ""],
            "float32",
            Unit::Auto,
            &BTreeMap::new(),
            &["Fp1", "Cz", "O1"],
            0.5,
            250.0,
        )
        .unwrap_err();
        assert!(
            matches!(&e, PlanError::MissingElectrodes { missing, .. } if missing == &["CZ", "O1"])
        );
        let msg = e.to_string();
        assert!(
            msg.contains("lacks electrodes the model needs: CZ, O1"),
            "{msg}"
        );
        assert!(
            msg.contains("the stream has: FP1, FP2") && msg.contains("input.channel_map"),
            "{msg}"
        );
    }

    #[test]
    fn unit_metadata() {
        for (u, f) in [
            ("µV", 1.0),
            ("uV", 1.0),
            ("mV", 1e3),
            ("V", 1e6),
            ("microvolts", 1.0),
        ] {
            let (c, notes) = simple(&["Fp1", "Cz"], &[u, u], Unit::Auto).unwrap();
            assert_eq!(c.to_microvolts, vec![f, f], "{u}");
            assert!(notes.is_empty(), "{u}: {notes:?}");
        }
        assert_eq!(Unit::parse_metadata("counts"), None);
        assert_eq!(Unit::parse_metadata(" Volts "), Some(Unit::Volt));
        // A fixed unit wins over the metadata.
        let (c, _) = simple(&["Fp1", "Cz"], &["counts", ""], Unit::Millivolt).unwrap();
        assert_eq!(c.to_microvolts, vec![1e3, 1e3]);
    }

    #[test]
    fn empty_unit_defaults_to_microvolts_with_a_note() {
        let (c, notes) = simple(&["Fp1", "Cz"], &["uV", " "], Unit::Auto).unwrap();
        assert_eq!(c.to_microvolts, vec![1.0, 1.0]);
        assert_eq!(
            notes,
            vec![PlanNote::UnitsDefaulted {
                stream: "eeg".into(),
                labels: vec!["Cz".into()]
            }]
        );
        assert!(notes[0].is_warning());
        assert!(notes[0]
            .to_string()
            .contains("declares no unit for Cz; assuming µV"));
        // No units at all (short list) default too.
        let (_, notes) = simple(&["Fp1", "Cz"], &[], Unit::Auto).unwrap();
        assert!(matches!(&notes[0], PlanNote::UnitsDefaulted { labels, .. } if labels.len() == 2));
    }

    #[test]
    fn non_voltage_unit_is_an_error() {
        let e = simple(&["Fp1", "Cz"], &["uV", "counts"], Unit::Auto).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("channel `Cz` has unit `counts`") && msg.contains("input.unit"),
            "{msg}"
        );
    }

    #[test]
    fn channel_map_overrides_and_unknown_labels() {
        let mut map = BTreeMap::new();
        map.insert("ch1".to_string(), "Cz".to_string());
        map.insert("ref".to_string(), "-".to_string());
        let (c, notes) = run(
            &["ref", "Fp1", "ch1", "xyz"],
            &[],
            "float32",
            Unit::Microvolt,
            &map,
            &["Cz", "Fp1"],
            0.5,
            250.0,
        )
        .unwrap();
        assert_eq!(c.selection, vec![2, 1]);
        assert_eq!(c.n_input_channels, 4);
        assert_eq!(notes, vec![PlanNote::LabelsLeftOut(vec!["xyz".into()])]);
        assert!(!notes[0].is_warning());
    }

    #[test]
    fn unlabelled_stream_is_an_error() {
        let e = simple(&["", ""], &[], Unit::Auto).unwrap_err();
        assert_eq!(
            e,
            PlanError::Unlabelled {
                stream: "eeg".into()
            }
        );
        assert!(e.to_string().contains("input.channel_map"));
    }

    #[test]
    fn string_stream_is_an_error() {
        let e = run(
            &["Fp1", "Cz"],
            &[],
            "string",
            Unit::Auto,
            &BTreeMap::new(),
            &["Fp1", "Cz"],
            0.5,
            250.0,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "input stream `eeg` carries string samples; the daemon needs numeric EEG samples"
        );
        let e = run(
            &["Fp1", "Cz"],
            &[],
            "float32",
            Unit::Auto,
            &BTreeMap::new(),
            &["Fp1", "Cz"],
            0.5,
            0.0,
        )
        .unwrap_err();
        assert!(matches!(e, PlanError::NoRegularRate { .. }));
    }

    #[test]
    fn hop_rounding_is_a_note() {
        let labels = ["Fp1", "Cz"];
        let units = ["uV", "uV"];
        let none = BTreeMap::new();
        let (c, notes) = run(
            &labels,
            &units,
            "float32",
            Unit::Auto,
            &none,
            &labels,
            0.5,
            250.0,
        )
        .unwrap();
        assert_eq!(c.hop_frames, 125);
        assert!(notes.is_empty());
        // 0.1 s at 33 Hz: 3.3 samples → 3 (90.91 ms).
        let (c, notes) = run(
            &labels,
            &units,
            "float32",
            Unit::Auto,
            &none,
            &labels,
            0.1,
            33.0,
        )
        .unwrap();
        assert_eq!(c.hop_frames, 3);
        assert!(matches!(
            notes[..],
            [PlanNote::HopRounded { hop_frames: 3, .. }]
        ));
        assert!(notes[0].to_string().contains("every 3 samples (90.91 ms)"));
    }

    #[test]
    fn zero_phase_card_gets_causal_live_preprocessing() {
        let mut c = card(&["Cz"]);
        c.preprocessing.mode = FilterMode::ZeroPhase;
        c.preprocessing.sample_rate_hz = 250.0;
        let (p, notes) = preprocessing(&c, None, None);
        assert_eq!(p.mode, FilterMode::Causal);
        assert_eq!(p.sample_rate_hz, crate::card::SAMPLE_RATE_HZ);
        assert_eq!(notes, vec![PlanNote::NotCausal(FilterMode::ZeroPhase)]);
        assert!(notes[0].to_string().contains("can only filter causally"));
    }

    #[test]
    fn config_overrides_differing_from_the_card_are_notes() {
        let c = card(&["Cz"]);
        let (p, notes) = preprocessing(&c, Some(None), Some(c.preprocessing.notch_hz));
        assert_eq!(p.bandpass_hz, None);
        assert_eq!(p.notch_hz, c.preprocessing.notch_hz);
        assert_eq!(
            notes,
            vec![PlanNote::BandpassDiffers {
                config: None,
                card: c.preprocessing.bandpass_hz
            }]
        );
    }
}
