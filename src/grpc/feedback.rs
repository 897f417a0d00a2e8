//! `loyalty.v1.FeedbackService`.
use tonic::{Request, Response, Status};

use super::{
    convert::{
        Violations, check_store, checked_mutation, free_text, member_key, member_target,
        optional_id, optional_time, short_name, timestamp,
    },
    middleware::caller,
    middleware::note_audit,
    pb::loyalty::v1::{self as v1, feedback_service_server::FeedbackService as FeedbackServiceApi},
};
use crate::service::feedback::{
    AtRisk, ComplaintCommand, FeedbackCommand, FeedbackService, Figures, Grouping, ResolveCommand,
    SurveyKind,
};
use crate::service::views::{ComplaintView, FeedbackView};

pub struct FeedbackApi {
    feedback: FeedbackService,
}

impl FeedbackApi {
    pub fn new(feedback: FeedbackService) -> Self {
        Self { feedback }
    }
}

// Stored names are the proto names without their prefix (see `short_name`).
fn topic_name(raw: i32) -> Option<&'static str> {
    short_name(v1::Topic::try_from(raw).ok()?.as_str_name(), "TOPIC_")
}

fn topic_number(name: &str) -> i32 {
    v1::Topic::from_str_name(&format!("TOPIC_{name}")).map_or(0, |t| t as i32)
}

fn severity_name(raw: i32) -> Option<&'static str> {
    short_name(v1::Severity::try_from(raw).ok()?.as_str_name(), "SEVERITY_")
}

fn severity_number(name: &str) -> i32 {
    v1::Severity::from_str_name(&format!("SEVERITY_{name}")).map_or(0, |t| t as i32)
}

fn outcome_name(raw: i32) -> Option<&'static str> {
    short_name(
        v1::ComplaintOutcome::try_from(raw).ok()?.as_str_name(),
        "COMPLAINT_OUTCOME_",
    )
}

fn outcome_number(name: Option<&str>) -> i32 {
    name.and_then(|n| v1::ComplaintOutcome::from_str_name(&format!("COMPLAINT_OUTCOME_{n}")))
        .map_or(0, |t| t as i32)
}

/// The longest comment or note.
const MAX_TEXT: usize = 2000;

impl From<FeedbackView> for v1::Feedback {
    fn from(f: FeedbackView) -> Self {
        Self {
            feedback_id: f.feedback_id,
            member_id: f.member_id,
            kind: match f.kind {
                SurveyKind::Nps => v1::FeedbackKind::Nps,
                SurveyKind::Csat => v1::FeedbackKind::Csat,
            } as i32,
            score: f.score,
            topics: f.topics.iter().map(|t| topic_number(t)).collect(),
            comment: f.comment.unwrap_or_default(),
            order_id: f.order_id.unwrap_or_default(),
            store_id: f.store_id.unwrap_or_default(),
            bonus_points: f.bonus_points,
            create_time: Some(timestamp(f.created_at)),
        }
    }
}

impl From<ComplaintView> for v1::Complaint {
    fn from(c: ComplaintView) -> Self {
        Self {
            complaint_id: c.complaint_id,
            member_id: c.member_id,
            topic: topic_number(&c.topic),
            severity: severity_number(&c.severity),
            status: if c.status == "OPEN" {
                v1::ComplaintStatus::Open
            } else {
                v1::ComplaintStatus::Resolved
            } as i32,
            order_id: c.order_id.unwrap_or_default(),
            store_id: c.store_id.unwrap_or_default(),
            outcome: outcome_number(c.outcome.as_deref()),
            goodwill_points: c.goodwill_points,
            note: c.note.unwrap_or_default(),
            open_time: Some(timestamp(c.opened_at)),
            resolve_time: c.resolved_at.map(timestamp),
            resolution_seconds: c.resolution_seconds.unwrap_or_default(),
        }
    }
}

impl From<Figures> for v1::SatisfactionFigures {
    fn from(f: Figures) -> Self {
        Self {
            key: f.key,
            nps_responses: f.nps_responses,
            promoters: f.promoters,
            passives: f.passives,
            detractors: f.detractors,
            nps: f.nps,
            csat_responses: f.csat_responses,
            csat_average_x100: f.csat_average_x100,
            complaints_opened: f.complaints_opened,
            complaints_resolved: f.complaints_resolved,
            median_resolution_seconds: f.median_resolution_seconds,
        }
    }
}

impl From<AtRisk> for v1::AtRiskMember {
    fn from(a: AtRisk) -> Self {
        let days = a.row.recency_days.filter(|d| *d >= 0);
        Self {
            member_id: a.row.member_id,
            risk_score: a.row.score,
            recency_score: a.recency,
            frequency_score: a.frequency,
            monetary_score: a.monetary,
            days_since_purchase: days,
            orders: a.row.frequency,
            spend_minor: a.row.monetary_minor,
            satisfaction: a.row.satisfaction.unwrap_or_default(),
            open_complaints: a.row.open_complaints,
            reasons: a
                .row
                .reasons
                .split("; ")
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect(),
            score_time: Some(timestamp(a.row.scored_at)),
        }
    }
}

#[tonic::async_trait]
impl FeedbackServiceApi for FeedbackApi {
    async fn record_feedback(
        &self,
        request: Request<v1::RecordFeedbackRequest>,
    ) -> Result<Response<v1::RecordFeedbackResponse>, Status> {
        let req = request.get_ref();
        note_audit(
            &request,
            member_target(req.member.as_ref()),
            &req.request_id,
        );
        let mut v = Violations::default();
        let mutation = checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let member = member_key(&mut v, "member", req.member.as_ref());
        let kind = match v1::FeedbackKind::try_from(req.kind) {
            Ok(v1::FeedbackKind::Csat) => Some(SurveyKind::Csat),
            Ok(v1::FeedbackKind::Nps) => Some(SurveyKind::Nps),
            _ => {
                v.push("kind", "must be FEEDBACK_KIND_CSAT or FEEDBACK_KIND_NPS");
                None
            }
        };
        let mut topics = Vec::new();
        for (i, raw) in req.topics.iter().enumerate() {
            match topic_name(*raw) {
                Some(t) if !topics.contains(&t) => topics.push(t),
                Some(_) => v.push(format!("topics[{i}]"), "is given twice"),
                None => v.push(format!("topics[{i}]"), "must be a known topic"),
            }
        }
        let order_id = optional_id(&mut v, "order_id", &req.order_id);
        let store_id = optional_id(&mut v, "store_id", &req.store_id);
        let comment = free_text(&mut v, "comment", &req.comment, MAX_TEXT);
        let (
            Some(mutation),
            Some(member),
            Some(kind),
            Some(order_id),
            Some(store_id),
            Some(comment),
        ) = (mutation, member, kind, order_id, store_id, comment)
        else {
            return Err(v.into_error().into());
        };
        if !v.is_empty() {
            return Err(v.into_error().into());
        }
        check_store(&mutation.caller, store_id.as_ref().map(|s| s.as_str()))?;
        let receipt = self
            .feedback
            .record_feedback(
                &mutation,
                FeedbackCommand {
                    member,
                    kind,
                    score: req.score,
                    topics,
                    comment,
                    order_id,
                    store_id,
                },
            )
            .await?;
        Ok(Response::new(v1::RecordFeedbackResponse {
            feedback: Some(receipt.feedback.into()),
            balance: Some(receipt.balance.into()),
        }))
    }

    async fn record_complaint(
        &self,
        request: Request<v1::RecordComplaintRequest>,
    ) -> Result<Response<v1::RecordComplaintResponse>, Status> {
        let req = request.get_ref();
        note_audit(
            &request,
            member_target(req.member.as_ref()),
            &req.request_id,
        );
        let mut v = Violations::default();
        let mutation = checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let member = member_key(&mut v, "member", req.member.as_ref());
        let topic = topic_name(req.topic);
        if topic.is_none() {
            v.push(
                "topic",
                "must be a known topic other than TOPIC_UNSPECIFIED",
            );
        }
        let severity = severity_name(req.severity);
        if severity.is_none() {
            v.push("severity", "must be LOW, MEDIUM or HIGH");
        }
        let order_id = optional_id(&mut v, "order_id", &req.order_id);
        let store_id = optional_id(&mut v, "store_id", &req.store_id);
        let note = free_text(&mut v, "note", &req.note, MAX_TEXT);
        let (
            Some(mutation),
            Some(member),
            Some(topic),
            Some(severity),
            Some(order_id),
            Some(store_id),
            Some(note),
        ) = (mutation, member, topic, severity, order_id, store_id, note)
        else {
            return Err(v.into_error().into());
        };
        if !v.is_empty() {
            return Err(v.into_error().into());
        }
        check_store(&mutation.caller, store_id.as_ref().map(|s| s.as_str()))?;
        let complaint = self
            .feedback
            .record_complaint(
                &mutation,
                ComplaintCommand {
                    member,
                    topic,
                    severity,
                    order_id,
                    store_id,
                    note,
                },
            )
            .await?;
        Ok(Response::new(v1::RecordComplaintResponse {
            complaint: Some(complaint.into()),
        }))
    }

    async fn resolve_complaint(
        &self,
        request: Request<v1::ResolveComplaintRequest>,
    ) -> Result<Response<v1::ResolveComplaintResponse>, Status> {
        let req = request.get_ref();
        note_audit(
            &request,
            format!("complaint:{}", req.complaint_id),
            &req.request_id,
        );
        let mut v = Violations::default();
        let mutation = checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let complaint_id = v.check(
            "complaint_id",
            uuid::Uuid::parse_str(&req.complaint_id)
                .map(|u| u.to_string())
                .map_err(|_| "must be a complaint id".to_owned()),
        );
        let outcome = outcome_name(req.outcome);
        if outcome.is_none() {
            v.push("outcome", "must be RESOLVED, NO_FAULT_FOUND or UNRESOLVED");
        }
        let note = free_text(&mut v, "note", &req.note, MAX_TEXT);
        let (Some(mutation), Some(complaint_id), Some(outcome), Some(note)) =
            (mutation, complaint_id, outcome, note)
        else {
            return Err(v.into_error().into());
        };
        if !v.is_empty() {
            return Err(v.into_error().into());
        }
        let resolution = self
            .feedback
            .resolve_complaint(
                &mutation,
                ResolveCommand {
                    complaint_id,
                    outcome,
                    goodwill_points: req.goodwill_points,
                    note,
                },
            )
            .await?;
        Ok(Response::new(v1::ResolveComplaintResponse {
            complaint: Some(resolution.complaint.into()),
            transaction_id: resolution.transaction_id.unwrap_or_default(),
            balance: Some(resolution.balance.into()),
        }))
    }

    async fn get_satisfaction_summary(
        &self,
        request: Request<v1::GetSatisfactionSummaryRequest>,
    ) -> Result<Response<v1::GetSatisfactionSummaryResponse>, Status> {
        let req = request.get_ref();
        let mut v = Violations::default();
        let start = optional_time(&mut v, "start_time", req.start_time.as_ref());
        let end = optional_time(&mut v, "end_time", req.end_time.as_ref());
        let grouping = match v1::SummaryGrouping::try_from(req.group_by) {
            Ok(v1::SummaryGrouping::Unspecified) => Some(Grouping::None),
            Ok(v1::SummaryGrouping::Tier) => Some(Grouping::Tier),
            Ok(v1::SummaryGrouping::Store) => Some(Grouping::Store),
            Err(_) => {
                v.push("group_by", "must be a known grouping");
                None
            }
        };
        let (Some(start), Some(end), Some(grouping)) = (start, end, grouping) else {
            return Err(v.into_error().into());
        };
        let summary = self.feedback.summary(start, end, grouping).await?;
        Ok(Response::new(v1::GetSatisfactionSummaryResponse {
            overall: Some(summary.overall.into()),
            groups: summary.groups.into_iter().map(Into::into).collect(),
            start_time: Some(timestamp(summary.start)),
            end_time: Some(timestamp(summary.end)),
        }))
    }

    async fn list_at_risk_members(
        &self,
        request: Request<v1::ListAtRiskMembersRequest>,
    ) -> Result<Response<v1::ListAtRiskMembersResponse>, Status> {
        let req = request.get_ref();
        let page = self
            .feedback
            .at_risk(req.min_risk_score, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(v1::ListAtRiskMembersResponse {
            members: page.members.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
