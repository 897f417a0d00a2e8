//! Tier changes: a member's tier reviewed after an accrual, a return or the end of a tier
//! period. Runs inside the caller's write transaction.
use chrono::{DateTime, Months, Utc};

use crate::{
    domain::{
        Ruleset,
        events::{EventDetail, kind},
    },
    error::AppError,
    store::{WriteTxn, members::MemberRow, rules},
};

use super::context::window_start;

fn period_end(rules: &Ruleset, now: DateTime<Utc>) -> DateTime<Utc> {
    crate::store::truncate(
        now.checked_add_months(Months::new(rules.tier_window_months))
            .unwrap_or(now),
    )
}

/// How a tier review may move a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Review {
    /// After an accrual: only upward.
    UpOnly,
    /// After a return: down at once when the member no longer qualifies.
    DownOnly,
    /// At the end of a tier period (after grace): renew, or move to what they qualify for.
    PeriodEnd,
}

/// Re-evaluates the member's tier; returns the tier id after the review.
pub(super) async fn review_tier(
    txn: &WriteTxn,
    rules: &Ruleset,
    member: &MemberRow,
    now: DateTime<Utc>,
    review: Review,
) -> Result<Option<String>, AppError> {
    if rules.tiers.is_empty() {
        return Ok(member.tier_id.clone());
    }
    let (points, spend) =
        rules::qualification(&**txn, &member.id, window_start(rules, now)).await?;
    let qualified = rules.qualified_tier(points, spend);
    let current = member.tier_id.as_deref().and_then(|t| rules.tier(t));
    let rank = |t: Option<&crate::domain::Tier>| t.map_or(i32::MIN, |t| t.rank);
    let target = match review {
        Review::UpOnly if rules.qualifies_above(member.tier_id.as_deref(), points, spend) => {
            qualified
        }
        Review::DownOnly if rank(qualified) < rank(current) => qualified,
        Review::PeriodEnd if rank(qualified) >= rank(current) && current.is_some() => {
            // Still qualifies (or better): a new period at the higher of the two.
            qualified
        }
        Review::PeriodEnd => qualified,
        _ => return Ok(member.tier_id.clone()),
    };
    let tier_id = target.map(|t| t.tier_id.clone());
    let until = target.map(|_| period_end(rules, now));
    rules::set_tier(
        &**txn,
        &member.id,
        tier_id.as_deref(),
        target.map(|_| now),
        until,
    )
    .await?;
    if tier_id != member.tier_id {
        super::ledger::record(
            &**txn,
            &member.id,
            kind::TIER_CHANGED,
            None,
            &EventDetail::TierChange {
                from_tier_id: member.tier_id.clone(),
                to_tier_id: tier_id.clone(),
            },
            now,
        )
        .await?;
        tracing::info!(member_id = %member.id, from = ?member.tier_id, to = ?tier_id, "tier changed");
    }
    Ok(tier_id)
}
