//! What callers see of balances, statements, holds, feedback and complaints: read views
//! shared by the use cases that answer with them.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::paging;
use crate::{
    domain::{EntryKind, MemberKey, insights::SurveyKind},
    error::AppError,
    store::{
        Store,
        feedback::{ComplaintRow, FeedbackRow},
        holds::HoldRow,
        ledger as entries,
        members::MemberRow,
    },
};

/// A member's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceView {
    pub available: i64,
    pub pending: i64,
    pub held: i64,
    pub lifetime_earned: i64,
}

impl From<crate::domain::Balances> for BalanceView {
    fn from(b: crate::domain::Balances) -> Self {
        Self {
            available: b.available,
            pending: b.pending,
            held: b.held,
            lifetime_earned: b.lifetime,
        }
    }
}

impl From<&MemberRow> for BalanceView {
    fn from(row: &MemberRow) -> Self {
        super::ledger::balances_of(row).into()
    }
}

/// One statement line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntryView {
    pub entry_id: i64,
    pub member_id: String,
    pub transaction_id: String,
    pub kind: EntryKind,
    pub points: i64,
    pub balance_after: i64,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub pending_delta: i64,
    pub held_delta: i64,
    pub reason_code: Option<String>,
    pub note: Option<String>,
    pub hold_id: Option<String>,
    pub return_id: Option<String>,
}

/// A page of a statement.
#[derive(Debug, Clone)]
pub struct StatementPage {
    pub entries: Vec<LedgerEntryView>,
    pub next_page_token: String,
}

/// A hold as callers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub hold_id: String,
    pub member_id: String,
    pub points: i64,
    pub captured_points: i64,
    pub status: String,
    pub order_id: Option<String>,
    pub expires_at: DateTime<Utc>,
}

impl From<&HoldRow> for HoldView {
    fn from(h: &HoldRow) -> Self {
        Self {
            hold_id: h.id.clone(),
            member_id: h.member_id.clone(),
            points: h.points,
            captured_points: h.captured_points,
            status: h.status.clone(),
            order_id: h.order_id.clone(),
            expires_at: h.expires_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackView {
    pub feedback_id: String,
    pub member_id: String,
    pub kind: SurveyKind,
    pub score: i32,
    pub topics: Vec<String>,
    pub comment: Option<String>,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
    pub bonus_points: i64,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<FeedbackRow> for FeedbackView {
    type Error = AppError;

    fn try_from(r: FeedbackRow) -> Result<Self, AppError> {
        Ok(Self {
            feedback_id: r.id,
            member_id: r.member_id,
            kind: survey_kind(&r.kind)?,
            score: r.score,
            topics: split(&r.topics),
            comment: r.comment,
            order_id: r.order_id,
            store_id: r.store_id,
            bonus_points: r.bonus_points,
            created_at: r.created_at,
        })
    }
}

/// The survey a stored row names: only this code writes them, so an unknown one is a
/// bug or a newer release's row, never something to count as the other survey.
pub(super) fn survey_kind(stored: &str) -> Result<SurveyKind, AppError> {
    SurveyKind::parse(stored)
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("unknown feedback kind {stored:?}")))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplaintView {
    pub complaint_id: String,
    pub member_id: String,
    pub topic: String,
    pub severity: String,
    pub status: String,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
    pub outcome: Option<String>,
    pub goodwill_points: i64,
    pub note: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolution_seconds: Option<i64>,
}

impl From<ComplaintRow> for ComplaintView {
    fn from(r: ComplaintRow) -> Self {
        Self {
            complaint_id: r.id,
            member_id: r.member_id,
            topic: r.topic,
            severity: r.severity,
            status: r.status,
            order_id: r.order_id,
            store_id: r.store_id,
            outcome: r.outcome,
            goodwill_points: r.goodwill_points,
            note: r.note,
            opened_at: r.opened_at,
            resolved_at: r.resolved_at,
            resolution_seconds: r.resolution_seconds,
        }
    }
}

/// A page of a member's statement, newest first; the page token is bound to the member.
pub(super) async fn statement_page(
    store: &Store,
    key: &MemberKey,
    page_size: i32,
    page_token: &str,
) -> Result<StatementPage, AppError> {
    let size = paging::page_size(page_size)?;
    let not_ours = || AppError::invalid("page_token", "is not a token returned for this member");
    // (member id, last entry id) of the page before.
    let cursor = paging::decode_token("ledger", page_token)?
        .map(|cursor| {
            cursor
                .rsplit_once(':')
                .and_then(|(member_id, id)| Some((member_id.to_owned(), id.parse::<i64>().ok()?)))
                .ok_or_else(not_ours)
        })
        .transpose()?;
    let before = cursor.as_ref().map(|(_, id)| *id);
    let (member_id, rows) =
        entries::member_page(store.conn(), store.program(), key, before, size + 1).await?;
    // The token is bound to the member it was issued for.
    if cursor.is_some_and(|(issued_for, _)| issued_for != member_id) {
        return Err(not_ours());
    }
    let (rows, next_page_token) =
        paging::split(rows, size, "ledger", |e| format!("{member_id}:{}", e.id));
    Ok(StatementPage {
        entries: rows
            .into_iter()
            .map(|r| {
                Ok(LedgerEntryView {
                    entry_id: r.id,
                    member_id: r.member_id,
                    transaction_id: r.transaction_id,
                    // Only this code writes kinds: an unknown one is a bug or a newer
                    // release's row, never something to show as another kind.
                    kind: EntryKind::parse(&r.kind).ok_or_else(|| {
                        AppError::Internal(anyhow::anyhow!("unknown ledger kind {:?}", r.kind))
                    })?,
                    points: r.points,
                    balance_after: r.balance_after,
                    order_id: r.order_id,
                    store_id: r.store_id,
                    created_at: r.created_at,
                    pending_delta: r.pending_delta,
                    held_delta: r.held_delta,
                    reason_code: r.reason_code,
                    note: r.note,
                    hold_id: r.hold_id,
                    return_id: r.return_id,
                })
            })
            .collect::<Result<_, AppError>>()?,
        next_page_token,
    })
}

fn split(joined: &str) -> Vec<String> {
    joined
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
