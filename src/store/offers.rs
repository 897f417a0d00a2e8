//! The offer catalogue, use counters and uses.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, SqlErr,
    sea_query::{Expr, ExprTrait},
};

use super::entities::{offer, offer_catalog, offer_counter, offer_use};
use crate::{domain::Offer, error::AppError};

fn decode(row: offer::Model) -> Result<Offer, AppError> {
    serde_json::from_str(&row.body).map_err(|e| AppError::Internal(e.into()))
}

fn encode(o: &Offer) -> Result<String, AppError> {
    serde_json::to_string(o).map_err(|e| AppError::Internal(e.into()))
}

/// Every catalogue change bumps the version, in the change's transaction, so a cache
/// keyed on it is never stale after the change commits.
async fn bump_version<C: ConnectionTrait>(db: &C, program: &str) -> Result<(), AppError> {
    db.execute_raw(super::statement(
        db,
        "INSERT INTO offer_catalogs (program_id, version) VALUES ($1, 1) \
         ON CONFLICT (program_id) DO UPDATE SET version = offer_catalogs.version + 1",
        [program.into()],
    ))
    .await?;
    Ok(())
}

pub async fn catalog_version<C: ConnectionTrait>(db: &C, program: &str) -> Result<i64, AppError> {
    Ok(offer_catalog::Entity::find_by_id(program)
        .one(db)
        .await?
        .map_or(0, |r| r.version))
}

pub async fn insert<C: ConnectionTrait>(
    db: &C,
    program: &str,
    o: &Offer,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    offer::Entity::insert(offer::ActiveModel {
        id: Set(o.offer_id.clone()),
        program_id: Set(program.to_owned()),
        code: Set(o.code.clone()),
        body: Set(encode(o)?),
        priority: Set(o.priority),
        active: Set(o.active),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec_without_returning(db)
    .await
    .map_err(|err: DbErr| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => AppError::OfferCodeTaken,
        _ => err.into(),
    })?;
    bump_version(db, program).await
}

pub async fn update<C: ConnectionTrait>(
    db: &C,
    program: &str,
    o: &Offer,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    offer::Entity::update_many()
        .col_expr(offer::Column::Code, Expr::value(o.code.clone()))
        .col_expr(offer::Column::Body, Expr::value(encode(o)?))
        .col_expr(offer::Column::Priority, Expr::value(o.priority))
        .col_expr(offer::Column::Active, Expr::value(o.active))
        .col_expr(offer::Column::UpdatedAt, Expr::value(now))
        .filter(offer::Column::ProgramId.eq(program))
        .filter(offer::Column::Id.eq(o.offer_id.clone()))
        .exec(db)
        .await
        .map_err(|err: DbErr| match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => AppError::OfferCodeTaken,
            _ => err.into(),
        })?;
    bump_version(db, program).await
}

pub async fn find<C: ConnectionTrait>(db: &C, program: &str, id: &str) -> Result<Offer, AppError> {
    let row = offer::Entity::find_by_id(id)
        .filter(offer::Column::ProgramId.eq(program))
        .one(db)
        .await?
        .ok_or(AppError::OfferNotFound)?;
    decode(row)
}

pub async fn find_by_codes<C: ConnectionTrait>(
    db: &C,
    program: &str,
    codes: &[String],
) -> Result<Vec<Offer>, AppError> {
    offer::Entity::find()
        .filter(offer::Column::ProgramId.eq(program))
        .filter(offer::Column::Code.is_in(codes.iter().cloned()))
        .all(db)
        .await?
        .into_iter()
        .map(decode)
        .collect()
}

/// Active offers, highest priority first (the cache of `ListMemberOffers`).
pub async fn active<C: ConnectionTrait>(db: &C, program: &str) -> Result<Vec<Offer>, AppError> {
    offer::Entity::find()
        .filter(offer::Column::ProgramId.eq(program))
        .filter(offer::Column::Active.eq(true))
        .order_by_desc(offer::Column::Priority)
        .order_by_asc(offer::Column::Code)
        .all(db)
        .await?
        .into_iter()
        .map(decode)
        .collect()
}

/// The catalogue for admins, in code order after `after`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    program: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<Offer>, AppError> {
    let mut query = offer::Entity::find()
        .filter(offer::Column::ProgramId.eq(program))
        .order_by_asc(offer::Column::Code)
        .limit(limit);
    if let Some(after) = after {
        query = query.filter(offer::Column::Code.gt(after));
    }
    query.all(db).await?.into_iter().map(decode).collect()
}

/// A member's standing uses (not given back by a return) per offer, as (k: offer id,
/// n: uses), for the member `member` and with `not_returned` bound to false.
fn member_uses_sql(member: &str, not_returned: &str) -> String {
    format!(
        "SELECT u.offer_id AS k, CAST(COUNT(*) AS BIGINT) AS n FROM offer_uses u \
         WHERE u.member_id = {member} AND u.returned = {not_returned} GROUP BY u.offer_id"
    )
}

/// A member's standing uses (not given back by a return) per offer.
pub async fn member_uses<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
) -> Result<HashMap<String, i64>, AppError> {
    #[derive(FromQueryResult)]
    struct Uses {
        k: String,
        n: i64,
    }
    let rows = Uses::find_by_statement(super::statement(
        db,
        &member_uses_sql("$1", "$2"),
        [member_id.into(), false.into()],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.k, r.n)).collect())
}

/// Everything ListMemberOffers reads, in one statement: the member, the current ruleset
/// and catalogue versions, the member's spend since `since` and last purchase, the
/// member's standing uses per offer, and the standing total uses of `limited` offers.
/// `since` and `limited` come from the ruleset and catalogue the caller has cached; if
/// the versions returned show those moved, the caller reads the dependent parts again.
#[derive(Clone)]
pub struct MemberView {
    pub member: super::members::MemberRow,
    pub ruleset_version: Option<i64>,
    pub catalogue_version: i64,
    pub window_spend_minor: i64,
    pub last_purchase_at: Option<DateTime<Utc>>,
    pub uses: HashMap<String, i64>,
    pub totals: HashMap<String, i64>,
}

/// The views of the members `keys` name, one statement per kind of key whatever their
/// number; a key with no member has no view.
#[tracing::instrument(name = "db.offers.member_views", skip_all, fields(keys = keys.len()))]
pub async fn member_views<C: ConnectionTrait>(
    db: &C,
    program: &str,
    keys: &[crate::domain::MemberKey],
    since: DateTime<Utc>,
    limited: &[String],
) -> Result<Vec<MemberView>, AppError> {
    super::members::read_by_column(keys, |by, values| {
        member_views_by(db, program, by, values, since, limited)
    })
    .await
}

async fn member_views_by<C: ConnectionTrait>(
    db: &C,
    program: &str,
    by: &str,
    values: Vec<String>,
    since: DateTime<Utc>,
    limited: &[String],
) -> Result<Vec<MemberView>, AppError> {
    let backend = db.get_database_backend();
    let (among, keys) = super::in_values(backend, 1, values)?;
    let object = match backend {
        sea_orm::DbBackend::Postgres => "CAST(json_object_agg(k, n) AS TEXT)",
        _ => "json_group_object(k, n)",
    };
    let sql = format!(
        "SELECT m.*, {current} AS current_ruleset_version, \
         COALESCE((SELECT c.version FROM offer_catalogs c \
           WHERE c.program_id = m.program_id), 0) AS catalogue_version, \
         (SELECT {spend} FROM orders o WHERE o.member_id = m.id) AS window_spend, \
         (SELECT MAX(o.occurred_at) FROM orders o WHERE o.member_id = m.id) AS last_purchase_at, \
         (SELECT {object} FROM ({uses}) x) AS uses, \
         (SELECT {object} FROM (SELECT t.offer_id AS k, t.uses AS n FROM offer_counters t \
           WHERE t.offer_id {limited_ids}) y) AS totals \
         FROM members m WHERE m.{by} {among} AND m.program_id = $5",
        current = super::rules::CURRENT_VERSION_SQL,
        spend = super::rules::window_spend_sql("$2"),
        uses = member_uses_sql("m.id", "$3"),
        limited_ids = super::in_json_list(backend, 4),
    );
    let rows = db
        .query_all_raw(super::statement(
            db,
            &sql,
            [
                keys,
                since.into(),
                false.into(),
                super::json_text(&limited)?.into(),
                program.into(),
            ],
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let counts = |column: &str| -> Result<HashMap<String, i64>, AppError> {
                let text: Option<String> = row.try_get("", column)?;
                text.map_or(Ok(HashMap::new()), |t| {
                    serde_json::from_str(&t).map_err(|e| AppError::Internal(e.into()))
                })
            };
            Ok(MemberView {
                member: super::members::MemberRow::from_query_result(row, "")?,
                ruleset_version: row.try_get("", "current_ruleset_version")?,
                catalogue_version: row.try_get("", "catalogue_version")?,
                window_spend_minor: row.try_get("", "window_spend")?,
                last_purchase_at: row.try_get("", "last_purchase_at")?,
                uses: counts("uses")?,
                totals: counts("totals")?,
            })
        })
        .collect()
}

/// Standing uses in total per offer.
pub async fn total_uses<C: ConnectionTrait>(
    db: &C,
    offer_ids: &[String],
) -> Result<HashMap<String, i64>, AppError> {
    let rows = offer_counter::Entity::find()
        .filter(offer_counter::Column::OfferId.is_in(offer_ids.iter().cloned()))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|r| (r.offer_id, r.uses)).collect())
}

/// An offer's total uses, locked until the transaction ends, so concurrent checkouts
/// queue for the last uses of a limited offer.
pub async fn lock_counter<C: ConnectionTrait>(db: &C, offer_id: &str) -> Result<i64, AppError> {
    offer_counter::Entity::insert(offer_counter::ActiveModel {
        offer_id: Set(offer_id.to_owned()),
        uses: Set(0),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(db)
    .await?;
    Ok(offer_counter::Entity::find_by_id(offer_id)
        .lock_exclusive()
        .one(db)
        .await?
        .map_or(0, |r| r.uses))
}

async fn add_to_counter<C: ConnectionTrait>(
    db: &C,
    offer_id: &str,
    delta: i64,
) -> Result<(), AppError> {
    lock_counter(db, offer_id).await?;
    offer_counter::Entity::update_many()
        .col_expr(
            offer_counter::Column::Uses,
            Expr::col(offer_counter::Column::Uses).add(delta),
        )
        .filter(offer_counter::Column::OfferId.eq(offer_id))
        .exec(db)
        .await?;
    Ok(())
}

/// One use of an offer by an order.
#[derive(Debug, Clone)]
pub struct NewUse {
    pub offer_id: String,
    pub member_id: String,
    pub order_id: String,
    pub transaction_id: String,
    pub points: i64,
    pub discount_minor: i64,
    pub created_at: DateTime<Utc>,
}

pub async fn record_uses<C: ConnectionTrait>(db: &C, uses: Vec<NewUse>) -> Result<(), AppError> {
    for u in &uses {
        add_to_counter(db, &u.offer_id, 1).await?;
    }
    if !uses.is_empty() {
        offer_use::Entity::insert_many(uses.into_iter().map(|u| offer_use::ActiveModel {
            id: NotSet,
            offer_id: Set(u.offer_id),
            member_id: Set(u.member_id),
            order_id: Set(u.order_id),
            transaction_id: Set(u.transaction_id),
            points: Set(u.points),
            discount_minor: Set(u.discount_minor),
            returned: Set(false),
            created_at: Set(u.created_at),
        }))
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// Gives back every use the member's order made (its goods all came back). Returns how
/// many. Order ids are unique per programme only, so the member narrows them.
pub async fn give_back<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    order_id: &str,
) -> Result<u64, AppError> {
    let uses = offer_use::Entity::find()
        .filter(offer_use::Column::MemberId.eq(member_id))
        .filter(offer_use::Column::OrderId.eq(order_id))
        .filter(offer_use::Column::Returned.eq(false))
        .order_by_asc(offer_use::Column::OfferId)
        .all(db)
        .await?;
    for u in &uses {
        add_to_counter(db, &u.offer_id, -1).await?;
    }
    offer_use::Entity::update_many()
        .col_expr(offer_use::Column::Returned, Expr::value(true))
        .filter(offer_use::Column::MemberId.eq(member_id))
        .filter(offer_use::Column::OrderId.eq(order_id))
        .exec(db)
        .await?;
    Ok(uses.len() as u64)
}

#[derive(Debug, Default, FromQueryResult)]
pub struct UseTotals {
    pub uses: Option<i64>,
    pub points: Option<i64>,
    pub discount_minor: Option<i64>,
}

/// Standing uses of an offer, with the points and discounts they gave.
pub async fn totals<C: ConnectionTrait>(db: &C, offer_id: &str) -> Result<UseTotals, AppError> {
    Ok(offer_use::Entity::find()
        .select_only()
        .column_as(
            Expr::col(offer_use::Column::Id).count().cast_as("BIGINT"),
            "uses",
        )
        .column_as(
            Expr::col(offer_use::Column::Points).sum().cast_as("BIGINT"),
            "points",
        )
        .column_as(
            Expr::col(offer_use::Column::DiscountMinor)
                .sum()
                .cast_as("BIGINT"),
            "discount_minor",
        )
        .filter(offer_use::Column::OfferId.eq(offer_id))
        .filter(offer_use::Column::Returned.eq(false))
        .into_model::<UseTotals>()
        .one(db)
        .await?
        .unwrap_or_default())
}
