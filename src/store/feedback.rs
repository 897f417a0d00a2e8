//! Feedback, complaint cases and the churn-risk scores ranked for CRM.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict},
};

use super::entities::{complaint, feedback, member, member_risk, order};
pub use super::entities::{
    complaint::Model as ComplaintRow, feedback::Model as FeedbackRow, member_risk::Model as RiskRow,
};
use crate::error::AppError;

pub const OPEN: &str = "OPEN";
pub const RESOLVED: &str = "RESOLVED";

pub async fn insert_feedback<C: ConnectionTrait>(db: &C, row: FeedbackRow) -> Result<(), AppError> {
    feedback::Entity::insert(feedback::ActiveModel::from(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Whether an order's feedback already earned the bonus.
pub async fn bonus_paid_for_order<C: ConnectionTrait>(
    db: &C,
    program: &str,
    order_id: &str,
) -> Result<bool, AppError> {
    Ok(feedback::Entity::find()
        .select_only()
        .column(feedback::Column::Id)
        .filter(feedback::Column::ProgramId.eq(program))
        .filter(feedback::Column::OrderId.eq(order_id))
        .filter(feedback::Column::BonusPoints.gt(0))
        .into_tuple::<String>()
        .one(db)
        .await?
        .is_some())
}

pub async fn insert_complaint<C: ConnectionTrait>(
    db: &C,
    row: ComplaintRow,
) -> Result<(), AppError> {
    complaint::Entity::insert(complaint::ActiveModel::from(row))
        .exec_without_returning(db)
        .await?;
    Ok(())
}

pub async fn find_complaint<C: ConnectionTrait>(
    db: &C,
    program: &str,
    id: &str,
) -> Result<Option<ComplaintRow>, AppError> {
    Ok(complaint::Entity::find_by_id(id.to_owned())
        .filter(complaint::Column::ProgramId.eq(program))
        .one(db)
        .await?)
}

/// Closes an open complaint; false when it was no longer open (someone else closed it).
pub async fn resolve_complaint<C: ConnectionTrait>(
    db: &C,
    row: &ComplaintRow,
) -> Result<bool, AppError> {
    let done = complaint::Entity::update_many()
        .col_expr(complaint::Column::Status, Expr::value(RESOLVED))
        .col_expr(complaint::Column::Outcome, Expr::value(row.outcome.clone()))
        .col_expr(
            complaint::Column::GoodwillPoints,
            Expr::value(row.goodwill_points),
        )
        .col_expr(complaint::Column::Note, Expr::value(row.note.clone()))
        .col_expr(complaint::Column::ResolvedAt, Expr::value(row.resolved_at))
        .col_expr(
            complaint::Column::ResolutionSeconds,
            Expr::value(row.resolution_seconds),
        )
        .filter(complaint::Column::Id.eq(row.id.as_str()))
        .filter(complaint::Column::Status.eq(OPEN))
        .exec(db)
        .await?;
    Ok(done.rows_affected == 1)
}

/// Response counts in `[start, end)` by kind, score, tier and store (one grouped query).
#[derive(Debug, Clone, FromQueryResult)]
pub struct ScoreCount {
    pub kind: String,
    pub score: i32,
    pub tier_id: Option<String>,
    pub store_id: Option<String>,
    pub responses: i64,
}

pub async fn score_counts<C: ConnectionTrait>(
    db: &C,
    program: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<ScoreCount>, AppError> {
    Ok(feedback::Entity::find()
        .select_only()
        .column(feedback::Column::Kind)
        .column(feedback::Column::Score)
        .column(feedback::Column::TierId)
        .column(feedback::Column::StoreId)
        .column_as(feedback::Column::Id.count(), "responses")
        .filter(feedback::Column::ProgramId.eq(program))
        .filter(feedback::Column::CreatedAt.gte(start))
        .filter(feedback::Column::CreatedAt.lt(end))
        .group_by(feedback::Column::Kind)
        .group_by(feedback::Column::Score)
        .group_by(feedback::Column::TierId)
        .group_by(feedback::Column::StoreId)
        .into_model::<ScoreCount>()
        .all(db)
        .await?)
}

/// Complaints opened in `[start, end)`: tier, store and, once resolved, seconds taken.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ComplaintFact {
    pub tier_id: Option<String>,
    pub store_id: Option<String>,
    pub resolution_seconds: Option<i64>,
}

pub async fn complaints_opened<C: ConnectionTrait>(
    db: &C,
    program: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<ComplaintFact>, AppError> {
    Ok(complaint::Entity::find()
        .select_only()
        .column(complaint::Column::TierId)
        .column(complaint::Column::StoreId)
        .column(complaint::Column::ResolutionSeconds)
        .filter(complaint::Column::ProgramId.eq(program))
        .filter(complaint::Column::OpenedAt.gte(start))
        .filter(complaint::Column::OpenedAt.lt(end))
        .into_model::<ComplaintFact>()
        .all(db)
        .await?)
}

/// What churn scoring reads for a batch of members (a fixed number of queries per batch).
#[derive(Debug, Clone, Default)]
pub struct RiskFacts {
    pub enrolled_at: Option<DateTime<Utc>>,
    pub last_purchase: Option<DateTime<Utc>>,
    pub orders: i64,
    pub spend_minor: i64,
    /// Latest feedback in the window: (kind, score).
    pub latest_feedback: Option<(String, i32)>,
    pub open_complaints: i64,
}

pub async fn risk_facts<C: ConnectionTrait>(
    db: &C,
    member_ids: &[String],
    since: DateTime<Utc>,
) -> Result<HashMap<String, RiskFacts>, AppError> {
    let mut facts: HashMap<String, RiskFacts> = HashMap::new();
    if member_ids.is_empty() {
        return Ok(facts);
    }
    let ids = member_ids.iter().map(String::as_str);
    for (id, enrolled_at) in member::Entity::find()
        .select_only()
        .column(member::Column::Id)
        .column(member::Column::EnrolledAt)
        .filter(member::Column::Id.is_in(ids.clone()))
        .into_tuple::<(String, DateTime<Utc>)>()
        .all(db)
        .await?
    {
        facts.entry(id).or_default().enrolled_at = Some(enrolled_at);
    }
    #[derive(FromQueryResult)]
    struct Orders {
        member_id: String,
        orders: i64,
        spend: Option<i64>,
        last: Option<DateTime<Utc>>,
    }
    for row in order::Entity::find()
        .select_only()
        .column(order::Column::MemberId)
        .column_as(order::Column::OrderId.count(), "orders")
        .column_as(
            Expr::cust("CAST(SUM(eligible_minor - eligible_returned) AS BIGINT)"),
            "spend",
        )
        .column_as(order::Column::OccurredAt.max(), "last")
        .filter(order::Column::MemberId.is_in(ids.clone()))
        .filter(order::Column::OccurredAt.gte(since))
        .group_by(order::Column::MemberId)
        .into_model::<Orders>()
        .all(db)
        .await?
    {
        let f = facts.entry(row.member_id).or_default();
        f.orders = row.orders;
        f.spend_minor = row.spend.unwrap_or(0);
        f.last_purchase = row.last;
    }
    for (member_id, kind, score) in feedback::Entity::find()
        .select_only()
        .column(feedback::Column::MemberId)
        .column(feedback::Column::Kind)
        .column(feedback::Column::Score)
        .filter(feedback::Column::MemberId.is_in(ids.clone()))
        .filter(feedback::Column::CreatedAt.gte(since))
        // Oldest first: the last one seen per member is their latest.
        .order_by_asc(feedback::Column::CreatedAt)
        .order_by_asc(feedback::Column::Id)
        .into_tuple::<(String, String, i32)>()
        .all(db)
        .await?
    {
        facts.entry(member_id).or_default().latest_feedback = Some((kind, score));
    }
    for (member_id, open) in complaint::Entity::find()
        .select_only()
        .column(complaint::Column::MemberId)
        .column_as(complaint::Column::Id.count(), "open")
        .filter(complaint::Column::MemberId.is_in(ids))
        .filter(complaint::Column::Status.eq(OPEN))
        .group_by(complaint::Column::MemberId)
        .into_tuple::<(String, i64)>()
        .all(db)
        .await?
    {
        facts.entry(member_id).or_default().open_complaints = open;
    }
    Ok(facts)
}

/// Writes scores (insert or replace, one statement).
pub async fn upsert_risk<C: ConnectionTrait>(db: &C, rows: Vec<RiskRow>) -> Result<(), AppError> {
    if rows.is_empty() {
        return Ok(());
    }
    member_risk::Entity::insert_many(rows.into_iter().map(member_risk::ActiveModel::from))
        .on_conflict(
            OnConflict::column(member_risk::Column::MemberId)
                .update_columns([
                    member_risk::Column::Score,
                    member_risk::Column::RecencyDays,
                    member_risk::Column::Frequency,
                    member_risk::Column::MonetaryMinor,
                    member_risk::Column::Satisfaction,
                    member_risk::Column::OpenComplaints,
                    member_risk::Column::Reasons,
                    member_risk::Column::ScoredAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// Members whose score was computed before `before`, stalest first, up to `limit`
/// (every member has a score from enrolment on).
pub async fn stale_scores<C: ConnectionTrait>(
    db: &C,
    program: &str,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<String>, AppError> {
    Ok(member_risk::Entity::find()
        .select_only()
        .column(member_risk::Column::MemberId)
        .filter(member_risk::Column::ProgramId.eq(program))
        .filter(member_risk::Column::ScoredAt.lt(before))
        .order_by_asc(member_risk::Column::ScoredAt)
        .limit(limit)
        .into_tuple::<String>()
        .all(db)
        .await?)
}

/// One page of the risk ranking: highest score first, ties by member id descending
/// (both directions match the index read backwards), after the keyset `(score, id)`.
pub async fn ranked<C: ConnectionTrait>(
    db: &C,
    program: &str,
    min_score: i32,
    after: Option<(i32, String)>,
    limit: u64,
) -> Result<Vec<RiskRow>, AppError> {
    let mut query = member_risk::Entity::find()
        .filter(member_risk::Column::ProgramId.eq(program))
        .filter(member_risk::Column::Score.gte(min_score));
    if let Some((score, id)) = after {
        query = query.filter(
            member_risk::Column::Score
                .lt(score)
                .or(member_risk::Column::Score
                    .eq(score)
                    .and(member_risk::Column::MemberId.lt(id))),
        );
    }
    Ok(query
        .order_by_desc(member_risk::Column::Score)
        .order_by_desc(member_risk::Column::MemberId)
        .limit(limit)
        .all(db)
        .await?)
}

/// Erasure: free text a member wrote or staff wrote about them goes; scores stay.
pub async fn erase_texts<C: ConnectionTrait>(db: &C, member_id: &str) -> Result<(), AppError> {
    feedback::Entity::update_many()
        .col_expr(
            feedback::Column::Comment,
            Expr::value(Option::<String>::None),
        )
        .filter(feedback::Column::MemberId.eq(member_id))
        .exec(db)
        .await?;
    complaint::Entity::update_many()
        .col_expr(complaint::Column::Note, Expr::value(Option::<String>::None))
        .filter(complaint::Column::MemberId.eq(member_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Every feedback response and complaint of a member, oldest first (export).
pub async fn for_member<C: ConnectionTrait>(
    db: &C,
    member_id: &str,
) -> Result<(Vec<FeedbackRow>, Vec<ComplaintRow>), AppError> {
    let feedback = feedback::Entity::find()
        .filter(feedback::Column::MemberId.eq(member_id))
        .order_by_asc(feedback::Column::CreatedAt)
        .order_by_asc(feedback::Column::Id)
        .all(db)
        .await?;
    let complaints = complaint::Entity::find()
        .filter(complaint::Column::MemberId.eq(member_id))
        .order_by_asc(complaint::Column::OpenedAt)
        .order_by_asc(complaint::Column::Id)
        .all(db)
        .await?;
    Ok((feedback, complaints))
}
