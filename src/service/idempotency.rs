//! Running a mutation at most once per idempotency key.
use serde::{Serialize, de::DeserializeOwned};

use super::Caller;
use crate::{
    domain::{MemberKey, RequestId},
    error::AppError,
    store::{
        Store, WriteTxn,
        idempotency::{self, Claim, IdempotencyKey},
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
            client_id: self.caller.client_id.clone(),
            method,
            request_id: self.request_id.as_str().to_owned(),
            fingerprint: self.fingerprint.clone(),
        }
    }
}

/// Either the response stored by an earlier identical request, or an open transaction
/// in which this request's key is claimed.
pub(super) enum Begun<T> {
    Replay(T),
    Fresh(WriteTxn, IdempotencyKey),
}

pub(super) async fn begin<T: DeserializeOwned>(
    store: &Store,
    mutation: &Mutation,
    method: &'static str,
) -> Result<Begun<T>, AppError> {
    claim(store.begin_write().await?, mutation, method).await
}

/// [`begin`] for a mutation of one member: it waits its turn behind this replica's
/// other calls for the member (`Store::begin_write_for`).
pub(super) async fn begin_for<T: DeserializeOwned>(
    store: &Store,
    mutation: &Mutation,
    method: &'static str,
    member: &MemberKey,
) -> Result<Begun<T>, AppError> {
    claim(store.begin_write_for(member).await?, mutation, method).await
}

async fn claim<T: DeserializeOwned>(
    txn: WriteTxn,
    mutation: &Mutation,
    method: &'static str,
) -> Result<Begun<T>, AppError> {
    let key = mutation.key(method);
    match idempotency::claim(&*txn, &key).await? {
        Claim::Claimed => Ok(Begun::Fresh(txn, key)),
        Claim::Replay(bytes) => Ok(Begun::Replay(decode(&bytes)?)),
    }
}

/// A stored response, as the call returned it.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    serde_json::from_slice(bytes).map_err(|e| AppError::Internal(e.into()))
}

/// Stores the response under the claimed key and commits the mutation with it.
pub(super) async fn finish<T: Serialize>(
    txn: WriteTxn,
    key: &IdempotencyKey,
    response: &T,
) -> Result<(), AppError> {
    let bytes = serde_json::to_vec(response).map_err(|e| AppError::Internal(e.into()))?;
    idempotency::complete(&*txn, key, bytes).await?;
    txn.commit().await
}
