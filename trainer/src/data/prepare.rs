//! One recording in, the model's view of it out: read with
//! [`labram_core::recording`], map channel labels to electrodes with
//! [`labram_core::electrodes`], pick the channels a dataset wants (in its order),
//! and run [`labram_core::dsp::preprocess`] in the mode asked for. The daemon uses
//! the same three modules, so a dataset sees what the daemon sees.

use std::collections::BTreeMap;
use std::path::Path;

use labram_core::card::Preprocessing;
use labram_core::electrodes::{self, ChannelMapping, MappingError};

use super::runner::SkipReason;

/// An event annotation (EDF+ TAL), seconds from the start of the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub onset_s: f64,
    pub duration_s: f64,
    pub text: String,
}

/// What a recording's header says, enough to choose channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Signal labels, file order.
    pub labels: Vec<String>,
    /// Sample rate of each signal.
    pub rates_hz: Vec<f64>,
}

/// Which channels to keep.
#[derive(Debug, Clone, PartialEq)]
pub enum Channels {
    /// Every channel that maps to an electrode, in file order.
    AllMapped,
    /// Exactly these electrodes in this order; a recording missing one is skipped.
    Exactly(Vec<String>),
}

/// A preprocessed recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Electrode names, row order.
    pub channels: Vec<&'static str>,
    /// `[channels][samples]` µV at 200 Hz.
    pub data: Vec<Vec<f32>>,
    pub input_rate_hz: f64,
    /// Samples per channel at the input rate.
    pub input_samples: usize,
    /// Event annotations (empty for files without).
    pub events: Vec<Event>,
}

impl Prepared {
    /// Samples per channel at 200 Hz.
    pub fn samples(&self) -> usize {
        self.data.first().map_or(0, Vec::len)
    }

    /// Input channel-samples (the throughput unit of the benchmark).
    pub fn input_channel_samples(&self) -> u64 {
        (self.channels.len() * self.input_samples) as u64
    }
}

/// Maps labels to electrodes with [`electrodes::map_labels`]. Labels that match
/// no electrode (TUH's `EEG 26-REF`, `EEG EKG1-REF`…) are left out, as the
/// official makers drop the channels the model cannot use, instead of failing
/// the file; two labels on one electrode still fail it.
fn map_dropping_unknown(
    labels: &[String],
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<(usize, &'static str)>, SkipReason> {
    let channels = |e: MappingError| SkipReason::new("channels", e.to_string());
    match electrodes::map_labels(labels, overrides) {
        Ok(m) => Ok(m.electrodes),
        Err(MappingError::Unmapped(unknown)) => {
            let mut ov = overrides.clone();
            for (label, _) in &unknown {
                ov.insert(label.clone(), String::new());
            }
            tracing::debug!(
                labels = ?unknown.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
                "left out: no electrode of that name"
            );
            let ChannelMapping { electrodes, .. } =
                electrodes::map_labels(labels, &ov).map_err(channels)?;
            Ok(electrodes)
        }
        Err(e) => Err(channels(e)),
    }
}

/// Maps `labels` and chooses the rows to read: `(source index, electrode)`.
pub fn choose_channels(
    labels: &[String],
    overrides: &BTreeMap<String, String>,
    want: &Channels,
) -> Result<Vec<(usize, &'static str)>, SkipReason> {
    let mapped = map_dropping_unknown(labels, overrides)?;
    match want {
        Channels::AllMapped => {
            if mapped.is_empty() {
                return Err(SkipReason::new(
                    "channels",
                    format!(
                        "no channel maps to an electrode (labels: {})",
                        labels.join(", ")
                    ),
                ));
            }
            Ok(mapped)
        }
        Channels::Exactly(names) => {
            let mut out = Vec::with_capacity(names.len());
            let mut missing = Vec::new();
            for n in names {
                let canon = electrodes::canonical(n);
                match mapped.iter().find(|(_, e)| e.eq_ignore_ascii_case(&canon)) {
                    Some(&hit) => out.push(hit),
                    None => missing.push(n.clone()),
                }
            }
            if !missing.is_empty() {
                return Err(SkipReason::new(
                    "channels",
                    format!(
                        "missing electrode(s) {} (the file has: {})",
                        missing.join(", "),
                        mapped
                            .iter()
                            .map(|(_, e)| *e)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Ok(out)
        }
    }
}

/// Reads a recording's header (voltage signals only).
pub fn read_header(path: &Path) -> Result<Header, SkipReason> {
    reader::header(path).map(|(h, _)| h)
}

/// Reads a recording's event annotations only.
pub fn read_events(path: &Path) -> Result<Vec<Event>, SkipReason> {
    reader::read(path, &[], true).map(|(_, ev)| ev)
}

/// Selected channels of a recording, before preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    /// Electrode names, row order.
    pub channels: Vec<&'static str>,
    /// `[channels][samples]` µV at the input rate.
    pub signals: Vec<Vec<f32>>,
    pub rate_hz: f64,
    pub events: Vec<Event>,
}

/// Reads and selects the channels of one recording, unpreprocessed (sessions
/// concatenate several files before the causal chain, as a stream would).
/// `events`: also read the EDF+ annotations (a second pass over the file).
pub fn read_raw(
    path: &Path,
    overrides: &BTreeMap<String, String>,
    want: &Channels,
    events: bool,
) -> Result<Raw, SkipReason> {
    let (header, file_rows) = reader::header(path)?;
    let chosen = choose_channels(&header.labels, overrides, want)?;
    let rate = header.rates_hz[chosen[0].0];
    if let Some(&(i, e)) = chosen.iter().find(|(i, _)| header.rates_hz[*i] != rate) {
        return Err(SkipReason::new(
            "rates",
            format!(
                "electrode {e} (`{}`) is sampled at {} Hz but {} at {rate} Hz; the chosen channels must share one rate",
                header.labels[i], header.rates_hz[i], chosen[0].1
            ),
        ));
    }
    let rows: Vec<usize> = chosen.iter().map(|(i, _)| file_rows[*i]).collect();
    let (signals, events) = reader::read(path, &rows, events)?;
    Ok(Raw {
        channels: chosen.iter().map(|(_, e)| *e).collect(),
        signals,
        rate_hz: rate,
        events,
    })
}

/// Reads, selects and preprocesses one recording.
/// `events`: also read the EDF+ annotations (a second pass over the file).
pub fn prepare(
    path: &Path,
    overrides: &BTreeMap<String, String>,
    want: &Channels,
    pre: &Preprocessing,
    events: bool,
) -> Result<Prepared, SkipReason> {
    let raw = read_raw(path, overrides, want, events)?;
    let input_samples = raw.signals.first().map_or(0, Vec::len);
    let data = labram_core::dsp::preprocess(&raw.signals, raw.rate_hz, pre)
        .map_err(|e| SkipReason::new("preprocessing", e.to_string()))?;
    Ok(Prepared {
        channels: raw.channels,
        data,
        input_rate_hz: raw.rate_hz,
        input_samples,
        events: raw.events,
    })
}

/// The one place that talks to `labram_core::recording`.
mod reader {
    use super::*;
    use labram_core::recording::EdfReader;

    fn unreadable(e: impl std::fmt::Display) -> SkipReason {
        SkipReason::new("unreadable", e.to_string())
    }

    /// Voltage signals only: annotation and non-voltage signals (`Status`,
    /// `Boolean`…) can never be EEG. `rows[k]` is the file's signal index of
    /// `labels[k]`.
    pub fn header(path: &Path) -> Result<(Header, Vec<usize>), SkipReason> {
        let r = EdfReader::open(path).map_err(unreadable)?;
        let h = r.header();
        let mut labels = Vec::new();
        let mut rates_hz = Vec::new();
        let mut rows = Vec::new();
        for (i, s) in h.signals.iter().enumerate() {
            if !s.is_voltage() {
                continue;
            }
            let Some(rate) = h.sample_rate_hz(i) else {
                continue;
            };
            labels.push(s.label.clone());
            rates_hz.push(rate);
            rows.push(i);
        }
        Ok((Header { labels, rates_hz }, rows))
    }

    /// Signals `rows` (file indices) in µV, and the annotations when asked.
    pub fn read(
        path: &Path,
        rows: &[usize],
        events: bool,
    ) -> Result<(Vec<Vec<f32>>, Vec<Event>), SkipReason> {
        let mut r = EdfReader::open(path).map_err(unreadable)?;
        let data = if rows.is_empty() {
            Vec::new()
        } else {
            r.read_all_uv(rows).map_err(unreadable)?
        };
        let events = if events {
            r.annotations()
                .map_err(unreadable)?
                .into_iter()
                .map(|a| Event {
                    onset_s: a.onset_s,
                    duration_s: a.duration_s.unwrap_or(0.0),
                    text: a.text,
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok((data, events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn channel_choice_orders_and_reports_missing() {
        let l = labels(&["EEG Fp1", "EEG Cz", "ECG ECG", "EEG A2-A1", "EEG Fp2"]);
        let none = BTreeMap::new();
        let all = choose_channels(&l, &none, &Channels::AllMapped).unwrap();
        assert_eq!(all, vec![(0, "FP1"), (1, "CZ"), (4, "FP2")]);
        let want = Channels::Exactly(vec!["FP2".into(), "fp1".into()]);
        assert_eq!(
            choose_channels(&l, &none, &want).unwrap(),
            vec![(4, "FP2"), (0, "FP1")]
        );
        let want = Channels::Exactly(vec!["FP2".into(), "O1".into(), "PZ".into()]);
        let e = choose_channels(&l, &none, &want).unwrap_err();
        assert_eq!(e.category, "channels");
        assert!(e.message.contains("O1, PZ"), "{}", e.message);
        // Unknown labels are left out; a duplicate electrode fails the file.
        let l = labels(&["EEG FP1-REF", "EEG 26-REF", "EEG EKG1-REF"]);
        assert_eq!(
            choose_channels(&l, &none, &Channels::AllMapped).unwrap(),
            vec![(0, "FP1")]
        );
        let e = choose_channels(
            &labels(&["Fp1", "EEG FP1-REF"]),
            &none,
            &Channels::AllMapped,
        )
        .unwrap_err();
        assert!(
            e.message.contains("both map to electrode FP1"),
            "{}",
            e.message
        );
        let e =
            choose_channels(&labels(&["ECG", "Status"]), &none, &Channels::AllMapped).unwrap_err();
        assert!(e.message.contains("no channel"), "{}", e.message);
    }
}
