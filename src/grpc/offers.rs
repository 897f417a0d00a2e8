//! `loyalty.v1.OfferService`.
use tonic::{Request, Response, Status};

use super::{
    convert::{self, Violations, timestamp},
    middleware::caller,
    pb::loyalty::v1::{self as v1, offer_service_server::OfferService as OfferServiceApi},
};
use crate::{
    domain::{Offer, OfferKind, ShortId, Targeting},
    error::AppError,
    service::offers::OfferService,
};

pub struct OfferApi {
    offers: OfferService,
}

impl OfferApi {
    pub fn new(offers: OfferService) -> Self {
        Self { offers }
    }
}

fn days(v: &mut Violations, field: &str, raw: Option<i32>) -> Option<Option<u32>> {
    match raw {
        None => Some(None),
        Some(d) => v
            .check(
                field,
                u32::try_from(d).map_err(|_| "must not be negative".to_string()),
            )
            .map(Some),
    }
}

/// Proto → domain; the domain's own validation runs in the service.
fn offer(v: &mut Violations, o: &v1::Offer) -> Option<Offer> {
    let kind = match v1::OfferKind::try_from(o.kind) {
        Ok(v1::OfferKind::BonusPoints) => Some(OfferKind::BonusPoints { points: o.value }),
        Ok(v1::OfferKind::PointsMultiplier) => {
            Some(OfferKind::PointsMultiplier { percent: o.value })
        }
        Ok(v1::OfferKind::FixedDiscount) => Some(OfferKind::FixedDiscount {
            amount_minor: o.value,
        }),
        Ok(v1::OfferKind::PercentDiscount) => Some(OfferKind::PercentDiscount { percent: o.value }),
        Ok(v1::OfferKind::FreeItem) => Some(OfferKind::FreeItem),
        _ => {
            v.push("offer.kind", "must be a known kind");
            None
        }
    };
    let mut channels = Vec::new();
    for (i, c) in o.channels.iter().enumerate() {
        match convert::channel_of(*c) {
            Some(c) => channels.push(c.as_str().to_owned()),
            None => v.push(format!("offer.channels[{i}]"), "must be a known channel"),
        }
    }
    let from = convert::optional_time(v, "offer.valid_from", o.valid_from.as_ref());
    let until = convert::optional_time(v, "offer.valid_until", o.valid_until.as_ref());
    let t = o.targeting.clone().unwrap_or_default();
    let new_within = days(v, "offer.targeting.new_within_days", t.new_within_days);
    let lapsed = days(v, "offer.targeting.lapsed_days", t.lapsed_days);
    Some(Offer {
        offer_id: o.offer_id.clone(),
        code: o.code.clone(),
        name: o.name.clone(),
        description: String::new(),
        kind: kind?,
        free_sku: (!o.free_sku.is_empty()).then(|| o.free_sku.clone()),
        skus: o.skus.clone(),
        categories: o.categories.clone(),
        min_basket_minor: o.min_basket_minor,
        channels,
        valid_from: from?,
        valid_until: until?,
        per_member_limit: o.per_member_limit,
        total_limit: o.total_limit,
        priority: o.priority,
        stackable: o.stackable,
        active: o.active,
        targeting: Targeting {
            tiers: t.tier_ids,
            tags: t.tags.iter().map(|x| x.to_lowercase()).collect(),
            new_within_days: new_within?,
            lapsed_days: lapsed?,
            birthday_month: t.birthday_month,
            min_spend_minor: t.min_spend_minor,
            max_spend_minor: t.max_spend_minor,
        },
        reward_id: (!o.reward_id.is_empty()).then(|| o.reward_id.clone()),
    })
}

impl From<Offer> for v1::Offer {
    fn from(o: Offer) -> Self {
        let (kind, value) = match o.kind {
            OfferKind::BonusPoints { points } => (v1::OfferKind::BonusPoints, points),
            OfferKind::PointsMultiplier { percent } => (v1::OfferKind::PointsMultiplier, percent),
            OfferKind::FixedDiscount { amount_minor } => {
                (v1::OfferKind::FixedDiscount, amount_minor)
            }
            OfferKind::PercentDiscount { percent } => (v1::OfferKind::PercentDiscount, percent),
            OfferKind::FreeItem => (v1::OfferKind::FreeItem, 0),
        };
        let to_i32 = |d: Option<u32>| d.and_then(|d| i32::try_from(d).ok());
        Self {
            offer_id: o.offer_id,
            code: o.code,
            name: o.name,
            kind: kind.into(),
            value,
            free_sku: o.free_sku.unwrap_or_default(),
            skus: o.skus,
            categories: o.categories,
            min_basket_minor: o.min_basket_minor,
            channels: o
                .channels
                .iter()
                .map(|c| convert::channel_number(c))
                .collect(),
            valid_from: o.valid_from.map(timestamp),
            valid_until: o.valid_until.map(timestamp),
            per_member_limit: o.per_member_limit,
            total_limit: o.total_limit,
            priority: o.priority,
            stackable: o.stackable,
            active: o.active,
            targeting: Some(v1::OfferTargeting {
                tier_ids: o.targeting.tiers,
                tags: o.targeting.tags,
                new_within_days: to_i32(o.targeting.new_within_days),
                lapsed_days: to_i32(o.targeting.lapsed_days),
                birthday_month: o.targeting.birthday_month,
                min_spend_minor: o.targeting.min_spend_minor,
                max_spend_minor: o.targeting.max_spend_minor,
            }),
            reward_id: o.reward_id.unwrap_or_default(),
        }
    }
}

#[tonic::async_trait]
impl OfferServiceApi for OfferApi {
    async fn create_offer(
        &self,
        request: Request<v1::CreateOfferRequest>,
    ) -> Result<Response<v1::CreateOfferResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(
            &request,
            format!(
                "offer:{}",
                req.offer.as_ref().map(|o| o.code.as_str()).unwrap_or("")
            ),
            &req.request_id,
        );
        let mut v = Violations::default();
        let m = convert::checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let o = match &req.offer {
            Some(o) => offer(&mut v, o),
            None => {
                v.push("offer", "is required");
                None
            }
        };
        match (m, o) {
            (Some(m), Some(o)) if v.is_empty() => {
                let created = self.offers.create(&m, o).await?;
                Ok(Response::new(v1::CreateOfferResponse {
                    offer: Some(created.into()),
                }))
            }
            _ => Err(v.into_error().into()),
        }
    }

    async fn update_offer(
        &self,
        request: Request<v1::UpdateOfferRequest>,
    ) -> Result<Response<v1::UpdateOfferResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(
            &request,
            format!(
                "offer:{}",
                req.offer
                    .as_ref()
                    .map(|o| o.offer_id.as_str())
                    .unwrap_or("")
            ),
            &req.request_id,
        );
        let mut v = Violations::default();
        let m = convert::checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let fields: Vec<String> = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        if fields.is_empty() {
            v.push("update_mask", "must name the fields to change");
        }
        let o = match &req.offer {
            // An update may leave kind unset when it does not change it.
            Some(o) if o.kind == 0 && !fields.iter().any(|f| f == "kind" || f == "value") => offer(
                &mut v,
                &v1::Offer {
                    kind: v1::OfferKind::BonusPoints.into(),
                    value: 1,
                    ..o.clone()
                },
            ),
            Some(o) => offer(&mut v, o),
            None => {
                v.push("offer", "is required");
                None
            }
        };
        match (m, o) {
            (Some(m), Some(o)) if v.is_empty() => {
                let updated = self.offers.update(&m, o, &fields).await?;
                Ok(Response::new(v1::UpdateOfferResponse {
                    offer: Some(updated.into()),
                }))
            }
            _ => Err(v.into_error().into()),
        }
    }

    async fn list_offers(
        &self,
        request: Request<v1::ListOffersRequest>,
    ) -> Result<Response<v1::ListOffersResponse>, Status> {
        let req = request.get_ref();
        let page = self.offers.list(req.page_size, &req.page_token).await?;
        Ok(Response::new(v1::ListOffersResponse {
            offers: page.offers.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn list_member_offers(
        &self,
        request: Request<v1::ListMemberOffersRequest>,
    ) -> Result<Response<v1::ListMemberOffersResponse>, Status> {
        let req = request.get_ref();
        let mut v = Violations::default();
        let key = convert::member_key(&mut v, "member", req.member.as_ref());
        let ch = convert::channel_of(req.channel);
        if ch.is_none() {
            v.push(
                "channel",
                "must be a known channel other than CHANNEL_UNSPECIFIED",
            );
        }
        let (Some(key), Some(ch)) = (key, ch) else {
            return Err(v.into_error().into());
        };
        let page = self
            .offers
            .for_member(&key, ch, req.page_size, &req.page_token)
            .await?;
        Ok(Response::new(v1::ListMemberOffersResponse {
            offers: page
                .offers
                .into_iter()
                .map(|m| v1::MemberOffer {
                    offer: Some(m.offer.into()),
                    remaining_uses: m.remaining_uses,
                })
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_offer_report(
        &self,
        request: Request<v1::GetOfferReportRequest>,
    ) -> Result<Response<v1::GetOfferReportResponse>, Status> {
        let id = request.get_ref().offer_id.clone();
        ShortId::parse(&id).map_err(|e| AppError::invalid("offer_id", e))?;
        let r = self.offers.report(&id).await?;
        Ok(Response::new(v1::GetOfferReportResponse {
            offer_id: id,
            eligible_members: r.eligible_members,
            uses: r.uses,
            points_granted: r.points_granted,
            discount_given_minor: r.discount_given_minor,
        }))
    }
}
