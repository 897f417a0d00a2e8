//! Member rows: profile, consents and the stored balance.
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr,
    sea_query::{Expr, ExprTrait},
};

pub use super::entities::member::Model as MemberRow;
use super::entities::member::{ActiveModel, Column, Entity};
use crate::{
    domain::{MAX_BALANCE, MemberKey},
    error::AppError,
};

/// The column a key names and its value, for hand-written SQL over `members m` (which
/// must also filter `m.program_id`).
pub(super) fn key_column(key: &MemberKey) -> (&'static str, String) {
    match key {
        MemberKey::Id(id) => ("id", id.as_str().to_owned()),
        MemberKey::Card(card) => ("card_number", card.as_str().to_owned()),
    }
}

/// The rows of the members `keys` name, from `read` called with each column the keys
/// match ([`key_column`]) and that column's values: one statement per kind of key,
/// whatever their number.
pub(super) async fn read_by_column<T, Fut>(
    keys: &[MemberKey],
    mut read: impl FnMut(&'static str, Vec<String>) -> Fut,
) -> Result<Vec<T>, AppError>
where
    Fut: std::future::Future<Output = Result<Vec<T>, AppError>>,
{
    let mut groups: Vec<(&'static str, Vec<String>)> = Vec::new();
    for key in keys {
        let (by, value) = key_column(key);
        match groups.iter_mut().find(|(column, _)| *column == by) {
            Some((_, values)) => values.push(value),
            None => groups.push((by, vec![value])),
        }
    }
    let mut rows = Vec::with_capacity(keys.len());
    for (by, values) in groups {
        rows.extend(read(by, values).await?);
    }
    Ok(rows)
}

/// The member `key` names in `program`: a key of another programme finds nothing.
fn filter(program: &str, key: &MemberKey) -> sea_orm::sea_query::SimpleExpr {
    let by = match key {
        MemberKey::Id(id) => Column::Id.eq(id.as_str()),
        MemberKey::Card(card) => Column::CardNumber.eq(card.as_str()),
    };
    Column::ProgramId.eq(program).and(by)
}

/// A unique violation on `members` can only be the card number.
fn card_conflict(err: DbErr) -> AppError {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => AppError::CardNumberTaken,
        _ => err.into(),
    }
}

#[tracing::instrument(name = "db.members.insert", skip_all)]
pub async fn insert<C: ConnectionTrait>(db: &C, row: MemberRow) -> Result<(), AppError> {
    let active: ActiveModel = row.into();
    Entity::insert(active)
        .exec_without_returning(db)
        .await
        .map_err(card_conflict)?;
    Ok(())
}

pub async fn find<C: ConnectionTrait>(
    db: &C,
    program: &str,
    key: &MemberKey,
) -> Result<MemberRow, AppError> {
    Entity::find()
        .filter(filter(program, key))
        .one(db)
        .await?
        .ok_or(AppError::MemberNotFound)
}

/// Writes every profile column of `row` (not the balance columns).
pub async fn update_profile<C: ConnectionTrait>(db: &C, row: MemberRow) -> Result<(), AppError> {
    Entity::update_many()
        .col_expr(Column::CardNumber, Expr::value(row.card_number))
        .col_expr(Column::Name, Expr::value(row.name))
        .col_expr(Column::Email, Expr::value(row.email))
        .col_expr(Column::Phone, Expr::value(row.phone))
        .col_expr(Column::BirthYear, Expr::value(row.birth_year))
        .col_expr(Column::BirthMonth, Expr::value(row.birth_month))
        .col_expr(Column::BirthDay, Expr::value(row.birth_day))
        .col_expr(
            Column::ConsentEmailMarketing,
            Expr::value(row.consent_email_marketing),
        )
        .col_expr(
            Column::ConsentSmsMarketing,
            Expr::value(row.consent_sms_marketing),
        )
        .col_expr(Column::ConsentProfiling, Expr::value(row.consent_profiling))
        .col_expr(Column::Tags, Expr::value(row.tags))
        .col_expr(Column::UpdatedAt, Expr::value(row.updated_at))
        .filter(Column::Id.eq(row.id))
        .exec(db)
        .await
        .map_err(card_conflict)?;
    Ok(())
}

/// Members of `program` in id order (UUIDv7: enrolment order) after `after`.
pub async fn list<C: ConnectionTrait>(
    db: &C,
    program: &str,
    after: Option<&str>,
    limit: u64,
) -> Result<Vec<MemberRow>, AppError> {
    let mut query = Entity::find()
        .filter(Column::ProgramId.eq(program))
        .order_by_asc(Column::Id)
        .limit(limit);
    if let Some(after) = after {
        query = query.filter(Column::Id.gt(after));
    }
    Ok(query.all(db).await?)
}

/// Signed changes to a member's balances, applied in one statement.
pub use crate::domain::Balances as BalanceDelta;

/// Applies `delta` atomically (`SET available = available + …`), so concurrent changes
/// never lose an update; returns the row after the change. Takes the row lock, so it
/// also serialises everything else that touches this member's points.
pub async fn apply<C: ConnectionTrait>(
    db: &C,
    program: &str,
    key: &MemberKey,
    delta: BalanceDelta,
) -> Result<MemberRow, AppError> {
    let columns = [
        (Column::PointsAvailable, delta.available),
        (Column::PointsPending, delta.pending),
        (Column::PointsHeld, delta.held),
        (Column::LifetimeEarned, delta.lifetime),
    ];
    let mut update = Entity::update_many().filter(filter(program, key));
    for (column, change) in columns {
        update = update.col_expr(column, Expr::col(column).add(change));
        // Checked before the sum is made: a balance never passes MAX_BALANCE (SQLite
        // would turn an overflowing sum into a REAL, PostgreSQL would fail).
        if change > 0 {
            update = update.filter(Expr::col(column).lte(MAX_BALANCE.saturating_sub(change)));
        } else if change < 0 {
            update = update.filter(Expr::col(column).gte((-MAX_BALANCE).saturating_sub(change)));
        }
    }
    let rows = update.exec_with_returning(db).await?;
    match rows.into_iter().next() {
        Some(row) => Ok(row),
        // The member exists: the change would take a balance out of range.
        None => find(db, program, key)
            .await
            .and(Err(AppError::PointsOutOfRange)),
    }
}

/// What an accrual reads before it prices the basket, in one statement: the member's
/// row (locked), the current ruleset version and an earlier call with the same
/// idempotency key, if one committed.
pub struct AccrualStart {
    pub member: MemberRow,
    pub ruleset_version: Option<i64>,
    /// (fingerprint, response) of an earlier call with this key.
    pub earlier: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

#[tracing::instrument(name = "db.members.lock", skip_all)]
pub async fn lock_for_accrual<C: ConnectionTrait>(
    db: &C,
    program: &str,
    key: &MemberKey,
    idem: &super::idempotency::IdempotencyKey,
) -> Result<AccrualStart, AppError> {
    use sea_orm::{DbBackend, FromQueryResult};
    let (by, value) = key_column(key);
    let mut sql = format!(
        "SELECT m.*, {} AS current_ruleset_version, k.request_hash AS idem_hash, \
         k.response AS idem_response FROM members m LEFT JOIN idempotency_keys k \
         ON k.client_id = $2 AND k.method = $3 AND k.request_id = $4 \
         WHERE m.{by} = $1 AND m.program_id = $5",
        super::rules::CURRENT_VERSION_SQL
    );
    // SQLite: the write transaction (BEGIN IMMEDIATE) already excludes other writers.
    if db.get_database_backend() == DbBackend::Postgres {
        sql.push_str(" FOR UPDATE OF m");
    }
    let row = db
        .query_one_raw(super::statement(
            db,
            &sql,
            [
                value.into(),
                idem.client_id.clone().into(),
                idem.method.into(),
                idem.request_id.clone().into(),
                program.into(),
            ],
        ))
        .await?
        .ok_or(AppError::MemberNotFound)?;
    let member = MemberRow::from_query_result(&row, "")?;
    let ruleset_version: Option<i64> = row.try_get("", "current_ruleset_version")?;
    let hash: Option<Vec<u8>> = row.try_get("", "idem_hash")?;
    let response: Option<Vec<u8>> = row.try_get("", "idem_response")?;
    Ok(AccrualStart {
        member,
        ruleset_version,
        earlier: hash.map(|h| (h, response)),
    })
}

/// Reads the member and, on PostgreSQL, locks the row until the transaction ends (on
/// SQLite the write transaction already excludes other writers). Every transaction that
/// changes points locks the member before any lot or hold, so they cannot deadlock.
#[tracing::instrument(name = "db.members.lock", skip_all)]
pub async fn lock<C: ConnectionTrait>(
    db: &C,
    program: &str,
    key: &MemberKey,
) -> Result<MemberRow, AppError> {
    Entity::find()
        .filter(filter(program, key))
        .lock_exclusive()
        .one(db)
        .await?
        .ok_or(AppError::MemberNotFound)
}

/// Flips a referred member's referral from PENDING to REWARDED, once; returns the
/// referrer's id when this call did it.
pub async fn claim_referral<C: ConnectionTrait>(
    db: &C,
    referred_id: &str,
) -> Result<Option<String>, AppError> {
    let rows = Entity::update_many()
        .col_expr(Column::ReferralStatus, Expr::value("REWARDED"))
        .filter(Column::Id.eq(referred_id))
        .filter(Column::ReferralStatus.eq("PENDING"))
        .exec_with_returning(db)
        .await?;
    Ok(rows.into_iter().next().and_then(|m| m.referred_by))
}

/// The member of `program` who owns a referral code.
pub async fn find_by_referral_code<C: ConnectionTrait>(
    db: &C,
    program: &str,
    code: &str,
) -> Result<Option<MemberRow>, AppError> {
    Ok(Entity::find()
        .filter(Column::ProgramId.eq(program))
        .filter(Column::ReferralCode.eq(code))
        .one(db)
        .await?)
}

/// Removes the member's personal data (name, e-mail, phone, birthday, card, tags,
/// referral code); the id stays as the ledger's pseudonym and the balances are kept.
pub async fn erase<C: ConnectionTrait>(
    db: &C,
    id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), AppError> {
    let none: Option<String> = None;
    Entity::update_many()
        .col_expr(Column::CardNumber, Expr::value(none.clone()))
        .col_expr(Column::Name, Expr::value(none.clone()))
        .col_expr(Column::Email, Expr::value(none.clone()))
        .col_expr(Column::Phone, Expr::value(none.clone()))
        .col_expr(Column::ReferralCode, Expr::value(none))
        .col_expr(Column::BirthYear, Expr::value(Option::<i32>::None))
        .col_expr(Column::BirthMonth, Expr::value(Option::<i16>::None))
        .col_expr(Column::BirthDay, Expr::value(Option::<i16>::None))
        .col_expr(Column::Tags, Expr::value(""))
        .col_expr(Column::ConsentEmailMarketing, Expr::value(false))
        .col_expr(Column::ConsentSmsMarketing, Expr::value(false))
        .col_expr(Column::ConsentProfiling, Expr::value(false))
        .col_expr(Column::ErasedAt, Expr::value(Some(now)))
        .col_expr(Column::UpdatedAt, Expr::value(now))
        .filter(Column::Id.eq(id))
        .exec(db)
        .await?;
    Ok(())
}

/// Tags are stored as one comma-separated column.
pub fn split_tags(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}
