//! Fuzzes the XDF chunk parser (`labram_core::recording::xdf`): every chunk of
//! any input, with and without a known file length, and the pyxdf-style
//! timestamp processing of whatever was read, must give chunks or an error,
//! never a panic, an out-of-bounds access or an allocation beyond the input
//! (a declared chunk length or sample count is checked against the bytes
//! there before anything is allocated).
#![no_main]

use std::io::Cursor;
use std::path::Path;

use labram_core::recording::xdf::{load_from, LoadOptions, XdfReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.xdf");
    for len in [Some(data.len() as u64), None] {
        if let Ok(reader) = XdfReader::from_reader(Cursor::new(data), len, path) {
            for chunk in reader {
                if chunk.is_err() {
                    break;
                }
            }
        }
    }
    if let Ok(reader) = XdfReader::from_reader(Cursor::new(data), Some(data.len() as u64), path) {
        let _ = load_from(reader, &LoadOptions::default());
    }
});
