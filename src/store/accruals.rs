//! A batch of accruals read and written set-wise: whatever the batch size, a fixed
//! number of statements (the writes are one statement on PostgreSQL), so concurrent
//! checkouts share round trips, per-statement work and one commit. The service decides
//! what goes in a batch; this layer only reads and writes rows.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryResult, QueryTrait, Statement,
};
use serde_json::{Value as Json, json};

use super::{
    ROWS_PER_INSERT,
    entities::{event, idempotency_key, ledger_entry, order, point_lot},
    idempotency::IdempotencyKey,
    in_json_list, json_text,
    ledger::{self, NewEntry, OrderRow},
    lots::{self, NewLot, STATE_AVAILABLE, STATE_PENDING},
    members::{BalanceDelta, MemberRow},
    statement,
};
use crate::error::AppError;

/// The members of a batch that no other transaction holds, locked, and the current
/// ruleset version of each of their programmes. A batch never waits for a member's lock
/// (so it can neither deadlock nor hold up its other calls): on PostgreSQL a member
/// locked elsewhere is left out, and the caller runs that call alone. A batch may hold
/// calls of several programmes; a member named by id is locked whatever its programme,
/// and the caller matches each call with a member of its own programme.
pub struct Locked {
    pub members: Vec<MemberRow>,
    /// Programme id → its newest ruleset version.
    pub ruleset_versions: HashMap<String, Option<i64>>,
}

/// An earlier call's (fingerprint, response).
pub type Earlier = (Vec<u8>, Option<Vec<u8>>);

/// What the batch's keys and orders found: earlier calls by (client id, request id), and
/// the orders already accrued as (programme id, order id).
#[derive(Default)]
pub struct Found {
    pub earlier: HashMap<(String, String), Earlier>,
    pub orders: HashSet<(String, String)>,
}

/// What a batch reads before pricing: its members, locked, and the ruleset version
/// (member ids in `ids`, cards in `cards`), and the earlier calls with its keys and the
/// orders already accrued. One statement, so a batch makes four round trips in all
/// (BEGIN, this, the write, COMMIT).
#[tracing::instrument(name = "db.accruals.lock_and_look_up", skip_all, fields(n = keys.len()))]
pub async fn lock_and_look_up<C: ConnectionTrait>(
    db: &C,
    ids: &[&str],
    cards: &[(&str, &str)],
    method: &str,
    keys: &[(&str, &str)],
    orders: &[(&str, &str)],
) -> Result<(Locked, Found), AppError> {
    let backend = db.get_database_backend();
    let keys: Vec<Json> = keys.iter().map(|(c, r)| json!({"c": c, "r": r})).collect();
    let pairs = super::pairs_json;
    let values = [
        json_text(&ids)?.into(),
        json_text(&pairs(cards))?.into(),
        json_text(&keys)?.into(),
        method.into(),
        json_text(&pairs(orders))?.into(),
    ];
    // One row per locked member (or one row of NULL members when none is), each carrying
    // the lookups' hits as JSON (bytes as hex). One statement on SQLite too: each
    // statement is a hand-off to the connection's thread and back.
    let sql = match backend {
        DbBackend::Postgres => format!(
            "SELECT f.found, m.* FROM (SELECT CAST(COALESCE(json_agg(json_build_array(h.c, h.r, \
             encode(h.h, 'hex'), encode(h.resp, 'hex'))), '[]') AS TEXT) AS found \
             FROM ({lookups}) AS h) AS f LEFT JOIN LATERAL ({lock} FOR UPDATE OF m SKIP LOCKED) \
             AS m ON TRUE",
            lookups = lookups_sql(backend, 3, 4, 5),
            lock = lock_sql(backend, 1, 2),
        ),
        // The write transaction (BEGIN IMMEDIATE) already excludes other writers. SQLite's
        // hex(NULL) is '', so NULL stays NULL by hand.
        _ => format!(
            "SELECT f.found, m.* FROM (SELECT json_group_array(json_array(h.c, h.r, \
             CASE WHEN h.h IS NULL THEN NULL ELSE hex(h.h) END, \
             CASE WHEN h.resp IS NULL THEN NULL ELSE hex(h.resp) END)) AS found \
             FROM ({lookups}) AS h) AS f LEFT JOIN ({lock}) AS m ON 1",
            lookups = lookups_sql(backend, 3, 4, 5),
            lock = lock_sql(backend, 1, 2),
        ),
    };
    let rows = db.query_all_raw(statement(db, &sql, values)).await?;
    let hits: Vec<HexHit> = match rows.first() {
        Some(first) => {
            let text: String = first.try_get("", "found")?;
            serde_json::from_str(&text).map_err(|e| AppError::Internal(e.into()))?
        }
        None => Vec::new(),
    };
    Ok((locked_of(&rows)?, found(hits)?))
}

/// The locked members among rows of [`lock_sql`] (a row without a member, as the
/// statement returns when none is locked, is skipped) and the ruleset version
/// they carry: none without members, when nothing is priced.
fn locked_of(rows: &[QueryResult]) -> Result<Locked, AppError> {
    let mut locked = Locked {
        members: Vec::with_capacity(rows.len()),
        ruleset_versions: HashMap::new(),
    };
    for row in rows {
        if row.try_get::<Option<String>>("", "id")?.is_some() {
            let member = MemberRow::from_query_result(row, "")?;
            locked.ruleset_versions.insert(
                member.program_id.clone(),
                row.try_get("", "current_ruleset_version")?,
            );
            locked.members.push(member);
        }
    }
    Ok(locked)
}

/// The batch's members (ids in parameter `$ids`, (programme, card) pairs in `$cards`)
/// with the current ruleset version of their programme, in id order (the order they are
/// locked in).
fn lock_sql(backend: DbBackend, ids: usize, cards: usize) -> String {
    let by_card = format!(
        "SELECT c.id FROM members c JOIN {} ON c.program_id = x.p AND c.card_number = x.v",
        super::pairs_sql(backend, cards, "x")
    );
    format!(
        "SELECT m.*, {} AS current_ruleset_version FROM members m \
         WHERE m.id {} OR m.id {} ORDER BY m.id",
        super::rules::CURRENT_VERSION_SQL,
        in_json_list(backend, ids),
        match backend {
            DbBackend::Postgres => format!("= ANY(ARRAY({by_card}))"),
            _ => format!("IN ({by_card})"),
        }
    )
}

/// Earlier calls with the batch's keys (`$keys`: JSON [{c, r}], `$method`) as
/// (client, request id, fingerprint, response), and the batch's orders already accrued
/// (`$orders`: (programme, order id) pairs) as (NULL, "programme/order id", NULL, NULL).
fn lookups_sql(backend: DbBackend, keys: usize, method: usize, orders: usize) -> String {
    let keys_found = match backend {
        // One index probe per request, whatever the statistics say: with statistics
        // taken while the table was small (autovacuum off or behind), a plain join was
        // planned as a hash join over a sequential scan of every key (measured 5-10 ms
        // per batch at 35k keys, a quarter of the throughput).
        DbBackend::Postgres => format!(
            "jsonb_to_recordset(${keys}::jsonb) AS q(c text, r text) CROSS JOIN LATERAL \
             (SELECT * FROM idempotency_keys k WHERE k.client_id = q.c \
             AND k.method = ${method} AND k.request_id = q.r LIMIT 1) AS k"
        ),
        // No `$` paths: `statement` turns `$` into `?` for SQLite.
        _ => format!(
            "(SELECT value ->> 'c' AS c, value ->> 'r' AS r FROM json_each(${keys})) AS q \
             JOIN idempotency_keys k ON k.client_id = q.c AND k.method = ${method} \
             AND k.request_id = q.r"
        ),
    };
    format!(
        "SELECT k.client_id AS c, k.request_id AS r, k.request_hash AS h, k.response AS resp \
         FROM {keys_found} \
         UNION ALL SELECT NULL, o.program_id || '/' || o.order_id, NULL, NULL FROM orders o \
         JOIN {} ON o.program_id = x.p AND o.order_id = x.v",
        super::pairs_sql(backend, orders, "x")
    )
}

/// A hit as the statement returns it: (client, request or order id, fingerprint,
/// response), bytes in hex; an order already accrued has no client.
type HexHit = (Option<String>, String, Option<String>, Option<String>);

fn unhex(text: String) -> Result<Vec<u8>, AppError> {
    hex::decode(text).map_err(|e| AppError::Internal(e.into()))
}

fn found(hits: Vec<HexHit>) -> Result<Found, AppError> {
    let mut found = Found::default();
    for (client, id, fingerprint, response) in hits {
        match client {
            Some(client) => {
                let fingerprint = fingerprint.map(unhex).transpose()?.unwrap_or_default();
                let response = response.map(unhex).transpose()?;
                found.earlier.insert((client, id), (fingerprint, response));
            }
            None => {
                // Programme ids have no '/': the first one ends it.
                let (program, order) = id.split_once('/').ok_or_else(|| {
                    AppError::Internal(anyhow::anyhow!("order hit {id:?} without programme"))
                })?;
                found.orders.insert((program.to_owned(), order.to_owned()));
            }
        }
    }
    Ok(found)
}

/// One accrual's rows. At most one per member in a batch.
pub struct AccrualWrite {
    pub delta: BalanceDelta,
    /// The member's event sequence number of this accrual's event.
    pub event_seq: i64,
    pub lot: Option<NewLot>,
    /// The order, its lines with it.
    pub order: OrderRow,
    pub entry: NewEntry,
    pub key: IdempotencyKey,
    pub response: Vec<u8>,
}

/// Writes the batch: balances, lots, orders with their lines, ledger entries, their events and
/// the idempotency keys with their responses. Any conflict (an order or key taken by a
/// concurrent transaction) fails the whole batch; the caller then runs each call alone.
#[tracing::instrument(name = "db.accruals.write", skip_all, fields(n = batch.len()))]
pub async fn write<C: ConnectionTrait>(
    db: &C,
    batch: Vec<AccrualWrite>,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    if batch.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() == DbBackend::Postgres {
        return write_in_one_statement(db, batch, now).await;
    }
    // SQLite: every statement in one call. sqlx hands each call to the connection's
    // thread and back; in a profile of accrue the thread switches and wake-ups took far
    // more of the server's CPU than SQLite's own code, so the batch's six statements go
    // as one text (sqlx runs them in turn, binding the values in order).
    let balances: Vec<Json> = batch.iter().map(balance_row).collect();
    let mut parts = vec![Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "UPDATE members SET points_available = points_available + v.available, \
         points_pending = points_pending + v.pending, points_held = points_held + v.held, \
         lifetime_earned = lifetime_earned + v.lifetime, event_seq = v.event_seq \
         FROM (SELECT value ->> 'id' AS id, value ->> 'available' AS available, \
         value ->> 'pending' AS pending, value ->> 'held' AS held, \
         value ->> 'lifetime' AS lifetime, value ->> 'event_seq' AS event_seq \
         FROM json_each(?)) AS v WHERE members.id = v.id",
        [json_text(&balances)?.into()],
    )];
    let mut lots_rows = Vec::new();
    let mut orders = Vec::new();
    let mut entries = Vec::new();
    let mut events = Vec::new();
    let mut keys = Vec::new();
    for w in batch {
        let ev = ledger::event_of(&w.entry);
        events.push(event::ActiveModel {
            id: NotSet,
            program_id: Set(w.order.program_id.clone()),
            cursor: Set(None),
            member_id: Set(Some(w.entry.member_id.clone())),
            member_seq: Set(w.event_seq),
            event_type: Set(ev.event_type.to_owned()),
            transaction_id: Set(ev.transaction_id),
            payload: Set(ev.payload),
            created_at: Set(ev.created_at),
        });
        keys.push(idempotency_key::ActiveModel {
            client_id: Set(w.key.client_id),
            method: Set(w.key.method.to_owned()),
            request_id: Set(w.key.request_id),
            request_hash: Set(w.key.fingerprint),
            response: Set(Some(w.response)),
            created_at: Set(now),
        });
        lots_rows.extend(w.lot.map(lots::active));
        orders.push(order::ActiveModel::from(w.order));
        entries.push(ledger::active(w.entry));
    }
    inserts::<point_lot::Entity>(&mut parts, lots_rows);
    inserts::<order::Entity>(&mut parts, orders);
    inserts::<ledger_entry::Entity>(&mut parts, entries);
    inserts::<event::Entity>(&mut parts, events);
    inserts::<idempotency_key::Entity>(&mut parts, keys);
    db.execute_raw(joined(parts)).await.map_err(taken)?;
    Ok(())
}

/// A unique violation of the batch's write: a concurrent transaction took one of its
/// orders (or idempotency keys) after the batch looked. Not a fault: the calls run alone.
fn taken(err: sea_orm::DbErr) -> AppError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => AppError::OrderAlreadyAccrued,
        _ => err.into(),
    }
}

/// Multi-row INSERTs of `rows` (as many as SQLite's parameter limit needs), appended.
fn inserts<E: EntityTrait>(parts: &mut Vec<Statement>, rows: Vec<E::ActiveModel>) {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<E::ActiveModel> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        parts.push(E::insert_many(chunk).build(DbBackend::Sqlite));
    }
}

/// Statements as one text with their values in order. Only for anonymous (`?`)
/// parameters: a numbered one would point into the whole list.
fn joined(parts: Vec<Statement>) -> Statement {
    let mut sql = String::new();
    let mut values = Vec::new();
    for part in parts {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&part.sql);
        values.extend(part.values.map(|v| v.0).unwrap_or_default());
    }
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

/// A member's balance change and new event sequence, as one JSON object.
fn balance_row(w: &AccrualWrite) -> Json {
    let d = w.delta;
    json!({
        "id": w.entry.member_id, "available": d.available, "pending": d.pending,
        "held": d.held, "lifetime": d.lifetime, "event_seq": w.event_seq,
    })
}

/// PostgreSQL: every row of the batch in one statement, one array parameter per column
/// (`unnest` turns them back into rows), so the statement text and its prepared plan are
/// the same for any batch, and the values travel in binary: with JSON parameters
/// PostgreSQL parsed every row's text first (measured at 8 callers: 2.04 ms per batch of
/// 3.6 accruals with JSON, 1.82 ms with arrays).
/// Array elements cannot be NULL here, so a column that may be NULL comes with a flag
/// array.
async fn write_in_one_statement<C: ConnectionTrait>(
    db: &C,
    batch: Vec<AccrualWrite>,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let n = batch.len() as i64;
    // Never for accruals as they are built; should it happen, the batch fails and its
    // calls run alone.
    let Some(columns) = Columns::of(batch) else {
        return Err(AppError::Internal(anyhow::anyhow!(
            "an accrual in the batch has a value the batch statement does not carry"
        )));
    };
    let sql = "WITH m AS (UPDATE members AS t SET \
        points_available = t.points_available + v.available, \
        points_pending = t.points_pending + v.pending, points_held = t.points_held + v.held, \
        lifetime_earned = t.lifetime_earned + v.lifetime, event_seq = v.event_seq \
        FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[]) \
        AS v(id, available, pending, held, lifetime, event_seq) WHERE t.id = v.id RETURNING 1), \
      l AS (INSERT INTO point_lots (member_id, transaction_id, order_id, source, state, \
        points_original, points_remaining, points_expired, points_reversed, earned_at, \
        available_at, expires_at) \
        SELECT member_id, transaction_id, order_id, source, state, points, remaining, 0, 0, \
        earned_at, available_at, CASE WHEN expires THEN expires_at END \
        FROM unnest($7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
        $12::int8[], $13::int8[], $14::timestamptz[], $15::timestamptz[], \
        $16::timestamptz[], $17::bool[]) AS v(member_id, transaction_id, order_id, source, \
        state, points, remaining, earned_at, available_at, expires_at, expires)), \
      o AS (INSERT INTO orders (program_id, order_id, member_id, transaction_id, store_id, channel, \
        currency, eligible_minor, points_earned, occurred_at, created_at, ruleset_version, \
        points_reversed, eligible_returned, lines) \
        SELECT * FROM unnest($53::text[], $18::text[], $19::text[], $20::text[], $21::text[], \
        $22::text[], $23::text[], $24::int8[], $25::int8[], $26::timestamptz[], \
        $27::timestamptz[], $28::int8[], $29::int8[], $30::int8[], $31::text[])), \
      e AS (INSERT INTO ledger_entries (member_id, transaction_id, kind, points, \
        balance_after, order_id, store_id, created_at, pending_delta, held_delta) \
        SELECT * FROM unnest($32::text[], $33::text[], $34::text[], $35::int8[], \
        $36::int8[], $37::text[], $38::text[], $39::timestamptz[], $40::int8[], \
        $41::int8[])), \
      ev AS (INSERT INTO events (program_id, member_id, member_seq, event_type, \
        transaction_id, payload, created_at) \
        SELECT * FROM unnest($54::text[], $42::text[], $43::int8[], $44::text[], $45::text[], \
        $46::text[], $47::timestamptz[])) \
      INSERT INTO idempotency_keys (client_id, method, request_id, request_hash, response, \
        created_at) \
        SELECT v.*, $55::timestamptz FROM unnest($48::text[], $49::text[], $50::text[], \
        $51::bytea[], $52::bytea[]) AS v \
        WHERE (SELECT count(*) FROM m) = $56";
    let done = db
        .execute_raw(statement(db, sql, columns.into_values(now, n)))
        .await
        .map_err(taken)?;
    if done.rows_affected() != n as u64 {
        return Err(AppError::Internal(anyhow::anyhow!(
            "batch of {n} accruals updated {} members",
            done.rows_affected()
        )));
    }
    Ok(())
}

/// Declares [`Columns`], one `Vec` per column, in the order of the statement's
/// parameters: [`Columns::into_values`] binds them in this same order, so a column cannot
/// land in another's parameter.
macro_rules! columns {
    ($($name:ident: $ty:ty),* $(,)?) => {
        /// The batch's rows column by column, as [`write_in_one_statement`] binds them.
        #[derive(Default)]
        struct Columns {
            $($name: Vec<$ty>,)*
        }

        impl Columns {
            /// The statement's parameters in order: the columns, then the keys' time
            /// and the batch size.
            fn into_values(self, now: DateTime<Utc>, n: i64) -> Vec<sea_orm::Value> {
                let mut values = vec![$(self.$name.into()),*];
                values.push(now.into());
                values.push(n.into());
                values
            }
        }
    };
}

columns! {
    // members
    m_id: String,
    m_available: i64,
    m_pending: i64,
    m_held: i64,
    m_lifetime: i64,
    m_event_seq: i64,
    // point_lots
    l_member_id: String,
    l_transaction_id: String,
    l_order_id: String,
    l_source: String,
    l_state: String,
    l_points: i64,
    l_remaining: i64,
    l_earned_at: DateTime<Utc>,
    l_available_at: DateTime<Utc>,
    l_expires_at: DateTime<Utc>,
    l_expires: bool,
    // orders
    o_order_id: String,
    o_member_id: String,
    o_transaction_id: String,
    o_store_id: String,
    o_channel: String,
    o_currency: String,
    o_eligible_minor: i64,
    o_points_earned: i64,
    o_occurred_at: DateTime<Utc>,
    o_created_at: DateTime<Utc>,
    o_ruleset_version: i64,
    o_points_reversed: i64,
    o_eligible_returned: i64,
    o_lines: String,
    // ledger_entries
    e_member_id: String,
    e_transaction_id: String,
    e_kind: String,
    e_points: i64,
    e_balance_after: i64,
    e_order_id: String,
    e_store_id: String,
    e_created_at: DateTime<Utc>,
    e_pending_delta: i64,
    e_held_delta: i64,
    // events
    ev_member_id: String,
    ev_member_seq: i64,
    ev_type: String,
    ev_transaction_id: String,
    ev_payload: String,
    ev_created_at: DateTime<Utc>,
    // idempotency_keys
    k_client_id: String,
    k_method: String,
    k_request_id: String,
    k_request_hash: Vec<u8>,
    k_response: Vec<u8>,
    // the programmes of the orders and events
    o_program_id: String,
    ev_program_id: String,
}

impl Columns {
    /// The columns of `batch` (its rows moved, not copied), or none when a row has a
    /// value the statement does not carry: an accrual's lot without an order, or a ledger
    /// entry without order or store or with a reason, note, hold or return (accruals have
    /// none of these).
    fn of(batch: Vec<AccrualWrite>) -> Option<Self> {
        let mut c = Self::default();
        for w in batch {
            let e = w.entry;
            if e.reason_code.is_some()
                || e.note.is_some()
                || e.hold_id.is_some()
                || e.return_id.is_some()
            {
                return None;
            }
            let ev = ledger::event_of(&e);
            let d = w.delta;
            c.m_id.push(e.member_id.clone());
            c.m_available.push(d.available);
            c.m_pending.push(d.pending);
            c.m_held.push(d.held);
            c.m_lifetime.push(d.lifetime);
            c.m_event_seq.push(w.event_seq);
            if let Some(l) = w.lot {
                c.l_member_id.push(l.member_id);
                c.l_transaction_id.push(l.transaction_id);
                c.l_order_id.push(l.order_id?);
                c.l_source.push(l.source.as_str().to_owned());
                let state = if l.pending {
                    STATE_PENDING
                } else {
                    STATE_AVAILABLE
                };
                c.l_state.push(state.to_owned());
                c.l_points.push(l.points);
                c.l_remaining.push(l.remaining);
                c.l_earned_at.push(l.earned_at);
                c.l_available_at.push(l.available_at);
                c.l_expires_at.push(l.expires_at.unwrap_or(l.earned_at));
                c.l_expires.push(l.expires_at.is_some());
            }
            let o = w.order;
            c.o_program_id.push(o.program_id.clone());
            c.ev_program_id.push(o.program_id);
            c.o_order_id.push(o.order_id);
            c.o_member_id.push(o.member_id);
            c.o_transaction_id.push(o.transaction_id);
            c.o_store_id.push(o.store_id);
            c.o_channel.push(o.channel);
            c.o_currency.push(o.currency);
            c.o_eligible_minor.push(o.eligible_minor);
            c.o_points_earned.push(o.points_earned);
            c.o_occurred_at.push(o.occurred_at);
            c.o_created_at.push(o.created_at);
            c.o_ruleset_version.push(o.ruleset_version);
            c.o_points_reversed.push(o.points_reversed);
            c.o_eligible_returned.push(o.eligible_returned);
            c.o_lines.push(o.lines);
            c.ev_member_id.push(e.member_id.clone());
            c.ev_member_seq.push(w.event_seq);
            c.ev_type.push(ev.event_type.to_owned());
            c.ev_transaction_id.push(ev.transaction_id?);
            c.ev_payload.push(ev.payload);
            c.ev_created_at.push(ev.created_at);
            c.e_member_id.push(e.member_id);
            c.e_transaction_id.push(e.transaction_id);
            c.e_kind.push(e.kind.as_str().to_owned());
            c.e_points.push(e.points);
            c.e_balance_after.push(e.balance_after);
            c.e_order_id.push(e.order_id?);
            c.e_store_id.push(e.store_id?);
            c.e_created_at.push(e.created_at);
            c.e_pending_delta.push(e.pending_delta);
            c.e_held_delta.push(e.held_delta);
            c.k_client_id.push(w.key.client_id);
            c.k_method.push(w.key.method.to_owned());
            c.k_request_id.push(w.key.request_id);
            c.k_request_hash.push(w.key.fingerprint);
            c.k_response.push(w.response);
        }
        Some(c)
    }
}
