//! `loyalty.v1.EventService`: a server stream per watcher, fed from the outbox.
use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::{
    convert::{Violations, short_name, timestamp},
    pb::loyalty::v1::{self as v1, event_service_server::EventService as EventServiceApi},
};
use crate::{
    domain::{
        MemberId,
        events::{EventDetail, kind},
    },
    service::events::{EventFilter, EventService, EventView},
};

pub struct EventApi {
    events: EventService,
}

impl EventApi {
    pub fn new(events: EventService) -> Self {
        Self { events }
    }
}

/// `EVENT_TYPE_POINTS_ACCRUED` ⇄ `POINTS_ACCRUED`.
fn type_name(raw: i32) -> Option<&'static str> {
    let short = short_name(
        v1::EventType::try_from(raw).ok()?.as_str_name(),
        "EVENT_TYPE_",
    )?;
    kind::ALL.iter().copied().find(|k| *k == short)
}

fn type_number(name: &str) -> i32 {
    v1::EventType::from_str_name(&format!("EVENT_TYPE_{name}")).map_or(0, |t| t as i32)
}

impl From<EventView> for v1::Event {
    fn from(e: EventView) -> Self {
        use v1::event::Detail;
        let detail = match e.detail {
            EventDetail::BalanceChange {
                ledger_kind,
                points,
                pending_delta,
                held_delta,
                balance_after,
                reason_code,
                order_id,
                store_id,
                hold_id,
                return_id,
            } => Some(Detail::BalanceChange(v1::BalanceChange {
                ledger_kind,
                points,
                pending_delta,
                held_delta,
                balance_after,
                reason_code: reason_code.unwrap_or_default(),
                order_id: order_id.unwrap_or_default(),
                store_id: store_id.unwrap_or_default(),
                hold_id: hold_id.unwrap_or_default(),
                return_id: return_id.unwrap_or_default(),
            })),
            EventDetail::TierChange {
                from_tier_id,
                to_tier_id,
            } => Some(Detail::TierChange(v1::TierChange {
                from_tier_id: from_tier_id.unwrap_or_default(),
                to_tier_id: to_tier_id.unwrap_or_default(),
            })),
            EventDetail::Member {} => None,
            EventDetail::OfferUse {
                offer_id,
                order_id,
                points,
                discount_minor,
            } => Some(Detail::OfferUse(v1::OfferUse {
                offer_id,
                order_id,
                points,
                discount_minor,
            })),
            EventDetail::Feedback {
                feedback_id,
                kind,
                score,
                order_id,
                store_id,
            } => Some(Detail::Feedback(v1::FeedbackRecorded {
                feedback_id,
                kind,
                score,
                order_id: order_id.unwrap_or_default(),
                store_id: store_id.unwrap_or_default(),
            })),
            EventDetail::Complaint {
                complaint_id,
                topic,
                severity,
                outcome,
                goodwill_points,
            } => Some(Detail::Complaint(v1::ComplaintChange {
                complaint_id,
                topic,
                severity,
                outcome: outcome.unwrap_or_default(),
                goodwill_points,
            })),
        };
        Self {
            cursor: e.cursor,
            program_id: e.program_id,
            r#type: type_number(&e.event_type),
            member_id: e.member_id,
            member_sequence: e.member_seq,
            transaction_id: e.transaction_id.unwrap_or_default(),
            create_time: Some(timestamp(e.created_at)),
            detail,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EventServiceApi for EventApi {
    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        request: Request<v1::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = super::middleware::caller(&request);
        let req = request.into_inner();
        if req.all_programs && caller.role != crate::auth::Role::Platform {
            return Err(crate::error::AppError::PermissionDenied.into());
        }
        let mut v = Violations::default();
        if req.after_cursor < 0 {
            v.push("after_cursor", "must not be negative");
        }
        let mut filter = EventFilter {
            all_programs: req.all_programs,
            ..EventFilter::default()
        };
        for (i, raw) in req.types.iter().enumerate() {
            match type_name(*raw) {
                Some(t) => filter.types.push(t),
                None => v.push(format!("types[{i}]"), "must be a known event type"),
            }
        }
        if !req.member_id.is_empty() {
            filter.member_id = v.check("member_id", MemberId::parse(&req.member_id));
        }
        if !v.is_empty() {
            return Err(v.into_error().into());
        }
        self.events.check_cursor(req.after_cursor).await?;
        if let Some(member) = &filter.member_id {
            self.events.check_member(member).await?;
        }
        // A small buffer: a slow consumer holds back its own reader, nobody else.
        let (tx, rx) = mpsc::channel(64);
        let events = self.events.clone();
        let mut cursor = req.after_cursor;
        tokio::spawn(async move {
            loop {
                let batch = tokio::select! {
                    batch = events.next(cursor, &filter) => batch,
                    () = tx.closed() => return,
                    () = events.closed() => return,
                };
                match batch {
                    Ok(batch) if batch.is_empty() => {
                        tokio::select! {
                            () = events.wait() => {}
                            () = tx.closed() => return,
                            () = events.closed() => return,
                        }
                    }
                    Ok(batch) => {
                        for event in batch {
                            cursor = event.cursor;
                            let item = v1::WatchEventsResponse {
                                event: Some(event.into()),
                            };
                            if tx.send(Ok(item)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
