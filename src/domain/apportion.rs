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

    /// Moves the cumulative reversal and refund to `returned` units per line, checking
    /// that neither ever goes backwards.
    fn step_to(
        lines: &[(i64, i64, i64)],
        spend_shares: &[i64],
        returned: &[i64],
        reversed: &mut [i64],
        refunded: &mut i64,
    ) -> Result<(), TestCaseError> {
        for (i, (points, bought, _)) in lines.iter().enumerate() {
            let target = cumulative_share(*points, returned[i], *bought);
            prop_assert!(target >= reversed[i]);
            reversed[i] = target;
        }
        let target: i64 = spend_shares
            .iter()
            .zip(lines)
            .zip(returned)
            .map(|((share, line), r)| cumulative_share(*share, *r, line.1))
            .sum();
        prop_assert!(target >= *refunded);
        *refunded = target;
        Ok(())
    }

    /// Per line: points earned, units bought, value in minor units.
    type Lines = Vec<(i64, i64, i64)>;

    /// A random order (its lines and the points it spent) and a random sequence of
    /// partial returns (units per line per step).
    fn arb_returns() -> impl Strategy<Value = (Lines, i64, Vec<Vec<i64>>)> {
        prop::collection::vec((0i64..5_000, 1i64..10, 1i64..100_000), 1..8).prop_flat_map(|lines| {
            let n = lines.len();
            (
                Just(lines),
                0i64..10_000,
                prop::collection::vec(prop::collection::vec(0i64..4, n), 1..12),
            )
        })
    }

    proptest! {
        /// Returning units in any steps reverses exactly what was earned and refunds exactly
        /// what was spent, and no step takes more than what is left.
        #[test]
        fn partial_returns_never_exceed_and_always_complete((lines, spent, steps) in arb_returns()) {
            let weights: Vec<i64> = lines.iter().map(|l| l.2).collect();
            let spend_shares = apportion(spent, &weights);
            let mut returned = vec![0i64; lines.len()];
            let (mut reversed, mut refunded) = (vec![0i64; lines.len()], 0i64);
            for step in &steps {
                for (i, extra) in step.iter().enumerate() {
                    returned[i] = (returned[i] + extra).min(lines[i].1);
                }
                step_to(&lines, &spend_shares, &returned, &mut reversed, &mut refunded)?;
                prop_assert!(reversed.iter().sum::<i64>() <= lines.iter().map(|l| l.0).sum::<i64>());
                prop_assert!(refunded <= spent);
            }
            // The last return brings back whatever was left.
            let all: Vec<i64> = lines.iter().map(|l| l.1).collect();
            step_to(&lines, &spend_shares, &all, &mut reversed, &mut refunded)?;
            prop_assert_eq!(reversed.iter().sum::<i64>(), lines.iter().map(|l| l.0).sum::<i64>());
            prop_assert_eq!(refunded, spent);
        }

        #[test]
        fn apportion_sums_to_the_total_and_is_never_negative(total in 0i64..1_000_000, weights in prop::collection::vec(0i64..100_000, 1..30)) {
            let shares = apportion(total, &weights);
            prop_assert_eq!(shares.iter().sum::<i64>(), total);
            prop_assert!(shares.iter().all(|s| *s >= 0));
        }
    }
}
