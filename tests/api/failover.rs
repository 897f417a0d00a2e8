//! PostgreSQL failover: the test makes its own primary and synchronous standby clusters
//! (`pg_createcluster`, `pg_basebackup -R`; the machine's main cluster is never
//! touched), puts a TCP proxy in front (standing in for the Service or DNS name a
//! failover moves), and under retrying tills either crashes the primary or freezes its
//! connections (a lost node: they neither answer nor close), promotes the standby and
//! moves the proxy. Every acknowledged accrual is there exactly once, callers see only
//! OK, UNAVAILABLE or their own deadline, calls succeed again within 5 s without
//! restarting the service, and health follows.
use std::{
    collections::HashMap,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use loyalty::grpc::pb::loyalty::v1::points_service_client::PointsServiceClient;
use sea_orm::{ConnectionTrait, Statement};
use tokio::{net::TcpListener, sync::watch};
use tonic::Code;

use crate::helpers::{
    PG_URL_VAR, TestApp, TestDb, accrual, free_port, line, spawn_with, test_settings,
};

fn run(what: &str, cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The installed PostgreSQL major version (`/etc/postgresql/<version>`).
fn version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("PostgreSQL's cluster tools (postgresql-common) are required")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a PostgreSQL version")
}

/// A cluster of this test's own, dropped (stopped and deleted) with it.
struct Cluster {
    version: String,
    name: String,
    port: u16,
}

impl Cluster {
    fn create(name: String, port: u16) -> Self {
        let version = version();
        run(
            "pg_createcluster",
            Command::new("pg_createcluster")
                .args([&version, &name, "-p", &port.to_string()])
                .args(["--", "--auth=trust"]),
        );
        Self {
            version,
            name,
            port,
        }
    }

    fn ctl(&self, action: &[&str]) {
        run(
            &format!("pg_ctlcluster {action:?}"),
            Command::new("pg_ctlcluster")
                .args([&self.version, &self.name])
                .args(action),
        );
    }

    fn data_dir(&self) -> String {
        format!("/var/lib/postgresql/{}/{}", self.version, self.name)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", &self.version, &self.name])
            .output();
    }
}

/// A primary with a synchronous standby, and a database for the service.
fn primary_and_standby(tag: &str) -> (Cluster, Cluster) {
    let unique = format!("{}_{}", std::process::id(), tag);
    let primary = Cluster::create(format!("loyalty_failover_p_{unique}"), free_port());
    primary.ctl(&["start"]);
    let standby = Cluster::create(format!("loyalty_failover_s_{unique}"), free_port());
    let data = standby.data_dir();
    // Emptied, not removed: the directory belongs to the postgres user.
    for entry in std::fs::read_dir(&data).expect("the standby's data") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("clear the standby's data");
        } else {
            std::fs::remove_file(&path).expect("clear the standby's data");
        }
    }
    run(
        "pg_basebackup",
        Command::new("runuser").args([
            "-u",
            "postgres",
            "--",
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
            "-D",
            &data,
            "-R",
            "-X",
            "stream",
        ]),
    );
    standby.ctl(&["start"]);
    (primary, standby)
}

/// A primary whose commits wait for its standby, with the service's database.
async fn synchronous_pair(tag: &str) -> (Cluster, Cluster) {
    let (primary, standby) = primary_and_standby(tag);
    let admin = primary.url("postgres");
    sql(&admin, "CREATE DATABASE loyalty").await;
    sql(&admin, "ALTER SYSTEM SET synchronous_standby_names = '*'").await;
    sql(&admin, "SELECT pg_reload_conf()").await;
    (primary, standby)
}

async fn sql(url: &str, statement: &str) {
    let db = sea_orm::Database::connect(url).await.expect("connect");
    db.execute_unprepared(statement).await.expect(statement);
}

/// What the proxy does with the connections it carries when it is moved.
#[derive(Clone, Copy, PartialEq)]
enum Cut {
    /// Close them, as a crashed server's kernel does.
    Close,
    /// Keep them open and carry nothing more: a lost node or a partition.
    Freeze,
}

/// A TCP proxy to `target`; each move cuts the connections it carried.
struct Proxy {
    port: u16,
    target: Arc<AtomicU16>,
    moved: watch::Sender<Option<Cut>>,
}

impl Proxy {
    async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let target = Arc::new(AtomicU16::new(target));
        let (moved, _) = watch::channel(None);
        let (to, cuts) = (Arc::clone(&target), moved.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let to = to.load(Ordering::SeqCst);
                let mut cut = cuts.subscribe();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {
                            if *cut.borrow() == Some(Cut::Freeze) {
                                // Hold both ends open, silent, until the test ends.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            port,
            target,
            moved,
        }
    }

    /// Cuts what the proxy carried now (`cut`), and points new connections at `to`.
    fn cut(&self, cut: Cut) {
        let _ = self.moved.send(Some(cut));
    }

    fn point_at(&self, to: u16) {
        self.target.store(to, Ordering::SeqCst);
    }
}

async fn health(app: &TestApp) -> i32 {
    let mut h = tonic_health::pb::health_client::HealthClient::new(app.channel().await);
    match tokio::time::timeout(
        Duration::from_secs(1),
        h.check(tonic_health::pb::HealthCheckRequest::default()),
    )
    .await
    {
        Ok(Ok(r)) => r.into_inner().status,
        _ => -1,
    }
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {within:?}");
}

/// What the tills saw: acknowledged orders with their points, every code seen, and
/// when each call was answered OK.
#[derive(Default)]
struct Seen {
    acknowledged: HashMap<String, i64>,
    codes: Vec<Code>,
    oks: Vec<Instant>,
}

async fn tills(app: &TestApp, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut tasks = Vec::new();
    for till in 0..4 {
        let points = PointsServiceClient::new(app.channel().await);
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        tasks.push(tokio::spawn(async move {
            let card = format!("FAIL-{till}");
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let order = format!("{card}-o{n}");
                // The till retries the same request until it is answered.
                loop {
                    let mut points = points.clone();
                    let request = accrual(
                        &format!("{card}-a{n}"),
                        &card,
                        &order,
                        vec![line("1", "SKU", 1, 500, 0)],
                    );
                    let result =
                        tokio::time::timeout(Duration::from_secs(3), points.accrue(request)).await;
                    let answered = {
                        let mut seen = seen.lock().expect("seen");
                        match result {
                            Ok(Ok(r)) => {
                                seen.acknowledged
                                    .insert(order.clone(), r.into_inner().points_earned);
                                seen.oks.push(Instant::now());
                                true
                            }
                            Ok(Err(status)) => {
                                seen.codes.push(status.code());
                                false
                            }
                            // The till's own deadline.
                            Err(_) => {
                                seen.codes.push(Code::DeadlineExceeded);
                                false
                            }
                        }
                    };
                    if answered {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("till");
    }
}

async fn fail_over(cut: Cut) {
    if std::env::var(PG_URL_VAR).is_err() {
        // A PostgreSQL failover: the SQLite run has nothing to fail over.
        return;
    }
    let tag = if cut == Cut::Close { "crash" } else { "freeze" };
    let (primary, standby) = synchronous_pair(tag).await;
    let proxy = Proxy::start(primary.port).await;
    let mut settings = test_settings(&format!(
        "postgres://postgres@127.0.0.1:{}/loyalty",
        proxy.port
    ));
    settings.server.request_timeout_ms = 3_000;
    settings.database.acquire_timeout_ms = 1_000;
    settings.database.statement_timeout_ms = 2_000;
    let app = spawn_with(TestDb::Borrowed, settings).await;
    for till in 0..4 {
        app.enroll(&format!("FAIL-{till}")).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let traffic = {
        let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
        let app = &app;
        async move { tills(app, stop, seen).await }
    };
    let failover = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Frozen first, so the primary's end closing reaches nobody: the service's
        // connections stay open and silent.
        if cut == Cut::Freeze {
            proxy.cut(Cut::Freeze);
        }
        primary.ctl(&["stop", "-m", "immediate"]);
        wait_for("health NOT_SERVING", Duration::from_secs(5), async || {
            health(&app).await != 1
        })
        .await;
        standby.ctl(&["promote"]);
        let promoted = standby.url("postgres");
        wait_for("promotion", Duration::from_secs(10), async || {
            let Ok(db) = sea_orm::Database::connect(&promoted).await else {
                return false;
            };
            let row = db
                .query_one_raw(Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    "SELECT pg_is_in_recovery() AS r",
                ))
                .await
                .ok()
                .flatten();
            row.is_some_and(|r| !r.try_get::<bool>("", "r").unwrap_or(true))
        })
        .await;
        proxy.point_at(standby.port);
        if cut == Cut::Close {
            proxy.cut(Cut::Close);
        }
        let moved = Instant::now();
        wait_for("health SERVING", Duration::from_secs(5), async || {
            health(&app).await == 1
        })
        .await;
        wait_for(
            "an accrual after the move",
            Duration::from_secs(5),
            async || seen.lock().expect("seen").oks.iter().any(|at| *at > moved),
        )
        .await;
        let recovered = seen
            .lock()
            .expect("seen")
            .oks
            .iter()
            .find(|at| **at > moved)
            .map(|at| at.duration_since(moved));
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        recovered
    };
    let ((), recovered) = tokio::join!(traffic, failover);
    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    eprintln!(
        "failover ({tag}): {} accruals acknowledged, first OK {recovered:?} after the move, codes seen {:?}",
        seen.acknowledged.len(),
        seen.codes
            .iter()
            .fold(HashMap::<String, usize>::new(), |mut m, c| {
                *m.entry(format!("{c:?}")).or_default() += 1;
                m
            })
    );
    for code in &seen.codes {
        assert!(
            matches!(code, Code::Unavailable | Code::DeadlineExceeded),
            "a caller saw {code:?}"
        );
    }
    // Every acknowledged accrual is in the promoted database exactly once.
    let db = sea_orm::Database::connect(&standby.url("loyalty"))
        .await
        .expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT order_id, CAST(COUNT(*) AS BIGINT) AS n, CAST(SUM(points + pending_delta) AS BIGINT) AS p \
             FROM ledger_entries WHERE kind = 'ACCRUAL' GROUP BY order_id",
        ))
        .await
        .expect("entries");
    let mut stored = HashMap::new();
    for row in rows {
        let order: String = row.try_get("", "order_id").expect("order");
        let n: i64 = row.try_get("", "n").expect("n");
        assert_eq!(n, 1, "order {order} accrued {n} times");
        stored.insert(order, row.try_get::<i64>("", "p").expect("p"));
    }
    for (order, points) in &seen.acknowledged {
        assert_eq!(
            stored.get(order),
            Some(points),
            "acknowledged {order} is missing"
        );
    }
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_primary_fails_over_to_its_synchronous_standby() {
    fail_over(Cut::Close).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_gone_silent_fails_over_to_its_synchronous_standby() {
    fail_over(Cut::Freeze).await;
}

/// A primary whose synchronous standby is gone cannot commit: health says NOT_SERVING
/// while it waits, and SERVING again once the standby is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_without_its_synchronous_standby_is_not_serving() {
    if std::env::var(PG_URL_VAR).is_err() {
        return;
    }
    let (primary, standby) = synchronous_pair("nostandby").await;
    let mut settings = test_settings(&primary.url("loyalty"));
    settings.database.acquire_timeout_ms = 1_000;
    let app = spawn_with(TestDb::Borrowed, settings).await;
    wait_for("health SERVING", Duration::from_secs(5), async || {
        health(&app).await == 1
    })
    .await;
    standby.ctl(&["stop", "-m", "immediate"]);
    wait_for("health NOT_SERVING", Duration::from_secs(10), async || {
        health(&app).await != 1
    })
    .await;
    standby.ctl(&["start"]);
    wait_for(
        "health SERVING again",
        Duration::from_secs(15),
        async || health(&app).await == 1,
    )
    .await;
    drop(app);
}
