//! What the programme's rules do besides pricing a basket: tier changes, yearly bonuses
//! and referral bonuses. All run inside the caller's write transaction.
use chrono::{DateTime, Months, Utc};

use super::context::ProgramContext;
use crate::{
    domain::{
        Ruleset,
        events::{EventDetail, kind},
    },
    error::AppError,
    store::{
        WriteTxn,
        members::{self, MemberRow},
        rules,
    },
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
        super::events::record(
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

use super::wallet::grant_bonus_or_skip;

/// Whether the member was referred and the referral bonus is still to be paid.
pub(super) fn referral_pending(member: &MemberRow) -> bool {
    member.referral_status.as_deref() == Some("PENDING")
}

/// Pays both referral bonuses once the referred member's first purchase counts for
/// good (not pending); true when this call paid them. Exactly once per referred member: the status flips in the same
/// transaction. The referrer enrolled earlier, so locks always go from newer to older
/// member and cannot deadlock.
pub(super) async fn reward_referral(
    ctx: &ProgramContext,
    txn: &WriteTxn,
    rules: &Ruleset,
    referred: &MemberRow,
) -> Result<bool, AppError> {
    // Most members were never referred: then there is nothing to claim and no query.
    if !referral_pending(referred) {
        return Ok(false);
    }
    let referred_id = referred.id.as_str();
    let Some(referrer_id) = members::claim_referral(&**txn, referred_id).await? else {
        return Ok(false);
    };
    let transaction_id = uuid::Uuid::now_v7().to_string();
    grant_bonus_or_skip(
        ctx,
        txn,
        referred_id,
        rules.referral_bonus_referred,
        "REFERRAL",
        &transaction_id,
    )
    .await?;
    members::lock(&**txn, &super::stored_member(&referrer_id)?).await?;
    grant_bonus_or_skip(
        ctx,
        txn,
        &referrer_id,
        rules.referral_bonus_referrer,
        "REFERRAL",
        &transaction_id,
    )
    .await?;
    Ok(true)
}
