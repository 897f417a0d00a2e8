//! `loyalty.v1.AuditService`.
use tonic::{Request, Response, Status};

use super::{
    convert::timestamp,
    pb::loyalty::v1::{self as v1, audit_service_server::AuditService as AuditServiceApi},
};
use crate::{
    error::AppError,
    service::paging,
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
        let size = paging::page_size(req.page_size)?;
        let before = paging::decode_token("audit", &req.page_token)?
            .map(|c| {
                c.parse::<i64>().map_err(|_| {
                    AppError::invalid("page_token", "is not a token returned by this method")
                })
            })
            .transpose()?;
        let rows =
            clients::audit_page(self.store.conn(), self.store.program(), before, size + 1).await?;
        let (rows, next_page_token) = paging::split(rows, size, "audit", |e| e.id.to_string());
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
