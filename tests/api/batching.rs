//! Commit batching: concurrent accruals share transactions, yet each call gets exactly
//! the outcome it would get alone (its member, key, order and errors are its own).
use std::{collections::HashMap, time::Duration};

use loyalty::grpc::pb::loyalty::v1;
use tokio::task::JoinSet;
use tonic::Code;

use crate::helpers::{
    TestApp, TestDb, accrual, assert_status, by_card, by_id, line, set_time, spawn_configured,
    spawn_with, test_settings,
};

/// (accruals written, transactions that wrote them) from the batch size histogram.
async fn batch_sizes(app: &TestApp) -> (u64, u64) {
    histogram(app, "loyalty_accrual_batch_size", "").await
}

/// (sum, count) of the histogram `name` on the metrics endpoint, on the series whose
/// labels include `label`.
async fn histogram(app: &TestApp, name: &str, label: &str) -> (u64, u64) {
    let addr = app.metrics_addr.expect("metrics endpoint");
    let body = tokio::task::spawn_blocking(move || crate::telemetry::http_get(addr, "/metrics"))
        .await
        .expect("scrape");
    let value = |name: &str| -> u64 {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{body}"))
    };
    (
        value(&format!("{name}_sum")),
        value(&format!("{name}_count")),
    )
}

fn amount(i: usize) -> i64 {
    1_000 + 100 * i as i64
}

#[tokio::test]
async fn concurrent_accruals_share_transactions_and_each_keeps_its_own_outcome() {
    let app = spawn_configured(|s| {
        // One worker: calls that arrive while it writes queue for the next batch.
        s.database.accrual_batch_workers = 1;
        s.telemetry.metrics_listen_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    const MEMBERS: usize = 30;
    for i in 0..MEMBERS {
        app.enroll(&format!("BATCH-{i:04}")).await;
    }
    let mut points = app.points.clone();
    let earlier = points
        .accrue(accrual(
            "earlier",
            "BATCH-0000",
            "o-earlier",
            vec![line("1", "SKU", 1, 5_000, 0)],
        ))
        .await
        .expect("earlier accrual")
        .into_inner();

    // What each call is and what it must get, all sent at once.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Expect {
        Earned(i64),
        ReplayOfEarlier,
        Reused,
        UnknownMember,
        OrderTaken,
        /// One of two calls for the same order wins.
        RaceForOrder,
    }
    let mut calls: Vec<(String, v1::AccrueRequest, Expect)> = Vec::new();
    for i in 0..MEMBERS {
        let card = format!("BATCH-{i:04}");
        calls.push((
            card.clone(),
            accrual(
                &format!("k-{i}"),
                &card,
                &format!("o-{i}"),
                vec![
                    line("1", "SKU-A", 1, amount(i), 0),
                    line("2", "SKU-B", 2, 250, 0),
                    line("3", "SKU-C", 1, 99, 0),
                ],
            ),
            // 1 point per EUR, floored once per basket.
            Expect::Earned((amount(i) + 500 + 99) / 100),
        ));
    }
    // Two more purchases of member 1 in the same burst.
    for n in 0..2 {
        calls.push((
            "BATCH-0001".into(),
            accrual(
                &format!("k-1-{n}"),
                "BATCH-0001",
                &format!("o-1-{n}"),
                vec![line("1", "SKU", 1, 700, 0)],
            ),
            Expect::Earned(7),
        ));
    }
    // A retry of a committed call, and its key reused for another basket.
    let retry = accrual(
        "earlier",
        "BATCH-0000",
        "o-earlier",
        vec![line("1", "SKU", 1, 5_000, 0)],
    );
    calls.push(("BATCH-0000".into(), retry, Expect::ReplayOfEarlier));
    calls.push((
        "BATCH-0000".into(),
        accrual(
            "earlier",
            "BATCH-0000",
            "o-other",
            vec![line("1", "SKU", 1, 100, 0)],
        ),
        Expect::Reused,
    ));
    calls.push((
        "NOPE-0001".into(),
        accrual(
            "k-nope",
            "NOPE-0001",
            "o-nope",
            vec![line("1", "SKU", 1, 100, 0)],
        ),
        Expect::UnknownMember,
    ));
    calls.push((
        "BATCH-0002".into(),
        accrual(
            "k-taken",
            "BATCH-0002",
            "o-earlier",
            vec![line("1", "SKU", 1, 100, 0)],
        ),
        Expect::OrderTaken,
    ));
    // Two tills send one order for different members under different keys.
    for (key, card) in [("k-race-a", "BATCH-0003"), ("k-race-b", "BATCH-0004")] {
        calls.push((
            card.into(),
            accrual(key, card, "o-race", vec![line("1", "SKU", 1, 300, 0)]),
            Expect::RaceForOrder,
        ));
    }
    // A concurrent copy of a fresh call (the till retried before the answer came).
    let copy = calls[5].1.clone();
    calls.push((
        "BATCH-0005".into(),
        copy,
        Expect::Earned(calls[5].2.earned()),
    ));

    impl Expect {
        fn earned(self) -> i64 {
            match self {
                Expect::Earned(p) => p,
                _ => 0,
            }
        }
    }

    let mut set = JoinSet::new();
    for (i, (card, request, expect)) in calls.iter().cloned().enumerate() {
        let mut client = app.points.clone();
        set.spawn(async move { (i, card, expect, client.accrue(request).await) });
    }
    let mut earned: HashMap<String, i64> = HashMap::new();
    earned.insert("BATCH-0000".into(), earlier.points_earned);
    let mut receipts: HashMap<String, v1::AccrueResponse> = HashMap::new();
    let mut race_wins = 0;
    let mut written = 0;
    while let Some(joined) = set.join_next().await {
        let (i, card, expect, outcome) = joined.expect("task");
        let request_id = calls[i].1.request_id.clone();
        match (expect, outcome) {
            (Expect::Earned(p), Ok(r)) => {
                let r = r.into_inner();
                assert_eq!(r.points_earned, p, "call {i}");
                // The concurrent copy gets the very same receipt, not a second accrual.
                if let Some(first) = receipts.get(&request_id) {
                    assert_eq!(first, &r, "copies of {request_id}");
                    continue;
                }
                receipts.insert(request_id, r);
                *earned.entry(card).or_default() += p;
                written += 1;
            }
            (Expect::ReplayOfEarlier, Ok(r)) => assert_eq!(r.into_inner(), earlier),
            (Expect::Reused, Err(e)) => {
                assert_status(&e, Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED")
            }
            (Expect::UnknownMember, Err(e)) => {
                assert_status(&e, Code::NotFound, "MEMBER_NOT_FOUND")
            }
            (Expect::OrderTaken, Err(e)) => {
                assert_status(&e, Code::AlreadyExists, "ORDER_ALREADY_ACCRUED")
            }
            (Expect::RaceForOrder, Ok(r)) => {
                race_wins += 1;
                written += 1;
                *earned.entry(card).or_default() += r.into_inner().points_earned;
            }
            (Expect::RaceForOrder, Err(e)) => {
                assert_status(&e, Code::AlreadyExists, "ORDER_ALREADY_ACCRUED")
            }
            (expect, outcome) => panic!("call {i}: expected {expect:?}, got {outcome:?}"),
        }
    }
    assert_eq!(
        race_wins, 1,
        "exactly one till's accrual of the shared order"
    );

    // Every balance is exactly what its own calls earned; the books agree.
    for i in 0..MEMBERS {
        let card = format!("BATCH-{i:04}");
        let balance = app.balance(&card).await;
        let expected = earned.get(&card).copied().unwrap_or(0);
        assert_eq!(
            (balance.available, balance.lifetime_earned),
            (expected, expected),
            "{card}"
        );
    }
    // Member 1's three purchases, in whatever order they were written: each entry's
    // balance is the one before plus its points.
    let entries = app.statement("BATCH-0001").await;
    assert_eq!(entries.len(), 3);
    let mut running = 0;
    for e in entries.iter().rev() {
        running += e.points;
        assert_eq!(e.balance_after, running, "{entries:?}");
    }
    assert_eq!(running, 7 + 7 + (amount(1) + 500 + 99) / 100);
    app.assert_ledger_balanced().await;

    // The calls did share transactions: fewer commits than accruals written.
    // The earlier accrual was a batch of its own.
    let (sum, count) = batch_sizes(&app).await;
    assert_eq!(sum, written + 1, "every written accrual is counted once");
    assert!(
        count < sum,
        "{count} transactions for {sum} accruals: nothing was batched"
    );
}

#[tokio::test]
async fn one_order_sent_by_many_tills_at_once_is_accrued_once() {
    let app = spawn_configured(|_| {}).await;
    const TILLS: usize = 20;
    for i in 0..TILLS {
        app.enroll(&format!("TILL-{i:04}")).await;
    }
    let mut set = JoinSet::new();
    for i in 0..TILLS {
        let mut client = app.points.clone();
        set.spawn(async move {
            let card = format!("TILL-{i:04}");
            let request = accrual(
                &format!("till-{i}"),
                &card,
                "the-order",
                vec![line("1", "SKU", 1, 1_000, 0)],
            );
            // A till retries MEMBER_BUSY (ABORTED, "retry shortly") with the same request.
            let mut tries = 0;
            loop {
                match client.accrue(request.clone()).await {
                    Err(e) if e.code() == Code::Aborted && tries < 20 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    outcome => return (card, outcome),
                }
            }
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined.expect("task") {
            (card, Ok(r)) => {
                assert_eq!(r.into_inner().points_earned, 10);
                winners.push(card);
            }
            (_, Err(e)) => assert_status(&e, Code::AlreadyExists, "ORDER_ALREADY_ACCRUED"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    for i in 0..TILLS {
        let card = format!("TILL-{i:04}");
        let expected = if winners.contains(&card) { 10 } else { 0 };
        assert_eq!(app.balance(&card).await.available, expected, "{card}");
    }
    app.assert_ledger_balanced().await;
}

/// While one batch is being written, the next worker waits (up to the linger) for more
/// calls instead of writing each as it comes: on PostgreSQL, four calls sent 50 ms apart
/// while another call's transaction is held open share one transaction. A call never
/// waits when no other batch is being written: on SQLite (one worker, so never another
/// batch) the same five calls are five transactions, though the linger is 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_arriving_while_a_batch_is_written_wait_for_each_other() {
    let app = spawn_configured(|s| {
        s.database.accrual_batch_workers = 2;
        s.database.accrual_batch_max = 4;
        s.database.accrual_batch_linger_us = 2_000_000;
        s.telemetry.metrics_listen_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let postgres = app.store.backend() == sea_orm::DbBackend::Postgres;
    for i in 0..5 {
        app.enroll(&format!("LINGER-{i}")).await;
    }
    // PostgreSQL: hold (uncommitted) the idempotency key of the first call, so that the
    // first call's batch waits in its write for the key's unique check: while it waits,
    // a batch is being written.
    let holder = if postgres {
        let holder = sea_orm::TransactionTrait::begin(app.store.conn())
            .await
            .expect("begin");
        sea_orm::ConnectionTrait::execute_unprepared(
            &holder,
            "INSERT INTO idempotency_keys (client_id, method, request_id, request_hash, \
             response, created_at) VALUES ('anonymous', 'Accrue', 'l-0', '\\x00', NULL, now())",
        )
        .await
        .expect("hold the key");
        Some(holder)
    } else {
        None
    };
    let send = |i: usize| {
        let mut points = app.points.clone();
        tokio::spawn(async move {
            points
                .accrue(accrual(
                    &format!("l-{i}"),
                    &format!("LINGER-{i}"),
                    &format!("lo-{i}"),
                    vec![line("1", "SKU", 1, 1_000, 0)],
                ))
                .await
                .map(|r| r.into_inner().points_earned)
        })
    };
    let first = send(0);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut rest = Vec::new();
    for i in 1..5 {
        rest.push(send(i));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for call in rest {
        assert_eq!(call.await.expect("task").expect("accrue"), 10);
    }
    if let Some(holder) = holder {
        holder.rollback().await.expect("release");
    }
    assert_eq!(first.await.expect("task").expect("accrue"), 10);

    // PostgreSQL: the held call's batch, and the four others in one transaction.
    // SQLite: each call alone.
    let expected = if postgres { (5, 2) } else { (5, 5) };
    assert_eq!(batch_sizes(&app).await, expected);
    app.assert_ledger_balanced().await;
}

/// SQLite: with the background checkpoint on, what accruals write reaches the database
/// file while the server runs; with it off, it stays in the write-ahead log (SQLite's
/// own checkpoint waits for 1,000 pages). On SQLite whatever the suite's backend, as
/// the setting is SQLite's.
#[tokio::test]
async fn sqlite_log_is_copied_into_the_database_in_the_background() {
    let mut growth = Vec::new();
    for interval_ms in [20, 0] {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("loyalty.db");
        let mut settings = test_settings(&format!("sqlite://{}?mode=rwc", file.display()));
        settings.database.sqlite_checkpoint_interval_ms = interval_ms;
        let app = spawn_with(TestDb::Sqlite(dir), settings).await;
        // Start from an empty log: the migrations' pages copied in.
        sea_orm::ConnectionTrait::execute_unprepared(
            app.store.conn(),
            "PRAGMA wal_checkpoint(TRUNCATE)",
        )
        .await
        .expect("checkpoint");
        let before = std::fs::metadata(&file).expect("database file").len();
        // Well under SQLite's 1,000 pages: each call writes a few dozen.
        for i in 0..10 {
            let card = format!("CKPT-{i}");
            app.enroll(&card).await;
            let lines = (0..8)
                .map(|l| line(&format!("{l}"), &format!("SKU-{l}"), 1, 1_000, 0))
                .collect();
            app.points
                .clone()
                .accrue(accrual(
                    &format!("ck-{i}"),
                    &card,
                    &format!("co-{i}"),
                    lines,
                ))
                .await
                .expect("accrue");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = std::fs::metadata(&file).expect("database file").len();
        app.assert_ledger_balanced().await;
        growth.push(after - before);
    }
    assert!(
        growth[0] > 0,
        "background checkpoint: file grew by {growth:?}"
    );
    assert_eq!(
        growth[1], 0,
        "checkpoint on commit only: file grew by {growth:?}"
    );
}

/// A server with the default read workers (calls that arrive while a statement runs wait
/// for the next), and `n` members `{prefix}-0000`…, member i having spent i + 1 EUR (and
/// so earned i + 1 points); with their ids.
async fn readers_and_members(prefix: &str, n: usize) -> (TestApp, Vec<String>) {
    let app = spawn_configured(|s| {
        s.telemetry.metrics_listen_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..n {
        let card = format!("{prefix}-{i:04}");
        ids.push(app.enroll(&card).await.member_id);
        app.points
            .clone()
            .accrue(accrual(
                &format!("k-{i}"),
                &card,
                &format!("o-{i}"),
                vec![line("1", "SKU", 1, 100 * (i as i64 + 1), 0)],
            ))
            .await
            .expect("accrue");
    }
    (app, ids)
}

/// Every member by card, then every member by id, each after it an unknown card (then an
/// unknown id): (member index, reference), the unknown ones at index `ids.len()`.
fn by_card_then_id(prefix: &str, ids: &[String]) -> Vec<(usize, v1::MemberRef)> {
    let mut refs = Vec::new();
    for round in 0..2 {
        for i in 0..=ids.len() {
            let member = match (ids.get(i), round) {
                (Some(_), 0) => by_card(&format!("{prefix}-{i:04}")),
                (Some(id), _) => by_id(id),
                (None, 0) => by_card("NOBODY-0001"),
                (None, _) => by_id(&uuid::Uuid::now_v7().to_string()),
            };
            refs.push((i, member));
        }
    }
    refs
}

/// Sends every read at once and returns the answers as (member index, response); the
/// reads of the unknown members (index `unknown`) must have got NOT_FOUND.
async fn read_at_once<T, Fut>(
    refs: Vec<(usize, v1::MemberRef)>,
    unknown: usize,
    read: impl Fn(v1::MemberRef) -> Fut,
) -> Vec<(usize, T)>
where
    T: std::fmt::Debug + Send + 'static,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
{
    let mut reads = JoinSet::new();
    for (i, member) in refs {
        let answer = read(member);
        reads.spawn(async move { (i, answer.await) });
    }
    let mut answers = Vec::new();
    while let Some(joined) = reads.join_next().await {
        match joined.expect("read task") {
            (i, answer) if i == unknown => assert_status(
                &answer.expect_err("unknown member"),
                Code::NotFound,
                "MEMBER_NOT_FOUND",
            ),
            (i, answer) => answers.push((i, answer.expect("read").into_inner())),
        }
    }
    answers
}

/// Every one of `sent` reads of `kind` was answered by a shared statement, and fewer
/// statements than reads ran.
async fn assert_shared(app: &TestApp, kind: &str, sent: usize) {
    let (read, statements) =
        histogram(app, "loyalty_read_batch_size", &format!(r#"kind="{kind}""#)).await;
    assert_eq!(read, sent as u64, "every read is counted once");
    assert!(
        statements < read,
        "{read} concurrent reads took {statements} statements"
    );
}

/// Concurrent balance reads share statements, and each call still gets its own member's
/// balance and expiring points, whether it names the member by card or by id, and
/// NOT_FOUND for a member that does not exist.
#[tokio::test]
async fn concurrent_balance_reads_share_statements_and_each_gets_its_own_member() {
    const MEMBERS: usize = 24;
    let (app, ids) = readers_and_members("READ", MEMBERS).await;
    // Member 3's points expire within the window shown; the others' later.
    let soon = chrono::Utc::now() + chrono::Duration::days(10);
    set_time(&app, "point_lots", "expires_at", "order_id = 'o-3'", soon).await;

    let refs = by_card_then_id("READ", &ids);
    let sent = refs.len();
    let answers = read_at_once(refs, MEMBERS, |member| {
        let mut points = app.points.clone();
        async move {
            points
                .get_balance(v1::GetBalanceRequest {
                    member: Some(member),
                })
                .await
        }
    })
    .await;
    for (i, answer) in answers {
        assert_eq!(answer.member_id, ids[i], "member {i}");
        let balance = answer.balance.expect("balance");
        assert_eq!(balance.lifetime_earned, i as i64 + 1, "member {i}");
        assert_eq!(
            balance.available + balance.pending,
            i as i64 + 1,
            "member {i}"
        );
        let expiring = answer.expiring_soon.expect("expiring_soon");
        let expected = if i == 3 { 4 } else { 0 };
        assert_eq!(expiring.points, expected, "member {i}");
        assert_eq!(expiring.first_expire_time.is_some(), i == 3, "member {i}");
    }
    assert_shared(&app, "balance", sent).await;
}

/// Concurrent ListMemberOffers calls share statements, and each call still gets the
/// offers its own member qualifies for (here by spend), by card or by id, and NOT_FOUND
/// for a member that does not exist.
#[tokio::test]
async fn concurrent_member_offer_reads_share_statements_and_each_gets_its_own_offers() {
    const MEMBERS: usize = 12;
    let (app, ids) = readers_and_members("OFFERS", MEMBERS).await;
    let mut offers = app.offers().await;
    // Offer k needs k EUR of spend in the window: member i qualifies for 1 to i + 1.
    for k in 1..=MEMBERS as i64 {
        offers
            .create_offer(v1::CreateOfferRequest {
                request_id: format!("offer-{k}"),
                offer: Some(v1::Offer {
                    code: format!("SPEND-{k:02}"),
                    name: format!("spend {k}"),
                    kind: v1::OfferKind::BonusPoints.into(),
                    value: 10,
                    active: true,
                    stackable: true,
                    targeting: Some(v1::OfferTargeting {
                        min_spend_minor: Some(100 * k),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .await
            .expect("create offer");
    }

    let refs = by_card_then_id("OFFERS", &ids);
    let sent = refs.len();
    let answers = read_at_once(refs, MEMBERS, |member| {
        let mut offers = offers.clone();
        async move {
            offers
                .list_member_offers(v1::ListMemberOffersRequest {
                    member: Some(member),
                    channel: v1::Channel::Pos.into(),
                    page_size: 0,
                    page_token: String::new(),
                })
                .await
        }
    })
    .await;
    for (i, answer) in answers {
        let mut codes: Vec<String> = answer
            .offers
            .into_iter()
            .map(|m| m.offer.expect("offer").code)
            .collect();
        codes.sort();
        let expected: Vec<String> = (1..=i + 1).map(|k| format!("SPEND-{k:02}")).collect();
        assert_eq!(codes, expected, "member {i}");
    }
    assert_shared(&app, "member_offers", sent).await;
}

/// A call the batch leaves to run alone (here: its member is locked by another session)
/// runs in a task of its own: while it waits for the member, the only batch worker goes
/// on with the calls behind it. PostgreSQL: SQLite's one writer has no row locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_waiting_for_a_locked_member_holds_up_no_batch_behind_it() {
    let app = spawn_configured(|s| {
        s.database.accrual_batch_workers = 1;
        s.database.lock_timeout_ms = 3_000;
    })
    .await;
    for card in ["WAIT-A", "WAIT-B"] {
        app.enroll(card).await;
    }
    let postgres = app.store.backend() == sea_orm::DbBackend::Postgres;
    let holder = if postgres {
        let holder = sea_orm::TransactionTrait::begin(app.store.conn())
            .await
            .expect("begin");
        sea_orm::ConnectionTrait::execute_unprepared(
            &holder,
            "SELECT id FROM members WHERE card_number = 'WAIT-A' FOR UPDATE",
        )
        .await
        .expect("lock");
        Some(holder)
    } else {
        None
    };
    let send = |card: &'static str| {
        let mut points = app.points.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = points
                .accrue(accrual(
                    &format!("w-{card}"),
                    card,
                    &format!("wo-{card}"),
                    vec![line("1", "SKU", 1, 1_000, 0)],
                ))
                .await
                .map(|r| r.into_inner().points_earned);
            (result, started.elapsed())
        })
    };
    let waiting = send("WAIT-A");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (other, took) = send("WAIT-B").await.expect("task");
    assert_eq!(other.expect("accrue"), 10);
    if postgres {
        assert!(
            took < std::time::Duration::from_millis(1_500),
            "the call behind a waiting one took {took:?}"
        );
    }
    if let Some(holder) = holder {
        holder.rollback().await.expect("release");
    }
    let (first, _) = waiting.await.expect("task");
    assert_eq!(first.expect("accrue"), 10);
    app.assert_ledger_balanced().await;
}
