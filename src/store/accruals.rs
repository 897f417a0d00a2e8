//! A batch of accruals read and written set-wise: whatever the batch size, a fixed
//! number of statements (the writes are one statement on PostgreSQL), so concurrent
//! checkouts share round trips, per-statement work and one commit. The service decides
//! what goes in a batch; this layer only reads and writes rows.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, QueryResult,
};
use serde_json::{Value as Json, json};

use super::{
    ROWS_PER_INSERT,
    entities::{event, idempotency_key, order, order_line},
    idempotency::IdempotencyKey,
    in_json_list, json_text,
    ledger::{self, NewEntry, OrderLineRow, OrderRow},
    lots::{self, NewLot, STATE_AVAILABLE, STATE_PENDING},
    members::{BalanceDelta, MemberRow},
    statement,
};
use crate::error::AppError;

/// The members of a batch that no other transaction holds, locked, and the current
/// ruleset version. A batch never waits for a member's lock (so it can neither deadlock
/// nor hold up its other calls): on PostgreSQL a member locked elsewhere is left out,
/// and the caller runs that call alone.
pub struct Locked {
    pub members: Vec<MemberRow>,
    pub ruleset_version: Option<i64>,
}

/// An earlier call's (fingerprint, response).
pub type Earlier = (Vec<u8>, Option<Vec<u8>>);

/// What the batch's keys and orders found: earlier calls by (client id, request id), and
/// the order ids already accrued.
#[derive(Default)]
pub struct Found {
    pub earlier: HashMap<(String, String), Earlier>,
    pub orders: HashSet<String>,
}

/// What a batch reads before pricing: its members, locked, and the ruleset version
/// (member ids in `ids`, cards in `cards`), and the earlier calls with its keys and the
/// orders already accrued. On PostgreSQL one statement, so a batch makes four round
/// trips in all (BEGIN, this, the write, COMMIT); SQLite runs the two parts in turn.
#[tracing::instrument(name = "db.accruals.lock_and_look_up", skip_all, fields(n = keys.len()))]
pub async fn lock_and_look_up<C: ConnectionTrait>(
    db: &C,
    ids: &[&str],
    cards: &[&str],
    method: &str,
    keys: &[(&str, &str)],
    order_ids: &[&str],
) -> Result<(Locked, Found), AppError> {
    let backend = db.get_database_backend();
    let keys: Vec<Json> = keys.iter().map(|(c, r)| json!({"c": c, "r": r})).collect();
    let values = [
        json_text(&ids)?.into(),
        json_text(&cards)?.into(),
        json_text(&keys)?.into(),
        method.into(),
        json_text(&order_ids)?.into(),
    ];
    if backend != DbBackend::Postgres {
        let [ids, cards, keys, method, orders] = values;
        // The write transaction (BEGIN IMMEDIATE) already excludes other writers.
        let rows = db
            .query_all_raw(statement(db, &lock_sql(backend, 1, 2), [ids, cards]))
            .await?;
        let hits = Hit::find_by_statement(statement(
            db,
            &lookups_sql(backend, 1, 2, 3),
            [keys, method, orders],
        ))
        .all(db)
        .await?;
        return Ok((locked_of(&rows)?, found(hits)));
    }
    // One row per locked member (or one row of NULL members when none is), each carrying
    // the lookups' hits as JSON (bytes as hex).
    let sql = format!(
        "SELECT f.found, m.* FROM (SELECT CAST(COALESCE(json_agg(json_build_array(h.c, h.r, \
         encode(h.h, 'hex'), encode(h.resp, 'hex'))), '[]') AS TEXT) AS found \
         FROM ({lookups}) AS h) AS f LEFT JOIN LATERAL ({lock} FOR UPDATE OF m SKIP LOCKED) \
         AS m ON TRUE",
        lookups = lookups_sql(backend, 3, 4, 5),
        lock = lock_sql(backend, 1, 2),
    );
    let rows = db.query_all_raw(statement(db, &sql, values)).await?;
    let mut hits = Vec::new();
    if let Some(first) = rows.first() {
        let text: String = first.try_get("", "found")?;
        let raw: Vec<HexHit> =
            serde_json::from_str(&text).map_err(|e| AppError::Internal(e.into()))?;
        for (c, r, h, resp) in raw {
            hits.push(Hit {
                c,
                r,
                h: h.map(unhex).transpose()?,
                resp: resp.map(unhex).transpose()?,
            });
        }
    }
    Ok((locked_of(&rows)?, found(hits)))
}

/// The locked members among rows of [`lock_sql`] (a row without a member, as the
/// PostgreSQL statement returns when none is locked, is skipped) and the ruleset version
/// they carry: none without members, when nothing is priced.
fn locked_of(rows: &[QueryResult]) -> Result<Locked, AppError> {
    let mut locked = Locked {
        members: Vec::with_capacity(rows.len()),
        ruleset_version: None,
    };
    for row in rows {
        if row.try_get::<Option<String>>("", "id")?.is_some() {
            locked.ruleset_version = row.try_get("", "current_ruleset_version")?;
            locked.members.push(MemberRow::from_query_result(row, "")?);
        }
    }
    Ok(locked)
}

/// The batch's members (ids in parameter `$ids`, cards in `$cards`) with the current
/// ruleset version, in id order (the order they are locked in).
fn lock_sql(backend: DbBackend, ids: usize, cards: usize) -> String {
    format!(
        "SELECT m.*, {} AS current_ruleset_version FROM members m WHERE m.id {} \
         OR m.id {} ORDER BY m.id",
        super::rules::CURRENT_VERSION_SQL,
        in_json_list(backend, ids),
        match backend {
            DbBackend::Postgres => format!(
                "= ANY(ARRAY(SELECT c.id FROM members c WHERE c.card_number \
                 = ANY(ARRAY(SELECT jsonb_array_elements_text(${cards}::jsonb)))))"
            ),
            _ => format!(
                "IN (SELECT c.id FROM members c WHERE c.card_number IN \
                 (SELECT value FROM json_each(${cards})))"
            ),
        }
    )
}

/// Earlier calls with the batch's keys (`$keys`: JSON [{c, r}], `$method`) as
/// (client, request id, fingerprint, response), and the batch's orders already accrued
/// (`$orders`) as (NULL, order id, NULL, NULL).
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
         UNION ALL SELECT NULL, o.order_id, NULL, NULL FROM orders o WHERE o.order_id {}",
        in_json_list(backend, orders)
    )
}

/// A hit as the PostgreSQL statement returns it: (client, request or order id,
/// fingerprint, response), bytes in hex.
type HexHit = (Option<String>, String, Option<String>, Option<String>);

#[derive(FromQueryResult)]
struct Hit {
    c: Option<String>,
    r: String,
    h: Option<Vec<u8>>,
    resp: Option<Vec<u8>>,
}

fn unhex(text: String) -> Result<Vec<u8>, AppError> {
    hex::decode(text).map_err(|e| AppError::Internal(e.into()))
}

fn found(hits: Vec<Hit>) -> Found {
    let mut found = Found::default();
    for hit in hits {
        match hit.c {
            Some(client) => {
                found
                    .earlier
                    .insert((client, hit.r), (hit.h.unwrap_or_default(), hit.resp));
            }
            None => {
                found.orders.insert(hit.r);
            }
        }
    }
    found
}

/// One accrual's rows. At most one per member in a batch.
pub struct AccrualWrite {
    pub delta: BalanceDelta,
    /// The member's event sequence number of this accrual's event.
    pub event_seq: i64,
    pub lot: Option<NewLot>,
    pub order: OrderRow,
    pub lines: Vec<OrderLineRow>,
    pub entry: NewEntry,
    pub key: IdempotencyKey,
    pub response: Vec<u8>,
}

/// Writes the batch: balances, lots, orders, lines, ledger entries, their events and
/// the idempotency keys with their responses. Any conflict (an order or key taken by a
/// concurrent transaction) fails the whole batch; the caller then runs each call alone.
#[tracing::instrument(name = "db.accruals.write", skip_all, fields(n = batch.len()))]
pub async fn write<C: ConnectionTrait>(db: &C, batch: Vec<AccrualWrite>) -> Result<(), AppError> {
    if batch.is_empty() {
        return Ok(());
    }
    if db.get_database_backend() == DbBackend::Postgres {
        return write_in_one_statement(db, batch).await;
    }
    let mut lots_rows = Vec::new();
    let mut orders = Vec::new();
    let mut lines = Vec::new();
    let mut entries = Vec::new();
    let mut events = Vec::new();
    let mut keys = Vec::new();
    let now = super::now();
    // Every balance in one statement, as on PostgreSQL.
    let balances: Vec<Json> = batch.iter().map(balance_row).collect();
    db.execute_raw(statement(
        db,
        "UPDATE members SET points_available = points_available + v.available, \
         points_pending = points_pending + v.pending, points_held = points_held + v.held, \
         lifetime_earned = lifetime_earned + v.lifetime, event_seq = v.event_seq \
         FROM (SELECT value ->> 'id' AS id, value ->> 'available' AS available, \
         value ->> 'pending' AS pending, value ->> 'held' AS held, \
         value ->> 'lifetime' AS lifetime, value ->> 'event_seq' AS event_seq \
         FROM json_each($1)) AS v WHERE members.id = v.id",
        [json_text(&balances)?.into()],
    ))
    .await?;
    for w in batch {
        let ev = ledger::event_of(&w.entry);
        events.push(event::ActiveModel {
            id: NotSet,
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
        lots_rows.extend(w.lot);
        orders.push(order::ActiveModel::from(w.order));
        lines.extend(w.lines.into_iter().map(order_line::ActiveModel::from));
        entries.push(w.entry);
    }
    lots::insert_all(db, lots_rows).await?;
    insert_chunked::<order::Entity, _>(db, orders).await?;
    insert_chunked::<order_line::Entity, _>(db, lines).await?;
    ledger::insert_entries(db, entries).await?;
    insert_chunked::<event::Entity, _>(db, events).await?;
    insert_chunked::<idempotency_key::Entity, _>(db, keys).await?;
    Ok(())
}

async fn insert_chunked<E, C>(db: &C, rows: Vec<E::ActiveModel>) -> Result<(), AppError>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        E::insert_many(chunk.iter().cloned())
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// A member's balance change and new event sequence, as one JSON object.
fn balance_row(w: &AccrualWrite) -> Json {
    let d = w.delta;
    json!({
        "id": w.entry.member_id, "available": d.available, "pending": d.pending,
        "held": d.held, "lifetime": d.lifetime, "event_seq": w.event_seq,
    })
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// PostgreSQL: every row of the batch in one statement, each table's rows passed as one
/// JSON array, so the statement text (and its prepared plan) is the same for any batch.
async fn write_in_one_statement<C: ConnectionTrait>(
    db: &C,
    batch: Vec<AccrualWrite>,
) -> Result<(), AppError> {
    let now = ts(super::now());
    let mut members = Vec::new();
    let mut lots_rows = Vec::new();
    let mut orders = Vec::new();
    let mut lines = Vec::new();
    let mut entries = Vec::new();
    let mut events = Vec::new();
    let mut keys = Vec::new();
    for w in &batch {
        let e = &w.entry;
        members.push(balance_row(w));
        if let Some(l) = &w.lot {
            lots_rows.push(json!({
                "member_id": l.member_id, "transaction_id": l.transaction_id,
                "order_id": l.order_id, "source": l.source,
                "state": if l.pending { STATE_PENDING } else { STATE_AVAILABLE },
                "points": l.points, "remaining": l.remaining, "earned_at": ts(l.earned_at),
                "available_at": ts(l.available_at), "expires_at": l.expires_at.map(ts),
            }));
        }
        let o = &w.order;
        orders.push(json!({
            "order_id": o.order_id, "member_id": o.member_id, "transaction_id": o.transaction_id,
            "store_id": o.store_id, "channel": o.channel, "currency": o.currency,
            "eligible_minor": o.eligible_minor, "points_earned": o.points_earned,
            "occurred_at": ts(o.occurred_at), "created_at": ts(o.created_at),
            "ruleset_version": o.ruleset_version, "points_reversed": o.points_reversed,
            "eligible_returned": o.eligible_returned,
        }));
        for l in &w.lines {
            lines.push(json!({
                "order_id": l.order_id, "line_id": l.line_id, "sku": l.sku,
                "category": l.category, "quantity": l.quantity,
                "unit_price_minor": l.unit_price_minor, "discount_minor": l.discount_minor,
                "eligible_minor": l.eligible_minor, "points": l.points,
                "returned_quantity": l.returned_quantity, "points_reversed": l.points_reversed,
                "rule_ids": l.rule_ids,
            }));
        }
        entries.push(json!({
            "member_id": e.member_id, "transaction_id": e.transaction_id, "kind": e.kind,
            "points": e.points, "balance_after": e.balance_after, "order_id": e.order_id,
            "store_id": e.store_id, "created_at": ts(e.created_at),
            "pending_delta": e.pending_delta, "held_delta": e.held_delta,
            "reason_code": e.reason_code, "note": e.note, "hold_id": e.hold_id,
            "return_id": e.return_id,
        }));
        let ev = ledger::event_of(e);
        events.push(json!({
            "member_id": e.member_id, "member_seq": w.event_seq, "event_type": ev.event_type,
            "transaction_id": ev.transaction_id, "payload": ev.payload,
            "created_at": ts(ev.created_at),
        }));
        keys.push(json!({
            "client_id": w.key.client_id, "method": w.key.method,
            "request_id": w.key.request_id, "request_hash": hex::encode(&w.key.fingerprint),
            "response": hex::encode(&w.response), "created_at": now,
        }));
    }
    let sql = "WITH m AS (UPDATE members AS t SET \
        points_available = t.points_available + v.available, \
        points_pending = t.points_pending + v.pending, points_held = t.points_held + v.held, \
        lifetime_earned = t.lifetime_earned + v.lifetime, event_seq = v.event_seq \
        FROM jsonb_to_recordset($1::jsonb) AS v(id text, available bigint, pending bigint, \
        held bigint, lifetime bigint, event_seq bigint) WHERE t.id = v.id RETURNING 1), \
      l AS (INSERT INTO point_lots (member_id, transaction_id, order_id, source, state, \
        points_original, points_remaining, points_expired, points_reversed, earned_at, \
        available_at, expires_at) \
        SELECT member_id, transaction_id, order_id, source, state, points, remaining, 0, 0, \
        earned_at, available_at, expires_at FROM jsonb_to_recordset($2::jsonb) AS v(\
        member_id text, transaction_id text, order_id text, source text, state text, \
        points bigint, remaining bigint, earned_at timestamptz, available_at timestamptz, \
        expires_at timestamptz)), \
      o AS (INSERT INTO orders (order_id, member_id, transaction_id, store_id, channel, \
        currency, eligible_minor, points_earned, occurred_at, created_at, ruleset_version, \
        points_reversed, eligible_returned) \
        SELECT * FROM jsonb_to_recordset($3::jsonb) AS v(order_id text, member_id text, \
        transaction_id text, store_id text, channel text, currency text, \
        eligible_minor bigint, points_earned bigint, occurred_at timestamptz, \
        created_at timestamptz, ruleset_version bigint, points_reversed bigint, \
        eligible_returned bigint)), \
      ol AS (INSERT INTO order_lines (order_id, line_id, sku, category, quantity, \
        unit_price_minor, discount_minor, eligible_minor, points, returned_quantity, \
        points_reversed, rule_ids) \
        SELECT * FROM jsonb_to_recordset($4::jsonb) AS v(order_id text, line_id text, \
        sku text, category text, quantity bigint, unit_price_minor bigint, \
        discount_minor bigint, eligible_minor bigint, points bigint, \
        returned_quantity bigint, points_reversed bigint, rule_ids text)), \
      e AS (INSERT INTO ledger_entries (member_id, transaction_id, kind, points, \
        balance_after, order_id, store_id, created_at, pending_delta, held_delta, \
        reason_code, note, hold_id, return_id) \
        SELECT * FROM jsonb_to_recordset($5::jsonb) AS v(member_id text, \
        transaction_id text, kind text, points bigint, balance_after bigint, \
        order_id text, store_id text, created_at timestamptz, pending_delta bigint, \
        held_delta bigint, reason_code text, note text, hold_id text, return_id text)), \
      ev AS (INSERT INTO events (member_id, member_seq, event_type, transaction_id, \
        payload, created_at) \
        SELECT * FROM jsonb_to_recordset($6::jsonb) AS v(member_id text, member_seq bigint, \
        event_type text, transaction_id text, payload text, created_at timestamptz)) \
      INSERT INTO idempotency_keys (client_id, method, request_id, request_hash, response, \
        created_at) \
        SELECT client_id, method, request_id, decode(request_hash, 'hex'), \
        decode(response, 'hex'), created_at FROM jsonb_to_recordset($7::jsonb) AS v(\
        client_id text, method text, request_id text, request_hash text, response text, \
        created_at timestamptz) \
        WHERE (SELECT count(*) FROM m) = $8";
    let n = batch.len() as i64;
    let done = db
        .execute_raw(statement(
            db,
            sql,
            [
                json_text(&members)?.into(),
                json_text(&lots_rows)?.into(),
                json_text(&orders)?.into(),
                json_text(&lines)?.into(),
                json_text(&entries)?.into(),
                json_text(&events)?.into(),
                json_text(&keys)?.into(),
                n.into(),
            ],
        ))
        .await?;
    if done.rows_affected() != n as u64 {
        return Err(AppError::Internal(anyhow::anyhow!(
            "batch of {n} accruals updated {} members",
            done.rows_affected()
        )));
    }
    Ok(())
}
