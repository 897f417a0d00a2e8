//! The rewards catalogue and redeeming a reward for points.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Mutation,
    idempotency::{Begun, begin, begin_for, finish, once},
    paging,
    views::BalanceView,
};
use crate::{
    domain::{Insufficient, MemberKey, plan_redeem},
    error::AppError,
    store::{
        Store, WriteTxn,
        rewards::{self, RedemptionRow, RewardRow},
    },
};

/// A reward's editable fields, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RewardSpec {
    pub name: String,
    pub description: String,
    pub points_cost: i64,
    pub stock: Option<i64>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub min_tier: Option<String>,
    pub active: bool,
}

/// A reward as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardView {
    pub reward_id: String,
    pub name: String,
    pub description: String,
    pub points_cost: i64,
    pub stock: Option<i64>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub min_tier: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<RewardRow> for RewardView {
    fn from(r: RewardRow) -> Self {
        Self {
            reward_id: r.id,
            name: r.name,
            description: r.description,
            points_cost: r.points_cost,
            stock: r.stock,
            valid_from: r.valid_from,
            valid_until: r.valid_until,
            min_tier: r.min_tier,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Which fields an update changes (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct RewardPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub points_cost: Option<i64>,
    pub stock: Option<Option<i64>>,
    pub valid_from: Option<Option<DateTime<Utc>>>,
    pub valid_until: Option<Option<DateTime<Utc>>>,
    pub min_tier: Option<Option<String>>,
    pub active: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardRedemption {
    pub redemption_id: String,
    pub code: String,
    pub reward_id: String,
    pub member_id: String,
    pub points: i64,
    pub created_at: DateTime<Utc>,
    pub balance: BalanceView,
}

/// A page of the catalogue.
#[derive(Debug, Clone)]
pub struct RewardPage {
    pub rewards: Vec<RewardView>,
    pub next_page_token: String,
}

#[derive(Clone)]
pub struct RewardService {
    store: Store,
}

impl RewardService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    #[tracing::instrument(name = "rewards.create", skip_all)]
    pub async fn create(
        &self,
        mutation: &Mutation,
        spec: RewardSpec,
    ) -> Result<RewardView, AppError> {
        let key = mutation.key("CreateReward");
        once(&self.store, &key, async {
            let txn = match begin::<RewardView>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let now = self.store.now();
            let row = RewardRow {
                id: uuid::Uuid::now_v7().to_string(),
                program_id: txn.program().to_owned(),
                name: spec.name,
                description: spec.description,
                points_cost: spec.points_cost,
                stock: spec.stock,
                valid_from: spec.valid_from,
                valid_until: spec.valid_until,
                min_tier: spec.min_tier,
                active: spec.active,
                created_at: now,
                updated_at: now,
            };
            rewards::insert(&*txn, row.clone()).await?;
            let view = RewardView::from(row);
            finish(txn, &key, &view).await?;
            Ok(view)
        })
        .await
    }

    #[tracing::instrument(name = "rewards.update", skip_all)]
    pub async fn update(
        &self,
        mutation: &Mutation,
        id: &str,
        patch: RewardPatch,
    ) -> Result<RewardView, AppError> {
        let key = mutation.key("UpdateReward");
        once(&self.store, &key, async {
            let txn = match begin::<RewardView>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let mut row = rewards::find(&*txn, txn.program(), id).await?;
            if let Some(v) = patch.name {
                row.name = v;
            }
            if let Some(v) = patch.description {
                row.description = v;
            }
            if let Some(v) = patch.points_cost {
                row.points_cost = v;
            }
            if let Some(v) = patch.stock {
                row.stock = v;
            }
            if let Some(v) = patch.valid_from {
                row.valid_from = v;
            }
            if let Some(v) = patch.valid_until {
                row.valid_until = v;
            }
            if let Some(v) = patch.min_tier {
                row.min_tier = v;
            }
            if let Some(v) = patch.active {
                row.active = v;
            }
            if let (Some(from), Some(until)) = (row.valid_from, row.valid_until)
                && until <= from
            {
                return Err(AppError::invalid(
                    "reward.valid_until",
                    "must be after valid_from",
                ));
            }
            row.updated_at = self.store.now();
            rewards::update(&*txn, row.clone()).await?;
            let view = RewardView::from(row);
            finish(txn, &key, &view).await?;
            Ok(view)
        })
        .await
    }

    pub async fn get(&self, id: &str) -> Result<RewardView, AppError> {
        rewards::find(self.store.conn(), self.store.program(), id)
            .await
            .map(RewardView::from)
    }

    pub async fn list(&self, page_size: i32, page_token: &str) -> Result<RewardPage, AppError> {
        let size = paging::page_size(page_size)?;
        let after = paging::decode_token("rewards", page_token)?;
        let rows = rewards::list(
            self.store.conn(),
            self.store.program(),
            after.as_deref(),
            size + 1,
        )
        .await?;
        let (rows, next_page_token) = paging::split(rows, size, "rewards", |r| r.id.clone());
        Ok(RewardPage {
            rewards: rows.into_iter().map(RewardView::from).collect(),
            next_page_token,
        })
    }

    /// Takes the points and one unit of stock in one transaction: either both or neither.
    #[tracing::instrument(name = "rewards.redeem", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn redeem(
        &self,
        mutation: &Mutation,
        member: &MemberKey,
        reward_id: &str,
        store_id: Option<String>,
    ) -> Result<RewardRedemption, AppError> {
        let key = mutation.key("RedeemReward");
        once(&self.store, &key, async {
            let txn = match begin_for::<RewardRedemption>(&self.store, &key, member).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let outcome = self.redeem_in(&txn, member, reward_id, store_id).await?;
            finish(txn, &key, &outcome).await?;
            tracing::info!(
                member_id = %outcome.member_id,
                reward_id = %outcome.reward_id,
                "reward redeemed"
            );
            Ok(outcome)
        })
        .await
    }

    /// Takes the points and one unit of stock inside the caller's transaction: either
    /// both or neither.
    async fn redeem_in(
        &self,
        txn: &WriteTxn,
        member: &MemberKey,
        reward_id: &str,
        store_id: Option<String>,
    ) -> Result<RewardRedemption, AppError> {
        let reward = rewards::find(&**txn, txn.program(), reward_id).await?;
        let now = self.store.db_now(&**txn).await?;
        let in_window = reward.valid_from.is_none_or(|from| from <= now)
            && reward.valid_until.is_none_or(|until| now < until);
        if !reward.active || !in_window {
            return Err(AppError::RewardNotAvailable);
        }
        let transaction_id = super::wallet::new_transaction_id();
        // Member first (the row lock order), then the stock.
        let (locked, spendable) = super::ledger::lock_to_spend(txn, member).await?;
        let created_at = self.store.now();
        let redemption = RedemptionRow {
            id: uuid::Uuid::now_v7().to_string(),
            program_id: txn.program().to_owned(),
            code: crate::domain::random_code(16),
            reward_id: reward.id.clone(),
            member_id: locked.id.clone(),
            transaction_id: transaction_id.clone(),
            points: reward.points_cost,
            created_at,
        };
        let mut posting = plan_redeem(
            super::ledger::start(&locked, &transaction_id, created_at),
            reward.points_cost,
            None,
            store_id,
            &spendable,
        )
        .map_err(|Insufficient| AppError::InsufficientPoints)?;
        for entry in &mut posting.entries {
            entry.reason_code = Some("REWARD");
            entry.note = Some(format!("reward {} ({})", reward.id, redemption.code));
        }
        if reward.stock.is_some() && !rewards::take_one(&**txn, reward_id).await? {
            return Err(AppError::RewardOutOfStock);
        }
        let after = super::ledger::post(txn, posting).await?;
        rewards::insert_redemption(&**txn, redemption.clone()).await?;
        Ok(RewardRedemption {
            redemption_id: redemption.id,
            code: redemption.code,
            reward_id: reward.id,
            member_id: after.id.clone(),
            points: reward.points_cost,
            created_at,
            balance: BalanceView::from(&after),
        })
    }
}
