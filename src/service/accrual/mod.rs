//! Accrual: a basket priced by the rules and offers, planned as a posting, written with
//! its order. The batched path (`accrual_batch`) shares the planner.
mod batch;

pub(crate) use batch::{AccrualQueue, start as start_batching};

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::service::{
    Mutation,
    context::{ProgramContext, member_facts},
    ledger,
    tiers::{Review, review_tier},
    views::BalanceView,
    wallet::{self, referral_pending, reward_referral},
};
use crate::{
    domain::{
        AccrualInput, AccrualPlan, BasketLine, Channel, Currency, EarnContext, EarnRule,
        LineEarning, LotSource, MemberKey, OfferContext, OfferEffect, OfferStatus, OffersApplied,
        RulesEarning, Ruleset, ShortId, TierOutlook, apply_offers,
        events::{EventDetail, kind},
        month_in, plan_accrual,
    },
    error::{AppError, FieldViolation},
    store::{
        WriteTxn, idempotency,
        ledger::{self as entries, OrderLine, OrderRow},
        members::{self, MemberRow},
        offers::{self, NewUse},
        rules,
    },
};

/// Most lines one basket may have.
pub const MAX_BASKET_LINES: usize = 500;
/// How far in the future a till's clock may be before `occurred_at` is refused.
const MAX_CLOCK_SKEW_SECS: i64 = 300;

/// A validated accrual request.
#[derive(Debug, Clone)]
pub struct AccrueCommand {
    pub member: MemberKey,
    pub order_id: ShortId,
    pub store_id: ShortId,
    pub channel: Channel,
    pub currency: Currency,
    pub lines: Vec<BasketLine>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// Offer codes the member uses on this basket.
    pub offer_codes: Vec<String>,
}

/// What one offer code did to a basket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferOutcome {
    pub effect: OfferEffect,
    /// Points the offer added.
    pub points: i64,
}

/// What an accrual did; stored as the idempotent response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccrualReceipt {
    pub transaction_id: String,
    pub member_id: String,
    pub points_earned: i64,
    /// Of `points_earned`, how many wait out the return window.
    pub pending_points: i64,
    pub lines: Vec<LineEarning>,
    pub balance: BalanceView,
    /// The ruleset version that priced the basket.
    pub ruleset_version: i64,
    /// The member's tier after the accrual.
    pub tier_id: Option<String>,
    pub offers: Vec<OfferOutcome>,
}

/// What a basket would earn; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub member_id: String,
    pub points_earned: i64,
    pub pending_points: i64,
    pub lines: Vec<LineEarning>,
    pub ruleset_version: i64,
    pub tier_id: Option<String>,
    pub offers: Vec<OfferOutcome>,
}

/// The order an accrual records, its lines with it.
pub(super) fn order_record(
    cmd: &AccrueCommand,
    earning: &RulesEarning,
    member: &MemberRow,
    transaction_id: &str,
    ruleset_version: i64,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<OrderRow, AppError> {
    let lines = cmd
        .lines
        .iter()
        .zip(&earning.lines)
        .map(|(line, earned)| OrderLine {
            line_id: line.line_id.as_str().to_owned(),
            sku: line.sku.as_str().to_owned(),
            category: line.category.as_ref().map(|c| c.as_str().to_owned()),
            quantity: line.quantity,
            unit_price_minor: line.unit_price_minor,
            discount_minor: line.discount_minor,
            eligible_minor: earned.eligible_minor,
            points: earned.points,
            returned_quantity: 0,
            points_reversed: 0,
            rule_ids: earned.rule_ids.join(","),
        })
        .collect::<Vec<_>>();
    Ok(OrderRow {
        program_id: member.program_id.clone(),
        order_id: cmd.order_id.as_str().to_owned(),
        member_id: member.id.clone(),
        transaction_id: transaction_id.to_owned(),
        store_id: cmd.store_id.as_str().to_owned(),
        channel: cmd.channel.as_str().to_owned(),
        currency: cmd.currency.as_str().to_owned(),
        eligible_minor: spend_of(earning),
        points_earned: earning.points,
        occurred_at: at,
        created_at: now,
        ruleset_version,
        points_reversed: 0,
        eligible_returned: 0,
        lines: entries::lines_json(&lines)?,
    })
}

/// The spend (minor units) a basket counts toward tiers.
fn spend_of(earning: &RulesEarning) -> i64 {
    earning
        .lines
        .iter()
        .fold(0i64, |s, l| s.saturating_add(l.eligible_minor))
}

impl ProgramContext {
    /// Plans an accrual of `earning` for `member` (read under its lock): the one planner
    /// both the batched and the single path use. `capped_promotion`: the basket meets a
    /// promotion with a budget or limit; `tier`: what decides a tier upgrade, when the
    /// caller does not review the tier itself.
    pub(super) fn plan_accrual(
        &self,
        member: &MemberRow,
        cmd: &AccrueCommand,
        earning: &RulesEarning,
        now: DateTime<Utc>,
        capped_promotion: bool,
        tier: Option<TierOutlook<'_>>,
    ) -> AccrualPlan {
        let pending = self.accrues_pending();
        let order_id = Some(cmd.order_id.as_str().to_owned());
        plan_accrual(
            ledger::start(member, &wallet::new_transaction_id(), now),
            AccrualInput {
                points: earning.points,
                spend: spend_of(earning),
                credit: self.credit(earning.points, LotSource::Accrual, pending, order_id, now),
                store_id: cmd.store_id.as_str().to_owned(),
                offer_codes: !cmd.offer_codes.is_empty(),
                capped_promotion,
                referral_pending: referral_pending(member),
                tier,
            },
        )
    }
}

/// Accrual: pricing a basket (QuoteAccrual) and awarding its points (Accrue), one call
/// at a time or batched with others into shared transactions (`accrual_batch`).
#[derive(Clone)]
pub struct AccrualService {
    ctx: ProgramContext,
    /// Where accruals queue for a shared transaction; `None`: each runs alone.
    batches: Option<batch::AccrualQueue>,
}

impl std::ops::Deref for AccrualService {
    type Target = ProgramContext;

    fn deref(&self) -> &ProgramContext {
        &self.ctx
    }
}

impl AccrualService {
    pub fn new(ctx: ProgramContext) -> Self {
        Self { ctx, batches: None }
    }

    /// Accruals share transactions: `workers` (one on SQLite, which has one writer)
    /// each write up to `max_batch` queued calls at a time, waiting up to `linger` for
    /// more while another batch is being written. Needs a Tokio runtime.
    pub fn with_batching(
        mut self,
        workers: usize,
        max_batch: usize,
        linger: std::time::Duration,
    ) -> Self {
        self.batches = batch::start(&self.store, workers, max_batch, linger);
        self
    }

    /// Accruals queue in `queue`, shared with other programmes' accrual services.
    pub(crate) fn with_shared_batching(mut self, queue: Option<batch::AccrualQueue>) -> Self {
        self.batches = queue;
        self
    }

    /// Checks what only the programme knows: the currency and line ids unique in the basket.
    fn check_basket(&self, cmd: &AccrueCommand) -> Result<(), AppError> {
        let mut violations = Vec::new();
        if cmd.currency != self.program.currency {
            violations.push(FieldViolation::new(
                "currency",
                format!(
                    "must be the programme currency {}",
                    self.program.currency.as_str()
                ),
            ));
        }
        let mut seen = HashSet::new();
        for (i, line) in cmd.lines.iter().enumerate() {
            if !seen.insert(line.line_id.as_str()) {
                violations.push(FieldViolation::new(
                    format!("lines[{i}].line_id"),
                    "duplicates an earlier line",
                ));
            }
        }
        if let Some(at) = cmd.occurred_at
            && at > self.store.now() + chrono::Duration::seconds(MAX_CLOCK_SKEW_SECS)
        {
            violations.push(FieldViolation::new(
                "occurred_at",
                "must not be in the future",
            ));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(AppError::InvalidArgument(violations))
        }
    }

    /// Prices a basket for a member: applies the offer codes (their targeting, limits and
    /// discounts), looks up what capped promotions have left, and runs the rules engine.
    /// With `lock`, the offer counters and promotion usage rows it reads stay locked until
    /// the transaction ends (member row first, then offers, then promotions, always in
    /// that order), so concurrent checkouts queue for the last uses and points.
    async fn price<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
        ruleset: &Ruleset,
        member: &MemberRow,
        cmd: &AccrueCommand,
        at: DateTime<Utc>,
        lock: bool,
    ) -> Result<(RulesEarning, Vec<OfferOutcome>), AppError> {
        let applied = if cmd.offer_codes.is_empty() {
            None
        } else {
            Some(apply_codes(db, ruleset, member, cmd, at, lock).await?)
        };
        let (lines, extra_rules): (&[BasketLine], &[crate::domain::EarnRule]) = match &applied {
            Some(a) => (&a.lines, &a.rules),
            None => (&cmd.lines, &[]),
        };
        let tier = member.tier_id.as_deref().and_then(|t| ruleset.tier(t));
        let none = HashMap::new();
        let ctx = EarnContext {
            at,
            channel: cmd.channel,
            store_id: cmd.store_id.as_str(),
            tier,
            remaining: &none,
            extra_rules,
        };
        let remaining =
            capped_remaining(db, ruleset.capped_candidates(lines, &ctx), member, lock).await?;
        let earning = ruleset.evaluate(
            lines,
            &EarnContext {
                remaining: &remaining,
                ..ctx
            },
        );
        if !earning.within_bounds() {
            return Err(AppError::PointsOutOfRange);
        }
        let outcomes = applied
            .map(|a| {
                a.effects
                    .into_iter()
                    .map(|effect| {
                        let rule_id = format!("offer:{}", effect.code);
                        let points = earning
                            .by_rule
                            .iter()
                            .find(|(r, _)| *r == rule_id)
                            .map_or(0, |(_, p)| *p);
                        OfferOutcome { effect, points }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((earning, outcomes))
    }

    /// What the basket would earn now, under the same rules as [`Self::accrue`];
    /// writes nothing.
    #[tracing::instrument(name = "points.quote", skip_all)]
    pub async fn quote(&self, cmd: AccrueCommand) -> Result<Quote, AppError> {
        self.check_basket(&cmd)?;
        let db = self.store.conn();
        let member = members::find(db, self.store.program(), &cmd.member).await?;
        let ruleset = self.ruleset(db).await?;
        let at = cmd.occurred_at.unwrap_or_else(|| self.store.now());
        let (earning, offers) = self.price(db, &ruleset, &member, &cmd, at, false).await?;
        let pending = self.accrues_pending();
        Ok(Quote {
            member_id: member.id,
            points_earned: earning.points,
            pending_points: if pending { earning.points } else { 0 },
            lines: earning.lines,
            ruleset_version: ruleset.version,
            tier_id: member.tier_id,
            offers,
        })
    }

    /// Awards the basket's points: one transaction writes the order, its lines, one
    /// ledger entry, the new balance, promotion usage and any tier upgrade, or nothing.
    #[tracing::instrument(name = "points.accrue", skip_all, fields(request_id = %mutation.request_id.as_str(), order_id = %cmd.order_id.as_str()))]
    pub async fn accrue(
        &self,
        mutation: &Mutation,
        cmd: AccrueCommand,
    ) -> Result<AccrualReceipt, AppError> {
        self.check_basket(&cmd)?;
        let key = mutation.key("Accrue");
        // A concurrent copy of this call may commit while this one works (then the
        // order or the key is taken): its outcome is the answer.
        let attempt = async {
            match &self.batches {
                Some(queue) => {
                    let (reply, answer) = tokio::sync::oneshot::channel();
                    let job = batch::Job {
                        service: Self {
                            ctx: self.ctx.clone(),
                            batches: None,
                        },
                        key: key.clone(),
                        cmd,
                        reply,
                        span: tracing::Span::current(),
                    };
                    let stopped = || AppError::Internal(anyhow::anyhow!("accrual workers stopped"));
                    queue.0.send(job).await.map_err(|_| stopped())?;
                    answer.await.map_err(|_| stopped())?
                }
                None => self.accrue_once(&key, cmd).await,
            }
        };
        crate::service::idempotency::once(&self.store, &key, attempt).await
    }

    /// One attempt at an accrual. The idempotency key is looked up by the statement that
    /// locks the member (a retry finds its stored response there) and written once, with
    /// the response, at the end: two round trips fewer than claim-then-complete.
    pub(super) async fn accrue_once(
        &self,
        key: &idempotency::IdempotencyKey,
        cmd: AccrueCommand,
    ) -> Result<AccrualReceipt, AppError> {
        let txn = self.store.begin_write_for(&cmd.member).await?;
        let start = members::lock_for_accrual(&*txn, txn.program(), &cmd.member, key).await?;
        if let Some((fingerprint, response)) = start.earlier {
            let bytes = idempotency::judge(key, &fingerprint, response)?;
            return crate::service::idempotency::decode(&bytes);
        }
        let locked = start.member;
        let now = self.store.now();
        let at = cmd.occurred_at.map_or(now, crate::store::truncate);
        let ruleset = self.ruleset_at(&*txn, start.ruleset_version).await?;
        let (earning, offer_outcomes) =
            self.price(&*txn, &ruleset, &locked, &cmd, at, true).await?;
        let pending = self.accrues_pending();
        let plan = self.plan_accrual(&locked, &cmd, &earning, now, false, None);
        let transaction_id = plan.posting.transaction_id.clone();
        let member = ledger::post(&txn, plan.posting).await?;
        add_rule_usage(&txn, &ruleset, &earning, &member.id).await?;
        let order = order_record(
            &cmd,
            &earning,
            &member,
            &transaction_id,
            ruleset.version,
            at,
            now,
        )?;
        entries::insert_order(&*txn, order).await?;
        let order_id = cmd.order_id.as_str();
        record_offer_uses(
            &txn,
            &offer_outcomes,
            (&member.id, order_id, &transaction_id),
            now,
        )
        .await?;
        let tier_id = review_tier(&txn, &ruleset, &member, now, Review::UpOnly).await?;
        // A referral bonus changes the balance after the credit: then report it as committed.
        let member = if !pending
            && earning.points > 0
            && reward_referral(self, &txn, &ruleset, &member).await?
        {
            members::find(&*txn, txn.program(), &cmd.member).await?
        } else {
            member
        };
        let receipt = AccrualReceipt {
            transaction_id,
            member_id: member.id.clone(),
            points_earned: earning.points,
            pending_points: if pending { earning.points } else { 0 },
            lines: earning.lines,
            balance: BalanceView::from(&member),
            ruleset_version: ruleset.version,
            tier_id,
            offers: offer_outcomes,
        };
        crate::service::idempotency::finish(txn, key, &receipt).await?;
        self.count(receipt.points_earned, 0);
        if let Some(m) = &self.metrics {
            m.accrual_batch.record(1, &[]);
        }
        tracing::info!(member_id = %receipt.member_id, points = receipt.points_earned, "points accrued");
        Ok(receipt)
    }
}

/// Counts the points capped promotions granted against their budget and the member's
/// limit.
async fn add_rule_usage(
    txn: &WriteTxn,
    ruleset: &Ruleset,
    earning: &RulesEarning,
    member_id: &str,
) -> Result<(), AppError> {
    for (rule_id, points) in &earning.by_rule {
        if let Some(rule) = ruleset.rules.iter().find(|r| &r.rule_id == rule_id) {
            if rule.budget.is_some() {
                rules::add_usage(&**txn, txn.program(), rule_id, "", *points).await?;
            }
            if rule.per_member_limit.is_some() {
                rules::add_usage(&**txn, txn.program(), rule_id, member_id, *points).await?;
            }
        }
    }
    Ok(())
}

/// Records the offers the basket used, and an OFFER_USED event for each.
async fn record_offer_uses(
    txn: &WriteTxn,
    outcomes: &[OfferOutcome],
    (member_id, order_id, transaction_id): (&str, &str, &str),
    now: DateTime<Utc>,
) -> Result<(), AppError> {
    let uses: Vec<NewUse> = outcomes
        .iter()
        .filter(|o| o.effect.status == OfferStatus::Applied)
        .filter_map(|o| {
            Some(NewUse {
                offer_id: o.effect.offer_id.clone()?,
                member_id: member_id.to_owned(),
                order_id: order_id.to_owned(),
                transaction_id: transaction_id.to_owned(),
                points: o.points,
                discount_minor: o.effect.discount_minor,
                created_at: now,
            })
        })
        .collect();
    if !uses.is_empty() {
        let details: Vec<EventDetail> = uses
            .iter()
            .map(|u| EventDetail::OfferUse {
                offer_id: u.offer_id.clone(),
                order_id: u.order_id.clone(),
                points: u.points,
                discount_minor: u.discount_minor,
            })
            .collect();
        // One statement for all the order's offer uses.
        crate::service::ledger::record_all(
            &**txn,
            member_id,
            details
                .iter()
                .map(|d| (kind::OFFER_USED, Some(transaction_id), d)),
            now,
        )
        .await?;
    }
    offers::record_uses(&**txn, uses).await?;
    Ok(())
}

/// Applies the basket's offer codes: their targeting, limits and discounts. With `lock`,
/// the counters of offers with a total limit stay locked until the transaction ends.
async fn apply_codes<C: sea_orm::ConnectionTrait>(
    db: &C,
    ruleset: &Ruleset,
    member: &MemberRow,
    cmd: &AccrueCommand,
    at: DateTime<Utc>,
    lock: bool,
) -> Result<OffersApplied, AppError> {
    let mut found = offers::find_by_codes(db, &member.program_id, &cmd.offer_codes).await?;
    found.sort_by(|a, b| a.offer_id.cmp(&b.offer_id));
    let member_uses = offers::member_uses(db, &member.id).await?;
    let mut total_uses = HashMap::new();
    for offer in found.iter().filter(|o| o.total_limit.is_some()) {
        let used = if lock {
            offers::lock_counter(db, &offer.offer_id).await?
        } else {
            offers::total_uses(db, std::slice::from_ref(&offer.offer_id))
                .await?
                .get(&offer.offer_id)
                .copied()
                .unwrap_or(0)
        };
        total_uses.insert(offer.offer_id.clone(), used);
    }
    let facts = member_facts(db, ruleset, member, at).await?;
    let remaining = |id: &str| {
        found.iter().find(|o| o.offer_id == id).and_then(|o| {
            o.remaining_uses(
                member_uses.get(id).copied().unwrap_or(0),
                total_uses.get(id).copied().unwrap_or(0),
            )
        })
    };
    Ok(apply_offers(
        &cmd.offer_codes,
        &found,
        &remaining,
        &cmd.lines,
        &OfferContext {
            now: at,
            month: month_in(ruleset.tz(), at),
            channel: cmd.channel,
            facts: &facts,
        },
    ))
}

/// What each capped promotion may still grant the member (the smaller of its budget and
/// member limit left). With `lock`, the usage rows stay locked until the transaction
/// ends, so concurrent checkouts queue for the last points.
async fn capped_remaining<C: sea_orm::ConnectionTrait>(
    db: &C,
    mut candidates: Vec<&EarnRule>,
    member: &MemberRow,
    lock: bool,
) -> Result<HashMap<String, i64>, AppError> {
    candidates.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
    let mut remaining = HashMap::new();
    for rule in candidates {
        let mut left = i64::MAX;
        for (cap, owner) in [(rule.budget, ""), (rule.per_member_limit, &member.id)] {
            if let Some(cap) = cap {
                let used = if lock {
                    rules::lock_usage(db, &member.program_id, &rule.rule_id, owner).await?
                } else {
                    rules::read_usage(db, &member.program_id, &rule.rule_id, owner).await?
                };
                left = left.min(cap - used);
            }
        }
        remaining.insert(rule.rule_id.clone(), left.max(0));
    }
    Ok(remaining)
}
