//! Commit batching for accruals. Calls queue here; a few workers each take what has
//! queued (up to a limit) and write it in one transaction with set-wise statements, so
//! under load many checkouts share the round trips, the per-statement work and the
//! commit, while a lone call goes straight through in a batch of one.
//!
//! Each call keeps its own semantics: its member, idempotency key and order are checked
//! one by one, an error answers only that call, and an accrual is planned by the same
//! planner as on the single path. A call the planner says must run alone (offer codes,
//! a capped promotion, a referral payout, a tier upgrade), a second call for a member or
//! key or order already in the batch, a member another transaction has locked and an
//! unknown member run after the batch commits, alone, on the ordinary path. If the
//! batch's write fails (a concurrent transaction took one of its orders or keys), every
//! call runs alone.
//!
//! One queue serves every programme of the replica: a batch may hold calls of several
//! programmes, each planned with its own programme's settings and rules, and written by
//! the same statements (a batcher per programme would split the load into smaller
//! batches: at 8 callers over three programmes that cost a fifth of the throughput).
use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::{AccrualReceipt, AccrualService, AccrueCommand, order_record};
use crate::service::{context::window_start, ledger, views::BalanceView};
use chrono::{DateTime, Utc};

use crate::{
    domain::{EarnContext, MemberKey, RulesEarning, Ruleset, TierOutlook},
    error::AppError,
    infra::work_queue::{Queued, WorkQueue, linked},
    store::{
        Store, WriteTxn,
        accruals::{self, AccrualWrite},
        idempotency::{self, IdempotencyKey},
        members::MemberRow,
    },
};

/// Most basket lines one batch carries (a basket may have 500).
const MAX_BATCH_LINES: usize = 4000;

/// One queued call.
pub(super) struct Job {
    /// The call's programme's accrual service (without a queue): it plans the call, and
    /// runs it alone when the batch cannot.
    pub service: AccrualService,
    pub key: IdempotencyKey,
    pub cmd: AccrueCommand,
    pub reply: oneshot::Sender<Result<AccrualReceipt, AppError>>,
    /// The caller's span: the batch's work is traced under (or linked to) it.
    pub span: tracing::Span,
}

impl Queued for Job {
    fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A caller that gave up while its call waited (deadline, disconnect) does not get
    /// the accrual done behind its back.
    fn gone(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Starts `workers` workers (one on SQLite, which has one writer) taking batches of at
/// most `max_batch` calls, of any programme, written through `store`; returns the queue,
/// or none without workers. Workers stop when every sender is dropped.
pub(crate) fn start(
    store: &Store,
    workers: usize,
    max_batch: usize,
    linger: Duration,
) -> Option<AccrualQueue> {
    let workers = if store.backend() == sea_orm::DbBackend::Postgres {
        workers
    } else {
        workers.min(1)
    };
    if workers == 0 || max_batch == 0 {
        return None;
    }
    let (tx, queue) = WorkQueue::new(workers * max_batch * 4);
    for _ in 0..workers {
        tokio::spawn(work(store.clone(), Arc::clone(&queue), max_batch, linger));
    }
    Some(AccrualQueue(tx))
}

/// Where accruals queue for shared transactions (one per replica).
#[derive(Clone)]
pub(crate) struct AccrualQueue(pub(super) mpsc::Sender<Job>);

async fn work(store: Store, queue: Arc<WorkQueue<Job>>, max_batch: usize, linger: Duration) {
    while let Some(mut batch) = queue.take().await {
        let mut lines = batch.jobs[0].cmd.lines.len();
        // Only while another batch is being written: a lone call never waits.
        let linger_until = (batch.others_running() && !linger.is_zero())
            .then(|| tokio::time::Instant::now() + linger);
        while batch.jobs.len() < max_batch && lines < MAX_BATCH_LINES {
            let next = match (batch.queued(), linger_until) {
                (Some(job), _) => Some(job),
                (None, Some(until)) => batch.arriving_by(until).await,
                (None, None) => None,
            };
            let Some(job) = next else { break };
            lines += job.cmd.lines.len();
            batch.jobs.push(job);
        }
        let jobs = batch.into_jobs();
        if jobs.is_empty() {
            continue;
        }
        let span = linked(
            &jobs,
            tracing::info_span!(parent: &jobs[0].span, "points.accrue_batch", size = jobs.len()),
        );
        // A bug in one batch must not stop this worker (and every accrual behind it): its
        // callers hear INTERNAL (their reply channels close) and the worker goes on.
        let written = std::panic::AssertUnwindSafe(accrue_batch(&store, jobs).instrument(span))
            .catch_unwind();
        if queue.run(written).await.is_err() {
            tracing::error!("an accrual batch panicked; its calls fail, the worker goes on");
        }
    }
}

/// What became of one call in a batch.
enum Outcome {
    /// Written by the batch.
    Done(Box<AccrualReceipt>),
    /// An earlier call with the same key: its response.
    Replay(Box<AccrualReceipt>),
    Failed(AppError),
    /// Runs after the batch, alone.
    Alone,
}

/// Writes a batch of calls (of any programmes) and answers each; the calls the batch
/// cannot cover run alone after it.
async fn accrue_batch(store: &Store, jobs: Vec<Job>) {
    // A call whose key or order already came earlier in this batch must see that
    // call's outcome, so it runs after the batch commits.
    let mut keys = HashSet::new();
    let mut orders = HashSet::new();
    let (mut batch, mut alone): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| {
        let fresh_key = keys.insert((j.key.client_id.clone(), j.key.request_id.clone()));
        let fresh_order = orders.insert((
            j.service.store.program().to_owned(),
            j.cmd.order_id.as_str().to_owned(),
        ));
        fresh_key && fresh_order
    });
    // Each programme's calls together (in arrival order within it): they are planned
    // with their programme's rules.
    batch.sort_by(|a, b| a.service.store.program().cmp(b.service.store.program()));
    // A database gone silent must not hold this worker (and every accrual behind it).
    let written = tokio::time::timeout(store.work_deadline(), try_batch(store, &batch))
        .await
        .unwrap_or_else(|_| {
            Err(AppError::Unavailable(sea_orm::DbErr::Custom(
                "an accrual batch ran out of time".into(),
            )))
        });
    let outcomes = match written {
        Ok(outcomes) => outcomes,
        // The database is down or slow: each call alone would wait for it again,
        // past its caller's deadline. Every caller hears it now and may retry.
        Err(err) if err.is_transient() => {
            tracing::warn!(error = %err, size = batch.len(), "accrual batch failed; its callers may retry");
            batch.iter().map(|_| Outcome::Failed(err.again())).collect()
        }
        // Two calls for one order racing in two batches: the later batch's write finds
        // the order taken, and its calls (of any programme) run alone, as designed.
        Err(AppError::OrderAlreadyAccrued) => {
            tracing::debug!(
                size = batch.len(),
                "a concurrent call took an order or key of the batch: its calls run alone"
            );
            batch.iter().map(|_| Outcome::Alone).collect()
        }
        Err(err) => {
            tracing::warn!(error = %err, size = batch.len(), "accrual batch failed: its calls run alone");
            batch.iter().map(|_| Outcome::Alone).collect()
        }
    };
    let metrics = batch.first().and_then(|j| j.service.metrics.clone());
    let mut written = 0;
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        let reply = match outcome {
            Outcome::Done(receipt) => {
                written += 1;
                job.service.count(receipt.points_earned, 0);
                tracing::info!(parent: &job.span, member_id = %receipt.member_id, points = receipt.points_earned, "points accrued");
                Ok(*receipt)
            }
            Outcome::Replay(receipt) => Ok(*receipt),
            Outcome::Failed(err) => Err(err),
            Outcome::Alone => {
                alone.push(job);
                continue;
            }
        };
        let _ = job.reply.send(reply);
    }
    if let Some(m) = metrics
        && written > 0
    {
        m.accrual_batch.record(written, &[]);
    }
    // Each in a task of its own, not on this worker: a call that waits for a member
    // locked elsewhere (up to `database.lock_timeout_ms`) must not hold up the batches
    // behind it, of its programme or any other. Calls for one member still take turns
    // on the member's lock.
    for job in alone {
        tokio::spawn(async move {
            let span = job.span.clone();
            let outcome = job
                .service
                .accrue_once(&job.key, job.cmd)
                .instrument(span)
                .await;
            let _ = job.reply.send(outcome);
        });
    }
}

/// One transaction for the calls the set-wise path covers (sorted by programme); the
/// outcome of each call, in order, once it has committed.
async fn try_batch(store: &Store, jobs: &[Job]) -> Result<Vec<Outcome>, AppError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let txn = store.begin_write().await?;
    let mut ids = Vec::new();
    let mut cards = Vec::new();
    for job in jobs {
        match &job.cmd.member {
            MemberKey::Id(id) => ids.push(id.as_str()),
            MemberKey::Card(card) => cards.push((job.service.store.program(), card.as_str())),
        }
    }
    let keys: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j.key.client_id.as_str(), j.key.request_id.as_str()))
        .collect();
    let orders: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| (j.service.store.program(), j.cmd.order_id.as_str()))
        .collect();
    let (locked, found) =
        accruals::lock_and_look_up(&*txn, &ids, &cards, jobs[0].key.method, &keys, &orders).await?;
    let now = store.now();
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut writes = Vec::new();
    for group in jobs.chunk_by(|a, b| a.service.store.program() == b.service.store.program()) {
        let service = &group[0].service;
        let program = service.store.program();
        // Only members of the group's programme answer its calls.
        let members: Vec<&MemberRow> = locked
            .members
            .iter()
            .filter(|m| m.program_id == program)
            .collect();
        let version = locked.ruleset_versions.get(program).copied().flatten();
        let ruleset = service.ruleset_at(&*txn, version).await?;
        let (mut group_outcomes, candidates) =
            sort_out(group, program, &members, &found, &ruleset, now);
        writes.extend(
            service
                .plan_writes(&txn, group, candidates, &ruleset, now, &mut group_outcomes)
                .await?,
        );
        outcomes.extend(group_outcomes);
    }
    ledger::post_accruals(&txn, writes, now).await?;
    txn.commit().await?;
    Ok(outcomes)
}

impl AccrualService {
    /// Plans the candidates' postings, with what decides a tier upgrade read for all of
    /// them at once; a call the planner says must run alone stays `Alone`.
    async fn plan_writes<'a>(
        &self,
        txn: &WriteTxn,
        jobs: &[Job],
        candidates: Vec<Candidate<'a>>,
        ruleset: &Ruleset,
        now: DateTime<Utc>,
        outcomes: &mut [Outcome],
    ) -> Result<Vec<AccrualWrite>, AppError> {
        // What decides a tier upgrade, read for every candidate at once.
        let since = window_start(ruleset, now);
        let qualifying = if ruleset.tiers.is_empty() || candidates.is_empty() {
            std::collections::HashMap::new()
        } else {
            let ids: Vec<&str> = candidates.iter().map(|c| c.1.id.as_str()).collect();
            crate::store::rules::qualifications(&**txn, &ids, since).await?
        };

        let mut writes = Vec::with_capacity(candidates.len());
        for (i, member, earning, at, capped) in candidates {
            let job = &jobs[i];
            let tier = (!ruleset.tiers.is_empty()).then(|| TierOutlook {
                ruleset,
                tier_id: member.tier_id.as_deref(),
                qualifying: qualifying.get(&member.id).copied().unwrap_or((0, 0)),
                in_window: at > since,
            });
            let plan = self.plan_accrual(member, &job.cmd, &earning, now, capped, tier);
            let transaction_id = plan.posting.transaction_id.clone();
            if plan.runs_alone.is_some() {
                continue;
            }
            if !plan.posting.in_range() {
                outcomes[i] = Outcome::Failed(AppError::PointsOutOfRange);
                continue;
            }
            let order = order_record(
                &job.cmd,
                &earning,
                member,
                &transaction_id,
                ruleset.version,
                at,
                now,
            )?;
            let receipt = AccrualReceipt {
                transaction_id,
                member_id: member.id.clone(),
                points_earned: earning.points,
                pending_points: plan.posting.delta.pending,
                lines: earning.lines,
                balance: BalanceView::from(plan.posting.after()),
                ruleset_version: ruleset.version,
                tier_id: member.tier_id.clone(),
                offers: Vec::new(),
            };
            let response =
                serde_json::to_vec(&receipt).map_err(|e| AppError::Internal(e.into()))?;
            writes.push(ledger::accrual_write(
                plan.posting,
                member.event_seq + 1,
                order,
                job.key.clone(),
                response,
            )?);
            outcomes[i] = Outcome::Done(Box::new(receipt));
        }
        Ok(writes)
    }
}

/// (job index, member, earning, when, meets a capped promotion) of a call the planner
/// will see.
type Candidate<'a> = (usize, &'a MemberRow, RulesEarning, DateTime<Utc>, bool);

/// Sorts the batch's calls out: replays and failures answered at once, calls that must
/// run alone (unknown or busy member, a second call for a member), and the candidates
/// the planner sees.
fn sort_out<'a>(
    jobs: &[Job],
    program: &str,
    members: &[&'a MemberRow],
    found: &accruals::Found,
    ruleset: &Ruleset,
    now: DateTime<Utc>,
) -> (Vec<Outcome>, Vec<Candidate<'a>>) {
    let none = std::collections::HashMap::new();

    let mut outcomes = Vec::with_capacity(jobs.len());
    // (job index, member, earning, when, meets a capped promotion) of the calls the
    // planner will see.
    let mut candidates = Vec::new();
    let mut members_in_batch = HashSet::new();
    for (i, job) in jobs.iter().enumerate() {
        outcomes.push(Outcome::Alone);
        let cmd = &job.cmd;
        let Some(member) = members.iter().copied().find(|m| match &cmd.member {
            MemberKey::Id(id) => m.id == id.as_str(),
            MemberKey::Card(card) => m.card_number.as_deref() == Some(card.as_str()),
        }) else {
            // Unknown, or locked by another transaction: the ordinary path tells.
            continue;
        };
        if let Some((fingerprint, response)) = found
            .earlier
            .get(&(job.key.client_id.clone(), job.key.request_id.clone()))
        {
            outcomes[i] = match idempotency::judge(&job.key, fingerprint, response.clone())
                .and_then(|bytes| crate::service::idempotency::decode(&bytes))
            {
                Ok(receipt) => Outcome::Replay(Box::new(receipt)),
                Err(err) => Outcome::Failed(err),
            };
            continue;
        }
        // A second call for a member sees the first one's balance: it runs after.
        if !members_in_batch.insert(member.id.clone()) {
            continue;
        }
        if found
            .orders
            .contains(&(program.to_owned(), cmd.order_id.as_str().to_owned()))
        {
            outcomes[i] = Outcome::Failed(AppError::OrderAlreadyAccrued);
            continue;
        }
        let at = cmd.occurred_at.map_or(now, crate::store::truncate);
        let ctx = EarnContext {
            at,
            channel: cmd.channel,
            store_id: cmd.store_id.as_str(),
            tier: member.tier_id.as_deref().and_then(|t| ruleset.tier(t)),
            remaining: &none,
            extra_rules: &[],
        };
        let capped = !ruleset.capped_candidates(&cmd.lines, &ctx).is_empty();
        let earning = ruleset.evaluate(&cmd.lines, &ctx);
        if !capped && cmd.offer_codes.is_empty() && !earning.within_bounds() {
            outcomes[i] = Outcome::Failed(AppError::PointsOutOfRange);
            continue;
        }
        candidates.push((i, member, earning, at, capped));
    }
    (outcomes, candidates)
}
