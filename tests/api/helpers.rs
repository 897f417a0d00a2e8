//! `spawn_app`: one server per test, on port 0, with its own database.
use std::{net::SocketAddr, time::Duration};

use loyalty::{
    config::Settings,
    grpc::pb::loyalty::v1::{
        self as v1, member_service_client::MemberServiceClient,
        points_service_client::PointsServiceClient, program_service_client::ProgramServiceClient,
    },
    service::{JobRunner, ProgramContext},
    startup::Application,
    store::{Store, ledger},
};
use sea_orm::{ConnectionTrait, Database};
use secrecy::SecretString;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

/// Environment variable that switches the suite to PostgreSQL.
pub const PG_URL_VAR: &str = "LOYALTY_TEST_DATABASE_URL";

/// A database that exists for one test only.
pub enum TestDb {
    /// Holds the directory of the database file; deleted on drop.
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        admin_url: String,
        name: String,
    },
    /// Another server's database: left alone on drop.
    Borrowed,
}

impl TestDb {
    /// Creates the test's database. Panics when PostgreSQL was asked for and does not
    /// answer: a suite that silently fell back to SQLite would prove nothing.
    pub async fn create() -> (Self, String) {
        match std::env::var(PG_URL_VAR) {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("loyalty_test_{}", uuid::Uuid::now_v7().simple());
                let admin = Database::connect(&admin_url).await.unwrap_or_else(|e| {
                    panic!("{PG_URL_VAR} is set to {admin_url} but PostgreSQL does not answer: {e}")
                });
                admin
                    .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .expect("create test database");
                let url = with_database(&admin_url, &name);
                (Self::Postgres { admin_url, name }, url)
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("loyalty.db").display()
                );
                (Self::Sqlite(dir), url)
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Self::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime; a fresh thread may block on its own.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    if let Ok(admin) = Database::connect(&admin_url).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The admin URL with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Prometheus `/metrics`, when the settings turned it on.
    pub metrics_addr: Option<SocketAddr>,
    pub members: MemberServiceClient<Channel>,
    pub points: PointsServiceClient<Channel>,
    pub store: Store,
    /// The database URL, for a second server on the same database.
    pub url: String,
    /// The service the server runs, for driving its background jobs from a test.
    pub jobs: JobRunner,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    // Last: dropped after the server has stopped.
    _db: TestDb,
}

/// Settings of a test server on `url`; tweak before [`spawn_with`].
pub fn test_settings(url: &str) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = SecretString::from(url.to_owned());
    settings.server.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.server.health_check_interval_ms = 200;
    settings.server.shutdown_grace_secs = 5;
    // Tests drive the jobs themselves.
    settings.jobs.interval_secs = 0;
    // On loopback a server may run without keys; the security tests turn them on.
    settings.security.require_auth = false;
    settings
}

pub async fn spawn_app() -> TestApp {
    let (db, url) = TestDb::create().await;
    spawn_with(db, test_settings(&url)).await
}

/// A server whose settings `tweak` changes first.
pub async fn spawn_configured(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let (db, url) = TestDb::create().await;
    let mut settings = test_settings(&url);
    tweak(&mut settings);
    spawn_with(db, settings).await
}

pub async fn spawn_with(db: TestDb, settings: Settings) -> TestApp {
    // The servers' warnings, and which database wait ran out behind a MEMBER_BUSY, show
    // with a failing test's output (captured per test, printed only when it fails).
    static LOG: std::sync::Once = std::sync::Once::new();
    LOG.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "loyalty=warn,loyalty::error=info",
            ))
            .with_test_writer()
            .try_init();
    });
    let program = settings.program().expect("programme settings");
    let url = secrecy::ExposeSecret::expose_secret(&settings.database.url).to_owned();
    let app = Application::build(settings)
        .await
        .expect("build application");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let store = app.store().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to test server");
    TestApp {
        addr,
        metrics_addr,
        members: MemberServiceClient::new(channel.clone()),
        points: PointsServiceClient::new(channel),
        jobs: JobRunner::new(ProgramContext::new(store.clone(), program)),
        url,
        store,
        shutdown: Some(tx),
        server: Some(server),
        _db: db,
    }
}

impl TestApp {
    /// A second server (another replica) on this test's database.
    pub async fn sibling(&self) -> TestApp {
        spawn_with(TestDb::Borrowed, test_settings(&self.url)).await
    }

    pub async fn offers(&self) -> v1::offer_service_client::OfferServiceClient<Channel> {
        v1::offer_service_client::OfferServiceClient::new(self.channel().await)
    }

    pub async fn feedback(&self) -> v1::feedback_service_client::FeedbackServiceClient<Channel> {
        v1::feedback_service_client::FeedbackServiceClient::new(self.channel().await)
    }

    pub async fn events(&self) -> v1::event_service_client::EventServiceClient<Channel> {
        v1::event_service_client::EventServiceClient::new(self.channel().await)
    }

    pub async fn program(&self) -> ProgramServiceClient<Channel> {
        ProgramServiceClient::new(self.channel().await)
    }

    /// A fresh channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// Starts shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn wait_stopped(&mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(server) => server.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// The ledger invariant: every member's stored balance equals the sum of their entries.
    pub async fn assert_ledger_balanced(&self) {
        let mismatches = ledger::balance_mismatches(self.store.conn())
            .await
            .expect("check ledger");
        assert!(
            mismatches.is_empty(),
            "stored balances disagree with the ledger: {mismatches:?}"
        );
        // Every ledger entry was reported by exactly one balance event (same transaction).
        #[derive(sea_orm::FromQueryResult)]
        struct Count {
            n: i64,
        }
        let count = |sql: &'static str| async move {
            <Count as sea_orm::FromQueryResult>::find_by_statement(sea_orm::Statement::from_string(
                self.store.backend(),
                sql,
            ))
            .one(self.store.conn())
            .await
            .expect("count")
            .expect("row")
            .n
        };
        let entries = count("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM ledger_entries").await;
        let balance_events = count(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM events WHERE payload LIKE '{\"detail\":\"balance_change\"%'",
        )
        .await;
        assert_eq!(entries, balance_events, "ledger entries vs balance events");
    }

    pub async fn enroll(&self, card: &str) -> v1::Member {
        self.members
            .clone()
            .enroll_member(v1::EnrollMemberRequest {
                request_id: format!("enroll-{card}"),
                card_number: card.into(),
                name: "Test Member".into(),
                ..Default::default()
            })
            .await
            .expect("enroll")
            .into_inner()
            .member
            .expect("member")
    }

    pub async fn balance(&self, card: &str) -> v1::Balance {
        self.points
            .clone()
            .get_balance(v1::GetBalanceRequest {
                member: Some(by_card(card)),
            })
            .await
            .expect("balance")
            .into_inner()
            .balance
            .expect("balance")
    }

    pub async fn statement(&self, card: &str) -> Vec<v1::LedgerEntry> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .points
                .clone()
                .list_ledger_entries(v1::ListLedgerEntriesRequest {
                    member: Some(by_card(card)),
                    page_size: 500,
                    page_token: token,
                })
                .await
                .expect("statement")
                .into_inner();
            all.extend(page.entries);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

pub fn by_card(card: &str) -> v1::MemberRef {
    v1::MemberRef {
        r#ref: Some(v1::member_ref::Ref::CardNumber(card.into())),
    }
}

pub fn by_id(id: &str) -> v1::MemberRef {
    v1::MemberRef {
        r#ref: Some(v1::member_ref::Ref::MemberId(id.into())),
    }
}

pub fn line(
    id: &str,
    sku: &str,
    quantity: i64,
    unit_price_minor: i64,
    discount_minor: i64,
) -> v1::BasketLine {
    v1::BasketLine {
        line_id: id.into(),
        sku: sku.into(),
        category: String::new(),
        quantity,
        unit_price_minor,
        discount_minor,
    }
}

/// An accrual of `lines` for the card's member in order `order_id`.
pub fn accrual(
    request_id: &str,
    card: &str,
    order_id: &str,
    lines: Vec<v1::BasketLine>,
) -> v1::AccrueRequest {
    v1::AccrueRequest {
        request_id: request_id.into(),
        member: Some(by_card(card)),
        order_id: order_id.into(),
        store_id: "store-1".into(),
        channel: v1::Channel::Pos.into(),
        currency: "EUR".into(),
        lines,
        occurred_at: None,
        offer_codes: Vec::new(),
    }
}

/// Executes SQL against the test's database: only to move time-based state into the
/// past (expiry dates, return windows), which a test cannot wait for.
/// The quote of what `request` would accrue.
pub fn quote_of(request: &v1::AccrueRequest) -> v1::QuoteAccrualRequest {
    v1::QuoteAccrualRequest {
        member: request.member.clone(),
        order_id: request.order_id.clone(),
        store_id: request.store_id.clone(),
        channel: request.channel,
        currency: request.currency.clone(),
        lines: request.lines.clone(),
        occurred_at: request.occurred_at,
        offer_codes: request.offer_codes.clone(),
    }
}

pub async fn backdate(app: &TestApp, sql: &str) {
    sea_orm::ConnectionTrait::execute_unprepared(app.store.conn(), sql)
        .await
        .expect("backdate");
}

/// Sets a timestamp column to `at` where `filter` holds (bound as a parameter, so each
/// database stores it in its own format): for state a test cannot wait for.
pub async fn set_time(
    app: &TestApp,
    table: &str,
    column: &str,
    filter: &str,
    at: chrono::DateTime<chrono::Utc>,
) {
    let placeholder = if app.store.backend() == sea_orm::DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    app.store
        .conn()
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            app.store.backend(),
            format!("UPDATE {table} SET {column} = {placeholder} WHERE {filter}"),
            [at.into()],
        ))
        .await
        .expect("set time");
}

/// Asserts the status code and the `ErrorInfo.reason`.
pub fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "unexpected status: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason);
    assert_eq!(info.domain, "loyalty");
}

/// The fields named by the `BadRequest` details, sorted.
pub fn violated_fields(status: &Status) -> Vec<String> {
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "unexpected status: {status:?}"
    );
    let bad = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    let mut fields: Vec<String> = bad.field_violations.into_iter().map(|v| v.field).collect();
    fields.sort();
    fields
}

/// A new API client of `role` (scoped to `stores`), written as `loyalty clients create`
/// would; returns its key.
pub async fn client(
    app: &TestApp,
    name: &str,
    role: loyalty::auth::Role,
    stores: &[&str],
) -> String {
    client_in(app, "default", name, role, stores).await
}

/// [`client`] of the programme `program`.
pub async fn client_in(
    app: &TestApp,
    program: &str,
    name: &str,
    role: loyalty::auth::Role,
    stores: &[&str],
) -> String {
    use loyalty::{auth, store::clients};
    let key = auth::new_key();
    clients::insert(
        app.store.conn(),
        clients::ClientRow {
            id: uuid::Uuid::now_v7().to_string(),
            program_id: program.into(),
            name: name.into(),
            role: role.as_str().into(),
            stores: stores.join(","),
            key_prefix: auth::key_prefix(&key),
            key_hash: auth::key_hash(&key),
            created_at: loyalty::store::wall_now(),
            revoked_at: None,
        },
    )
    .await
    .expect("client");
    key
}

/// `message` with `authorization: Bearer key`.
pub fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    request
}

/// Every method of every service in the API, from the descriptors the server serves.
pub fn all_methods() -> Vec<String> {
    use prost::Message;
    let fds = prost_types::FileDescriptorSet::decode(loyalty::grpc::FILE_DESCRIPTOR_SET)
        .expect("descriptors");
    let mut methods = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == "loyalty.v1") {
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("/loyalty.v1.{}/{}", service.name(), method.name()));
            }
        }
    }
    methods.sort();
    methods
}

/// Enrols `card` with the key of a client that may.
pub async fn enroll_as(app: &TestApp, key: &str, card: &str) {
    app.members
        .clone()
        .enroll_member(with_key(
            v1::EnrollMemberRequest {
                request_id: format!("enrol-{card}"),
                card_number: card.into(),
                name: "Ada".into(),
                ..Default::default()
            },
            key,
        ))
        .await
        .expect("enrol");
}

/// A port free on loopback now, for a server started outside this process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
