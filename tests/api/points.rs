use loyalty::grpc::pb::loyalty::v1;
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{accrual, assert_status, by_card, by_id, line, spawn_app, violated_fields};

#[tokio::test]
async fn accrual_credits_the_balance_with_a_per_line_breakdown_and_a_statement_entry() {
    let app = spawn_app().await;
    let member = app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    // 2 × 9.99 and 1.50 − 0.50 at 1 point per EUR: floor(19.98 + 1.00) = 20 points.
    let receipt = points
        .accrue(accrual(
            "a-1",
            "CARD-0001",
            "order-1",
            vec![
                line("1", "SKU-A", 2, 999, 0),
                line("2", "SKU-B", 1, 150, 50),
            ],
        ))
        .await
        .expect("accrue")
        .into_inner();
    assert_eq!(receipt.member_id, member.member_id);
    assert_eq!(receipt.points_earned, 20);
    let per_line: Vec<(String, i64, i64)> = receipt
        .lines
        .iter()
        .map(|l| (l.line_id.clone(), l.eligible_minor, l.points))
        .collect();
    assert_eq!(per_line, vec![("1".into(), 1998, 19), ("2".into(), 100, 1)]);
    assert!(
        receipt
            .lines
            .iter()
            .all(|l| l.rule_ids == vec!["base".to_string()])
    );
    assert_eq!(
        receipt.balance,
        Some(v1::Balance {
            available: 20,
            lifetime_earned: 20,
            ..Default::default()
        })
    );

    let balance = points
        .get_balance(v1::GetBalanceRequest {
            member: Some(by_id(&member.member_id)),
        })
        .await
        .expect("balance")
        .into_inner();
    assert_eq!(balance.member_id, member.member_id);
    assert_eq!(
        balance.balance,
        Some(v1::Balance {
            available: 20,
            lifetime_earned: 20,
            ..Default::default()
        })
    );

    let entries = app.statement("CARD-0001").await;
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.kind(), v1::LedgerEntryKind::Accrual);
    assert_eq!((e.points, e.balance_after), (20, 20));
    assert_eq!(e.transaction_id, receipt.transaction_id);
    assert_eq!(
        (e.order_id.as_str(), e.store_id.as_str()),
        ("order-1", "store-1")
    );
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn bad_baskets_are_invalid_argument_with_field_violations_and_store_nothing() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    let good = || {
        accrual(
            "a-1",
            "CARD-0001",
            "order-1",
            vec![line("1", "SKU-A", 1, 1000, 0)],
        )
    };

    let cases: Vec<(v1::AccrueRequest, Vec<&str>)> = vec![
        (
            v1::AccrueRequest {
                lines: vec![],
                ..good()
            },
            vec!["lines"],
        ),
        (
            v1::AccrueRequest {
                lines: vec![line("1", "SKU-A", -1, 1000, 0)],
                ..good()
            },
            vec!["lines[0].quantity"],
        ),
        (
            v1::AccrueRequest {
                lines: vec![line("1", "SKU-A", 1, -1, 0)],
                ..good()
            },
            vec!["lines[0].unit_price_minor"],
        ),
        (
            v1::AccrueRequest {
                lines: vec![line("1", "SKU-A", 1, 100, 200)],
                ..good()
            },
            vec!["lines[0].discount_minor"],
        ),
        (
            v1::AccrueRequest {
                lines: vec![line("1", "SKU-A", 1, 100, 0), line("1", "SKU-B", 1, 100, 0)],
                ..good()
            },
            vec!["lines[1].line_id"],
        ),
        (
            v1::AccrueRequest {
                currency: "euro".into(),
                ..good()
            },
            vec!["currency"],
        ),
        (
            v1::AccrueRequest {
                currency: "USD".into(),
                ..good()
            },
            vec!["currency"],
        ),
        (
            v1::AccrueRequest {
                request_id: "no spaces allowed".into(),
                ..good()
            },
            vec!["request_id"],
        ),
        (
            v1::AccrueRequest {
                request_id: "x".repeat(129),
                ..good()
            },
            vec!["request_id"],
        ),
        (
            v1::AccrueRequest {
                channel: 0,
                ..good()
            },
            vec!["channel"],
        ),
        (
            v1::AccrueRequest {
                order_id: String::new(),
                store_id: String::new(),
                ..good()
            },
            vec!["order_id", "store_id"],
        ),
        (
            v1::AccrueRequest {
                member: None,
                ..good()
            },
            vec!["member"],
        ),
        (
            v1::AccrueRequest {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: 4_102_444_800,
                    nanos: 0,
                }),
                ..good()
            },
            vec!["occurred_at"],
        ),
        (
            v1::AccrueRequest {
                lines: vec![line("1", "SKU-A", 1_000_000, i64::MAX / 10, 0)],
                ..good()
            },
            vec!["lines[0].unit_price_minor"],
        ),
    ];
    for (request, fields) in cases {
        let err = points
            .accrue(request.clone())
            .await
            .expect_err("must be rejected");
        assert_eq!(violated_fields(&err), fields, "for {request:?}");
    }

    let err = points
        .accrue(v1::AccrueRequest {
            member: Some(by_card("NO-SUCH-CARD")),
            ..good()
        })
        .await
        .expect_err("unknown member");
    assert_status(&err, Code::NotFound, "MEMBER_NOT_FOUND");

    // Nothing was written, not even the idempotency key: the same request id now works.
    assert_eq!(app.balance("CARD-0001").await.available, 0);
    assert!(app.statement("CARD-0001").await.is_empty());
    let ok = points
        .accrue(good())
        .await
        .expect("valid accrual")
        .into_inner();
    assert_eq!(ok.points_earned, 10);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn an_order_earns_once_even_under_a_new_request_id() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut points = app.points.clone();
    points
        .accrue(accrual(
            "a-1",
            "CARD-0001",
            "order-1",
            vec![line("1", "SKU-A", 1, 1000, 0)],
        ))
        .await
        .expect("first");
    let err = points
        .accrue(accrual(
            "a-2",
            "CARD-0001",
            "order-1",
            vec![line("1", "SKU-A", 1, 1000, 0)],
        ))
        .await
        .expect_err("second accrual of the order");
    assert_status(&err, Code::AlreadyExists, "ORDER_ALREADY_ACCRUED");
    assert_eq!(app.balance("CARD-0001").await.available, 10);
    app.assert_ledger_balanced().await;
}

#[tokio::test]
async fn statement_is_newest_first_and_pages_are_bound_to_their_member() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    app.enroll("CARD-0002").await;
    let mut points = app.points.clone();
    for i in 1..=12 {
        points
            .accrue(accrual(
                &format!("a-{i}"),
                "CARD-0001",
                &format!("order-{i}"),
                vec![line("1", "SKU", 1, i * 100, 0)],
            ))
            .await
            .expect("accrue");
    }
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut first_token = String::new();
    loop {
        let page = points
            .list_ledger_entries(v1::ListLedgerEntriesRequest {
                member: Some(by_card("CARD-0001")),
                page_size: 5,
                page_token: token,
            })
            .await
            .expect("page")
            .into_inner();
        sizes.push(page.entries.len());
        seen.extend(page.entries.iter().map(|e| e.points));
        if page.next_page_token.is_empty() {
            break;
        }
        if first_token.is_empty() {
            first_token = page.next_page_token.clone();
        }
        token = page.next_page_token;
    }
    assert_eq!(sizes, vec![5, 5, 2]);
    assert_eq!(seen, (1..=12).rev().collect::<Vec<i64>>());
    // Running balance on each entry, newest first.
    let entries = app.statement("CARD-0001").await;
    let after: Vec<i64> = entries.iter().map(|e| e.balance_after).collect();
    let expected: Vec<i64> = (1..=12).rev().map(|n| n * (n + 1) / 2).collect();
    assert_eq!(after, expected);

    let err = points
        .list_ledger_entries(v1::ListLedgerEntriesRequest {
            member: Some(by_card("CARD-0002")),
            page_size: 5,
            page_token: first_token,
        })
        .await
        .expect_err("token of another member");
    assert_eq!(violated_fields(&err), vec!["page_token"]);

    let err = points
        .list_ledger_entries(v1::ListLedgerEntriesRequest {
            member: Some(by_card("NO-SUCH-CARD")),
            page_size: 5,
            page_token: String::new(),
        })
        .await
        .expect_err("unknown member");
    assert_status(&err, Code::NotFound, "MEMBER_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_hundred_concurrent_accruals_for_one_member_lose_no_update() {
    let app = spawn_app().await;
    app.enroll("CARD-0001").await;
    let mut tasks = JoinSet::new();
    for i in 0..100i64 {
        let mut points = app.points.clone();
        tasks.spawn(async move {
            points
                .accrue(accrual(
                    &format!("a-{i}"),
                    "CARD-0001",
                    &format!("order-{i}"),
                    vec![line("1", "SKU", 1, (i + 1) * 100, 0)],
                ))
                .await
                .map(|r| r.into_inner().points_earned)
        });
    }
    let mut total = 0;
    while let Some(result) = tasks.join_next().await {
        total += result.expect("task").expect("accrual succeeds");
    }
    assert_eq!(total, (1..=100).sum::<i64>());
    let balance = app.balance("CARD-0001").await;
    assert_eq!(balance.available, total);
    assert_eq!(balance.lifetime_earned, total);
    let entries = app.statement("CARD-0001").await;
    assert_eq!(entries.len(), 100);
    // Every running balance is distinct: each entry saw the one before it.
    let mut after: Vec<i64> = entries.iter().map(|e| e.balance_after).collect();
    after.sort_unstable();
    after.dedup();
    assert_eq!(after.len(), 100);
    app.assert_ledger_balanced().await;
}
