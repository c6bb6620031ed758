//! Subject-wise splits: parsing subject ranges from the command line
//! (`--train 0-21 --val 22-24 --test 25-27`), the random subject split of the
//! official TUAB/TUEV makers (a fraction of the training subjects held out for
//! validation), and subject names from TUH / PhysioNet file names.
//!
//! Windows are never split: every window of a subject goes to its subject's split.

use std::collections::BTreeSet;

/// A set of subject numbers parsed from `0-21`, `22,24`, `3` or `0-3,7`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubjectSet(pub BTreeSet<u32>);

impl std::str::FromStr for SubjectSet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let num = |t: &str| {
                t.trim().parse::<u32>().map_err(|_| {
                    format!("`{t}` in `{s}` is not a subject number; write ranges like `0-21` or lists like `22,24`")
                })
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (num(a)?, num(b)?);
                    if a > b {
                        return Err(format!("range `{part}` runs backwards; write `{b}-{a}`"));
                    }
                    set.extend(a..=b);
                }
                None => {
                    set.insert(num(part)?);
                }
            }
        }
        if set.is_empty() {
            return Err(format!("`{s}` names no subject"));
        }
        Ok(SubjectSet(set))
    }
}

impl std::fmt::Display for SubjectSet {
    /// Compact ranges: `0-21`, `22,24`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v: Vec<u32> = self.0.iter().copied().collect();
        let mut parts = Vec::new();
        let mut i = 0;
        while i < v.len() {
            let mut j = i;
            while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
                j += 1;
            }
            parts.push(if j > i {
                format!("{}-{}", v[i], v[j])
            } else {
                v[i].to_string()
            });
            i = j + 1;
        }
        f.write_str(&parts.join(","))
    }
}

/// SplitMix64: a tiny, well-known deterministic generator, so that a split
/// depends only on the seed (and not on a crate's version).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// How the official makers round the validation share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// make_TUAB.py: `train = subjects[: int(n * 0.8)]`, the rest validate.
    TrainRoundsDown,
    /// make_TUEV.py: `val = choice(subjects, int(n * 0.2))`, the rest train.
    ValRoundsDown,
}

/// Splits `subjects` (sorted first, so the result depends only on the set and
/// the seed) into (train, val) with `val_fraction` of them, rounded as the
/// official maker of the corpus does.
pub fn random_subject_split(
    subjects: &BTreeSet<String>,
    val_fraction: f64,
    seed: u64,
    rounding: Rounding,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut v: Vec<String> = subjects.iter().cloned().collect();
    SplitMix64::new(seed).shuffle(&mut v);
    let n = v.len() as f64;
    let n_train = match rounding {
        Rounding::TrainRoundsDown => (n * (1.0 - val_fraction)).floor() as usize,
        Rounding::ValRoundsDown => v.len() - (n * val_fraction).floor() as usize,
    };
    let val = v.split_off(n_train.min(v.len()));
    (v.into_iter().collect(), val.into_iter().collect())
}

/// TUH's subject id: the file name up to the first `_`
/// (`aaaaamye_s001_t000.edf` → `aaaaamye`), as the official makers take it.
pub fn tuh_subject(file_name: &str) -> String {
    file_name.split('_').next().unwrap_or(file_name).to_string()
}

/// A generic subject id from a file stem: leading letters, then the digits
/// that follow them, stopping at the first other character
/// (`S001R04` → `S001`, `Subject00_1` → `Subject00`, `aaaaamye_s001` → `aaaaamye`).
pub fn stem_subject(stem: &str) -> String {
    let mut out = String::new();
    let mut seen_digit = false;
    for c in stem.chars() {
        if c.is_ascii_digit() {
            seen_digit = true;
        } else if !c.is_alphabetic() || seen_digit {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        stem.to_string()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_sets_parse_and_print() {
        let s: SubjectSet = "0-3, 7,9-10".parse().unwrap();
        assert_eq!(
            s.0.iter().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 7, 9, 10]
        );
        assert_eq!(s.to_string(), "0-3,7,9-10");
        let e = "5-2".parse::<SubjectSet>().unwrap_err();
        assert!(e.contains("2-5"), "{e}");
        let e = "a-2".parse::<SubjectSet>().unwrap_err();
        assert!(e.contains("`a`"), "{e}");
        assert!("".parse::<SubjectSet>().is_err());
    }

    #[test]
    fn random_split_is_deterministic_and_disjoint() {
        let subjects: BTreeSet<String> = (0..10).map(|i| format!("s{i}")).collect();
        let (t1, v1) = random_subject_split(&subjects, 0.2, 4523, Rounding::TrainRoundsDown);
        let (t2, v2) = random_subject_split(&subjects, 0.2, 4523, Rounding::TrainRoundsDown);
        assert_eq!((&t1, &v1), (&t2, &v2));
        assert_eq!((t1.len(), v1.len()), (8, 2));
        assert!(t1.is_disjoint(&v1));
        let (_, v3) = random_subject_split(&subjects, 0.2, 1, Rounding::TrainRoundsDown);
        assert_ne!(v1, v3, "another seed, another split (for these ten)");
        // Seven subjects: TUAB keeps int(5.6) = 5 for training, TUEV holds out int(1.4) = 1.
        let seven: BTreeSet<String> = (0..7).map(|i| format!("s{i}")).collect();
        assert_eq!(
            random_subject_split(&seven, 0.2, 3, Rounding::TrainRoundsDown)
                .1
                .len(),
            2
        );
        assert_eq!(
            random_subject_split(&seven, 0.2, 3, Rounding::ValRoundsDown)
                .1
                .len(),
            1
        );
    }

    #[test]
    fn subject_names_from_files() {
        assert_eq!(tuh_subject("aaaaamye_s001_t000.edf"), "aaaaamye");
        assert_eq!(stem_subject("S001R04"), "S001");
        assert_eq!(stem_subject("Subject00_1"), "Subject00");
        assert_eq!(stem_subject("aaaaamye_s001_t000"), "aaaaamye");
        assert_eq!(stem_subject("_x"), "_x");
    }
}
