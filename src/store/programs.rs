//! Programmes: the unit of isolation. Every other table's programme-scoped rows name one.
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbErr, EntityTrait, QueryOrder, SqlErr};

pub use super::entities::program::Model as ProgramRow;
use super::entities::program::{ActiveModel, Column, Entity};
use crate::error::AppError;

/// Creates a programme with its offer catalogue; ALREADY_EXISTS when the id is taken.
pub async fn insert<C: ConnectionTrait>(db: &C, row: ProgramRow) -> Result<(), AppError> {
    let program = row.id.clone();
    Entity::insert(ActiveModel::from(row))
        .exec_without_returning(db)
        .await
        .map_err(|err: DbErr| match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => AppError::ProgramExists,
            _ => err.into(),
        })?;
    db.execute_raw(super::statement(
        db,
        "INSERT INTO offer_catalogs (program_id, version) VALUES ($1, 0)",
        [program.into()],
    ))
    .await?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(db: &C, id: &str) -> Result<Option<ProgramRow>, AppError> {
    Ok(Entity::find_by_id(id).one(db).await?)
}

/// Every programme, by id (a deployment has few).
pub async fn list<C: ConnectionTrait>(db: &C) -> Result<Vec<ProgramRow>, AppError> {
    Ok(Entity::find().order_by_asc(Column::Id).all(db).await?)
}

/// A programme row for `id` created `now`.
pub fn new_row(id: &str, name: &str, settings: String, now: DateTime<Utc>) -> ProgramRow {
    ProgramRow {
        id: id.to_owned(),
        name: name.to_owned(),
        settings: Some(settings),
        created_at: now,
    }
}
