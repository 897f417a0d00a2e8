//! Persistence: pool set-up, entities and every query. Nothing above this layer
//! writes SQL; database errors become [`AppError`]s here.
pub mod accruals;
pub mod clients;
pub mod entities;
pub mod events;
pub mod feedback;
pub mod holds;
pub mod idempotency;
pub mod ledger;
pub mod lots;
pub mod members;
pub mod offers;
pub mod programs;
pub mod rewards;
pub mod rules;

use std::{collections::HashMap, ops::Deref, sync::Arc, time::Duration};

use chrono::{DateTime, SubsecRound, Utc};
use migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend,
    DbErr, FromQueryResult, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
    sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous},
};
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    config::DatabaseSettings,
    domain::{MemberKey, ProgramId},
    error::AppError,
};

/// Most rows one multi-row INSERT carries: SQLite allows 32,766 parameters a statement.
pub(crate) const ROWS_PER_INSERT: usize = 1000;

/// The database, shared by every call.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// One transaction per member waits for that member's row lock; the others wait
    /// here, holding no connection, so a member held by someone else (a stuck admin
    /// session, a shared staff card) cannot empty the pool for everybody else.
    gates: Arc<MemberGates>,
    /// How long a call waits for a member's gate, and (PostgreSQL) for its row lock,
    /// before it answers MEMBER_BUSY.
    lock_wait: Duration,
    /// PostgreSQL: one connection of its own for the health check, so that health says
    /// whether the database takes writes, not whether the pool is momentarily full.
    health: Option<DatabaseConnection>,
    /// How long a shared statement or batch may take (`database.statement_timeout_ms`).
    work_deadline: Duration,
    /// SQLite allows one writer at a time. Queuing writers here, fairly and without
    /// polling, is far cheaper than letting them spin in SQLite's busy handler; the
    /// busy timeout still covers writers in other processes (e.g. a cron job).
    write_gate: Option<Arc<Semaphore>>,
    /// The time every use case and job reads; tests move it.
    clock: Arc<Clock>,
    /// The programme this handle's use cases act in ([`Store::for_program`]); every
    /// query a caller's key reaches is filtered by it.
    program: ProgramId,
}

/// The service's clock: the system's time plus an offset. Every business time (ledger
/// entries, lots, holds, expiry, pending windows, tier reviews, birthdays) is read from
/// it, so a test moves time forward instead of rewriting stored timestamps.
#[derive(Debug, Default)]
pub struct Clock {
    offset_micros: std::sync::atomic::AtomicI64,
}

impl Clock {
    /// Moves this clock (and every clone of its store) forward by `by`.
    pub fn advance(&self, by: chrono::Duration) {
        let micros = by.num_microseconds().unwrap_or(i64::MAX);
        self.offset_micros
            .fetch_add(micros, std::sync::atomic::Ordering::SeqCst);
    }

    /// How far this clock is ahead of the system's.
    pub fn offset(&self) -> chrono::Duration {
        chrono::Duration::microseconds(self.offset_micros.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// `at` (a system or database time) as this clock reads it.
    pub fn shift(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.checked_add_signed(self.offset()).unwrap_or(at)
    }
}

impl Store {
    /// Opens the pool. SQLite runs in WAL mode with a busy timeout and foreign keys on.
    pub async fn connect(settings: &DatabaseSettings) -> Result<Self, DbErr> {
        let url = settings.database_url();
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
            .sqlx_logging(false);
        // sqlx checks every connection on checkout: a round trip before each call's first
        // statement. Only connections that sat idle are checked.
        if settings.ping_idle_after_ms > 0 {
            options.test_before_acquire_if_idle_for(Duration::from_millis(
                settings.ping_idle_after_ms,
            ));
        }
        // Every wait inside PostgreSQL has a bound: a row lock (MEMBER_BUSY) and a
        // statement (UNAVAILABLE), so a held lock or a stuck database frees the
        // connection instead of keeping it until the caller's deadline and beyond.
        let (lock_ms, statement_ms) = (settings.lock_timeout_ms, settings.statement_timeout_ms);
        options.map_sqlx_postgres_opts(move |o| {
            o.options([
                ("lock_timeout", format!("{lock_ms}ms")),
                ("statement_timeout", format!("{statement_ms}ms")),
            ])
        });
        let busy = Duration::from_millis(settings.busy_timeout_ms);
        let checkpoints = Duration::from_millis(settings.sqlite_checkpoint_interval_ms);
        options.map_sqlx_sqlite_opts(move |o| {
            let o = o
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(busy)
                .foreign_keys(true);
            if checkpoints.is_zero() {
                o
            } else {
                // The background task keeps the log short; this only bounds it should
                // the task fall behind (40 MB of 4 KiB pages).
                o.pragma("wal_autocheckpoint", SQLITE_LOG_BOUND_PAGES.to_string())
            }
        });
        let db = Database::connect(options).await?;
        let sqlite = db.get_database_backend() == DbBackend::Sqlite;
        if sqlite && !checkpoints.is_zero() {
            tokio::spawn(checkpoint(db.clone(), checkpoints));
        }
        let write_gate = sqlite.then(|| Arc::new(Semaphore::new(1)));
        let health = if sqlite {
            None
        } else {
            let mut options = ConnectOptions::new(url.to_owned());
            options
                .max_connections(1)
                .min_connections(0)
                .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
                .sqlx_logging(false);
            options.map_sqlx_postgres_opts(move |o| {
                o.options([("statement_timeout", format!("{statement_ms}ms"))])
            });
            Some(Database::connect(options).await?)
        };
        Ok(Self {
            db,
            health,
            gates: Arc::default(),
            lock_wait: Duration::from_millis(settings.lock_timeout_ms),
            work_deadline: Duration::from_millis(settings.statement_timeout_ms),
            write_gate,
            clock: Arc::default(),
            program: ProgramId::default_program(),
        })
    }

    /// This store, scoped to `program`: the same pool, gates and clock.
    pub fn for_program(&self, program: &ProgramId) -> Self {
        Self {
            program: program.clone(),
            ..self.clone()
        }
    }

    /// The programme this handle is scoped to.
    pub fn program(&self) -> &str {
        self.program.as_str()
    }

    /// See [`Store::program`].
    pub fn program_id(&self) -> &ProgramId {
        &self.program
    }

    /// The clock of this store's service (shared by its clones).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Now, at storage precision, by the service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        truncate(self.clock.shift(Utc::now()))
    }

    /// Now by the database server's clock (moved as the service's clock is): every
    /// expiry decision uses it, so replicas with skewed clocks (or a till's timestamp)
    /// can never expire points or holds early.
    pub async fn db_now<C: ConnectionTrait>(&self, db: &C) -> Result<DateTime<Utc>, AppError> {
        Ok(self.clock.shift(database_now(db).await?))
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), DbErr> {
        Migrator::up(&self.db, None).await
    }

    /// Succeeds while the database answers and, on PostgreSQL, takes writes: not a
    /// standby (which answers `SELECT 1` but refuses every write), and able to commit
    /// (a primary waiting for a synchronous standby that is gone cannot).
    pub async fn ping(&self) -> Result<(), DbErr> {
        let Some(health) = &self.health else {
            return self.db.execute_unprepared("SELECT 1").await.map(|_| ());
        };
        let row = health
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT pg_is_in_recovery() AS standby",
            ))
            .await?;
        if row.map(|r| r.try_get::<bool>("", "standby")).transpose()? != Some(false) {
            return Err(DbErr::Custom(
                "the database is a standby: it takes no writes".into(),
            ));
        }
        // A write that touches no table (a transactional message in the write-ahead
        // log) commits like any other: it waits for a synchronous standby, so a primary
        // whose standby is gone (every commit hangs) is found here, by the caller's bound
        // on the check, not only by the calls that hang.
        health
            .execute_unprepared("SELECT pg_logical_emit_message(true, 'loyalty.health', '')")
            .await
            .map(|_| ())
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The OpenTelemetry `db.system` name of the backend.
    pub fn system(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Postgres => "postgresql",
            _ => "sqlite",
        }
    }

    /// The longest a shared statement or batch may take before its callers are told
    /// UNAVAILABLE: `database.statement_timeout_ms`, which PostgreSQL enforces on each
    /// statement only while it still answers.
    pub fn work_deadline(&self) -> Duration {
        self.work_deadline
    }

    /// Open and idle connections of the pool.
    pub fn pool_stats(&self) -> (i64, i64) {
        match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (i64::from(pool.size()), pool.num_idle() as i64)
            }
            _ => {
                let pool = self.db.get_sqlite_connection_pool();
                (i64::from(pool.size()), pool.num_idle() as i64)
            }
        }
    }

    /// The pool, for reads outside a transaction.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`), so a read-then-write transaction never fails to upgrade.
    /// [`Store::begin_write`] for a call about one member: it first waits its turn
    /// behind the other calls of this replica for that member (MEMBER_BUSY after
    /// `database.lock_timeout_ms`).
    pub async fn begin_write_for(&self, member: &MemberKey) -> Result<WriteTxn, AppError> {
        let gate = format!("{}/{}", self.program, member.gate_key());
        let pass = self.gates.enter(gate, self.lock_wait).await?;
        let mut txn = self.begin_write().await?;
        txn._pass = Some(pass);
        Ok(txn)
    }

    /// On SQLite, this replica's turn to write (one writer at a time; `None` on
    /// PostgreSQL). A write outside [`Store::begin_write`] (an autocommit statement on
    /// [`Store::conn`]) must hold it: raced by a transaction's writer, SQLite answers
    /// such a statement BUSY_SNAPSHOT at once or makes the writer wait out its busy
    /// timeout.
    pub async fn write_turn(&self) -> Result<Option<OwnedSemaphorePermit>, AppError> {
        match &self.write_gate {
            Some(gate) => Ok(Some(
                Arc::clone(gate)
                    .acquire_owned()
                    .await
                    .map_err(|e| AppError::Internal(e.into()))?,
            )),
            None => Ok(None),
        }
    }

    #[tracing::instrument(name = "db.begin", skip_all, fields(db.system = self.system()))]
    pub async fn begin_write(&self) -> Result<WriteTxn, AppError> {
        let permit = self.write_turn().await?;
        // BEGIN runs in a task of its own. A caller dropped while BEGIN is in flight
        // (a deadline, a client gone) would otherwise leave the transaction begun on the
        // server with no `DatabaseTransaction` to roll it back: the connection went back
        // to the pool inside it, and the next autocommit statement on it never committed.
        // The task always finishes: a transaction nobody takes is dropped there, which
        // queues its ROLLBACK like any other.
        let db = self.db.clone();
        let begun = tokio::spawn(async move {
            db.begin_with_options(TransactionOptions {
                isolation_level: None,
                access_mode: None,
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            })
            .await
        });
        let txn = begun.await.map_err(|e| AppError::Internal(e.into()))??;
        Ok(WriteTxn {
            txn,
            program: self.program.clone(),
            _permit: permit,
            _pass: None,
        })
    }
}

/// Pages of write-ahead log after which a commit checkpoints while the background task
/// is on.
const SQLITE_LOG_BOUND_PAGES: u32 = 10_000;

/// SQLite's checkpoint on commit copies up to 1,000 pages and syncs the database file
/// while the committing writer, and every writer queued behind it, waits (by hand: a
/// tenth of accruals at 8 callers took 20 ms instead of 7). Here the copy runs beside the
/// writers. Ends when the pool is closed.
async fn checkpoint(db: DatabaseConnection, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if db.get_sqlite_connection_pool().is_closed() {
            return;
        }
        if let Err(err) = db
            .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
            .await
        {
            tracing::warn!(error = %err, "sqlite checkpoint failed");
        }
    }
}

/// A write transaction; rolled back when dropped without `commit`.
pub struct WriteTxn {
    txn: DatabaseTransaction,
    /// The programme of the store that began it.
    program: ProgramId,
    _permit: Option<OwnedSemaphorePermit>,
    _pass: Option<MemberPass>,
}

/// Per-member queues of this replica's calls.
#[derive(Default)]
struct MemberGates {
    gates: std::sync::Mutex<HashMap<String, Arc<Gate>>>,
}

/// One member's queue, and since when its current call has held it.
#[derive(Default)]
struct Gate {
    turn: Arc<tokio::sync::Mutex<()>>,
    held_since: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// A member's turn; the next caller's begins when it is dropped.
struct MemberPass {
    gate: Arc<Gate>,
    /// The call's transaction committed: the member made progress.
    committed: bool,
    _turn: tokio::sync::OwnedMutexGuard<()>,
    gates: Arc<MemberGates>,
    key: String,
}

impl MemberGates {
    async fn enter(self: &Arc<Self>, key: String, wait: Duration) -> Result<MemberPass, AppError> {
        let gate = {
            let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(gates.entry(key.clone()).or_default())
        };
        // A queue that moves is waited out (a hot member's calls take turns); one whose
        // current call has held the member longer than `wait` is stuck: MEMBER_BUSY.
        let check = (wait / 4).max(Duration::from_millis(5));
        let turn = loop {
            if let Ok(turn) = tokio::time::timeout(check, Arc::clone(&gate.turn).lock_owned()).await
            {
                break turn;
            }
            let since = *gate.held_since.lock().unwrap_or_else(|p| p.into_inner());
            if since.is_some_and(|at| at.elapsed() > wait) {
                return Err(AppError::MemberBusy);
            }
        };
        // Since when the member has made no progress: kept across calls that failed.
        gate.held_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(tokio::time::Instant::now);
        Ok(MemberPass {
            gate: Arc::clone(&gate),
            committed: false,
            _turn: turn,
            gates: Arc::clone(self),
            key,
        })
    }
}

impl Drop for MemberPass {
    fn drop(&mut self) {
        if self.committed {
            *self
                .gate
                .held_since
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
        }
        let mut gates = self.gates.gates.lock().unwrap_or_else(|p| p.into_inner());
        // Nobody waits for this gate (the map holds the only reference): forget it, so
        // the map holds only members in use.
        if gates
            .get(&self.key)
            .is_some_and(|g| Arc::strong_count(g) <= 2)
        {
            gates.remove(&self.key);
        }
    }
}

impl WriteTxn {
    /// The programme of the store that began this transaction.
    pub fn program(&self) -> &str {
        self.program.as_str()
    }

    #[tracing::instrument(name = "db.commit", skip_all)]
    pub async fn commit(mut self) -> Result<(), AppError> {
        let pass = self._pass.take();
        self.txn.commit().await.map_err(AppError::from)?;
        if let Some(mut pass) = pass {
            pass.committed = true;
        }
        Ok(())
    }
}

impl Deref for WriteTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

/// A statement written once with PostgreSQL's `$n` placeholders, for `db`'s backend
/// (SQLite takes the same numbers as `?n`), so no query is written out twice.
pub(crate) fn statement<C: ConnectionTrait>(
    db: &C,
    pg_sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> Statement {
    let backend = db.get_database_backend();
    Statement::from_sql_and_values(backend, sql_for(backend, pg_sql), values)
}

fn sql_for(backend: DbBackend, pg_sql: &str) -> String {
    match backend {
        DbBackend::Postgres => pg_sql.to_owned(),
        _ => pg_sql.replace('$', "?"),
    }
}

/// `column IN (the JSON array of strings in parameter $n)`, with a plan that probes the
/// column's index once per element on both backends.
pub(crate) fn in_json_list(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => {
            format!("= ANY(ARRAY(SELECT jsonb_array_elements_text(${n}::jsonb)))")
        }
        _ => format!("IN (SELECT value FROM json_each(${n}))"),
    }
}

/// `IN (the values of parameter $n)` and that parameter: on PostgreSQL one binary text
/// array (so the statement and its plan are the same for any number of values), on
/// SQLite a JSON list ([`in_json_list`]).
pub(crate) fn in_values(
    backend: DbBackend,
    n: usize,
    values: Vec<String>,
) -> Result<(String, sea_orm::Value), AppError> {
    Ok(match backend {
        DbBackend::Postgres => (format!("= ANY(${n}::text[])"), values.into()),
        _ => (in_json_list(backend, n), json_text(&values)?.into()),
    })
}

/// `(programme, value)` pairs of parameter `$n` (JSON `[{p, v}]`, see [`pairs_json`])
/// as rows `alias(p, v)`, to join on a programme-qualified key.
pub(crate) fn pairs_sql(backend: DbBackend, n: usize, alias: &str) -> String {
    match backend {
        DbBackend::Postgres => {
            format!("jsonb_to_recordset(${n}::jsonb) AS {alias}(p text, v text)")
        }
        // No `$` paths: `statement` turns `$` into `?` for SQLite.
        _ => format!(
            "(SELECT value ->> 'p' AS p, value ->> 'v' AS v FROM json_each(${n})) AS {alias}"
        ),
    }
}

/// `(programme, value)` pairs as the JSON [`pairs_sql`] reads.
pub(crate) fn pairs_json(pairs: &[(&str, &str)]) -> Vec<serde_json::Value> {
    pairs
        .iter()
        .map(|(p, v)| serde_json::json!({"p": p, "v": v}))
        .collect()
}

pub(crate) fn json_text<T: serde::Serialize>(value: &T) -> Result<String, AppError> {
    serde_json::to_string(value).map_err(|e| AppError::Internal(e.into()))
}

/// The database server's clock.
async fn database_now<C: ConnectionTrait>(db: &C) -> Result<DateTime<Utc>, AppError> {
    #[derive(FromQueryResult)]
    struct Now {
        micros: i64,
    }
    let sql = match db.get_database_backend() {
        DbBackend::Postgres => {
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT) AS micros"
        }
        // 'now' is stable within one statement; %f is SS.SSS.
        _ => {
            "SELECT CAST(strftime('%s','now') AS INTEGER) * 1000000 + CAST(substr(strftime('%f','now'), 4) AS INTEGER) * 1000 AS micros"
        }
    };
    let now = Now::find_by_statement(Statement::from_string(db.get_database_backend(), sql))
        .one(db)
        .await?
        .and_then(|n| DateTime::from_timestamp_micros(n.micros))
        .ok_or_else(|| AppError::Internal(anyhow::anyhow!("database returned no time")))?;
    Ok(now)
}

/// The system's time at the precision both databases store (microseconds), so that what
/// a call returns is exactly what a later read returns. For records about the service
/// itself (audit, API clients, idempotency keys); business times use [`Store::now`].
pub fn wall_now() -> DateTime<Utc> {
    truncate(Utc::now())
}

/// `at` at storage precision.
pub fn truncate(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

impl DatabaseSettings {
    pub(crate) fn database_url(&self) -> &str {
        self.url.expose_secret()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_keep_their_numbers_for_sqlite() {
        use sea_orm::DbBackend;
        let pg = "a = $1 AND b < $12 OR c = $1";
        assert_eq!(
            super::sql_for(DbBackend::Sqlite, pg),
            "a = ?1 AND b < ?12 OR c = ?1"
        );
        assert_eq!(super::sql_for(DbBackend::Postgres, pg), pg);
    }
}
