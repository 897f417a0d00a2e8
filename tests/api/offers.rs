//! Member-exclusive offers through the API.
use loyalty::grpc::pb::loyalty::v1;
use tokio::task::JoinSet;

use crate::helpers::{TestApp, accrual, by_card, line, set_time, spawn_app};

fn offer(code: &str, kind: v1::OfferKind, value: i64) -> v1::Offer {
    v1::Offer {
        code: code.into(),
        name: code.into(),
        kind: kind.into(),
        value,
        active: true,
        stackable: true,
        ..Default::default()
    }
}

async fn create(app: &TestApp, o: v1::Offer) -> v1::Offer {
    app.offers()
        .await
        .create_offer(v1::CreateOfferRequest {
            request_id: format!("create-{}", o.code),
            offer: Some(o),
        })
        .await
        .expect("create offer")
        .into_inner()
        .offer
        .expect("offer")
}

fn with_codes(mut r: v1::AccrueRequest, codes: &[&str]) -> v1::AccrueRequest {
    r.offer_codes = codes.iter().map(|c| (*c).to_string()).collect();
    r
}

fn result<'a>(offers: &'a [v1::OfferResult], code: &str) -> &'a v1::OfferResult {
    offers
        .iter()
        .find(|o| o.code == code)
        .expect("offer result")
}

async fn listed(app: &TestApp, card: &str) -> Vec<(String, Option<i64>)> {
    app.offers()
        .await
        .list_member_offers(v1::ListMemberOffersRequest {
            member: Some(by_card(card)),
            channel: v1::Channel::Pos.into(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("list member offers")
        .into_inner()
        .offers
        .into_iter()
        .map(|m| (m.offer.expect("offer").code, m.remaining_uses))
        .collect()
}

#[tokio::test]
async fn each_offer_kind_works_the_same_in_a_quote_and_the_accrual() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    create(&app, offer("B50", v1::OfferKind::BonusPoints, 50)).await;
    let mut x2 = offer("X2", v1::OfferKind::PointsMultiplier, 200);
    x2.skus = vec!["COFFEE".into()];
    create(&app, x2).await;
    let mut cake = offer("FREECAKE", v1::OfferKind::FreeItem, 0);
    cake.free_sku = "CAKE".into();
    create(&app, cake).await;
    create(&app, offer("TENPC", v1::OfferKind::PercentDiscount, 10)).await;
    create(&app, offer("EUR3", v1::OfferKind::FixedDiscount, 300)).await;

    let basket = vec![line("1", "COFFEE", 2, 500, 0), line("2", "CAKE", 2, 350, 0)];
    let request = with_codes(
        accrual("a-1", "CARD-0001", "o-1", basket),
        &["B50", "X2", "FREECAKE", "TENPC", "EUR3"],
    );
    let quote = app
        .points
        .clone()
        .quote_accrual(v1::QuoteAccrualRequest {
            member: request.member.clone(),
            order_id: request.order_id.clone(),
            store_id: request.store_id.clone(),
            channel: request.channel,
            currency: request.currency.clone(),
            lines: request.lines.clone(),
            occurred_at: None,
            offer_codes: request.offer_codes.clone(),
        })
        .await
        .expect("quote")
        .into_inner();
    let receipt = app
        .points
        .clone()
        .accrue(request)
        .await
        .expect("accrue")
        .into_inner();
    assert_eq!(quote.offers, receipt.offers);
    assert_eq!(quote.points_earned, receipt.points_earned);
    assert!(
        receipt
            .offers
            .iter()
            .all(|o| o.status() == v1::OfferStatus::Applied),
        "{:?}",
        receipt.offers
    );
    // Applied in code order (equal priority): discounts first reduce what is paid.
    // EUR3: 300 over 1000 + 700 → 176 + 124. FREECAKE: one cake, 350. TENPC: 10 % of what is left.
    assert_eq!(result(&receipt.offers, "EUR3").discount_minor, 300);
    assert_eq!(
        result(&receipt.offers, "FREECAKE").line_discounts,
        vec![v1::LineDiscount {
            line_id: "2".into(),
            discount_minor: 350
        }]
    );
    let paid: i64 = 1_700 - 300 - 350 - result(&receipt.offers, "TENPC").discount_minor;
    assert_eq!(
        result(&receipt.offers, "TENPC").discount_minor,
        (1_700 - 300 - 350) / 10
    );
    // Points: base on what is paid, + coffee base again (X2), + 50.
    assert_eq!(result(&receipt.offers, "B50").points, 50);
    let coffee_paid = receipt.lines[0].eligible_minor;
    assert_eq!(result(&receipt.offers, "X2").points, coffee_paid / 100);
    assert_eq!(receipt.points_earned, paid / 100 + coffee_paid / 100 + 50);
    assert!(receipt.lines[0].rule_ids.contains(&"offer:X2".to_string()));
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn offers_say_why_they_do_not_apply() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut vip = offer("VIP", v1::OfferKind::BonusPoints, 10);
    vip.targeting = Some(v1::OfferTargeting {
        tags: vec!["vip".into()],
        ..Default::default()
    });
    create(&app, vip).await;
    let mut old = offer("OLD", v1::OfferKind::BonusPoints, 10);
    old.valid_until = Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 0,
    });
    create(&app, old).await;
    let mut big = offer("BIG", v1::OfferKind::BonusPoints, 10);
    big.min_basket_minor = 100_000;
    create(&app, big).await;
    let mut web = offer("WEB", v1::OfferKind::BonusPoints, 10);
    web.channels = vec![v1::Channel::Online.into()];
    create(&app, web).await;
    let receipt = app
        .points
        .clone()
        .accrue(with_codes(
            accrual(
                "a-1",
                "CARD-0001",
                "o-1",
                vec![line("1", "SKU", 1, 1_000, 0)],
            ),
            &["VIP", "OLD", "BIG", "WEB", "NOPE"],
        ))
        .await
        .expect("accrue")
        .into_inner();
    let statuses: Vec<(String, v1::OfferStatus)> = receipt
        .offers
        .iter()
        .map(|o| (o.code.clone(), o.status()))
        .collect();
    for (code, status) in [
        ("VIP", v1::OfferStatus::NotEligible),
        ("OLD", v1::OfferStatus::Expired),
        ("BIG", v1::OfferStatus::BasketTooSmall),
        ("WEB", v1::OfferStatus::WrongChannel),
        ("NOPE", v1::OfferStatus::UnknownCode),
    ] {
        assert!(
            statuses.contains(&(code.to_string(), status)),
            "{code}: {statuses:?}"
        );
    }
    assert_eq!(receipt.points_earned, 10, "no offer applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_total_limit_of_k_gives_exactly_k_uses_to_concurrent_checkouts() {
    let app = spawn_app().await;
    let mut limited = offer("FIRST5", v1::OfferKind::BonusPoints, 100);
    limited.total_limit = Some(5);
    let created = create(&app, limited).await;
    for i in 0..20 {
        app.enroll(&format!("CARD-{i:04}")).await;
    }
    let mut tasks = JoinSet::new();
    for i in 0..20 {
        let mut points = app.points.clone();
        let request = with_codes(
            accrual(
                &format!("a-{i}"),
                &format!("CARD-{i:04}"),
                &format!("o-{i}"),
                vec![line("1", "SKU", 1, 100, 0)],
            ),
            &["FIRST5"],
        );
        tasks.spawn(async move {
            points
                .accrue(request)
                .await
                .map(|r| r.into_inner().offers[0].status())
        });
    }
    let (mut applied, mut limit_reached) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.expect("task").expect("accrue") {
            v1::OfferStatus::Applied => applied += 1,
            v1::OfferStatus::LimitReached => limit_reached += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((applied, limit_reached), (5, 15));
    let report = app
        .offers()
        .await
        .get_offer_report(v1::GetOfferReportRequest {
            offer_id: created.offer_id,
        })
        .await
        .expect("report")
        .into_inner();
    assert_eq!(
        (report.uses, report.points_granted, report.eligible_members),
        (5, 500, 20)
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_member_limit_holds_under_concurrent_checkouts_and_a_full_return_gives_the_use_back()
{
    let app = spawn_app().await;
    let mut once = offer("ONCE", v1::OfferKind::BonusPoints, 100);
    once.per_member_limit = Some(1);
    create(&app, once).await;
    app.enroll("CARD-0001").await;
    assert_eq!(
        listed(&app, "CARD-0001").await,
        vec![("ONCE".to_string(), Some(1))]
    );
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let mut points = app.points.clone();
        // A till retrying with new request ids for new orders: still one use.
        let request = with_codes(
            accrual(
                &format!("a-{i}"),
                "CARD-0001",
                &format!("o-{i}"),
                vec![line("1", "SKU", 1, 100, 0)],
            ),
            &["ONCE"],
        );
        tasks.spawn(async move {
            points
                .accrue(request)
                .await
                .map(|r| (r.into_inner().offers[0].status(), i))
        });
    }
    let mut winner = None;
    while let Some(r) = tasks.join_next().await {
        let (status, i) = r.expect("task").expect("accrue");
        if status == v1::OfferStatus::Applied {
            assert!(
                winner.replace(i).is_none(),
                "two uses of a once-per-member offer"
            );
        }
    }
    let winner = winner.expect("one use");
    assert!(listed(&app, "CARD-0001").await.is_empty(), "used up");
    app.points
        .clone()
        .return_items(v1::ReturnItemsRequest {
            request_id: "r-1".into(),
            order_id: format!("o-{winner}"),
            return_id: "r-1".into(),
            lines: vec![v1::ReturnLine {
                line_id: "1".into(),
                quantity: 1,
            }],
        })
        .await
        .expect("full return");
    assert_eq!(
        listed(&app, "CARD-0001").await,
        vec![("ONCE".to_string(), Some(1))],
        "the use is back"
    );
    let again = app
        .points
        .clone()
        .accrue(with_codes(
            accrual(
                "a-again",
                "CARD-0001",
                "o-again",
                vec![line("1", "SKU", 1, 100, 0)],
            ),
            &["ONCE"],
        ))
        .await
        .expect("accrue")
        .into_inner();
    assert_eq!(again.offers[0].status(), v1::OfferStatus::Applied);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn member_offers_follow_tag_tier_and_catalogue_changes_at_once() {
    let app = spawn_app().await;
    let member = app.enroll("CARD-0001").await;
    let mut vip = offer("VIP", v1::OfferKind::PercentDiscount, 15);
    vip.priority = 5;
    vip.targeting = Some(v1::OfferTargeting {
        tags: vec!["vip".into()],
        ..Default::default()
    });
    let vip = create(&app, vip).await;
    let mut gold = offer("GOLD", v1::OfferKind::PointsMultiplier, 300);
    gold.priority = 9;
    gold.targeting = Some(v1::OfferTargeting {
        tier_ids: vec!["gold".into()],
        ..Default::default()
    });
    create(&app, gold).await;
    create(&app, offer("ALL", v1::OfferKind::BonusPoints, 5)).await;
    assert_eq!(
        listed(&app, "CARD-0001").await,
        vec![("ALL".to_string(), None)]
    );

    app.members
        .clone()
        .update_member(v1::UpdateMemberRequest {
            request_id: "tag".into(),
            member: Some(v1::Member {
                member_id: member.member_id.clone(),
                tags: vec!["VIP".into()],
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["tags".into()],
            }),
        })
        .await
        .expect("tag");
    let codes: Vec<String> = listed(&app, "CARD-0001")
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(codes, vec!["VIP", "ALL"], "by priority");

    app.program()
        .await
        .upsert_tier(v1::UpsertTierRequest {
            request_id: "tier".into(),
            tier: Some(v1::Tier {
                tier_id: "gold".into(),
                name: "Gold".into(),
                rank: 1,
                threshold_points: Some(10),
                threshold_spend_minor: None,
                earn_multiplier_percent: 100,
            }),
        })
        .await
        .expect("tier");
    app.points
        .clone()
        .accrue(accrual(
            "a-1",
            "CARD-0001",
            "o-1",
            vec![line("1", "SKU", 1, 1_000, 0)],
        ))
        .await
        .expect("reach gold");
    let codes: Vec<String> = listed(&app, "CARD-0001")
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(codes, vec!["GOLD", "VIP", "ALL"]);

    app.offers()
        .await
        .update_offer(v1::UpdateOfferRequest {
            request_id: "off".into(),
            offer: Some(v1::Offer {
                offer_id: vip.offer_id,
                active: false,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["active".into()],
            }),
        })
        .await
        .expect("deactivate");
    let codes: Vec<String> = listed(&app, "CARD-0001")
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(
        codes,
        vec!["GOLD", "ALL"],
        "the cache follows the catalogue"
    );
}

/// The listing's remaining uses (total and per member) and spend band come from one read
/// of the member; a programme change that moves the spend window is seen on the next call.
#[tokio::test]
async fn member_offers_count_uses_and_window_spend_and_follow_a_new_window() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    app.enroll("CARD-0002").await;
    let mut limited = offer("LIMITED", v1::OfferKind::BonusPoints, 10);
    limited.total_limit = Some(3);
    create(&app, limited).await;
    let mut once = offer("ONCE", v1::OfferKind::BonusPoints, 10);
    once.per_member_limit = Some(1);
    create(&app, once).await;
    let mut big = offer("BIG", v1::OfferKind::BonusPoints, 10);
    big.targeting = Some(v1::OfferTargeting {
        min_spend_minor: Some(50_000),
        ..Default::default()
    });
    create(&app, big).await;
    let sorted = |mut v: Vec<(String, Option<i64>)>| {
        v.sort();
        v
    };
    let fresh = vec![
        ("LIMITED".to_string(), Some(3)),
        ("ONCE".to_string(), Some(1)),
    ];
    assert_eq!(sorted(listed(&app, "CARD-0001").await), fresh);

    let mut points = app.points.clone();
    points
        .accrue(with_codes(
            accrual(
                "a-1",
                "CARD-0001",
                "o-1",
                vec![line("1", "SKU", 1, 60_000, 0)],
            ),
            &["LIMITED", "ONCE"],
        ))
        .await
        .expect("accrue");
    assert_eq!(
        sorted(listed(&app, "CARD-0001").await),
        vec![("BIG".to_string(), None), ("LIMITED".to_string(), Some(2))]
    );
    assert_eq!(
        sorted(listed(&app, "CARD-0002").await),
        vec![
            ("LIMITED".to_string(), Some(2)),
            ("ONCE".to_string(), Some(1))
        ]
    );

    // The purchase was 6 months ago: inside a 12-month window, outside a 3-month one.
    let six_months_ago = chrono::Utc::now() - chrono::Duration::days(183);
    set_time(
        &app,
        "orders",
        "occurred_at",
        "order_id = 'o-1'",
        six_months_ago,
    )
    .await;
    let program = |months: i32| v1::Program {
        time_zone: "Europe/Berlin".into(),
        base_points: 1,
        base_spend_minor: 100,
        tier_window_months: months,
        tier_grace_days: 30,
        ..Default::default()
    };
    for (id, months) in [("p-12", 12), ("p-3", 3)] {
        app.program()
            .await
            .update_program(v1::UpdateProgramRequest {
                update_mask: None,
                request_id: id.into(),
                program: Some(program(months)),
            })
            .await
            .expect("update program");
        let codes: Vec<String> = sorted(listed(&app, "CARD-0001").await)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        let expected = if months == 12 {
            vec!["BIG", "LIMITED"]
        } else {
            vec!["LIMITED"]
        };
        assert_eq!(codes, expected, "window of {months} months");
    }
}
