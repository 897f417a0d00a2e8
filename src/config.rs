//! Settings, layered: built-in defaults → optional TOML file → `LOYALTY__SECTION__KEY`
//! environment variables. Every error names the key it is about.
use std::{net::SocketAddr, path::Path};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::domain::{Currency, ExpiryPolicy, PointValue, ReturnPolicy, Ruleset};

/// The whole settings tree.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub program: ProgramSettings,
    pub jobs: JobSettings,
    pub events: EventSettings,
    pub security: SecuritySettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
}

/// Authentication, TLS and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySettings {
    /// Require an API key on every call (but health checks). May be turned off only on a
    /// loopback address.
    pub require_auth: bool,
    /// PEM certificate chain and private key: serve TLS.
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
    /// PEM CA: require client certificates signed by it (mTLS).
    pub tls_client_ca_file: Option<std::path::PathBuf>,
    /// Calls per second each client may make, by role; bursts up to `burst_seconds` worth.
    pub rate_pos: u32,
    pub rate_ecommerce: u32,
    pub rate_crm: u32,
    pub rate_admin: u32,
    pub burst_seconds: u32,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        Self {
            require_auth: true,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            rate_pos: 200,
            rate_ecommerce: 500,
            rate_crm: 100,
            rate_admin: 100,
            burst_seconds: 2,
        }
    }
}

/// Background jobs: point expiry, release of pending points, hold expiry.
/// Traces (OTLP) and metrics (Prometheus, and OTLP when an endpoint is set).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Where Prometheus scrapes `/metrics` (a port apart from gRPC); none turns it off.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// OTLP/gRPC collector for traces and metrics, e.g. `http://otel-collector:4317`;
    /// empty turns export off.
    pub otlp_endpoint: String,
    /// `service.name` resource attribute.
    pub service_name: String,
    /// `deployment.environment.name` resource attribute.
    pub environment: String,
    /// `service.instance.id` (the pod name on Kubernetes); defaults to the host name.
    pub service_instance: String,
    /// How often metrics are pushed over OTLP (milliseconds).
    pub otlp_metrics_interval_ms: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            metrics_listen_addr: None,
            otlp_endpoint: String::new(),
            service_name: "loyalty".into(),
            environment: "development".into(),
            service_instance: String::new(),
            otlp_metrics_interval_ms: 30_000,
        }
    }
}

/// The event outbox: how quickly committed events get their cursor, and how long
/// they are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// How often each replica's relay gives new events their cursors (milliseconds).
    pub relay_interval_ms: u64,
    /// Events older than this are pruned by the jobs (days; 0 keeps them forever).
    pub retention_days: u32,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            relay_interval_ms: 100,
            retention_days: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobSettings {
    /// How often the server runs the jobs; 0 turns them off in this process (run
    /// `loyalty expire-points` from cron instead).
    pub interval_secs: u64,
    /// Most lots or holds one run settles per kind.
    pub batch_size: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            interval_secs: 60,
            batch_size: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address the gRPC server listens on; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// How long in-flight calls may run after SIGTERM before the server stops anyway.
    pub shutdown_grace_secs: u64,
    /// How often the health service checks that the database answers.
    pub health_check_interval_ms: u64,
    /// Largest request message accepted.
    pub max_request_bytes: usize,
    /// Server-side deadline of every call.
    pub request_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            shutdown_grace_secs: 20,
            health_check_interval_ms: 2000,
            max_request_bytes: 1024 * 1024,
            request_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://FILE?mode=rwc` (default, embedded) or `postgres://…`.
    pub url: SecretString,
    /// Pool size.
    pub max_connections: u32,
    /// How long a call waits for a pooled connection.
    pub acquire_timeout_ms: u64,
    /// SQLite only: how long a writer waits for another process's write lock.
    pub busy_timeout_ms: u64,
    /// How long a call waits for a member that another call or session is changing:
    /// first in this replica's queue for the member, then (PostgreSQL) for the row lock.
    /// Then it answers ABORTED with reason MEMBER_BUSY and a retry delay.
    pub lock_timeout_ms: u64,
    /// PostgreSQL only: the longest one statement may run (its `statement_timeout`);
    /// one that runs longer fails with UNAVAILABLE.
    pub statement_timeout_ms: u64,
    /// SQLite only: a background task copies the write-ahead log into the database this
    /// often (a passive checkpoint, which never blocks writers), so that no write waits
    /// for SQLite's own checkpoint on commit. 0: SQLite checkpoints on commit (every
    /// 1,000 pages of log).
    pub sqlite_checkpoint_interval_ms: u64,
    /// A pooled connection idle for at least this long is checked (one round trip)
    /// before a call gets it, so one the database or a firewall dropped is replaced, not
    /// handed out; a busy connection goes straight to its next call. 0: check on every
    /// checkout.
    pub ping_idle_after_ms: u64,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    /// Accruals arriving together share one transaction: this many workers (SQLite: at
    /// most one) each write up to `accrual_batch_max` queued calls at a time. 0: every
    /// accrual runs in its own transaction.
    pub accrual_batch_workers: usize,
    /// Most accruals one shared transaction writes.
    pub accrual_batch_max: usize,
    /// While another batch is being written, a worker that has taken fewer than
    /// `accrual_batch_max` calls waits up to this long (microseconds) for more, so that
    /// concurrent checkouts share fewer, larger transactions. 0: take what has queued.
    /// Tokio's timer counts whole milliseconds, so the wait ends at the first tick after
    /// the deadline: measured on a quiet runtime, 250 µs waited 1.35 ms on average
    /// (100 µs 1.18 ms, 1,000 µs 2.13 ms).
    pub accrual_batch_linger_us: u64,
    /// Balance and member-offer reads arriving together share one statement: this many
    /// workers per kind each read up to `read_batch_max` queued calls at a time. While
    /// one worker's statement runs, the next waits for it to end (2 ms at most) and
    /// takes what arrived meanwhile; a lone read never waits. 0: every read has its own
    /// statement.
    pub read_batch_workers: usize,
    /// Most reads one shared statement answers.
    pub read_batch_max: usize,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://loyalty.db?mode=rwc"),
            max_connections: 16,
            acquire_timeout_ms: 5000,
            busy_timeout_ms: 5000,
            lock_timeout_ms: 1000,
            statement_timeout_ms: 10_000,
            sqlite_checkpoint_interval_ms: 200,
            ping_idle_after_ms: 10_000,
            migrate_on_start: true,
            accrual_batch_workers: 4,
            accrual_batch_max: 32,
            accrual_batch_linger_us: 250,
            read_batch_workers: 2,
            read_batch_max: 64,
        }
    }
}

/// A programme's settings: the configuration's `[program]` section, which is also what a
/// new programme starts from, and what `programs.settings` stores as JSON.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ProgramSettings {
    /// ISO 4217 code of the programme's currency.
    pub currency: String,
    /// Base earn rate: `earn_points` points for every `earn_spend_minor` minor units spent.
    pub earn_points: i64,
    /// See `earn_points`.
    pub earn_spend_minor: i64,
    /// IANA time zone of promotion windows, birthdays and anniversaries until an admin
    /// stores a ruleset (which then carries its own).
    pub time_zone: String,
    /// Return window: accrued points stay pending (not spendable) this many days.
    pub pending_days: u32,
    /// `never`, `months_after_earning` or `end_of_nth_month`.
    pub expiry_policy: ExpiryPolicyKind,
    /// The N of the expiry policy.
    pub expiry_months: u32,
    /// Points as payment: `redeem_points` points are worth `redeem_value_minor` minor units.
    pub redeem_value_minor: i64,
    /// See `redeem_value_minor`.
    pub redeem_points: i64,
    /// When a return reverses points that were already spent: `clamp` (never below zero,
    /// the shortfall is recorded) or `allow_negative`.
    pub return_policy: ReturnPolicy,
    /// Largest single GOODWILL adjustment.
    pub goodwill_max_per_grant: i64,
    /// Most GOODWILL points one member may be granted in 24 hours.
    pub goodwill_max_per_day: i64,
    /// Largest single CORRECTION adjustment, either way.
    pub correction_max_points: i64,
    /// Largest single MIGRATION adjustment, either way.
    pub migration_max_points: i64,
    /// Hold time-to-live when a request gives none.
    pub hold_default_ttl_secs: u64,
    /// Longest hold time-to-live a request may ask for.
    pub hold_max_ttl_secs: u64,
    /// Bonus points for feedback tied to an order, at most once per order (0: none).
    pub feedback_bonus_points: i64,
    /// The rolling window churn-risk scoring looks at (days).
    pub risk_window_days: u32,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryPolicyKind {
    #[default]
    Never,
    MonthsAfterEarning,
    EndOfNthMonth,
}

impl Default for ProgramSettings {
    fn default() -> Self {
        Self {
            currency: "EUR".into(),
            earn_points: 1,
            earn_spend_minor: 100,
            time_zone: "UTC".into(),
            pending_days: 0,
            expiry_policy: ExpiryPolicyKind::Never,
            expiry_months: 12,
            redeem_value_minor: 1,
            redeem_points: 1,
            return_policy: ReturnPolicy::Clamp,
            goodwill_max_per_grant: 500,
            goodwill_max_per_day: 1000,
            correction_max_points: 100_000,
            migration_max_points: 100_000_000,
            hold_default_ttl_secs: 900,
            hold_max_ttl_secs: 7 * 24 * 3600,
            feedback_bonus_points: 0,
            risk_window_days: 365,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info,loyalty=debug`; `RUST_LOG` overrides it.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            filter: "info".into(),
        }
    }
}

/// The longest a hold may be kept: 366 days.
pub const MAX_HOLD_TTL_SECS: u64 = 366 * 24 * 3600;

/// The largest feedback bonus: a thank-you, not a way to mint points.
pub const MAX_FEEDBACK_BONUS: i64 = 1_000_000;

/// A setting that could not be used; the message names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

/// A programme setting that could not be used: the key it is about (as the
/// configuration spells it, `program.…`) and a message that names it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {message}")]
pub struct SettingError {
    pub key: &'static str,
    pub message: String,
}

impl From<SettingError> for ConfigError {
    fn from(e: SettingError) -> Self {
        Self(e.message)
    }
}

/// The validated programme rules the services work with.
#[derive(Debug, Clone)]
pub struct Program {
    pub currency: Currency,
    /// The ruleset in force until an admin stores one.
    pub default_rules: Ruleset,
    /// Zero when points are available at once.
    pub pending_window: chrono::Duration,
    pub expiry: ExpiryPolicy,
    pub point_value: PointValue,
    pub return_policy: ReturnPolicy,
    pub goodwill_max_per_grant: i64,
    pub goodwill_max_per_day: i64,
    pub correction_max_points: i64,
    pub migration_max_points: i64,
    pub hold_default_ttl: chrono::Duration,
    pub hold_max_ttl: chrono::Duration,
    pub feedback_bonus_points: i64,
    pub risk_window: chrono::Duration,
    /// How long the jobs keep relayed events; `None` keeps them.
    pub event_retention: Option<chrono::Duration>,
}

impl Settings {
    /// Loads defaults, then `file` if given, then `LOYALTY__…` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("LOYALTY__").split("__"));
        let settings: Settings = figment.extract().map_err(|errors| {
            ConfigError(
                errors
                    .into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        settings.program()?;
        if !settings.security.require_auth && !settings.server.listen_addr.ip().is_loopback() {
            return Err(ConfigError(format!(
                "security.require_auth = false is allowed only on a loopback address, not server.listen_addr = {}",
                settings.server.listen_addr
            )));
        }
        if settings.security.tls_cert_file.is_some() != settings.security.tls_key_file.is_some() {
            return Err(ConfigError(
                "security.tls_cert_file and security.tls_key_file go together".into(),
            ));
        }
        if settings.security.tls_client_ca_file.is_some()
            && settings.security.tls_cert_file.is_none()
        {
            return Err(ConfigError(
                "security.tls_client_ca_file needs security.tls_cert_file and tls_key_file".into(),
            ));
        }
        if settings.database.max_connections == 0 {
            return Err(ConfigError(
                "database.max_connections must be at least 1".into(),
            ));
        }
        let url = settings.database.url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(ConfigError(
                "database.url must start with sqlite: or postgres:".into(),
            ));
        }
        Ok(settings)
    }

    /// The programme rules, validated.
    pub fn program(&self) -> Result<Program, ConfigError> {
        Ok(self.program.validate(self.event_retention())?)
    }

    /// How long relayed events are kept (`None`: for good).
    pub fn event_retention(&self) -> Option<chrono::Duration> {
        (self.events.retention_days > 0)
            .then(|| chrono::Duration::days(i64::from(self.events.retention_days)))
    }
}

impl ProgramSettings {
    /// These settings, validated: the programme rules the services work with. Messages
    /// name the key as the configuration spells it (`program.…`).
    pub fn validate(
        &self,
        event_retention: Option<chrono::Duration>,
    ) -> Result<Program, SettingError> {
        let bad = |key: &'static str, message: String| SettingError { key, message };
        let currency = Currency::parse(&self.currency)
            .map_err(|e| bad("program.currency", format!("program.currency: {e}")))?;
        let p = self;
        // Checked whatever the policy: a later change of policy alone must not bring an
        // unusable N into force.
        if p.expiry_months == 0 || p.expiry_months > 1200 {
            return Err(bad(
                "program.expiry_months",
                "program.expiry_months must be between 1 and 1200".into(),
            ));
        }
        let expiry = match p.expiry_policy {
            ExpiryPolicyKind::Never => ExpiryPolicy::Never,
            ExpiryPolicyKind::MonthsAfterEarning => {
                ExpiryPolicy::MonthsAfterEarning(p.expiry_months)
            }
            ExpiryPolicyKind::EndOfNthMonth => ExpiryPolicy::EndOfNthMonth(p.expiry_months),
        };
        let point_value = PointValue::new(p.redeem_value_minor, p.redeem_points).map_err(|e| {
            bad(
                "program.redeem_value_minor",
                format!("program.redeem_value_minor/program.redeem_points: {e}"),
            )
        })?;
        if p.pending_days > 365 {
            return Err(bad(
                "program.pending_days",
                "program.pending_days must be at most 365".into(),
            ));
        }
        let caps = [
            p.goodwill_max_per_grant,
            p.goodwill_max_per_day,
            p.correction_max_points,
            p.migration_max_points,
        ];
        if caps
            .iter()
            .any(|c| !(0..=crate::domain::MAX_POINTS).contains(c))
        {
            return Err(bad(
                "program.goodwill_max_per_grant",
                format!(
                    "program.goodwill_max_*, program.correction_max_points and program.migration_max_points must be from 0 to {}",
                    crate::domain::MAX_POINTS
                ),
            ));
        }
        if p.hold_max_ttl_secs > MAX_HOLD_TTL_SECS {
            return Err(bad(
                "program.hold_max_ttl_secs",
                format!("program.hold_max_ttl_secs must be at most {MAX_HOLD_TTL_SECS} (366 days)"),
            ));
        }
        if p.hold_default_ttl_secs == 0 || p.hold_default_ttl_secs > p.hold_max_ttl_secs {
            return Err(bad("program.hold_default_ttl_secs", "program.hold_default_ttl_secs must be at least 1 and at most program.hold_max_ttl_secs".into()));
        }
        if p.goodwill_max_per_day < p.goodwill_max_per_grant {
            return Err(bad(
                "program.goodwill_max_per_day",
                "program.goodwill_max_per_day must be at least program.goodwill_max_per_grant"
                    .into(),
            ));
        }
        if !(0..=MAX_FEEDBACK_BONUS).contains(&p.feedback_bonus_points) {
            return Err(bad(
                "program.feedback_bonus_points",
                format!("program.feedback_bonus_points must be from 0 to {MAX_FEEDBACK_BONUS}"),
            ));
        }
        if p.risk_window_days == 0 || p.risk_window_days > 3660 {
            return Err(bad(
                "program.risk_window_days",
                "program.risk_window_days must be between 1 and 3660".into(),
            ));
        }
        let secs = |s: u64| chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        let default_rules = Ruleset::base_only(p.earn_points, p.earn_spend_minor, &p.time_zone);
        // The configured base rate is the ruleset in force until an admin stores one.
        if let Some((field, problem)) = default_rules.validate().into_iter().next() {
            let key = match field.as_str() {
                "base_points" => "program.earn_points",
                "base_spend_minor" => "program.earn_spend_minor",
                _ => "program.time_zone",
            };
            return Err(bad(key, format!("{key}: {problem}")));
        }
        Ok(Program {
            currency,
            default_rules,
            pending_window: chrono::Duration::days(i64::from(p.pending_days)),
            expiry,
            point_value,
            return_policy: p.return_policy,
            goodwill_max_per_grant: p.goodwill_max_per_grant,
            goodwill_max_per_day: p.goodwill_max_per_day,
            correction_max_points: p.correction_max_points,
            migration_max_points: p.migration_max_points,
            hold_default_ttl: secs(p.hold_default_ttl_secs),
            hold_max_ttl: secs(p.hold_max_ttl_secs),
            feedback_bonus_points: p.feedback_bonus_points,
            risk_window: chrono::Duration::days(i64::from(p.risk_window_days)),
            event_retention,
        })
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use figment::Jail;

    use super::*;

    fn load_err(jail: &Jail, file: Option<&str>) -> String {
        let path = file.map(|_| jail.directory().join("loyalty.toml"));
        Settings::load(path.as_deref())
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn defaults_serve_sqlite_on_loopback() {
        Jail::expect_with(|_| {
            let s = Settings::load(None).expect("defaults load");
            assert_eq!(s.server.listen_addr.to_string(), "127.0.0.1:50051");
            assert!(s.database.database_url().starts_with("sqlite://"));
            assert_eq!(s.program.currency, "EUR");
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file_which_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "loyalty.toml",
                "[program]\ncurrency = \"USD\"\nearn_points = 3\n[log]\nformat = \"json\"\n",
            )?;
            jail.set_env("LOYALTY__PROGRAM__EARN_POINTS", "5");
            let s = Settings::load(Some(&jail.directory().join("loyalty.toml"))).expect("loads");
            assert_eq!(s.program.currency, "USD");
            assert_eq!(s.program.earn_points, 5);
            assert_eq!(s.log.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        Jail::expect_with(|jail| {
            jail.set_env("LOYALTY__SERVER__LISTEN_ADDR", "not-an-address");
            assert!(
                load_err(jail, None)
                    .to_lowercase()
                    .contains("server.listen_addr")
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("LOYALTY__PROGRAM__CURRENCY", "euro");
            assert!(load_err(jail, None).contains("program.currency"));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("LOYALTY__PROGRAM__EARN_SPEND_MINOR", "0");
            assert!(load_err(jail, None).contains("program.earn_spend_minor"));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("loyalty.toml", "[database]\nurl = \"mysql://x\"\n")?;
            assert!(load_err(jail, Some("loyalty.toml")).contains("database.url"));
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("loyalty.toml", "[server]\nlisten = \"x\"\n")?;
            let err = load_err(jail, Some("loyalty.toml"));
            assert!(err.contains("listen"), "{err}");
            Ok(())
        });
    }
}
