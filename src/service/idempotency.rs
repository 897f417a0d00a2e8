//! Running a mutation at most once per idempotency key.
use serde::{Serialize, de::DeserializeOwned};

use super::Caller;
use crate::{
    domain::{MemberKey, RequestId},
    error::AppError,
    store::{
        Store, WriteTxn,
        idempotency::{self, IdempotencyKey},
    },
};

/// The idempotency part of every mutating request.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub caller: Caller,
    pub request_id: RequestId,
    /// SHA-256 of the request as sent; a retry must send the same bytes.
    pub fingerprint: Vec<u8>,
}

impl Mutation {
    pub(super) fn key(&self, method: &'static str) -> IdempotencyKey {
        IdempotencyKey {
            client_id: self.caller.idempotency_owner(),
            method,
            request_id: self.request_id.as_str().to_owned(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// Either the response stored by an earlier identical request, or an open transaction
/// in which this request runs.
pub(super) enum Begun<T> {
    Replay(T),
    Fresh(WriteTxn),
}

/// Runs a mutation at most once per idempotency key (after the request itself was
/// validated). This is the one mechanism every mutation uses (the accrual paths look the key up in the statement that locks the
/// member, one or a batch at a time, to the same effect):
/// - the key is looked up inside the mutation's transaction ([`begin`]): a committed key
///   answers with its stored response, or IDEMPOTENCY_KEY_REUSED for another request;
/// - the key is stored with the response in the same transaction ([`finish`]), so the
///   mutation and its key commit together or not at all;
/// - when the mutation fails (its key taken by a concurrent copy that committed first,
///   or anything that copy's writes caused), the copy's committed response is the answer.
pub(super) async fn once<T: DeserializeOwned>(
    store: &Store,
    key: &IdempotencyKey,
    work: impl Future<Output = Result<T, AppError>>,
) -> Result<T, AppError> {
    let err = match work.await {
        Ok(done) => return Ok(done),
        Err(err) => err,
    };
    match idempotency::committed(store.conn(), key).await {
        Ok(Some(Ok(bytes))) => {
            if matches!(err, AppError::Internal(_)) {
                tracing::warn!(error = %err, "a call failed; a concurrent copy's answer stands");
            }
            decode(&bytes)
        }
        Ok(Some(Err(reused))) => Err(reused),
        // Nothing committed, or the lookup failed too: the call's own error tells more.
        Ok(None) | Err(_) => Err(err),
    }
}

/// Opens the mutation's transaction and looks its key up.
pub(super) async fn begin<T: DeserializeOwned>(
    store: &Store,
    key: &IdempotencyKey,
) -> Result<Begun<T>, AppError> {
    look_up(store.begin_write().await?, key).await
}

/// [`begin`] for a mutation of one member: it waits its turn behind this replica's
/// other calls for the member (`Store::begin_write_for`).
pub(super) async fn begin_for<T: DeserializeOwned>(
    store: &Store,
    key: &IdempotencyKey,
    member: &MemberKey,
) -> Result<Begun<T>, AppError> {
    look_up(store.begin_write_for(member).await?, key).await
}

async fn look_up<T: DeserializeOwned>(
    txn: WriteTxn,
    key: &IdempotencyKey,
) -> Result<Begun<T>, AppError> {
    match idempotency::committed(&*txn, key).await? {
        Some(earlier) => Ok(Begun::Replay(decode(&earlier?)?)),
        None => Ok(Begun::Fresh(txn)),
    }
}

/// A stored response, as the call returned it.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| AppError::Internal(e.into()))
}

/// Stores the response under the key and commits the mutation with it. A concurrent
/// copy that stored the key first makes this fail (and roll back); [`once`] then
/// answers with that copy's response.
pub(super) async fn finish<T: Serialize>(
    txn: WriteTxn,
    key: &IdempotencyKey,
    response: &T,
) -> Result<(), AppError> {
    let bytes = serde_json::to_vec(response).map_err(|e| AppError::Internal(e.into()))?;
    if !idempotency::insert_completed(&*txn, key, bytes).await? {
        return Err(AppError::Internal(anyhow::anyhow!(
            "idempotency key committed concurrently"
        )));
    }
    txn.commit().await
}
