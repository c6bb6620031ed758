//! The Temple University Hospital corpora as the official makers read them
//! (`dataset_maker/make_TUAB.py`, `make_TUEV.py`).
//!
//! **TUAB** (abnormal EEG, v3.0.0): `<root>/{train,eval}/{normal,abnormal}/01_tcp_ar/*.edf`.
//! Label 1 for `abnormal`, 0 for `normal`; subject = file name up to the first `_`.
//! `eval` is the test split; the `train` subjects of each class are shuffled and
//! the first 80 % train, the rest validate. Windows: 10 s (2000 samples at 200 Hz)
//! back to back from the start of the recording, the remainder dropped.
//!
//! **TUEV** (events, v2.0.0): `<root>/{train,eval}/<subject>/<name>.edf`, each with
//! `<name>.rec` beside it: CSV rows `channel,start_s,end_s,label` with label 1–6
//! (spsw, gped, pled, eyem, artf, bckg; stored 0–5). One window per row: from
//! 2 s before the event's start to 2 s after its end (5 s for TUEV's 1-s events),
//! cut from the recording repeated three times end to end, so windows at either
//! end wrap around. `eval` is the test split; 20 % of the `train` subjects
//! validate.
//!
//! Both use the 23 monopolar channels of `chOrder_standard`
//! ([`labram_core::electrodes::TUH_STANDARD_23`]), in that order. Differences from the
//! official code, on purpose: the subject shuffle uses this crate's seeded
//! SplitMix64 (numpy's generator cannot be reproduced without numpy, and
//! make_TUAB.py sets no seed at all), so the same seed picks other validation
//! subjects than numpy would; and a recording with extra electrodes beyond the 23
//! is kept (the 23 are selected) where MNE's `reorder_channels` check would reject it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// TUEV's six classes, label 1–6 in the `.rec` files → index 0–5 here.
pub const TUEV_CLASSES: [&str; 6] = ["spsw", "gped", "pled", "eyem", "artf", "bckg"];
/// TUAB's classes: folder `normal` → 0, `abnormal` → 1.
pub const TUAB_CLASSES: [&str; 2] = ["normal", "abnormal"];
/// TUAB windows: 10 s.
pub const TUAB_WINDOW_PATCHES: usize = 10;
/// TUEV windows: 2 s + 1-s event + 2 s.
pub const TUEV_WINDOW_PATCHES: usize = 5;
/// Seconds of context on either side of a TUEV event.
pub const TUEV_CONTEXT_S: f64 = 2.0;

/// One recording found in a TUH tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TuhFile {
    /// `train` or `eval` (the corpus's own top-level split).
    pub corpus_split: String,
    pub subject: String,
    /// Path relative to the root, `/`-separated (for metadata).
    pub rel: String,
    pub path: PathBuf,
    /// TUAB: 0 normal / 1 abnormal. TUEV: unused (labels come from `.rec`).
    pub label: usize,
}

/// Errors scanning a TUH tree.
#[derive(Debug, thiserror::Error)]
pub enum TuhError {
    #[error("cannot list {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{root}: no {what} found; expected {layout}")]
    Empty {
        root: PathBuf,
        what: &'static str,
        layout: &'static str,
    },
}

/// Every `*.edf` under `dir`, recursively, sorted.
pub fn edf_files(dir: &Path) -> Result<Vec<PathBuf>, TuhError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| TuhError::Io {
            path: d.clone(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| TuhError::Io {
                path: d.clone(),
                source,
            })?;
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("edf")) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn rel_components(root: &Path, p: &Path) -> Vec<String> {
    p.strip_prefix(root)
        .unwrap_or(p)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect()
}

/// Finds TUAB recordings under `root`. `montage` (e.g. `01_tcp_ar`, the
/// official choice) keeps only files under a folder of that name; `None` keeps all.
pub fn scan_tuab(root: &Path, montage: Option<&str>) -> Result<Vec<TuhFile>, TuhError> {
    let mut out = Vec::new();
    for path in edf_files(root)? {
        let comps = rel_components(root, &path);
        let dirs = &comps[..comps.len().saturating_sub(1)];
        let split = dirs.iter().find(|c| *c == "train" || *c == "eval");
        let label = dirs.iter().rev().find_map(|c| match c.as_str() {
            "normal" => Some(0),
            "abnormal" => Some(1),
            _ => None,
        });
        let montage_ok = montage.is_none_or(|m| dirs.iter().any(|c| c == m));
        if let (Some(split), Some(label), true) = (split, label, montage_ok) {
            let name = comps.last().cloned().unwrap_or_default();
            out.push(TuhFile {
                corpus_split: split.clone(),
                subject: super::split::tuh_subject(&name),
                rel: comps.join("/"),
                path,
                label,
            });
        }
    }
    if out.is_empty() {
        return Err(TuhError::Empty {
            root: root.to_path_buf(),
            what: "TUAB recordings",
            layout: "<root>/{train,eval}/{normal,abnormal}/01_tcp_ar/*.edf (pass --montage any for other montage folders)",
        });
    }
    out.sort();
    Ok(out)
}

/// Finds TUEV recordings under `root` (`.rec` presence is checked per file
/// when it is processed, so a missing one is reported as a skipped file).
pub fn scan_tuev(root: &Path) -> Result<Vec<TuhFile>, TuhError> {
    let mut out = Vec::new();
    for path in edf_files(root)? {
        let comps = rel_components(root, &path);
        let dirs = &comps[..comps.len().saturating_sub(1)];
        if let Some(split) = dirs.iter().find(|c| *c == "train" || *c == "eval") {
            let name = comps.last().cloned().unwrap_or_default();
            out.push(TuhFile {
                corpus_split: split.clone(),
                subject: super::split::tuh_subject(&name),
                rel: comps.join("/"),
                path,
                label: 0,
            });
        }
    }
    if out.is_empty() {
        return Err(TuhError::Empty {
            root: root.to_path_buf(),
            what: "TUEV recordings",
            layout: "<root>/{train,eval}/<subject>/<name>.edf with <name>.rec beside each",
        });
    }
    out.sort();
    Ok(out)
}

/// Assigns TUH files to train/val/test the official way: `eval` → test; the
/// `train` subjects shuffled with `seed`, `val_fraction` of them → val
/// (per class when `per_class`, as make_TUAB.py does for normal and abnormal).
pub fn assign_splits(
    files: &[TuhFile],
    val_fraction: f64,
    seed: u64,
    per_class: bool,
    rounding: super::split::Rounding,
) -> Vec<&'static str> {
    let classes: BTreeSet<usize> = if per_class {
        files.iter().map(|f| f.label).collect()
    } else {
        BTreeSet::from([usize::MAX])
    };
    let mut val_subjects: BTreeSet<(usize, String)> = BTreeSet::new();
    for &c in &classes {
        let subjects: BTreeSet<String> = files
            .iter()
            .filter(|f| f.corpus_split == "train" && (c == usize::MAX || f.label == c))
            .map(|f| f.subject.clone())
            .collect();
        let (_, val) = super::split::random_subject_split(&subjects, val_fraction, seed, rounding);
        val_subjects.extend(val.into_iter().map(|s| (c, s)));
    }
    files
        .iter()
        .map(|f| {
            let key = (
                if per_class { f.label } else { usize::MAX },
                f.subject.clone(),
            );
            if f.corpus_split == "eval" {
                "test"
            } else if val_subjects.contains(&key) {
                "val"
            } else {
                "train"
            }
        })
        .collect()
}

/// One row of a TUEV `.rec` file.
#[derive(Debug, Clone, PartialEq)]
pub struct RecEvent {
    /// Channel index in the TUH bipolar montage (kept for reference).
    pub channel: i64,
    pub start_s: f64,
    pub end_s: f64,
    /// Class index 0–5 (the file's 1–6 minus one).
    pub label: usize,
}

/// Parses a `.rec` file: `channel,start,end,label` per line; blank lines ignored.
/// Errors name the line and the field.
pub fn parse_rec(text: &str) -> Result<Vec<RecEvent>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 4 {
            return Err(format!(
                "line {}: `{line}` has {} fields, expected channel,start,end,label",
                i + 1,
                f.len()
            ));
        }
        let num = |k: usize, what: &str| {
            f[k].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("line {}: {what} `{}` is not a number", i + 1, f[k]))
        };
        let channel = num(0, "channel")? as i64;
        let (start_s, end_s) = (num(1, "start")?, num(2, "end")?);
        let label = num(3, "label")?;
        if label.fract() != 0.0 || !(1.0..=6.0).contains(&label) {
            return Err(format!(
                "line {}: label `{}` is not one of 1–6",
                i + 1,
                f[3]
            ));
        }
        if end_s < start_s || start_s < 0.0 {
            return Err(format!(
                "line {}: event {start_s}–{end_s} s runs backwards or before 0",
                i + 1
            ));
        }
        out.push(RecEvent {
            channel,
            start_s,
            end_s,
            label: label as usize - 1,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rec_rows_parse_and_errors_name_the_line() {
        let ev = parse_rec("14,62.0,63.0,6\n\n 3, 10.5 ,11.5, 1\n").unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[0],
            RecEvent {
                channel: 14,
                start_s: 62.0,
                end_s: 63.0,
                label: 5
            }
        );
        assert_eq!(ev[1].label, 0);
        let e = parse_rec("1,2,3,6\n1,2,3,7\n").unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
        let e = parse_rec("1,2,x,1").unwrap_err();
        assert!(e.contains("end `x`"), "{e}");
        assert!(parse_rec("1,2,3").is_err());
    }

    #[test]
    fn splits_keep_subjects_together() {
        let mut files = Vec::new();
        for s in 0..10 {
            for k in 0..2 {
                files.push(TuhFile {
                    corpus_split: "train".into(),
                    subject: format!("sub{s:02}"),
                    rel: format!("train/sub{s:02}_{k}.edf"),
                    path: PathBuf::new(),
                    label: s % 2,
                });
            }
        }
        files.push(TuhFile {
            corpus_split: "eval".into(),
            subject: "zzz".into(),
            rel: "eval/zzz_0.edf".into(),
            path: PathBuf::new(),
            label: 1,
        });
        let splits = assign_splits(
            &files,
            0.2,
            4523,
            true,
            crate::data::split::Rounding::TrainRoundsDown,
        );
        assert_eq!(splits.last(), Some(&"test"));
        for pair in splits[..20].chunks(2) {
            assert_eq!(pair[0], pair[1], "both files of a subject in one split");
        }
        // 5 subjects per class: int(5*0.8)=4 train, 1 val per class.
        assert_eq!(splits.iter().filter(|s| **s == "val").count(), 4);
    }
}
