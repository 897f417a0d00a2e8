//! Background work: expire lots, release pending points, expire holds. Every step
//! rechecks its condition under the member's lock on the database's clock, so the jobs
//! are safe to run on every replica at once and concurrently with any call.
use chrono::{Datelike, Duration, TimeZone};

use super::{
    context::ProgramContext,
    tiers::{Review, review_tier},
    wallet,
};
use crate::{
    domain::plan_expiry,
    error::AppError,
    store::{WriteTxn, events, feedback, holds, lots, members, rules},
};

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobReport {
    pub expired_lots: u64,
    pub expired_points: i64,
    pub released_lots: u64,
    pub released_points: i64,
    pub expired_holds: u64,
    pub tiers_reviewed: u64,
    pub birthday_bonuses: u64,
    pub anniversary_bonuses: u64,
    pub risk_scores: u64,
    pub events_pruned: u64,
}

/// The background jobs, run on a timer by every replica (or once by `loyalty jobs`).
#[derive(Clone)]
pub struct JobRunner {
    ctx: ProgramContext,
}

impl std::ops::Deref for JobRunner {
    type Target = ProgramContext;

    fn deref(&self) -> &ProgramContext {
        &self.ctx
    }
}

impl JobRunner {
    pub fn new(ctx: ProgramContext) -> Self {
        Self { ctx }
    }
    /// One pass of every job, at most `batch` items of each kind.
    #[tracing::instrument(name = "jobs.run", skip_all)]
    pub async fn run_jobs(&self, batch: u64) -> Result<JobReport, AppError> {
        let mut report = JobReport::default();
        let now = self.store.db_now(self.store.conn()).await?;
        for (hold_id, member_id) in
            holds::due_for_expiry(self.store.conn(), self.store.program(), now, batch).await?
        {
            let txn = self.store.begin_write().await?;
            let member =
                members::lock(&*txn, txn.program(), &super::stored_member(&member_id)?).await?;
            let Some(hold) = holds::find(&*txn, txn.program(), &hold_id).await? else {
                continue;
            };
            let transaction_id = super::wallet::new_transaction_id();
            match self
                .settle(&txn, hold, &member, holds::EXPIRED, 0, &transaction_id)
                .await
            {
                Ok(_) => {
                    txn.commit().await?;
                    report.expired_holds += 1;
                }
                // Captured or voided meanwhile: nothing to do.
                Err(
                    AppError::HoldAlreadyCaptured
                    | AppError::HoldAlreadyVoided
                    | AppError::HoldExpired,
                ) => {}
                Err(e) => return Err(e),
            }
        }
        for (lot_id, member_id) in lots::due_for_release(
            self.store.conn(),
            self.store.program(),
            Some(now),
            None,
            batch,
        )
        .await?
        {
            let txn = self.store.begin_write().await?;
            members::lock(&*txn, txn.program(), &super::stored_member(&member_id)?).await?;
            let now = self.store.db_now(&*txn).await?;
            let points = self.release_lot(&txn, lot_id, Some(now)).await?;
            txn.commit().await?;
            if points > 0 {
                report.released_lots += 1;
                report.released_points += points;
            }
        }
        for (lot_id, member_id) in
            lots::due_for_expiry(self.store.conn(), self.store.program(), now, batch).await?
        {
            let txn = self.store.begin_write().await?;
            let expired = expire_lot(&self.store, &txn, lot_id, &member_id).await?;
            txn.commit().await?;
            if expired > 0 {
                report.expired_lots += 1;
                report.expired_points += expired;
            }
        }
        self.review_tiers(batch, &mut report).await?;
        self.grant_yearly_bonuses(batch, &mut report).await?;
        // Churn risk moves with time alone (recency): re-score the stalest, a day apart.
        let stale = feedback::stale_scores(
            self.store.conn(),
            self.store.program(),
            now - Duration::days(1),
            batch,
        )
        .await?;
        for chunk in stale.chunks(500) {
            let txn = self.store.begin_write().await?;
            super::risk::score_members(
                &*txn,
                txn.program(),
                chunk,
                self.program.risk_window,
                self.store.now(),
            )
            .await?;
            txn.commit().await?;
            report.risk_scores += chunk.len() as u64;
        }
        if let Some(retention) = self.program.event_retention {
            let txn = self.store.begin_write().await?;
            report.events_pruned = events::prune(&*txn, now - retention, batch).await?;
            txn.commit().await?;
        }
        Ok(report)
    }

    /// Members whose tier period (plus grace) has ended keep their tier when they still
    /// qualify, for a new period, or move to the tier they qualify for now.
    async fn review_tiers(&self, batch: u64, report: &mut JobReport) -> Result<(), AppError> {
        let ruleset = self.ruleset(self.store.conn()).await?;
        let now = self.store.db_now(self.store.conn()).await?;
        let cutoff = now - Duration::days(i64::from(ruleset.tier_grace_days));
        for member_id in
            rules::tiers_due(self.store.conn(), self.store.program(), cutoff, batch).await?
        {
            let txn = self.store.begin_write().await?;
            let member =
                members::lock(&*txn, txn.program(), &super::stored_member(&member_id)?).await?;
            // Re-checked under the lock: another replica may have reviewed it already.
            if member.tier_until.is_some_and(|until| until <= cutoff) {
                review_tier(
                    &txn,
                    &ruleset,
                    &member,
                    crate::store::truncate(now),
                    Review::PeriodEnd,
                )
                .await?;
                report.tiers_reviewed += 1;
            }
            txn.commit().await?;
        }
        Ok(())
    }

    /// Birthday and anniversary bonuses, once per member and year, in the programme's
    /// time zone. The grant row is claimed in the bonus's own transaction, so replicas
    /// running this at once, or a restart halfway, never pay twice.
    async fn grant_yearly_bonuses(
        &self,
        batch: u64,
        report: &mut JobReport,
    ) -> Result<(), AppError> {
        let ruleset = self.ruleset(self.store.conn()).await?;
        let now = self.store.db_now(self.store.conn()).await?;
        let local = now.with_timezone(&ruleset.tz());
        let (month, year) = (local.month(), local.year());
        let tz = ruleset.tz();
        // The same month of every earlier year since the first enrolment, as UTC ranges.
        let first_year = rules::first_enrolment(self.store.conn(), self.store.program())
            .await?
            .map_or(year, |at| at.with_timezone(&tz).year());
        let month_start = |y: i32, m: u32| {
            tz.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                .earliest()
                .map(|t| t.with_timezone(&chrono::Utc))
        };
        let next = |y: i32, m: u32| if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        let ranges: Vec<_> = (first_year..year)
            .filter_map(|y| {
                let (ny, nm) = next(y, month);
                Some((month_start(y, month)?, month_start(ny, nm)?))
            })
            .collect();
        for (kind, points, birth_month, enrolled) in [
            (
                "BIRTHDAY",
                ruleset.birthday_bonus_points,
                Some(month),
                &[][..],
            ),
            (
                "ANNIVERSARY",
                ruleset.anniversary_bonus_points,
                None,
                &ranges[..],
            ),
        ] {
            if points <= 0 {
                continue;
            }
            for member_id in rules::bonus_candidates(
                self.store.conn(),
                self.store.program(),
                kind,
                year,
                birth_month,
                enrolled,
                batch,
            )
            .await?
            {
                let txn = self.store.begin_write().await?;
                members::lock(&*txn, txn.program(), &super::stored_member(&member_id)?).await?;
                if rules::claim_bonus(&*txn, &member_id, kind, year, self.store.now()).await? {
                    let transaction_id = super::wallet::new_transaction_id();
                    wallet::grant_bonus_or_skip(
                        self,
                        &txn,
                        &member_id,
                        points,
                        kind,
                        &transaction_id,
                    )
                    .await?;
                    if kind == "BIRTHDAY" {
                        report.birthday_bonuses += 1;
                    } else {
                        report.anniversary_bonuses += 1;
                    }
                }
                txn.commit().await?;
            }
        }
        Ok(())
    }
}

/// Expires what is left of one lot: one EXPIRY entry for its remainder. Returns the
/// points expired (0 when they were spent or expired meanwhile).
async fn expire_lot(
    store: &crate::store::Store,
    txn: &WriteTxn,
    lot_id: i64,
    member_id: &str,
) -> Result<i64, AppError> {
    let locked = members::lock(&**txn, txn.program(), &super::stored_member(member_id)?).await?;
    let now = store.db_now(&**txn).await?;
    let Some(lot) = lots::get_locked(&**txn, lot_id).await? else {
        return Ok(0);
    };
    let due = lot.expires_at.is_some_and(|at| at <= now);
    if lot.state != lots::STATE_AVAILABLE || lot.points_remaining <= 0 || !due {
        return Ok(0);
    }
    let points = lot.points_remaining;
    let transaction_id = super::wallet::new_transaction_id();
    let posting = plan_expiry(
        super::ledger::start(&locked, &transaction_id, store.now()),
        lot.id,
        points,
        lot.order_id.clone(),
    );
    super::ledger::post(txn, posting).await?;
    Ok(points)
}
