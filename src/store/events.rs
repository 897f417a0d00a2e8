//! The event outbox. Events are inserted by the transaction that makes the change, with
//! the member's next sequence number; the relay later gives committed events a global
//! cursor, one relay at a time and in the order it finds them, so cursors are gap-free
//! and a reader never sees cursor n+1 before n.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

pub use super::entities::event::Model as EventRow;
use super::entities::event::{ActiveModel, Column, Entity};
use crate::error::AppError;

/// An event to write for one member.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: &'static str,
    pub transaction_id: Option<String>,
    /// The detail as JSON.
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// Writes `events` for `member_id` with the member's next sequence numbers. The member's
/// row is updated (so locked) by the same statement on PostgreSQL.
#[tracing::instrument(name = "db.events.emit", skip_all)]
pub async fn emit<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    events: Vec<NewEvent>,
) -> Result<(), AppError> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len() as i64;
    let backend = db.get_database_backend();
    if backend == DbBackend::Postgres {
        // One round trip: bump the sequence and insert, numbering rows from it.
        let mut values: Vec<sea_orm::Value> = vec![n.into(), member_id.into()];
        let mut rows = Vec::with_capacity(events.len());
        for (i, e) in events.into_iter().enumerate() {
            let base = values.len();
            rows.push(format!(
                "(CAST(${} AS BIGINT), ${}, CAST(${} AS TEXT), ${}, CAST(${} AS TIMESTAMPTZ))",
                base + 1,
                base + 2,
                base + 3,
                base + 4,
                base + 5
            ));
            values.push((i as i64 + 1).into());
            values.push(e.event_type.into());
            values.push(e.transaction_id.into());
            values.push(e.payload.into());
            values.push(e.created_at.into());
        }
        let stmt = format!(
            "WITH s AS (UPDATE members SET event_seq = event_seq + $1 WHERE id = $2 \
             RETURNING event_seq, program_id) \
             INSERT INTO events (program_id, member_id, member_seq, event_type, transaction_id, payload, created_at) \
             SELECT s.program_id, $2, s.event_seq - $1 + v.ord, v.t, v.tx, v.p, v.c FROM s, (VALUES {}) AS v(ord, t, tx, p, c)",
            rows.join(", ")
        );
        let done = db
            .execute_raw(Statement::from_sql_and_values(backend, stmt, values))
            .await?;
        if done.rows_affected() != n as u64 {
            return Err(AppError::Internal(anyhow::anyhow!(
                "events for unknown member {member_id}"
            )));
        }
        return Ok(());
    }
    #[derive(FromQueryResult)]
    struct Seq {
        event_seq: i64,
        program_id: String,
    }
    let seq = Seq::find_by_statement(Statement::from_sql_and_values(
        backend,
        "UPDATE members SET event_seq = event_seq + ? WHERE id = ? RETURNING event_seq, program_id",
        [n.into(), member_id.into()],
    ))
    .one(db)
    .await?
    .ok_or_else(|| AppError::Internal(anyhow::anyhow!("events for unknown member {member_id}")))?;
    let last = seq.event_seq;
    let rows = events.into_iter().enumerate().map(|(i, e)| ActiveModel {
        id: NotSet,
        program_id: Set(seq.program_id.clone()),
        cursor: Set(None),
        member_id: Set(Some(member_id.to_owned())),
        member_seq: Set(last - n + 1 + i as i64),
        event_type: Set(e.event_type.to_owned()),
        transaction_id: Set(e.transaction_id),
        payload: Set(e.payload),
        created_at: Set(e.created_at),
    });
    Entity::insert_many(rows).exec_without_returning(db).await?;
    Ok(())
}

/// Whether any committed event still waits for a cursor (cheap: a partial index).
/// In id order, so that PostgreSQL walks that index and stops at the first live entry;
/// left unordered it may pick a bitmap scan of the cursor index (the prepared
/// statement's generic plan does), which visits every dead row version since the last
/// vacuum on every poll. Measured on the bench database after 85,000 accruals without
/// autovacuum: 17.5 ms per poll unordered, 0.14 ms ordered.
pub async fn any_unassigned<C: ConnectionTrait>(db: &C) -> Result<bool, AppError> {
    Ok(Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::Cursor.is_null())
        .order_by_asc(Column::Id)
        .into_tuple::<i64>()
        .one(db)
        .await?
        .is_some())
}

/// How many committed events wait for a cursor, and when the oldest was written.
pub async fn unrelayed<C: ConnectionTrait>(
    db: &C,
) -> Result<(i64, Option<DateTime<Utc>>), AppError> {
    let (n, oldest) = Entity::find()
        .select_only()
        .column_as(Column::Id.count(), "n")
        .column_as(Column::CreatedAt.min(), "oldest")
        .filter(Column::Cursor.is_null())
        .into_tuple::<(i64, Option<DateTime<Utc>>)>()
        .one(db)
        .await?
        .unwrap_or((0, None));
    Ok((n, oldest))
}

#[derive(FromQueryResult)]
struct RelayState {
    last_cursor: i64,
    pruned_through: i64,
}

/// Gives up to `batch` committed events their cursors, in id order after the last
/// cursor. Run inside a write transaction: the relay row lock makes relays take turns.
#[tracing::instrument(name = "db.events.relay", skip_all)]
pub async fn assign_cursors<C: ConnectionTrait>(db: &C, batch: i64) -> Result<u64, AppError> {
    let backend = db.get_database_backend();
    let lock = match backend {
        DbBackend::Postgres => {
            "SELECT last_cursor, pruned_through FROM event_relay WHERE id = 1 FOR UPDATE"
        }
        _ => "SELECT last_cursor, pruned_through FROM event_relay WHERE id = 1",
    };
    let state = RelayState::find_by_statement(Statement::from_string(backend, lock))
        .one(db)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("event_relay row missing")))?;
    let done = db
        .execute_raw(super::statement(
            db,
            "UPDATE events SET cursor = v.c FROM \
             (SELECT id, $1 + ROW_NUMBER() OVER (ORDER BY id) AS c FROM events \
              WHERE cursor IS NULL ORDER BY id LIMIT $2) AS v \
             WHERE events.id = v.id",
            [state.last_cursor.into(), batch.into()],
        ))
        .await?;
    let n = done.rows_affected();
    if n > 0 {
        db.execute_raw(super::statement(
            db,
            "UPDATE event_relay SET last_cursor = $1 WHERE id = 1",
            [(state.last_cursor + n as i64).into()],
        ))
        .await?;
    }
    Ok(n)
}

/// The newest cursor given out and the newest pruned.
pub async fn relay_state<C: ConnectionTrait>(db: &C) -> Result<(i64, i64), AppError> {
    let backend = db.get_database_backend();
    let state = RelayState::find_by_statement(Statement::from_string(
        backend,
        "SELECT last_cursor, pruned_through FROM event_relay WHERE id = 1",
    ))
    .one(db)
    .await?
    .ok_or_else(|| AppError::Internal(anyhow::anyhow!("event_relay row missing")))?;
    Ok((state.last_cursor, state.pruned_through))
}

/// Events after `after`, in cursor order: of one programme (`None`: of all),
/// optionally of some types and one member.
pub async fn after<C: ConnectionTrait>(
    db: &C,
    program: Option<&str>,
    after: i64,
    types: &[&str],
    member_id: Option<&str>,
    limit: u64,
) -> Result<Vec<EventRow>, AppError> {
    let mut query = Entity::find().filter(Column::Cursor.gt(after));
    if let Some(program) = program {
        query = query.filter(Column::ProgramId.eq(program));
    }
    if !types.is_empty() {
        query = query.filter(Column::EventType.is_in(types.iter().copied()));
    }
    if let Some(member_id) = member_id {
        query = query.filter(Column::MemberId.eq(member_id));
    }
    Ok(query
        .order_by_asc(Column::Cursor)
        .limit(limit)
        .all(db)
        .await?)
}

/// Deletes relayed events created before `before`, oldest first, up to `batch` of them;
/// records the newest pruned cursor. Run inside a write transaction.
pub async fn prune<C: ConnectionTrait>(
    db: &C,
    before: DateTime<Utc>,
    batch: u64,
) -> Result<u64, AppError> {
    let due: Vec<i64> = Entity::find()
        .select_only()
        .column(Column::Cursor)
        .filter(Column::Cursor.is_not_null())
        .filter(Column::CreatedAt.lt(before))
        .order_by_asc(Column::Cursor)
        .limit(batch)
        .into_tuple::<i64>()
        .all(db)
        .await?;
    let Some(&through) = due.last() else {
        return Ok(0);
    };
    let done = Entity::delete_many()
        .filter(Column::Cursor.lte(through))
        .exec(db)
        .await?;
    db.execute_raw(super::statement(
        db,
        "UPDATE event_relay SET pruned_through = $1 WHERE id = 1 AND pruned_through < $1",
        [through.into()],
    ))
    .await?;
    Ok(done.rows_affected)
}
