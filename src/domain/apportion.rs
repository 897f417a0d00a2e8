//! Splitting whole points in proportion without losing or inventing a point.

use std::cmp::Ordering;

/// Splits `floor(Σ nums / den)` into integer shares, one per numerator: each share is
/// `floor(num / den)` plus at most one of the left-over points, which go to the largest
/// remainders first; `tie` orders equal remainders. Shares always sum to the total.
pub(crate) fn largest_remainder(
    nums: &[i128],
    den: i128,
    tie: impl Fn(usize, usize) -> Ordering,
) -> (i128, Vec<i128>) {
    let total: i128 = nums.iter().sum::<i128>() / den;
    let mut shares: Vec<i128> = nums.iter().map(|n| n / den).collect();
    let left_over = total - shares.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..nums.len()).collect();
    order.sort_by(|&a, &b| {
        (nums[b] % den)
            .cmp(&(nums[a] % den))
            .then_with(|| tie(a, b))
    });
    for &i in order.iter().take(usize::try_from(left_over).unwrap_or(0)) {
        shares[i] += 1;
    }
    (total, shares)
}

/// Splits `total` over `weights` in proportion (ties to the earlier weight). With all
/// weights zero the split is even-handed: everything to nobody is impossible, so the
/// total goes to the first weight.
pub fn apportion(total: i64, weights: &[i64]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    if sum <= 0 {
        let mut out = vec![0; weights.len()];
        out[0] = total;
        return out;
    }
    let nums: Vec<i128> = weights
        .iter()
        .map(|w| i128::from(*w) * i128::from(total))
        .collect();
    let (_, shares) = largest_remainder(&nums, sum, |a, b| a.cmp(&b));
    shares
        .into_iter()
        .map(|s| i64::try_from(s).unwrap_or(0))
        .collect()
}

/// Cumulative share of `amount` for `done` of `of` units, rounded down: returning the
/// last unit always yields the whole amount, so remainders are carried, never lost.
pub fn cumulative_share(amount: i64, done: i64, of: i64) -> i64 {
    if of <= 0 {
        return 0;
    }
    let share = i128::from(amount) * i128::from(done.clamp(0, of)) / i128::from(of);
    i64::try_from(share).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn apportion_examples() {
        assert_eq!(apportion(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(apportion(7, &[100, 0, 300]), vec![2, 0, 5]);
        assert_eq!(apportion(5, &[0, 0]), vec![5, 0]);
        assert!(apportion(5, &[]).is_empty());
    }

    #[test]
    fn cumulative_shares_carry_remainders() {
        // 10 points over 3 units: 3, 6, 10 cumulatively, i.e. 3 + 3 + 4.
        assert_eq!(cumulative_share(10, 1, 3), 3);
        assert_eq!(cumulative_share(10, 2, 3), 6);
        assert_eq!(cumulative_share(10, 3, 3), 10);
        assert_eq!(cumulative_share(10, 4, 3), 10);
    }

    proptest! {
        #[test]
        fn apportion_sums_to_the_total_and_is_never_negative(total in 0i64..1_000_000, weights in prop::collection::vec(0i64..100_000, 1..30)) {
            let shares = apportion(total, &weights);
            prop_assert_eq!(shares.iter().sum::<i64>(), total);
            prop_assert!(shares.iter().all(|s| *s >= 0));
        }
    }
}
