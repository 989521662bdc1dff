//! A small deterministic PRNG: xoshiro256** seeded through SplitMix64.
//!
//! The testbed owns its generator instead of using `rand` so that a seed
//! means the same sequence of decisions forever: a new `rand` release may
//! change its algorithms or the way it maps bits to floats, this file will
//! not (the tests pin reference outputs). Not for cryptography.

/// Odd constant of SplitMix64 (2^64 / golden ratio).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function applied to `x + GOLDEN`: a good 64-bit mixer.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent seed for sub-stream `stream` of `seed`.
///
/// Used to give each direction of a link, and each stage of an
/// [`Impairment`](super::Impairment), its own generator, so that turning one
/// impairment on does not change the decisions of another.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    splitmix(splitmix(seed) ^ stream)
}

/// xoshiro256** (Blackman and Vigna, 2018), seeded with four SplitMix64
/// outputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    /// The 256-bit state; never all zero (SplitMix64 cannot produce four zero
    /// outputs in a row).
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            let out = splitmix(x);
            x = x.wrapping_add(GOLDEN);
            out
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// A generator with this exact state (for reference vectors).
    #[cfg(test)]
    pub(crate) fn from_state(s: [u64; 4]) -> Self {
        Self { s }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.s;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// A uniform number in `[0, 1)` with 53 random bits (exact conversion).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// `true` with probability `p` (`p <= 0` never, `p >= 1` always). Always
    /// consumes one draw, so the stream stays aligned whatever `p` is.
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// A standard normal number (mean 0, standard deviation 1) by the
    /// Box–Muller transform; consumes two draws and discards the second
    /// normal so that every call costs the same.
    ///
    /// Uses `ln`, `sqrt` and `cos`; `ln` and `cos` come from the platform's
    /// math library, so the last bit may differ between platforms.
    pub fn normal(&mut self) -> f64 {
        // 1 - uniform is in (0, 1], so ln never sees 0.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_output() {
        // First output of the reference SplitMix64 with state 0.
        assert_eq!(splitmix(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn xoshiro_matches_the_reference_outputs() {
        // Reference outputs of xoshiro256** from state [1, 2, 3, 4].
        let mut rng = Rng::from_state([1, 2, 3, 4]);
        let got: Vec<u64> = (0..6).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                11520,
                0,
                1509978240,
                1215971899390074240,
                1216172134540287360,
                607988272756665600,
            ]
        );
    }

    #[test]
    fn seeded_sequence_is_pinned() {
        // If this changes, every recorded seed in every report changes
        // meaning: do not update the numbers, fix the code.
        let mut rng = Rng::new(42);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(got, PINNED_SEED_42);
    }

    /// The first outputs for seed 42, recorded when this generator was written.
    const PINNED_SEED_42: [u64; 3] = [
        1546998764402558742,
        6990951692964543102,
        12544586762248559009,
    ];

    #[test]
    fn uniform_is_in_range_and_centred() {
        let mut rng = Rng::new(7);
        let n = 100_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "mean {mean}");
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = Rng::new(9);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
    }

    #[test]
    fn derived_streams_differ() {
        let a = derive_seed(1, 1);
        let b = derive_seed(1, 2);
        let c = derive_seed(2, 1);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(Rng::new(a).next_u64(), Rng::new(b).next_u64());
        // And they are stable.
        assert_eq!(a, derive_seed(1, 1));
    }
}
