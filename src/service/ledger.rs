//! The one writer of postings: balances, lots, ledger entries and events change here and
//! nowhere else, in the caller's write transaction, after the member's row is
//! locked (the posting's `before` must be what that lock read).
use chrono::{DateTime, Utc};
use sea_orm::ConnectionTrait;

use super::context::ProgramContext;
use crate::{
    domain::{
        Balances, Credit, LotOp, LotRemainder, LotSource, MemberKey, Posting, events::EventDetail,
    },
    error::AppError,
    store::{
        WriteTxn,
        accruals::{self, AccrualWrite},
        events::{self as outbox, NewEvent},
        idempotency::IdempotencyKey,
        ledger::{self as entries, OrderRow},
        lots,
        members::{self, MemberRow},
    },
};

/// The balances of a stored member, as a posting starts from them.
pub(super) fn balances_of(row: &MemberRow) -> Balances {
    Balances {
        available: row.points_available,
        pending: row.points_pending,
        held: row.points_held,
        lifetime: row.lifetime_earned,
    }
}

/// A posting for the member `row` (read under its lock), at `at`.
pub(super) fn start(row: &MemberRow, transaction_id: &str, at: DateTime<Utc>) -> Posting {
    Posting::new(row.id.clone(), transaction_id, balances_of(row), at)
}

/// Locks the member and reads what a posting that spends needs: the row and the
/// spendable lots.
pub(super) async fn lock_to_spend(
    txn: &WriteTxn,
    member: &MemberKey,
) -> Result<(MemberRow, Vec<LotRemainder>), AppError> {
    let row = members::lock(&**txn, txn.program(), member).await?;
    let spendable = lots::spendable(&**txn, &row.id).await?;
    Ok((row, spendable))
}

/// Refuses a posting that would take a balance out of range (the caller's amount), and
/// one that disagrees with itself (a bug in its planner).
pub(super) fn checked(posting: &Posting) -> Result<(), AppError> {
    if !posting.in_range() {
        return Err(AppError::PointsOutOfRange);
    }
    posting.check().map_err(|e| {
        AppError::Internal(anyhow::anyhow!(
            "posting {} of member {}: {e}",
            posting.transaction_id,
            posting.member_id
        ))
    })
}

/// Writes one posting; returns the member after it.
#[tracing::instrument(name = "ledger.post", skip_all)]
pub(super) async fn post(txn: &WriteTxn, posting: Posting) -> Result<MemberRow, AppError> {
    checked(&posting)?;
    let key = super::stored_member(&posting.member_id)?;
    let member = members::apply(&**txn, txn.program(), &key, posting.delta).await?;
    let (stored, planned) = (balances_of(&member), posting.after());
    if stored != planned {
        return Err(AppError::Internal(anyhow::anyhow!(
            "member {}: balances {stored:?} after posting, planned {planned:?}",
            member.id
        )));
    }
    for op in posting.lots {
        write_lot_op(txn, &posting.member_id, &posting.transaction_id, op).await?;
    }
    let mut list = posting.entries;
    match list.len() {
        0 => {}
        // PostgreSQL writes a lone entry and its event in one statement.
        1 => entries::append(&**txn, list.remove(0)).await?,
        _ => entries::append_all(&**txn, list).await?,
    }
    Ok(member)
}

/// One accrual of a batch: its posting (a single ACCRUAL entry and at most its new lot,
/// which is all [`crate::domain::plan_accrual`] makes when it does not run alone) with
/// its order, idempotency key and response.
pub(super) fn accrual_write(
    posting: Posting,
    event_seq: i64,
    order: OrderRow,
    key: IdempotencyKey,
    response: Vec<u8>,
) -> Result<AccrualWrite, AppError> {
    checked(&posting)?;
    let delta = posting.delta;
    let mut lot = None;
    for op in posting.lots {
        match op {
            LotOp::Create(new) if lot.is_none() => lot = Some(new),
            other => {
                return Err(AppError::Internal(anyhow::anyhow!(
                    "a batched accrual cannot write {other:?}"
                )));
            }
        }
    }
    let [entry] = <[_; 1]>::try_from(posting.entries).map_err(|e| {
        AppError::Internal(anyhow::anyhow!(
            "a batched accrual with {} entries",
            e.len()
        ))
    })?;
    Ok(AccrualWrite {
        delta,
        event_seq,
        lot,
        order,
        entry,
        key,
        response,
    })
}

/// Writes a batch of accruals in set-wise statements (see `store::accruals`); the
/// members' rows are locked by the batch's first statement.
pub(super) async fn post_accruals(
    txn: &WriteTxn,
    writes: Vec<AccrualWrite>,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    accruals::write(&**txn, writes, now).await
}

async fn write_lot_op(
    txn: &WriteTxn,
    member_id: &str,
    transaction_id: &str,
    op: LotOp,
) -> Result<(), AppError> {
    let db = &**txn;
    match op {
        LotOp::Create(lot) => lots::insert(db, lot).await,
        LotOp::Burn { takes, hold_id } => {
            lots::burn(db, member_id, transaction_id, hold_id.as_deref(), &takes).await
        }
        LotOp::ReleaseHold { hold_id, points } => lots::release_hold(db, &hold_id, points).await,
        LotOp::MakeAvailable {
            lot_id, remaining, ..
        } => lots::make_available(db, lot_id, remaining).await,
        LotOp::Expire { lot_id, points } => lots::expire(db, lot_id, points).await,
        LotOp::Reverse {
            lot_id,
            from_remaining,
            charged,
            ..
        } => lots::reverse(db, lot_id, from_remaining, charged).await,
    }
}

/// Writes one event for a member in the caller's transaction.
pub(super) async fn record<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    event_type: &'static str,
    transaction_id: Option<&str>,
    detail: &EventDetail,
    at: DateTime<Utc>,
) -> Result<(), AppError> {
    record_all(db, member_id, [(event_type, transaction_id, detail)], at).await
}

/// Writes a member's events of one change in one statement.
pub(super) async fn record_all<'a, C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    items: impl IntoIterator<Item = (&'static str, Option<&'a str>, &'a EventDetail)>,
    at: DateTime<Utc>,
) -> Result<(), AppError> {
    let events = items
        .into_iter()
        .map(|(event_type, transaction_id, detail)| {
            Ok(NewEvent {
                event_type,
                transaction_id: transaction_id.map(str::to_owned),
                payload: serde_json::to_string(detail).map_err(|e| AppError::Internal(e.into()))?,
                created_at: at,
            })
        })
        .collect::<Result<Vec<_>, AppError>>()?;
    outbox::emit(db, member_id, events).await
}

impl ProgramContext {
    /// The lot terms of a credit of `points` at `now` under the programme's return
    /// window and expiry policy.
    pub(super) fn credit(
        &self,
        points: i64,
        source: LotSource,
        pending: bool,
        order_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Credit {
        Credit {
            points,
            source,
            pending,
            counts_as_earned: false,
            order_id,
            available_at: now + self.program.pending_window,
            expires_at: self.program.expiry.expires_at(now),
        }
    }
}
