//! The append-only ledger and the orders that earned points. Entries are only ever
//! inserted; nothing here updates or deletes one.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, SqlErr, Statement,
};

pub use super::entities::{ledger_entry::Model as EntryRow, order::Model as OrderRow};
use super::entities::{
    ledger_entry::{self, Column as EntryColumn, Entity as Entries},
    order,
};
use super::events::{self, NewEvent};
use crate::{
    domain::{EntryKind, events::EventDetail},
    error::AppError,
};

/// A basket line as its order keeps it: one object of the order's `lines` JSON array.
/// Lines are written with their order and read only with it, so they are a column of
/// the order rather than rows of their own (a row, a key and a foreign-key check per
/// line on every accrual).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderLine {
    pub line_id: String,
    pub sku: String,
    pub category: Option<String>,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub discount_minor: i64,
    pub eligible_minor: i64,
    pub points: i64,
    pub returned_quantity: i64,
    pub points_reversed: i64,
    /// The ids of the rules that earned the line's points, comma-separated.
    pub rule_ids: String,
}

/// Lines as the `lines` column holds them.
pub fn lines_json(lines: &[OrderLine]) -> Result<String, AppError> {
    serde_json::to_string(lines).map_err(|e| AppError::Internal(e.into()))
}

/// The lines of `order`, as stored.
pub fn lines_of(order: &OrderRow) -> Result<Vec<OrderLine>, AppError> {
    serde_json::from_str(&order.lines).map_err(|e| AppError::Internal(e.into()))
}

/// A ledger entry to write.
pub use crate::domain::Entry as NewEntry;

pub(super) fn active(entry: NewEntry) -> ledger_entry::ActiveModel {
    ledger_entry::ActiveModel {
        id: NotSet,
        member_id: Set(entry.member_id),
        transaction_id: Set(entry.transaction_id),
        kind: Set(entry.kind.as_str().to_owned()),
        points: Set(entry.points),
        balance_after: Set(entry.balance_after),
        order_id: Set(entry.order_id),
        store_id: Set(entry.store_id),
        created_at: Set(entry.created_at),
        pending_delta: Set(entry.pending_delta),
        held_delta: Set(entry.held_delta),
        reason_code: Set(entry.reason_code.map(str::to_owned)),
        note: Set(entry.note),
        hold_id: Set(entry.hold_id),
        return_id: Set(entry.return_id),
    }
}

/// The stream event that reports an entry.
pub(super) fn event_of(entry: &NewEntry) -> NewEvent {
    let detail = EventDetail::BalanceChange {
        ledger_kind: entry.kind.as_str().to_owned(),
        points: entry.points,
        pending_delta: entry.pending_delta,
        held_delta: entry.held_delta,
        balance_after: entry.balance_after,
        reason_code: entry.reason_code.map(str::to_owned),
        order_id: entry.order_id.clone(),
        store_id: entry.store_id.clone(),
        hold_id: entry.hold_id.clone(),
        return_id: entry.return_id.clone(),
    };
    NewEvent {
        event_type: entry.kind.event_type(),
        transaction_id: Some(entry.transaction_id.clone()),
        payload: serde_json::to_string(&detail).unwrap_or_default(),
        created_at: entry.created_at,
    }
}

/// Appends an entry and, in the same transaction, the event that reports it.
#[tracing::instrument(name = "db.ledger.append", skip_all)]
pub async fn append<C: ConnectionTrait>(db: &C, entry: NewEntry) -> Result<(), AppError> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        return append_in_one_statement(db, entry).await;
    }
    let event = event_of(&entry);
    let member_id = entry.member_id.clone();
    Entries::insert(active(entry))
        .exec_without_returning(db)
        .await?;
    events::emit(db, &member_id, vec![event]).await
}

/// PostgreSQL: the entry, the member's next event sequence and the event in one
/// statement (one round trip instead of two on every balance change).
async fn append_in_one_statement<C: ConnectionTrait>(
    db: &C,
    entry: NewEntry,
) -> Result<(), AppError> {
    let event = event_of(&entry);
    let sql = "WITH e AS (INSERT INTO ledger_entries (member_id, transaction_id, kind, points, \
               balance_after, order_id, store_id, created_at, pending_delta, held_delta, \
               reason_code, note, hold_id, return_id) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)), \
               s AS (UPDATE members SET event_seq = event_seq + 1 WHERE id = $1 \
               RETURNING event_seq, program_id) \
               INSERT INTO events (program_id, member_id, member_seq, event_type, transaction_id, payload, created_at) \
               SELECT s.program_id, $1, s.event_seq, $15, $2, $16, $8 FROM s";
    let values: Vec<sea_orm::Value> = vec![
        entry.member_id.clone().into(),
        entry.transaction_id.into(),
        entry.kind.as_str().into(),
        entry.points.into(),
        entry.balance_after.into(),
        entry.order_id.into(),
        entry.store_id.into(),
        entry.created_at.into(),
        entry.pending_delta.into(),
        entry.held_delta.into(),
        entry.reason_code.map(str::to_owned).into(),
        entry.note.into(),
        entry.hold_id.into(),
        entry.return_id.into(),
        event.event_type.into(),
        event.payload.into(),
    ];
    let done = db
        .execute_raw(Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            sql,
            values,
        ))
        .await?;
    if done.rows_affected() != 1 {
        return Err(AppError::Internal(anyhow::anyhow!(
            "ledger entry for unknown member {}",
            entry.member_id
        )));
    }
    Ok(())
}

/// Appends several entries in one statement.
#[tracing::instrument(name = "db.ledger.append_all", skip_all)]
pub async fn append_all<C: ConnectionTrait>(
    db: &C,
    entries: Vec<NewEntry>,
) -> Result<(), AppError> {
    if entries.is_empty() {
        return Ok(());
    }
    // Events per member, in entry order.
    let mut by_member: Vec<(String, Vec<NewEvent>)> = Vec::new();
    for entry in &entries {
        match by_member.iter_mut().find(|(m, _)| *m == entry.member_id) {
            Some((_, list)) => list.push(event_of(entry)),
            None => by_member.push((entry.member_id.clone(), vec![event_of(entry)])),
        }
    }
    insert_entries(db, entries).await?;
    for (member_id, list) in by_member {
        events::emit(db, &member_id, list).await?;
    }
    Ok(())
}

/// Entries without their events (the caller writes those, with their sequences).
pub(super) async fn insert_entries<C: ConnectionTrait>(
    db: &C,
    entries: Vec<NewEntry>,
) -> Result<(), AppError> {
    for chunk in entries.chunks(super::ROWS_PER_INSERT) {
        Entries::insert_many(chunk.iter().cloned().map(active))
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Records an order, its lines with it.
#[tracing::instrument(name = "db.orders.insert", skip_all)]
pub async fn insert_order<C: ConnectionTrait>(db: &C, order: OrderRow) -> Result<(), AppError> {
    let active: order::ActiveModel = order.into();
    order::Entity::insert(active)
        .exec_without_returning(db)
        .await
        .map_err(|err: DbErr| match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => AppError::OrderAlreadyAccrued,
            _ => err.into(),
        })?;
    Ok(())
}

pub use super::entities::return_record::Model as ReturnRow;

pub async fn find_return<C: ConnectionTrait>(
    db: &C,
    program: &str,
    order_id: &str,
    return_id: &str,
) -> Result<Option<ReturnRow>, AppError> {
    Ok(super::entities::return_record::Entity::find_by_id((
        program.to_owned(),
        order_id.to_owned(),
        return_id.to_owned(),
    ))
    .one(db)
    .await?)
}

pub async fn insert_return<C: ConnectionTrait>(db: &C, row: ReturnRow) -> Result<(), AppError> {
    super::entities::return_record::Entity::insert(
        super::entities::return_record::ActiveModel::from(row),
    )
    .exec_without_returning(db)
    .await
    .map_err(|err: DbErr| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => AppError::ReturnAlreadyRecorded,
        _ => err.into(),
    })?;
    Ok(())
}

pub async fn find_order<C: ConnectionTrait>(
    db: &C,
    program: &str,
    order_id: &str,
) -> Result<Option<OrderRow>, AppError> {
    Ok(
        order::Entity::find_by_id((program.to_owned(), order_id.to_owned()))
            .one(db)
            .await?,
    )
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

/// A member's id and a page of their entries (newest first, older than `before`), by
/// card or id: one statement on PostgreSQL.
#[tracing::instrument(name = "db.ledger.member_page", skip_all)]
pub async fn member_page<C: ConnectionTrait>(
    db: &C,
    program: &str,
    key: &crate::domain::MemberKey,
    before: Option<i64>,
    limit: u64,
) -> Result<(String, Vec<EntryRow>), AppError> {
    if db.get_database_backend() != sea_orm::DbBackend::Postgres {
        let member = super::members::find(db, program, key).await?;
        let rows = list(db, &member.id, before, limit).await?;
        return Ok((member.id, rows));
    }
    let (by, value) = super::members::key_column(key);
    // A member without entries still gives one row (the LEFT JOIN), so that an unknown
    // member and an empty statement stay apart. No `before` is the largest id.
    let sql = format!(
        "SELECT m.id AS statement_member_id, e.* FROM members m LEFT JOIN LATERAL \
         (SELECT * FROM ledger_entries e WHERE e.member_id = m.id \
         AND e.id < COALESCE($2, 9223372036854775807) ORDER BY e.id DESC LIMIT $3) e ON TRUE \
         WHERE m.{by} = $1 AND m.program_id = $4"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = db
        .query_all_raw(super::statement(
            db,
            &sql,
            [value.into(), before.into(), limit.into(), program.into()],
        ))
        .await?;
    let member_id: String = rows
        .first()
        .ok_or(AppError::MemberNotFound)?
        .try_get("", "statement_member_id")?;
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<i64>>("", "id")?.is_some() {
            entries.push(EntryRow::from_query_result(row, "")?);
        }
    }
    Ok((member_id, entries))
}

#[derive(Debug, FromQueryResult)]
struct Sum {
    total: Option<i64>,
}

async fn sum<C: ConnectionTrait>(
    db: &C,
    pg_sql: &str,
    values: Vec<sea_orm::Value>,
) -> Result<i64, AppError> {
    let row = Sum::find_by_statement(super::statement(db, pg_sql, values))
        .one(db)
        .await?;
    Ok(row.and_then(|r| r.total).unwrap_or(0))
}

/// Points the member spent on an order (redeemed directly or captured from a hold),
/// from the ledger. Order ids are unique per programme only, so the member narrows them.
pub async fn order_spent<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    order_id: &str,
) -> Result<i64, AppError> {
    sum(
        db,
        "SELECT CAST(-SUM(points + held_delta) AS BIGINT) AS total FROM ledger_entries \
         WHERE order_id = $1 AND kind = $2 AND member_id = $3",
        vec![
            order_id.into(),
            EntryKind::Redemption.as_str().into(),
            member_id.into(),
        ],
    )
    .await
}

/// Spent points already given back to the member's order by earlier returns.
pub async fn order_refunded<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    order_id: &str,
) -> Result<i64, AppError> {
    sum(
        db,
        "SELECT CAST(SUM(points) AS BIGINT) AS total FROM ledger_entries \
         WHERE order_id = $1 AND kind = $2 AND member_id = $3",
        vec![
            order_id.into(),
            EntryKind::ReturnRefund.as_str().into(),
            member_id.into(),
        ],
    )
    .await
}

/// Spent points earlier returns of the order could not charge and no refund has paid
/// back yet.
pub async fn order_outstanding_shortfall<C: ConnectionTrait>(
    db: &C,
    program: &str,
    order_id: &str,
) -> Result<i64, AppError> {
    sum(
        db,
        "SELECT CAST(SUM(shortfall - shortfall_recovered) AS BIGINT) AS total FROM returns \
         WHERE program_id = $2 AND order_id = $1",
        vec![order_id.into(), program.into()],
    )
    .await
}

/// GOODWILL points granted to a member since `since`.
pub async fn goodwill_since<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    since: DateTime<Utc>,
) -> Result<i64, AppError> {
    sum(
        db,
        "SELECT CAST(SUM(points) AS BIGINT) AS total FROM ledger_entries WHERE member_id = $1 \
         AND kind = $3 AND reason_code = 'GOODWILL' AND created_at > $2",
        vec![
            member_id.into(),
            since.into(),
            EntryKind::Adjustment.as_str().into(),
        ],
    )
    .await
}

/// One way in which stored balances disagree with the ledger, the lots or the holds.
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
pub struct BalanceMismatch {
    pub member_id: String,
    pub check: String,
    pub stored: i64,
    pub derived: i64,
}

/// Every disagreement between what `members` stores and what it is derived from; empty
/// when the books agree:
/// - available, pending and held equal the sums of the ledger's deltas;
/// - pending equals what pending lots hold; available equals what available lots hold
///   (when a return policy let it go negative, the lots are empty);
/// - held equals the points of active holds.
pub async fn balance_mismatches<C: ConnectionTrait>(
    db: &C,
) -> Result<Vec<BalanceMismatch>, AppError> {
    let sql = "
        WITH l AS (
            SELECT member_id, SUM(points) AS a, SUM(pending_delta) AS p, SUM(held_delta) AS h
            FROM ledger_entries GROUP BY member_id),
        lots AS (
            SELECT member_id,
                   SUM(CASE WHEN state = 'AVAILABLE' THEN points_remaining ELSE 0 END) AS a,
                   SUM(CASE WHEN state = 'PENDING' THEN points_remaining ELSE 0 END) AS p
            FROM point_lots GROUP BY member_id),
        h AS (
            SELECT member_id, SUM(points) AS h FROM holds WHERE status = 'ACTIVE' GROUP BY member_id),
        b AS (
            SELECT m.id, m.points_available AS sa, m.points_pending AS sp, m.points_held AS sh,
                   CAST(COALESCE(l.a, 0) AS BIGINT) AS la, CAST(COALESCE(l.p, 0) AS BIGINT) AS lp,
                   CAST(COALESCE(l.h, 0) AS BIGINT) AS lh,
                   CAST(COALESCE(lots.a, 0) AS BIGINT) AS lota, CAST(COALESCE(lots.p, 0) AS BIGINT) AS lotp,
                   CAST(COALESCE(h.h, 0) AS BIGINT) AS hh
            FROM members m
            LEFT JOIN l ON l.member_id = m.id
            LEFT JOIN lots ON lots.member_id = m.id
            LEFT JOIN h ON h.member_id = m.id)
        SELECT id AS member_id, 'available = ledger' AS \"check\", sa AS stored, la AS derived FROM b WHERE sa <> la
        UNION ALL SELECT id, 'pending = ledger', sp, lp FROM b WHERE sp <> lp
        UNION ALL SELECT id, 'held = ledger', sh, lh FROM b WHERE sh <> lh
        UNION ALL SELECT id, 'pending = pending lots', sp, lotp FROM b WHERE sp <> lotp
        UNION ALL SELECT id, 'available = available lots', sa, lota FROM b WHERE (CASE WHEN sa < 0 THEN 0 ELSE sa END) <> lota
        UNION ALL SELECT id, 'held = active holds', sh, hh FROM b WHERE sh <> hh";
    let rows =
        BalanceMismatch::find_by_statement(Statement::from_string(db.get_database_backend(), sql))
            .all(db)
            .await?;
    Ok(rows)
}
