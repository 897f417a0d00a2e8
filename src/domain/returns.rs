//! Returns, planned as pure arithmetic: what returned units reverse, where the reversal
//! comes from, and what the order's spend gives back.
//!
//! Every amount is cumulative over the order's totals (`floor(points × returned /
//! bought)` per line), so remainders carry from one return to the next and returning
//! every unit, in any number of steps, reverses exactly what the order earned and
//! refunds exactly what it spent.
//!
//! The identity every plan keeps:
//! `reversed = from_pending + from_lot + charged + shortfall + waived`.
use super::{ReturnPolicy, apportion, cumulative_share};

/// One line of the order as it stands before this return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnLine {
    pub quantity: i64,
    pub returned_quantity: i64,
    /// Points the line earned.
    pub points: i64,
    /// Of those, points already reversed by earlier returns.
    pub points_reversed: i64,
    /// The line's value after discounts: its weight in the order's spend and spend.
    pub eligible_minor: i64,
}

/// The lot the order's accrual credited, as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderLot {
    /// No lot (the order earned nothing, or the lot is gone).
    None,
    /// Still inside the return window: nothing of it was spendable yet.
    Pending { remaining: i64 },
    /// Spendable: `consumed` points of it were spent (burned), the rest is `remaining`.
    Active { remaining: i64, consumed: i64 },
}

/// What the member and the order stand at before the return.
#[derive(Debug, Clone, Copy)]
pub struct ReturnState<'a> {
    /// Lines sorted by line id: the order the spend is apportioned in.
    pub lines: &'a [ReturnLine],
    /// Units of each line returned in all once this return is recorded.
    pub returned_after: &'a [i64],
    /// Points the order spent (redemptions and captured holds against it).
    pub spent: i64,
    /// Of those, points earlier returns gave back.
    pub refunded_before: i64,
    pub lot: OrderLot,
    /// Spent points earlier returns of this order could not charge (clamp policy) and
    /// that no later refund of the order has paid back yet.
    pub outstanding_shortfall: i64,
    /// The member's available balance.
    pub available: i64,
    pub policy: ReturnPolicy,
}

/// One return, planned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReturnPlan {
    /// Points the returned units had earned.
    pub reversed: i64,
    /// Spend (minor units) the returned units had counted toward tiers.
    pub spend_returned: i64,
    /// Each line after the return: (returned quantity, points reversed in all).
    pub lines_after: Vec<(i64, i64)>,
    /// Taken from the order's lot while it was pending.
    pub from_pending: i64,
    /// Taken from the order's spendable lot.
    pub from_lot: i64,
    /// Spent points of the reversal taken from the rest of the balance.
    pub charged: i64,
    /// Spent points the balance could not cover (clamp policy).
    pub shortfall: i64,
    /// Points that had already expired and are not taken again.
    pub waived: i64,
    /// Points the order spent that come back, credited before anything is charged.
    pub refund: i64,
    /// Of the refund, points that pay back the order's outstanding shortfall: a refund
    /// never leaves the member points this order still owes.
    pub recovered: i64,
    /// Of `charged`, the points to burn from the member's lots: the rest is debt (a
    /// negative balance under `AllowNegative`), which no lot holds.
    pub burn_from_lots: i64,
    /// Every unit of every line has now come back.
    pub fully_returned: bool,
}

impl ReturnPlan {
    /// The change of the available balance: the refund in, the reversal out.
    pub fn available_delta(&self) -> i64 {
        self.refund - self.from_lot - self.charged - self.recovered
    }

    /// Points taken off the available balance for the reversal.
    pub fn taken(&self) -> i64 {
        self.from_lot + self.charged + self.recovered
    }

    /// Checks the plan's own invariants; an `Err` is a bug in the planner.
    pub fn check(&self, state: &ReturnState<'_>) -> Result<(), String> {
        let parts = [
            self.from_pending,
            self.from_lot,
            self.charged,
            self.shortfall,
            self.waived,
            self.refund,
            self.burn_from_lots,
            self.recovered,
        ];
        if parts.iter().any(|p| *p < 0) || self.reversed < 0 {
            return Err(format!("negative part in {self:?}"));
        }
        let sum = parts[..5].iter().sum::<i64>();
        if sum != self.reversed {
            return Err(format!(
                "reversed {} != pending + lot + charged + shortfall + waived = {sum}",
                self.reversed
            ));
        }
        if self.burn_from_lots > self.charged + self.recovered {
            return Err("burns more than it charges".into());
        }
        if self.recovered > self.refund.min(state.outstanding_shortfall) {
            return Err("recovers more than the refund or the shortfall".into());
        }
        if state.policy == ReturnPolicy::Clamp
            && state.available >= 0
            && state.available + self.available_delta() < 0
        {
            return Err("clamp policy left a negative balance".into());
        }
        if self.shortfall > 0 && state.available + self.available_delta() != 0 {
            return Err("a shortfall while the balance could still pay".into());
        }
        Ok(())
    }
}

/// Plans one return. `state.returned_after` must already be checked against the lines'
/// quantities.
pub fn plan_return(state: &ReturnState<'_>) -> ReturnPlan {
    let lines = state.lines;
    let mut plan = ReturnPlan::default();
    for (line, &after) in lines.iter().zip(state.returned_after) {
        if after == line.returned_quantity {
            plan.lines_after
                .push((line.returned_quantity, line.points_reversed));
            continue;
        }
        let target = cumulative_share(line.points, after, line.quantity);
        plan.reversed += target - line.points_reversed;
        plan.spend_returned += cumulative_share(line.eligible_minor, after, line.quantity)
            - cumulative_share(line.eligible_minor, line.returned_quantity, line.quantity);
        plan.lines_after.push((after, target));
    }
    plan.fully_returned = lines
        .iter()
        .zip(state.returned_after)
        .all(|(l, r)| *r == l.quantity);

    // The order's spend, apportioned over its lines by value, comes back cumulatively
    // for the units returned.
    let weights: Vec<i64> = lines.iter().map(|l| l.eligible_minor).collect();
    let refund_target: i64 = apportion(state.spent, &weights)
        .into_iter()
        .zip(lines.iter().zip(state.returned_after))
        .map(|(share, (line, &after))| cumulative_share(share, after, line.quantity))
        .sum();
    plan.refund = (refund_target - state.refunded_before).max(0);

    // The reversal comes from the order's own lot first, then from the balance.
    let reversed = plan.reversed;
    match state.lot {
        OrderLot::None => plan.waived = reversed,
        OrderLot::Pending { remaining } => {
            plan.from_pending = reversed.min(remaining.max(0));
            plan.waived = reversed - plan.from_pending;
        }
        OrderLot::Active {
            remaining,
            consumed,
        } => {
            plan.from_lot = reversed.min(remaining.max(0));
            let chargeable = (reversed - plan.from_lot).min(consumed.max(0));
            plan.waived = reversed - plan.from_lot - chargeable;
            // The refund is credited first: the points it gives back can pay the charge.
            let balance_left = (state.available - plan.from_lot + plan.refund).max(0);
            (plan.charged, plan.shortfall) = match state.policy {
                ReturnPolicy::Clamp => {
                    let charged = chargeable.min(balance_left);
                    (charged, chargeable - charged)
                }
                ReturnPolicy::AllowNegative => (chargeable, 0),
            };
            // What the refund leaves after the charge pays the order's earlier shortfall.
            plan.recovered = state
                .outstanding_shortfall
                .min(plan.refund)
                .min((balance_left - plan.charged).max(0));
            plan.burn_from_lots = (plan.charged + plan.recovered).min(balance_left);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn line(quantity: i64, unit: i64, points: i64) -> ReturnLine {
        ReturnLine {
            quantity,
            returned_quantity: 0,
            points,
            points_reversed: 0,
            eligible_minor: quantity * unit,
        }
    }

    /// The member, the order and its lot, as the service's tables hold them.
    #[derive(Debug, Clone)]
    struct World {
        lines: Vec<ReturnLine>,
        spent: i64,
        refunded: i64,
        available: i64,
        lot_remaining: i64,
        lot_consumed: i64,
        /// What the order has done to the available balance so far.
        effect: i64,
        shortfall: i64,
    }

    impl World {
        fn return_units(&mut self, units: &[i64], policy: ReturnPolicy) -> ReturnPlan {
            let after: Vec<i64> = self
                .lines
                .iter()
                .zip(units)
                .map(|(l, u)| (l.returned_quantity + u).min(l.quantity))
                .collect();
            let state = ReturnState {
                lines: &self.lines,
                returned_after: &after,
                spent: self.spent,
                refunded_before: self.refunded,
                outstanding_shortfall: self.shortfall,
                lot: OrderLot::Active {
                    remaining: self.lot_remaining,
                    consumed: self.lot_consumed,
                },
                available: self.available,
                policy,
            };
            let plan = plan_return(&state);
            if let Err(e) = plan.check(&state) {
                panic!("{e}");
            }
            for (l, (q, r)) in self.lines.iter_mut().zip(&plan.lines_after) {
                l.returned_quantity = *q;
                l.points_reversed = *r;
            }
            self.refunded += plan.refund;
            self.available += plan.available_delta();
            self.effect += plan.available_delta();
            self.lot_remaining -= plan.from_lot;
            self.lot_consumed -= plan.charged + plan.shortfall;
            self.shortfall += plan.shortfall - plan.recovered;
            plan
        }

        /// Earned by the units kept minus the spend apportioned to them.
        fn kept_net(&self) -> i64 {
            let earned: i64 = self
                .lines
                .iter()
                .map(|l| l.points - l.points_reversed)
                .sum();
            earned - (self.spent - self.refunded)
        }
    }

    /// The example of issue 10: a full return of a points-paid order leaves nothing.
    #[test]
    fn full_return_of_a_points_paid_order_leaves_nothing() {
        let mut w = World {
            lines: vec![line(2, 1000, 20), line(1, 3000, 30)],
            spent: 10,
            refunded: 0,
            available: 40,
            lot_remaining: 40,
            lot_consumed: 10,
            effect: 40,
            shortfall: 0,
        };
        let first = w.return_units(&[0, 1], ReturnPolicy::Clamp);
        assert_eq!((first.reversed, first.refund, w.available), (30, 6, 16));
        let second = w.return_units(&[2, 0], ReturnPolicy::Clamp);
        assert_eq!((second.reversed, second.refund), (20, 4));
        assert_eq!((second.charged, second.shortfall), (10, 0));
        assert_eq!(w.available, 0);
        assert_eq!(w.effect, 0);
    }

    #[test]
    fn clamp_records_a_shortfall_only_when_the_balance_is_gone() {
        let lines = [line(1, 1000, 10)];
        let state = ReturnState {
            lines: &lines,
            returned_after: &[1],
            spent: 0,
            refunded_before: 0,
            outstanding_shortfall: 0,
            lot: OrderLot::Active {
                remaining: 2,
                consumed: 8,
            },
            available: 5,
            policy: ReturnPolicy::Clamp,
        };
        let plan = plan_return(&state);
        assert_eq!((plan.from_lot, plan.charged, plan.shortfall), (2, 3, 5));
        assert_eq!(state.available + plan.available_delta(), 0);
        let negative = plan_return(&ReturnState {
            policy: ReturnPolicy::AllowNegative,
            ..state
        });
        assert_eq!((negative.charged, negative.shortfall), (8, 0));
        assert_eq!(negative.burn_from_lots, 3);
    }

    #[test]
    fn a_pending_lot_is_taken_back_whole_and_nothing_is_charged() {
        let lines = [line(2, 500, 10)];
        let plan = plan_return(&ReturnState {
            lines: &lines,
            returned_after: &[1],
            spent: 0,
            refunded_before: 0,
            outstanding_shortfall: 0,
            lot: OrderLot::Pending { remaining: 10 },
            available: 0,
            policy: ReturnPolicy::Clamp,
        });
        assert_eq!((plan.reversed, plan.from_pending, plan.charged), (5, 5, 0));
    }

    fn order() -> impl Strategy<Value = Vec<(i64, i64, i64)>> {
        // (quantity, unit price, points)
        prop::collection::vec((1i64..6, 1i64..5000, 0i64..500), 1..5)
    }

    proptest! {
        /// Random orders, random spends against them and elsewhere, random return
        /// sequences, under both policies: every step keeps the order's effect equal to
        /// what the kept units earned net of their share of the spend (plus any clamp
        /// shortfall), and once everything came back the order's effect is zero when
        /// the balance could pay, and the shortfall is the member's whole balance
        /// otherwise.
        #[test]
        fn returning_everything_undoes_the_order(
            order in order(),
            spend_share in 0u32..=100,
            from_order_lot in 0u32..=100,
            other in 0i64..300,
            elsewhere in 0u32..=100,
            steps in prop::collection::vec(prop::collection::vec(0i64..4, 5), 1..8),
            allow_negative in any::<bool>(),
        ) {
            let policy = if allow_negative { ReturnPolicy::AllowNegative } else { ReturnPolicy::Clamp };
            let lines: Vec<ReturnLine> = order.iter().map(|(q, u, p)| line(*q, *u, *p)).collect();
            let earned: i64 = lines.iter().map(|l| l.points).sum();
            // Spend against the order, drawn partly from its own lot.
            let spent = (earned + other) * i64::from(spend_share) / 100;
            let from_lot = (spent * i64::from(from_order_lot) / 100).min(earned).max(spent - other);
            // Then spend elsewhere, which may draw down the order's lot too.
            let left = earned + other - spent;
            let gone = left * i64::from(elsewhere) / 100;
            let other_left = other - (spent - from_lot);
            let lot_gone_elsewhere = (gone - other_left).max(0);
            let mut w = World {
                lines,
                spent,
                refunded: 0,
                available: left - gone,
                lot_remaining: earned - from_lot - lot_gone_elsewhere,
                lot_consumed: from_lot + lot_gone_elsewhere,
                effect: earned - spent,
                shortfall: 0,
            };
            for units in &steps {
                w.return_units(units, policy);
                prop_assert_eq!(w.effect, w.kept_net() + w.shortfall);
                if policy == ReturnPolicy::Clamp {
                    prop_assert!(w.available >= 0);
                }
            }
            // Return whatever is left.
            let rest: Vec<i64> = w.lines.iter().map(|l| l.quantity - l.returned_quantity).collect();
            let last = w.return_units(&rest, policy);
            prop_assert!(last.fully_returned);
            prop_assert_eq!(w.kept_net(), 0);
            prop_assert_eq!(w.effect, w.shortfall);
            match policy {
                ReturnPolicy::AllowNegative => prop_assert_eq!(w.effect, 0),
                ReturnPolicy::Clamp => {
                    if gone == 0 {
                        prop_assert_eq!(w.effect, 0);
                    }
                    if w.shortfall > 0 {
                        prop_assert_eq!(w.available, 0);
                    }
                }
            }
        }
    }
}
