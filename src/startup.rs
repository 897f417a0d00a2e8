//! Builds the server from settings and runs it until a shutdown signal.
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::{
    server::NamedService,
    transport::server::TcpIncoming,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower_http::{classify::GrpcFailureClass, trace::TraceLayer};

use crate::{
    auth::Caller,
    config::Settings,
    domain::ProgramId,
    error::AppError,
    grpc::{
        AuditApi, EventApi, FILE_DESCRIPTOR_SET, FeedbackApi, MemberApi, OfferApi, PointsApi,
        ProgramApi, RewardApi,
        middleware::{Guard, GuardLayer},
        pb::loyalty::v1::{
            audit_service_server::AuditServiceServer, event_service_server::EventServiceServer,
            feedback_service_server::FeedbackServiceServer,
            member_service_server::MemberServiceServer, offer_service_server::OfferServiceServer,
            points_service_server::PointsServiceServer,
            program_service_server::ProgramServiceServer,
            reward_service_server::RewardServiceServer,
        },
    },
    service::{
        AccrualService, BalanceService, JobRunner, MemberService, ProgramAdmin, ProgramContext,
        ReturnService, SpendingService,
        accrual::{AccrualQueue, start_batching},
        balances::{BalanceReads, shared_balance_reads},
        events::EventService,
        feedback::FeedbackService,
        offers::OfferService,
        programs::ProgramCatalog,
        rewards::RewardService,
    },
    store::Store,
};

/// Names of the services whose health is reported, besides the server as a whole ("").
const SERVICES: &[&str] = &[
    <MemberServiceServer<MemberApi> as NamedService>::NAME,
    <PointsServiceServer<PointsApi> as NamedService>::NAME,
    <RewardServiceServer<RewardApi> as NamedService>::NAME,
    <ProgramServiceServer<ProgramApi> as NamedService>::NAME,
    <OfferServiceServer<OfferApi> as NamedService>::NAME,
    <AuditServiceServer<AuditApi> as NamedService>::NAME,
    <FeedbackServiceServer<FeedbackApi> as NamedService>::NAME,
    <EventServiceServer<EventApi> as NamedService>::NAME,
];

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    /// Prometheus `/metrics`, when `telemetry.metrics_listen_addr` is set.
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    store: Store,
    settings: Settings,
}

impl Application {
    /// Connects to the database (migrating it if configured) and binds the listener;
    /// port 0 binds a free port, see [`Application::local_addr`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.program()?;
        let store = Store::connect(&settings.database)
            .await
            .context("cannot connect to the database (database.url)")?;
        if settings.database.migrate_on_start {
            store.migrate().await.context("cannot apply migrations")?;
        }
        let listener = TcpListener::bind(settings.server.listen_addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (server.listen_addr)",
                    settings.server.listen_addr
                )
            })?;
        let addr = listener.local_addr()?;
        let metrics_listener = match settings.telemetry.metrics_listen_addr {
            Some(at) => {
                let l = TcpListener::bind(at).await.with_context(|| {
                    format!("cannot listen on {at} (telemetry.metrics_listen_addr)")
                })?;
                let bound = l.local_addr()?;
                Some((l, bound))
            }
            None => None,
        };
        Ok(Self {
            listener,
            addr,
            metrics_listener,
            store,
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, a)| *a)
    }

    /// The database the server uses.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes; then reports NOT_SERVING, stops accepting calls
    /// and lets in-flight calls finish for up to `server.shutdown_grace_secs`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let telemetry = &self.settings.telemetry;
        let metrics = if self.metrics_listener.is_some() || !telemetry.otlp_endpoint.is_empty() {
            Some(crate::metrics::Metrics::new(telemetry)?)
        } else {
            None
        };
        self.settings.program()?;
        let programs = Programs::new(&self.store, &self.settings, metrics.clone());
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let draining = Arc::new(AtomicBool::new(false));
        set_health(&reporter, ServingStatus::Serving).await;
        let stop_metrics = spawn_background(
            &programs,
            &self.store,
            metrics.clone(),
            &self.settings,
            self.metrics_listener,
            &draining,
            &reporter,
        );

        let grace = Duration::from_secs(self.settings.server.shutdown_grace_secs);
        let (signal, drained_rx) = drain_on(shutdown, &reporter, &draining, programs.events());
        let builder = server_builder(&self.settings, self.addr)?;
        let trace = TraceLayer::new_for_grpc()
            .make_span_with(|req: &http::Request<_>| {
                // Probes call health every few seconds; keep them out of logs and traces.
                if req.uri().path().starts_with("/grpc.health.v1.") {
                    tracing::Span::none()
                } else {
                    crate::telemetry::call_span(req)
                }
            })
            .on_failure(log_failure);
        // Outermost first: metrics, trace, guard (key, policy, rate, audit), faults
        // (deadline, decode errors); the FaultLayer keeps the deadline.
        let layers = tower::ServiceBuilder::new()
            .option_layer(metrics.clone().map(crate::grpc::observe::MetricsLayer))
            .layer(trace)
            .layer(GuardLayer(Guard::new(
                self.store.clone(),
                &self.settings.security,
            )))
            .layer(crate::grpc::faults::FaultLayer {
                timeout: Duration::from_millis(self.settings.server.request_timeout_ms),
            })
            .layer(ProgramRouting(programs))
            .into_inner();
        let routes = shared_routes(health_service)?;
        tracing::info!(addr = %self.addr, backend = ?self.store.backend(), "serving gRPC");
        let serve = builder
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(
                // Nagle off: otherwise a response written in more than one piece waits
                // for the caller's delayed ACK (40 ms measured on statement pages).
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                signal,
            );
        tokio::select! {
            result = serve => result.context("server failed")?,
            () = async {
                let _ = drained_rx.await;
                tokio::time::sleep(grace).await;
            } => tracing::warn!(?grace, "grace period over; stopping with calls still in flight"),
        }
        let _ = stop_metrics.send(());
        if let Some(metrics) = metrics {
            metrics.shutdown();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Every use case of the service, wired to the store, the programme and each other:
/// what the gRPC handlers and the background tasks run on.
#[derive(Clone)]
pub struct ServiceGraph {
    pub store: Store,
    /// The programme every use case runs on.
    pub context: ProgramContext,
    pub accrual: AccrualService,
    pub balances: BalanceService,
    pub spending: SpendingService,
    pub returns: ReturnService,
    pub program: ProgramAdmin,
    pub jobs: JobRunner,
    pub members: MemberService,
    pub offers: OfferService,
    pub feedback: FeedbackService,
    pub rewards: RewardService,
    pub events: EventService,
    pub catalog: ProgramCatalog,
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The shutdown signal the server drains on: once `shutdown` fires, health turns
/// NOT_SERVING, open event streams end (so watchers do not hold the drain up), and the
/// returned receiver hears that the drain began (the grace period starts then).
fn drain_on(
    shutdown: impl Future<Output = ()> + Send + 'static,
    reporter: &HealthReporter,
    draining: &Arc<AtomicBool>,
    events: &EventService,
) -> (
    impl Future<Output = ()> + Send + 'static,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let reporter = reporter.clone();
    let draining = Arc::clone(draining);
    let events = events.clone();
    let signal = async move {
        shutdown.await;
        draining.store(true, Ordering::SeqCst);
        events.close();
        set_health(&reporter, ServingStatus::NotServing).await;
        tracing::info!("shutting down: health is NOT_SERVING, finishing in-flight calls");
        let _ = drained_tx.send(());
    };
    (signal, drained_rx)
}

/// Builds the service graph of the configured default programme over an open store,
/// without binding a socket (the accrual and read batch workers start on the current
/// runtime).
pub fn build(
    store: Store,
    settings: &Settings,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> anyhow::Result<ServiceGraph> {
    let relay_every = Duration::from_millis(settings.events.relay_interval_ms.max(10));
    let events = EventService::new(store.clone(), relay_every);
    let catalog = catalog_of(&store, settings);
    let context = ProgramContext::new(store, settings.program()?);
    Ok(build_program(
        context, settings, metrics, &events, catalog, None,
    ))
}

fn catalog_of(store: &Store, settings: &Settings) -> ProgramCatalog {
    ProgramCatalog::new(
        store.clone(),
        settings.program.clone(),
        settings.event_retention(),
    )
}

/// One programme's service graph over its context (whose store is scoped to it); its
/// event streams share the wake-ups and shutdown of `events`.
fn build_program(
    context: ProgramContext,
    settings: &Settings,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    events: &EventService,
    catalog: ProgramCatalog,
    shared: Option<Shared>,
) -> ServiceGraph {
    let store = context.store().clone();
    let database = &settings.database;
    let context = context.with_metrics(metrics.clone());
    let (accrual, balances) = match shared {
        Some(shared) => (
            AccrualService::new(context.clone()).with_shared_batching(shared.accruals),
            BalanceService::new(store.clone()).with_shared_reads(shared.balances),
        ),
        None => (
            AccrualService::new(context.clone()).with_batching(
                database.accrual_batch_workers,
                database.accrual_batch_max,
                Duration::from_micros(database.accrual_batch_linger_us),
            ),
            BalanceService::new(store.clone()).with_read_batching(
                database.read_batch_workers,
                database.read_batch_max,
                metrics.clone(),
            ),
        ),
    };
    let offers = OfferService::new(store.clone(), context.clone()).with_read_batching(
        database.read_batch_workers,
        database.read_batch_max,
        metrics.clone(),
    );
    ServiceGraph {
        members: MemberService::new(store.clone()),
        feedback: FeedbackService::new(store.clone(), context.clone()),
        rewards: RewardService::new(store.clone()),
        events: events.for_program(store.clone()),
        catalog,
        offers,
        accrual,
        balances,
        spending: SpendingService::new(context.clone()),
        returns: ReturnService::new(context.clone()),
        program: ProgramAdmin::new(context.clone()),
        jobs: JobRunner::new(context.clone()),
        context,
        metrics,
        store,
    }
}

/// The batching all programmes of a replica share, so that several programmes' calls
/// share transactions and statements as one programme's do.
#[derive(Clone)]
struct Shared {
    balances: BalanceReads,
    accruals: Option<AccrualQueue>,
}

/// What serves one programme on this replica.
#[derive(Clone)]
struct Served {
    graph: ServiceGraph,
    routes: tonic::service::Routes,
}

/// The programmes this replica serves: a service graph and its gRPC routes per
/// programme, built on the first call that acts in it (programmes are few; their
/// settings are fixed once created, and their rules are read per call).
#[derive(Clone)]
pub struct Programs(Arc<ProgramsInner>);

struct ProgramsInner {
    catalog: ProgramCatalog,
    settings: Settings,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The unscoped event service: the relay, and the wake-ups every stream shares.
    events: EventService,
    /// The batching every programme shares.
    shared: Shared,
    served: std::sync::RwLock<HashMap<ProgramId, Served>>,
    /// One build at a time, so two first calls do not build a programme twice.
    building: tokio::sync::Mutex<()>,
}

impl Programs {
    pub fn new(
        store: &Store,
        settings: &Settings,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Self {
        let relay_every = Duration::from_millis(settings.events.relay_interval_ms.max(10));
        let database = &settings.database;
        let shared = Shared {
            balances: shared_balance_reads(
                store,
                database.read_batch_workers,
                database.read_batch_max,
                metrics.as_deref(),
            ),
            accruals: start_batching(
                store,
                database.accrual_batch_workers,
                database.accrual_batch_max,
                Duration::from_micros(database.accrual_batch_linger_us),
            ),
        };
        Self(Arc::new(ProgramsInner {
            catalog: catalog_of(store, settings),
            settings: settings.clone(),
            metrics,
            events: EventService::new(store.clone(), relay_every),
            shared,
            served: std::sync::RwLock::default(),
            building: tokio::sync::Mutex::new(()),
        }))
    }

    fn cached(&self, id: &ProgramId) -> Option<Served> {
        self.0.served.read().ok()?.get(id).cloned()
    }

    async fn served(&self, id: &ProgramId) -> Result<Served, AppError> {
        if let Some(served) = self.cached(id) {
            return Ok(served);
        }
        let _building = self.0.building.lock().await;
        if let Some(served) = self.cached(id) {
            return Ok(served);
        }
        let context = self.0.catalog.context(id).await?;
        let graph = build_program(
            context,
            &self.0.settings,
            self.0.metrics.clone(),
            &self.0.events,
            self.0.catalog.clone(),
            Some(self.0.shared.clone()),
        );
        let routes = api_routes(graph.clone(), &self.0.settings);
        let served = Served { graph, routes };
        if let Ok(mut map) = self.0.served.write() {
            map.insert(id.clone(), served.clone());
        }
        tracing::info!(program_id = %id, "serving programme");
        Ok(served)
    }

    /// The service graph of a programme (NOT_FOUND when there is no such programme).
    pub async fn graph(&self, id: &ProgramId) -> Result<ServiceGraph, AppError> {
        Ok(self.served(id).await?.graph)
    }

    /// Every programme of the deployment.
    pub async fn ids(&self) -> Result<Vec<ProgramId>, AppError> {
        self.0
            .catalog
            .list()
            .await?
            .into_iter()
            .map(|p| {
                ProgramId::parse(&p.program_id)
                    .map_err(|e| AppError::Internal(anyhow::anyhow!("programme id: {e}")))
            })
            .collect()
    }

    /// The event service the relay runs on and shutdown closes.
    pub fn events(&self) -> &EventService {
        &self.0.events
    }
}

/// The tower layer that hands each API call to the routes of the programme it acts in
/// (the [`Caller`] the guard put in the request); health and reflection go to the
/// shared routes it wraps.
#[derive(Clone)]
pub struct ProgramRouting(pub Programs);

impl<S> tower::Layer<S> for ProgramRouting {
    type Service = Routed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Routed {
            inner,
            programs: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Routed<S> {
    inner: S,
    programs: Programs,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Routed<S>
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        use tower::ServiceExt;
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let programs = self.programs.clone();
        Box::pin(async move {
            if !request.uri().path().starts_with("/loyalty.v1.") {
                return inner.oneshot(request).await;
            }
            let program = request
                .extensions()
                .get::<Caller>()
                .map_or_else(ProgramId::default_program, |c| c.program.clone());
            match programs.served(&program).await {
                Ok(served) => match served.routes.oneshot(request).await {
                    Ok(response) => Ok(response),
                    Err(never) => match never {},
                },
                Err(e) => Ok(tonic::Status::from(e).into_http()),
            }
        })
    }
}

/// Starts the health watch, the jobs, the event relay and the metrics endpoint; the
/// returned sender stops the metrics endpoint.
fn spawn_background(
    programs: &Programs,
    store: &Store,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    settings: &Settings,
    metrics_listener: Option<(TcpListener, SocketAddr)>,
    draining: &Arc<AtomicBool>,
    reporter: &HealthReporter,
) -> tokio::sync::oneshot::Sender<()> {
    tokio::spawn(watch_database(
        store.clone(),
        reporter.clone(),
        Arc::clone(draining),
        Duration::from_millis(settings.server.health_check_interval_ms.max(100)),
    ));
    if settings.jobs.interval_secs > 0 {
        tokio::spawn(run_jobs(
            programs.clone(),
            metrics.clone(),
            Duration::from_secs(settings.jobs.interval_secs),
            settings.jobs.batch_size,
            Arc::clone(draining),
        ));
    }
    let relay_every = Duration::from_millis(settings.events.relay_interval_ms.max(10));
    tokio::spawn(run_relay(
        programs.events().clone(),
        relay_every,
        Arc::clone(draining),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    if let (Some((listener, at)), Some(metrics)) = (metrics_listener, metrics) {
        tracing::info!(addr = %at, "serving Prometheus metrics on /metrics");
        let store = store.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = stop_rx.await;
            };
            if let Err(e) = crate::metrics::serve(listener, metrics, store, stop).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    stop_tx
}

/// The server with TLS as configured; says whether authentication is on.
fn server_builder(settings: &Settings, addr: SocketAddr) -> anyhow::Result<Server> {
    let security = &settings.security;
    if security.require_auth {
        tracing::info!(
            "authentication is on: every call needs an API key (loyalty clients create)"
        );
    } else {
        tracing::warn!(
            addr = %addr,
            "AUTHENTICATION IS OFF: every caller is an administrator. This is allowed only on a \
             loopback address; set security.require_auth = true before exposing the service"
        );
    }
    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&security.tls_cert_file, &security.tls_key_file) {
        let read = |p: &std::path::Path, key: &str| {
            std::fs::read(p).with_context(|| format!("cannot read {} ({key})", p.display()))
        };
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            read(cert, "security.tls_cert_file")?,
            read(key, "security.tls_key_file")?,
        ));
        if let Some(ca) = &security.tls_client_ca_file {
            tls = tls.client_ca_root(Certificate::from_pem(read(
                ca,
                "security.tls_client_ca_file",
            )?));
        }
        builder = builder
            .tls_config(tls)
            .context("invalid TLS configuration (security.tls_*)")?;
        tracing::info!(mtls = security.tls_client_ca_file.is_some(), "serving TLS");
    }
    Ok(builder)
}

/// Reflection (v1 and v1alpha, for grpcurl 1.8) over every served descriptor.
fn reflection() -> anyhow::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// The services every programme shares: health and reflection.
fn shared_routes(
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
) -> anyhow::Result<tonic::service::Routes> {
    let (reflection_v1, reflection_v1alpha) = reflection()?;
    Ok(tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

/// The API of one programme: audit and the loyalty services over its service graph.
fn api_routes(graph: ServiceGraph, settings: &Settings) -> tonic::service::Routes {
    let max = settings.server.max_request_bytes;
    let ServiceGraph {
        store,
        context: _,
        accrual,
        balances,
        spending,
        returns,
        program,
        jobs: _,
        members,
        offers,
        feedback,
        rewards,
        events,
        catalog,
        metrics: _,
    } = graph;
    tonic::service::Routes::new(AuditServiceServer::new(AuditApi::new(store)))
        .add_service(
            MemberServiceServer::new(MemberApi::new(members)).max_decoding_message_size(max),
        )
        .add_service(
            ProgramServiceServer::new(ProgramApi::new(program, catalog))
                .max_decoding_message_size(max),
        )
        .add_service(OfferServiceServer::new(OfferApi::new(offers)).max_decoding_message_size(max))
        .add_service(
            FeedbackServiceServer::new(FeedbackApi::new(feedback)).max_decoding_message_size(max),
        )
        .add_service(EventServiceServer::new(EventApi::new(events)))
        .add_service(
            PointsServiceServer::new(PointsApi::new(accrual, balances, spending, returns))
                .max_decoding_message_size(max),
        )
        .add_service(
            RewardServiceServer::new(RewardApi::new(rewards)).max_decoding_message_size(max),
        )
}

/// Server-side faults are warnings; a caller's mistake (NOT_FOUND, INVALID_ARGUMENT…) is
/// the caller's business and is logged at debug level only.
fn log_failure(class: GrpcFailureClass, latency: Duration, _span: &tracing::Span) {
    match class {
        // UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS
        GrpcFailureClass::Code(code) if matches!(code.get(), 2 | 4 | 13 | 14 | 15) => {
            tracing::warn!(
                grpc_code = code.get(),
                latency_ms = latency.as_millis(),
                "call failed"
            );
        }
        GrpcFailureClass::Code(code) => {
            tracing::debug!(
                grpc_code = code.get(),
                latency_ms = latency.as_millis(),
                "call rejected"
            );
        }
        GrpcFailureClass::Error(error) => {
            tracing::warn!(%error, latency_ms = latency.as_millis(), "call failed");
        }
    }
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICES {
        reporter.set_service_status(*name, status).await;
    }
}

/// Reports SERVING only while the database answers.
async fn watch_database(
    store: Store,
    reporter: HealthReporter,
    draining: Arc<AtomicBool>,
    every: Duration,
) {
    let mut healthy = true;
    loop {
        tokio::time::sleep(every).await;
        if draining.load(Ordering::SeqCst) {
            return;
        }
        let ok = tokio::time::timeout(every, store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        if ok != healthy && !draining.load(Ordering::SeqCst) {
            healthy = ok;
            if ok {
                tracing::info!("database answers again: SERVING");
            } else {
                tracing::error!("database does not answer: NOT_SERVING");
            }
            set_health(
                &reporter,
                if ok {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                },
            )
            .await;
        }
    }
}

/// Runs the background jobs of every programme (each in its own time zone and with its
/// own settings) every `every` until shutdown. Safe on every replica: each step rechecks
/// its condition under the member's lock.
async fn run_jobs(
    programs: Programs,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    every: Duration,
    batch: u64,
    draining: Arc<AtomicBool>,
) {
    loop {
        tokio::time::sleep(every).await;
        if draining.load(Ordering::SeqCst) {
            return;
        }
        let ids = match programs.ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "jobs cannot list programmes; retrying next interval");
                continue;
            }
        };
        for id in ids {
            let started = std::time::Instant::now();
            let result = match programs.graph(&id).await {
                Ok(graph) => graph.jobs.run_jobs(batch).await,
                Err(e) => Err(e),
            };
            if let Some(m) = &metrics {
                m.record_jobs(id.as_str(), result.is_ok(), started.elapsed().as_secs_f64());
            }
            match result {
                Ok(report) if report != crate::service::jobs::JobReport::default() => {
                    tracing::info!(program_id = %id, ?report, "jobs ran")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    program_id = %id,
                    error = %e,
                    "jobs failed; retrying next interval"
                ),
            }
        }
    }
}

/// Runs the jobs of every programme once (`loyalty expire-points`, for a cron job).
pub async fn run_jobs_once(
    store: &Store,
    settings: &Settings,
) -> anyhow::Result<Vec<(ProgramId, crate::service::jobs::JobReport)>> {
    let catalog = catalog_of(store, settings);
    let mut reports = Vec::new();
    for program in catalog.list().await? {
        let id = ProgramId::parse(&program.program_id).map_err(|e| anyhow::anyhow!(e))?;
        let context = catalog.context(&id).await?;
        let report = JobRunner::new(context)
            .run_jobs(settings.jobs.batch_size)
            .await?;
        reports.push((id, report));
    }
    Ok(reports)
}

/// Gives committed events their cursors every `every` (every replica may; they take turns).
async fn run_relay(events: EventService, every: Duration, draining: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(every).await;
        if draining.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = events.relay_once().await {
            tracing::warn!(error = %e, "event relay failed; retrying");
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
