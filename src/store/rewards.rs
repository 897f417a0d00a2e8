//! The rewards catalogue and its redemptions.
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
    sea_query::{Expr, ExprTrait},
};

pub use super::entities::{reward::Model as RewardRow, reward_redemption::Model as RedemptionRow};
use super::entities::{
    reward::{ActiveModel, Column, Entity as Rewards},
    reward_redemption,
};
use crate::error::AppError;

pub async fn insert<C: ConnectionTrait>(db: &C, row: RewardRow) -> Result<(), AppError> {
    Rewards::insert(ActiveModel::from(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(
    db: &C,
    program: &str,
    id: &str,
) -> Result<RewardRow, AppError> {
    Rewards::find_by_id(id)
        .filter(Column::ProgramId.eq(program))
        .one(db)
        .await?
        .ok_or(AppError::RewardNotFound)
}

/// Writes every column of `row`.
pub async fn update<C: ConnectionTrait>(db: &C, row: RewardRow) -> Result<(), AppError> {
    let active: ActiveModel = row.into();
    Rewards::update(sea_orm::ActiveModelTrait::reset_all(active))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn list<C: ConnectionTrait>(
    db: &C,
    program: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<RewardRow>, AppError> {
    let mut query = Rewards::find()
        .filter(Column::ProgramId.eq(program))
        .order_by_asc(Column::Id)
        .limit(limit);
    if let Some(after) = after {
        query = query.filter(Column::Id.gt(after));
    }
    Ok(query.all(db).await?)
}

/// Takes one unit of a stocked reward; false when none is left. Checked under the row
/// lock, so concurrent redemptions can never oversell.
pub async fn take_one<C: ConnectionTrait>(db: &C, id: &str) -> Result<bool, AppError> {
    let result = Rewards::update_many()
        .col_expr(Column::Stock, Expr::col(Column::Stock).sub(1))
        .filter(Column::Id.eq(id))
        .filter(Column::Stock.gte(1))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

pub async fn insert_redemption<C: ConnectionTrait>(
    db: &C,
    row: RedemptionRow,
) -> Result<(), AppError> {
    reward_redemption::Entity::insert(reward_redemption::ActiveModel::from(row))
        .exec_without_returning(db)
        .await
        .map_err(|err: DbErr| match err.sql_err() {
            // A code collision (2^80 codes): the caller's retry draws a new one.
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                AppError::Internal(anyhow::anyhow!("redemption code collision"))
            }
            _ => err.into(),
        })?;
    Ok(())
}

pub async fn redemptions_for_member<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
) -> Result<Vec<RedemptionRow>, AppError> {
    Ok(reward_redemption::Entity::find()
        .filter(reward_redemption::Column::MemberId.eq(member_id))
        .order_by_asc(reward_redemption::Column::CreatedAt)
        .all(db)
        .await?)
}
