//! The arithmetic of the method, pure: medians, medians of per-pair ratios and differences
//! (pair k = the two scenarios' runs of round k, so slow drift of the machine cancels).

/// The median (mean of the middle two for an even count); `None` for no finite values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Median over rounds of `a[k] / b[k]` (pairs with `b[k] == 0` are left out).
pub fn median_ratio(a: &[f64], b: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, b)| **b != 0.0)
        .map(|(a, b)| a / b)
        .collect();
    median(&ratios)
}

/// Median over rounds of `a[k] - b[k]`.
pub fn median_diff(a: &[f64], b: &[f64]) -> Option<f64> {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
    median(&diffs)
}

/// The mean of per-pair differences `a[k] - b[k]` with its 95 % confidence interval (Student's
/// t over the pairs: the pairing cancels the machine's drift, so a few µs show once there are
/// enough rounds). `None` for fewer than two pairs.
pub fn paired_diff_ci95(a: &[f64], b: &[f64]) -> Option<(f64, f64, f64)> {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| a - b)
        .filter(|x| x.is_finite())
        .collect();
    let n = d.len();
    if n < 2 {
        return None;
    }
    let mean = d.iter().sum::<f64>() / n as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t975(n - 1) * (var / n as f64).sqrt();
    Some((mean, mean - half, mean + half))
}

/// Student's t, two-sided 95 %, for `df` degrees of freedom (table to 30, then 1.96).
fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    T.get(df.wrapping_sub(1)).copied().unwrap_or(1.96)
}

/// Rounds a figure for the JSON (3 significant decimals are plenty for this machine's noise).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile `p` (0–100) of sorted samples; 0 for none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    sorted
        .get(idx.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Seconds since the Unix epoch, for a report's `measured_at_unix_s`.
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 50.0), 2.0);
        assert_eq!(percentile(&s, 99.0), 4.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
    }

    #[test]
    fn ratio_is_the_median_of_per_pair_ratios_not_the_ratio_of_medians() {
        // Round 2 ran on a slower machine for both: per-pair ratios stay 0.5.
        let a = [50.0, 10.0, 60.0];
        let b = [100.0, 20.0, 120.0];
        assert_eq!(median_ratio(&a, &b), Some(0.5));
        assert_eq!(median_ratio(&[1.0], &[0.0]), None);
    }

    #[test]
    fn confidence_interval_of_paired_differences() {
        // Differences 4, 6, 5, 5: mean 5, s = 0.8165, t(3) = 3.182, half-width 1.299.
        let (mean, lo, hi) =
            paired_diff_ci95(&[14.0, 26.0, 15.0, 45.0], &[10.0, 20.0, 10.0, 40.0]).unwrap();
        assert_eq!(mean, 5.0);
        assert!((hi - lo - 2.0 * 1.299).abs() < 0.01, "{lo} {hi}");
        assert_eq!(paired_diff_ci95(&[1.0], &[0.0]), None);
    }

    #[test]
    fn difference_is_per_pair() {
        assert_eq!(
            median_diff(&[10.0, 30.0, 12.0], &[5.0, 20.0, 6.0]),
            Some(6.0)
        );
    }
}
