//! `loyalty.v1.MemberService`.
use tonic::{Request, Response, Status};

use super::{
    convert::{self, Violations},
    pb::loyalty::v1::{self as v1, member_service_server::MemberService as MemberServiceApi},
};
use crate::service::{Caller, MemberService};

pub struct MemberApi {
    members: MemberService,
}

impl MemberApi {
    pub fn new(members: MemberService) -> Self {
        Self { members }
    }
}

/// The authenticated caller, once authentication puts one in the extensions.
pub(super) fn caller<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous)
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
}
