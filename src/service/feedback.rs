//! Feedback, complaints with service recovery, satisfaction figures and churn risk.
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Mutation,
    context::ProgramContext,
    idempotency::{Begun, begin, finish, once},
    ledger::record,
    paging,
    views::{BalanceView, ComplaintView, FeedbackView, survey_kind},
    wallet::{AdjustCommand, AdjustReason, grant_bonus},
};
use crate::{
    domain::{
        MemberKey, ShortId,
        events::{EventDetail, kind},
        insights::{
            NpsClass, RfmBands, RfmInput, Satisfaction, churn_risk, csat_average_x100, median,
            nps_class, nps_percent,
        },
    },
    error::{AppError, FieldViolation},
    store::{
        Store, WriteTxn,
        feedback::{self as rows, ComplaintRow, FeedbackRow, RiskRow},
        idempotency::IdempotencyKey,
        ledger, members,
    },
};

pub use crate::domain::insights::SurveyKind;
const MAX_TEXT: usize = 2000;

/// A validated feedback response.
#[derive(Debug, Clone)]
pub struct FeedbackCommand {
    pub member: MemberKey,
    pub kind: SurveyKind,
    pub score: i32,
    pub topics: Vec<&'static str>,
    pub comment: Option<String>,
    pub order_id: Option<ShortId>,
    pub store_id: Option<ShortId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackReceipt {
    pub feedback: FeedbackView,
    pub balance: BalanceView,
}

/// A validated complaint.
#[derive(Debug, Clone)]
pub struct ComplaintCommand {
    pub member: MemberKey,
    pub topic: &'static str,
    pub severity: &'static str,
    pub order_id: Option<ShortId>,
    pub store_id: Option<ShortId>,
    pub note: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ResolveCommand {
    pub complaint_id: String,
    pub outcome: &'static str,
    pub goodwill_points: i64,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub complaint: ComplaintView,
    pub transaction_id: Option<String>,
    pub balance: BalanceView,
}

/// Satisfaction figures for one group (empty key: the whole programme).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub key: String,
    pub nps_responses: i64,
    pub promoters: i64,
    pub passives: i64,
    pub detractors: i64,
    pub nps: Option<i32>,
    pub csat_responses: i64,
    pub csat_sum: i64,
    pub csat_average_x100: Option<i32>,
    pub complaints_opened: i64,
    pub complaints_resolved: i64,
    pub median_resolution_seconds: Option<i64>,
    resolution_seconds: Vec<i64>,
}

impl Figures {
    fn finish(mut self) -> Self {
        self.nps = nps_percent(self.promoters, self.detractors, self.nps_responses);
        self.csat_average_x100 = csat_average_x100(self.csat_sum, self.csat_responses);
        self.median_resolution_seconds = median(&mut self.resolution_seconds);
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    None,
    Tier,
    Store,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub overall: Figures,
    pub groups: Vec<Figures>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A ranked member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtRisk {
    pub row: RiskRow,
    pub recency: i32,
    pub frequency: i32,
    pub monetary: i32,
}

#[derive(Debug, Clone)]
pub struct AtRiskPage {
    pub members: Vec<AtRisk>,
    pub next_page_token: String,
}

/// A feedback or complaint call, begun.
enum Opened<T> {
    Replay(T),
    Fresh(Box<Open>),
}

struct Open {
    txn: WriteTxn,
    member: members::MemberRow,
    order: Option<ledger::OrderRow>,
    store_id: Option<String>,
}

#[derive(Clone)]
pub struct FeedbackService {
    store: Store,
    ctx: ProgramContext,
}

/// A score in its survey's range, and a comment within bounds.
fn check_feedback(cmd: &FeedbackCommand) -> Result<(), AppError> {
    let mut violations = Vec::new();
    let range = cmd.kind.scores();
    if !range.contains(&cmd.score) {
        violations.push(FieldViolation::new(
            "score",
            format!(
                "must be {} to {} for {}",
                range.start(),
                range.end(),
                cmd.kind.as_str()
            ),
        ));
    }
    check_text("comment", &cmd.comment, &mut violations);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(AppError::InvalidArgument(violations))
    }
}

fn check_text(field: &str, text: &Option<String>, violations: &mut Vec<FieldViolation>) {
    if text.as_ref().is_some_and(|t| t.chars().count() > MAX_TEXT) {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {MAX_TEXT} characters"),
        ));
    }
}

impl FeedbackService {
    pub fn new(store: Store, ctx: ProgramContext) -> Self {
        Self { store, ctx }
    }

    /// Claims the call's key, locks the member and finds the order the call names (the
    /// member's; for a till, one of its stores'), or ORDER_NOT_FOUND.
    async fn open<T: serde::de::DeserializeOwned>(
        &self,
        mutation: &Mutation,
        key: &IdempotencyKey,
        (member, order_id, store_id): (&MemberKey, Option<&ShortId>, Option<ShortId>),
    ) -> Result<Opened<T>, AppError> {
        let txn = match begin::<T>(&self.store, key).await? {
            Begun::Replay(r) => return Ok(Opened::Replay(r)),
            Begun::Fresh(txn) => txn,
        };
        let member = members::lock(&*txn, txn.program(), member).await?;
        if member.erased_at.is_some() {
            // New feedback or complaints would store text about a person who asked to
            // be forgotten.
            return Err(AppError::MemberErased);
        }
        let order = match order_id {
            None => None,
            Some(order_id) => Some(
                ledger::find_order(&*txn, txn.program(), order_id.as_str())
                    .await?
                    .filter(|o| {
                        o.member_id == member.id && mutation.caller.may_act_for_store(&o.store_id)
                    })
                    .ok_or(AppError::OrderNotFound)?,
            ),
        };
        // The store the call names, else its order's.
        let store_id = store_id
            .map(ShortId::into_string)
            .or_else(|| order.as_ref().map(|o| o.store_id.clone()));
        Ok(Opened::Fresh(Box::new(Open {
            txn,
            member,
            order,
            store_id,
        })))
    }

    #[tracing::instrument(name = "feedback.record", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn record_feedback(
        &self,
        mutation: &Mutation,
        cmd: FeedbackCommand,
    ) -> Result<FeedbackReceipt, AppError> {
        check_feedback(&cmd)?;
        let idem = mutation.key("RecordFeedback");
        once(&self.store, &idem, async {
            let call = (&cmd.member, cmd.order_id.as_ref(), cmd.store_id);
            let Open {
                txn,
                member,
                order,
                store_id,
            } = match self.open(mutation, &idem, call).await? {
                Opened::Replay(r) => return Ok(r),
                Opened::Fresh(open) => *open,
            };
            let now = self.store.now();
            let feedback_id = uuid::Uuid::now_v7().to_string();
            let bonus = self.ctx.program.feedback_bonus_points;
            // Once per order: the member's row is locked, and only this member has the order.
            let bonus_points = match &order {
                Some(o)
                    if bonus > 0
                        && !rows::bonus_paid_for_order(&*txn, txn.program(), &o.order_id)
                            .await? =>
                {
                    bonus
                }
                _ => 0,
            };
            let row = FeedbackRow {
                id: feedback_id.clone(),
                program_id: txn.program().to_owned(),
                member_id: member.id.clone(),
                order_id: order.as_ref().map(|o| o.order_id.clone()),
                store_id,
                tier_id: member.tier_id.clone(),
                kind: cmd.kind.as_str().to_owned(),
                score: cmd.score,
                topics: cmd.topics.join(","),
                comment: cmd.comment,
                bonus_points,
                created_at: now,
            };
            rows::insert_feedback(&*txn, row.clone()).await?;
            record(
                &*txn,
                &member.id,
                kind::FEEDBACK_RECORDED,
                None,
                &EventDetail::Feedback {
                    feedback_id: feedback_id.clone(),
                    kind: row.kind.clone(),
                    score: row.score,
                    order_id: row.order_id.clone(),
                    store_id: row.store_id.clone(),
                },
                now,
            )
            .await?;
            let transaction_id = super::wallet::new_transaction_id();
            let credited = grant_bonus(
                &self.ctx,
                &txn,
                &member.id,
                bonus_points,
                "FEEDBACK",
                &transaction_id,
            )
            .await?;
            self.rescore(&txn, &member.id).await?;
            let receipt = FeedbackReceipt {
                feedback: FeedbackView::try_from(row)?,
                balance: BalanceView::from(credited.as_ref().unwrap_or(&member)),
            };
            finish(txn, &idem, &receipt).await?;
            Ok(receipt)
        })
        .await
    }

    #[tracing::instrument(name = "feedback.complaint", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn record_complaint(
        &self,
        mutation: &Mutation,
        cmd: ComplaintCommand,
    ) -> Result<ComplaintView, AppError> {
        let mut violations = Vec::new();
        check_text("note", &cmd.note, &mut violations);
        if !violations.is_empty() {
            return Err(AppError::InvalidArgument(violations));
        }
        let idem = mutation.key("RecordComplaint");
        once(&self.store, &idem, async {
            let call = (&cmd.member, cmd.order_id.as_ref(), cmd.store_id);
            let Open {
                txn,
                member,
                order,
                store_id,
            } = match self.open(mutation, &idem, call).await? {
                Opened::Replay(r) => return Ok(r),
                Opened::Fresh(open) => *open,
            };
            let now = self.store.now();
            let row = ComplaintRow {
                id: uuid::Uuid::now_v7().to_string(),
                program_id: txn.program().to_owned(),
                member_id: member.id.clone(),
                order_id: order.as_ref().map(|o| o.order_id.clone()),
                store_id,
                tier_id: member.tier_id.clone(),
                topic: cmd.topic.to_owned(),
                severity: cmd.severity.to_owned(),
                status: rows::OPEN.to_owned(),
                outcome: None,
                goodwill_points: 0,
                note: cmd.note,
                opened_at: now,
                resolved_at: None,
                resolution_seconds: None,
            };
            rows::insert_complaint(&*txn, row.clone()).await?;
            record(
                &*txn,
                &member.id,
                kind::COMPLAINT_OPENED,
                None,
                &complaint_detail(&row),
                now,
            )
            .await?;
            self.rescore(&txn, &member.id).await?;
            let view = ComplaintView::from(row);
            finish(txn, &idem, &view).await?;
            Ok(view)
        })
        .await
    }

    /// What a resolution can be refused for before any database work: its note, a
    /// negative grant, and the per-grant goodwill cap.
    fn check_resolution(&self, cmd: &ResolveCommand) -> Result<(), AppError> {
        let mut violations = Vec::new();
        check_text("note", &cmd.note, &mut violations);
        if cmd.goodwill_points < 0 {
            violations.push(FieldViolation::new(
                "goodwill_points",
                "must not be negative",
            ));
        }
        if !violations.is_empty() {
            return Err(AppError::InvalidArgument(violations));
        }
        if cmd.goodwill_points > 0 {
            self.ctx
                .check_adjustment(cmd.goodwill_points, AdjustReason::Goodwill)?;
        }
        Ok(())
    }

    /// Closes the case and grants the goodwill in one transaction: a grant beyond the
    /// programme's caps fails the whole call and the case stays open.
    #[tracing::instrument(name = "feedback.resolve", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn resolve_complaint(
        &self,
        mutation: &Mutation,
        cmd: ResolveCommand,
    ) -> Result<Resolution, AppError> {
        self.check_resolution(&cmd)?;
        let key = mutation.key("ResolveComplaint");
        once(&self.store, &key, async {
            let txn = match begin::<Resolution>(&self.store, &key).await? {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(txn) => txn,
            };
            let found = rows::find_complaint(&*txn, txn.program(), &cmd.complaint_id)
                .await?
                .ok_or(AppError::ComplaintNotFound)?;
            // Member first, as every transaction locks: then the case.
            let member_key = super::stored_member(&found.member_id)?;
            let locked = members::lock(&*txn, txn.program(), &member_key).await?;
            let now = self.store.now();
            let resolved = resolved_row(found, locked.erased_at.is_some(), &cmd, now);
            if !rows::resolve_complaint(&*txn, &resolved).await? {
                return Err(AppError::ComplaintAlreadyResolved);
            }
            record(
                &*txn,
                &resolved.member_id,
                kind::COMPLAINT_RESOLVED,
                None,
                &complaint_detail(&resolved),
                now,
            )
            .await?;
            let (transaction_id, balance) = if cmd.goodwill_points > 0 {
                let adjustment = self
                    .ctx
                    .adjust_in(
                        &txn,
                        AdjustCommand {
                            member: member_key.clone(),
                            points: cmd.goodwill_points,
                            reason: AdjustReason::Goodwill,
                            note: Some(format!("complaint {}", resolved.id)),
                        },
                    )
                    .await?;
                (Some(adjustment.transaction_id), adjustment.balance)
            } else {
                (None, BalanceView::from(&locked))
            };
            self.rescore(&txn, &resolved.member_id).await?;
            let resolution = Resolution {
                complaint: ComplaintView::from(resolved),
                transaction_id,
                balance,
            };
            finish(txn, &key, &resolution).await?;
            Ok(resolution)
        })
        .await
    }

    /// NPS, CSAT and complaint figures for `[start, end)`, overall and by group; the end
    /// defaults to now and the start to 30 days before the end.
    #[tracing::instrument(name = "feedback.summary", skip_all)]
    pub async fn summary(
        &self,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        grouping: Grouping,
    ) -> Result<Summary, AppError> {
        let end = end.unwrap_or_else(|| self.store.now());
        let start = start.unwrap_or(end - chrono::Duration::days(30));
        if start >= end {
            return Err(AppError::invalid("start_time", "must be before end_time"));
        }
        let db = self.store.conn();
        let counts = rows::score_counts(db, self.store.program(), start, end).await?;
        let complaints = rows::complaints_opened(db, self.store.program(), start, end).await?;
        let key_of = |tier: &Option<String>, store: &Option<String>| match grouping {
            Grouping::None => None,
            Grouping::Tier => Some(tier.clone().unwrap_or_default()),
            Grouping::Store => Some(store.clone().unwrap_or_default()),
        };
        let mut overall = Figures::default();
        let mut groups: BTreeMap<String, Figures> = BTreeMap::new();
        for c in &counts {
            let mut targets = vec![&mut overall];
            let group = key_of(&c.tier_id, &c.store_id).map(|k| {
                groups.entry(k.clone()).or_insert_with(|| Figures {
                    key: k,
                    ..Default::default()
                })
            });
            targets.extend(group);
            for f in targets {
                if survey_kind(&c.kind)? == SurveyKind::Nps {
                    f.nps_responses += c.responses;
                    match nps_class(c.score) {
                        NpsClass::Promoter => f.promoters += c.responses,
                        NpsClass::Passive => f.passives += c.responses,
                        NpsClass::Detractor => f.detractors += c.responses,
                    }
                } else {
                    f.csat_responses += c.responses;
                    f.csat_sum += i64::from(c.score) * c.responses;
                }
            }
        }
        for c in &complaints {
            let mut targets = vec![&mut overall];
            let group = key_of(&c.tier_id, &c.store_id).map(|k| {
                groups.entry(k.clone()).or_insert_with(|| Figures {
                    key: k,
                    ..Default::default()
                })
            });
            targets.extend(group);
            for f in targets {
                f.complaints_opened += 1;
                if let Some(secs) = c.resolution_seconds {
                    f.complaints_resolved += 1;
                    f.resolution_seconds.push(secs);
                }
            }
        }
        Ok(Summary {
            overall: overall.finish(),
            groups: groups.into_values().map(Figures::finish).collect(),
            start,
            end,
        })
    }

    /// Members ranked by churn risk, highest first (keyset pages).
    #[tracing::instrument(name = "feedback.at_risk", skip_all)]
    pub async fn at_risk(
        &self,
        min_score: i32,
        page_size: i32,
        page_token: &str,
    ) -> Result<AtRiskPage, AppError> {
        if !(0..=100).contains(&min_score) {
            return Err(AppError::invalid("min_risk_score", "must be 0 to 100"));
        }
        let size = paging::page_size(page_size)?;
        let after = paging::decode_token("risk", page_token)?
            .map(|c| {
                c.split_once(':')
                    .and_then(|(s, id)| Some((s.parse::<i32>().ok()?, id.to_owned())))
                    .ok_or_else(|| AppError::invalid("page_token", "is not a token from this list"))
            })
            .transpose()?;
        let found = rows::ranked(
            self.store.conn(),
            self.store.program(),
            min_score,
            after,
            size + 1,
        )
        .await?;
        let (found, next_page_token) = paging::split(found, size, "risk", |r| {
            format!("{}:{}", r.score, r.member_id)
        });
        let bands = RfmBands::default();
        Ok(AtRiskPage {
            members: found
                .into_iter()
                .map(|row| {
                    // The R/F/M scores follow from the stored inputs by the same bands.
                    let risk = churn_risk(&input_of(&row), &bands);
                    AtRisk {
                        recency: risk.recency,
                        frequency: risk.frequency,
                        monetary: risk.monetary,
                        row,
                    }
                })
                .collect(),
            next_page_token,
        })
    }

    /// Re-scores one member inside the caller's transaction.
    async fn rescore(&self, txn: &WriteTxn, member_id: &str) -> Result<(), AppError> {
        super::risk::score_members(
            &**txn,
            txn.program(),
            &[member_id.to_owned()],
            self.ctx.program.risk_window,
            self.store.now(),
        )
        .await
    }
}

/// The case as resolved at `now`. An erased member's case keeps no new text about them.
fn resolved_row(
    found: ComplaintRow,
    erased: bool,
    cmd: &ResolveCommand,
    now: DateTime<Utc>,
) -> ComplaintRow {
    ComplaintRow {
        status: rows::RESOLVED.to_owned(),
        outcome: Some(cmd.outcome.to_owned()),
        goodwill_points: cmd.goodwill_points,
        note: match (&found.note, &cmd.note) {
            _ if erased => None,
            (Some(a), Some(b)) => Some(format!("{a}\n{b}")),
            (a, b) => b.clone().or_else(|| a.clone()),
        },
        resolved_at: Some(now),
        resolution_seconds: Some((now - found.opened_at).num_seconds().max(0)),
        ..found
    }
}

fn complaint_detail(row: &ComplaintRow) -> EventDetail {
    EventDetail::Complaint {
        complaint_id: row.id.clone(),
        topic: row.topic.clone(),
        severity: row.severity.clone(),
        outcome: row.outcome.clone(),
        goodwill_points: row.goodwill_points,
    }
}

/// The scoring input a stored score was made from (recency of a member without a
/// purchase in the window is stored as days since enrolment, negated).
fn input_of(row: &RiskRow) -> RfmInput {
    let days = i64::from(row.recency_days.unwrap_or(0));
    RfmInput {
        days_since_purchase: (days >= 0).then_some(days),
        days_since_enrolment: days.abs(),
        orders: i64::from(row.frequency),
        spend_minor: row.monetary_minor,
        satisfaction: row.satisfaction.as_deref().and_then(Satisfaction::parse),
        open_complaints: i64::from(row.open_complaints),
    }
}
