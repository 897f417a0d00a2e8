//! Churn-risk scores: computed for a batch of members by the jobs and on feedback, and
//! for a member who has just enrolled.
use chrono::{DateTime, Utc};

use crate::{
    domain::insights::{ChurnRisk, RfmBands, RfmInput, SurveyKind, churn_risk},
    error::AppError,
    store::feedback::{self as rows, RiskRow},
};

/// Scores a batch of members and stores the scores (a fixed number of queries).
pub(crate) async fn score_members<C: sea_orm::ConnectionTrait>(
    db: &C,
    program: &str,
    member_ids: &[String],
    window: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let facts = rows::risk_facts(db, member_ids, now - window).await?;
    let bands = RfmBands::default();
    let days = |at: DateTime<Utc>| (now - at).num_days().max(0);
    let scored = facts
        .into_iter()
        .filter_map(|(member_id, f)| {
            let enrolled_at = f.enrolled_at?;
            let input = RfmInput {
                days_since_purchase: f.last_purchase.map(days),
                days_since_enrolment: days(enrolled_at),
                orders: f.orders,
                spend_minor: f.spend_minor,
                // A row of an unknown survey (a newer release's) gives no signal rather
                // than stopping the whole scoring run.
                satisfaction: f
                    .latest_feedback
                    .and_then(|(kind, score)| Some(SurveyKind::parse(&kind)?.satisfaction(score))),
                open_complaints: f.open_complaints,
            };
            let ChurnRisk { score, reasons, .. } = churn_risk(&input, &bands);
            let recency = input
                .days_since_purchase
                .unwrap_or(-input.days_since_enrolment.max(1));
            Some(RiskRow {
                member_id,
                program_id: program.to_owned(),
                score,
                recency_days: Some(i32::try_from(recency).unwrap_or(i32::MAX)),
                frequency: i32::try_from(input.orders).unwrap_or(i32::MAX),
                monetary_minor: input.spend_minor,
                satisfaction: input.satisfaction.map(|s| s.as_str().to_owned()),
                open_complaints: i32::try_from(input.open_complaints).unwrap_or(i32::MAX),
                reasons: reasons.join("; "),
                scored_at: now,
            })
        })
        .collect();
    rows::upsert_risk(db, scored).await
}

/// The score of a member who has just enrolled (no purchase, no feedback yet), so that
/// every member is ranked from day one; the jobs keep it current.
pub(crate) fn initial_risk(program: &str, member_id: &str, now: DateTime<Utc>) -> RiskRow {
    let input = RfmInput {
        days_since_purchase: None,
        days_since_enrolment: 0,
        orders: 0,
        spend_minor: 0,
        satisfaction: None,
        open_complaints: 0,
    };
    let risk = churn_risk(&input, &RfmBands::default());
    RiskRow {
        member_id: member_id.to_owned(),
        program_id: program.to_owned(),
        score: risk.score,
        recency_days: Some(-1),
        frequency: 0,
        monetary_minor: 0,
        satisfaction: None,
        open_complaints: 0,
        reasons: risk.reasons.join("; "),
        scored_at: now,
    }
}
