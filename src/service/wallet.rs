//! The money steps more than one use case takes: adjustments (the AdjustPoints call, a
//! complaint resolved with goodwill), bonuses (a referral, a birthday, a survey answered),
//! settling a hold and releasing pending points. Planned as postings and written by the ledger writer, inside the
//! caller's transaction.
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use super::{
    context::ProgramContext,
    ledger::{self, lock_to_spend, start},
    views::{BalanceView, HoldView},
};
use crate::{
    domain::{
        HeldPoints, Insufficient, LotSource, MemberKey, PendingLot, Ruleset, plan_adjust,
        plan_bonus, plan_pending_release, plan_settle,
    },
    error::AppError,
    store::{
        WriteTxn,
        holds::{self, HoldRow},
        ledger as entries, lots,
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

/// Credits bonus points with a reason (BIRTHDAY, ANNIVERSARY, REFERRAL, FEEDBACK), locking
/// the member first; returns the member after the credit (none when there was nothing
/// to credit).
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
    let row = members::lock(&**txn, txn.program(), &super::stored_member(member_id)?).await?;
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

/// Steps of the money path that more than one use case takes: adjustments (the
/// AdjustPoints call, a complaint resolved with goodwill), settling a hold (capture,
/// void, the expiry job) and releasing pending points (ConfirmOrder, the release job).
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
        // Only a debit burns lots: a credit needs the member's row alone.
        let (locked, spendable) = if cmd.points < 0 {
            lock_to_spend(txn, &cmd.member).await?
        } else {
            (
                members::lock(&**txn, txn.program(), &cmd.member).await?,
                Vec::new(),
            )
        };
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

    /// Settles a hold as `status`: exactly one of capture, void and expiry ever succeeds.
    pub(super) async fn settle(
        &self,
        txn: &WriteTxn,
        hold: HoldRow,
        member: &MemberRow,
        status: &'static str,
        captured: i64,
        transaction_id: &str,
    ) -> Result<(HoldView, BalanceView), AppError> {
        let now = crate::store::truncate(self.store.db_now(&**txn).await?);
        if !holds::settle(&**txn, &hold.id, status, captured, now).await? {
            let current = holds::find(&**txn, txn.program(), &hold.id)
                .await?
                .ok_or(AppError::HoldNotFound)?;
            return Err(match current.status.as_str() {
                holds::CAPTURED => AppError::HoldAlreadyCaptured,
                holds::VOIDED => AppError::HoldAlreadyVoided,
                // EXPIRED, or ACTIVE past its expiry (the job will settle it).
                _ => AppError::HoldExpired,
            });
        }
        let held = HeldPoints {
            hold_id: hold.id.clone(),
            points: hold.points,
            order_id: hold.order_id.clone(),
            store_id: hold.store_id.clone(),
        };
        let posting = plan_settle(start(member, transaction_id, now), &held, captured, status);
        let member = ledger::post(txn, posting).await?;
        let settled = HoldRow {
            status: status.to_owned(),
            captured_points: captured,
            settled_at: Some(now),
            ..hold
        };
        Ok((HoldView::from(&settled), BalanceView::from(&member)))
    }

    /// Makes a pending lot available (its member must be locked): moves its points from
    /// pending to available and writes the ledger entry. `now` bounds the release to lots
    /// whose window has passed; `None` releases regardless (order confirmed). Returns the
    /// points released (0 when someone else released it first). The first purchase that
    /// counts for good pays a pending referral bonus.
    pub(super) async fn release_lot(
        &self,
        txn: &WriteTxn,
        lot_id: i64,
        now: Option<DateTime<Utc>>,
    ) -> Result<i64, AppError> {
        let Some(lot) = lots::get_locked(&**txn, lot_id).await? else {
            return Ok(0);
        };
        if lot.state != lots::STATE_PENDING || now.is_some_and(|now| lot.available_at > now) {
            return Ok(0);
        }
        let points = lot.points_remaining;
        let locked = members::lock(
            &**txn,
            txn.program(),
            &super::stored_member(&lot.member_id)?,
        )
        .await?;
        let pending = PendingLot {
            lot_id: lot.id,
            points,
            order_id: lot.order_id.clone(),
        };
        let posting = plan_pending_release(
            start(&locked, &lot.transaction_id, self.store.now()),
            &pending,
        );
        let member = ledger::post(txn, posting).await?;
        if lot.source == LotSource::Accrual.as_str() && points > 0 && referral_pending(&member) {
            let ruleset = self.ruleset(&**txn).await?;
            reward_referral(self, txn, &ruleset, &member).await?;
        }
        Ok(points)
    }
}

/// Whether the member was referred and the referral bonus is still to be paid.
pub(super) fn referral_pending(member: &MemberRow) -> bool {
    member.referral_status.as_deref() == Some("PENDING")
}

/// Pays both referral bonuses once the referred member's first purchase counts for
/// good (not pending); true when this call paid them. Exactly once per referred member: the status flips in the same
/// transaction. The referrer enrolled earlier, so locks always go from newer to older
/// member and cannot deadlock.
pub(super) async fn reward_referral(
    ctx: &ProgramContext,
    txn: &WriteTxn,
    rules: &Ruleset,
    referred: &MemberRow,
) -> Result<bool, AppError> {
    // Most members were never referred: then there is nothing to claim and no query.
    if !referral_pending(referred) {
        return Ok(false);
    }
    let referred_id = referred.id.as_str();
    let Some(referrer_id) = members::claim_referral(&**txn, referred_id).await? else {
        return Ok(false);
    };
    let transaction_id = new_transaction_id();
    grant_bonus_or_skip(
        ctx,
        txn,
        referred_id,
        rules.referral_bonus_referred,
        "REFERRAL",
        &transaction_id,
    )
    .await?;
    grant_bonus_or_skip(
        ctx,
        txn,
        &referrer_id,
        rules.referral_bonus_referrer,
        "REFERRAL",
        &transaction_id,
    )
    .await?;
    Ok(true)
}
