//! Programme administration: the versioned ruleset (earn rules, exclusions, bonuses,
//! tiers) and members' tier status.
use chrono::{DateTime, Utc};

use super::{
    Mutation,
    context::ProgramContext,
    context::window_start,
    idempotency::{Begun, begin, finish, once},
};
use crate::{
    domain::{MemberKey, ProgramField, Ruleset, Tier},
    error::{AppError, FieldViolation},
    store::{members, rules},
};

/// A member's tier and how far they are from the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierStatus {
    pub member_id: String,
    pub tier: Option<Tier>,
    pub tier_since: Option<DateTime<Utc>>,
    /// End of the current tier period.
    pub period_end: Option<DateTime<Utc>>,
    /// The tier is kept at least until then (period end plus grace).
    pub kept_until: Option<DateTime<Utc>>,
    pub qualifying_points: i64,
    pub qualifying_spend_minor: i64,
    pub next_tier: Option<Tier>,
    pub points_to_next: i64,
    pub spend_to_next_minor: i64,
}

fn invalid(problems: Vec<(String, String)>, prefix: &str) -> AppError {
    AppError::InvalidArgument(
        problems
            .into_iter()
            .map(|(f, d)| FieldViolation::new(format!("{prefix}{f}"), d))
            .collect(),
    )
}

/// The programme's rules, tiers and settings, and where a member stands in the tiers.
#[derive(Clone)]
pub struct ProgramAdmin {
    ctx: ProgramContext,
}

impl std::ops::Deref for ProgramAdmin {
    type Target = ProgramContext;

    fn deref(&self) -> &ProgramContext {
        &self.ctx
    }
}

impl ProgramAdmin {
    pub fn new(ctx: ProgramContext) -> Self {
        Self { ctx }
    }
    /// Changes `fields` of the programme to `new`'s (every field but the tiers, which
    /// change through [`Self::upsert_tier`], for a full replace) as a new ruleset
    /// version. The fields are merged into the version in force under the rules lock, so
    /// concurrent partial updates never undo each other.
    #[tracing::instrument(name = "program.update", skip_all)]
    pub async fn update_program(
        &self,
        mutation: &Mutation,
        new: Ruleset,
        fields: &[ProgramField],
    ) -> Result<Ruleset, AppError> {
        let key = mutation.key("UpdateProgram");
        once(&self.store, &key, async {
            let txn = match begin::<Ruleset>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            rules::lock_for_change(&*txn).await?;
            let current = self.ruleset(&*txn).await?;
            let next = current.with_fields(&new, fields);
            let problems = next.validate();
            if !problems.is_empty() {
                return Err(invalid(problems, "program."));
            }
            let stored = rules::store(&*txn, txn.program(), next, self.store.now()).await?;
            finish(txn, &key, &stored).await?;
            tracing::info!(version = stored.version, "programme rules updated");
            Ok(stored)
        })
        .await
    }

    /// Adds a tier or replaces the one with the same id, as a new ruleset version.
    #[tracing::instrument(name = "program.upsert_tier", skip_all)]
    pub async fn upsert_tier(&self, mutation: &Mutation, tier: Tier) -> Result<Ruleset, AppError> {
        let key = mutation.key("UpsertTier");
        once(&self.store, &key, async {
            let txn = match begin::<Ruleset>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            rules::lock_for_change(&*txn).await?;
            let mut next = (*self.ruleset(&*txn).await?).clone();
            let position = next.tiers.iter().position(|t| t.tier_id == tier.tier_id);
            let index = match position {
                Some(i) => {
                    next.tiers[i] = tier;
                    i
                }
                None => {
                    next.tiers.push(tier);
                    next.tiers.len() - 1
                }
            };
            // Every problem of the new ladder is the submitted tier's fault (the rest was valid
            // before), so report each as a field of the request, whichever index names it.
            let problems: Vec<(String, String)> = next
                .validate()
                .into_iter()
                .filter(|(field, _)| field.starts_with("tiers["))
                .map(|(field, d)| match field.split_once("].") {
                    Some((at, f)) if at == format!("tiers[{index}") => (f.to_owned(), d),
                    Some((_, f)) => (f.to_owned(), format!("{d} (conflicts with another tier)")),
                    None => (field, d),
                })
                .collect();
            if !problems.is_empty() {
                return Err(invalid(problems, "tier."));
            }
            next.tiers.sort_by_key(|t| t.rank);
            let stored = rules::store(&*txn, txn.program(), next, self.store.now()).await?;
            finish(txn, &key, &stored).await?;
            Ok(stored)
        })
        .await
    }

    #[tracing::instrument(name = "program.tier_status", skip_all)]
    pub async fn tier_status(&self, member: &MemberKey) -> Result<TierStatus, AppError> {
        let db = self.store.conn();
        let row = members::find(db, self.store.program(), member).await?;
        let ruleset = self.ruleset(db).await?;
        let now = self.store.db_now(db).await?;
        let (points, spend) =
            rules::qualification(db, &row.id, window_start(&ruleset, now)).await?;
        let tier = row
            .tier_id
            .as_deref()
            .and_then(|t| ruleset.tier(t))
            .cloned();
        let next = ruleset
            .next_tier(tier.as_ref().map(|t| t.tier_id.as_str()))
            .cloned();
        let grace = chrono::Duration::days(i64::from(ruleset.tier_grace_days));
        Ok(TierStatus {
            member_id: row.id,
            period_end: row.tier_until,
            kept_until: row.tier_until.map(|u| u + grace),
            tier_since: row.tier_since,
            qualifying_points: points,
            qualifying_spend_minor: spend,
            points_to_next: next
                .as_ref()
                .and_then(|n| n.threshold_points)
                .map_or(0, |t| (t - points).max(0)),
            spend_to_next_minor: next
                .as_ref()
                .and_then(|n| n.threshold_spend_minor)
                .map_or(0, |t| (t - spend).max(0)),
            next_tier: next,
            tier,
        })
    }
}
