//! The 128 electrode names LaBraM knows, and the one mapping from channel labels as
//! amplifiers and files write them (`EEG Fp1-REF`, `Fc5.`, `fp1`) to those names.
//!
//! The list is the official `standard_1020` cut to its first 128 entries: the
//! position embedding has 129 rows (row 0 is the CLS slot), so the last 8 of its 16
//! bipolar names can never be used. Names are upper case except the `h` suffix, and old
//! and new names are different electrodes (`T3` is not `T7`), exactly as upstream.
//! Everything that turns a label into an electrode (daemon config, replay, dataset
//! makers) goes through [`classify_label`], so training and live inference agree.

use std::collections::BTreeMap;

/// Number of electrodes usable by the model (rows of `pos_embed` minus the CLS row).
pub const NUM_ELECTRODES: usize = 128;

/// The usable electrode names, in the order of the model's position embedding.
pub const ELECTRODES: [&str; NUM_ELECTRODES] = [
    "FP1", "FPZ", "FP2", "AF9", "AF7", "AF5", "AF3", "AF1", "AFZ", "AF2", "AF4", "AF6", "AF8",
    "AF10", "F9", "F7", "F5", "F3", "F1", "FZ", "F2", "F4", "F6", "F8", "F10", "FT9", "FT7", "FC5",
    "FC3", "FC1", "FCZ", "FC2", "FC4", "FC6", "FT8", "FT10", "T9", "T7", "C5", "C3", "C1", "CZ",
    "C2", "C4", "C6", "T8", "T10", "TP9", "TP7", "CP5", "CP3", "CP1", "CPZ", "CP2", "CP4", "CP6",
    "TP8", "TP10", "P9", "P7", "P5", "P3", "P1", "PZ", "P2", "P4", "P6", "P8", "P10", "PO9", "PO7",
    "PO5", "PO3", "PO1", "POZ", "PO2", "PO4", "PO6", "PO8", "PO10", "O1", "OZ", "O2", "O9", "CB1",
    "CB2", "IZ", "O10", "T3", "T5", "T4", "T6", "M1", "M2", "A1", "A2", "CFC1", "CFC2", "CFC3",
    "CFC4", "CFC5", "CFC6", "CFC7", "CFC8", "CCP1", "CCP2", "CCP3", "CCP4", "CCP5", "CCP6", "CCP7",
    "CCP8", "T1", "T2", "FTT9h", "TTP7h", "TPP9h", "FTT10h", "TPP8h", "TPP10h",
    // The first 8 of upstream's 16 bipolar TUH montage names fit the embedding; the
    // other 8 (FP1-F3 … P4-O2) index past it and are not electrodes here.
    "FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
];

/// The 23 monopolar channels of the official TUAB/TUEV makers (`chOrder_standard`), in order.
pub const TUH_STANDARD_23: [&str; 23] = [
    "FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3", "T4", "T5",
    "T6", "A1", "A2", "FZ", "CZ", "PZ", "T1", "T2",
];

/// Errors of the electrode mapping. Each names the offending label and what would fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElectrodeError {
    #[error("`{name}` is not one of LaBraM's 128 electrode names{}", suggest(.closest))]
    UnknownElectrode { name: String, closest: Vec<String> },
    #[error("electrode `{0}` is listed twice; each electrode may appear once")]
    Duplicate(String),
    #[error("no channels given: a model needs at least one electrode")]
    Empty,
}

fn suggest(closest: &[String]) -> String {
    if closest.is_empty() {
        String::new()
    } else {
        format!("; closest valid names: {}", closest.join(", "))
    }
}

/// Canonical spelling of an electrode name: upper case, except the trailing `h` of the
/// half-position names (`FTT9h`).
pub fn canonical(name: &str) -> String {
    let trimmed = name.trim();
    let upper = trimmed.to_ascii_uppercase();
    if upper.len() > 1 && upper.ends_with('H') {
        let stem = &upper[..upper.len() - 1];
        let cand = format!("{stem}h");
        if ELECTRODES.contains(&cand.as_str()) {
            return cand;
        }
    }
    upper
}

/// Index (0-based) of an electrode name in [`ELECTRODES`], case-insensitive.
pub fn index_of(name: &str) -> Option<usize> {
    let c = canonical(name);
    ELECTRODES.iter().position(|e| *e == c)
}

/// Looks an electrode name up, or fails with the closest valid names.
pub fn electrode(name: &str) -> Result<&'static str, ElectrodeError> {
    index_of(name)
        .map(|i| ELECTRODES[i])
        .ok_or_else(|| ElectrodeError::UnknownElectrode {
            name: name.to_string(),
            closest: closest_names(name, 3),
        })
}

/// `input_chans` for the model: `[0] + [index(name) + 1 ...]` (0 is the CLS slot).
pub fn input_chans<S: AsRef<str>>(names: &[S]) -> Result<Vec<i64>, ElectrodeError> {
    if names.is_empty() {
        return Err(ElectrodeError::Empty);
    }
    let mut out = Vec::with_capacity(names.len() + 1);
    out.push(0);
    let mut seen = std::collections::HashSet::new();
    for n in names {
        let e = electrode(n.as_ref())?;
        if !seen.insert(e) {
            return Err(ElectrodeError::Duplicate(e.to_string()));
        }
        out.push(index_of(e).map(|i| i as i64 + 1).unwrap_or(0));
    }
    Ok(out)
}

/// The `n` valid names closest to `name` (edit distance on the canonical spelling).
pub fn closest_names(name: &str, n: usize) -> Vec<String> {
    let c = canonical(name);
    let mut scored: Vec<(usize, &str)> = ELECTRODES
        .iter()
        .map(|e| (levenshtein(&c, &e.to_ascii_uppercase()), *e))
        .collect();
    scored.sort_by_key(|(d, e)| (*d, e.len()));
    scored
        .into_iter()
        .take(n)
        .map(|(_, e)| e.to_string())
        .collect()
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// What a channel label stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// A scalp electrode the model knows.
    Electrode(&'static str),
    /// A reference or bipolar-reference channel (`A2-A1`, `REF`): recognised, left out.
    Reference,
    /// Not EEG (ECG, EOG, EMG, trigger/`Status`, respiration, annotations…): left out.
    NonEeg,
    /// Looks like EEG but matches no electrode name: the caller decides (usually an error).
    Unknown,
}

const NON_EEG_PREFIXES: [&str; 18] = [
    "ECG",
    "EKG",
    "EOG",
    "EMG",
    "STATUS",
    "STI",
    "TRIG",
    "RESP",
    "PHOTIC",
    "IBI",
    "BURSTS",
    "SUPPR",
    "PULSE",
    "SPO2",
    "HR",
    "EDF ANNOTATIONS",
    "BDF ANNOTATIONS",
    "EVENT",
];

/// Classifies a channel label as written by amplifiers and files.
///
/// Handles the `EEG ` type prefix, reference suffixes (`-REF`, `-LE`, `-AR`, `-AVG`,
/// `-M1`…), the trailing dots of PhysioNet's EDF files (`Fc5.`, `Iz..`), and case.
/// A label of two electrodes (`A2-A1`, `FP1-F7`) is a bipolar derivation, which the
/// model cannot take: it is reported as [`LabelKind::Reference`].
pub fn classify_label(label: &str) -> LabelKind {
    let mut s = label.trim().trim_end_matches('.').trim().to_string();
    let upper = s.to_ascii_uppercase();
    for p in NON_EEG_PREFIXES {
        if upper.starts_with(p) {
            return LabelKind::NonEeg;
        }
    }
    for prefix in ["EEG ", "EEG-", "EEG_", "EEG:"] {
        if upper.starts_with(prefix) {
            s = s[prefix.len()..].trim().to_string();
            break;
        }
    }
    if let Some(i) = index_of(&s) {
        return LabelKind::Electrode(ELECTRODES[i]);
    }
    let upper = s.to_ascii_uppercase();
    if matches!(
        upper.as_str(),
        "REF" | "GND" | "COM" | "CMS" | "DRL" | "AVG"
    ) {
        return LabelKind::Reference;
    }
    if let Some((head, tail)) = s.split_once(['-', '/']) {
        let tail_u = tail.trim().to_ascii_uppercase();
        let is_ref_suffix = matches!(
            tail_u.as_str(),
            "REF" | "LE" | "RE" | "AR" | "AVG" | "AV" | "CAR" | "REF1" | "M1M2" | "A1A2" | "LINKED"
        );
        if is_ref_suffix || (index_of(tail.trim()).is_some() && index_of(head.trim()).is_none()) {
            // `FP1-REF`, or an electrode referenced to a named one (`FP1-A1`): the first is the electrode.
            if is_ref_suffix {
                return match index_of(head.trim()) {
                    Some(i) => LabelKind::Electrode(ELECTRODES[i]),
                    None => LabelKind::Unknown,
                };
            }
        }
        if index_of(head.trim()).is_some() && index_of(tail.trim()).is_some() {
            return LabelKind::Reference;
        }
        return match index_of(head.trim()) {
            Some(i) => LabelKind::Electrode(ELECTRODES[i]),
            None => LabelKind::Unknown,
        };
    }
    match index_of(&s) {
        Some(i) => LabelKind::Electrode(ELECTRODES[i]),
        None => LabelKind::Unknown,
    }
}

/// The result of mapping a stream's or file's labels to electrodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMapping {
    /// For each usable channel: (index in the source, electrode name).
    pub electrodes: Vec<(usize, &'static str)>,
    /// Source channels recognised and left out (references, non-EEG), with their labels.
    pub left_out: Vec<(usize, String)>,
}

/// Errors mapping labels to electrodes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("channel label(s) that map to no electrode: {}; give an explicit map (label: electrode) or fix the labels", list_unknown(.0))]
    Unmapped(Vec<(String, Vec<String>)>),
    #[error("labels `{first}` and `{second}` both map to electrode {electrode}; map one of them explicitly")]
    Duplicate {
        electrode: String,
        first: String,
        second: String,
    },
    #[error(transparent)]
    Electrode(#[from] ElectrodeError),
}

fn list_unknown(items: &[(String, Vec<String>)]) -> String {
    items
        .iter()
        .map(|(l, c)| format!("`{l}` (closest: {})", c.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Maps every label: the explicit `overrides` (label → electrode name, or to `""`/`"-"`
/// to drop the channel) win; the rest go through [`classify_label`]. Labels that look
/// like EEG but match nothing are an error listing each with the closest valid names.
pub fn map_labels<S: AsRef<str>>(
    labels: &[S],
    overrides: &BTreeMap<String, String>,
) -> Result<ChannelMapping, MappingError> {
    let mut electrodes: Vec<(usize, &'static str)> = Vec::new();
    let mut left_out = Vec::new();
    let mut unknown = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let label = label.as_ref();
        if let Some(target) = overrides.get(label) {
            if target.is_empty() || target == "-" {
                left_out.push((i, label.to_string()));
            } else {
                electrodes.push((i, electrode(target)?));
            }
            continue;
        }
        match classify_label(label) {
            LabelKind::Electrode(e) => electrodes.push((i, e)),
            LabelKind::Reference | LabelKind::NonEeg => left_out.push((i, label.to_string())),
            LabelKind::Unknown => unknown.push((label.to_string(), closest_names(label, 3))),
        }
    }
    if !unknown.is_empty() {
        return Err(MappingError::Unmapped(unknown));
    }
    for (a, (ia, ea)) in electrodes.iter().enumerate() {
        if let Some((ib, _)) = electrodes[a + 1..].iter().find(|(_, eb)| eb == ea) {
            return Err(MappingError::Duplicate {
                electrode: ea.to_string(),
                first: labels[*ia].as_ref().to_string(),
                second: labels[*ib].as_ref().to_string(),
            });
        }
    }
    Ok(ChannelMapping {
        electrodes,
        left_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_matches_official_positions() {
        assert_eq!(ELECTRODES.len(), 128);
        assert_eq!(index_of("FP1"), Some(0));
        assert_eq!(index_of("fz"), Some(19));
        assert_eq!(index_of("TPP10h"), Some(119));
        assert_eq!(index_of("tpp10H"), Some(119));
        assert_eq!(index_of("P8-O2"), Some(127));
        // The golden input_chans for FP1 FP2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 FZ CZ PZ.
        let names = "FP1 FP2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 FZ CZ PZ";
        let names: Vec<&str> = names.split(' ').collect();
        assert_eq!(
            input_chans(&names).unwrap(),
            vec![0, 1, 3, 18, 22, 16, 24, 89, 91, 40, 44, 90, 92, 62, 66, 81, 83, 20, 42, 64]
        );
        assert_eq!(
            input_chans(&TUH_STANDARD_23).unwrap(),
            vec![
                0, 1, 3, 18, 22, 40, 44, 62, 66, 81, 83, 16, 24, 89, 91, 90, 92, 95, 96, 20, 42,
                64, 113, 114
            ]
        );
    }

    #[test]
    fn unknown_name_suggests_closest() {
        let err = electrode("FP3").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`FP3`"), "{msg}");
        assert!(msg.contains("FP1") || msg.contains("FPZ"), "{msg}");
        assert!(matches!(
            input_chans(&["FP1", "fp1"]),
            Err(ElectrodeError::Duplicate(_))
        ));
        assert_eq!(input_chans::<&str>(&[]), Err(ElectrodeError::Empty));
        // The bipolar names past the 128 rows are not usable.
        assert!(electrode("FP1-F3").is_err());
        assert_eq!(electrode("fp1-f7"), Ok("FP1-F7"));
    }

    #[test]
    fn labels_as_written_by_files_and_amplifiers() {
        use LabelKind::*;
        assert_eq!(classify_label("EEG Fp1-REF"), Electrode("FP1"));
        assert_eq!(classify_label("EEG FP1-LE"), Electrode("FP1"));
        assert_eq!(classify_label("Fc5."), Electrode("FC5"));
        assert_eq!(classify_label("Iz.."), Electrode("IZ"));
        assert_eq!(classify_label("fp1"), Electrode("FP1"));
        assert_eq!(classify_label("EEG T3"), Electrode("T3"));
        assert_eq!(classify_label("EEG A2-A1"), Reference);
        assert_eq!(classify_label("EEG FP1-F7"), Electrode("FP1-F7"));
        assert_eq!(classify_label("FP1-F3"), Reference);
        assert_eq!(classify_label("ECG ECG"), NonEeg);
        assert_eq!(classify_label("EKG1-REF"), NonEeg);
        assert_eq!(classify_label("Status"), NonEeg);
        assert_eq!(classify_label("EDF Annotations"), NonEeg);
        assert_eq!(classify_label("EEG XYZ-REF"), Unknown);
    }

    #[test]
    fn map_labels_overrides_and_errors() {
        let labels = ["EEG Fp1-REF", "EEG Fp2-REF", "ECG", "Chan 4"];
        let err = map_labels(&labels, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("`Chan 4`"), "{err}");
        let mut ov = BTreeMap::new();
        ov.insert("Chan 4".to_string(), "cz".to_string());
        let m = map_labels(&labels, &ov).unwrap();
        assert_eq!(m.electrodes, vec![(0, "FP1"), (1, "FP2"), (3, "CZ")]);
        assert_eq!(m.left_out, vec![(2, "ECG".to_string())]);
        let dup = map_labels(&["Fp1", "EEG FP1-REF"], &BTreeMap::new()).unwrap_err();
        assert!(matches!(dup, MappingError::Duplicate { .. }));
    }
}
