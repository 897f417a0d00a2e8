//! `loyalty.v1.RewardService`.
use tonic::{Request, Response, Status};

use super::{
    convert::{self, Violations, timestamp},
    middleware::caller,
    pb::loyalty::v1::{self as v1, reward_service_server::RewardService as RewardServiceApi},
};
use crate::{
    domain::{MemberId, ShortId},
    service::rewards::{RewardPatch, RewardRedemption, RewardService, RewardSpec, RewardView},
};

pub struct RewardApi {
    rewards: RewardService,
}

impl RewardApi {
    pub fn new(rewards: RewardService) -> Self {
        Self { rewards }
    }
}

/// Validates every editable field of `r`, reported under `reward.`.
fn spec(v: &mut Violations, r: &v1::Reward) -> Option<RewardSpec> {
    let name = r.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        v.push("reward.name", "must be 1 to 200 characters");
    }
    if name.chars().any(char::is_control) {
        v.push("reward.name", "must not hold control characters");
    }
    if r.description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        v.push(
            "reward.description",
            "must not hold control characters but line breaks and tabs",
        );
    }
    if r.description.chars().count() > 2000 {
        v.push("reward.description", "must be at most 2000 characters");
    }
    if !(1..=crate::domain::MAX_POINTS).contains(&r.points_cost) {
        v.push(
            "reward.points_cost",
            format!("must be from 1 to {}", crate::domain::MAX_POINTS),
        );
    }
    if r.stock.is_some_and(|s| s < 0) {
        v.push("reward.stock", "must not be negative");
    }
    let min_tier = if r.min_tier_id.is_empty() {
        Some(None)
    } else {
        v.check("reward.min_tier_id", ShortId::parse(&r.min_tier_id))
            .map(Some)
    };
    let from = convert::optional_time(v, "reward.valid_from", r.valid_from.as_ref());
    let until = convert::optional_time(v, "reward.valid_until", r.valid_until.as_ref());
    if let (Some(Some(f)), Some(Some(u))) = (from, until)
        && u <= f
    {
        v.push("reward.valid_until", "must be after valid_from");
    }
    Some(RewardSpec {
        name: name.to_owned(),
        description: r.description.clone(),
        points_cost: r.points_cost,
        stock: r.stock,
        valid_from: from?,
        valid_until: until?,
        min_tier: min_tier?.map(ShortId::into_string),
        active: r.active,
    })
}

fn reward_id(v: &mut Violations, field: &str, raw: &str) -> Option<String> {
    v.check(
        field,
        MemberId::parse(raw)
            .map(|id| id.as_str().to_owned())
            .map_err(|_| "must be a reward id (UUID)".to_string()),
    )
}

impl From<RewardView> for v1::Reward {
    fn from(r: RewardView) -> Self {
        Self {
            reward_id: r.reward_id,
            name: r.name,
            description: r.description,
            points_cost: r.points_cost,
            stock: r.stock,
            valid_from: r.valid_from.map(timestamp),
            valid_until: r.valid_until.map(timestamp),
            min_tier_id: r.min_tier.unwrap_or_default(),
            active: r.active,
            create_time: Some(timestamp(r.created_at)),
            update_time: Some(timestamp(r.updated_at)),
        }
    }
}

impl From<RewardRedemption> for v1::RedeemRewardResponse {
    fn from(r: RewardRedemption) -> Self {
        Self {
            redemption: Some(v1::RewardRedemption {
                redemption_id: r.redemption_id,
                code: r.code,
                reward_id: r.reward_id,
                member_id: r.member_id,
                points: r.points,
                create_time: Some(timestamp(r.created_at)),
            }),
            balance: Some(r.balance.into()),
        }
    }
}

const UPDATABLE: &[&str] = &[
    "name",
    "description",
    "points_cost",
    "stock",
    "valid_from",
    "valid_until",
    "min_tier_id",
    "active",
];

#[tonic::async_trait]
impl RewardServiceApi for RewardApi {
    async fn create_reward(
        &self,
        request: Request<v1::CreateRewardRequest>,
    ) -> Result<Response<v1::CreateRewardResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(&request, "reward:new".to_string(), &req.request_id);
        let mut v = Violations::default();
        let m = convert::checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let s = match &req.reward {
            Some(r) => spec(&mut v, r),
            None => {
                v.push("reward", "is required");
                None
            }
        };
        let (Some(m), Some(s)) = (m, s) else {
            return Err(v.into_error().into());
        };
        if !v.is_empty() {
            return Err(v.into_error().into());
        }
        let reward = self.rewards.create(&m, s).await?;
        Ok(Response::new(v1::CreateRewardResponse {
            reward: Some(reward.into()),
        }))
    }

    async fn update_reward(
        &self,
        request: Request<v1::UpdateRewardRequest>,
    ) -> Result<Response<v1::UpdateRewardResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(
            &request,
            format!(
                "reward:{}",
                req.reward
                    .as_ref()
                    .map(|r| r.reward_id.as_str())
                    .unwrap_or("")
            ),
            &req.request_id,
        );
        let mut v = Violations::default();
        let m = convert::checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let Some(r) = req.reward.as_ref() else {
            v.push("reward", "is required");
            return Err(v.into_error().into());
        };
        let id = reward_id(&mut v, "reward.reward_id", &r.reward_id);
        let paths: Vec<String> = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if paths.is_empty() {
            v.push(
                "update_mask",
                format!("must name fields to change: {}", UPDATABLE.join(", ")),
            );
        }
        // Validate the whole message once, then take only the masked fields; errors in
        // unmasked fields do not count.
        let mut scratch = Violations::default();
        let full = spec(&mut scratch, r);
        let mut patch = RewardPatch::default();
        for path in &paths {
            let bad = scratch.fields().any(|f| f == format!("reward.{path}"));
            if bad {
                v.push(format!("reward.{path}"), "is invalid");
                continue;
            }
            let Some(full) = full.as_ref() else { continue };
            match path.as_str() {
                "name" => patch.name = Some(full.name.clone()),
                "description" => patch.description = Some(full.description.clone()),
                "points_cost" => patch.points_cost = Some(full.points_cost),
                "stock" => patch.stock = Some(full.stock),
                "valid_from" => patch.valid_from = Some(full.valid_from),
                "valid_until" => patch.valid_until = Some(full.valid_until),
                "min_tier_id" => patch.min_tier = Some(full.min_tier.clone()),
                "active" => patch.active = Some(full.active),
                other => v.push(
                    "update_mask",
                    format!("cannot update {other:?}; allowed: {}", UPDATABLE.join(", ")),
                ),
            }
        }
        let (Some(m), Some(id)) = (m, id) else {
            return Err(v.into_error().into());
        };
        if !v.is_empty() {
            return Err(v.into_error().into());
        }
        let reward = self.rewards.update(&m, &id, patch).await?;
        Ok(Response::new(v1::UpdateRewardResponse {
            reward: Some(reward.into()),
        }))
    }

    async fn get_reward(
        &self,
        request: Request<v1::GetRewardRequest>,
    ) -> Result<Response<v1::GetRewardResponse>, Status> {
        let mut v = Violations::default();
        let Some(id) = reward_id(&mut v, "reward_id", &request.get_ref().reward_id) else {
            return Err(v.into_error().into());
        };
        let reward = self.rewards.get(&id).await?;
        Ok(Response::new(v1::GetRewardResponse {
            reward: Some(reward.into()),
        }))
    }

    async fn list_rewards(
        &self,
        request: Request<v1::ListRewardsRequest>,
    ) -> Result<Response<v1::ListRewardsResponse>, Status> {
        let req = request.get_ref();
        let page = self.rewards.list(req.page_size, &req.page_token).await?;
        Ok(Response::new(v1::ListRewardsResponse {
            rewards: page.rewards.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn redeem_reward(
        &self,
        request: Request<v1::RedeemRewardRequest>,
    ) -> Result<Response<v1::RedeemRewardResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(
            &request,
            format!("reward:{}", req.reward_id),
            &req.request_id,
        );
        let mut v = Violations::default();
        let m = convert::checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let member = convert::member_key(&mut v, "member", req.member.as_ref());
        let id = reward_id(&mut v, "reward_id", &req.reward_id);
        let store = if req.store_id.is_empty() {
            Some(None)
        } else {
            v.check("store_id", ShortId::parse(&req.store_id)).map(Some)
        };
        match (m, member, id, store) {
            (Some(m), Some(member), Some(id), Some(store)) if v.is_empty() => {
                super::convert::check_store(&m.caller, store.as_ref().map(|s| s.as_str()))?;
                let r = self
                    .rewards
                    .redeem(&m, &member, &id, store.map(ShortId::into_string))
                    .await?;
                Ok(Response::new(r.into()))
            }
            _ => Err(v.into_error().into()),
        }
    }
}
