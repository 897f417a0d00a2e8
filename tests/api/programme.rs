//! Programme rules through the API: earn rules and promotions in quotes and accruals,
//! versioning, tiers, promotion budgets, yearly bonuses and referrals.
use loyalty::grpc::pb::{google::r#type::Date, loyalty::v1};
use rand::Rng;
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{
    TestApp, accrual, assert_status, backdate, by_card, line, quote_of, spawn_app,
    spawn_configured, violated_fields,
};

fn program(rules: Vec<v1::EarnRule>) -> v1::Program {
    v1::Program {
        time_zone: "Europe/Berlin".into(),
        base_points: 1,
        base_spend_minor: 100,
        rules,
        tier_window_months: 12,
        tier_grace_days: 30,
        ..Default::default()
    }
}

fn multiplier(id: &str, percent: i64, combine: v1::CombineMode) -> v1::EarnRule {
    v1::EarnRule {
        rule_id: id.into(),
        effect: Some(v1::earn_rule::Effect::MultiplierPercent(percent)),
        combine: combine.into(),
        ..Default::default()
    }
}

fn bonus(id: &str, points: i64) -> v1::EarnRule {
    v1::EarnRule {
        rule_id: id.into(),
        effect: Some(v1::earn_rule::Effect::BonusPointsPerUnit(points)),
        combine: v1::CombineMode::Stack.into(),
        ..Default::default()
    }
}

async fn update(app: &TestApp, id: &str, program: v1::Program) -> v1::Program {
    app.program()
        .await
        .update_program(v1::UpdateProgramRequest {
            update_mask: None,
            request_id: id.into(),
            program: Some(program),
        })
        .await
        .expect("update program")
        .into_inner()
        .program
        .expect("program")
}

fn categorised(id: &str, sku: &str, category: &str, quantity: i64, unit: i64) -> v1::BasketLine {
    v1::BasketLine {
        category: category.into(),
        ..line(id, sku, quantity, unit, 0)
    }
}

#[tokio::test]
async fn each_rule_kind_applies_the_same_in_a_quote_and_the_accrual() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    // Before any change: the configured base rate, version 0.
    let before = points
        .accrue(accrual(
            "a-0",
            "CARD-0001",
            "o-0",
            vec![line("1", "COFFEE", 2, 500, 0)],
        ))
        .await
        .expect("accrue")
        .into_inner();
    assert_eq!((before.points_earned, before.ruleset_version), (10, 0));

    let mut coffee_double = multiplier("coffee-double", 200, v1::CombineMode::Best);
    coffee_double.skus = vec!["COFFEE".into()];
    let mut coffee_online = multiplier("coffee-online-triple", 300, v1::CombineMode::Best);
    coffee_online.skus = vec!["COFFEE".into()];
    coffee_online.channels = vec![v1::Channel::Online.into()];
    let mut dairy = bonus("dairy-5", 5);
    dairy.categories = vec!["dairy".into()];
    let mut store7 = multiplier("store-7", 150, v1::CombineMode::Stack);
    store7.stores = vec!["S7".into()];
    let mut expired = bonus("last-month", 1_000);
    expired.window = Some(v1::RuleWindow {
        start_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 1_700_086_400,
            nanos: 0,
        }),
        ..Default::default()
    });
    let stored = update(
        &app,
        "p-1",
        v1::Program {
            excluded_skus: vec!["GIFTCARD".into()],
            ..program(vec![coffee_double, coffee_online, dairy, store7, expired])
        },
    )
    .await;
    assert!(stored.version > 0);

    let basket = vec![
        line("1", "COFFEE", 2, 500, 0),
        categorised("2", "MILK", "dairy", 3, 100),
        line("3", "GIFTCARD", 1, 5_000, 0),
    ];
    let pos = accrual("a-1", "CARD-0001", "o-1", basket.clone());
    let quote = points
        .quote_accrual(quote_of(&pos))
        .await
        .expect("quote")
        .into_inner();
    let receipt = points.accrue(pos).await.expect("accrue").into_inner();
    // Coffee: 10 base + 10 (double). Milk: 3 base + 15 bonus. Gift card: nothing.
    let got: Vec<(i64, Vec<String>)> = receipt
        .lines
        .iter()
        .map(|l| (l.points, l.rule_ids.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (20, vec!["base".to_string(), "coffee-double".into()]),
            (18, vec!["base".to_string(), "dairy-5".into()]),
            (0, vec![]),
        ]
    );
    assert_eq!(receipt.points_earned, 38);
    assert_eq!(receipt.ruleset_version, stored.version);
    assert_eq!(
        (
            quote.points_earned,
            quote.lines.clone(),
            quote.ruleset_version
        ),
        (38, receipt.lines.clone(), stored.version)
    );

    // Online in store S7: the triple beats the double (best of), store-7 stacks.
    let online = v1::AccrueRequest {
        channel: v1::Channel::Online.into(),
        store_id: "S7".into(),
        ..accrual(
            "a-2",
            "CARD-0001",
            "o-2",
            vec![line("1", "COFFEE", 2, 500, 0)],
        )
    };
    let quote = points
        .quote_accrual(quote_of(&online))
        .await
        .expect("quote")
        .into_inner();
    let receipt = points.accrue(online).await.expect("accrue").into_inner();
    assert_eq!(receipt.points_earned, 35);
    assert_eq!(
        receipt.lines[0].rule_ids,
        vec!["base", "coffee-online-triple", "store-7"]
    );
    assert_eq!(quote.points_earned, 35);
    // A quote writes nothing.
    assert_eq!(app.statement("CARD-0001").await.len(), 3);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn bad_rules_and_tiers_are_rejected_with_field_violations() {
    let app = spawn_app().await;
    let mut client = app.program().await;
    let mut window = bonus("backwards", 5);
    window.window = Some(v1::RuleWindow {
        start_time: Some(prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 0,
        }),
        end_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        ..Default::default()
    });
    let err = client
        .update_program(v1::UpdateProgramRequest {
            update_mask: None,
            request_id: "p-1".into(),
            program: Some(program(vec![
                multiplier("negative", -200, v1::CombineMode::Best),
                window,
            ])),
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        violated_fields(&err),
        vec![
            "program.rules[0].multiplier_percent",
            "program.rules[1].window.end_time"
        ]
    );
    let tier = |id: &str, rank: i32, threshold: i64| v1::Tier {
        tier_id: id.into(),
        name: id.into(),
        rank,
        threshold_points: Some(threshold),
        threshold_spend_minor: None,
        earn_multiplier_percent: 100,
    };
    client
        .upsert_tier(v1::UpsertTierRequest {
            request_id: "t-1".into(),
            tier: Some(tier("silver", 1, 500)),
        })
        .await
        .expect("silver");
    let err = client
        .upsert_tier(v1::UpsertTierRequest {
            request_id: "t-2".into(),
            tier: Some(tier("gold", 2, 400)),
        })
        .await
        .expect_err("overlapping thresholds");
    assert_eq!(violated_fields(&err), vec!["tier.threshold_points"]);
    let tiers = client
        .list_tiers(v1::ListTiersRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(tiers.tiers.len(), 1, "a rejected change stores nothing");
    // Replacing an existing tier is checked against the rest of the ladder too.
    client
        .upsert_tier(v1::UpsertTierRequest {
            request_id: "t-3".into(),
            tier: Some(tier("gold", 2, 900)),
        })
        .await
        .expect("gold");
    for (request, replacement, field) in [
        ("t-4", tier("silver", 1, 1_000), "tier.threshold_points"),
        ("t-5", tier("silver", 2, 500), "tier.rank"),
    ] {
        let err = client
            .upsert_tier(v1::UpsertTierRequest {
                request_id: request.into(),
                tier: Some(replacement),
            })
            .await
            .expect_err("the replaced tier conflicts with gold");
        assert_eq!(violated_fields(&err), vec![field], "{request}");
    }
}

async fn tiers(app: &TestApp) {
    let mut client = app.program().await;
    for (id, rank, threshold, multiplier) in [("silver", 1, 100, 100), ("gold", 2, 300, 150)] {
        client
            .upsert_tier(v1::UpsertTierRequest {
                request_id: format!("tier-{id}"),
                tier: Some(v1::Tier {
                    tier_id: id.into(),
                    name: id.into(),
                    rank,
                    threshold_points: Some(threshold),
                    threshold_spend_minor: None,
                    earn_multiplier_percent: multiplier,
                }),
            })
            .await
            .expect("tier");
    }
}

async fn status(app: &TestApp, card: &str) -> v1::GetTierStatusResponse {
    app.program()
        .await
        .get_tier_status(v1::GetTierStatusRequest {
            member: Some(by_card(card)),
        })
        .await
        .expect("status")
        .into_inner()
}

#[tokio::test]
async fn tiers_upgrade_on_the_crossing_accrual_and_drop_on_returns_and_after_grace() {
    let app = spawn_app().await;
    tiers(&app).await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    let a = points
        .accrue(accrual(
            "a-1",
            "CARD-0001",
            "o-1",
            vec![line("1", "SKU", 1, 15_000, 0)],
        ))
        .await
        .expect("accrue")
        .into_inner();
    assert_eq!((a.points_earned, a.tier_id.as_str()), (150, "silver"));
    let s = status(&app, "CARD-0001").await;
    assert_eq!(s.tier.map(|t| t.tier_id), Some("silver".into()));
    assert_eq!((s.qualifying_points, s.points_to_next_tier), (150, 150));
    assert_eq!(s.next_tier.map(|t| t.tier_id), Some("gold".into()));
    assert!(s.kept_until_time.is_some());

    let b = points
        .accrue(accrual(
            "a-2",
            "CARD-0001",
            "o-2",
            vec![line("1", "SKU", 1, 20_000, 0)],
        ))
        .await
        .expect("accrue")
        .into_inner();
    assert_eq!(
        (b.points_earned, b.tier_id.as_str()),
        (200, "gold"),
        "the crossing accrual earns at the old rate"
    );
    let c = points
        .accrue(accrual(
            "a-3",
            "CARD-0001",
            "o-3",
            vec![line("1", "SKU", 1, 10_000, 0)],
        ))
        .await
        .expect("accrue")
        .into_inner();
    assert_eq!(c.points_earned, 150, "gold earns 150 %");
    assert!(c.lines[0].rule_ids.contains(&"tier:gold".to_string()));

    // Returning o-2 and o-3 leaves 150 qualifying points: back to silver at once.
    for (i, order) in ["o-2", "o-3"].iter().enumerate() {
        points
            .return_items(v1::ReturnItemsRequest {
                request_id: format!("r-{i}"),
                order_id: (*order).into(),
                return_id: "r".into(),
                lines: vec![v1::ReturnLine {
                    line_id: "1".into(),
                    quantity: 1,
                }],
            })
            .await
            .expect("return");
    }
    let s = status(&app, "CARD-0001").await;
    assert_eq!(
        (s.tier.map(|t| t.tier_id), s.qualifying_points),
        (Some("silver".into()), 150)
    );

    // Within grace after the period: kept. Past grace with nothing qualifying left: dropped.
    let thirteen_months_ago = if app.url.starts_with("postgres") {
        "UPDATE orders SET occurred_at = occurred_at - INTERVAL '13 months'"
    } else {
        "UPDATE orders SET occurred_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', occurred_at, '-13 months')"
    };
    backdate(&app, thirteen_months_ago).await;
    assert_eq!(
        app.jobs.run_jobs(100).await.expect("jobs").tiers_reviewed,
        0
    );
    let period_end_in_grace = if app.url.starts_with("postgres") {
        "UPDATE members SET tier_until = NOW() - INTERVAL '10 days'"
    } else {
        "UPDATE members SET tier_until = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '-10 days')"
    };
    backdate(&app, period_end_in_grace).await;
    assert_eq!(
        app.jobs.run_jobs(100).await.expect("jobs").tiers_reviewed,
        0,
        "still within grace"
    );
    let past_grace = period_end_in_grace.replace("10 days", "40 days");
    backdate(&app, &past_grace).await;
    assert_eq!(
        app.jobs.run_jobs(100).await.expect("jobs").tiers_reviewed,
        1
    );
    let s = status(&app, "CARD-0001").await;
    assert_eq!(s.tier, None);
    assert_eq!(s.qualifying_points, 0);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_promotion_budget_is_never_overspent_by_concurrent_accruals() {
    let app = spawn_app().await;
    let mut launch = bonus("launch", 100);
    launch.budget_points = Some(1_000);
    let mut capped = bonus("per-member", 100);
    capped.skus = vec!["LIMITED".into()];
    capped.per_member_limit = Some(150);
    update(&app, "p-1", program(vec![launch, capped])).await;
    for i in 0..30 {
        app.enroll(&format!("CARD-{i:04}")).await;
    }
    let mut tasks = JoinSet::new();
    for i in 0..30 {
        let mut points = app.points.clone();
        let card = format!("CARD-{i:04}");
        tasks.spawn(async move {
            points
                .accrue(accrual(
                    &format!("a-{i}"),
                    &card,
                    &format!("o-{i}"),
                    vec![line("1", "SKU", 1, 100, 0)],
                ))
                .await
                .map(|r| r.into_inner().points_earned)
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.expect("task").expect("accrue");
    }
    // 30 base points, and exactly the 1000-point budget as bonus.
    assert_eq!(total, 30 + 1_000);

    // One member, concurrent baskets of the per-member promotion: at most 150 bonus.
    let mut tasks = JoinSet::new();
    for i in 0..5 {
        let mut points = app.points.clone();
        tasks.spawn(async move {
            points
                .accrue(accrual(
                    &format!("m-{i}"),
                    "CARD-0000",
                    &format!("mo-{i}"),
                    vec![line("1", "LIMITED", 1, 100, 0)],
                ))
                .await
                .map(|r| r.into_inner().points_earned)
        });
    }
    let mut member_total = 0;
    while let Some(r) = tasks.join_next().await {
        member_total += r.expect("task").expect("accrue");
    }
    // 5 base points; the launch budget is spent; 150 from the per-member rule.
    assert_eq!(member_total, 5 + 150);
    app.assert_ledger_balanced().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn birthday_and_anniversary_bonuses_are_granted_once_even_by_two_servers() {
    let app = spawn_app().await;
    update(
        &app,
        "p-1",
        v1::Program {
            time_zone: "UTC".into(),
            birthday_bonus_points: 50,
            anniversary_bonus_points: 25,
            ..program(vec![])
        },
    )
    .await;
    let month = i32::try_from(chrono::Datelike::month(&chrono::Utc::now())).unwrap_or(1);
    let other = month % 12 + 1;
    let mut members = app.members.clone();
    for (i, m) in [month, month, month, other].into_iter().enumerate() {
        members
            .enroll_member(v1::EnrollMemberRequest {
                request_id: format!("e-{i}"),
                card_number: format!("CARD-{i:04}"),
                name: "Member".into(),
                birthday: Some(Date {
                    year: 0,
                    month: m,
                    day: 1,
                }),
                ..Default::default()
            })
            .await
            .expect("enrol");
    }
    // CARD-0003 enrolled exactly a year ago.
    let a_year_ago = if app.url.starts_with("postgres") {
        "UPDATE members SET enrolled_at = enrolled_at - INTERVAL '1 year' WHERE card_number = 'CARD-0003'"
    } else {
        "UPDATE members SET enrolled_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', enrolled_at, '-1 year') WHERE card_number = 'CARD-0003'"
    };
    backdate(&app, a_year_ago).await;

    let second = app.sibling().await;
    let mut tasks = JoinSet::new();
    for round in 0..3 {
        for jobs in [app.jobs.clone(), second.jobs.clone()] {
            let delay = std::time::Duration::from_millis(rand::rng().random_range(0..20) * round);
            tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                jobs.run_jobs(100).await.expect("jobs")
            });
        }
    }
    let (mut birthdays, mut anniversaries) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let report = r.expect("task");
        birthdays += report.birthday_bonuses;
        anniversaries += report.anniversary_bonuses;
    }
    assert_eq!((birthdays, anniversaries), (3, 1));
    for (card, expected) in [
        ("CARD-0000", 50),
        ("CARD-0001", 50),
        ("CARD-0002", 50),
        ("CARD-0003", 25),
    ] {
        assert_eq!(app.balance(card).await.available, expected, "{card}");
        let bonuses: Vec<String> = app
            .statement(card)
            .await
            .into_iter()
            .filter(|e| e.kind() == v1::LedgerEntryKind::Bonus)
            .map(|e| e.reason_code)
            .collect();
        assert_eq!(bonuses.len(), 1, "{card}: {bonuses:?}");
    }
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn referral_bonuses_are_paid_once_when_the_first_purchase_counts() {
    let app = spawn_configured(|s| s.program.pending_days = 14).await;
    update(
        &app,
        "p-1",
        v1::Program {
            referral_bonus_referrer: 100,
            referral_bonus_referred: 50,
            ..program(vec![])
        },
    )
    .await;
    let mut members = app.members.clone();
    let enrol = |id: &str, card: &str, email: &str, code: &str| v1::EnrollMemberRequest {
        request_id: id.into(),
        card_number: card.into(),
        name: "Member".into(),
        email: email.into(),
        referred_by_code: code.into(),
        ..Default::default()
    };
    let referrer = members
        .enroll_member(enrol("e-1", "CARD-000A", "a@example.com", ""))
        .await
        .expect("referrer")
        .into_inner()
        .member
        .expect("member");
    assert_eq!(referrer.referral_code.len(), 8);
    let err = members
        .enroll_member(enrol(
            "e-2",
            "CARD-000X",
            "a@example.com",
            &referrer.referral_code,
        ))
        .await
        .expect_err("self");
    assert_status(&err, Code::FailedPrecondition, "SELF_REFERRAL");
    let err = members
        .enroll_member(enrol("e-3", "CARD-000Y", "y@example.com", "NOSUCHCD"))
        .await
        .expect_err("unknown code");
    assert_eq!(violated_fields(&err), vec!["referred_by_code"]);
    members
        .enroll_member(enrol(
            "e-4",
            "CARD-000B",
            "b@example.com",
            &referrer.referral_code,
        ))
        .await
        .expect("referred");

    let mut points = app.points.clone();
    points
        .accrue(accrual(
            "a-1",
            "CARD-000B",
            "o-1",
            vec![line("1", "SKU", 1, 1_000, 0)],
        ))
        .await
        .expect("accrue");
    assert_eq!(
        app.balance("CARD-000A").await.available,
        0,
        "nothing while the purchase is pending"
    );
    points
        .confirm_order(v1::ConfirmOrderRequest {
            request_id: "c-1".into(),
            order_id: "o-1".into(),
        })
        .await
        .expect("confirm");
    assert_eq!(app.balance("CARD-000A").await.available, 100);
    assert_eq!(app.balance("CARD-000B").await.available, 10 + 50);
    points
        .accrue(accrual(
            "a-2",
            "CARD-000B",
            "o-2",
            vec![line("1", "SKU", 1, 1_000, 0)],
        ))
        .await
        .expect("accrue");
    points
        .confirm_order(v1::ConfirmOrderRequest {
            request_id: "c-2".into(),
            order_id: "o-2".into(),
        })
        .await
        .expect("confirm");
    assert_eq!(
        app.balance("CARD-000A").await.available,
        100,
        "one referral bonus per referred member"
    );
    app.assert_ledger_balanced().await;
}

async fn update_masked(
    app: &TestApp,
    id: &str,
    program: v1::Program,
    paths: &[&str],
) -> Result<v1::Program, tonic::Status> {
    app.program()
        .await
        .update_program(v1::UpdateProgramRequest {
            request_id: id.into(),
            program: Some(program),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            }),
        })
        .await
        .map(|r| r.into_inner().program.expect("program"))
}

/// UpdateProgram changes what its field mask names (AIP-134), and without a mask only
/// the fields the request sets: an admin tool that sends part of a programme no longer
/// wipes its rules. `*` is the explicit full replace.
#[tokio::test]
async fn update_program_changes_only_the_fields_it_names() {
    let app = spawn_app().await;
    let full = v1::Program {
        birthday_bonus_points: 50,
        excluded_skus: vec!["GIFT-50".into()],
        ..program(vec![bonus("coffee", 5)])
    };
    update(&app, "full", full).await;

    // A mask: only the birthday bonus changes, even to zero.
    let masked = v1::Program {
        base_points: 9,
        ..Default::default()
    };
    let stored = update_masked(&app, "mask", masked, &["birthday_bonus_points"])
        .await
        .expect("masked update");
    assert_eq!(stored.birthday_bonus_points, 0);
    assert_eq!(stored.base_points, 1, "not in the mask");
    assert_eq!(stored.rules.len(), 1, "rules kept");
    assert_eq!(stored.excluded_skus, vec!["GIFT-50".to_owned()]);
    assert_eq!(stored.time_zone, "Europe/Berlin");

    // No mask: what the request sets changes, the rest is kept.
    let partial = v1::Program {
        anniversary_bonus_points: 20,
        ..Default::default()
    };
    let stored = update(&app, "partial", partial).await;
    assert_eq!(stored.anniversary_bonus_points, 20);
    assert_eq!(stored.rules.len(), 1, "rules kept");
    assert_eq!(stored.base_points, 1);
    assert_eq!(stored.tier_window_months, 12);

    // `*`: a full replace, fields left out reset.
    let replace = v1::Program {
        base_points: 2,
        base_spend_minor: 100,
        tier_window_months: 6,
        ..Default::default()
    };
    let stored = update_masked(&app, "replace", replace, &["*"])
        .await
        .expect("full replace");
    assert_eq!(stored.base_points, 2);
    assert!(stored.rules.is_empty() && stored.excluded_skus.is_empty());
    assert_eq!(
        (stored.anniversary_bonus_points, stored.time_zone.as_str()),
        (0, "UTC")
    );

    // Paths that are not updatable fields are refused, each by its place in the mask.
    for (i, (paths, field)) in [
        (&["tiers"][..], "update_mask.paths[0]"),
        (&["rules", "nope"][..], "update_mask.paths[1]"),
        (&["version"][..], "update_mask.paths[0]"),
        (&["*", "rules"][..], "update_mask.paths[1]"),
        (&["birthdayBonusPoints"][..], "update_mask.paths[0]"),
    ]
    .into_iter()
    .enumerate()
    {
        let err = update_masked(&app, &format!("bad-{i}"), program(vec![]), paths)
            .await
            .expect_err("a bad mask");
        assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&err), vec![field.to_owned()], "{paths:?}");
    }
}
