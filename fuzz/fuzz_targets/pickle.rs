//! Fuzzes the trainer's non-executing pickle reader (the `data.pkl` of a torch
//! `.pth`): any input must give `Ok` or `Err` within bounded memory and stack,
//! never a panic, an overflow or a leak (reference cycles included).
//!
//! The module is compiled in from the trainer's source, so that this crate needs
//! neither tch nor libtorch: `pickle.rs` depends on `std` and `thiserror` only.
//!
//! Depth is what small inputs cannot reach (a 200,000-deep graph is a 400 KB
//! stream), so each input also runs amplified: its first byte `n` picks a repeat
//! count `(n + 1) · 1000`, and the rest, cut in half, becomes the opening half
//! repeated that many times, then the closing half as often, then STOP. The seed
//! `seeds/pickle/nested_lists` (`0xc7 ] a`) is 200,000 nested lists, the input
//! that once overflowed the stack. Run with the seeds:
//!   cd fuzz && cargo +nightly fuzz run pickle corpus/pickle seeds/pickle
#![no_main]

#[allow(dead_code)]
#[path = "../../trainer/src/checkpoint/pickle.rs"]
mod pickle;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pickle::parse(data);
    if let [n, rest @ ..] = data {
        if (2..=16).contains(&rest.len()) {
            let (open, close) = rest.split_at(rest.len() / 2);
            let reps = (*n as usize + 1) * 1000;
            let mut p = Vec::with_capacity(3 + reps * rest.len());
            p.extend_from_slice(&[0x80, 2]);
            for _ in 0..reps {
                p.extend_from_slice(open);
            }
            for _ in 0..reps {
                p.extend_from_slice(close);
            }
            p.push(b'.');
            let _ = pickle::parse(&p);
        }
    }
});
