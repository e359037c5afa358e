//! Statistics for paired A/B measurements: medians, paired ratios, a percentile bootstrap
//! interval of the median ratio, and pairs won.
//!
//! Pure functions over slices; the only randomness is a seeded SplitMix64, so the same data give
//! the same interval on every run and in tests.

/// Resamples drawn by [`bootstrap_median_ci`] in [`paired`].
pub const BOOTSTRAP_RESAMPLES: usize = 10_000;
/// Seed of the bootstrap (fixed: the interval of a data set is reproducible).
pub const BOOTSTRAP_SEED: u64 = 0x5eed_ab00_2026_1206;

/// Median of `v` (mean of the two middle values for an even count); None when empty or when a
/// value is NaN.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() || v.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, good enough to draw resample indexes.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (n > 0; Lemire's multiply-shift, bias below 2^-32 for our n).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// Percentile bootstrap interval of the median of `v`: `resamples` resamples with replacement,
/// the `(1 - level) / 2` and `(1 + level) / 2` quantiles of their medians. None when `v` is empty.
pub fn bootstrap_median_ci(
    v: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<(f64, f64)> {
    median(v)?;
    let mut rng = SplitMix64::new(seed);
    let mut meds = Vec::with_capacity(resamples.max(1));
    let mut buf = vec![0.0; v.len()];
    for _ in 0..resamples.max(1) {
        for slot in buf.iter_mut() {
            *slot = v[rng.below(v.len())];
        }
        meds.push(median(&buf)?);
    }
    meds.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let i = (p * (meds.len() - 1) as f64).round() as usize;
        meds[i.min(meds.len() - 1)]
    };
    Some((q((1.0 - level) / 2.0), q((1.0 + level) / 2.0)))
}

/// A paired comparison of B against A over the same pairs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Paired {
    /// `b[i] / a[i]` per pair (pairs where `a[i]` is not positive are dropped).
    pub ratios: Vec<f64>,
    /// Median of `ratios`.
    pub median_ratio: f64,
    /// Bootstrap 95% interval of the median ratio.
    pub ci95: (f64, f64),
    /// Pairs in which B was better (lower when `lower_is_better`, else higher).
    pub b_won: usize,
    /// Pairs compared.
    pub n: usize,
}

/// Compares B with A pair by pair. None when no pair has a positive A value.
pub fn paired(a: &[f64], b: &[f64], lower_is_better: bool) -> Option<Paired> {
    let pairs: Vec<(f64, f64)> = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x > 0.0 && y.is_finite())
        .map(|(x, y)| (*x, *y))
        .collect();
    let ratios: Vec<f64> = pairs.iter().map(|(x, y)| y / x).collect();
    let median_ratio = median(&ratios)?;
    let ci95 = bootstrap_median_ci(&ratios, BOOTSTRAP_RESAMPLES, 0.95, BOOTSTRAP_SEED)?;
    let b_won = pairs
        .iter()
        .filter(|(x, y)| if lower_is_better { y < x } else { y > x })
        .count();
    Some(Paired {
        n: ratios.len(),
        ratios,
        median_ratio,
        ci95,
        b_won,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn rng_indexes_are_in_range_and_cover_it() {
        let mut r = SplitMix64::new(1);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[r.below(7)] += 1;
        }
        // Each of 7 buckets expects 1000; a broken generator piles them up.
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
    }

    #[test]
    fn bootstrap_interval_brackets_the_median_and_narrows_with_less_spread() {
        assert_eq!(bootstrap_median_ci(&[], 100, 0.95, 1), None);
        assert_eq!(
            bootstrap_median_ci(&[0.9; 12], 1000, 0.95, 1),
            Some((0.9, 0.9))
        );
        let wide = [
            0.70, 0.80, 0.85, 0.90, 0.92, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3, 1.4,
        ];
        let narrow: Vec<f64> = wide.iter().map(|x| 0.95 + (x - 0.95) / 10.0).collect();
        let m = median(&wide).expect("median");
        let (lo, hi) = bootstrap_median_ci(&wide, 10_000, 0.95, 7).expect("ci");
        assert!(lo <= m && m <= hi, "{lo} {m} {hi}");
        assert!(lo >= 0.70 && hi <= 1.4, "inside the data: {lo} {hi}");
        assert!(
            lo < m && m < hi,
            "a spread sample has a real interval: {lo} {hi}"
        );
        let (nlo, nhi) = bootstrap_median_ci(&narrow, 10_000, 0.95, 7).expect("ci");
        assert!(nhi - nlo < (hi - lo) / 5.0, "{nlo}..{nhi} vs {lo}..{hi}");
        // Same seed, same interval.
        assert_eq!(bootstrap_median_ci(&wide, 10_000, 0.95, 7), Some((lo, hi)));
    }

    #[test]
    fn paired_ratios_are_b_over_a_and_count_wins() {
        let a = [10.0, 10.0, 10.0, 10.0, 0.0];
        let b = [9.0, 8.0, 11.0, 9.5, 5.0];
        let p = paired(&a, &b, true).expect("paired");
        // The pair with a = 0 is dropped.
        assert_eq!(p.n, 4);
        assert_eq!(p.ratios, [0.9, 0.8, 1.1, 0.95]);
        assert!((p.median_ratio - 0.925).abs() < 1e-12);
        assert_eq!(p.b_won, 3);
        let q = paired(&a, &b, false).expect("paired");
        assert_eq!(q.b_won, 1, "higher is better: only 11 > 10");
        assert!(p.ci95.0 <= p.median_ratio && p.median_ratio <= p.ci95.1);
        assert_eq!(paired(&[0.0], &[1.0], true), None);
    }
}
