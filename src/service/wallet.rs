//! Adjustments and bonuses: credits and debits that more than one use case makes (the
//! AdjustPoints call and a complaint resolved with goodwill; a referral, a birthday, a
//! survey answered). Planned as postings and written by the ledger writer, inside the
//! caller's transaction.
use serde::{Deserialize, Serialize};

use super::{
    context::ProgramContext,
    ledger::{self, lock_to_spend, start},
    points::BalanceView,
};
use crate::{
    domain::{Insufficient, LotSource, MemberKey, plan_adjust, plan_bonus},
    error::AppError,
    store::{
        WriteTxn, ledger as entries,
        members::{self, MemberRow},
    },
};

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
    let row = members::lock(&**txn, &super::stored_member(member_id)?).await?;
    let credit = ctx.credit(points, LotSource::Bonus, false, None, now);
    let posting = plan_bonus(start(&row, transaction_id, now), credit, reason);
    Ok(Some(ledger::post(txn, posting).await?))
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
        let (locked, spendable) = lock_to_spend(txn, &cmd.member).await?;
        if cmd.reason == AdjustReason::Goodwill {
            // The member's row is locked: concurrent grants are counted one after another.
            let since = self.store.db_now(&**txn).await? - chrono::Duration::hours(24);
            let granted = entries::goodwill_since(&**txn, &locked.id, since).await?;
            if granted + cmd.points > self.program.goodwill_max_per_day {
                return Err(AppError::GoodwillCapExceeded);
            }
        }
        let credit = self.credit(cmd.points, LotSource::Adjustment, false, None, now);
        let posting = plan_adjust(
            start(&locked, &transaction_id, now),
            credit,
            cmd.reason.as_str(),
            cmd.note,
            &spendable,
        )
        .map_err(|Insufficient| AppError::InsufficientPoints)?;
        let member = ledger::post(txn, posting).await?;
        Ok(Adjustment {
            transaction_id,
            member_id: member.id.clone(),
            points: cmd.points,
            balance: BalanceView::from(&member),
        })
    }
}
