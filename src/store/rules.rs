//! Versioned rulesets, promotion usage, tier state and once-a-year bonus grants.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait, TryInsertResult,
    sea_query::{Expr, ExprTrait},
};

use super::entities::{
    bonus_grant, member,
    promotion_usage::{self, Column as UsageColumn, Entity as Usage},
    ruleset::{self, Column as RulesetColumn, Entity as Rulesets},
};
use crate::{domain::Ruleset, error::AppError};

/// The newest stored ruleset's version, if an admin ever stored one (rulesets are
/// immutable, so a version names its rules for good and callers may cache them).
pub async fn current_version<C: ConnectionTrait>(
    db: &C,
    program: &str,
) -> Result<Option<i64>, AppError> {
    Ok(Rulesets::find()
        .filter(RulesetColumn::ProgramId.eq(program))
        .select_only()
        .column_as(RulesetColumn::Version.max(), "v")
        .into_tuple::<Option<i64>>()
        .one(db)
        .await?
        .flatten())
}

/// The SQL of [`current_version`] for the programme of the member `m`, for folding into
/// a statement over `members m`.
pub const CURRENT_VERSION_SQL: &str =
    "(SELECT MAX(r.version) FROM rulesets r WHERE r.program_id = m.program_id)";

/// The stored ruleset of `version`.
pub async fn at_version<C: ConnectionTrait>(
    db: &C,
    program: &str,
    version: i64,
) -> Result<Ruleset, AppError> {
    let row = Rulesets::find_by_id(version)
        .filter(RulesetColumn::ProgramId.eq(program))
        .one(db)
        .await?
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("ruleset {version} missing")))?;
    let mut rules: Ruleset =
        serde_json::from_str(&row.body).map_err(|e| AppError::Internal(e.into()))?;
    rules.version = row.version;
    Ok(rules)
}

/// Stores `rules` as the next version; returns it with its version.
pub async fn store<C: ConnectionTrait>(
    db: &C,
    program: &str,
    mut rules: Ruleset,
    now: DateTime<Utc>,
) -> Result<Ruleset, AppError> {
    rules.version = 0;
    let body = serde_json::to_string(&rules).map_err(|e| AppError::Internal(e.into()))?;
    let inserted = Rulesets::insert(ruleset::ActiveModel {
        version: NotSet,
        program_id: Set(program.to_owned()),
        body: Set(body),
        created_at: Set(now),
    })
    .exec(db)
    .await?;
    rules.version = inserted.last_insert_id;
    Ok(rules)
}

/// Points a promotion has granted (`member_id` "" = in total), locked until the
/// transaction ends so concurrent accruals queue for the rest of the budget.
pub async fn lock_usage<C: ConnectionTrait>(
    db: &C,
    program: &str,
    rule_id: &str,
    member_id: &str,
) -> Result<i64, AppError> {
    Usage::insert(promotion_usage::ActiveModel {
        program_id: Set(program.to_owned()),
        rule_id: Set(rule_id.to_owned()),
        member_id: Set(member_id.to_owned()),
        points_used: Set(0),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(db)
    .await?;
    let row = Usage::find_by_id((program.to_owned(), rule_id.to_owned(), member_id.to_owned()))
        .lock_exclusive()
        .one(db)
        .await?;
    Ok(row.map_or(0, |r| r.points_used))
}

/// Same as [`lock_usage`] without locking or creating anything (quotes).
pub async fn read_usage<C: ConnectionTrait>(
    db: &C,
    program: &str,
    rule_id: &str,
    member_id: &str,
) -> Result<i64, AppError> {
    let row = Usage::find_by_id((program.to_owned(), rule_id.to_owned(), member_id.to_owned()))
        .one(db)
        .await?;
    Ok(row.map_or(0, |r| r.points_used))
}

pub async fn add_usage<C: ConnectionTrait>(
    db: &C,
    program: &str,
    rule_id: &str,
    member_id: &str,
    points: i64,
) -> Result<(), AppError> {
    Usage::update_many()
        .col_expr(
            UsageColumn::PointsUsed,
            Expr::col(UsageColumn::PointsUsed).add(points),
        )
        .filter(UsageColumn::ProgramId.eq(program))
        .filter(UsageColumn::RuleId.eq(rule_id))
        .filter(UsageColumn::MemberId.eq(member_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Qualifying points (earned by purchases, net of returns) and spend (net of returns)
/// of a member's orders since `since`.
pub async fn qualification<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    since: DateTime<Utc>,
) -> Result<(i64, i64), AppError> {
    Ok(qualifications(db, &[member_id], since)
        .await?
        .remove(member_id)
        .unwrap_or((0, 0)))
}

/// [`qualification`] of several members in one query; members without orders in the
/// window are left out.
pub async fn qualifications<C: ConnectionTrait>(
    db: &C,
    member_ids: &[&str],
    since: DateTime<Utc>,
) -> Result<std::collections::HashMap<String, (i64, i64)>, AppError> {
    #[derive(FromQueryResult)]
    struct Row {
        member_id: String,
        points: Option<i64>,
        spend: Option<i64>,
    }
    let sql = format!(
        "SELECT member_id, CAST(SUM(points_earned - points_reversed) AS BIGINT) AS points, \
         CAST(SUM(eligible_minor - eligible_returned) AS BIGINT) AS spend \
         FROM orders WHERE member_id {} AND occurred_at > $2 GROUP BY member_id",
        super::in_json_list(db.get_database_backend(), 1)
    );
    let rows = Row::find_by_statement(super::statement(
        db,
        &sql,
        [super::json_text(&member_ids)?.into(), since.into()],
    ))
    .all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.member_id, (r.points.unwrap_or(0), r.spend.unwrap_or(0))))
        .collect())
}

/// A member's spend after the parameter `since`, net of returns, over `orders o` (0
/// without orders). The window is inside CASE, not WHERE, so PostgreSQL's plan (the
/// member's orders by index) does not depend on it and one generic plan serves every call.
pub(super) fn window_spend_sql(since: &str) -> String {
    format!(
        "CAST(COALESCE(SUM(CASE WHEN o.occurred_at > {since} \
         THEN o.eligible_minor - o.eligible_returned ELSE 0 END), 0) AS BIGINT)"
    )
}

/// Spend since `since` (net of returns) and the last purchase ever, in one query over
/// the member's orders: what offer targeting needs.
pub async fn purchases<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    since: DateTime<Utc>,
) -> Result<(i64, Option<DateTime<Utc>>), AppError> {
    #[derive(FromQueryResult)]
    struct Purchases {
        spend: Option<i64>,
        last: Option<DateTime<Utc>>,
    }
    let sql = format!(
        "SELECT {} AS spend, MAX(o.occurred_at) AS last FROM orders o WHERE o.member_id = $1",
        window_spend_sql("$2")
    );
    let row =
        Purchases::find_by_statement(super::statement(db, &sql, [member_id.into(), since.into()]))
            .one(db)
            .await?;
    Ok(row.map_or((0, None), |r| (r.spend.unwrap_or(0), r.last)))
}

/// Records what a return took off an order's qualifying points and spend, and its lines
/// as they stand after it (quantities returned and points reversed per line), in one
/// statement.
pub async fn reduce_order<C: ConnectionTrait>(
    db: &C,
    program: &str,
    order_id: &str,
    points: i64,
    spend: i64,
    lines: &[super::ledger::OrderLine],
) -> Result<(), AppError> {
    use super::entities::order::{Column, Entity};
    Entity::update_many()
        .col_expr(
            Column::Lines,
            Expr::value(super::ledger::lines_json(lines)?),
        )
        .col_expr(
            Column::PointsReversed,
            Expr::col(Column::PointsReversed).add(points),
        )
        .col_expr(
            Column::EligibleReturned,
            Expr::col(Column::EligibleReturned).add(spend),
        )
        .filter(Column::ProgramId.eq(program))
        .filter(Column::OrderId.eq(order_id))
        .exec(db)
        .await?;
    Ok(())
}

pub async fn set_tier<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    tier_id: Option<&str>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<(), AppError> {
    member::Entity::update_many()
        .col_expr(
            member::Column::TierId,
            Expr::value(tier_id.map(str::to_owned)),
        )
        .col_expr(member::Column::TierSince, Expr::value(since))
        .col_expr(member::Column::TierUntil, Expr::value(until))
        .filter(member::Column::Id.eq(member_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Members of `program` whose tier period ended before `cutoff` (the grace period
/// already deducted).
pub async fn tiers_due<C: ConnectionTrait>(
    db: &C,
    program: &str,
    cutoff: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<String>, AppError> {
    Ok(member::Entity::find()
        .select_only()
        .column(member::Column::Id)
        .filter(member::Column::ProgramId.eq(program))
        .filter(member::Column::TierId.is_not_null())
        .filter(member::Column::TierUntil.lte(cutoff))
        .order_by_asc(member::Column::TierUntil)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// Records a once-a-year bonus; false when it was already granted (by any replica).
pub async fn claim_bonus<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
    kind: &str,
    year: i32,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let inserted = bonus_grant::Entity::insert(bonus_grant::ActiveModel {
        member_id: Set(member_id.to_owned()),
        kind: Set(kind.to_owned()),
        year: Set(year),
        created_at: Set(now),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(db)
    .await?;
    Ok(matches!(inserted, TryInsertResult::Inserted(n) if n > 0))
}

/// Members due a yearly bonus of `kind` in `year` who have not had it: born in
/// `birth_month` (birthday), or enrolled within one of `enrolled` (anniversary: the same
/// month of earlier years, as UTC ranges).
pub async fn bonus_candidates<C: ConnectionTrait>(
    db: &C,
    program: &str,
    kind: &str,
    year: i32,
    birth_month: Option<u32>,
    enrolled: &[(DateTime<Utc>, DateTime<Utc>)],
    limit: u64,
) -> Result<Vec<String>, AppError> {
    let granted = bonus_grant::Entity::find()
        .select_only()
        .column(bonus_grant::Column::MemberId)
        .filter(bonus_grant::Column::Kind.eq(kind))
        .filter(bonus_grant::Column::Year.eq(year))
        .into_query();
    let mut when = Condition::any();
    if let Some(month) = birth_month {
        when = when.add(member::Column::BirthMonth.eq(i16::try_from(month).unwrap_or(0)));
    }
    for (from, to) in enrolled {
        when = when.add(
            member::Column::EnrolledAt
                .gte(*from)
                .and(member::Column::EnrolledAt.lt(*to)),
        );
    }
    if birth_month.is_none() && enrolled.is_empty() {
        return Ok(Vec::new());
    }
    Ok(member::Entity::find()
        .select_only()
        .column(member::Column::Id)
        .filter(member::Column::ProgramId.eq(program))
        .filter(when)
        .filter(member::Column::Id.not_in_subquery(granted))
        .order_by_asc(member::Column::Id)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?)
}

/// The first enrolment in `program`, to bound how many years back anniversaries can go.
pub async fn first_enrolment<C: ConnectionTrait>(
    db: &C,
    program: &str,
) -> Result<Option<DateTime<Utc>>, AppError> {
    Ok(member::Entity::find()
        .select_only()
        .column(member::Column::EnrolledAt)
        .filter(member::Column::ProgramId.eq(program))
        .order_by_asc(member::Column::EnrolledAt)
        .into_tuple()
        .one(db)
        .await?)
}

#[derive(Debug, FromQueryResult)]
struct PurchaseFacts {
    member_id: String,
    last_purchase: Option<DateTime<Utc>>,
    spend: Option<i64>,
}

/// Last purchase and spend since `since` (net of returns) for many members in one query.
pub async fn purchase_facts<C: ConnectionTrait>(
    db: &C,
    member_ids: &[String],
    since: DateTime<Utc>,
) -> Result<std::collections::HashMap<String, (Option<DateTime<Utc>>, i64)>, AppError> {
    use super::entities::order::{Column, Entity};
    if member_ids.is_empty() {
        return Ok(Default::default());
    }
    let spend = Expr::case(
        Column::OccurredAt.gt(since),
        Expr::col(Column::EligibleMinor).sub(Expr::col(Column::EligibleReturned)),
    )
    .finally(0);
    let rows = Entity::find()
        .select_only()
        .column(Column::MemberId)
        .column_as(Expr::col(Column::OccurredAt).max(), "last_purchase")
        .column_as(Expr::expr(spend).sum().cast_as("BIGINT"), "spend")
        .filter(Column::MemberId.is_in(member_ids.iter().cloned()))
        .group_by(Column::MemberId)
        .into_model::<PurchaseFacts>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.member_id, (r.last_purchase, r.spend.unwrap_or(0))))
        .collect())
}

/// Serialises rule changes so two admins cannot overwrite each other's edits (SQLite
/// has one writer at a time already).
pub async fn lock_for_change<C: ConnectionTrait>(txn: &C) -> Result<(), AppError> {
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7342001)")
            .await?;
    }
    Ok(())
}
