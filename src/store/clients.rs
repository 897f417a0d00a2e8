//! API clients and the audit log.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};

use super::entities::{api_client, audit_event};
pub use super::entities::{api_client::Model as ClientRow, audit_event::Model as AuditRow};
use crate::error::AppError;

pub async fn insert<C: ConnectionTrait>(db: &C, row: ClientRow) -> Result<(), AppError> {
    api_client::Entity::insert(api_client::ActiveModel::from(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn list<C: ConnectionTrait>(db: &C) -> Result<Vec<ClientRow>, AppError> {
    Ok(api_client::Entity::find()
        .order_by_asc(api_client::Column::CreatedAt)
        .all(db)
        .await?)
}

/// Revokes a client; false when no active client has this id.
pub async fn revoke<C: ConnectionTrait>(
    db: &C,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let result = api_client::Entity::update_many()
        .col_expr(api_client::Column::RevokedAt, Expr::value(Some(now)))
        .filter(api_client::Column::Id.eq(id))
        .filter(api_client::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// The active client whose key hashes to `hash`.
pub async fn find_by_key_hash<C: ConnectionTrait>(
    db: &C,
    hash: &str,
) -> Result<Option<ClientRow>, AppError> {
    Ok(api_client::Entity::find()
        .filter(api_client::Column::KeyHash.eq(hash))
        .filter(api_client::Column::RevokedAt.is_null())
        .one(db)
        .await?)
}

/// One audit record to append.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub at: DateTime<Utc>,
    /// The programme the call acted in.
    pub program_id: String,
    pub client_id: String,
    pub client_name: String,
    pub role: String,
    pub method: String,
    pub target: String,
    pub outcome: String,
    pub request_id: String,
}

/// Appends an audit record. Records are never updated or deleted.
pub async fn audit<C: ConnectionTrait>(db: &C, e: NewAudit) -> Result<(), AppError> {
    audit_event::Entity::insert(audit_event::ActiveModel {
        id: NotSet,
        program_id: Set(e.program_id),
        at: Set(e.at),
        client_id: Set(e.client_id),
        client_name: Set(e.client_name),
        role: Set(e.role),
        method: Set(e.method),
        target: Set(e.target),
        outcome: Set(e.outcome),
        request_id: Set(e.request_id),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Audit records of `program`, newest first, before `before`.
pub async fn audit_page<C: ConnectionTrait>(
    db: &C,
    program: &str,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<AuditRow>, AppError> {
    let mut query = audit_event::Entity::find()
        .filter(audit_event::Column::ProgramId.eq(program))
        .order_by_desc(audit_event::Column::Id)
        .limit(limit);
    if let Some(before) = before {
        query = query.filter(audit_event::Column::Id.lt(before));
    }
    Ok(query.all(db).await?)
}
