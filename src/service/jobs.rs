//! Background work: expire lots, release pending points, expire holds. Every step
//! rechecks its condition under the member's lock on the database's clock, so the jobs
//! are safe to run on every replica at once and concurrently with any call.
use super::{
    points::{KIND_EXPIRY, PointsService},
    spending::release_lot,
};
use crate::{
    domain::{MemberId, MemberKey},
    error::AppError,
    store::{
        WriteTxn, db_now, holds,
        ledger::{self, NewEntry},
        lots,
        members::{self, BalanceDelta},
    },
};

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobReport {
    pub expired_lots: u64,
    pub expired_points: i64,
    pub released_lots: u64,
    pub released_points: i64,
    pub expired_holds: u64,
}

fn key(member_id: &str) -> Result<MemberKey, AppError> {
    MemberId::parse(member_id)
        .map(MemberKey::Id)
        .map_err(|e| AppError::Internal(anyhow::anyhow!(e)))
}

impl PointsService {
    /// One pass of every job, at most `batch` items of each kind.
    #[tracing::instrument(name = "jobs.run", skip_all)]
    pub async fn run_jobs(&self, batch: u64) -> Result<JobReport, AppError> {
        let mut report = JobReport::default();
        let now = db_now(self.store.conn()).await?;
        for (hold_id, member_id) in holds::due_for_expiry(self.store.conn(), now, batch).await? {
            let txn = self.store.begin_write().await?;
            members::lock(&*txn, &key(&member_id)?).await?;
            let Some(hold) = holds::find(&*txn, &hold_id).await? else {
                continue;
            };
            let transaction_id = uuid::Uuid::now_v7().to_string();
            match self
                .settle(&txn, hold, holds::EXPIRED, 0, &transaction_id)
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
        for (lot_id, member_id) in
            lots::due_for_release(self.store.conn(), Some(now), None, batch).await?
        {
            let txn = self.store.begin_write().await?;
            members::lock(&*txn, &key(&member_id)?).await?;
            let now = db_now(&*txn).await?;
            let points = release_lot(&txn, lot_id, Some(now)).await?;
            txn.commit().await?;
            if points > 0 {
                report.released_lots += 1;
                report.released_points += points;
            }
        }
        for (lot_id, member_id) in lots::due_for_expiry(self.store.conn(), now, batch).await? {
            let txn = self.store.begin_write().await?;
            let expired = expire_lot(&txn, lot_id, &member_id).await?;
            txn.commit().await?;
            if expired > 0 {
                report.expired_lots += 1;
                report.expired_points += expired;
            }
        }
        Ok(report)
    }
}

/// Expires what is left of one lot: one EXPIRY entry for its remainder. Returns the
/// points expired (0 when they were spent or expired meanwhile).
async fn expire_lot(txn: &WriteTxn, lot_id: i64, member_id: &str) -> Result<i64, AppError> {
    let member_key = key(member_id)?;
    members::lock(&**txn, &member_key).await?;
    let now = db_now(&**txn).await?;
    let Some(lot) = lots::get_locked(&**txn, lot_id).await? else {
        return Ok(0);
    };
    let due = lot.expires_at.is_some_and(|at| at <= now);
    if lot.state != lots::STATE_AVAILABLE || lot.points_remaining <= 0 || !due {
        return Ok(0);
    }
    let points = lot.points_remaining;
    lots::expire(&**txn, lot.id, points).await?;
    let member = members::apply(
        &**txn,
        &member_key,
        BalanceDelta {
            available: -points,
            ..Default::default()
        },
    )
    .await?;
    ledger::append(
        &**txn,
        NewEntry {
            member_id: member.id.clone(),
            transaction_id: uuid::Uuid::now_v7().to_string(),
            kind: KIND_EXPIRY,
            points: -points,
            balance_after: member.points_available,
            order_id: lot.order_id.clone(),
            note: Some(format!("lot {}", lot.id)),
            created_at: crate::store::now(),
            ..Default::default()
        },
    )
    .await?;
    Ok(points)
}
