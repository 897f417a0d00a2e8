//! Stored responses of mutations, keyed by (client, method, request_id).
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, TryInsertResult};

use super::entities::idempotency_key::{ActiveModel, Entity};
use crate::error::AppError;

/// The identity and fingerprint of one mutation.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub client_id: String,
    pub method: &'static str,
    pub request_id: String,
    /// SHA-256 of the request as the caller sent it.
    pub fingerprint: Vec<u8>,
}

/// Inserts the key with its response; false when it exists already.
async fn insert<C: ConnectionTrait>(
    txn: &C,
    key: &IdempotencyKey,
    response: Vec<u8>,
) -> Result<bool, AppError> {
    let row = ActiveModel {
        client_id: Set(key.client_id.clone()),
        method: Set(key.method.to_owned()),
        request_id: Set(key.request_id.clone()),
        request_hash: Set(key.fingerprint.clone()),
        response: Set(Some(response)),
        created_at: Set(crate::store::wall_now()),
    };
    let inserted = Entity::insert(row)
        .on_conflict_do_nothing()
        .exec_without_returning(txn)
        .await?;
    Ok(matches!(inserted, TryInsertResult::Inserted(n) if n > 0))
}

/// Stores a completed key in the mutation's transaction; false when the key exists (a
/// concurrent call with the same key committed first: the caller rolls back and answers
/// with that call's response).
#[tracing::instrument(name = "db.idempotency.insert", skip_all)]
pub async fn insert_completed<C: ConnectionTrait>(
    txn: &C,
    key: &IdempotencyKey,
    response: Vec<u8>,
) -> Result<bool, AppError> {
    insert(txn, key, response).await
}

/// What an earlier call with this key means for this one: its stored response (same
/// request), or IDEMPOTENCY_KEY_REUSED (a different request).
pub fn judge(
    key: &IdempotencyKey,
    fingerprint: &[u8],
    response: Option<Vec<u8>>,
) -> Result<Vec<u8>, AppError> {
    if fingerprint != key.fingerprint.as_slice() {
        return Err(AppError::IdempotencyKeyReused);
    }
    response.ok_or_else(|| {
        AppError::Internal(anyhow::anyhow!(
            "committed idempotency key without response"
        ))
    })
}

/// The committed outcome of a key, if any.
pub async fn committed<C: ConnectionTrait>(
    db: &C,
    key: &IdempotencyKey,
) -> Result<Option<Result<Vec<u8>, AppError>>, AppError> {
    Ok(Entity::find_by_id((
        key.client_id.clone(),
        key.method.to_owned(),
        key.request_id.clone(),
    ))
    .one(db)
    .await?
    .map(|row| judge(key, &row.request_hash, row.response)))
}
