//! Returns: reverse what returned lines earned, give back what the order spent. The
//! arithmetic is planned in `domain::returns`; this writes the plan.
use crate::domain::EntryKind;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{
    Mutation,
    idempotency::{Begun, begin, finish},
    points::{BalanceView, PointsService},
    rewards_engine::{Review, review_tier},
    wallet::{self, Credit, Source},
};
use crate::{
    domain::{OrderLot, ReturnLine, ReturnState, ShortId, plan_return},
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
    /// Of those, points that paid back the shortfall of earlier returns of the order.
    #[serde(default)]
    pub shortfall_recovered: i64,
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
        // Read again under the member's lock: a concurrent return of the same order
        // (committed while this one waited for the lock) has changed its lines.
        let order = ledger::find_order(&*txn, order_id)
            .await?
            .ok_or(AppError::OrderNotFound)?;
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

        let spent = ledger::order_spent(&*txn, order_id).await?;
        let refunded_before = ledger::order_refunded(&*txn, order_id).await?;
        let outstanding_shortfall = ledger::order_outstanding_shortfall(&*txn, order_id).await?;
        let lot = lots::accrual_lot(&*txn, order_id).await?;
        let plan_lines: Vec<ReturnLine> = lines
            .iter()
            .map(|l| ReturnLine {
                quantity: l.quantity,
                returned_quantity: l.returned_quantity,
                points: l.points,
                points_reversed: l.points_reversed,
                eligible_minor: l.eligible_minor,
            })
            .collect();
        let state = ReturnState {
            lines: &plan_lines,
            returned_after: &returned_after,
            spent,
            refunded_before,
            outstanding_shortfall,
            lot: match &lot {
                None => OrderLot::None,
                Some(l) if l.state == lots::STATE_PENDING => OrderLot::Pending {
                    remaining: l.points_remaining,
                },
                Some(l) => OrderLot::Active {
                    remaining: l.points_remaining,
                    consumed: l.points_original
                        - l.points_remaining
                        - l.points_expired
                        - l.points_reversed,
                },
            },
            available: member.points_available,
            policy: self.program.return_policy,
        };
        let plan = plan_return(&state);
        plan.check(&state)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("return of order {order_id}: {e}")))?;

        for (line, (returned, reversed)) in lines.iter_mut().zip(&plan.lines_after) {
            line.returned_quantity = *returned;
            line.points_reversed = *reversed;
        }
        rules::reduce_order(&*txn, order_id, plan.reversed, plan.spend_returned, &lines).await?;
        // Everything came back: the offers the order used may be used again.
        if plan.fully_returned {
            offers::give_back(&*txn, order_id).await?;
        }
        if let Some(lot) = &lot {
            lots::reverse(
                &*txn,
                lot.id,
                plan.from_pending + plan.from_lot,
                plan.charged + plan.shortfall,
            )
            .await?;
        }

        // The refund is credited first, so the points it gives back can pay the charge.
        let transaction_id = uuid::Uuid::now_v7().to_string();
        let now = self.store.now();
        let return_entry = NewEntry {
            member_id: member.id.clone(),
            transaction_id: transaction_id.clone(),
            points: -plan.taken(),
            pending_delta: -plan.from_pending,
            order_id: Some(order_id.to_owned()),
            store_id: Some(order.store_id.clone()),
            return_id: Some(cmd.return_id.as_str().to_owned()),
            created_at: now,
            ..NewEntry::of(EntryKind::Return)
        };
        if plan.refund > 0 {
            let credited = wallet::credit(
                &txn,
                &self.program,
                Credit {
                    member: &member_key,
                    points: plan.refund,
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
                    kind: EntryKind::ReturnRefund,
                    points: plan.refund,
                    pending_delta: 0,
                    balance_after: credited.points_available,
                    ..return_entry.clone()
                },
            )
            .await?;
        }
        let final_member = members::apply(
            &*txn,
            &member_key,
            BalanceDelta {
                available: -plan.taken(),
                pending: -plan.from_pending,
                held: 0,
                lifetime: -plan.reversed,
            },
        )
        .await?;
        // Charged points come out of the other lots, as far as they go.
        wallet::burn(&txn, &member.id, plan.burn_from_lots, &transaction_id, None).await?;
        ledger::append(
            &*txn,
            NewEntry {
                balance_after: final_member.points_available,
                ..return_entry
            },
        )
        .await?;
        ledger::insert_return(
            &*txn,
            crate::store::ledger::ReturnRow {
                order_id: order_id.to_owned(),
                return_id: cmd.return_id.as_str().to_owned(),
                member_id: member.id.clone(),
                transaction_id: transaction_id.clone(),
                points_reversed: plan.reversed,
                points_charged: plan.charged,
                points_waived: plan.waived,
                shortfall: plan.shortfall,
                points_refunded: plan.refund,
                shortfall_recovered: plan.recovered,
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
            points_reversed: plan.reversed,
            points_charged: plan.charged,
            shortfall: plan.shortfall,
            points_waived: plan.waived,
            points_refunded: plan.refund,
            shortfall_recovered: plan.recovered,
            balance: BalanceView::from(&final_member),
        };
        finish(txn, &key, &outcome).await?;
        Ok(outcome)
    }
}
