//! EDF, EDF+ (`EDF+C`, `EDF+D`, annotations) and BDF/BDF+ (24-bit, BioSemi
//! `Status` channel) reading, record by record.
//!
//! * [`EdfReader::open`] parses the header ([`Header`], one [`SignalHeader`]
//!   per signal: label, rate, physical dimension, scaling, [`Unit`]) and then
//!   reads one data record at a time ([`EdfReader::next_record`],
//!   [`EdfReader::seek_record`]), so a multi-gigabyte file never has to fit in
//!   memory. Signals may have different rates (samples per record).
//! * Physical values use each signal's own header fields, with EDFlib's formula
//!   (as pyedflib): `gain = (pmax − pmin)/(dmax − dmin)`,
//!   `physical = gain · (digital + pmax/gain − dmax)`. Units `uV`/`µV`/`mV`/`V`/`nV`
//!   convert to µV ([`Record::uv_into`], [`EdfReader::read_all_uv`]); other
//!   dimensions (`Boolean`, …) stay as they are and the signal is not EEG
//!   ([`SignalHeader::is_voltage`]).
//! * Annotations: [`EdfReader::annotations`] (TAL parsing in [`annotations`]),
//!   record onsets of EDF+D files: [`EdfReader::record_onsets`].
//! * `labramd replay`: [`EdfReader::read_frames`] gives the next record's frames
//!   of chosen same-rate signals interleaved in µV with the record's onset.
//! * XDF (LabRecorder's format): [`xdf`], a chunk reader and pyxdf's timestamp
//!   processing.
//!
//! Every malformed input is an error ([`RecordingError`]) naming the file, the
//! header field or byte offset and what is wrong; nothing panics (the header
//! parser is fuzzed: `fuzz/fuzz_targets/header.rs`, and property-tested below).
//!
//! # Why the project's own reader
//! Checked on crates.io (2026-11): `edf-rs` 0.2.0 (pure Rust, EDF/EDF+ and,
//! since 0.2, BDF; self-described as early and unstable; its header parser
//! `unwrap`s the version field and its errors carry neither field nor offset),
//! `edf-reader` 0.6.0 (EDF only, no BDF, no EDF+ annotations; `panic!`s on a
//! malformed number), `edflib` 0.0.2 (bindings to the C EDFlib through
//! `edflib-sys` 0.0.2, a C build and a path-only API, two releases) and
//! `edfplus` 0.1.0 (EDF+ only). None combines BDF, EDF+D, record-wise reading
//! and panic-free, field-naming errors, and the format is small (a fixed
//! ASCII header, little-endian 16/24-bit samples, TALs): under 1000 lines here (tests included),
//! tested against pyedflib on written and real files.

pub mod annotations;
mod header;
mod reader;
pub mod xdf;

use std::path::PathBuf;

pub use annotations::{Annotation, RecordAnnotations};
pub use header::{
    decode_text, Continuity, Format, Header, SignalHeader, Unit, FIXED_BYTES, SIGNAL_BYTES,
};
pub use reader::{EdfReader, FrameBlock, Record};

/// Errors reading a recording. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is a directory; expected an EDF/BDF recording file (.edf/.bdf): give one of the files in it")]
    IsDirectory { path: PathBuf },
    #[error("{path} is truncated or corrupt at byte {offset}: {what}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("{path}: header field `{field}` at byte {offset} is {value:?}: {reason}")]
    Field {
        path: PathBuf,
        field: String,
        offset: usize,
        value: String,
        reason: String,
    },
    #[error("{path}: annotation in data record {record} at byte {offset}: {reason}")]
    Annotation {
        path: PathBuf,
        record: usize,
        offset: u64,
        reason: String,
    },
    #[error("{path}: no signal {index} (the file has {count} signals)")]
    NoSuchSignal {
        path: PathBuf,
        index: usize,
        count: usize,
    },
    #[error("{path}: signals `{first}` and `{other}` have different sample rates; read them separately (or resample)")]
    MixedRates {
        path: PathBuf,
        first: String,
        other: String,
    },
}

#[cfg(test)]
pub(crate) mod testfile {
    //! A minimal EDF/BDF writer for tests and fuzz seeds.

    pub struct Sig<'a> {
        pub label: &'a str,
        pub dim: &'a str,
        pub pmin: f64,
        pub pmax: f64,
        pub dmin: i32,
        pub dmax: i32,
        pub spr: usize,
    }

    fn field(out: &mut Vec<u8>, s: &str, w: usize) {
        let mut b = s.as_bytes().to_vec();
        b.resize(w, b' ');
        out.extend_from_slice(&b[..w]);
    }

    /// Header + `records` records; sample values `f(signal, record, i)`;
    /// annotation signals get a time-keeping TAL.
    pub fn build(
        bdf: bool,
        reserved: &str,
        duration: &str,
        sigs: &[Sig],
        records: usize,
        f: impl Fn(usize, usize, usize) -> i32,
    ) -> Vec<u8> {
        let ns = sigs.len();
        let mut h = Vec::new();
        if bdf {
            h.push(0xFF);
            field(&mut h, "BIOSEMI", 7);
        } else {
            field(&mut h, "0", 8);
        }
        field(&mut h, "X X X X", 80);
        field(&mut h, "Startdate X X X X", 80);
        field(&mut h, "01.01.20", 8);
        field(&mut h, "10.00.00", 8);
        field(&mut h, &(256 * (ns + 1)).to_string(), 8);
        field(&mut h, reserved, 44);
        field(&mut h, &records.to_string(), 8);
        field(&mut h, duration, 8);
        field(&mut h, &ns.to_string(), 4);
        for s in sigs {
            field(&mut h, s.label, 16);
        }
        for _ in sigs {
            field(&mut h, "", 80);
        }
        for s in sigs {
            field(&mut h, s.dim, 8);
        }
        for s in sigs {
            field(&mut h, &s.pmin.to_string(), 8);
        }
        for s in sigs {
            field(&mut h, &s.pmax.to_string(), 8);
        }
        for s in sigs {
            field(&mut h, &s.dmin.to_string(), 8);
        }
        for s in sigs {
            field(&mut h, &s.dmax.to_string(), 8);
        }
        for _ in sigs {
            field(&mut h, "", 80);
        }
        for s in sigs {
            field(&mut h, &s.spr.to_string(), 8);
        }
        for _ in sigs {
            field(&mut h, "", 32);
        }
        let sb = if bdf { 3 } else { 2 };
        let dur: f64 = duration.trim().parse().unwrap_or(1.0);
        for r in 0..records {
            for (si, s) in sigs.iter().enumerate() {
                if s.label.ends_with("Annotations") {
                    let mut tal = format!("+{}\x14\x14\x00", r as f64 * dur).into_bytes();
                    tal.resize(s.spr * sb, 0);
                    h.extend_from_slice(&tal[..s.spr * sb]);
                } else {
                    for i in 0..s.spr {
                        let v = f(si, r, i);
                        let b = v.to_le_bytes();
                        h.extend_from_slice(&b[..sb]);
                    }
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::testfile::{build, Sig};
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;
    use std::path::Path;

    fn sample_file(bdf: bool) -> Vec<u8> {
        let (dmin, dmax) = if bdf {
            (-8388608, 8388607)
        } else {
            (-32768, 32767)
        };
        build(
            bdf,
            if bdf { "BDF+C" } else { "EDF+C" },
            "0.5",
            &[
                Sig {
                    label: "EEG Fp1",
                    dim: "uV",
                    pmin: -3200.0,
                    pmax: 3200.0,
                    dmin,
                    dmax,
                    spr: 50,
                },
                Sig {
                    label: "ECG",
                    dim: "mV",
                    pmin: -5.0,
                    pmax: 5.0,
                    dmin: -2048,
                    dmax: 2047,
                    spr: 25,
                },
                Sig {
                    label: if bdf {
                        "BDF Annotations"
                    } else {
                        "EDF Annotations"
                    },
                    dim: "",
                    pmin: -1.0,
                    pmax: 1.0,
                    dmin: -32768,
                    dmax: 32767,
                    spr: 30,
                },
            ],
            4,
            |s, r, i| ((s * 1000 + r * 100 + i) as i32 - 200) * if s == 0 { 7 } else { 1 },
        )
    }

    fn open(bytes: &[u8]) -> Result<EdfReader<Cursor<&[u8]>>, RecordingError> {
        EdfReader::from_reader(
            Cursor::new(bytes),
            Some(bytes.len() as u64),
            Path::new("mem.edf"),
        )
    }

    #[test]
    fn reads_edf_and_bdf_records() {
        for bdf in [false, true] {
            let bytes = sample_file(bdf);
            let mut r = open(&bytes).unwrap();
            let h = r.header().clone();
            assert_eq!(h.format, if bdf { Format::Bdf } else { Format::Edf });
            assert_eq!(h.continuity, Continuity::PlusContinuous);
            assert_eq!(h.n_records, 4);
            assert_eq!(h.sample_rate_hz(0), Some(100.0));
            assert_eq!(h.sample_rate_hz(1), Some(50.0));
            assert_eq!(h.annotation_signals(), vec![2]);
            assert!(h.signals[0].is_voltage() && h.signals[1].is_voltage());
            let all = r.read_all(&[0, 1]).unwrap();
            assert_eq!(all[0].len(), 200);
            assert_eq!(all[1].len(), 100);
            let g = 6400.0 / (h.signals[0].digital_max as f64 - h.signals[0].digital_min as f64);
            // digital value of record 1 sample 3 = (100 + 3 - 200) * 7
            let want = g * ((-97 * 7) as f64 + 3200.0 / g - h.signals[0].digital_max as f64);
            assert!((all[0][53] - want).abs() < 1e-9);
            let uv = r.read_all_uv(&[1]).unwrap();
            assert!((uv[0][0] as f64 - all[1][0] * 1000.0).abs() < 1e-2);
            assert_eq!(r.record_onsets().unwrap(), vec![0.0, 0.5, 1.0, 1.5]);
            assert!(r.annotations().unwrap().is_empty());
            r.seek_record(2).unwrap();
            let mut frames = Vec::new();
            let b = r.read_frames(&[0], &mut frames).unwrap().unwrap();
            assert_eq!((b.record, b.frames, b.onset_s), (2, 50, 1.0));
            assert!(r
                .read_frames(&[0, 1], &mut frames)
                .unwrap_err()
                .to_string()
                .contains("different sample rates"));
        }
    }

    #[test]
    fn edf_plus_d_record_onsets_come_from_the_time_keeping_tals() {
        let mut bytes = build(
            false,
            "EDF+D",
            "0.5",
            &[
                Sig {
                    label: "Cz",
                    dim: "uV",
                    pmin: -100.0,
                    pmax: 100.0,
                    dmin: -32768,
                    dmax: 32767,
                    spr: 10,
                },
                Sig {
                    label: "EDF Annotations",
                    dim: "",
                    pmin: -1.0,
                    pmax: 1.0,
                    dmin: -32768,
                    dmax: 32767,
                    spr: 20,
                },
            ],
            4,
            |_, r, i| (r * 10 + i) as i32,
        );
        // record 2's time-keeping TAL "+1" → "+9" (a gap), plus an event in record 3
        let (hdr, rec) = (256 * 3, 10 * 2 + 20 * 2);
        let at = hdr + 2 * rec + 20;
        assert_eq!(&bytes[at..at + 2], b"+1");
        bytes[at + 1] = b'9';
        let at3 = hdr + 3 * rec + 20;
        let tal = b"+1.5\x14\x14\x00+9.75\x150.25\x14blink\x14\x00";
        bytes[at3..at3 + tal.len()].copy_from_slice(tal);
        let mut r = open(&bytes).unwrap();
        assert_eq!(r.header().continuity, Continuity::PlusDiscontinuous);
        assert_eq!(r.record_onsets().unwrap(), vec![0.0, 0.5, 9.0, 1.5]);
        assert_eq!(
            r.annotations().unwrap(),
            vec![Annotation {
                onset_s: 9.75,
                duration_s: Some(0.25),
                text: "blink".into()
            }]
        );
        r.seek_record(2).unwrap();
        let mut frames = Vec::new();
        let b = r.read_frames(&[0], &mut frames).unwrap().unwrap();
        assert_eq!((b.record, b.onset_s), (2, 9.0));
        assert!(r.next_record().unwrap().unwrap().is_discontinuous());
    }

    #[test]
    fn truncation_is_an_error_naming_the_offset() {
        let bytes = sample_file(false);
        let cut = &bytes[..bytes.len() - 10];
        let e = open(cut).err().unwrap().to_string();
        assert!(
            e.contains("mem.edf") && e.contains("truncated") && e.contains("3 complete records"),
            "{e}"
        );
        let e = open(&bytes[..300]).err().unwrap().to_string();
        assert!(e.contains("truncated") && e.contains("byte 300"), "{e}");
    }

    #[test]
    fn bad_fields_are_named() {
        let mut bytes = sample_file(false);
        bytes[244..252].copy_from_slice(b"abc     ");
        let e = open(&bytes).err().unwrap().to_string();
        assert!(
            e.contains("duration of a data record") && e.contains("byte 244") && e.contains("abc"),
            "{e}"
        );
        let mut bytes = sample_file(false);
        // digital minimum of signal 2: 256 + 3*(16+80+8+8+8) + 8
        let off = 256 + 3 * 120 + 8;
        bytes[off..off + 8].copy_from_slice(b"99999999");
        let e = open(&bytes).err().unwrap().to_string();
        assert!(
            e.contains("signal 2 digital minimum") && e.contains(&format!("byte {off}")),
            "{e}"
        );
        let mut bytes = sample_file(false);
        bytes[0] = b'X';
        assert!(open(&bytes)
            .err()
            .unwrap()
            .to_string()
            .contains("not an EDF/BDF file"));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Random bytes written over a valid header, and random truncation:
        /// always Ok or Err, never a panic; reading every record too.
        #[test]
        fn mutated_headers_never_panic(
            bdf in any::<bool>(),
            edits in proptest::collection::vec((0usize..1100, any::<u8>()), 0..12),
            cut in proptest::option::of(0usize..4000),
            ascii in proptest::collection::vec((0usize..1024, prop_oneof![Just(b'-'), Just(b'9'), Just(b'0'), Just(b' '), Just(b'.'), Just(b'e')]), 0..8),
        ) {
            let mut bytes = sample_file(bdf);
            for (pos, b) in edits.into_iter().chain(ascii) {
                if pos < bytes.len() {
                    bytes[pos] = b;
                }
            }
            if let Some(c) = cut {
                bytes.truncate(c.min(bytes.len()));
            }
            let _ = Header::parse(&bytes, Some(bytes.len() as u64), Path::new("fuzz"));
            if let Ok(mut r) = open(&bytes) {
                let _ = r.annotations();
                let n = r.header().signals.len();
                let _ = r.read_all(&(0..n).collect::<Vec<_>>());
            }
        }

        /// Random bytes everywhere after a valid preamble (version, header size,
        /// signal count), so that every per-signal field parser and the record
        /// reader see arbitrary input: Ok or a field error past the preamble,
        /// never a panic. (Fully random bytes are refused at the version field.)
        #[test]
        fn random_fields_after_a_valid_preamble_never_panic(
            bdf in any::<bool>(),
            ns in 1usize..4,
            body in proptest::collection::vec(any::<u8>(), 256 * 4..256 * 4 + 3000),
            digits in proptest::collection::vec((0usize..1024, prop_oneof![Just(b'-'), Just(b'1'), Just(b'0'), Just(b' '), Just(b'.'), Just(b'8')]), 0..200),
        ) {
            let need = 256 * (ns + 1);
            let mut bytes = body;
            // Numeric-looking bytes here and there, so numbers parse sometimes.
            for (pos, b) in digits {
                bytes[pos] = b;
            }
            let version: &[u8] = if bdf { b"\xffBIOSEMI" } else { b"0       " };
            bytes[..8].copy_from_slice(version);
            bytes[184..192].copy_from_slice(format!("{need:<8}").as_bytes());
            bytes[252..256].copy_from_slice(format!("{ns:<4}").as_bytes());
            let parsed = Header::parse(&bytes, Some(bytes.len() as u64), Path::new("fuzz"));
            if let Err(e) = &parsed {
                let msg = e.to_string();
                for preamble in ["`version`", "`number of signals`", "`number of bytes in header record`"] {
                    prop_assert!(!msg.contains(preamble), "stopped in the preamble: {}", msg);
                }
            }
            match open(&bytes) {
                Ok(mut r) => {
                    prop_assert!(parsed.is_ok());
                    let _ = r.annotations();
                    let n = r.header().signals.len();
                    prop_assert_eq!(n, ns);
                    let _ = r.read_all(&(0..n).collect::<Vec<_>>());
                }
                Err(e) => prop_assert!(parsed.is_err(), "parse Ok but open failed: {}", e),
            }
        }
    }

    #[test]
    fn zero_record_duration_with_signals_is_named_not_missing_electrodes() {
        let sigs = |label| Sig {
            label,
            dim: "uV",
            pmin: -100.0,
            pmax: 100.0,
            dmin: -32768,
            dmax: 32767,
            spr: 10,
        };
        let ann = Sig {
            label: "EDF Annotations",
            dim: "",
            pmin: -1.0,
            pmax: 1.0,
            dmin: -32768,
            dmax: 32767,
            spr: 20,
        };
        let bytes = build(
            false,
            "EDF+C",
            "0",
            &[sigs("EEG Fp1"), sigs("EEG Cz"), ann],
            2,
            |_, _, i| i as i32,
        );
        let e = open(&bytes).err().unwrap().to_string();
        assert!(
            e.contains("duration of a data record")
                && e.contains("is 0 s")
                && e.contains("EEG Fp1, EEG Cz")
                && e.contains("real record duration"),
            "{e}"
        );
        // Annotation-only EDF+ files may have 0-s records.
        let ann = Sig {
            label: "EDF Annotations",
            dim: "",
            pmin: -1.0,
            pmax: 1.0,
            dmin: -32768,
            dmax: 32767,
            spr: 20,
        };
        let bytes = build(false, "EDF+C", "0", &[ann], 2, |_, _, _| 0);
        let r = open(&bytes).unwrap();
        assert_eq!(r.header().record_duration_s, 0.0);
    }

    #[test]
    fn a_directory_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let e = EdfReader::open(dir.path()).err().unwrap();
        assert!(matches!(e, RecordingError::IsDirectory { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("is a directory")
                && msg.contains(".edf")
                && msg.contains(&dir.path().display().to_string())
                && !msg.contains("os error"),
            "{msg}"
        );
    }
}
