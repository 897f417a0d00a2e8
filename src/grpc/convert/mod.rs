//! Proto ⇄ domain conversions. Parsing happens here, once: past this point values are
//! valid by type. Every bad field becomes a field violation named by its proto path.
use chrono::{DateTime, Utc};
use prost::Message;
use sha2::{Digest, Sha256};

mod members;
mod points;

pub use members::{enroll, update};
pub use points::*;

use super::pb::{google::r#type::Date, loyalty::v1};
use crate::{
    domain::{
        BasketLine, Birthday, CardNumber, Channel, Consents, Currency, Email, EntryKind,
        MAX_POINTS, MemberId, MemberKey, MemberName, OfferStatus, Phone, RequestId, ShortId,
    },
    error::{AppError, FieldViolation},
    service::{
        AccrualReceipt, AccrueCommand, BalanceView, Caller, ExpiringSoon, LedgerEntryView, Member,
        MemberPatch, Mutation, NewMember,
        accrual::{MAX_BASKET_LINES, OfferOutcome},
        returns::{ReturnCommand, ReturnOutcome},
        spending::{
            AdjustCommand, AdjustReason, Adjustment, Confirmation, HoldCommand, HoldOutcome,
            RedeemCommand, Redemption,
        },
        views::HoldView,
    },
};

/// Collects every bad field of one request.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps the value, or records why the field is bad.
    pub fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(description) => {
                self.0.push(FieldViolation::new(field, description));
                None
            }
        }
    }

    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields reported so far.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|v| v.field.as_str())
    }

    pub fn into_error(self) -> AppError {
        AppError::InvalidArgument(self.0)
    }
}

/// SHA-256 of the request as encoded on the wire: "the same request" means the same bytes.
pub fn fingerprint<M: Message>(request: &M) -> Vec<u8> {
    Sha256::digest(request.encode_to_vec()).to_vec()
}

pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The range of `google.protobuf.Timestamp`: 0001-01-01T00:00:00Z to
/// 9999-12-31T23:59:59.999999999Z. A time outside it would be stored and then returned in
/// responses that conformant clients cannot read.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

fn from_timestamp(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, String> {
    u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000 && TIMESTAMP_SECONDS.contains(&ts.seconds))
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
        .ok_or_else(|| "must be a valid timestamp (years 1 to 9999)".into())
}

fn request_id(v: &mut Violations, raw: &str) -> Option<RequestId> {
    v.check("request_id", RequestId::parse(raw))
}

fn mutation(request_id: RequestId, caller: Caller, fingerprint: Vec<u8>) -> Mutation {
    Mutation {
        caller,
        request_id,
        fingerprint,
    }
}

pub fn member_key(
    v: &mut Violations,
    field: &str,
    member: Option<&v1::MemberRef>,
) -> Option<MemberKey> {
    match member.and_then(|m| m.r#ref.as_ref()) {
        Some(v1::member_ref::Ref::MemberId(id)) => v
            .check(format!("{field}.member_id"), MemberId::parse(id))
            .map(MemberKey::Id),
        Some(v1::member_ref::Ref::CardNumber(card)) => v
            .check(format!("{field}.card_number"), CardNumber::parse(card))
            .map(MemberKey::Card),
        None => {
            v.push(field, "must give member_id or card_number");
            None
        }
    }
}

/// Empty means "not given".
fn optional<T>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Option<Option<T>> {
    if raw.is_empty() {
        Some(None)
    } else {
        v.check(field, parse(raw)).map(Some)
    }
}

/// A known channel other than `CHANNEL_UNSPECIFIED`.
pub fn channel_of(raw: i32) -> Option<Channel> {
    match v1::Channel::try_from(raw) {
        Ok(v1::Channel::Pos) => Some(Channel::Pos),
        Ok(v1::Channel::Online) => Some(Channel::Online),
        Ok(v1::Channel::MobileApp) => Some(Channel::MobileApp),
        Ok(v1::Channel::CallCenter) => Some(Channel::CallCenter),
        Ok(v1::Channel::Unspecified) | Err(_) => None,
    }
}

/// The proto number of a stored channel name.
pub fn channel_number(name: &str) -> i32 {
    match name {
        "POS" => v1::Channel::Pos,
        "ONLINE" => v1::Channel::Online,
        "MOBILE_APP" => v1::Channel::MobileApp,
        "CALL_CENTER" => v1::Channel::CallCenter,
        _ => v1::Channel::Unspecified,
    }
    .into()
}

fn channel(v: &mut Violations, raw: i32) -> Option<Channel> {
    let channel = channel_of(raw);
    if channel.is_none() {
        v.push(
            "channel",
            "must be a known channel other than CHANNEL_UNSPECIFIED",
        );
    }
    channel
}

/// The idempotency part of a mutating request: its key, checked, and its fingerprint.
pub fn checked_mutation<M: Message>(
    v: &mut Violations,
    raw_request_id: &str,
    req: &M,
    caller: Caller,
) -> Option<Mutation> {
    request_id(v, raw_request_id).map(|rid| mutation(rid, caller, fingerprint(req)))
}

/// An optional timestamp, at storage precision; absent is `Some(None)`.
pub fn optional_time(
    v: &mut Violations,
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Option<Option<DateTime<Utc>>> {
    match ts {
        None => Some(None),
        Some(ts) => v
            .check(field, from_timestamp(ts))
            .map(|t| Some(crate::store::truncate(t))),
    }
}

/// Free text a person typed (a comment, a note): at most `max_chars` characters and no
/// control characters but line breaks and tabs (PostgreSQL stores no NUL, so both
/// backends refuse it here alike); empty is "not given".
pub fn free_text(
    v: &mut Violations,
    field: &str,
    raw: &str,
    max_chars: usize,
) -> Option<Option<String>> {
    let bad = raw
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'));
    if bad || raw.chars().count() > max_chars {
        v.push(
            field,
            format!("must be at most {max_chars} characters without control characters"),
        );
        return None;
    }
    Some((!raw.is_empty()).then(|| raw.to_owned()))
}

/// An optional id: empty is "not given".
pub fn optional_id(v: &mut Violations, field: &str, raw: &str) -> Option<Option<ShortId>> {
    optional(v, field, raw, ShortId::parse)
}

/// A proto enum value's name without its type prefix (`TOPIC_PRICE` → `PRICE`), the form
/// stored in the database; `None` for the `_UNSPECIFIED` zero. Buf's naming rules make
/// the prefix the same for every value of an enum.
pub fn short_name(full: &'static str, prefix: &str) -> Option<&'static str> {
    full.strip_prefix(prefix).filter(|s| *s != "UNSPECIFIED")
}

/// How an audit record names the member of a request.
pub fn member_target(m: Option<&v1::MemberRef>) -> String {
    match m.and_then(|m| m.r#ref.as_ref()) {
        Some(v1::member_ref::Ref::MemberId(id)) => format!("member:{id}"),
        Some(v1::member_ref::Ref::CardNumber(card)) => format!("card:{card}"),
        None => String::new(),
    }
}

/// POS clients act only for their own stores.
/// The one store-scope check, for every request that carries a store: a store-scoped
/// (POS) client must name one of its stores; other clients may name any store or none.
pub fn check_store(caller: &Caller, store_id: Option<&str>) -> Result<(), AppError> {
    match store_id.filter(|s| !s.is_empty()) {
        Some(store) if caller.may_act_for_store(store) => Ok(()),
        Some(_) => Err(AppError::PermissionDenied),
        None if caller.role == crate::auth::Role::Pos => Err(AppError::invalid(
            "store_id",
            "is required for a store-scoped client",
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::from_timestamp;

    #[test]
    fn timestamps_stay_within_the_protobuf_range() {
        let at = |seconds, nanos| from_timestamp(&prost_types::Timestamp { seconds, nanos });
        assert!(at(0, 0).is_ok());
        assert!(at(253_402_300_799, 999_999_999).is_ok());
        assert!(at(-62_135_596_800, 0).is_ok());
        assert!(at(253_402_300_800, 0).is_err());
        assert!(at(-62_135_596_801, 0).is_err());
        assert!(at(0, -1).is_err());
        assert!(at(0, 1_000_000_000).is_err());
    }
}
