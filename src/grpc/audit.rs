//! `loyalty.v1.AuditService`.
use tonic::{Request, Response, Status};

use super::{
    convert::timestamp,
    pb::loyalty::v1::{self as v1, audit_service_server::AuditService as AuditServiceApi},
};
use crate::{
    error::AppError,
    store::{Store, clients},
};

pub struct AuditApi {
    store: Store,
}

impl AuditApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl AuditServiceApi for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        let req = request.get_ref();
        let size = match req.page_size {
            0 => 50,
            n @ 1..=500 => u64::try_from(n).unwrap_or(50),
            _ => return Err(AppError::invalid("page_size", "must be between 0 and 500").into()),
        };
        let before = if req.page_token.is_empty() {
            None
        } else {
            Some(req.page_token.parse::<i64>().map_err(|_| {
                AppError::invalid("page_token", "is not a token returned by this method")
            })?)
        };
        let mut rows = clients::audit_page(self.store.conn(), before, size + 1).await?;
        let more = rows.len() as u64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(50));
        let next_page_token = match rows.last() {
            Some(last) if more => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(v1::ListAuditEventsResponse {
            events: rows
                .into_iter()
                .map(|r| v1::AuditEvent {
                    event_id: r.id.to_string(),
                    event_time: Some(timestamp(r.at)),
                    client_id: r.client_id,
                    client_name: r.client_name,
                    role: r.role,
                    method: r.method,
                    target: r.target,
                    outcome: r.outcome,
                    request_id: r.request_id,
                })
                .collect(),
            next_page_token,
        }))
    }
}
