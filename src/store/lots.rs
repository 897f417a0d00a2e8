//! Point lots (what was earned, when it becomes spendable and when it expires) and the
//! allocations that record which lots a burn or a hold took points from.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait},
};

pub use super::entities::point_lot::Model as LotRow;
use super::entities::{
    lot_allocation::{self, Column as AllocColumn, Entity as Allocations},
    point_lot::{self, Column, Entity as Lots},
};
use crate::{
    domain::{LotRemainder, MemberKey, ProgramId, plan_release},
    error::AppError,
};

pub const STATE_PENDING: &str = "PENDING";
pub const STATE_AVAILABLE: &str = "AVAILABLE";

pub use crate::domain::NewLot;

pub async fn insert<C: ConnectionTrait>(db: &C, lot: NewLot) -> Result<(), AppError> {
    Lots::insert(active(lot)).exec_without_returning(db).await?;
    Ok(())
}

pub(super) fn active(lot: NewLot) -> point_lot::ActiveModel {
    point_lot::ActiveModel {
        id: NotSet,
        member_id: Set(lot.member_id),
        transaction_id: Set(lot.transaction_id),
        order_id: Set(lot.order_id),
        source: Set(lot.source.as_str().to_owned()),
        state: Set(if lot.pending {
            STATE_PENDING
        } else {
            STATE_AVAILABLE
        }
        .to_owned()),
        points_original: Set(lot.points),
        points_remaining: Set(lot.remaining),
        points_expired: Set(0),
        points_reversed: Set(0),
        earned_at: Set(lot.earned_at),
        available_at: Set(lot.available_at),
        expires_at: Set(lot.expires_at),
    }
}

/// The member's spendable lots, locked (the member's row must be locked first).
pub async fn spendable<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
) -> Result<Vec<LotRemainder>, AppError> {
    let rows = Lots::find()
        .filter(Column::MemberId.eq(member_id))
        .filter(Column::State.eq(STATE_AVAILABLE))
        .filter(Column::PointsRemaining.gt(0))
        .lock_exclusive()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|l| LotRemainder {
            lot_id: l.id,
            remaining: l.points_remaining,
            expires_at: l.expires_at,
        })
        .collect())
}

/// Takes `plan` (lot id, points) out of the lots and records each take as an allocation.
pub async fn burn<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    transaction_id: &str,
    hold_id: Option<&str>,
    plan: &[(i64, i64)],
) -> Result<(), AppError> {
    if plan.is_empty() {
        return Ok(());
    }
    let taken: Vec<(i64, i64)> = plan.iter().map(|&(lot, take)| (lot, -take)).collect();
    add_by_id(db, "point_lots", "points_remaining", &taken).await?;
    Allocations::insert_many(
        plan.iter()
            .map(|&(lot_id, take)| lot_allocation::ActiveModel {
                id: NotSet,
                lot_id: Set(lot_id),
                member_id: Set(member_id.to_owned()),
                transaction_id: Set(transaction_id.to_owned()),
                hold_id: Set(hold_id.map(str::to_owned)),
                points: Set(take),
                released: Set(0),
            }),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

#[derive(Debug, FromQueryResult)]
struct Outstanding {
    id: i64,
    lot_id: i64,
    points: i64,
    released: i64,
}

/// Gives `amount` of a hold's reserved points back to the lots they came from,
/// latest-expiring first.
pub async fn release_hold<C: ConnectionTrait>(
    db: &C,
    hold_id: &str,
    amount: i64,
) -> Result<(), AppError> {
    if amount <= 0 {
        return Ok(());
    }
    let allocations = Allocations::find()
        .filter(AllocColumn::HoldId.eq(hold_id))
        .into_model::<Outstanding>()
        .all(db)
        .await?;
    let lot_ids: Vec<i64> = allocations.iter().map(|a| a.lot_id).collect();
    let lots = Lots::find()
        .filter(Column::Id.is_in(lot_ids))
        .all(db)
        .await?;
    let outstanding: Vec<(i64, Option<DateTime<Utc>>, i64)> = allocations
        .iter()
        .map(|a| {
            let expires = lots
                .iter()
                .find(|l| l.id == a.lot_id)
                .and_then(|l| l.expires_at);
            (a.id, expires, a.points - a.released)
        })
        .collect();
    let released = plan_release(&outstanding, amount);
    let back_to_lots: Vec<(i64, i64)> = released
        .iter()
        .filter_map(|&(allocation_id, give_back)| {
            let a = allocations.iter().find(|a| a.id == allocation_id)?;
            Some((a.lot_id, give_back))
        })
        .collect();
    add_by_id(db, "lot_allocations", "released", &released).await?;
    add_by_id(db, "point_lots", "points_remaining", &back_to_lots).await
}

/// Adds `delta` to `column` of each row `id` of `table`, all in one statement (a burn or
/// a release touches several lots; one round trip each would be N+1).
async fn add_by_id<C: ConnectionTrait>(
    db: &C,
    table: &'static str,
    column: &'static str,
    deltas: &[(i64, i64)],
) -> Result<(), AppError> {
    // One CASE arm per row: deltas for the same row are summed first.
    let mut by_id = std::collections::BTreeMap::new();
    for &(id, delta) in deltas {
        *by_id.entry(id).or_insert(0i64) += delta;
    }
    if by_id.is_empty() {
        return Ok(());
    }
    let mut cases = String::new();
    let mut ids = Vec::with_capacity(by_id.len());
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(by_id.len() * 2);
    for (id, delta) in by_id {
        let n = values.len();
        cases.push_str(&format!(" WHEN ${} THEN ${}", n + 1, n + 2));
        ids.push(format!("${}", n + 1));
        values.extend([id.into(), delta.into()]);
    }
    db.execute_raw(super::statement(
        db,
        &format!(
            "UPDATE {table} SET {column} = {column} + CASE id{cases} END WHERE id IN ({})",
            ids.join(", ")
        ),
        values,
    ))
    .await?;
    Ok(())
}

/// The lot the member's order's accrual created, locked.
pub async fn accrual_lot<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    order_id: &str,
) -> Result<Option<LotRow>, AppError> {
    Ok(Lots::find()
        .filter(Column::MemberId.eq(member_id))
        .filter(Column::OrderId.eq(order_id))
        .filter(Column::Source.eq(crate::domain::LotSource::Accrual.as_str()))
        .lock_exclusive()
        .one(db)
        .await?)
}

/// A lot, locked.
pub async fn get_locked<C: ConnectionTrait>(
    db: &C,
    lot_id: i64,
) -> Result<Option<LotRow>, AppError> {
    Ok(Lots::find_by_id(lot_id).lock_exclusive().one(db).await?)
}

/// Reverses `from_remaining` points still in the lot and counts `charged` more as reversed.
pub async fn reverse<C: ConnectionTrait>(
    db: &C,
    lot_id: i64,
    from_remaining: i64,
    charged: i64,
) -> Result<(), AppError> {
    Lots::update_many()
        .col_expr(
            Column::PointsRemaining,
            Expr::col(Column::PointsRemaining).sub(from_remaining),
        )
        .col_expr(
            Column::PointsReversed,
            Expr::col(Column::PointsReversed).add(from_remaining + charged),
        )
        .filter(Column::Id.eq(lot_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Marks the lot's whole remainder expired.
pub async fn expire<C: ConnectionTrait>(db: &C, lot_id: i64, points: i64) -> Result<(), AppError> {
    Lots::update_many()
        .col_expr(
            Column::PointsRemaining,
            Expr::col(Column::PointsRemaining).sub(points),
        )
        .col_expr(
            Column::PointsExpired,
            Expr::col(Column::PointsExpired).add(points),
        )
        .filter(Column::Id.eq(lot_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Makes a pending lot spendable, with what is left after paying off any negative balance.
pub async fn make_available<C: ConnectionTrait>(
    db: &C,
    lot_id: i64,
    remaining: i64,
) -> Result<(), AppError> {
    Lots::update_many()
        .col_expr(Column::State, Expr::value(STATE_AVAILABLE))
        .col_expr(Column::PointsRemaining, Expr::value(remaining))
        .filter(Column::Id.eq(lot_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Lots are the member's: a lot is in the programme its member is in.
fn in_program(program: &str) -> sea_orm::sea_query::SimpleExpr {
    use super::entities::member;
    Column::MemberId.in_subquery(
        sea_orm::sea_query::Query::select()
            .column(member::Column::Id)
            .from(member::Entity)
            .and_where(member::Column::ProgramId.eq(program))
            .to_owned(),
    )
}

/// Lots of `program` with points left whose expiry has passed: `(lot id, member id)`.
pub async fn due_for_expiry<C: ConnectionTrait>(
    db: &C,
    program: &str,
    now: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<(i64, String)>, AppError> {
    Ok(Lots::find()
        .select_only()
        .column(Column::Id)
        .column(Column::MemberId)
        .filter(Column::State.eq(STATE_AVAILABLE))
        .filter(Column::ExpiresAt.lte(now))
        .filter(Column::PointsRemaining.gt(0))
        .filter(in_program(program))
        .order_by_asc(Column::ExpiresAt)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// Pending lots of `program` whose return window has passed (or all of an order's, when
/// `order_id`).
pub async fn due_for_release<C: ConnectionTrait>(
    db: &C,
    program: &str,
    now: Option<DateTime<Utc>>,
    order_id: Option<&str>,
    limit: u64,
) -> Result<Vec<(i64, String)>, AppError> {
    let mut query = Lots::find()
        .select_only()
        .column(Column::Id)
        .column(Column::MemberId)
        .filter(Column::State.eq(STATE_PENDING))
        .filter(in_program(program));
    if let Some(now) = now {
        query = query.filter(Column::AvailableAt.lte(now));
    }
    if let Some(order_id) = order_id {
        query = query.filter(Column::OrderId.eq(order_id));
    }
    Ok(query
        .order_by_asc(Column::AvailableAt)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// What GetBalance shows: a member's balances and the spendable points that expire by
/// `until`, with the card number a read by card is matched on.
#[derive(Debug, Clone, FromQueryResult)]
pub struct BalanceRow {
    pub id: String,
    pub program_id: String,
    pub card_number: Option<String>,
    pub points_available: i64,
    pub points_pending: i64,
    pub points_held: i64,
    pub lifetime_earned: i64,
    pub expiring_points: i64,
    pub first_expiry: Option<DateTime<Utc>>,
}

/// The balances and expiring points of the members `keys` name, each key in its
/// programme (ids, cards or both, of one programme or several), one statement per kind
/// of key whatever their number and programmes; a key with no member in its programme
/// has no row. A card number used in several programmes reads a row of each, and only
/// the rows of the keys' own programmes are returned.
/// Only the columns shown are read: decoding the whole member row by name was 7 % of the
/// server's CPU on balance reads.
#[tracing::instrument(name = "db.members.balances", skip_all, fields(keys = keys.len()))]
pub async fn balances_with_expiring<C: ConnectionTrait>(
    db: &C,
    keys: &[(ProgramId, MemberKey)],
    until: DateTime<Utc>,
) -> Result<Vec<BalanceRow>, AppError> {
    let backend = db.get_database_backend();
    let mut ids = Vec::new();
    let mut cards = Vec::new();
    for (program, key) in keys {
        match key {
            MemberKey::Id(id) => ids.push(id.as_str().to_owned()),
            MemberKey::Card(card) => cards.push((program.as_str(), card.as_str())),
        }
    }
    let mut rows = Vec::new();
    if !ids.is_empty() {
        // Ids are unique across programmes: the primary key finds them.
        let (among, values) = super::in_values(backend, 1, ids)?;
        let filter = format!("WHERE m.id {among}");
        rows.extend(balances_by(db, "members m", &filter, values, until).await?);
    }
    if !cards.is_empty() {
        // Card numbers are unique per programme: (programme, card) pairs find them.
        let source = format!(
            "members m JOIN {} ON m.program_id = k.p AND m.card_number = k.v",
            super::pairs_sql(backend, 1, "k")
        );
        let values = super::json_text(&super::pairs_json(&cards))?.into();
        rows.extend(balances_by(db, &source, "", values, until).await?);
    }
    Ok(rows
        .into_iter()
        .filter(|row| {
            keys.iter().any(|(program, key)| {
                program.as_str() == row.program_id && key.names(&row.id, row.card_number.as_deref())
            })
        })
        .collect())
}

/// The balances of the members of `source` (`members m`, perhaps joined) that `filter`
/// keeps, with parameter 1 `keys`.
async fn balances_by<C: ConnectionTrait>(
    db: &C,
    source: &str,
    filter: &str,
    keys: sea_orm::Value,
    until: DateTime<Utc>,
) -> Result<Vec<BalanceRow>, AppError> {
    let backend = db.get_database_backend();
    // The window is a FILTER, not a WHERE condition, so the plan (the member's available
    // lots by index) does not depend on it and PostgreSQL keeps one generic plan for the
    // prepared statement. With the window in WHERE, every call was planned afresh (the
    // custom plan always looked cheaper), and planning cost more than running it.
    let expiring = "CAST(COALESCE(SUM(l.points_remaining) FILTER (WHERE l.expires_at <= $3), 0) \
                    AS BIGINT)";
    let first = "MIN(l.expires_at) FILTER (WHERE l.expires_at <= $3)";
    let lots = "FROM point_lots l WHERE l.member_id = m.id AND l.state = $2 \
                AND l.points_remaining > 0";
    let columns = "m.id, m.program_id, m.card_number, m.points_available, m.points_pending, m.points_held, \
                   m.lifetime_earned";
    // PostgreSQL reads each member's lots once for both figures (LATERAL); SQLite has no
    // LATERAL, so two subqueries.
    let sql = match backend {
        sea_orm::DbBackend::Postgres => format!(
            "SELECT {columns}, x.expiring_points, x.first_expiry FROM {source} CROSS JOIN \
             LATERAL (SELECT {expiring} AS expiring_points, {first} AS first_expiry {lots}) x \
             {filter}"
        ),
        _ => format!(
            "SELECT {columns}, (SELECT {expiring} {lots}) AS expiring_points, \
             (SELECT {first} {lots}) AS first_expiry FROM {source} {filter}"
        ),
    };
    Ok(BalanceRow::find_by_statement(super::statement(
        db,
        &sql,
        [keys, STATE_AVAILABLE.into(), until.into()],
    ))
    .all(db)
    .await?)
}
