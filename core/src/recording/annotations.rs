//! EDF+ / BDF+ annotations: Time-stamped Annotation Lists (TALs) in the
//! `EDF Annotations` signal of every data record.
//!
//! A TAL is `±onset[0x15 duration]0x14 text0x14 text0x14 … 0x00`; a record's
//! annotation signal holds TALs back to back, then zero padding. The first TAL
//! of each record is the *time-keeping* TAL: its first (empty) text marks the
//! record's onset in seconds since the file start (EDF+D records may have gaps).

/// One annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// Seconds since the start of the recording (as written in the TAL).
    pub onset_s: f64,
    /// Duration in seconds, when the TAL gives one.
    pub duration_s: Option<f64>,
    pub text: String,
}

/// What one record's annotation signal says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordAnnotations {
    /// Onset of the data record (the time-keeping TAL), if present.
    pub record_onset_s: Option<f64>,
    /// The record's annotations, without the time-keeping entry.
    pub annotations: Vec<Annotation>,
}

/// Why a TAL could not be read: the byte offset inside the annotation signal
/// and what was wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct TalError {
    pub offset: usize,
    pub reason: String,
}

fn parse_number(bytes: &[u8], what: &str, offset: usize) -> Result<f64, TalError> {
    let s = std::str::from_utf8(bytes).map_err(|_| TalError {
        offset,
        reason: format!("{what} is not ASCII"),
    })?;
    let ok_chars = !s.is_empty()
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_digit() || b == b'.' || (i == 0 && (b == b'+' || b == b'-')));
    match s.parse::<f64>() {
        Ok(v) if ok_chars && v.is_finite() => Ok(v),
        _ => Err(TalError {
            offset,
            reason: format!("{what} `{}` is not a number", s.escape_debug()),
        }),
    }
}

/// Decodes annotation text: UTF-8 (as EDF+ specifies), Latin-1 otherwise.
fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

/// Parses the TALs of one record's annotation signal. `first_is_timekeeping`:
/// the first TAL's first text is the record's time stamp (true for the first
/// annotation signal of a record).
pub fn parse_tals(bytes: &[u8], first_is_timekeeping: bool) -> Result<RecordAnnotations, TalError> {
    let mut out = RecordAnnotations::default();
    let mut pos = 0;
    let mut first = true;
    while pos < bytes.len() && bytes[pos] != 0 {
        let start = pos;
        // onset
        if bytes[pos] != b'+' && bytes[pos] != b'-' {
            return Err(TalError {
                offset: pos,
                reason: format!(
                    "a TAL must start with `+` or `-`, found byte 0x{:02x}",
                    bytes[pos]
                ),
            });
        }
        let onset_end = bytes[pos..]
            .iter()
            .position(|&b| b == 0x14 || b == 0x15 || b == 0)
            .map(|p| p + pos)
            .ok_or_else(|| TalError {
                offset: start,
                reason: "unterminated TAL onset".into(),
            })?;
        let onset = parse_number(&bytes[pos..onset_end], "onset", pos)?;
        pos = onset_end;
        let mut duration = None;
        if bytes[pos] == 0x15 {
            pos += 1;
            let dur_end = bytes[pos..]
                .iter()
                .position(|&b| b == 0x14 || b == 0)
                .map(|p| p + pos)
                .ok_or_else(|| TalError {
                    offset: pos,
                    reason: "unterminated TAL duration".into(),
                })?;
            duration = Some(parse_number(&bytes[pos..dur_end], "duration", pos)?);
            pos = dur_end;
        }
        if bytes[pos] != 0x14 {
            return Err(TalError {
                offset: pos,
                reason: "TAL onset not followed by 0x14".into(),
            });
        }
        pos += 1;
        // texts, each ended by 0x14, the TAL by 0x00
        let mut k = 0;
        loop {
            let Some(&b) = bytes.get(pos) else {
                return Err(TalError {
                    offset: start,
                    reason: "TAL not terminated by 0x14 0x00 before the end of the signal".into(),
                });
            };
            if b == 0 {
                pos += 1;
                break;
            }
            let end = bytes[pos..]
                .iter()
                .position(|&b| b == 0x14 || b == 0)
                .map(|p| p + pos)
                .ok_or_else(|| TalError {
                    offset: pos,
                    reason: "unterminated annotation text".into(),
                })?;
            if bytes[end] == 0 {
                return Err(TalError {
                    offset: end,
                    reason: "annotation text not terminated by 0x14".into(),
                });
            }
            let text = decode(&bytes[pos..end]);
            if first && first_is_timekeeping && k == 0 {
                out.record_onset_s = Some(onset);
                // The time-keeping text is empty; a non-empty one is kept as
                // an annotation too.
                if !text.is_empty() {
                    out.annotations.push(Annotation {
                        onset_s: onset,
                        duration_s: duration,
                        text,
                    });
                }
            } else {
                out.annotations.push(Annotation {
                    onset_s: onset,
                    duration_s: duration,
                    text,
                });
            }
            k += 1;
            pos = end + 1;
        }
        first = false;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn time_keeping_and_events() {
        let b = b"+0\x14\x14\x00+4.2\x154.1\x14T2\x14\x00+5\x14a\x14b\x14\x00\x00\x00\x00";
        let r = parse_tals(b, true).unwrap();
        assert_eq!(r.record_onset_s, Some(0.0));
        assert_eq!(
            r.annotations,
            vec![
                Annotation {
                    onset_s: 4.2,
                    duration_s: Some(4.1),
                    text: "T2".into()
                },
                Annotation {
                    onset_s: 5.0,
                    duration_s: None,
                    text: "a".into()
                },
                Annotation {
                    onset_s: 5.0,
                    duration_s: None,
                    text: "b".into()
                },
            ]
        );
        assert_eq!(
            parse_tals(b"\x00\x00", true).unwrap(),
            RecordAnnotations::default()
        );
    }

    #[test]
    fn malformed_tals_are_errors() {
        for bad in [
            &b"0\x14\x14\x00"[..],
            b"+x\x14\x14\x00",
            b"+1\x15\x14\x14\x00",
            b"+1\x14abc",
            b"+1",
            b"+1\x15",
            b"+1\x14a\x00",
        ] {
            assert!(parse_tals(bad, true).is_err(), "{:?}", bad);
        }
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_tals(&bytes, true);
        }

        #[test]
        fn never_panics_on_tal_like_bytes(
            parts in proptest::collection::vec(
                prop_oneof![Just(b'+'), Just(b'-'), Just(0x14u8), Just(0x15u8), Just(0u8), Just(b'1'), Just(b'.'), Just(b'a')],
                0..60)
        ) {
            let _ = parse_tals(&parts, true);
        }
    }
}
