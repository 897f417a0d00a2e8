//! `loyalty.v1.PointsService`.
use tonic::{Request, Response, Status};

use super::{
    convert::{self, Violations, check_store, member_target},
    middleware::caller,
    middleware::note_audit,
    pb::loyalty::v1::{self as v1, points_service_server::PointsService as PointsServiceApi},
};
use crate::service::{AccrualService, BalanceService, ReturnService, SpendingService};

/// The points API over its use cases.
pub struct PointsApi {
    accrual: AccrualService,
    balances: BalanceService,
    spending: SpendingService,
    returns: ReturnService,
}

impl PointsApi {
    pub fn new(
        accrual: AccrualService,
        balances: BalanceService,
        spending: SpendingService,
        returns: ReturnService,
    ) -> Self {
        Self {
            accrual,
            balances,
            spending,
            returns,
        }
    }
}

#[tonic::async_trait]
impl PointsServiceApi for PointsApi {
    async fn accrue(
        &self,
        request: Request<v1::AccrueRequest>,
    ) -> Result<Response<v1::AccrueResponse>, Status> {
        let req = request.get_ref();
        note_audit(&request, format!("order:{}", req.order_id), &req.request_id);
        let (mutation, cmd) = convert::accrue(req, caller(&request))?;
        check_store(&mutation.caller, Some(cmd.store_id.as_str()))?;
        let receipt = self.accrual.accrue(&mutation, cmd).await?;
        Ok(Response::new(receipt.into()))
    }

    async fn quote_accrual(
        &self,
        request: Request<v1::QuoteAccrualRequest>,
    ) -> Result<Response<v1::QuoteAccrualResponse>, Status> {
        let cmd = convert::quote(request.get_ref())?;
        check_store(&caller(&request), Some(cmd.store_id.as_str()))?;
        let q = self.accrual.quote(cmd).await?;
        Ok(Response::new(v1::QuoteAccrualResponse {
            member_id: q.member_id,
            points_earned: q.points_earned,
            pending_points: q.pending_points,
            lines: convert::line_points(q.lines),
            ruleset_version: q.ruleset_version,
            tier_id: q.tier_id.unwrap_or_default(),
            offers: convert::offer_results(q.offers),
        }))
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
        let (member_id, balance, expiring) = self.balances.balance(&key).await?;
        Ok(Response::new(v1::GetBalanceResponse {
            member_id,
            balance: Some(balance.into()),
            expiring_soon: Some(expiring.into()),
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
            .balances
            .statement(&key, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(v1::ListLedgerEntriesResponse {
            entries: page.entries.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn redeem(
        &self,
        request: Request<v1::RedeemRequest>,
    ) -> Result<Response<v1::RedeemResponse>, Status> {
        let req = request.get_ref();
        note_audit(
            &request,
            member_target(req.member.as_ref()),
            &req.request_id,
        );
        let (mutation, cmd) = convert::redeem(req, caller(&request))?;
        check_store(&mutation.caller, cmd.store_id.as_ref().map(|s| s.as_str()))?;
        Ok(Response::new(
            self.spending.redeem(&mutation, cmd).await?.into(),
        ))
    }

    async fn create_hold(
        &self,
        request: Request<v1::CreateHoldRequest>,
    ) -> Result<Response<v1::CreateHoldResponse>, Status> {
        let req = request.get_ref();
        note_audit(
            &request,
            member_target(req.member.as_ref()),
            &req.request_id,
        );
        let (mutation, cmd) = convert::create_hold(req, caller(&request))?;
        check_store(&mutation.caller, cmd.store_id.as_ref().map(|s| s.as_str()))?;
        Ok(Response::new(
            self.spending.create_hold(&mutation, cmd).await?.into(),
        ))
    }

    async fn capture_hold(
        &self,
        request: Request<v1::CaptureHoldRequest>,
    ) -> Result<Response<v1::CaptureHoldResponse>, Status> {
        let (mutation, hold_id, points) =
            convert::capture_hold(request.get_ref(), caller(&request))?;
        Ok(Response::new(
            self.spending
                .capture_hold(&mutation, &hold_id, points)
                .await?
                .into(),
        ))
    }

    async fn void_hold(
        &self,
        request: Request<v1::VoidHoldRequest>,
    ) -> Result<Response<v1::VoidHoldResponse>, Status> {
        note_audit(
            &request,
            format!("hold:{}", request.get_ref().hold_id),
            &request.get_ref().request_id,
        );
        let (mutation, hold_id) = convert::void_hold(request.get_ref(), caller(&request))?;
        Ok(Response::new(
            self.spending.void_hold(&mutation, &hold_id).await?.into(),
        ))
    }

    async fn return_items(
        &self,
        request: Request<v1::ReturnItemsRequest>,
    ) -> Result<Response<v1::ReturnItemsResponse>, Status> {
        note_audit(
            &request,
            format!("order:{}", request.get_ref().order_id),
            &request.get_ref().request_id,
        );
        let (mutation, cmd) = convert::return_items(request.get_ref(), caller(&request))?;
        Ok(Response::new(
            self.returns.return_items(&mutation, cmd).await?.into(),
        ))
    }

    async fn adjust_points(
        &self,
        request: Request<v1::AdjustPointsRequest>,
    ) -> Result<Response<v1::AdjustPointsResponse>, Status> {
        let req = request.get_ref();
        note_audit(
            &request,
            member_target(req.member.as_ref()),
            &req.request_id,
        );
        let (mutation, cmd) = convert::adjust(req, caller(&request))?;
        // CRM grants goodwill and corrects mistakes; migrations are an administrator's.
        if mutation.caller.role == crate::auth::Role::Crm
            && cmd.reason == crate::service::spending::AdjustReason::Migration
        {
            return Err(crate::error::AppError::PermissionDenied.into());
        }
        Ok(Response::new(
            self.spending.adjust(&mutation, cmd).await?.into(),
        ))
    }

    async fn confirm_order(
        &self,
        request: Request<v1::ConfirmOrderRequest>,
    ) -> Result<Response<v1::ConfirmOrderResponse>, Status> {
        note_audit(
            &request,
            format!("order:{}", request.get_ref().order_id),
            &request.get_ref().request_id,
        );
        let (mutation, order_id) = convert::confirm_order(request.get_ref(), caller(&request))?;
        Ok(Response::new(
            self.spending
                .confirm_order(&mutation, &order_id)
                .await?
                .into(),
        ))
    }
}
