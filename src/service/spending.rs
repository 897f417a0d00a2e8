//! Spending points: redemption as payment, holds (reserve, capture, void), adjustments
//! and confirming an order early. Each call is one transaction, idempotent on its key.
use serde::{Deserialize, Serialize};

use super::{
    Caller, Mutation,
    context::ProgramContext,
    idempotency::{Begun, begin, begin_for, finish, once},
    ledger::{self, lock_to_spend, start},
    views::{BalanceView, HoldView},
};
use crate::{
    domain::{HeldPoints, Insufficient, MemberKey, ShortId, plan_hold, plan_redeem},
    error::AppError,
    store::{
        WriteTxn,
        holds::{self, HoldRow},
        ledger as entries, lots,
        members::{self, MemberRow},
    },
};

/// Points as payment.
#[derive(Debug, Clone)]
pub struct RedeemCommand {
    pub member: MemberKey,
    pub points: i64,
    pub order_id: Option<ShortId>,
    pub store_id: Option<ShortId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redemption {
    pub transaction_id: String,
    pub member_id: String,
    pub points: i64,
    pub value_minor: i64,
    pub currency: String,
    pub balance: BalanceView,
}

#[derive(Debug, Clone)]
pub struct HoldCommand {
    pub member: MemberKey,
    pub points: i64,
    pub order_id: Option<ShortId>,
    pub store_id: Option<ShortId>,
    /// `None`: the programme's default.
    pub ttl: Option<chrono::Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldOutcome {
    pub transaction_id: String,
    pub hold: HoldView,
    /// Value of the captured points in minor units (capture only).
    pub value_minor: i64,
    pub balance: BalanceView,
}

pub use super::wallet::{AdjustCommand, AdjustReason, Adjustment};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub member_id: String,
    pub points_released: i64,
    pub balance: BalanceView,
}

pub(super) use super::wallet::new_transaction_id;

/// Spending points: redemption, holds, adjustments and confirming an order early.
#[derive(Clone)]
pub struct SpendingService {
    ctx: ProgramContext,
}

impl std::ops::Deref for SpendingService {
    type Target = ProgramContext;

    fn deref(&self) -> &ProgramContext {
        &self.ctx
    }
}

impl SpendingService {
    pub fn new(ctx: ProgramContext) -> Self {
        Self { ctx }
    }

    #[tracing::instrument(name = "points.redeem", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn redeem(
        &self,
        mutation: &Mutation,
        cmd: RedeemCommand,
    ) -> Result<Redemption, AppError> {
        let key = mutation.key("Redeem");
        once(&self.store, &key, async {
            let txn = match begin_for::<Redemption>(&self.store, &key, &cmd.member).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            order_of_own_store(&txn, mutation, cmd.order_id.as_ref()).await?;
            let transaction_id = new_transaction_id();
            let (locked, spendable) = lock_to_spend(&txn, &cmd.member).await?;
            let posting = plan_redeem(
                start(&locked, &transaction_id, self.store.now()),
                cmd.points,
                cmd.order_id.map(ShortId::into_string),
                cmd.store_id.map(ShortId::into_string),
                &spendable,
            )
            .map_err(|Insufficient| AppError::InsufficientPoints)?;
            let member = ledger::post(&txn, posting).await?;
            let redemption = Redemption {
                transaction_id,
                member_id: member.id.clone(),
                points: cmd.points,
                value_minor: self.program.point_value.value_of(cmd.points),
                currency: self.program.currency.as_str().to_owned(),
                balance: BalanceView::from(&member),
            };
            finish(txn, &key, &redemption).await?;
            self.count(0, redemption.points);
            Ok(redemption)
        })
        .await
    }

    #[tracing::instrument(name = "points.hold", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn create_hold(
        &self,
        mutation: &Mutation,
        cmd: HoldCommand,
    ) -> Result<HoldOutcome, AppError> {
        let ttl = cmd.ttl.unwrap_or(self.program.hold_default_ttl);
        if ttl > self.program.hold_max_ttl {
            return Err(AppError::invalid(
                "ttl",
                format!(
                    "must be at most {} seconds",
                    self.program.hold_max_ttl.num_seconds()
                ),
            ));
        }
        let key = mutation.key("CreateHold");
        once(&self.store, &key, async {
            let txn = match begin_for::<HoldOutcome>(&self.store, &key, &cmd.member).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            order_of_own_store(&txn, mutation, cmd.order_id.as_ref()).await?;
            let transaction_id = new_transaction_id();
            let (locked, spendable) = lock_to_spend(&txn, &cmd.member).await?;
            // The hold's life is measured on the database's clock, like its expiry.
            let now = crate::store::truncate(self.store.db_now(&*txn).await?);
            let held = HeldPoints {
                hold_id: uuid::Uuid::now_v7().to_string(),
                points: cmd.points,
                order_id: cmd.order_id.map(ShortId::into_string),
                store_id: cmd.store_id.map(ShortId::into_string),
            };
            let posting = plan_hold(start(&locked, &transaction_id, now), &held, &spendable)
                .map_err(|Insufficient| AppError::InsufficientPoints)?;
            let hold = HoldRow {
                id: held.hold_id,
                program_id: txn.program().to_owned(),
                member_id: locked.id.clone(),
                client_id: mutation.caller.client_id.clone(),
                order_id: held.order_id,
                store_id: held.store_id,
                points: cmd.points,
                captured_points: 0,
                status: holds::ACTIVE.to_owned(),
                expires_at: crate::store::truncate(now + ttl),
                created_at: now,
                settled_at: None,
            };
            // The hold first: the posting's lot allocations name it.
            holds::insert(&*txn, hold.clone()).await?;
            let member = ledger::post(&txn, posting).await?;
            let outcome = HoldOutcome {
                transaction_id,
                hold: HoldView::from(&hold),
                value_minor: 0,
                balance: BalanceView::from(&member),
            };
            finish(txn, &key, &outcome).await?;
            Ok(outcome)
        })
        .await
    }

    /// Captures `points` (all when `None`) of a hold and releases the rest.
    #[tracing::instrument(name = "points.capture", skip_all, fields(request_id = %mutation.request_id.as_str(), hold_id = %hold_id))]
    pub async fn capture_hold(
        &self,
        mutation: &Mutation,
        hold_id: &str,
        points: Option<i64>,
    ) -> Result<HoldOutcome, AppError> {
        let key = mutation.key("CaptureHold");
        once(&self.store, &key, async {
            let txn = match begin::<HoldOutcome>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let (hold, member) = self.lock_hold(&txn, hold_id, &mutation.caller).await?;
            let captured = points.unwrap_or(hold.points);
            if captured > hold.points {
                return Err(AppError::invalid(
                    "points",
                    format!("must not exceed the {} points held", hold.points),
                ));
            }
            let transaction_id = new_transaction_id();
            let (hold, balance) = self
                .settle(
                    &txn,
                    hold,
                    &member,
                    holds::CAPTURED,
                    captured,
                    &transaction_id,
                )
                .await?;
            let outcome = HoldOutcome {
                transaction_id,
                value_minor: self.program.point_value.value_of(captured),
                hold,
                balance,
            };
            finish(txn, &key, &outcome).await?;
            self.count(0, captured);
            Ok(outcome)
        })
        .await
    }

    #[tracing::instrument(name = "points.void", skip_all, fields(request_id = %mutation.request_id.as_str(), hold_id = %hold_id))]
    pub async fn void_hold(
        &self,
        mutation: &Mutation,
        hold_id: &str,
    ) -> Result<HoldOutcome, AppError> {
        let key = mutation.key("VoidHold");
        once(&self.store, &key, async {
            let txn = match begin::<HoldOutcome>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let (hold, member) = self.lock_hold(&txn, hold_id, &mutation.caller).await?;
            let transaction_id = new_transaction_id();
            let (hold, balance) = self
                .settle(&txn, hold, &member, holds::VOIDED, 0, &transaction_id)
                .await?;
            let outcome = HoldOutcome {
                transaction_id,
                hold,
                value_minor: 0,
                balance,
            };
            finish(txn, &key, &outcome).await?;
            Ok(outcome)
        })
        .await
    }

    /// Finds the hold and locks its member (members before holds, always).
    async fn lock_hold(
        &self,
        txn: &WriteTxn,
        hold_id: &str,
        caller: &Caller,
    ) -> Result<(HoldRow, MemberRow), AppError> {
        let hold = holds::find(&**txn, txn.program(), hold_id)
            .await?
            .ok_or(AppError::HoldNotFound)?;
        // Only the client that made a hold settles it; to others it does not exist.
        if hold.client_id != caller.client_id
            && !matches!(
                caller.role,
                crate::auth::Role::Admin | crate::auth::Role::Platform
            )
        {
            return Err(AppError::HoldNotFound);
        }
        let member = members::lock(
            &**txn,
            txn.program(),
            &super::stored_member(&hold.member_id)?,
        )
        .await?;
        Ok((hold, member))
    }

    #[tracing::instrument(name = "points.adjust", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn adjust(
        &self,
        mutation: &Mutation,
        cmd: AdjustCommand,
    ) -> Result<Adjustment, AppError> {
        self.check_adjustment(cmd.points, cmd.reason)?;
        let key = mutation.key("AdjustPoints");
        once(&self.store, &key, async {
            let txn = match begin_for::<Adjustment>(&self.store, &key, &cmd.member).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let adjustment = self.adjust_in(&txn, cmd).await?;
            finish(txn, &key, &adjustment).await?;
            Ok(adjustment)
        })
        .await
    }

    /// Ends an order's return window now: its pending points become available.
    #[tracing::instrument(name = "points.confirm", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn confirm_order(
        &self,
        mutation: &Mutation,
        order_id: &ShortId,
    ) -> Result<Confirmation, AppError> {
        let key = mutation.key("ConfirmOrder");
        once(&self.store, &key, async {
            let txn = match begin::<Confirmation>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            // A till sees only its own stores' orders; to it, others do not exist.
            let order = entries::find_order(&*txn, txn.program(), order_id.as_str())
                .await?
                .filter(|o| mutation.caller.may_act_for_store(&o.store_id))
                .ok_or(AppError::OrderNotFound)?;
            let member_key = super::stored_member(&order.member_id)?;
            members::lock(&*txn, txn.program(), &member_key).await?;
            let mut released = 0;
            for (lot_id, _) in
                lots::due_for_release(&*txn, txn.program(), None, Some(order_id.as_str()), 10)
                    .await?
            {
                released += self.release_lot(&txn, lot_id, None).await?;
            }
            let member = members::find(&*txn, txn.program(), &member_key).await?;
            let confirmation = Confirmation {
                member_id: member.id.clone(),
                points_released: released,
                balance: BalanceView::from(&member),
            };
            finish(txn, &key, &confirmation).await?;
            Ok(confirmation)
        })
        .await
    }
}

/// A till sees only its own stores' orders: spending against another store's order is
/// refused as if the order did not exist (an order not accrued yet is fine).
async fn order_of_own_store(
    txn: &WriteTxn,
    mutation: &Mutation,
    order_id: Option<&ShortId>,
) -> Result<(), AppError> {
    // Only store-scoped (POS) clients are limited, so only their calls look the order up.
    let Some(order_id) = order_id.filter(|_| mutation.caller.role == crate::auth::Role::Pos) else {
        return Ok(());
    };
    match entries::find_order(&**txn, txn.program(), order_id.as_str()).await? {
        Some(order) if !mutation.caller.may_act_for_store(&order.store_id) => {
            Err(AppError::OrderNotFound)
        }
        _ => Ok(()),
    }
}
