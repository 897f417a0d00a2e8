//! Moving points between balances, lots and the ledger: the steps every money-path use
//! case is built from. All run inside the caller's write transaction, after the member's
//! row is locked (every `members::apply`/`debit`/`lock` takes that lock).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{context::ProgramContext, points::BalanceView};
use crate::{
    config::Program,
    domain::{EntryKind, MemberKey, plan_burn},
    error::AppError,
    store::{
        WriteTxn,
        ledger::{self, NewEntry},
        lots::{self, NewLot},
        members::{self, BalanceDelta, MemberRow},
    },
};

pub(super) use crate::domain::LotSource as Source;

/// A credit of new points.
pub(super) struct Credit<'a> {
    pub member: &'a MemberKey,
    pub points: i64,
    pub source: Source,
    pub pending: bool,
    pub counts_as_earned: bool,
    pub transaction_id: &'a str,
    pub order_id: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// Adds points to the member's balance and records them as a lot, pending for the
/// programme's return window or available at once. Returns the member after the change.
pub(super) async fn credit(
    txn: &WriteTxn,
    program: &Program,
    c: Credit<'_>,
) -> Result<MemberRow, AppError> {
    let p = c.points;
    let member = members::apply(&**txn, c.member, credit_delta(&c)).await?;
    if p > 0 {
        lots::insert(&**txn, new_lot(program, &c, &member.id)).await?;
        if !c.pending {
            pay_debt(txn, &member, p, c.transaction_id).await?;
        }
    }
    Ok(member)
}

/// How a credit changes the member's balances.
pub(super) fn credit_delta(c: &Credit<'_>) -> BalanceDelta {
    let p = c.points;
    BalanceDelta {
        available: if c.pending { 0 } else { p },
        pending: if c.pending { p } else { 0 },
        held: 0,
        lifetime: if c.counts_as_earned { p } else { 0 },
    }
}

/// The lot that records a credit for `member_id`: pending for the programme's return
/// window or available at once, expiring by the programme's policy.
pub(super) fn new_lot(program: &Program, c: &Credit<'_>, member_id: &str) -> NewLot {
    NewLot {
        member_id: member_id.to_owned(),
        transaction_id: c.transaction_id.to_owned(),
        order_id: c.order_id.map(str::to_owned),
        source: c.source.as_str(),
        pending: c.pending,
        points: c.points,
        remaining: c.points,
        earned_at: c.now,
        available_at: if c.pending {
            c.now + program.pending_window
        } else {
            c.now
        },
        expires_at: program.expiry.expires_at(c.now),
    }
}

/// When `credited` points arrived on a negative available balance, the lots must not
/// hold the part that paid the debt off: burn it again.
pub(super) async fn pay_debt(
    txn: &WriteTxn,
    after: &MemberRow,
    credited: i64,
    transaction_id: &str,
) -> Result<(), AppError> {
    let debt_paid = (credited - after.points_available.max(0)).clamp(0, credited);
    if debt_paid > 0 {
        burn(txn, &after.id, debt_paid, transaction_id, None).await?;
    }
    Ok(())
}

/// Takes `points` out of the member's available lots, first-expiring first. The caller
/// has already taken them off the balance; lots and balance must agree.
pub(super) async fn burn(
    txn: &WriteTxn,
    member_id: &str,
    points: i64,
    transaction_id: &str,
    hold_id: Option<&str>,
) -> Result<(), AppError> {
    if points <= 0 {
        return Ok(());
    }
    let spendable = lots::spendable(&**txn, member_id).await?;
    let plan = plan_burn(&spendable, points);
    let planned: i64 = plan.iter().map(|(_, p)| p).sum();
    if planned != points {
        return Err(AppError::Internal(anyhow::anyhow!(
            "member {member_id}: lots hold {planned} of the {points} points the balance says are available"
        )));
    }
    lots::burn(&**txn, member_id, transaction_id, hold_id, &plan).await
}

/// Takes `points` off the available balance if the member has them, then out of the lots.
pub(super) async fn spend(
    txn: &WriteTxn,
    member: &MemberKey,
    points: i64,
    to_held: bool,
    transaction_id: &str,
    hold_id: Option<&str>,
) -> Result<MemberRow, AppError> {
    let Some(after) = members::debit(&**txn, member, points, to_held).await? else {
        // Tell an unknown member apart from a short balance.
        members::find(&**txn, member).await?;
        return Err(AppError::InsufficientPoints);
    };
    burn(txn, &after.id, points, transaction_id, hold_id).await?;
    Ok(after)
}

/// Why points are adjusted by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdjustReason {
    /// Service recovery after a complaint; capped per grant and per day.
    Goodwill,
    Correction,
    Migration,
}

impl AdjustReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Goodwill => "GOODWILL",
            Self::Correction => "CORRECTION",
            Self::Migration => "MIGRATION",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdjustCommand {
    pub member: MemberKey,
    pub points: i64,
    pub reason: AdjustReason,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub transaction_id: String,
    pub member_id: String,
    pub points: i64,
    pub balance: BalanceView,
}

/// A new transaction id: time-ordered, so a statement sorts by it.
pub(super) fn new_transaction_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Credits bonus points with a reason (BIRTHDAY, ANNIVERSARY, REFERRAL, FEEDBACK);
/// returns the member after the credit (none when there was nothing to credit).
pub(super) async fn grant_bonus(
    ctx: &ProgramContext,
    txn: &WriteTxn,
    member_id: &str,
    points: i64,
    reason: &'static str,
    transaction_id: &str,
) -> Result<Option<MemberRow>, AppError> {
    if points <= 0 {
        return Ok(None);
    }
    let now = ctx.store.now();
    let member = credit(
        txn,
        &ctx.program,
        Credit {
            member: &super::stored_member(member_id)?,
            points,
            source: Source::Bonus,
            pending: false,
            counts_as_earned: false,
            transaction_id,
            order_id: None,
            now,
        },
    )
    .await?;
    ledger::append(
        &**txn,
        NewEntry {
            member_id: member.id.clone(),
            transaction_id: transaction_id.to_owned(),
            points,
            balance_after: member.points_available,
            reason_code: Some(reason),
            created_at: now,
            ..NewEntry::of(EntryKind::Bonus)
        },
    )
    .await?;
    Ok(Some(member))
}

/// [`grant_bonus`] for a bonus paid on the side of another member's call or a job run (a
/// referrer's share, a birthday): a balance at its bound takes no more, and that skips
/// the bonus instead of failing the referred member's accrual or the whole run.
pub(super) async fn grant_bonus_or_skip(
    ctx: &ProgramContext,
    txn: &WriteTxn,
    member_id: &str,
    points: i64,
    reason: &'static str,
    transaction_id: &str,
) -> Result<Option<MemberRow>, AppError> {
    match grant_bonus(ctx, txn, member_id, points, reason, transaction_id).await {
        Err(AppError::PointsOutOfRange) => {
            tracing::warn!(
                member_id,
                points,
                reason,
                "bonus skipped: the balance is at its bound"
            );
            Ok(None)
        }
        other => other,
    }
}

/// Adjustments are a step of the money path that more than one use case takes (the
/// AdjustPoints call, a complaint resolved with goodwill).
impl ProgramContext {
    /// What can be checked before any database work: GOODWILL is positive and within
    /// the per-grant cap; CORRECTION and MIGRATION are within theirs.
    pub(super) fn check_adjustment(
        &self,
        points: i64,
        reason: AdjustReason,
    ) -> Result<(), AppError> {
        if reason == AdjustReason::Goodwill {
            if points <= 0 {
                return Err(AppError::invalid(
                    "points",
                    "a GOODWILL grant must be positive",
                ));
            }
            if points > self.program.goodwill_max_per_grant {
                return Err(AppError::GoodwillCapExceeded);
            }
        }
        let cap = match reason {
            AdjustReason::Goodwill => self.program.goodwill_max_per_grant,
            AdjustReason::Correction => self.program.correction_max_points,
            AdjustReason::Migration => self.program.migration_max_points,
        };
        if points.unsigned_abs() > cap.unsigned_abs() {
            return Err(AppError::AdjustmentCapExceeded);
        }
        Ok(())
    }

    /// Applies an adjustment inside the caller's transaction (complaint resolution uses
    /// it so the grant and the closed case commit together or not at all).
    pub(super) async fn adjust_in(
        &self,
        txn: &WriteTxn,
        cmd: AdjustCommand,
    ) -> Result<Adjustment, AppError> {
        self.check_adjustment(cmd.points, cmd.reason)?;
        let transaction_id = new_transaction_id();
        let now = self.store.now();
        let member = if cmd.points > 0 {
            let locked = members::lock(&**txn, &cmd.member).await?;
            if cmd.reason == AdjustReason::Goodwill {
                // The member's row is locked: concurrent grants are counted one after another.
                let since = self.store.db_now(&**txn).await? - chrono::Duration::hours(24);
                let granted = ledger::goodwill_since(&**txn, &locked.id, since).await?;
                if granted + cmd.points > self.program.goodwill_max_per_day {
                    return Err(AppError::GoodwillCapExceeded);
                }
            }
            credit(
                txn,
                &self.program,
                Credit {
                    member: &cmd.member,
                    points: cmd.points,
                    source: Source::Adjustment,
                    pending: false,
                    counts_as_earned: false,
                    transaction_id: &transaction_id,
                    order_id: None,
                    now,
                },
            )
            .await?
        } else {
            spend(txn, &cmd.member, -cmd.points, false, &transaction_id, None).await?
        };
        ledger::append(
            &**txn,
            NewEntry {
                member_id: member.id.clone(),
                transaction_id: transaction_id.clone(),
                points: cmd.points,
                balance_after: member.points_available,
                reason_code: Some(cmd.reason.as_str()),
                note: cmd.note,
                created_at: now,
                ..NewEntry::of(EntryKind::Adjustment)
            },
        )
        .await?;
        Ok(Adjustment {
            transaction_id,
            member_id: member.id.clone(),
            points: cmd.points,
            balance: BalanceView::from(&member),
        })
    }
}
