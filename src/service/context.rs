//! The programme context every use case shares: the store, the programme's settings, the
//! ruleset in force (cached per replica) and the metrics. Use cases depend on it, not on
//! each other.
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Months, Utc};

use crate::{
    config::Program,
    domain::{MemberFacts, Ruleset},
    error::AppError,
    store::{Store, members::MemberRow, rules},
};

#[derive(Clone)]
pub struct ProgramContext {
    pub(super) store: Store,
    /// Shared: every queued accrual carries a clone of its programme's context.
    pub(super) program: Arc<Program>,
    pub(super) metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The configured base rate, in force until an admin stores a ruleset.
    default_rules: Arc<Ruleset>,
    /// The last stored ruleset this replica read: rulesets are immutable, so a version
    /// read in a transaction names its rules for good (no JSON parsing per call).
    rules_cache: Arc<Mutex<Option<Arc<Ruleset>>>>,
}

impl ProgramContext {
    pub fn new(store: Store, program: Program) -> Self {
        Self {
            store,
            default_rules: Arc::new(program.default_rules.clone()),
            program: Arc::new(program),
            metrics: None,
            rules_cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The store, scoped to this programme.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Counts points accrued and redeemed in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The ruleset in force.
    pub async fn program(&self) -> Result<Ruleset, AppError> {
        Ok((*self.ruleset(self.store.conn()).await?).clone())
    }

    /// Accrued points wait out a return window before they can be spent.
    pub(super) fn accrues_pending(&self) -> bool {
        self.program.pending_window > chrono::Duration::zero()
    }

    /// Counts points that a fresh (not replayed) call earned or spent.
    pub(super) fn count(&self, accrued: i64, redeemed: i64) {
        if let Some(m) = &self.metrics {
            let program = [opentelemetry::KeyValue::new(
                "program",
                self.store.program().to_owned(),
            )];
            if accrued > 0 {
                m.points_accrued.add(accrued.unsigned_abs(), &program);
            }
            if redeemed > 0 {
                m.points_redeemed.add(redeemed.unsigned_abs(), &program);
            }
        }
    }

    /// The ruleset in force: the newest an admin stored, else the configured base rate.
    pub(super) async fn ruleset<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
    ) -> Result<Arc<Ruleset>, AppError> {
        let version = rules::current_version(db, self.store.program()).await?;
        self.ruleset_at(db, version).await
    }

    /// The newest ruleset this replica has read (the configured base rate before any),
    /// without asking the database whether it is still current.
    pub(super) fn cached_ruleset(&self) -> Arc<Ruleset> {
        self.rules_cache
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or_else(|| Arc::clone(&self.default_rules))
    }

    /// The ruleset of `version` (`None`: the configured base rate), from the cache when
    /// this replica has read it before.
    pub(super) async fn ruleset_at<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
        version: Option<i64>,
    ) -> Result<Arc<Ruleset>, AppError> {
        let Some(version) = version else {
            return Ok(Arc::clone(&self.default_rules));
        };
        let cached = self
            .rules_cache
            .lock()
            .ok()
            .and_then(|c| c.as_ref().filter(|r| r.version == version).cloned());
        if let Some(rules) = cached {
            return Ok(rules);
        }
        let rules = Arc::new(rules::at_version(db, self.store.program(), version).await?);
        if let Ok(mut cache) = self.rules_cache.lock() {
            // Keep the newest: a slow reader of an old version must not evict it.
            if cache.as_ref().is_none_or(|c| c.version < version) {
                *cache = Some(Arc::clone(&rules));
            }
        }
        Ok(rules)
    }
}

/// When the rolling qualification window that ends `now` started.
pub(super) fn window_start(rules: &Ruleset, now: DateTime<Utc>) -> DateTime<Utc> {
    now.checked_sub_months(Months::new(rules.tier_window_months))
        .unwrap_or(now)
}

/// What offer targeting needs to know about a member, read at `at`.
pub(crate) async fn member_facts<C: sea_orm::ConnectionTrait>(
    db: &C,
    ruleset: &Ruleset,
    member: &MemberRow,
    at: DateTime<Utc>,
) -> Result<MemberFacts, AppError> {
    let (spend, last_purchase_at) =
        rules::purchases(db, &member.id, window_start(ruleset, at)).await?;
    Ok(facts_of(member, spend, last_purchase_at))
}

/// The targeting facts of a member whose window spend and last purchase are known.
pub(crate) fn facts_of(
    member: &MemberRow,
    window_spend_minor: i64,
    last_purchase_at: Option<DateTime<Utc>>,
) -> MemberFacts {
    MemberFacts {
        tier_id: member.tier_id.clone(),
        tags: crate::store::members::split_tags(&member.tags),
        enrolled_at: member.enrolled_at,
        last_purchase_at,
        birth_month: member.birth_month.and_then(|m| u32::try_from(m).ok()),
        window_spend_minor,
    }
}
