//! `loyalty-bench`: seeds a database with members and history, and drives scenarios
//! against a running server, printing calls/s, latency percentiles and errors by status.
//!
//! Reproduce: see `bench/compare.sh` and the README's performance section.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use loyalty::{
    config::DatabaseSettings,
    grpc::pb::loyalty::v1::{
        self as v1, member_ref::Ref, offer_service_client::OfferServiceClient,
        points_service_client::PointsServiceClient,
    },
    store::{
        Store,
        ledger::{OrderLine, lines_json},
    },
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sea_orm::{ConnectionTrait, Statement, Value};
use tonic::{Request, transport::Channel};

#[derive(Parser)]
#[command(name = "loyalty-bench", about = "Benchmarks for the loyalty service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Insert members with history straight into the database (the database generates
    /// the rows, a chunk of members per transaction).
    Seed {
        /// sqlite://… or postgres://…; migrated first.
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 100_000)]
        members: u64,
        /// Past accruals per member: each an order, a line, a ledger entry and a lot.
        #[arg(long, default_value_t = 10)]
        history: u64,
        /// Every past accrual as a ledger entry, but only the first with an order, a line
        /// and a lot (holding the balance): a third of the disk, for millions of members.
        #[arg(long)]
        lean_history: bool,
    },
    /// Drive a scenario against a running server.
    Run {
        #[arg(long, value_enum)]
        scenario: Scenario,
        /// The server, e.g. 127.0.0.1:50051 (ignored for `echo`).
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: SocketAddr,
        /// API key of a `pos` client for store BENCH (or env LOYALTY_BENCH_KEY). Several,
        /// comma-separated, for members spread over programmes: member i is in the
        /// programme of key i mod n (`bench/programs.sh`).
        #[arg(long, env = "LOYALTY_BENCH_KEY", default_value = "")]
        key: String,
        /// Concurrent callers.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// HTTP/2 connections the callers share.
        #[arg(long, default_value_t = 2)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Members seeded (cards BENCH-00000000 …).
        #[arg(long, default_value_t = 100_000)]
        members: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scenario {
    /// Accruals of 3–8 line baskets for random members, unique request ids.
    Accrue,
    /// Balance reads.
    Balance,
    /// ListMemberOffers on the POS channel.
    Offers,
    /// The first statement page (ListLedgerEntries, 20 entries) of random members.
    Statement,
    /// CreateHold then CaptureHold.
    Hold,
    /// 70 % accrue, 10 % quote, 10 % balance, 5 % hold+capture, 5 % return.
    ShopDay,
    /// A bare tonic service (health Check) served by this tool: the transport's ceiling.
    Echo,
}

fn card(i: u64) -> String {
    format!("BENCH-{i:08}")
}

async fn seed(url: &str, members: u64, history: u64, lean: bool) -> anyhow::Result<()> {
    let settings = DatabaseSettings {
        url: url.to_owned().into(),
        ..DatabaseSettings::default()
    };
    let store = Store::connect(&settings).await?;
    store.migrate().await?;
    let db = store.conn();
    let backend = db.get_database_backend();
    let bar = ProgressBar::new(members);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} members {per_sec} eta {eta}",
    )?);
    let started = Instant::now();
    let now: Value = loyalty::store::wall_now().into();
    let balance = i64::try_from(history * 100)?;
    let history = i64::try_from(history)?;
    // Each seeded order's one line, stored as the service stores an order's lines.
    let line = OrderLine {
        line_id: "1".into(),
        sku: "SEED".into(),
        category: None,
        quantity: 1,
        unit_price_minor: 10_000,
        discount_minor: 0,
        eligible_minor: 10_000,
        points: 100,
        returned_quantity: 0,
        points_reversed: 0,
        rule_ids: String::new(),
    };
    let sql = SeedSql::new(backend, lean, &lines_json(&[line])?);
    // The database generates the rows (nothing but four numbers crosses the wire), a
    // chunk of members per transaction; on PostgreSQL two chunks at a time keep both of
    // its processes' cores busy (SQLite takes one writer at a time anyway).
    let chunk = 5_000u64;
    let next = AtomicU64::new(0);
    let worker = || async {
        loop {
            let first = next.fetch_add(chunk, Ordering::Relaxed);
            if first >= members {
                return anyhow::Ok(());
            }
            let last = (first + chunk).min(members);
            let txn = store.begin_write().await?;
            let range = [i64::try_from(first)?.into(), i64::try_from(last)?.into()];
            let enrol = std::iter::once((&sql.members, balance));
            let past = sql.history.iter().map(|text| (text, history));
            for (text, third) in enrol.chain(past.filter(|_| history > 0)) {
                let values: Vec<Value> = range
                    .iter()
                    .cloned()
                    .chain([third.into(), now.clone()])
                    .collect();
                txn.execute_raw(Statement::from_sql_and_values(backend, text, values))
                    .await?;
            }
            txn.commit().await?;
            bar.inc(last - first);
        }
    };
    let workers = if backend == sea_orm::DbBackend::Postgres {
        2
    } else {
        1
    };
    futures_util::future::try_join_all((0..workers).map(|_| worker())).await?;
    bar.finish();
    println!(
        "seeded {members} members with {history} ledger entries each in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The seed's INSERT … SELECT statements. Parameters: 1 and 2 the members' numbers
/// `[first, last)`; 3 the balance (members) or entries per member (history); 4 now.
struct SeedSql {
    members: String,
    history: Vec<String>,
}

impl SeedSql {
    /// `lines`: each seeded order's lines as the `lines` column holds them.
    fn new(backend: sea_orm::DbBackend, lean: bool, lines: &str) -> Self {
        let lines = lines.replace('\'', "''");
        let pg = backend == sea_orm::DbBackend::Postgres;
        let p = |n: u8| if pg { format!("${n}") } else { format!("?{n}") };
        let (p1, p2, p3, p4) = (p(1), p(2), p(3), p(4));
        // Ids in member order (shaped like UUIDs, differing in their first characters as
        // UUIDv7s made apart in time do) and transaction and order ids in accrual order,
        // so each index grows at its end as it would over years of trade. (Ids differing
        // only after a shared 24-character prefix cost accrue 5-10 %: text comparisons.)
        // Cards as `card` writes them, which the scenarios call by.
        let (id, card, past_id) = if pg {
            (
                "lpad(to_hex(i), 8, '0') || '-0000-7000-8000-000000000000'",
                "'BENCH-' || lpad(CAST(i AS TEXT), 8, '0')",
                "'seed-' || lpad(CAST(i AS TEXT), 8, '0') || '-' || lpad(CAST(n AS TEXT), 4, '0')",
            )
        } else {
            (
                "printf('%08x', i) || '-0000-7000-8000-000000000000'",
                "'BENCH-' || printf('%08d', i)",
                "'seed-' || printf('%08d-%04d', i, n)",
            )
        };
        // The chunk's member numbers `i`.
        let numbers = format!(
            "WITH RECURSIVE s(i) AS (SELECT CAST({p1} AS BIGINT) UNION ALL \
             SELECT i + 1 FROM s WHERE i + 1 < {p2})"
        );
        let members = format!(
            "{numbers} INSERT INTO members (id, card_number, name, points_available, lifetime_earned, \
             enrolled_at, updated_at, consent_email_marketing, consent_sms_marketing, \
             consent_profiling, points_pending, points_held, tags) \
             SELECT {id}, {card}, 'Bench Member', {p3}, {p3}, {p4}, {p4}, \
             false, false, false, 0, 0, '' FROM s"
        );
        // Every past accrual's member (`m`), number (`n`) and transaction id (`t`).
        let past = format!(
            "{numbers}, \
             h(n) AS (SELECT CAST(1 AS BIGINT) UNION ALL SELECT n + 1 FROM h WHERE n < {p3}), \
             x AS (SELECT {id} AS m, i, n, {past_id} AS t \
             FROM s, h)"
        );
        // The full shape is each past accrual as the service writes one: an order with a
        // line, its ledger entry and its lot, so every table the accrual path reads and
        // checks has the size and statistics of a programme with history. The lean shape
        // (for seeds too large for the disk in the full one) keeps every ledger entry but
        // only the first accrual's order, line and lot, the lot holding the balance.
        let (orders, order, lots, points) = if lean {
            let first = "x WHERE n = 1";
            (
                first,
                "CASE WHEN n = 1 THEN t END",
                first,
                format!("{p3} * 100"),
            )
        } else {
            ("x", "t", "x", "100".to_owned())
        };
        let history = vec![
            format!(
                "{past} INSERT INTO orders (order_id, member_id, transaction_id, occurred_at, \
                 created_at, store_id, channel, currency, eligible_minor, points_earned, \
                 ruleset_version, points_reversed, eligible_returned, lines) \
                 SELECT t, m, t, {p4}, {p4}, 'BENCH', 'POS', 'EUR', 10000, 100, 0, 0, 0, \
                 '{lines}' FROM {orders} ORDER BY i, n"
            ),
            format!(
                "{past} INSERT INTO ledger_entries (member_id, transaction_id, balance_after, \
                 created_at, order_id, kind, points, pending_delta, held_delta, store_id) \
                 SELECT m, t, n * 100, {p4}, {order}, 'ACCRUAL', 100, 0, 0, 'BENCH' \
                 FROM x ORDER BY i, n"
            ),
            format!(
                "{past} INSERT INTO point_lots (member_id, transaction_id, earned_at, \
                 available_at, order_id, source, state, points_original, points_remaining, \
                 points_expired, points_reversed) \
                 SELECT m, t, {p4}, {p4}, t, 'ACCRUAL', 'AVAILABLE', {points}, {points}, 0, 0 \
                 FROM {lots} ORDER BY i, n"
            ),
        ];
        Self { members, history }
    }
}

fn basket(rng: &mut StdRng) -> Vec<v1::BasketLine> {
    (0..rng.random_range(3..=8))
        .map(|i| v1::BasketLine {
            line_id: format!("{i}"),
            sku: format!("SKU-{}", rng.random_range(0..500)),
            category: ["grocery", "coffee", "dairy", "bakery"][rng.random_range(0..4)].into(),
            quantity: rng.random_range(1..4),
            unit_price_minor: rng.random_range(50..5_000),
            discount_minor: 0,
        })
        .collect()
}

fn authed<T>(message: T, key: &str) -> Request<T> {
    let mut r = Request::new(message);
    if !key.is_empty()
        && let Ok(v) = format!("Bearer {key}").parse()
    {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

struct Outcome {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    calls: u64,
}

/// One caller's loop until the deadline.
async fn caller(
    scenario: Scenario,
    channel: Channel,
    keys: Arc<Vec<String>>,
    members: u64,
    worker: usize,
    deadline: Instant,
) -> Outcome {
    let mut rng = StdRng::seed_from_u64(worker as u64 ^ 0x5eed);
    let mut out = Outcome {
        latencies: Histogram::new(3).unwrap_or_else(|_| Histogram::new(2).expect("histogram")),
        errors: BTreeMap::new(),
        calls: 0,
    };
    let mut points = PointsServiceClient::new(channel.clone());
    let mut offers = OfferServiceClient::new(channel.clone());
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut n = 0u64;
    let mut my_orders: Vec<(String, Vec<v1::BasketLine>, usize)> = Vec::new();
    while Instant::now() < deadline {
        n += 1;
        let number = rng.random_range(0..members);
        let member = v1::MemberRef {
            r#ref: Some(Ref::CardNumber(card(number))),
        };
        let program = usize::try_from(number).unwrap_or(0) % keys.len().max(1);
        let key = keys.get(program).map_or("", String::as_str);
        let id = format!("b-{run_id}-{worker}-{n}");
        let pick = if scenario == Scenario::ShopDay {
            rng.random_range(0..100)
        } else {
            0
        };
        let accrue =
            |id: &str, lines: Vec<v1::BasketLine>, member: v1::MemberRef| v1::AccrueRequest {
                request_id: id.to_owned(),
                member: Some(member),
                order_id: id.to_owned(),
                store_id: "BENCH".into(),
                channel: v1::Channel::Pos.into(),
                currency: "EUR".into(),
                lines,
                occurred_at: None,
                offer_codes: Vec::new(),
            };
        let started = Instant::now();
        let result: Result<(), tonic::Status> = match scenario {
            Scenario::Echo => health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ()),
            Scenario::Balance => points
                .get_balance(authed(
                    v1::GetBalanceRequest {
                        member: Some(member),
                    },
                    key,
                ))
                .await
                .map(|_| ()),
            Scenario::Statement => points
                .list_ledger_entries(authed(
                    v1::ListLedgerEntriesRequest {
                        member: Some(member),
                        page_size: 20,
                        page_token: String::new(),
                    },
                    key,
                ))
                .await
                .map(|_| ()),
            Scenario::Offers => offers
                .list_member_offers(authed(
                    v1::ListMemberOffersRequest {
                        member: Some(member),
                        channel: v1::Channel::Pos.into(),
                        page_size: 20,
                        page_token: String::new(),
                    },
                    key,
                ))
                .await
                .map(|_| ()),
            Scenario::Hold => hold_and_capture(&mut points, key, member, &id).await,
            Scenario::Accrue => points
                .accrue(authed(accrue(&id, basket(&mut rng), member), key))
                .await
                .map(|_| ()),
            Scenario::ShopDay => match pick {
                0..70 => {
                    let lines = basket(&mut rng);
                    let r = points
                        .accrue(authed(accrue(&id, lines.clone(), member), key))
                        .await
                        .map(|_| ());
                    if r.is_ok() {
                        my_orders.push((id.clone(), lines, program));
                    }
                    r
                }
                70..80 => {
                    let a = accrue(&id, basket(&mut rng), member);
                    points
                        .quote_accrual(authed(
                            v1::QuoteAccrualRequest {
                                member: a.member,
                                order_id: a.order_id,
                                store_id: a.store_id,
                                channel: a.channel,
                                currency: a.currency,
                                lines: a.lines,
                                occurred_at: None,
                                offer_codes: Vec::new(),
                            },
                            key,
                        ))
                        .await
                        .map(|_| ())
                }
                80..90 => points
                    .get_balance(authed(
                        v1::GetBalanceRequest {
                            member: Some(member),
                        },
                        key,
                    ))
                    .await
                    .map(|_| ()),
                90..95 => hold_and_capture(&mut points, key, member, &id).await,
                _ => match my_orders.pop() {
                    Some((order_id, lines, program)) => points
                        .return_items(authed(
                            v1::ReturnItemsRequest {
                                request_id: format!("{id}-r"),
                                order_id,
                                return_id: "r1".into(),
                                lines: lines
                                    .iter()
                                    .take(1)
                                    .map(|l| v1::ReturnLine {
                                        line_id: l.line_id.clone(),
                                        quantity: 1,
                                    })
                                    .collect(),
                            },
                            keys.get(program).map_or("", String::as_str),
                        ))
                        .await
                        .map(|_| ()),
                    None => points
                        .get_balance(authed(
                            v1::GetBalanceRequest {
                                member: Some(member),
                            },
                            key,
                        ))
                        .await
                        .map(|_| ()),
                },
            },
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let _ = out.latencies.record(micros.max(1));
        out.calls += 1;
        if let Err(status) = result {
            *out.errors
                .entry(format!("{:?}", status.code()))
                .or_default() += 1;
        }
    }
    out
}

async fn hold_and_capture(
    points: &mut PointsServiceClient<Channel>,
    key: &str,
    member: v1::MemberRef,
    id: &str,
) -> Result<(), tonic::Status> {
    let hold = points
        .create_hold(authed(
            v1::CreateHoldRequest {
                request_id: format!("{id}-h"),
                member: Some(member),
                points: 1,
                order_id: id.to_owned(),
                store_id: "BENCH".into(),
                ttl: None,
            },
            key,
        ))
        .await?
        .into_inner()
        .hold
        .ok_or_else(|| tonic::Status::internal("no hold"))?;
    points
        .capture_hold(authed(
            v1::CaptureHoldRequest {
                request_id: format!("{id}-c"),
                hold_id: hold.hold_id,
                points: 0,
            },
            key,
        ))
        .await
        .map(|_| ())
}

/// A tonic server with only the health service: the echo baseline.
async fn echo_server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    Ok(addr)
}

#[allow(clippy::too_many_arguments)]
async fn run(
    scenario: Scenario,
    addr: SocketAddr,
    key: String,
    concurrency: usize,
    connections: usize,
    seconds: u64,
    members: u64,
) -> anyhow::Result<()> {
    let target = if scenario == Scenario::Echo {
        echo_server().await?
    } else {
        addr
    };
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{target}"))?
                .connect()
                .await?,
        );
    }
    let key: Arc<Vec<String>> = Arc::new(key.split(',').map(str::to_owned).collect());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        tasks.spawn(caller(
            scenario,
            channels[worker % channels.len()].clone(),
            Arc::clone(&key),
            members.max(1),
            worker,
            deadline,
        ));
    }
    let mut total = Histogram::<u64>::new(3)?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut calls = 0;
    while let Some(out) = tasks.join_next().await {
        let out = out?;
        total.add(&out.latencies)?;
        calls += out.calls;
        for (code, n) in out.errors {
            *errors.entry(code).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |q: f64| total.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "scenario={scenario:?} concurrency={concurrency} connections={connections} seconds={elapsed:.1} calls={calls} \
         calls_per_sec={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2} errors={errors:?}",
        calls as f64 / elapsed,
        ms(0.50),
        ms(0.90),
        ms(0.99),
        total.max() as f64 / 1000.0,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Seed {
            database_url,
            members,
            history,
            lean_history,
        } => seed(&database_url, members, history, lean_history).await,
        Command::Run {
            scenario,
            addr,
            key,
            concurrency,
            connections,
            seconds,
            members,
        } => {
            run(
                scenario,
                addr,
                key,
                concurrency,
                connections,
                seconds,
                members,
            )
            .await
        }
    }
}
