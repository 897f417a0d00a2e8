//! Returns: reverse what returned lines earned, give back what the order spent. The
//! arithmetic is planned in `domain::returns`; this writes the plan.
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{
    Mutation,
    context::ProgramContext,
    idempotency::{Begun, begin, finish, once},
    ledger,
    tiers::{Review, review_tier},
    views::BalanceView,
};
use crate::{
    domain::{
        LotSource, OrderLot, ReturnIds, ReturnLine, ReturnPlan, ReturnState, ReturnedLot, ShortId,
        plan_return, plan_return_posting,
    },
    error::{AppError, FieldViolation},
    store::{
        WriteTxn,
        ledger::{self as entries, OrderLine, OrderRow},
        lots::{self, LotRow},
        members::{self, MemberRow},
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

/// Returns: reverse what returned lines earned, give back what the order spent.
#[derive(Clone)]
pub struct ReturnService {
    ctx: ProgramContext,
}

impl std::ops::Deref for ReturnService {
    type Target = ProgramContext;

    fn deref(&self) -> &ProgramContext {
        &self.ctx
    }
}

impl ReturnService {
    pub fn new(ctx: ProgramContext) -> Self {
        Self { ctx }
    }
    #[tracing::instrument(name = "points.return", skip_all, fields(request_id = %mutation.request_id.as_str(), order_id = %cmd.order_id.as_str()))]
    pub async fn return_items(
        &self,
        mutation: &Mutation,
        cmd: ReturnCommand,
    ) -> Result<ReturnOutcome, AppError> {
        let key = mutation.key("ReturnItems");
        once(&self.store, &key, async {
            let txn = match begin::<ReturnOutcome>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let (order, member) = lock_order(&txn, mutation, &cmd).await?;
            let order_id = order.order_id.as_str();
            // Lines in line-id order: the order the spend is apportioned in.
            let mut lines = entries::lines_of(&order)?;
            lines.sort_by(|a, b| a.line_id.cmp(&b.line_id));
            let returned_after = returned_after(&lines, &cmd)?;
            let lot = lots::accrual_lot(&*txn, &order.member_id, order_id).await?;
            let plan_lines: Vec<ReturnLine> = lines.iter().map(return_line).collect();
            let state = ReturnState {
                lines: &plan_lines,
                returned_after: &returned_after,
                spent: entries::order_spent(&*txn, &order.member_id, order_id).await?,
                refunded_before: entries::order_refunded(&*txn, &order.member_id, order_id).await?,
                outstanding_shortfall: entries::order_outstanding_shortfall(
                    &*txn,
                    txn.program(),
                    order_id,
                )
                .await?,
                lot: order_lot(lot.as_ref()),
                available: member.points_available,
                policy: self.program.return_policy,
            };
            let plan = plan_return(&state);
            plan.check(&state).map_err(|e| {
                AppError::Internal(anyhow::anyhow!("return of order {order_id}: {e}"))
            })?;
            for (line, (returned, reversed)) in lines.iter_mut().zip(&plan.lines_after) {
                line.returned_quantity = *returned;
                line.points_reversed = *reversed;
            }
            rules::reduce_order(
                &*txn,
                txn.program(),
                order_id,
                plan.reversed,
                plan.spend_returned,
                &lines,
            )
            .await?;
            // Everything came back: the offers the order used may be used again.
            if plan.fully_returned {
                offers::give_back(&*txn, &order.member_id, order_id).await?;
            }
            let returned = lot.as_ref().map(|l| ReturnedLot {
                lot_id: l.id,
                pending: l.state == lots::STATE_PENDING,
            });
            let outcome = self
                .post_return(&txn, (&order, &member), &cmd, &plan, returned)
                .await?;
            finish(txn, &key, &outcome).await?;
            Ok(outcome)
        })
        .await
    }

    /// Writes the planned return: its posting, the return's record, and a tier review (a
    /// return can cost the tier the purchase had earned).
    async fn post_return(
        &self,
        txn: &WriteTxn,
        (order, member): (&OrderRow, &MemberRow),
        cmd: &ReturnCommand,
        plan: &ReturnPlan,
        lot: Option<ReturnedLot>,
    ) -> Result<ReturnOutcome, AppError> {
        let now = self.store.now();
        let order_id = order.order_id.as_str();
        let transaction_id = super::wallet::new_transaction_id();
        let spendable = lots::spendable(&**txn, &member.id).await?;
        let refund = self.credit(
            plan.refund,
            LotSource::Refund,
            false,
            Some(order_id.to_owned()),
            now,
        );
        let ids = ReturnIds {
            order_id: order_id.to_owned(),
            store_id: order.store_id.clone(),
            return_id: cmd.return_id.as_str().to_owned(),
        };
        let start = ledger::start(member, &transaction_id, now);
        let posting = plan_return_posting(start, plan, lot, refund, &spendable, ids);
        let after = ledger::post(txn, posting).await?;
        entries::insert_return(
            &**txn,
            entries::ReturnRow {
                program_id: txn.program().to_owned(),
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
        let ruleset = self.ruleset(&**txn).await?;
        review_tier(txn, &ruleset, &after, now, Review::DownOnly).await?;
        Ok(ReturnOutcome {
            transaction_id,
            member_id: member.id.clone(),
            points_reversed: plan.reversed,
            points_charged: plan.charged,
            shortfall: plan.shortfall,
            points_waived: plan.waived,
            points_refunded: plan.refund,
            shortfall_recovered: plan.recovered,
            balance: BalanceView::from(&after),
        })
    }
}

/// Finds the order (a till sees only its own stores' orders; to it, others do not
/// exist) and locks its member; refuses a return id already recorded.
async fn lock_order(
    txn: &WriteTxn,
    mutation: &Mutation,
    cmd: &ReturnCommand,
) -> Result<(OrderRow, MemberRow), AppError> {
    let order_id = cmd.order_id.as_str();
    let order = entries::find_order(&**txn, txn.program(), order_id)
        .await?
        .filter(|o| mutation.caller.may_act_for_store(&o.store_id))
        .ok_or(AppError::OrderNotFound)?;
    let member = members::lock(
        &**txn,
        txn.program(),
        &super::stored_member(&order.member_id)?,
    )
    .await?;
    // Read again under the member's lock: a concurrent return of the same order
    // (committed while this one waited for the lock) has changed its lines.
    let order = entries::find_order(&**txn, txn.program(), order_id)
        .await?
        .ok_or(AppError::OrderNotFound)?;
    if entries::find_return(&**txn, txn.program(), order_id, cmd.return_id.as_str())
        .await?
        .is_some()
    {
        return Err(AppError::ReturnAlreadyRecorded);
    }
    Ok((order, member))
}

/// Units of each line (sorted by line id) returned in all once this return is recorded;
/// every line the call names must be the order's, once, and no more than was bought.
fn returned_after(lines: &[OrderLine], cmd: &ReturnCommand) -> Result<Vec<i64>, AppError> {
    let mut violations = Vec::new();
    let mut seen = HashSet::new();
    let mut after: Vec<i64> = lines.iter().map(|l| l.returned_quantity).collect();
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
            Some(at) => after[at] += quantity,
        }
    }
    if !violations.is_empty() {
        return Err(AppError::InvalidArgument(violations));
    }
    if lines.iter().zip(&after).any(|(l, r)| *r > l.quantity) {
        return Err(AppError::ReturnQuantityExceeded);
    }
    Ok(after)
}

fn return_line(l: &OrderLine) -> ReturnLine {
    ReturnLine {
        quantity: l.quantity,
        returned_quantity: l.returned_quantity,
        points: l.points,
        points_reversed: l.points_reversed,
        eligible_minor: l.eligible_minor,
    }
}

/// The order's lot as the return planner sees it.
fn order_lot(lot: Option<&LotRow>) -> OrderLot {
    match lot {
        None => OrderLot::None,
        Some(l) if l.state == lots::STATE_PENDING => OrderLot::Pending {
            remaining: l.points_remaining,
        },
        Some(l) => OrderLot::Active {
            remaining: l.points_remaining,
            consumed: l.points_original - l.points_remaining - l.points_expired - l.points_reversed,
        },
    }
}
