//! `loyalty.v1.MemberService`.
use super::middleware::caller;
use tonic::{Request, Response, Status};

use super::{
    convert::{self, Violations},
    pb::loyalty::v1::{self as v1, member_service_server::MemberService as MemberServiceApi},
};
use crate::service::MemberService;

pub struct MemberApi {
    members: MemberService,
}

impl MemberApi {
    pub fn new(members: MemberService) -> Self {
        Self { members }
    }
}

#[tonic::async_trait]
impl MemberServiceApi for MemberApi {
    async fn enroll_member(
        &self,
        request: Request<v1::EnrollMemberRequest>,
    ) -> Result<Response<v1::EnrollMemberResponse>, Status> {
        super::middleware::note_audit(
            &request,
            format!("card:{}", request.get_ref().card_number),
            &request.get_ref().request_id,
        );
        let (mutation, new) = convert::enroll(request.get_ref(), caller(&request))?;
        let member = self.members.enroll(&mutation, new).await?;
        Ok(Response::new(v1::EnrollMemberResponse {
            member: Some(member.into()),
        }))
    }

    async fn get_member(
        &self,
        request: Request<v1::GetMemberRequest>,
    ) -> Result<Response<v1::GetMemberResponse>, Status> {
        let mut v = Violations::default();
        let Some(key) = convert::member_key(&mut v, "member", request.get_ref().member.as_ref())
        else {
            return Err(v.into_error().into());
        };
        let member = self.members.get(&key).await?;
        Ok(Response::new(v1::GetMemberResponse {
            member: Some(member.into()),
        }))
    }

    async fn update_member(
        &self,
        request: Request<v1::UpdateMemberRequest>,
    ) -> Result<Response<v1::UpdateMemberResponse>, Status> {
        let member_id = request
            .get_ref()
            .member
            .as_ref()
            .map(|m| m.member_id.clone())
            .unwrap_or_default();
        super::middleware::note_audit(
            &request,
            format!("member:{member_id}"),
            &request.get_ref().request_id,
        );
        let (mutation, id, patch) = convert::update(request.get_ref(), caller(&request))?;
        let member = self.members.update(&mutation, &id, patch).await?;
        Ok(Response::new(v1::UpdateMemberResponse {
            member: Some(member.into()),
        }))
    }

    async fn list_members(
        &self,
        request: Request<v1::ListMembersRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        let req = request.get_ref();
        let page = self.members.list(req.page_size, &req.page_token).await?;
        Ok(Response::new(v1::ListMembersResponse {
            members: page.members.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn export_member(
        &self,
        request: Request<v1::ExportMemberRequest>,
    ) -> Result<Response<v1::ExportMemberResponse>, Status> {
        let mut v = Violations::default();
        super::middleware::note_audit(
            &request,
            convert::member_target(request.get_ref().member.as_ref()),
            "",
        );
        let Some(key) = convert::member_key(&mut v, "member", request.get_ref().member.as_ref())
        else {
            return Err(v.into_error().into());
        };
        let export = self.members.export(&key).await?;
        Ok(Response::new(v1::ExportMemberResponse {
            member: Some(export.member.into()),
            balance: Some(export.balance.into()),
            ledger: export.ledger.into_iter().map(Into::into).collect(),
            holds: export.holds.into_iter().map(Into::into).collect(),
            redemptions: export
                .redemptions
                .into_iter()
                .map(|r| v1::RewardRedemption {
                    redemption_id: r.id,
                    code: r.code,
                    reward_id: r.reward_id,
                    member_id: r.member_id,
                    points: r.points,
                    create_time: Some(convert::timestamp(r.created_at)),
                })
                .collect(),
            export_time: Some(convert::timestamp(export.exported_at)),
            feedback: export.feedback.into_iter().map(Into::into).collect(),
            complaints: export.complaints.into_iter().map(Into::into).collect(),
        }))
    }

    async fn erase_member(
        &self,
        request: Request<v1::EraseMemberRequest>,
    ) -> Result<Response<v1::EraseMemberResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(
            &request,
            convert::member_target(req.member.as_ref()),
            &req.request_id,
        );
        let mut v = Violations::default();
        let rid = v.check(
            "request_id",
            crate::domain::RequestId::parse(&req.request_id),
        );
        let key = convert::member_key(&mut v, "member", req.member.as_ref());
        let (Some(request_id), Some(key)) = (rid, key) else {
            return Err(v.into_error().into());
        };
        let mutation = crate::service::Mutation {
            caller: caller(&request),
            request_id,
            fingerprint: convert::fingerprint(req),
        };
        let erasure = self.members.erase(&mutation, &key).await?;
        Ok(Response::new(v1::EraseMemberResponse {
            member_id: erasure.member_id,
            erase_time: Some(convert::timestamp(erasure.erased_at)),
        }))
    }
}
