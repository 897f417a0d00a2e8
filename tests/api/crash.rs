//! The real binary killed with SIGKILL at random moments under mixed traffic, again and
//! again (50 times, `LOYALTY_CRASH_KILLS` for more). Clients retry every unanswered call
//! with the same request id, as a till does. At the end every acknowledged effect is
//! there exactly once: balances equal the clients' own totals, each acknowledged
//! accrual and redemption has exactly one ledger entry, no hold is left open, and
//! `loyalty check-ledger` agrees.
use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use loyalty::grpc::pb::loyalty::v1::{self, points_service_client::PointsServiceClient};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sea_orm::{ConnectionTrait, Statement};
use tonic::{Code, transport::Channel};

use crate::helpers::{TestDb, accrual, by_card, free_port, line};

const BIN: &str = env!("CARGO_BIN_EXE_loyalty");

/// Starts `loyalty serve` on `port` over `url`.
fn start(url: &str, port: u16) -> Child {
    Command::new(BIN)
        .arg("serve")
        .env("LOYALTY__DATABASE__URL", url)
        .env("LOYALTY__SERVER__LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOYALTY__SECURITY__REQUIRE_AUTH", "false")
        .env("LOYALTY__SERVER__HEALTH_CHECK_INTERVAL_MS", "200")
        .env("LOYALTY__LOG__FILTER", "error")
        .env_remove("LOYALTY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server")
}

/// Waits until the server answers health with SERVING.
async fn serving(channel: &Channel) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    while Instant::now() < deadline {
        if let Ok(r) = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            && r.into_inner().status == 1
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not come up");
}

/// Calls `f` until it is answered: a lost call (the server died, the connection
/// broke, the database was busy) is sent again, unchanged.
async fn until_answered<T, F, Fut>(mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), f()).await {
            Ok(Ok(r)) => return Ok(r),
            Ok(Err(e))
                if matches!(
                    e.code(),
                    Code::Unavailable
                        | Code::Unknown
                        | Code::Cancelled
                        | Code::DeadlineExceeded
                        | Code::Aborted
                ) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
        assert!(Instant::now() < give_up, "a call was never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one till did and saw acknowledged.
#[derive(Debug, Default)]
struct Till {
    available: i64,
    accruals: i64,
    /// Redemptions and hold captures: each writes one REDEMPTION entry.
    redemptions: i64,
}

async fn till(channel: Channel, worker: usize, seed: u64, stop: Arc<AtomicBool>) -> (String, Till) {
    let card = format!("CRASH-{worker}");
    let points = PointsServiceClient::new(channel.clone());
    let members = v1::member_service_client::MemberServiceClient::new(channel);
    until_answered(|| {
        let mut members = members.clone();
        let card = card.clone();
        async move {
            members
                .enroll_member(v1::EnrollMemberRequest {
                    request_id: format!("enrol-{card}"),
                    card_number: card,
                    name: "Crash Test".into(),
                    ..Default::default()
                })
                .await
        }
    })
    .await
    .expect("enrol");
    let mut rng = StdRng::seed_from_u64(seed ^ worker as u64);
    let mut t = Till::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let step = rng.random_range(0..10);
        if step < 5 || t.available < 5 {
            let units = rng.random_range(1..20);
            let r = until_answered(|| {
                let mut points = points.clone();
                let request = accrual(
                    &format!("{card}-a{n}"),
                    &card,
                    &format!("{card}-o{n}"),
                    vec![line("1", "SKU", 1, units * 100, 0)],
                );
                async move { points.accrue(request).await }
            })
            .await
            .expect("accrue")
            .into_inner();
            assert_eq!(r.points_earned, units);
            t.available += units;
            t.accruals += 1;
        } else if step < 7 {
            until_answered(|| {
                let mut points = points.clone();
                let request = v1::RedeemRequest {
                    request_id: format!("{card}-r{n}"),
                    member: Some(by_card(&card)),
                    points: 5,
                    order_id: String::new(),
                    store_id: "S1".into(),
                };
                async move { points.redeem(request).await }
            })
            .await
            .expect("redeem");
            t.available -= 5;
            t.redemptions += 1;
        } else {
            let hold = until_answered(|| {
                let mut points = points.clone();
                let request = v1::CreateHoldRequest {
                    request_id: format!("{card}-h{n}"),
                    member: Some(by_card(&card)),
                    points: 3,
                    order_id: format!("{card}-ho{n}"),
                    store_id: "S1".into(),
                    ttl: None,
                };
                async move { points.create_hold(request).await }
            })
            .await
            .expect("hold")
            .into_inner()
            .hold
            .expect("hold")
            .hold_id;
            if step < 9 {
                until_answered(|| {
                    let mut points = points.clone();
                    let request = v1::CaptureHoldRequest {
                        request_id: format!("{card}-c{n}"),
                        hold_id: hold.clone(),
                        points: 2,
                    };
                    async move { points.capture_hold(request).await }
                })
                .await
                .expect("capture");
                t.available -= 2;
                t.redemptions += 1;
            } else {
                until_answered(|| {
                    let mut points = points.clone();
                    let request = v1::VoidHoldRequest {
                        request_id: format!("{card}-v{n}"),
                        hold_id: hold.clone(),
                    };
                    async move { points.void_hold(request).await }
                })
                .await
                .expect("void");
            }
        }
    }
    (card, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_again_and_again_under_traffic_nothing_is_lost_or_doubled() {
    let kills: usize = std::env::var("LOYALTY_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("LOYALTY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let (_db, url) = TestDb::create().await;
    let port = free_port();
    let mut server = start(&url, port);
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy();
    serving(&channel).await;

    let stop = Arc::new(AtomicBool::new(false));
    let tills: Vec<_> = (0..6)
        .map(|w| tokio::spawn(till(channel.clone(), w, seed, Arc::clone(&stop))))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        server.kill().expect("SIGKILL");
        server.wait().expect("reap");
        server = start(&url, port);
        serving(&channel).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut results = Vec::new();
    for t in tills {
        results.push(t.await.expect("till"));
    }
    eprintln!(
        "crash test (seed {seed}): {kills} kills in {:?}, {} accruals and {} redemptions and captures acknowledged",
        started.elapsed(),
        results.iter().map(|(_, t)| t.accruals).sum::<i64>(),
        results.iter().map(|(_, t)| t.redemptions).sum::<i64>(),
    );

    let mut points = PointsServiceClient::new(channel.clone());
    let db = sea_orm::Database::connect(&url).await.expect("connect");
    for (card, t) in &results {
        let balance = points
            .get_balance(v1::GetBalanceRequest {
                member: Some(by_card(card)),
            })
            .await
            .expect("balance")
            .into_inner()
            .balance
            .expect("balance");
        assert_eq!(balance.available, t.available, "seed {seed}: {card}");
        assert_eq!(balance.held, 0, "seed {seed}: {card} has an open hold");
        for (kind, expected) in [("ACCRUAL", t.accruals), ("REDEMPTION", t.redemptions)] {
            let row = db
                .query_one_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    match db.get_database_backend() {
                        sea_orm::DbBackend::Postgres => {
                            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ledger_entries e \
                             JOIN members m ON m.id = e.member_id \
                             WHERE m.card_number = $1 AND e.kind = $2"
                        }
                        _ => {
                            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ledger_entries e \
                             JOIN members m ON m.id = e.member_id \
                             WHERE m.card_number = ? AND e.kind = ?"
                        }
                    },
                    [card.clone().into(), kind.into()],
                ))
                .await
                .expect("count")
                .expect("row");
            let n: i64 = row.try_get("", "n").expect("n");
            assert_eq!(n, expected, "seed {seed}: {card} {kind} entries");
        }
    }
    server.kill().expect("stop");
    server.wait().expect("reap");
    let check = Command::new(BIN)
        .arg("check-ledger")
        .env("LOYALTY__DATABASE__URL", &url)
        .env_remove("LOYALTY_CONFIG")
        .output()
        .expect("check-ledger");
    assert!(
        check.status.success(),
        "check-ledger: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}
