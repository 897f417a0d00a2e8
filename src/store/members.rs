//! Member rows: profile, consents and the stored balance.
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
    sea_query::{Expr, ExprTrait},
};

pub use super::entities::member::Model as MemberRow;
use super::entities::member::{ActiveModel, Column, Entity};
use crate::{domain::MemberKey, error::AppError};

fn filter(key: &MemberKey) -> sea_orm::sea_query::SimpleExpr {
    match key {
        MemberKey::Id(id) => Column::Id.eq(id.as_str()),
        MemberKey::Card(card) => Column::CardNumber.eq(card.as_str()),
    }
}

/// A unique violation on `members` can only be the card number.
fn card_conflict(err: DbErr) -> AppError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => AppError::CardNumberTaken,
        _ => err.into(),
    }
}

pub async fn insert<C: ConnectionTrait>(db: &C, row: MemberRow) -> Result<(), AppError> {
    let active: ActiveModel = row.into();
    Entity::insert(active)
        .exec_without_returning(db)
        .await
        .map_err(card_conflict)?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(db: &C, key: &MemberKey) -> Result<MemberRow, AppError> {
    Entity::find()
        .filter(filter(key))
        .one(db)
        .await?
        .ok_or(AppError::MemberNotFound)
}

/// Writes every profile column of `row` (not the balance columns).
pub async fn update_profile<C: ConnectionTrait>(db: &C, row: MemberRow) -> Result<(), AppError> {
    Entity::update_many()
        .col_expr(Column::CardNumber, Expr::value(row.card_number))
        .col_expr(Column::Name, Expr::value(row.name))
        .col_expr(Column::Email, Expr::value(row.email))
        .col_expr(Column::Phone, Expr::value(row.phone))
        .col_expr(Column::BirthYear, Expr::value(row.birth_year))
        .col_expr(Column::BirthMonth, Expr::value(row.birth_month))
        .col_expr(Column::BirthDay, Expr::value(row.birth_day))
        .col_expr(
            Column::ConsentEmailMarketing,
            Expr::value(row.consent_email_marketing),
        )
        .col_expr(
            Column::ConsentSmsMarketing,
            Expr::value(row.consent_sms_marketing),
        )
        .col_expr(Column::ConsentProfiling, Expr::value(row.consent_profiling))
        .col_expr(Column::UpdatedAt, Expr::value(row.updated_at))
        .filter(Column::Id.eq(row.id))
        .exec(db)
        .await
        .map_err(card_conflict)?;
    Ok(())
}

/// Members in id order (UUIDv7: enrolment order) after `after`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<MemberRow>, AppError> {
    let mut query = Entity::find().order_by_asc(Column::Id).limit(limit);
    if let Some(after) = after {
        query = query.filter(Column::Id.gt(after));
    }
    Ok(query.all(db).await?)
}

/// Adds earned points to the member's balance in one statement, so concurrent
/// accruals cannot lose an update; returns the row after the change.
pub async fn credit<C: ConnectionTrait>(
    db: &C,
    key: &MemberKey,
    points: i64,
) -> Result<MemberRow, AppError> {
    let rows = Entity::update_many()
        .col_expr(
            Column::PointsAvailable,
            Expr::col(Column::PointsAvailable).add(points),
        )
        .col_expr(
            Column::LifetimeEarned,
            Expr::col(Column::LifetimeEarned).add(points),
        )
        .filter(filter(key))
        .exec_with_returning(db)
        .await?;
    rows.into_iter().next().ok_or(AppError::MemberNotFound)
}
