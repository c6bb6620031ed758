//! The causal chain's two hot loops, vectorised across channels, compiled
//! for AVX-512 / AVX2 / baseline x86-64 and picked once at run time.
//!
//! Every channel is computed with the same operations in the same order
//! whichever variant runs (lanes are channels; Rust never contracts `a*b + c`
//! on its own; the FIR's explicit `mul_add` is exactly rounded everywhere, in
//! hardware on AVX2/AVX-512 machines, in software on CPUs without FMA), so all
//! variants give bit-identical results: chunk invariance and daemon/trainer
//! parity do not depend on the machine's instruction set.
//! The only `unsafe` is calling a `#[target_feature]` function after
//! `is_x86_feature_detected!` said the CPU has that feature.

/// One biquad's coefficients (Direct Form II Transposed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Section {
    pub b0: f64,
    pub b1: f64,
    pub b2: f64,
    pub a1: f64,
    pub a2: f64,
}

/// Which compiled variant runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Generic,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Isa {
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let fma = std::arch::is_x86_feature_detected!("fma");
            if fma && std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if fma && std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
        }
        Isa::Generic
    }
}

/// Biquad cascade over interleaved frames: `input` (finite f32, `n_ch` per
/// frame) → `dst` (f32), states `s1`, `s2` laid out `[section][channel]` in f64.
pub(crate) fn iir_frames(
    isa: Isa,
    secs: &[Section],
    s1: &mut [f64],
    s2: &mut [f64],
    n_ch: usize,
    input: &[f32],
    dst: &mut [f32],
) {
    match isa {
        Isa::Generic => iir_impl::<2, 1>(secs, s1, s2, n_ch, input, dst),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Isa::Avx2 is only constructed after detecting AVX2.
        Isa::Avx2 => unsafe { iir_avx2(secs, s1, s2, n_ch, input, dst) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Isa::Avx512 is only constructed after detecting AVX-512F.
        Isa::Avx512 => unsafe { iir_avx512(secs, s1, s2, n_ch, input, dst) },
    }
}

/// One resampler output: `out[c] = Σ_t h[t] · win[t·n_ch + c]`, appended.
pub(crate) fn fir_output(isa: Isa, h: &[f32], win: &[f32], n_ch: usize, out: &mut Vec<f32>) {
    match isa {
        Isa::Generic => fir_impl::<8>(h, win, n_ch, out),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see iir_frames.
        Isa::Avx2 => unsafe { fir_avx2(h, win, n_ch, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see iir_frames.
        Isa::Avx512 => unsafe { fir_avx512(h, win, n_ch, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn iir_avx2(
    secs: &[Section],
    s1: &mut [f64],
    s2: &mut [f64],
    n_ch: usize,
    input: &[f32],
    dst: &mut [f32],
) {
    iir_impl::<4, 2>(secs, s1, s2, n_ch, input, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn iir_avx512(
    secs: &[Section],
    s1: &mut [f64],
    s2: &mut [f64],
    n_ch: usize,
    input: &[f32],
    dst: &mut [f32],
) {
    iir_impl::<8, 4>(secs, s1, s2, n_ch, input, dst)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fir_avx2(h: &[f32], win: &[f32], n_ch: usize, out: &mut Vec<f32>) {
    fir_impl::<16>(h, win, n_ch, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn fir_avx512(h: &[f32], win: &[f32], n_ch: usize, out: &mut Vec<f32>) {
    fir_impl::<32>(h, win, n_ch, out)
}

/// `W` channels at a time (then `V`, then one): the frame's values stay in
/// registers through all sections; each section loads and stores only its
/// two states.
#[inline(always)]
fn iir_impl<const W: usize, const V: usize>(
    secs: &[Section],
    s1: &mut [f64],
    s2: &mut [f64],
    n_ch: usize,
    input: &[f32],
    dst: &mut [f32],
) {
    let full_w = n_ch / W * W;
    let full_v = full_w + (n_ch - full_w) / V * V;
    for (row_in, row_out) in input.chunks_exact(n_ch).zip(dst.chunks_exact_mut(n_ch)) {
        let mut c0 = 0;
        while c0 < full_w {
            iir_lanes::<W>(secs, s1, s2, n_ch, c0, row_in, row_out);
            c0 += W;
        }
        while c0 < full_v {
            iir_lanes::<V>(secs, s1, s2, n_ch, c0, row_in, row_out);
            c0 += V;
        }
        while c0 < n_ch {
            iir_lanes::<1>(secs, s1, s2, n_ch, c0, row_in, row_out);
            c0 += 1;
        }
    }
}

#[inline(always)]
fn iir_lanes<const W: usize>(
    secs: &[Section],
    s1: &mut [f64],
    s2: &mut [f64],
    n_ch: usize,
    c0: usize,
    row_in: &[f32],
    row_out: &mut [f32],
) {
    let mut x = [0.0f64; W];
    for j in 0..W {
        x[j] = row_in[c0 + j] as f64;
    }
    for (s, sec) in secs.iter().enumerate() {
        let z1 = &mut s1[s * n_ch + c0..s * n_ch + c0 + W];
        let z2 = &mut s2[s * n_ch + c0..s * n_ch + c0 + W];
        for j in 0..W {
            let inp = x[j];
            let out = z1[j] + sec.b0 * inp;
            z1[j] = z2[j] + sec.b1 * inp - sec.a1 * out;
            z2[j] = sec.b2 * inp - sec.a2 * out;
            x[j] = out;
        }
    }
    for j in 0..W {
        row_out[c0 + j] = x[j] as f32;
    }
}

/// Partial sums per output in the FIR: taps `t ≡ r (mod FIR_LANES)` go to
/// sum `r`, combined as `(p0 + p1) + (p2 + p3)`. Four independent addition
/// chains hide the adder's latency; every variant uses this same order.
/// Tap counts must be multiples of it (the designer rounds up).
pub(crate) const FIR_LANES: usize = 4;

/// `W` channels at a time with the accumulators in registers over all taps.
/// Channel counts that are not a multiple of `W` finish with one block that
/// overlaps the previous one (recomputing a few channels, with the same
/// operations, so the same values): no slow scalar tail.
#[inline(always)]
fn fir_impl<const W: usize>(h: &[f32], win: &[f32], n_ch: usize, out: &mut Vec<f32>) {
    if n_ch < W {
        if W > 16 && n_ch >= 16 {
            return fir_impl::<16>(h, win, n_ch, out);
        }
        if W > 8 && n_ch >= 8 {
            return fir_impl::<8>(h, win, n_ch, out);
        }
        if W > 1 {
            return fir_impl::<1>(h, win, n_ch, out);
        }
    }
    let base = out.len();
    out.resize(base + n_ch, 0.0);
    let dst = &mut out[base..];
    let mut c0 = 0;
    loop {
        let start = c0.min(n_ch - W);
        let mut acc = [[0.0f32; W]; FIR_LANES];
        for (t4, h4) in h.chunks_exact(FIR_LANES).enumerate() {
            for (r, &ht) in h4.iter().enumerate() {
                let t = t4 * FIR_LANES + r;
                let row = &win[t * n_ch + start..t * n_ch + start + W];
                for j in 0..W {
                    acc[r][j] = ht.mul_add(row[j], acc[r][j]);
                }
            }
        }
        for j in 0..W {
            dst[start + j] = (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]);
        }
        c0 = start + W;
        if c0 >= n_ch {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_variants_are_bit_identical() {
        let secs = [
            Section {
                b0: 0.3,
                b1: -0.2,
                b2: 0.1,
                a1: -1.1,
                a2: 0.3,
            },
            Section {
                b0: 1.0,
                b1: 0.5,
                b2: 0.25,
                a1: -0.5,
                a2: 0.1,
            },
        ];
        for n_ch in [1usize, 5, 19, 43, 64] {
            let frames = 50;
            let input: Vec<f32> = (0..n_ch * frames)
                .map(|i| ((i * 7919) % 101) as f32 - 50.0)
                .collect();
            let h: Vec<f32> = (0..24).map(|t| (t as f32 * 0.37).sin()).collect();
            let mut results = Vec::new();
            let mut isas = vec![Isa::Generic];
            if Isa::detect() != Isa::Generic {
                isas.push(Isa::detect());
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                isas.push(Isa::Avx2);
            }
            for isa in isas {
                let (mut s1, mut s2) = (vec![0.0; 2 * n_ch], vec![0.0; 2 * n_ch]);
                let mut dst = vec![0.0f32; n_ch * frames];
                iir_frames(isa, &secs, &mut s1, &mut s2, n_ch, &input, &mut dst);
                let mut out = Vec::new();
                fir_output(isa, &h, &dst[..24 * n_ch], n_ch, &mut out);
                results.push((dst, out, s1));
            }
            for r in &results[1..] {
                assert_eq!(r, &results[0], "{n_ch} channels");
            }
        }
    }
}
