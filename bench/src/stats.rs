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

/// Rounds a figure for the JSON (3 significant decimals are plenty for this machine's noise).
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn difference_is_per_pair() {
        assert_eq!(
            median_diff(&[10.0, 30.0, 12.0], &[5.0, 20.0, 6.0]),
            Some(6.0)
        );
    }
}
