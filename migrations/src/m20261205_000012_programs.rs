//! Several programmes in one database. A `programs` table, and a `program_id` on every
//! table whose rows a caller finds by something other than their member: members (by
//! card, referral code), orders and returns (by order id), holds, offers (by code), the
//! offer catalogue, rewards and their redemptions, rulesets, promotion usage, feedback,
//! complaints, events, audit records, API clients and risk scores. Rows owned by a
//! member (lots, allocations, ledger entries, bonus grants, offer uses) belong to the
//! member's programme through the member.
//!
//! Everything already stored lands in the programme `default`. Its settings stay NULL,
//! which means "the configuration's `[program]` section", so a deployment's behaviour
//! does not change with the upgrade.
//!
//! The natural keys become unique per programme: card numbers, referral codes, order
//! ids (and return ids within an order), offer codes and promotion budgets. The
//! programme id leads them and the programme-wide indexes, which is also the shape a
//! distributed PostgreSQL needs (`docs/scaling.md`). SQLite cannot drop a column's
//! UNIQUE or a primary key, so those tables are rebuilt (the documented twelve-step
//! procedure, with foreign keys deferred to the end of the migration's transaction).
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectionTrait, DatabaseExecutor, DatabaseTransaction, DbBackend, SqlxSqliteConnector,
    Statement, TransactionTrait,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Tables that get a `program_id`.
const SCOPED: &[&str] = &[
    "members",
    "orders",
    "returns",
    "holds",
    "offers",
    "rewards",
    "reward_redemptions",
    "rulesets",
    "promotion_usage",
    "feedback",
    "complaints",
    "events",
    "audit_events",
    "api_clients",
    "member_risk",
];

/// Indexes replaced by ones the programme id leads: (old name, new name, table, columns,
/// unique, partial condition).
const INDEXES: &[(&str, &str, &str, &str, bool, &str)] = &[
    (
        "members_referral_code",
        "members_program_referral_code",
        "members",
        "program_id, referral_code",
        true,
        "",
    ),
    (
        "members_tier_until",
        "members_program_tier_until",
        "members",
        "program_id, tier_until",
        false,
        "",
    ),
    (
        "members_birth_month",
        "members_program_birth_month",
        "members",
        "program_id, birth_month",
        false,
        "",
    ),
    (
        "members_enrolled_at",
        "members_program_enrolled_at",
        "members",
        "program_id, enrolled_at",
        false,
        "",
    ),
    (
        "holds_status_expires_at",
        "holds_program_status_expires_at",
        "holds",
        "program_id, status, expires_at",
        false,
        "",
    ),
    (
        "idx_feedback_created",
        "idx_feedback_program_created",
        "feedback",
        "program_id, created_at",
        false,
        "",
    ),
    (
        "idx_feedback_bonus_order",
        "idx_feedback_program_bonus_order",
        "feedback",
        "program_id, order_id",
        true,
        "bonus_points > 0",
    ),
    (
        "idx_complaints_opened",
        "idx_complaints_program_opened",
        "complaints",
        "program_id, opened_at",
        false,
        "",
    ),
    (
        "idx_member_risk_rank",
        "idx_member_risk_program_rank",
        "member_risk",
        "program_id, score, member_id",
        false,
        "",
    ),
    (
        "idx_member_risk_scored",
        "idx_member_risk_program_scored",
        "member_risk",
        "program_id, scored_at",
        false,
        "",
    ),
];

/// New indexes: (name, table, columns, unique).
const NEW_INDEXES: &[(&str, &str, &str, bool)] = &[
    (
        "members_program_card",
        "members",
        "program_id, card_number",
        true,
    ),
    ("members_program_id", "members", "program_id, id", false),
    ("offers_program_code", "offers", "program_id, code", true),
    (
        "rulesets_program_version",
        "rulesets",
        "program_id, version",
        false,
    ),
    ("rewards_program_id", "rewards", "program_id, id", false),
    (
        "idx_events_program_cursor",
        "events",
        "program_id, cursor",
        false,
    ),
    (
        "audit_events_program_id",
        "audit_events",
        "program_id, id",
        false,
    ),
];

/// SQLite table rebuilds: (table, [(text in its CREATE statement, replacement)]).
const SQLITE_REBUILDS: &[(&str, &[(&str, &str)])] = &[
    (
        "members",
        &[(
            "\"card_number\" varchar(32) NULL UNIQUE",
            "\"card_number\" varchar(32) NULL",
        )],
    ),
    (
        "orders",
        &[
            (
                "\"order_id\" varchar(64) NOT NULL PRIMARY KEY",
                "\"order_id\" varchar(64) NOT NULL",
            ),
            (
                "FOREIGN KEY (\"member_id\")",
                "PRIMARY KEY (\"program_id\", \"order_id\"), FOREIGN KEY (\"member_id\")",
            ),
        ],
    ),
    (
        "returns",
        &[(
            "PRIMARY KEY (\"order_id\", \"return_id\"), FOREIGN KEY (\"order_id\") REFERENCES \"orders\" (\"order_id\")",
            "PRIMARY KEY (\"program_id\", \"order_id\", \"return_id\"), FOREIGN KEY (\"program_id\", \"order_id\") REFERENCES \"orders\" (\"program_id\", \"order_id\")",
        )],
    ),
    (
        "offers",
        &[(
            "\"code\" varchar(64) NOT NULL UNIQUE",
            "\"code\" varchar(64) NOT NULL",
        )],
    ),
    (
        "promotion_usage",
        &[(
            "PRIMARY KEY (\"rule_id\", \"member_id\")",
            "PRIMARY KEY (\"program_id\", \"rule_id\", \"member_id\")",
        )],
    ),
];

/// PostgreSQL: the same key changes as statements.
const POSTGRES_KEYS: &[&str] = &[
    "ALTER TABLE members DROP CONSTRAINT members_card_number_key",
    "ALTER TABLE offers DROP CONSTRAINT offers_code_key",
    "ALTER TABLE returns DROP CONSTRAINT IF EXISTS returns_order_id_fkey",
    "ALTER TABLE returns DROP CONSTRAINT returns_pkey",
    "ALTER TABLE orders DROP CONSTRAINT orders_pkey",
    "ALTER TABLE orders ADD PRIMARY KEY (program_id, order_id)",
    "ALTER TABLE returns ADD PRIMARY KEY (program_id, order_id, return_id)",
    "ALTER TABLE returns ADD FOREIGN KEY (program_id, order_id) REFERENCES orders (program_id, order_id)",
    "ALTER TABLE promotion_usage DROP CONSTRAINT promotion_usage_pkey",
    "ALTER TABLE promotion_usage ADD PRIMARY KEY (program_id, rule_id, member_id)",
];

async fn one_string<C: ConnectionTrait>(db: &C, sql: &str, arg: &str) -> Result<String, DbErr> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            sql,
            [arg.into()],
        ))
        .await?
        .ok_or_else(|| DbErr::Migration(format!("{arg}: not in sqlite_master")))?;
    row.try_get_by_index(0)
}

/// Rebuilds SQLite table `table` from its CREATE statement with `edits` applied, keeping
/// its rows and indexes.
async fn rebuild_sqlite<C: ConnectionTrait>(
    db: &C,
    table: &str,
    edits: &[(&str, &str)],
) -> Result<(), DbErr> {
    let mut create = one_string(
        db,
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
        table,
    )
    .await?;
    for (from, to) in edits {
        if !create.contains(from) {
            return Err(DbErr::Migration(format!(
                "table {table} is not as this migration expects: no `{from}`"
            )));
        }
        create = create.replacen(from, to, 1);
    }
    let quoted = format!("\"{table}\"");
    let rebuilt = format!("\"{table}__rebuilt\"");
    let Some(at) = create.find(&quoted) else {
        return Err(DbErr::Migration(format!(
            "cannot find {table} in its CREATE"
        )));
    };
    create.replace_range(at..at + quoted.len(), &rebuilt);
    let indexes: Vec<String> = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            [table.into()],
        ))
        .await?
        .iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    let columns: Vec<String> = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT name FROM pragma_table_info(?)",
            [table.into()],
        ))
        .await?
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).map(|c| format!("\"{c}\"")))
        .collect::<Result<_, _>>()?;
    let columns = columns.join(", ");
    db.execute_unprepared(&create).await?;
    db.execute_unprepared(&format!(
        "INSERT INTO {rebuilt} ({columns}) SELECT {columns} FROM {quoted}"
    ))
    .await?;
    db.execute_unprepared(&format!("DROP TABLE {quoted}"))
        .await?;
    db.execute_unprepared(&format!("ALTER TABLE {rebuilt} RENAME TO {quoted}"))
        .await?;
    for index in indexes {
        db.execute_unprepared(&index).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// SQLite runs its own transaction, on a connection with foreign keys off
    /// ([`on_sqlite_without_foreign_keys`]); PostgreSQL one the migrator opens.
    fn use_transaction(&self) -> Option<bool> {
        None
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                // Its own transaction commits before the migrator records it: a run
                // stopped in between left the change made.
                if manager.has_table("programs").await? {
                    return Ok(());
                }
                on_sqlite_without_foreign_keys(manager, |db| Box::pin(up(db))).await
            }
            _ => up(manager.get_connection()).await,
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        match manager.get_database_backend() {
            DbBackend::Sqlite => {
                on_sqlite_without_foreign_keys(manager, |db| Box::pin(down(db))).await
            }
            _ => down(manager.get_connection()).await,
        }
    }
}

type Step<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DbErr>> + Send + 'a>>;

/// Runs `step` in one transaction on a connection of its own with foreign keys off, as
/// SQLite's procedure for changing a table's constraints requires (with them on, dropping
/// a parent table deletes its rows and renaming one rewrites its children's references);
/// the keys are checked before the commit.
async fn on_sqlite_without_foreign_keys(
    manager: &SchemaManager<'_>,
    step: impl for<'a> FnOnce(&'a DatabaseTransaction) -> Step<'a>,
) -> Result<(), DbErr> {
    let DatabaseExecutor::Connection(connection) = manager.get_connection() else {
        return Err(DbErr::Migration(
            "the programmes migration runs its own transaction on SQLite".into(),
        ));
    };
    let options = (*connection.get_sqlite_connection_pool().connect_options())
        .clone()
        .foreign_keys(false);
    let pool = sea_orm::sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| DbErr::Migration(format!("cannot open a migration connection: {e}")))?;
    let db = SqlxSqliteConnector::from_sqlx_sqlite_pool(pool);
    let txn = db.begin().await?;
    step(&txn).await?;
    let broken = txn
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "PRAGMA foreign_key_check",
        ))
        .await?;
    if !broken.is_empty() {
        return Err(DbErr::Migration(format!(
            "{} rows would break a foreign key",
            broken.len()
        )));
    }
    txn.commit().await?;
    db.close().await
}

/// Creates index `name` on `table` (`columns`), unique or not, partial when `condition`
/// is not empty.
async fn create_index<C: ConnectionTrait>(
    db: &C,
    name: &str,
    table: &str,
    columns: &str,
    unique: bool,
    condition: &str,
) -> Result<(), DbErr> {
    let unique = if unique { "UNIQUE " } else { "" };
    let partial = if condition.is_empty() {
        String::new()
    } else {
        format!(" WHERE {condition}")
    };
    db.execute_unprepared(&format!(
        "CREATE {unique}INDEX {name} ON {table} ({columns}){partial}"
    ))
    .await
    .map(|_| ())
}

/// The change, on `db` (a transaction).
async fn up<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let now = if postgres {
        "now()"
    } else {
        "strftime('%Y-%m-%d %H:%M:%f+00:00', 'now')"
    };
    db.execute_unprepared(
        "CREATE TABLE programs (id VARCHAR(64) NOT NULL PRIMARY KEY, \
         name VARCHAR(200) NOT NULL, settings TEXT NULL, \
         created_at TIMESTAMP WITH TIME ZONE NOT NULL)",
    )
    .await?;
    db.execute_unprepared(&format!(
        "INSERT INTO programs (id, name, settings, created_at) \
         VALUES ('default', 'Default programme', NULL, {now})"
    ))
    .await?;
    for table in SCOPED {
        db.execute_unprepared(&format!(
            "ALTER TABLE {table} ADD COLUMN program_id VARCHAR(64) NOT NULL DEFAULT 'default'"
        ))
        .await?;
    }
    // The catalogue version becomes one row per programme.
    db.execute_unprepared(
        "CREATE TABLE offer_catalogs (program_id VARCHAR(64) NOT NULL PRIMARY KEY, \
         version BIGINT NOT NULL)",
    )
    .await?;
    db.execute_unprepared(
        "INSERT INTO offer_catalogs (program_id, version) \
         SELECT 'default', COALESCE(MAX(version), 0) FROM offer_catalog",
    )
    .await?;
    db.execute_unprepared("DROP TABLE offer_catalog").await?;
    if postgres {
        for statement in POSTGRES_KEYS {
            db.execute_unprepared(statement).await?;
        }
    } else {
        for (table, edits) in SQLITE_REBUILDS {
            rebuild_sqlite(db, table, edits).await?;
        }
    }
    for (old, new, table, columns, unique, condition) in INDEXES {
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {old}"))
            .await?;
        create_index(db, new, table, columns, *unique, condition).await?;
    }
    for (name, table, columns, unique) in NEW_INDEXES {
        create_index(db, name, table, columns, *unique, "").await?;
    }
    Ok(())
}

/// Back to one programme per database; refused while a second programme exists.
async fn down<C: ConnectionTrait>(db: &C) -> Result<(), DbErr> {
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let others = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) FROM programs WHERE id <> 'default'",
        ))
        .await?
        .map(|r| r.try_get_by_index::<i64>(0))
        .transpose()?
        .unwrap_or(0);
    if others > 0 {
        return Err(DbErr::Migration(
            "cannot revert the programmes migration while programmes other than \
             `default` exist"
                .into(),
        ));
    }
    for (name, _, _, _) in NEW_INDEXES {
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
            .await?;
    }
    for (old, new, table, columns, unique, condition) in INDEXES {
        db.execute_unprepared(&format!("DROP INDEX IF EXISTS {new}"))
            .await?;
        let columns = columns.trim_start_matches("program_id, ");
        create_index(db, old, table, columns, *unique, condition).await?;
    }
    if postgres {
        for statement in [
            "ALTER TABLE promotion_usage DROP CONSTRAINT promotion_usage_pkey",
            "ALTER TABLE promotion_usage ADD PRIMARY KEY (rule_id, member_id)",
            "ALTER TABLE returns DROP CONSTRAINT IF EXISTS returns_program_id_order_id_fkey",
            "ALTER TABLE returns DROP CONSTRAINT returns_pkey",
            "ALTER TABLE orders DROP CONSTRAINT orders_pkey",
            "ALTER TABLE orders ADD PRIMARY KEY (order_id)",
            "ALTER TABLE returns ADD PRIMARY KEY (order_id, return_id)",
            "ALTER TABLE returns ADD FOREIGN KEY (order_id) REFERENCES orders (order_id)",
            "ALTER TABLE offers ADD CONSTRAINT offers_code_key UNIQUE (code)",
            "ALTER TABLE members ADD CONSTRAINT members_card_number_key UNIQUE (card_number)",
        ] {
            db.execute_unprepared(statement).await?;
        }
    } else {
        for (table, edits) in SQLITE_REBUILDS.iter().rev() {
            let reversed: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (*b, *a)).collect();
            rebuild_sqlite(db, table, &reversed).await?;
        }
    }
    for table in SCOPED {
        db.execute_unprepared(&format!("ALTER TABLE {table} DROP COLUMN program_id"))
            .await?;
    }
    db.execute_unprepared(
        "CREATE TABLE offer_catalog (id INTEGER NOT NULL PRIMARY KEY, version BIGINT NOT NULL)",
    )
    .await?;
    db.execute_unprepared(
        "INSERT INTO offer_catalog (id, version) \
         SELECT 1, COALESCE(MAX(version), 0) FROM offer_catalogs",
    )
    .await?;
    db.execute_unprepared("DROP TABLE offer_catalogs").await?;
    db.execute_unprepared("DROP TABLE programs").await?;
    Ok(())
}
