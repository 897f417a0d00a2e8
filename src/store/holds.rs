//! Holds: points reserved for an order until captured, voided or expired.
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

pub use super::entities::hold::Model as HoldRow;
use super::entities::hold::{ActiveModel, Column, Entity as Holds};
use crate::error::AppError;

pub const ACTIVE: &str = "ACTIVE";
pub const CAPTURED: &str = "CAPTURED";
pub const VOIDED: &str = "VOIDED";
pub const EXPIRED: &str = "EXPIRED";

pub async fn insert<C: ConnectionTrait>(db: &C, hold: HoldRow) -> Result<(), AppError> {
    Holds::insert(ActiveModel::from(hold))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(
    db: &C,
    program: &str,
    hold_id: &str,
) -> Result<Option<HoldRow>, AppError> {
    Ok(Holds::find_by_id(hold_id)
        .filter(Column::ProgramId.eq(program))
        .one(db)
        .await?)
}

/// Settles an active hold exactly once. Capture and void succeed only before the hold's
/// expiry, expiry only after it; `now` is the database's clock. Returns whether this call
/// settled it (false: someone else did, or the clock says otherwise).
pub async fn settle<C: ConnectionTrait>(
    db: &C,
    hold_id: &str,
    status: &'static str,
    captured: i64,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let mut update = Holds::update_many()
        .col_expr(Column::Status, Expr::value(status))
        .col_expr(Column::CapturedPoints, Expr::value(captured))
        .col_expr(Column::SettledAt, Expr::value(Some(now)))
        .filter(Column::Id.eq(hold_id))
        .filter(Column::Status.eq(ACTIVE));
    update = if status == EXPIRED {
        update.filter(Column::ExpiresAt.lte(now))
    } else {
        update.filter(Column::ExpiresAt.gt(now))
    };
    Ok(update.exec(db).await?.rows_affected == 1)
}

/// Active holds of `program` past their expiry: `(hold id, member id)`.
pub async fn due_for_expiry<C: ConnectionTrait>(
    db: &C,
    program: &str,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<(String, String)>, AppError> {
    Ok(Holds::find()
        .select_only()
        .column(Column::Id)
        .column(Column::MemberId)
        .filter(Column::ProgramId.eq(program))
        .filter(Column::Status.eq(ACTIVE))
        .filter(Column::ExpiresAt.lte(now))
        .order_by_asc(Column::ExpiresAt)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

pub async fn for_member<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
) -> Result<Vec<HoldRow>, AppError> {
    Ok(Holds::find()
        .filter(Column::MemberId.eq(member_id))
        .order_by_asc(Column::CreatedAt)
        .all(db)
        .await?)
}

/// Holds still active (a gauge for operators).
pub async fn count_active<C: ConnectionTrait>(db: &C) -> Result<i64, AppError> {
    use sea_orm::PaginatorTrait;
    Ok(Holds::find()
        .filter(Column::Status.eq(ACTIVE))
        .count(db)
        .await? as i64)
}
