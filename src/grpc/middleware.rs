//! The tower layer in front of every service: authenticates the API key, applies the
//! policy table and the per-client rate limit, and writes the audit log.
use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use tonic::{Code, Status, body::Body};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::{
    auth::{self, Caller, Role},
    config::SecuritySettings,
    domain::ProgramId,
    error::ERROR_DOMAIN,
    store::{
        Store,
        clients::{self, NewAudit},
    },
};

/// How long a looked-up key is trusted before it is checked again (so a revocation
/// takes effect within this time on every replica).
const KEY_CACHE_TTL: Duration = Duration::from_secs(10);

/// Audit records this process could not write: counted and exported as
/// `loyalty_audit_write_failures_total`.
pub static AUDIT_WRITE_FAILURES: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

/// The most characters of a caller-sent value (request id, target) an audit record keeps.
const AUDIT_TEXT_MAX: usize = 128;

/// A caller-sent value as the audit stores it: printable characters only, at most
/// [`AUDIT_TEXT_MAX`] of them, so that a rejected call's record is always writable.
fn audit_text(raw: &str) -> String {
    raw.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .take(AUDIT_TEXT_MAX)
        .collect()
}

/// What a handler tells the audit log about its call.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub target: String,
    pub request_id: String,
}

/// A slot in the request's extensions that the handler fills in.
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(pub Arc<Mutex<AuditNote>>);

/// The caller the guard authenticated (an administrator when authentication is off,
/// which only a loopback address allows).
pub(super) fn caller<T>(request: &tonic::Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(Caller::anonymous)
}

/// Records the target and request id of a call for the audit log.
pub fn note_audit<T>(request: &tonic::Request<T>, target: impl Into<String>, request_id: &str) {
    if let Some(slot) = request.extensions().get::<AuditSlot>()
        && let Ok(mut note) = slot.0.lock()
    {
        note.target = target.into();
        note.request_id = request_id.to_owned();
    }
}

/// One rate limiter per role, keyed by client id (governor's GCRA, a token bucket
/// without a lock per call).
type Limiter = governor::DefaultKeyedRateLimiter<String>;

pub struct Guard {
    store: Store,
    require_auth: bool,
    limiters: HashMap<Role, Limiter>,
    keys: Mutex<HashMap<String, (Caller, Instant)>>,
}

impl Guard {
    pub fn new(store: Store, settings: &SecuritySettings) -> Arc<Self> {
        let limiter = |per_second: u32| {
            let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
            let burst = rate
                .checked_mul(
                    NonZeroU32::new(settings.burst_seconds.max(1)).unwrap_or(NonZeroU32::MIN),
                )
                .unwrap_or(NonZeroU32::MAX);
            Limiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        };
        Arc::new(Self {
            store,
            require_auth: settings.require_auth,
            limiters: HashMap::from([
                (Role::Pos, limiter(settings.rate_pos)),
                (Role::Ecommerce, limiter(settings.rate_ecommerce)),
                (Role::Crm, limiter(settings.rate_crm)),
                (Role::Admin, limiter(settings.rate_admin)),
                (Role::Platform, limiter(settings.rate_admin)),
            ]),
            keys: Mutex::new(HashMap::new()),
        })
    }

    fn status(code: Code, reason: &str, message: &str) -> Status {
        super::faults::status(code, reason, message)
    }

    async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        if !self.require_auth {
            return Ok(Caller::anonymous());
        }
        let unauthenticated = || {
            Self::status(
                Code::Unauthenticated,
                "UNAUTHENTICATED",
                "a valid API key is required: authorization: Bearer <key>",
            )
        };
        let key = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(unauthenticated)?;
        let hash = auth::key_hash(key);
        if let Ok(cache) = self.keys.lock()
            && let Some((caller, at)) = cache.get(&hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(caller.clone());
        }
        let row = clients::find_by_key_hash(self.store.conn(), &hash)
            .await
            .map_err(Status::from)?
            .ok_or_else(unauthenticated)?;
        let role = Role::parse(&row.role).ok_or_else(unauthenticated)?;
        let home = ProgramId::parse(&row.program_id).map_err(|_| unauthenticated())?;
        let caller = Caller {
            client_id: row.id,
            name: row.name,
            role,
            home_program: home.clone(),
            program: home,
            stores: row
                .stores
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        if let Ok(mut cache) = self.keys.lock() {
            cache.insert(hash, (caller.clone(), Instant::now()));
        }
        Ok(caller)
    }

    /// Takes a token from the caller's bucket, or says how long to wait. One bucket per
    /// client: a burst from one client never uses up another's.
    fn take_token(&self, caller: &Caller) -> Result<(), Duration> {
        use governor::clock::{Clock, DefaultClock};
        let Some(limiter) = self.limiters.get(&caller.role) else {
            return Ok(());
        };
        limiter
            .check_key(&caller.client_id)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    async fn audit(&self, caller: &Caller, method: &str, note: AuditNote, outcome: &str) {
        // The platform's own actions (creating programmes) belong to no programme: no
        // programme's administrators read them.
        let program = if auth::is_platform_only(method) {
            auth::PLATFORM_AUDIT.to_owned()
        } else {
            caller.program.as_str().to_owned()
        };
        let record = NewAudit {
            at: crate::store::wall_now(),
            program_id: program,
            client_id: caller.client_id.clone(),
            client_name: caller.name.clone(),
            role: caller.role.as_str().to_owned(),
            method: method.to_owned(),
            target: audit_text(&note.target),
            outcome: outcome.to_owned(),
            request_id: audit_text(&note.request_id),
        };
        let written = match self.store.write_turn().await {
            Ok(_turn) => clients::audit(self.store.conn(), record).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            AUDIT_WRITE_FAILURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(error = %e, method, "cannot write audit record");
        }
    }
}

#[derive(Clone)]
pub struct GuardLayer(pub Arc<Guard>);

impl<S> Layer<S> for GuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            guard: Arc::clone(&self.0),
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Arc<Guard>,
}

/// INVALID_ARGUMENT (reason INVALID_PROGRAM) for the programme header, saying `why`.
fn invalid_program(why: String) -> Status {
    let mut details = ErrorDetails::with_bad_request_violation(auth::PROGRAM_HEADER, why.clone());
    details.set_error_info("INVALID_PROGRAM", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{}: {why}", auth::PROGRAM_HEADER),
        details,
    )
}

/// The caller acting in the programme the request's header names, or the status that
/// refuses it: a malformed id is INVALID_ARGUMENT, another programme than the key's
/// PERMISSION_DENIED (unless the caller is a platform administrator).
fn acting_program(caller: Caller, headers: &http::HeaderMap) -> Result<Caller, (Caller, Status)> {
    let mut values = headers.get_all(auth::PROGRAM_HEADER).iter();
    let first = values.next();
    let named = match first {
        None => None,
        Some(_) if values.next().is_some() => {
            return Err((caller, invalid_program("must be sent once".to_owned())));
        }
        Some(value) => {
            let parsed = value
                .to_str()
                .map_err(|_| "must be text".to_owned())
                .and_then(ProgramId::parse);
            match parsed {
                Ok(p) => Some(p),
                Err(why) => return Err((caller, invalid_program(why))),
            }
        }
    };
    // Most calls name no programme: they act in the key's own, as authenticated.
    if named.is_none() {
        return Ok(caller);
    }
    caller.clone().acting_in(named).map_err(|p| {
        let status = Guard::status(
            Code::PermissionDenied,
            "PROGRAM_DENIED",
            &format!("this client belongs to another programme than {p}"),
        );
        (caller, status)
    })
}

fn outcome_of(headers: &http::HeaderMap) -> String {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    format!("{:?}", Code::from_i32(code))
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let guard = Arc::clone(&self.guard);
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if auth::is_open(&path) {
                return inner.call(request).await;
            }
            let caller = match guard.authenticate(request.headers()).await {
                Ok(c) => c,
                Err(status) => {
                    let anonymous = Caller {
                        client_id: String::new(),
                        name: "unauthenticated".into(),
                        role: Role::Pos,
                        ..Caller::anonymous()
                    };
                    guard
                        .audit(
                            &Caller {
                                role: Role::Pos,
                                ..anonymous
                            },
                            &path,
                            AuditNote::default(),
                            "Unauthenticated",
                        )
                        .await;
                    return Ok(status.into_http());
                }
            };
            let caller = match acting_program(caller, request.headers()) {
                Ok(c) => c,
                Err((caller, status)) => {
                    let outcome = format!("{:?}", status.code());
                    guard
                        .audit(&caller, &path, AuditNote::default(), &outcome)
                        .await;
                    return Ok(status.into_http());
                }
            };
            if !auth::allowed(&path, caller.role) {
                guard
                    .audit(&caller, &path, AuditNote::default(), "PermissionDenied")
                    .await;
                return Ok(Guard::status(
                    Code::PermissionDenied,
                    "PERMISSION_DENIED",
                    "this client may not call this method",
                )
                .into_http());
            }
            // Without authentication there are no client identities to limit.
            if let Err(wait) = if guard.require_auth {
                guard.take_token(&caller)
            } else {
                Ok(())
            } {
                let mut details = ErrorDetails::with_retry_info(Some(wait));
                details.set_error_info("RATE_LIMITED", ERROR_DOMAIN, HashMap::new());
                return Ok(Status::with_error_details(
                    Code::ResourceExhausted,
                    "rate limit exceeded; retry later",
                    details,
                )
                .into_http());
            }
            let slot = AuditSlot::default();
            request.extensions_mut().insert(caller.clone());
            request.extensions_mut().insert(slot.clone());
            let mut response = inner.call(request).await?;
            // For the metrics layer: the programme the call acted in.
            response.extensions_mut().insert(caller.program.clone());
            let audited = matches!(caller.role, Role::Admin | Role::Platform | Role::Crm)
                && auth::is_mutation(&path);
            let outcome = outcome_of(response.headers());
            let denied_inside = outcome == "PermissionDenied";
            if audited || denied_inside {
                let note = slot.0.lock().map(|n| n.clone()).unwrap_or_default();
                guard.audit(&caller, &path, note, &outcome).await;
            }
            Ok(response)
        })
    }
}
