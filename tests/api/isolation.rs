//! Programmes are isolated: with a key of programme A, every method of every served
//! service, given the ids, card numbers, order ids, codes and member of programme B,
//! answers NOT_FOUND or PERMISSION_DENIED; and nothing of B appears in A's lists,
//! reports, exports or event stream.
use std::{collections::BTreeMap, time::Duration};

use loyalty::{auth::Role, grpc::pb::loyalty::v1};
use prost::Message;
use tonic::{Code, Status, transport::Channel};
use v1::{
    event_service_client::EventServiceClient, feedback_service_client::FeedbackServiceClient,
    member_service_client::MemberServiceClient, offer_service_client::OfferServiceClient,
    points_service_client::PointsServiceClient, program_service_client::ProgramServiceClient,
    reward_service_client::RewardServiceClient,
};

use crate::helpers::{
    accrual, all_methods, by_card, by_id, client, client_in, line, quote_of, spawn_configured,
    with_key,
};

/// Typed clients over one channel, each call made with one key.
struct Api {
    key: String,
    members: MemberServiceClient<Channel>,
    points: PointsServiceClient<Channel>,
    offers: OfferServiceClient<Channel>,
    rewards: RewardServiceClient<Channel>,
    feedback: FeedbackServiceClient<Channel>,
    program: ProgramServiceClient<Channel>,
    events: EventServiceClient<Channel>,
    audit: v1::audit_service_client::AuditServiceClient<Channel>,
}

impl Api {
    fn new(channel: Channel, key: &str) -> Self {
        Self {
            key: key.to_owned(),
            members: MemberServiceClient::new(channel.clone()),
            points: PointsServiceClient::new(channel.clone()),
            offers: OfferServiceClient::new(channel.clone()),
            rewards: RewardServiceClient::new(channel.clone()),
            feedback: FeedbackServiceClient::new(channel.clone()),
            program: ProgramServiceClient::new(channel.clone()),
            events: EventServiceClient::new(channel.clone()),
            audit: v1::audit_service_client::AuditServiceClient::new(channel),
        }
    }

    fn req<T>(&self, message: T) -> tonic::Request<T> {
        with_key(message, &self.key)
    }
}

/// What programme B holds, as strings that must never reach programme A.
struct B {
    member_id: String,
    card: &'static str,
    order_id: &'static str,
    hold_id: String,
    offer_id: String,
    offer_code: &'static str,
    reward_id: String,
    complaint_id: String,
    name: &'static str,
    email: &'static str,
}

impl B {
    /// Strings only programme B could have produced (not ones a request of A sends).
    fn secrets(&self) -> Vec<&str> {
        vec![
            &self.member_id,
            &self.hold_id,
            &self.offer_id,
            &self.reward_id,
            &self.complaint_id,
            self.name,
            self.email,
            self.offer_code,
        ]
    }
}

async fn fill_programme_b(api: &Api) -> B {
    let (card, order_id, offer_code) = ("CARD-B001", "ORDER-B1", "B-ONLY-CODE");
    let (name, email) = ("Bettina Brandt", "bettina@b.example");
    let member = api
        .members
        .clone()
        .enroll_member(api.req(v1::EnrollMemberRequest {
            request_id: "b-enrol".into(),
            card_number: card.into(),
            name: name.into(),
            email: email.into(),
            ..Default::default()
        }))
        .await
        .expect("enrol in B")
        .into_inner();
    let offer = api
        .offers
        .clone()
        .create_offer(api.req(v1::CreateOfferRequest {
            request_id: "b-offer".into(),
            offer: Some(v1::Offer {
                code: offer_code.into(),
                name: "B bonus".into(),
                kind: v1::OfferKind::BonusPoints.into(),
                value: 50,
                active: true,
                stackable: true,
                ..Default::default()
            }),
        }))
        .await
        .expect("offer in B")
        .into_inner()
        .offer
        .expect("offer");
    let mut accrue = accrual(
        "b-accrue",
        card,
        order_id,
        vec![line("l1", "SKU-1", 2, 5_000, 0)],
    );
    accrue.offer_codes = vec![offer_code.into()];
    // B's own currency: a programme's settings are its own.
    accrue.currency = "GBP".into();
    api.points
        .clone()
        .accrue(api.req(accrue))
        .await
        .expect("accrue in B");
    let hold = api
        .points
        .clone()
        .create_hold(api.req(v1::CreateHoldRequest {
            request_id: "b-hold".into(),
            member: Some(by_card(card)),
            points: 10,
            store_id: "store-1".into(),
            ..Default::default()
        }))
        .await
        .expect("hold in B")
        .into_inner();
    let reward = api
        .rewards
        .clone()
        .create_reward(api.req(v1::CreateRewardRequest {
            request_id: "b-reward".into(),
            reward: Some(v1::Reward {
                name: "B tote".into(),
                points_cost: 5,
                active: true,
                ..Default::default()
            }),
        }))
        .await
        .expect("reward in B")
        .into_inner()
        .reward
        .expect("reward");
    let complaint = api
        .feedback
        .clone()
        .record_complaint(api.req(v1::RecordComplaintRequest {
            request_id: "b-complaint".into(),
            member: Some(by_card(card)),
            topic: v1::Topic::Delivery.into(),
            severity: v1::Severity::High.into(),
            store_id: "store-1".into(),
            note: "B's parcel".into(),
            ..Default::default()
        }))
        .await
        .expect("complaint in B")
        .into_inner();
    B {
        member_id: member.member.expect("member").member_id,
        card,
        order_id,
        hold_id: hold.hold.expect("hold").hold_id,
        offer_id: offer.offer_id,
        offer_code,
        reward_id: reward.reward_id,
        complaint_id: complaint.complaint.expect("complaint").complaint_id,
        name,
        email,
    }
}

/// A call's outcome: the response's bytes, or its status.
type Outcome = Result<Vec<u8>, Status>;

fn bytes<T: Message>(r: Result<tonic::Response<T>, Status>) -> Outcome {
    r.map(|r| r.into_inner().encode_to_vec())
}

/// The first events of a stream (as bytes), or its status.
async fn first_events(
    r: Result<tonic::Response<tonic::Streaming<v1::WatchEventsResponse>>, Status>,
) -> Outcome {
    let mut stream = r?.into_inner();
    let mut all = Vec::new();
    while let Ok(Ok(Some(item))) =
        tokio::time::timeout(Duration::from_millis(700), stream.message()).await
    {
        all.extend(item.encode_to_vec());
    }
    Ok(all)
}

#[tokio::test]
async fn a_key_of_one_programme_reaches_nothing_of_another() {
    let app = spawn_configured(|s| {
        s.security.require_auth = true;
        s.events.relay_interval_ms = 20;
    })
    .await;
    let channel = app.channel().await;
    let platform = client(&app, "platform", Role::Platform, &[]).await;
    let platform = Api::new(channel.clone(), &platform);
    platform
        .program
        .clone()
        .create_program(platform.req(v1::CreateProgramRequest {
            request_id: "create-b".into(),
            program_id: "brand-b".into(),
            display_name: "Brand B".into(),
            settings: Some(v1::ProgramSettings {
                currency: Some("GBP".into()),
                ..Default::default()
            }),
        }))
        .await
        .expect("create programme B");
    let b_admin = client_in(&app, "brand-b", "b admin", Role::Admin, &[]).await;
    let b_api = Api::new(channel.clone(), &b_admin);
    let b = fill_programme_b(&b_api).await;
    let b_before = b_api
        .points
        .clone()
        .get_balance(b_api.req(v1::GetBalanceRequest {
            member: Some(by_card(b.card)),
        }))
        .await
        .expect("B's balance")
        .into_inner();

    // Programme A (the default) has a member and an order of its own.
    let a_admin = client(&app, "a admin", Role::Admin, &[]).await;
    let a = Api::new(channel.clone(), &a_admin);
    a.members
        .clone()
        .enroll_member(a.req(v1::EnrollMemberRequest {
            request_id: "a-enrol".into(),
            card_number: "CARD-A001".into(),
            name: "Anna A".into(),
            ..Default::default()
        }))
        .await
        .expect("enrol in A");

    let b_member = || Some(by_id(&b.member_id));
    let mut names_b: BTreeMap<&str, Outcome> = BTreeMap::new();
    let mut lists: BTreeMap<&str, Outcome> = BTreeMap::new();
    macro_rules! call {
        ($into:ident, $path:literal, $client:ident . $method:ident ( $req:expr )) => {
            $into.insert($path, bytes(a.$client.clone().$method(a.req($req)).await));
        };
    }
    // A's audit log, before A's calls below name B's ids in their targets.
    call!(
        lists,
        "/loyalty.v1.AuditService/ListAuditEvents",
        audit.list_audit_events(v1::ListAuditEventsRequest::default())
    );
    // Every method, with B's ids where it takes one.
    call!(
        names_b,
        "/loyalty.v1.MemberService/GetMember",
        members.get_member(v1::GetMemberRequest { member: b_member() })
    );
    call!(
        names_b,
        "/loyalty.v1.MemberService/UpdateMember",
        members.update_member(v1::UpdateMemberRequest {
            request_id: "u".into(),
            member: Some(v1::Member {
                member_id: b.member_id.clone(),
                name: "Mallory".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()]
            }),
        })
    );
    call!(
        names_b,
        "/loyalty.v1.MemberService/ExportMember",
        members.export_member(v1::ExportMemberRequest { member: b_member() })
    );
    call!(
        names_b,
        "/loyalty.v1.MemberService/EraseMember",
        members.erase_member(v1::EraseMemberRequest {
            request_id: "x".into(),
            member: b_member()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/GetBalance",
        points.get_balance(v1::GetBalanceRequest {
            member: Some(by_card(b.card))
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/ListLedgerEntries",
        points.list_ledger_entries(v1::ListLedgerEntriesRequest {
            member: b_member(),
            ..Default::default()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/Accrue",
        points.accrue(accrual(
            "a-acc-b",
            b.card,
            "ORDER-A-X",
            vec![line("l1", "SKU-1", 1, 100, 0)]
        ))
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/QuoteAccrual",
        points.quote_accrual(quote_of(&accrual(
            "q",
            b.card,
            "ORDER-A-Q",
            vec![line("l1", "SKU-1", 1, 100, 0)],
        )))
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/Redeem",
        points.redeem(v1::RedeemRequest {
            request_id: "r".into(),
            member: b_member(),
            points: 1,
            store_id: "store-1".into(),
            ..Default::default()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/CreateHold",
        points.create_hold(v1::CreateHoldRequest {
            request_id: "h".into(),
            member: b_member(),
            points: 1,
            store_id: "store-1".into(),
            ..Default::default()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/CaptureHold",
        points.capture_hold(v1::CaptureHoldRequest {
            request_id: "c".into(),
            hold_id: b.hold_id.clone(),
            ..Default::default()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/VoidHold",
        points.void_hold(v1::VoidHoldRequest {
            request_id: "v".into(),
            hold_id: b.hold_id.clone()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/ReturnItems",
        points.return_items(v1::ReturnItemsRequest {
            request_id: "ret".into(),
            order_id: b.order_id.into(),
            return_id: "r1".into(),
            lines: vec![v1::ReturnLine {
                line_id: "l1".into(),
                quantity: 1
            }],
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/AdjustPoints",
        points.adjust_points(v1::AdjustPointsRequest {
            request_id: "adj".into(),
            member: b_member(),
            points: 10,
            reason_code: v1::AdjustReason::Goodwill.into(),
            note: "x".into(),
        })
    );
    call!(
        names_b,
        "/loyalty.v1.PointsService/ConfirmOrder",
        points.confirm_order(v1::ConfirmOrderRequest {
            request_id: "co".into(),
            order_id: b.order_id.into()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.OfferService/ListMemberOffers",
        offers.list_member_offers(v1::ListMemberOffersRequest {
            member: b_member(),
            channel: v1::Channel::Pos.into(),
            ..Default::default()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.OfferService/GetOfferReport",
        offers.get_offer_report(v1::GetOfferReportRequest {
            offer_id: b.offer_id.clone()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.OfferService/UpdateOffer",
        offers.update_offer(v1::UpdateOfferRequest {
            request_id: "uo".into(),
            offer: Some(v1::Offer {
                offer_id: b.offer_id.clone(),
                name: "stolen".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()]
            }),
        })
    );
    call!(
        names_b,
        "/loyalty.v1.RewardService/GetReward",
        rewards.get_reward(v1::GetRewardRequest {
            reward_id: b.reward_id.clone()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.RewardService/UpdateReward",
        rewards.update_reward(v1::UpdateRewardRequest {
            request_id: "ur".into(),
            reward: Some(v1::Reward {
                reward_id: b.reward_id.clone(),
                name: "stolen".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()]
            }),
        })
    );
    call!(
        names_b,
        "/loyalty.v1.RewardService/RedeemReward",
        rewards.redeem_reward(v1::RedeemRewardRequest {
            request_id: "rr".into(),
            member: Some(by_card("CARD-A001")),
            reward_id: b.reward_id.clone(),
            store_id: "store-1".into(),
        })
    );
    call!(
        names_b,
        "/loyalty.v1.FeedbackService/RecordFeedback",
        feedback.record_feedback(v1::RecordFeedbackRequest {
            request_id: "fb".into(),
            member: b_member(),
            kind: v1::FeedbackKind::Nps.into(),
            score: 9,
            ..Default::default()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.FeedbackService/RecordComplaint",
        feedback.record_complaint(v1::RecordComplaintRequest {
            request_id: "rc".into(),
            member: b_member(),
            topic: v1::Topic::Delivery.into(),
            severity: v1::Severity::High.into(),
            ..Default::default()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.FeedbackService/ResolveComplaint",
        feedback.resolve_complaint(v1::ResolveComplaintRequest {
            request_id: "rs".into(),
            complaint_id: b.complaint_id.clone(),
            outcome: v1::ComplaintOutcome::Resolved.into(),
            ..Default::default()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.ProgramService/GetTierStatus",
        program.get_tier_status(v1::GetTierStatusRequest { member: b_member() })
    );
    call!(
        names_b,
        "/loyalty.v1.ProgramService/GetProgram",
        program.get_program(v1::GetProgramRequest {
            program_id: "brand-b".into()
        })
    );
    call!(
        names_b,
        "/loyalty.v1.ProgramService/CreateProgram",
        program.create_program(v1::CreateProgramRequest {
            request_id: "cp".into(),
            program_id: "brand-c".into(),
            display_name: "C".into(),
            settings: None,
        })
    );
    names_b.insert(
        "/loyalty.v1.EventService/WatchEvents",
        first_events(
            a.events
                .clone()
                .watch_events(a.req(v1::WatchEventsRequest {
                    member_id: b.member_id.clone(),
                    ..Default::default()
                }))
                .await,
        )
        .await,
    );
    // Following every programme is for platform administrators only.
    let all = first_events(
        a.events
            .clone()
            .watch_events(a.req(v1::WatchEventsRequest {
                all_programs: true,
                ..Default::default()
            }))
            .await,
    )
    .await;
    assert_eq!(
        all.expect_err("all programmes").code(),
        Code::PermissionDenied
    );

    // The methods that name nothing of B: A's own lists, reports and changes.
    call!(
        lists,
        "/loyalty.v1.MemberService/EnrollMember",
        members.enroll_member(v1::EnrollMemberRequest {
            request_id: "a-enrol-2".into(),
            card_number: "CARD-A002".into(),
            name: "Arno A".into(),
            ..Default::default()
        })
    );
    call!(
        lists,
        "/loyalty.v1.MemberService/ListMembers",
        members.list_members(v1::ListMembersRequest::default())
    );
    call!(
        lists,
        "/loyalty.v1.OfferService/ListOffers",
        offers.list_offers(v1::ListOffersRequest::default())
    );
    call!(
        lists,
        "/loyalty.v1.OfferService/CreateOffer",
        offers.create_offer(v1::CreateOfferRequest {
            request_id: "a-offer".into(),
            offer: Some(v1::Offer {
                code: "A-CODE".into(),
                name: "A".into(),
                kind: v1::OfferKind::BonusPoints.into(),
                value: 5,
                active: true,
                ..Default::default()
            }),
        })
    );
    call!(
        lists,
        "/loyalty.v1.RewardService/ListRewards",
        rewards.list_rewards(v1::ListRewardsRequest::default())
    );
    call!(
        lists,
        "/loyalty.v1.RewardService/CreateReward",
        rewards.create_reward(v1::CreateRewardRequest {
            request_id: "a-reward".into(),
            reward: Some(v1::Reward {
                name: "A mug".into(),
                points_cost: 5,
                active: true,
                ..Default::default()
            }),
        })
    );
    call!(
        lists,
        "/loyalty.v1.FeedbackService/GetSatisfactionSummary",
        feedback.get_satisfaction_summary(v1::GetSatisfactionSummaryRequest::default())
    );
    call!(
        lists,
        "/loyalty.v1.FeedbackService/ListAtRiskMembers",
        feedback.list_at_risk_members(v1::ListAtRiskMembersRequest::default())
    );
    call!(
        lists,
        "/loyalty.v1.ProgramService/ListPrograms",
        program.list_programs(v1::ListProgramsRequest::default())
    );
    call!(
        lists,
        "/loyalty.v1.ProgramService/ListTiers",
        program.list_tiers(v1::ListTiersRequest::default())
    );
    call!(
        lists,
        "/loyalty.v1.ProgramService/UpdateProgram",
        program.update_program(v1::UpdateProgramRequest {
            request_id: "a-up".into(),
            program: Some(v1::Program {
                birthday_bonus_points: 7,
                ..Default::default()
            }),
            update_mask: None,
        })
    );
    call!(
        lists,
        "/loyalty.v1.ProgramService/UpsertTier",
        program.upsert_tier(v1::UpsertTierRequest {
            request_id: "a-tier".into(),
            tier: Some(v1::Tier {
                tier_id: "gold".into(),
                name: "Gold".into(),
                rank: 1,
                threshold_points: Some(1000),
                earn_multiplier_percent: 100,
                ..Default::default()
            }),
        })
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    lists.insert(
        "/loyalty.v1.EventService/WatchEvents",
        first_events(
            a.events
                .clone()
                .watch_events(a.req(v1::WatchEventsRequest::default()))
                .await,
        )
        .await,
    );

    // Every served method is walked.
    let walked: std::collections::BTreeSet<&str> =
        names_b.keys().chain(lists.keys()).copied().collect();
    let served = all_methods();
    let missing: Vec<&String> = served
        .iter()
        .filter(|m| !walked.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "methods the isolation walk misses: {missing:?}"
    );

    let wrong: Vec<String> = names_b
        .iter()
        .filter_map(|(method, outcome)| {
            let code = outcome.as_ref().err().map_or(Code::Ok, Status::code);
            (!matches!(code, Code::NotFound | Code::PermissionDenied))
                .then(|| format!("{method}: {code:?} {:?}", outcome.as_ref().err()))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "calls with B's ids that were not refused: {wrong:#?}"
    );
    for (method, outcome) in &lists {
        let body = outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{method} in A failed: {e:?}"));
        let text = String::from_utf8_lossy(body);
        for secret in b.secrets() {
            assert!(!text.contains(secret), "{method} in A shows B's {secret:?}");
        }
    }

    // A's order ids and codes are A's: B's order id is free in A, B's code unknown.
    let mut same_order = accrual(
        "a-same-order",
        "CARD-A001",
        b.order_id,
        vec![line("l1", "SKU-1", 1, 1_000, 0)],
    );
    same_order.offer_codes = vec![b.offer_code.into()];
    let accrued = a
        .points
        .clone()
        .accrue(a.req(same_order))
        .await
        .expect("B's order id in A")
        .into_inner();
    assert_eq!(accrued.offers.len(), 1);
    assert_eq!(
        accrued.offers[0].status,
        v1::OfferStatus::UnknownCode as i32
    );
    // An offer of A cannot name B's reward.
    let err = a
        .offers
        .clone()
        .create_offer(a.req(v1::CreateOfferRequest {
            request_id: "a-offer-b-reward".into(),
            offer: Some(v1::Offer {
                code: "A-LINK".into(),
                name: "A".into(),
                kind: v1::OfferKind::BonusPoints.into(),
                value: 5,
                active: true,
                reward_id: b.reward_id.clone(),
                ..Default::default()
            }),
        }))
        .await
        .expect_err("B's reward in A's offer");
    assert_eq!(err.code(), Code::InvalidArgument);
    // A card number B uses can be enrolled in A too.
    a.members
        .clone()
        .enroll_member(a.req(v1::EnrollMemberRequest {
            request_id: "a-enrol-b-card".into(),
            card_number: b.card.into(),
            name: "Another person".into(),
            ..Default::default()
        }))
        .await
        .expect("B's card number in A");

    // B is untouched, and a platform administrator sees both programmes' events.
    let b_after = b_api
        .points
        .clone()
        .get_balance(b_api.req(v1::GetBalanceRequest {
            member: Some(by_card(b.card)),
        }))
        .await
        .expect("B's balance")
        .into_inner();
    assert_eq!(b_after, b_before);
    let everything = first_events(
        platform
            .events
            .clone()
            .watch_events(platform.req(v1::WatchEventsRequest {
                all_programs: true,
                ..Default::default()
            }))
            .await,
    )
    .await
    .expect("platform follows every programme");
    assert!(String::from_utf8_lossy(&everything).contains(&b.member_id));
    assert!(String::from_utf8_lossy(&everything).contains("brand-b"));
}
