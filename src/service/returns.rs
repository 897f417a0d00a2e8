//! Returns: reverse what returned lines earned, give back what the order spent.
//!
//! Every amount is computed cumulatively from the order's totals (`floor(points ×
//! returned / bought)` per line), so rounding remainders are carried from one return to
//! the next and returning every unit, in any number of steps, reverses exactly what the
//! order earned and refunds exactly what it spent.
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{
    Mutation,
    idempotency::{Begun, begin, finish},
    points::{BalanceView, KIND_RETURN, KIND_RETURN_REFUND, PointsService},
    rewards_engine::{Review, review_tier},
    wallet::{self, Credit, Source},
};
use crate::{
    domain::{ReturnPolicy, ShortId, apportion, cumulative_share},
    error::{AppError, FieldViolation},
    store::{
        ledger::{self, NewEntry},
        lots,
        members::{self, BalanceDelta},
        offers, rules,
    },
};

#[derive(Debug, Clone)]
pub struct ReturnCommand {
    pub order_id: ShortId,
    pub return_id: ShortId,
    /// (line id, units returned now)
    pub lines: Vec<(ShortId, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnOutcome {
    pub transaction_id: String,
    pub member_id: String,
    /// Points the returned units had earned.
    pub points_reversed: i64,
    /// Of those, points that had been spent and were taken from the rest of the balance.
    pub points_charged: i64,
    /// Spent points the balance could not cover (clamp policy).
    pub shortfall: i64,
    /// Points that had already expired and were not taken again.
    pub points_waived: i64,
    /// Points the order had spent that are given back.
    pub points_refunded: i64,
    pub balance: BalanceView,
}

impl PointsService {
    #[tracing::instrument(name = "points.return", skip_all, fields(request_id = %mutation.request_id.as_str(), order_id = %cmd.order_id.as_str()))]
    pub async fn return_items(
        &self,
        mutation: &Mutation,
        cmd: ReturnCommand,
    ) -> Result<ReturnOutcome, AppError> {
        let (txn, key) = match begin::<ReturnOutcome>(&self.store, mutation, "ReturnItems").await? {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(txn, key) => (txn, key),
        };
        let order_id = cmd.order_id.as_str();
        // A till sees only its own stores' orders; to it, others do not exist.
        let order = ledger::find_order(&*txn, order_id)
            .await?
            .filter(|o| mutation.caller.may_act_for_store(&o.store_id))
            .ok_or(AppError::OrderNotFound)?;
        let member_key = super::stored_member(&order.member_id)?;
        let member = members::lock(&*txn, &member_key).await?;
        if ledger::find_return(&*txn, order_id, cmd.return_id.as_str())
            .await?
            .is_some()
        {
            return Err(AppError::ReturnAlreadyRecorded);
        }

        // Lines in line-id order: the order the spend is apportioned in.
        let mut lines = ledger::lines_of(&order)?;
        lines.sort_by(|a, b| a.line_id.cmp(&b.line_id));
        let mut violations = Vec::new();
        let mut seen = HashSet::new();
        let mut returned_after: Vec<i64> = lines.iter().map(|l| l.returned_quantity).collect();
        for (i, (line_id, quantity)) in cmd.lines.iter().enumerate() {
            if !seen.insert(line_id.as_str()) {
                violations.push(FieldViolation::new(
                    format!("lines[{i}].line_id"),
                    "duplicates an earlier line",
                ));
                continue;
            }
            match lines.iter().position(|l| l.line_id == line_id.as_str()) {
                None => violations.push(FieldViolation::new(
                    format!("lines[{i}].line_id"),
                    "is not a line of this order",
                )),
                Some(at) => returned_after[at] += quantity,
            }
        }
        if !violations.is_empty() {
            return Err(AppError::InvalidArgument(violations));
        }
        if lines
            .iter()
            .zip(&returned_after)
            .any(|(l, r)| *r > l.quantity)
        {
            return Err(AppError::ReturnQuantityExceeded);
        }

        // Earned side: cumulative reversal per line; the spend returned, likewise, for
        // tier qualification.
        let mut reversed = 0;
        let mut spend_returned = 0;
        // Each line then records this return: quantities returned and points reversed
        // in all (only those two change; what follows reads quantities and values).
        for (line, &after) in lines.iter_mut().zip(&returned_after) {
            if after == line.returned_quantity {
                continue;
            }
            let target = cumulative_share(line.points, after, line.quantity);
            reversed += target - line.points_reversed;
            spend_returned += cumulative_share(line.eligible_minor, after, line.quantity)
                - cumulative_share(line.eligible_minor, line.returned_quantity, line.quantity);
            line.returned_quantity = after;
            line.points_reversed = target;
        }
        rules::reduce_order(&*txn, order_id, reversed, spend_returned, &lines).await?;
        // Everything came back: the offers the order used may be used again.
        if lines
            .iter()
            .zip(&returned_after)
            .all(|(l, r)| *r == l.quantity)
        {
            offers::give_back(&*txn, order_id).await?;
        }

        // Spent side: the order's spend apportioned over its lines by value, refunded
        // cumulatively for the units returned.
        let spent = ledger::order_spent(&*txn, order_id).await?;
        let refunded_before = ledger::order_refunded(&*txn, order_id).await?;
        let weights: Vec<i64> = lines.iter().map(|l| l.eligible_minor).collect();
        let refund_target: i64 = apportion(spent, &weights)
            .into_iter()
            .zip(lines.iter().zip(&returned_after))
            .map(|(share, (line, &after))| cumulative_share(share, after, line.quantity))
            .sum();
        let refund = (refund_target - refunded_before).max(0);

        // Take the reversal from the order's own lot first, then from the balance.
        let (mut from_pending, mut from_lot, mut charged, mut shortfall, mut waived) =
            (0, 0, 0, 0, 0);
        if let Some(lot) = lots::accrual_lot(&*txn, order_id).await? {
            if lot.state == lots::STATE_PENDING {
                from_pending = reversed.min(lot.points_remaining);
                waived = reversed - from_pending;
                lots::reverse(&*txn, lot.id, from_pending, 0).await?;
            } else {
                from_lot = reversed.min(lot.points_remaining);
                let consumed = lot.points_original
                    - lot.points_remaining
                    - lot.points_expired
                    - lot.points_reversed;
                let chargeable = (reversed - from_lot).min(consumed.max(0));
                waived = reversed - from_lot - chargeable;
                let balance_left = (member.points_available - from_lot).max(0);
                (charged, shortfall) = match self.program.return_policy {
                    ReturnPolicy::Clamp => (
                        chargeable.min(balance_left),
                        chargeable - chargeable.min(balance_left),
                    ),
                    ReturnPolicy::AllowNegative => (chargeable, 0),
                };
                lots::reverse(&*txn, lot.id, from_lot, charged + shortfall).await?;
            }
        }
        let transaction_id = uuid::Uuid::now_v7().to_string();
        let after = members::apply(
            &*txn,
            &member_key,
            BalanceDelta {
                available: -(from_lot + charged),
                pending: -from_pending,
                held: 0,
                lifetime: -reversed,
            },
        )
        .await?;
        // Charged points come out of the other lots, as far as they go.
        let from_lots = charged.min((member.points_available - from_lot).max(0));
        wallet::burn(&txn, &member.id, from_lots, &transaction_id, None).await?;

        let now = crate::store::now();
        let return_entry = NewEntry {
            member_id: member.id.clone(),
            transaction_id: transaction_id.clone(),
            kind: KIND_RETURN,
            points: -(from_lot + charged),
            pending_delta: -from_pending,
            balance_after: after.points_available,
            order_id: Some(order_id.to_owned()),
            store_id: Some(order.store_id.clone()),
            return_id: Some(cmd.return_id.as_str().to_owned()),
            created_at: now,
            ..Default::default()
        };
        ledger::append(&*txn, return_entry.clone()).await?;
        let mut final_member = after;
        if refund > 0 {
            final_member = wallet::credit(
                &txn,
                &self.program,
                Credit {
                    member: &member_key,
                    points: refund,
                    source: Source::Refund,
                    pending: false,
                    counts_as_earned: false,
                    transaction_id: &transaction_id,
                    order_id: Some(order_id),
                    now,
                },
            )
            .await?;
            ledger::append(
                &*txn,
                NewEntry {
                    kind: KIND_RETURN_REFUND,
                    points: refund,
                    pending_delta: 0,
                    balance_after: final_member.points_available,
                    ..return_entry
                },
            )
            .await?;
        }
        ledger::insert_return(
            &*txn,
            crate::store::ledger::ReturnRow {
                order_id: order_id.to_owned(),
                return_id: cmd.return_id.as_str().to_owned(),
                member_id: member.id.clone(),
                transaction_id: transaction_id.clone(),
                points_reversed: reversed,
                points_charged: charged,
                points_waived: waived,
                shortfall,
                points_refunded: refund,
                created_at: now,
            },
        )
        .await?;
        // A return can cost the tier the purchase had earned.
        let ruleset = self.ruleset(&*txn).await?;
        review_tier(&txn, &ruleset, &final_member, now, Review::DownOnly).await?;
        let outcome = ReturnOutcome {
            transaction_id,
            member_id: member.id.clone(),
            points_reversed: reversed,
            points_charged: charged,
            shortfall,
            points_waived: waived,
            points_refunded: refund,
            balance: BalanceView::from(&final_member),
        };
        finish(txn, &key, &outcome).await?;
        Ok(outcome)
    }
}
