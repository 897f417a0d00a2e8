//! Balances and statements: the reads a till and a CRM make most.
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::views::{BalanceView, StatementPage, statement_page};
use crate::{
    domain::{MemberKey, ProgramId},
    error::AppError,
    infra::coalesce::{Coalescer, ReadMany},
    store::{Store, lots},
};

/// Spendable points that expire soon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiringSoon {
    pub points: i64,
    pub first_expiry: Option<DateTime<Utc>>,
}

/// How far ahead `GetBalance` looks for expiring points.
pub const EXPIRING_WINDOW_DAYS: i64 = 30;

/// The end of the window a balance shows expiring points for. Only a display window: the
/// server's clock will do (expiry itself is decided on the database's clock by the job).
fn expiring_until(store: &Store) -> chrono::DateTime<chrono::Utc> {
    store.now() + chrono::Duration::days(EXPIRING_WINDOW_DAYS)
}

/// Balance reads of members named in their programmes.
pub(crate) type BalanceReads = Coalescer<(ProgramId, MemberKey), lots::BalanceRow>;

/// Reads the balances of a batch of members, of any programmes, in one statement per
/// kind of key.
fn balance_reader(store: Store) -> ReadMany<(ProgramId, MemberKey), lots::BalanceRow> {
    Arc::new(move |keys: Vec<(ProgramId, MemberKey)>| {
        let store = store.clone();
        Box::pin(async move {
            let rows =
                lots::balances_with_expiring(store.conn(), &keys, expiring_until(&store)).await?;
            Ok(crate::infra::coalesce::answers(
                &keys,
                &rows,
                |(program, key), row| {
                    program.as_str() == row.program_id
                        && key.names(&row.id, row.card_number.as_deref())
                },
            ))
        })
    })
}

/// Balance reads that share statements across programmes: `workers` each read up to
/// `max_batch` queued calls at a time (see `coalesce`). One for the whole replica, so
/// that several programmes' reads share statements as one programme's do. Needs a Tokio
/// runtime.
pub(crate) fn shared_balance_reads(
    store: &Store,
    workers: usize,
    max_batch: usize,
    metrics: Option<&crate::metrics::Metrics>,
) -> BalanceReads {
    Coalescer::start(
        "balance",
        workers,
        max_batch,
        metrics.map(|m| m.read_batch.clone()),
        store.work_deadline(),
        balance_reader(store.clone()),
    )
}

#[derive(Clone)]
pub struct BalanceService {
    store: Store,
    /// Balance reads, sharing statements once `with_read_batching` gives them workers.
    balances: BalanceReads,
}

impl BalanceService {
    pub fn new(store: Store) -> Self {
        let balances = Coalescer::direct(balance_reader(store.clone()));
        Self { store, balances }
    }

    /// Reads through `reads`, shared with other programmes' balance services.
    pub(crate) fn with_shared_reads(mut self, reads: BalanceReads) -> Self {
        self.balances = reads;
        self
    }

    /// Concurrent balance reads share statements: `workers` each read up to `max_batch`
    /// queued calls at a time (see `coalesce`). Needs a Tokio runtime; call after
    /// `with_metrics`.
    pub fn with_read_batching(
        mut self,
        workers: usize,
        max_batch: usize,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        self.balances = shared_balance_reads(&self.store, workers, max_batch, metrics.as_deref());
        self
    }

    #[tracing::instrument(name = "points.balance", skip_all)]
    pub async fn balance(
        &self,
        key: &MemberKey,
    ) -> Result<(String, BalanceView, ExpiringSoon), AppError> {
        let row = self
            .balances
            .one((self.store.program_id().clone(), key.clone()))
            .await?
            .ok_or(AppError::MemberNotFound)?;
        Ok((
            row.id,
            BalanceView {
                available: row.points_available,
                pending: row.points_pending,
                held: row.points_held,
                lifetime_earned: row.lifetime_earned,
            },
            ExpiringSoon {
                points: row.expiring_points,
                first_expiry: row.first_expiry,
            },
        ))
    }

    #[tracing::instrument(name = "points.statement", skip_all)]
    pub async fn statement(
        &self,
        key: &MemberKey,
        page_size: i32,
        page_token: &str,
    ) -> Result<StatementPage, AppError> {
        statement_page(&self.store, key, page_size, page_token).await
    }
}
