//! `loyalty.v1.PointsService`.
use tonic::{Request, Response, Status};

use super::{
    convert::{self, Violations},
    members::caller,
    pb::loyalty::v1::{self as v1, points_service_server::PointsService as PointsServiceApi},
};
use crate::service::PointsService;

pub struct PointsApi {
    points: PointsService,
}

impl PointsApi {
    pub fn new(points: PointsService) -> Self {
        Self { points }
    }
}

#[tonic::async_trait]
impl PointsServiceApi for PointsApi {
    async fn accrue(
        &self,
        request: Request<v1::AccrueRequest>,
    ) -> Result<Response<v1::AccrueResponse>, Status> {
        let (mutation, cmd) = convert::accrue(request.get_ref(), caller(&request))?;
        let receipt = self.points.accrue(&mutation, cmd).await?;
        Ok(Response::new(receipt.into()))
    }

    async fn get_balance(
        &self,
        request: Request<v1::GetBalanceRequest>,
    ) -> Result<Response<v1::GetBalanceResponse>, Status> {
        let mut v = Violations::default();
        let Some(key) = convert::member_key(&mut v, "member", request.get_ref().member.as_ref())
        else {
            return Err(v.into_error().into());
        };
        let (member_id, balance) = self.points.balance(&key).await?;
        Ok(Response::new(v1::GetBalanceResponse {
            member_id,
            balance: Some(balance.into()),
        }))
    }

    async fn list_ledger_entries(
        &self,
        request: Request<v1::ListLedgerEntriesRequest>,
    ) -> Result<Response<v1::ListLedgerEntriesResponse>, Status> {
        let req = request.get_ref();
        let mut v = Violations::default();
        let Some(key) = convert::member_key(&mut v, "member", req.member.as_ref()) else {
            return Err(v.into_error().into());
        };
        let page = self
            .points
            .statement(&key, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(v1::ListLedgerEntriesResponse {
            entries: page.entries.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
