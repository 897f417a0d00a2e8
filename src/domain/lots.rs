//! Point lots: which points a burn consumes and which a release gives back.
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// What a return does when the points it reverses were already spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnPolicy {
    /// Take what the balance has, never below zero, and record the rest as a shortfall.
    #[default]
    Clamp,
    /// Take it all; the available balance may go negative and later credits pay it off.
    AllowNegative,
}

/// The most points one movement (an accrual, a redemption, an adjustment, a lot) may
/// carry: a trillion, far beyond any programme, and far enough below `i64::MAX` that no
/// sum of them the service makes can overflow.
pub const MAX_POINTS: i64 = 1_000_000_000_000;

/// The most points a balance (available, pending, held or earned in all) may reach; a
/// movement that would pass it is refused with OUT_OF_RANGE.
pub const MAX_BALANCE: i64 = 1_000 * MAX_POINTS;

/// Points as payment: `per_points` points are worth `value_minor` minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointValue {
    value_minor: i64,
    per_points: i64,
}

impl PointValue {
    pub fn new(value_minor: i64, per_points: i64) -> Result<Self, String> {
        if !(0..=1_000_000).contains(&value_minor) || !(1..=1_000_000).contains(&per_points) {
            return Err("value must be 0 to 1000000 minor units per 1 to 1000000 points".into());
        }
        Ok(Self {
            value_minor,
            per_points,
        })
    }

    /// What `points` pay for, rounded down to the minor unit (the programme never pays
    /// out a fraction of a cent it does not owe).
    pub fn value_of(self, points: i64) -> i64 {
        let v = i128::from(points) * i128::from(self.value_minor) / i128::from(self.per_points);
        i64::try_from(v).unwrap_or(0)
    }
}

/// A lot's spendable remainder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LotRemainder {
    pub lot_id: i64,
    pub remaining: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

/// First-expiring-first-out: lots that expire first are burnt first (never-expiring lots
/// last), ties by lot id (oldest first).
fn fefo(a: &LotRemainder, b: &LotRemainder) -> std::cmp::Ordering {
    match (a.expires_at, b.expires_at) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
    .then(a.lot_id.cmp(&b.lot_id))
}

/// Takes `amount` from `lots` first-expiring-first; `(lot_id, points)` per lot touched.
/// Takes as much as there is when the lots hold less: the caller decides whether that is
/// an error.
pub fn plan_burn(lots: &[LotRemainder], amount: i64) -> Vec<(i64, i64)> {
    let mut sorted = lots.to_vec();
    sorted.sort_by(fefo);
    take_in_order(&sorted, amount)
}

/// Gives `amount` back to earlier burns (`allocation id, lot expiry, points still out`),
/// latest-expiring first, so that what stays burnt is what would have expired first.
pub fn plan_release(
    outstanding: &[(i64, Option<DateTime<Utc>>, i64)],
    amount: i64,
) -> Vec<(i64, i64)> {
    let mut sorted: Vec<LotRemainder> = outstanding
        .iter()
        .map(|&(id, expires_at, out)| LotRemainder {
            lot_id: id,
            remaining: out,
            expires_at,
        })
        .collect();
    sorted.sort_by(|a, b| fefo(b, a));
    take_in_order(&sorted, amount)
}

fn take_in_order(sorted: &[LotRemainder], amount: i64) -> Vec<(i64, i64)> {
    let mut left = amount.max(0);
    let mut plan = Vec::new();
    for lot in sorted.iter().filter(|l| l.remaining > 0) {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        plan.push((lot.lot_id, take));
        left -= take;
    }
    plan
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn lot(id: i64, remaining: i64, day: Option<u32>) -> LotRemainder {
        LotRemainder {
            lot_id: id,
            remaining,
            expires_at: day.map(|d| {
                Utc.with_ymd_and_hms(2027, 1, d, 0, 0, 0)
                    .single()
                    .expect("date")
            }),
        }
    }

    #[test]
    fn burns_the_first_expiring_lots_first_and_never_expiring_last() {
        let lots = [
            lot(1, 50, None),
            lot(2, 30, Some(20)),
            lot(3, 40, Some(10)),
            lot(4, 0, Some(1)),
        ];
        assert_eq!(plan_burn(&lots, 60), vec![(3, 40), (2, 20)]);
        assert_eq!(plan_burn(&lots, 200), vec![(3, 40), (2, 30), (1, 50)]);
        assert!(plan_burn(&lots, 0).is_empty());
    }

    #[test]
    fn point_value_rounds_down() {
        let v = PointValue::new(1, 2).expect("half a cent a point");
        assert_eq!(v.value_of(101), 50);
        assert_eq!(PointValue::new(5, 1).expect("5 cents").value_of(3), 15);
        assert!(PointValue::new(1, 0).is_err());
    }

    #[test]
    fn releases_the_latest_expiring_burns_first() {
        let out = [
            (
                10,
                Some(
                    Utc.with_ymd_and_hms(2027, 1, 10, 0, 0, 0)
                        .single()
                        .expect("d"),
                ),
                40,
            ),
            (11, None, 5),
        ];
        assert_eq!(plan_release(&out, 20), vec![(11, 5), (10, 15)]);
    }

    proptest! {
        #[test]
        fn a_burn_takes_exactly_what_is_asked_when_there_is_enough(
            rems in prop::collection::vec((0i64..500, prop::option::of(1u32..28)), 1..12),
            amount in 0i64..3_000,
        ) {
            let lots: Vec<LotRemainder> = rems.iter().enumerate().map(|(i, (r, d))| lot(i64::try_from(i).unwrap_or(0), *r, *d)).collect();
            let total: i64 = lots.iter().map(|l| l.remaining).sum();
            let plan = plan_burn(&lots, amount);
            prop_assert_eq!(plan.iter().map(|(_, p)| p).sum::<i64>(), amount.min(total));
            for (id, take) in &plan {
                let l = lots.iter().find(|l| l.lot_id == *id).expect("planned lot exists");
                prop_assert!(*take > 0 && *take <= l.remaining);
            }
        }
    }
}
