//! Every random draw of a run derives from (seed, epoch) or (seed, global step).
//!
//! libtorch's generator state is not reachable through tch, so instead of saving it the
//! trainer re-seeds torch (CPU and CUDA) before every optimisation step with a value
//! derived from the run seed and the global step, and shuffles each epoch with a ChaCha
//! stream derived from the run seed and the epoch. Drop path, masking and the k-means
//! initialisation then draw the same numbers whether or not a run was interrupted, and
//! a checkpoint only needs (seed, epoch, step) to resume exactly.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: decorrelates nearby inputs (seed, seed+1, …).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Order of the `n` training samples in `epoch`.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed ^ mix(epoch as u64 ^ 0x005E_ED0F_EB0C)));
    idx.shuffle(&mut rng);
    idx
}

/// The torch seed of one global step (positive, as `manual_seed` takes an i64).
pub fn step_seed(seed: u64, global_step: u64) -> i64 {
    (mix(seed ^ mix(global_step ^ 0x57E9)) >> 1) as i64
}

/// Seeds torch's CPU and CUDA generators for `global_step`.
pub fn seed_torch_for_step(seed: u64, global_step: u64) {
    tch::manual_seed(step_seed(seed, global_step));
}

/// Serialises the unit tests that seed or draw from libtorch's generator: there is one
/// per process, and the test harness runs tests on parallel threads, so a test that
/// seeds it and expects bit-exact results (resume = uninterrupted) would otherwise see
/// another test's draws in between. Every such test holds this for its whole body.
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons it; the next one still runs.
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The torch seed for model initialisation (before any step).
pub fn init_seed(seed: u64) -> i64 {
    (mix(seed ^ 0x1A17) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_fixed_by_seed_and_epoch() {
        let a = epoch_order(0, 0, 50);
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(0, 0, 50));
        assert_ne!(a, epoch_order(0, 1, 50));
        assert_ne!(a, epoch_order(1, 0, 50));
    }

    #[test]
    fn step_seeds_differ_and_repeat() {
        assert_eq!(step_seed(3, 10), step_seed(3, 10));
        assert_ne!(step_seed(3, 10), step_seed(3, 11));
        assert!(step_seed(u64::MAX, u64::MAX) >= 0);
        seed_torch_for_step(1, 2);
        let x = tch::Tensor::rand([4], (tch::Kind::Float, tch::Device::Cpu));
        seed_torch_for_step(1, 2);
        let y = tch::Tensor::rand([4], (tch::Kind::Float, tch::Device::Cpu));
        assert!(x.equal(&y));
    }
}
