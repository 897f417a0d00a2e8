//! The event stream: the relay that gives committed events their cursors, and reading
//! them in cursor order (events are recorded by the ledger writer, `service::ledger`).
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::{
    domain::{MemberId, events::EventDetail},
    error::AppError,
    store::{
        Store,
        events::{self, EventRow},
    },
};

/// An event as delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    pub cursor: i64,
    /// The programme the event happened in.
    pub program_id: String,
    pub event_type: String,
    pub member_id: String,
    pub member_seq: i64,
    pub transaction_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub detail: EventDetail,
}

impl TryFrom<EventRow> for EventView {
    type Error = AppError;

    fn try_from(row: EventRow) -> Result<Self, AppError> {
        Ok(Self {
            cursor: row.cursor.unwrap_or_default(),
            program_id: row.program_id,
            event_type: row.event_type,
            member_id: row.member_id.unwrap_or_default(),
            member_seq: row.member_seq,
            transaction_id: row.transaction_id,
            created_at: row.created_at,
            detail: serde_json::from_str(&row.payload).map_err(|e| AppError::Internal(e.into()))?,
        })
    }
}

/// What a watcher asked for.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub types: Vec<&'static str>,
    pub member_id: Option<MemberId>,
    /// Every programme's events, not only the call's (platform administrators).
    pub all_programs: bool,
}

#[derive(Clone)]
pub struct EventService {
    store: Store,
    /// Woken when this replica's relay hands out cursors.
    relayed: Arc<Notify>,
    /// How long a watcher waits for news before looking again (other replicas relay too).
    poll: Duration,
    /// Set when the server shuts down: watchers end their streams.
    closing: tokio::sync::watch::Sender<bool>,
}

/// Events one relay step or one read handles at most.
const BATCH: i64 = 500;

impl EventService {
    pub fn new(store: Store, poll: Duration) -> Self {
        Self {
            store,
            relayed: Arc::new(Notify::new()),
            poll,
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// This service for the programme `store` is scoped to: the same relay wake-ups and
    /// shutdown signal, streams of that programme's events.
    pub fn for_program(&self, store: Store) -> Self {
        Self {
            store,
            ..self.clone()
        }
    }

    /// Gives committed events their cursors; returns how many. Safe on every replica:
    /// relays take turns on the relay row.
    pub async fn relay_once(&self) -> Result<u64, AppError> {
        let mut total = 0;
        while events::any_unassigned(self.store.conn()).await? {
            let txn = self.store.begin_write().await?;
            let n = events::assign_cursors(&*txn, BATCH).await?;
            txn.commit().await?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
        if total > 0 {
            self.relayed.notify_waiters();
        }
        Ok(total)
    }

    /// Fails when events after `after` were pruned (a non-zero cursor older than the
    /// retention); 0 means "from the oldest retained".
    /// Fails when the member is not in this programme.
    pub async fn check_member(&self, member: &MemberId) -> Result<(), AppError> {
        crate::store::members::find(
            self.store.conn(),
            self.store.program(),
            &crate::domain::MemberKey::Id(member.clone()),
        )
        .await
        .map(|_| ())
    }

    pub async fn check_cursor(&self, after: i64) -> Result<(), AppError> {
        let (_, pruned_through) = events::relay_state(self.store.conn()).await?;
        if after > 0 && after < pruned_through {
            return Err(AppError::CursorExpired);
        }
        Ok(())
    }

    /// The next events after `after` that match the filter, in cursor order.
    pub async fn next(&self, after: i64, filter: &EventFilter) -> Result<Vec<EventView>, AppError> {
        events::after(
            self.store.conn(),
            (!filter.all_programs).then(|| self.store.program()),
            after,
            &filter.types,
            filter.member_id.as_ref().map(MemberId::as_str),
            BATCH as u64,
        )
        .await?
        .into_iter()
        .map(EventView::try_from)
        .collect()
    }

    /// Waits until this replica relays something or the poll interval passes; relays
    /// first, so a watcher never waits on a relay that has not run yet.
    pub async fn wait(&self) {
        let notified = self.relayed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The relay runs in a task of its own: a watcher that goes away (its stream
        // dropped) must not cut the relay's transaction off half-way, which would hand a
        // connection with an unfinished transaction back to the pool.
        let relay = tokio::spawn({
            let events = self.clone();
            async move { events.relay_once().await }
        });
        match relay.await {
            Ok(Ok(0)) => {}
            Ok(Ok(_)) => return,
            Ok(Err(e)) => tracing::warn!(error = %e, "event relay failed"),
            Err(e) => tracing::error!(error = %e, "event relay task failed"),
        }
        let _ = tokio::time::timeout(self.poll, notified).await;
    }

    /// Ends every watcher's stream (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Completes once the server is shutting down.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }
}
