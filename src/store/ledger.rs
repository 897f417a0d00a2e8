//! The append-only ledger and the orders that earned points. Entries are only ever
//! inserted; nothing here updates or deletes one.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, SqlErr, Statement,
};

pub use super::entities::{
    ledger_entry::Model as EntryRow, order::Model as OrderRow, order_line::Model as OrderLineRow,
};
use super::entities::{
    ledger_entry::{self, Column as EntryColumn, Entity as Entries},
    order, order_line,
};
use crate::error::AppError;

/// A ledger entry to write.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub member_id: String,
    pub transaction_id: String,
    pub kind: &'static str,
    pub points: i64,
    pub balance_after: i64,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn append<C: ConnectionTrait>(db: &C, entry: NewEntry) -> Result<(), AppError> {
    Entries::insert(ledger_entry::ActiveModel {
        id: NotSet,
        member_id: Set(entry.member_id),
        transaction_id: Set(entry.transaction_id),
        kind: Set(entry.kind.to_owned()),
        points: Set(entry.points),
        balance_after: Set(entry.balance_after),
        order_id: Set(entry.order_id),
        store_id: Set(entry.store_id),
        created_at: Set(entry.created_at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Records an order and all its lines (one statement for the lines).
pub async fn insert_order<C: ConnectionTrait>(
    db: &C,
    order: OrderRow,
    lines: Vec<OrderLineRow>,
) -> Result<(), AppError> {
    let active: order::ActiveModel = order.into();
    order::Entity::insert(active)
        .exec_without_returning(db)
        .await
        .map_err(|err: DbErr| match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => AppError::OrderAlreadyAccrued,
            _ => err.into(),
        })?;
    if !lines.is_empty() {
        order_line::Entity::insert_many(lines.into_iter().map(order_line::ActiveModel::from))
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// One member's entries, newest first, older than `before`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    before: Option<i64>,
    limit: u64,
) -> Result<Vec<EntryRow>, AppError> {
    let mut query = Entries::find()
        .filter(EntryColumn::MemberId.eq(member_id))
        .order_by_desc(EntryColumn::Id)
        .limit(limit);
    if let Some(before) = before {
        query = query.filter(EntryColumn::Id.lt(before));
    }
    Ok(query.all(db).await?)
}

/// A member whose stored balance disagrees with the ledger.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct BalanceMismatch {
    pub member_id: String,
    pub stored_available: i64,
    pub ledger_sum: i64,
}

/// Every member whose stored available balance is not the sum of their ledger entries.
/// Empty when the books agree.
pub async fn balance_mismatches<C: ConnectionTrait>(
    db: &C,
) -> Result<Vec<BalanceMismatch>, AppError> {
    let sql = "SELECT m.id AS member_id, m.points_available AS stored_available, \
               CAST(COALESCE(SUM(l.points), 0) AS BIGINT) AS ledger_sum \
               FROM members m LEFT JOIN ledger_entries l ON l.member_id = m.id \
               GROUP BY m.id, m.points_available \
               HAVING m.points_available <> CAST(COALESCE(SUM(l.points), 0) AS BIGINT)";
    let rows =
        BalanceMismatch::find_by_statement(Statement::from_string(db.get_database_backend(), sql))
            .all(db)
            .await?;
    Ok(rows)
}
