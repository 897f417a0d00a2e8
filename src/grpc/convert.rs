//! Proto ⇄ domain conversions. Parsing happens here, once: past this point values are
//! valid by type. Every bad field becomes a field violation named by its proto path.
use chrono::{DateTime, Utc};
use prost::Message;
use sha2::{Digest, Sha256};

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
        points::{MAX_BASKET_LINES, OfferOutcome},
        returns::{ReturnCommand, ReturnOutcome},
        spending::{
            AdjustCommand, AdjustReason, Adjustment, Confirmation, HoldCommand, HoldOutcome,
            HoldView, RedeemCommand, Redemption,
        },
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

/// An all-zero or absent date means "not given".
fn birthday(v: &mut Violations, field: &str, date: Option<&Date>) -> Option<Option<Birthday>> {
    match date {
        None => Some(None),
        Some(d) if d.year == 0 && d.month == 0 && d.day == 0 => Some(None),
        Some(d) => v
            .check(
                field,
                Birthday::parse(d.year, d.month, d.day, Utc::now().date_naive()),
            )
            .map(Some),
    }
}

fn consents(c: Option<&v1::Consents>) -> Consents {
    c.map(|c| Consents {
        email_marketing: c.email_marketing,
        sms_marketing: c.sms_marketing,
        profiling: c.profiling,
    })
    .unwrap_or_default()
}

pub fn enroll(
    req: &v1::EnrollMemberRequest,
    caller: Caller,
) -> Result<(Mutation, NewMember), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let card = v.check("card_number", CardNumber::parse(&req.card_number));
    let name = v.check("name", MemberName::parse(&req.name));
    let email = optional(&mut v, "email", &req.email, Email::parse);
    let phone = optional(&mut v, "phone", &req.phone, Phone::parse);
    let birthday = birthday(&mut v, "birthday", req.birthday.as_ref());
    let referred_by_code = (!req.referred_by_code.is_empty()).then(|| req.referred_by_code.clone());
    if req.referred_by_code.chars().count() > 64
        || req.referred_by_code.chars().any(|c| c.is_control())
    {
        v.push(
            "referred_by_code",
            "must be at most 64 characters without control characters",
        );
    }
    match (rid, card, name, email, phone, birthday) {
        (Some(rid), Some(card_number), Some(name), Some(email), Some(phone), Some(birthday))
            if v.is_empty() =>
        {
            Ok((
                mutation(rid, caller, fingerprint(req)),
                NewMember {
                    card_number,
                    name,
                    email,
                    phone,
                    birthday,
                    consents: consents(req.consents.as_ref()),
                    referred_by_code,
                },
            ))
        }
        _ => Err(v.into_error()),
    }
}

/// Member tags: at most 20, each 1 to 32 characters of [a-z0-9_-] (upper case is folded).
fn tags(raw: &[String]) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = raw.iter().map(|t| t.trim().to_lowercase()).collect();
    if tags.len() > 20
        || tags.iter().any(|t| {
            t.is_empty()
                || t.len() > 32
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
    {
        return Err("at most 20 tags of 1 to 32 characters of a-z, 0-9, _ and -".into());
    }
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Update paths callers may name.
const UPDATABLE: &[&str] = &[
    "card_number",
    "name",
    "email",
    "phone",
    "birthday",
    "consents",
    "consents.email_marketing",
    "consents.sms_marketing",
    "consents.profiling",
    "tags",
];

pub fn update(
    req: &v1::UpdateMemberRequest,
    caller: Caller,
) -> Result<(Mutation, MemberId, MemberPatch), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let Some(member) = req.member.as_ref() else {
        v.push("member", "is required");
        return Err(v.into_error());
    };
    let id = v.check("member.member_id", MemberId::parse(&member.member_id));
    let given: Vec<String> = req
        .update_mask
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_default();
    let paths: Vec<&str> = if given.iter().any(|p| p == "*") {
        UPDATABLE
            .iter()
            .filter(|p| !p.starts_with("consents."))
            .copied()
            .collect()
    } else if given.is_empty() {
        // AIP-134: no mask means every field that was given a value.
        let mut implied = Vec::new();
        for (path, set) in [
            ("card_number", !member.card_number.is_empty()),
            ("name", !member.name.is_empty()),
            ("email", !member.email.is_empty()),
            ("phone", !member.phone.is_empty()),
            ("birthday", member.birthday.is_some()),
            ("consents", member.consents.is_some()),
            ("tags", !member.tags.is_empty()),
        ] {
            if set {
                implied.push(path);
            }
        }
        implied
    } else {
        given.iter().map(String::as_str).collect()
    };
    if paths.is_empty() {
        v.push("update_mask", "names no field to change");
    }
    let mut patch = MemberPatch::default();
    let consents = member.consents.unwrap_or_default();
    for path in paths {
        match path {
            "card_number" => {
                patch.card_number =
                    v.check("member.card_number", CardNumber::parse(&member.card_number))
            }
            "name" => patch.name = v.check("member.name", MemberName::parse(&member.name)),
            "email" => patch.email = optional(&mut v, "member.email", &member.email, Email::parse),
            "phone" => patch.phone = optional(&mut v, "member.phone", &member.phone, Phone::parse),
            "birthday" => {
                patch.birthday = birthday(&mut v, "member.birthday", member.birthday.as_ref())
            }
            "consents" => {
                patch.email_marketing = Some(consents.email_marketing);
                patch.sms_marketing = Some(consents.sms_marketing);
                patch.profiling = Some(consents.profiling);
            }
            "consents.email_marketing" => patch.email_marketing = Some(consents.email_marketing),
            "consents.sms_marketing" => patch.sms_marketing = Some(consents.sms_marketing),
            "consents.profiling" => patch.profiling = Some(consents.profiling),
            "tags" => patch.tags = v.check("member.tags", tags(&member.tags)),
            other => v.push(
                "update_mask",
                format!("cannot update {other:?}; allowed: {}", UPDATABLE.join(", ")),
            ),
        }
    }
    match (rid, id) {
        (Some(rid), Some(id)) if v.is_empty() => {
            Ok((mutation(rid, caller, fingerprint(req)), id, patch))
        }
        _ => Err(v.into_error()),
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

fn basket_line(v: &mut Violations, i: usize, line: &v1::BasketLine) -> Option<BasketLine> {
    let field = |name: &str| format!("lines[{i}].{name}");
    let line_id = v.check(field("line_id"), ShortId::parse(&line.line_id));
    let sku = v.check(field("sku"), ShortId::parse(&line.sku));
    let category = optional(v, &field("category"), &line.category, ShortId::parse);
    let (line_id, sku, category) = (line_id?, sku?, category?);
    match BasketLine::new(
        line_id,
        sku,
        category,
        line.quantity,
        line.unit_price_minor,
        line.discount_minor,
    ) {
        Ok(l) => Some(l),
        Err((name, description)) => {
            v.push(field(name), description);
            None
        }
    }
}

/// The basket shared by `Accrue` and `QuoteAccrual`.
pub struct BasketFields<'a> {
    pub member: Option<&'a v1::MemberRef>,
    pub order_id: &'a str,
    pub store_id: &'a str,
    pub channel: i32,
    pub currency: &'a str,
    pub lines: &'a [v1::BasketLine],
    pub occurred_at: Option<&'a prost_types::Timestamp>,
    pub offer_codes: &'a [String],
}

pub fn basket(v: &mut Violations, b: BasketFields<'_>) -> Option<AccrueCommand> {
    let member = member_key(v, "member", b.member);
    let order_id = v.check("order_id", ShortId::parse(b.order_id));
    let store_id = v.check("store_id", ShortId::parse(b.store_id));
    let channel = channel(v, b.channel);
    let currency = v.check("currency", Currency::parse(b.currency));
    if b.lines.is_empty() || b.lines.len() > MAX_BASKET_LINES {
        v.push("lines", format!("must have 1 to {MAX_BASKET_LINES} lines"));
    }
    let lines: Vec<Option<BasketLine>> = b
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| basket_line(v, i, l))
        .collect();
    let occurred_at = match b.occurred_at {
        None => Some(None),
        Some(ts) => v.check("occurred_at", from_timestamp(ts)).map(Some),
    };
    let lines: Option<Vec<BasketLine>> = lines.into_iter().collect();
    if b.offer_codes.len() > 20 {
        v.push("offer_codes", "at most 20 codes");
    }
    for (i, code) in b.offer_codes.iter().enumerate() {
        if let Err(why) = ShortId::parse(code) {
            v.push(format!("offer_codes[{i}]"), why);
        }
    }
    Some(AccrueCommand {
        offer_codes: b.offer_codes.to_vec(),
        member: member?,
        order_id: order_id?,
        store_id: store_id?,
        channel: channel?,
        currency: currency?,
        lines: lines?,
        occurred_at: occurred_at?,
    })
}

pub fn accrue(
    req: &v1::AccrueRequest,
    caller: Caller,
) -> Result<(Mutation, AccrueCommand), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let cmd = basket(
        &mut v,
        BasketFields {
            member: req.member.as_ref(),
            order_id: &req.order_id,
            store_id: &req.store_id,
            channel: req.channel,
            currency: &req.currency,
            lines: &req.lines,
            occurred_at: req.occurred_at.as_ref(),
            offer_codes: &req.offer_codes,
        },
    );
    match (rid, cmd) {
        (Some(rid), Some(cmd)) if v.is_empty() => {
            Ok((mutation(rid, caller, fingerprint(req)), cmd))
        }
        _ => Err(v.into_error()),
    }
}

pub fn quote(req: &v1::QuoteAccrualRequest) -> Result<AccrueCommand, AppError> {
    let mut v = Violations::default();
    let cmd = basket(
        &mut v,
        BasketFields {
            member: req.member.as_ref(),
            order_id: &req.order_id,
            store_id: &req.store_id,
            channel: req.channel,
            currency: &req.currency,
            lines: &req.lines,
            occurred_at: req.occurred_at.as_ref(),
            offer_codes: &req.offer_codes,
        },
    );
    match cmd {
        Some(cmd) if v.is_empty() => Ok(cmd),
        _ => Err(v.into_error()),
    }
}

fn offer_status(s: OfferStatus) -> v1::OfferStatus {
    match s {
        OfferStatus::Applied => v1::OfferStatus::Applied,
        OfferStatus::UnknownCode => v1::OfferStatus::UnknownCode,
        OfferStatus::NotEligible => v1::OfferStatus::NotEligible,
        OfferStatus::Expired => v1::OfferStatus::Expired,
        OfferStatus::WrongChannel => v1::OfferStatus::WrongChannel,
        OfferStatus::LimitReached => v1::OfferStatus::LimitReached,
        OfferStatus::BasketTooSmall => v1::OfferStatus::BasketTooSmall,
        OfferStatus::NoMatchingItems => v1::OfferStatus::NoMatchingItems,
        OfferStatus::NotStackable => v1::OfferStatus::NotStackable,
    }
}

pub fn offer_results(outcomes: Vec<OfferOutcome>) -> Vec<v1::OfferResult> {
    outcomes
        .into_iter()
        .map(|o| v1::OfferResult {
            code: o.effect.code,
            offer_id: o.effect.offer_id.unwrap_or_default(),
            status: offer_status(o.effect.status).into(),
            points: o.points,
            discount_minor: o.effect.discount_minor,
            line_discounts: o
                .effect
                .discounts
                .into_iter()
                .map(|(line_id, discount_minor)| v1::LineDiscount {
                    line_id,
                    discount_minor,
                })
                .collect(),
        })
        .collect()
}

pub fn line_points(lines: Vec<crate::domain::LineEarning>) -> Vec<v1::LinePoints> {
    lines
        .into_iter()
        .map(|l| v1::LinePoints {
            line_id: l.line_id,
            eligible_minor: l.eligible_minor,
            points: l.points,
            rule_ids: l.rule_ids,
        })
        .collect()
}

impl From<Member> for v1::Member {
    fn from(m: Member) -> Self {
        Self {
            member_id: m.member_id,
            card_number: m.card_number.unwrap_or_default(),
            name: m.name.unwrap_or_default(),
            email: m.email.unwrap_or_default(),
            phone: m.phone.unwrap_or_default(),
            birthday: match (m.birth_month, m.birth_day) {
                (Some(month), Some(day)) => Some(Date {
                    year: m.birth_year.unwrap_or(0),
                    month: i32::try_from(month).unwrap_or(0),
                    day: i32::try_from(day).unwrap_or(0),
                }),
                _ => None,
            },
            consents: Some(v1::Consents {
                email_marketing: m.consent_email_marketing,
                sms_marketing: m.consent_sms_marketing,
                profiling: m.consent_profiling,
            }),
            enroll_time: Some(timestamp(m.enrolled_at)),
            update_time: Some(timestamp(m.updated_at)),
            referral_code: m.referral_code.unwrap_or_default(),
            tier_id: m.tier_id.unwrap_or_default(),
            tags: m.tags,
            erase_time: m.erased_at.map(timestamp),
        }
    }
}

impl From<BalanceView> for v1::Balance {
    fn from(b: BalanceView) -> Self {
        Self {
            available: b.available,
            lifetime_earned: b.lifetime_earned,
            pending: b.pending,
            held: b.held,
        }
    }
}

impl From<AccrualReceipt> for v1::AccrueResponse {
    fn from(r: AccrualReceipt) -> Self {
        Self {
            transaction_id: r.transaction_id,
            member_id: r.member_id,
            points_earned: r.points_earned,
            pending_points: r.pending_points,
            lines: line_points(r.lines),
            balance: Some(r.balance.into()),
            ruleset_version: r.ruleset_version,
            tier_id: r.tier_id.unwrap_or_default(),
            offers: offer_results(r.offers),
        }
    }
}

fn entry_kind(kind: EntryKind) -> v1::LedgerEntryKind {
    match kind {
        EntryKind::Accrual => v1::LedgerEntryKind::Accrual,
        EntryKind::PendingRelease => v1::LedgerEntryKind::PendingRelease,
        EntryKind::Redemption => v1::LedgerEntryKind::Redemption,
        EntryKind::Hold => v1::LedgerEntryKind::Hold,
        EntryKind::HoldRelease => v1::LedgerEntryKind::HoldRelease,
        EntryKind::Return => v1::LedgerEntryKind::Return,
        EntryKind::ReturnRefund => v1::LedgerEntryKind::ReturnRefund,
        EntryKind::Adjustment => v1::LedgerEntryKind::Adjustment,
        EntryKind::Expiry => v1::LedgerEntryKind::Expiry,
        EntryKind::Bonus => v1::LedgerEntryKind::Bonus,
    }
}

impl From<LedgerEntryView> for v1::LedgerEntry {
    fn from(e: LedgerEntryView) -> Self {
        Self {
            entry_id: e.entry_id.to_string(),
            member_id: e.member_id,
            transaction_id: e.transaction_id,
            kind: entry_kind(e.kind).into(),
            points: e.points,
            balance_after: e.balance_after,
            order_id: e.order_id.unwrap_or_default(),
            store_id: e.store_id.unwrap_or_default(),
            create_time: Some(timestamp(e.created_at)),
            pending_delta: e.pending_delta,
            held_delta: e.held_delta,
            reason_code: e.reason_code.unwrap_or_default(),
            note: e.note.unwrap_or_default(),
            hold_id: e.hold_id.unwrap_or_default(),
            return_id: e.return_id.unwrap_or_default(),
        }
    }
}

fn positive_points(v: &mut Violations, field: &str, points: i64) -> Option<i64> {
    v.check(
        field,
        if (1..=MAX_POINTS).contains(&points) {
            Ok(points)
        } else {
            Err(format!("must be from 1 to {MAX_POINTS}"))
        },
    )
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

fn hold_id(v: &mut Violations, raw: &str) -> Option<String> {
    v.check(
        "hold_id",
        MemberId::parse(raw)
            .map(|id| id.as_str().to_owned())
            .map_err(|_| "must be a hold id (UUID)".to_string()),
    )
}

pub fn redeem(
    req: &v1::RedeemRequest,
    caller: Caller,
) -> Result<(Mutation, RedeemCommand), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let member = member_key(&mut v, "member", req.member.as_ref());
    let points = positive_points(&mut v, "points", req.points);
    let order_id = optional_id(&mut v, "order_id", &req.order_id);
    let store_id = optional_id(&mut v, "store_id", &req.store_id);
    match (rid, member, points, order_id, store_id) {
        (Some(rid), Some(member), Some(points), Some(order_id), Some(store_id)) if v.is_empty() => {
            Ok((
                mutation(rid, caller, fingerprint(req)),
                RedeemCommand {
                    member,
                    points,
                    order_id,
                    store_id,
                },
            ))
        }
        _ => Err(v.into_error()),
    }
}

/// Shortest hold a caller may ask for.
const MIN_HOLD_TTL_MS: i64 = 10;

pub fn create_hold(
    req: &v1::CreateHoldRequest,
    caller: Caller,
) -> Result<(Mutation, HoldCommand), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let member = member_key(&mut v, "member", req.member.as_ref());
    let points = positive_points(&mut v, "points", req.points);
    let order_id = optional_id(&mut v, "order_id", &req.order_id);
    let store_id = optional_id(&mut v, "store_id", &req.store_id);
    let ttl = match &req.ttl {
        None => Some(None),
        Some(d) => v
            .check(
                "ttl",
                (d.seconds >= 0 && (0..1_000_000_000).contains(&d.nanos))
                    .then(|| {
                        // `try_seconds`: a huge duration is refused, never a panic.
                        chrono::Duration::try_seconds(d.seconds)?
                            .checked_add(&chrono::Duration::nanoseconds(i64::from(d.nanos)))
                    })
                    .flatten()
                    .filter(|t| t.num_milliseconds() >= MIN_HOLD_TTL_MS)
                    .ok_or_else(|| {
                        format!("must be at least {MIN_HOLD_TTL_MS} ms and a valid duration")
                    }),
            )
            .map(Some),
    };
    match (rid, member, points, order_id, store_id, ttl) {
        (Some(rid), Some(member), Some(points), Some(order_id), Some(store_id), Some(ttl))
            if v.is_empty() =>
        {
            Ok((
                mutation(rid, caller, fingerprint(req)),
                HoldCommand {
                    member,
                    points,
                    order_id,
                    store_id,
                    ttl,
                },
            ))
        }
        _ => Err(v.into_error()),
    }
}

pub fn capture_hold(
    req: &v1::CaptureHoldRequest,
    caller: Caller,
) -> Result<(Mutation, String, Option<i64>), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let hold = hold_id(&mut v, &req.hold_id);
    if req.points < 0 {
        v.push(
            "points",
            "must not be negative (0 captures everything held)",
        );
    }
    match (rid, hold) {
        (Some(rid), Some(hold)) if v.is_empty() => Ok((
            mutation(rid, caller, fingerprint(req)),
            hold,
            (req.points > 0).then_some(req.points),
        )),
        _ => Err(v.into_error()),
    }
}

pub fn void_hold(
    req: &v1::VoidHoldRequest,
    caller: Caller,
) -> Result<(Mutation, String), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let hold = hold_id(&mut v, &req.hold_id);
    match (rid, hold) {
        (Some(rid), Some(hold)) if v.is_empty() => {
            Ok((mutation(rid, caller, fingerprint(req)), hold))
        }
        _ => Err(v.into_error()),
    }
}

pub fn return_items(
    req: &v1::ReturnItemsRequest,
    caller: Caller,
) -> Result<(Mutation, ReturnCommand), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let order_id = v.check("order_id", ShortId::parse(&req.order_id));
    let return_id = v.check("return_id", ShortId::parse(&req.return_id));
    if req.lines.is_empty() || req.lines.len() > MAX_BASKET_LINES {
        v.push("lines", format!("must have 1 to {MAX_BASKET_LINES} lines"));
    }
    let lines: Vec<Option<(ShortId, i64)>> = req
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let id = v.check(format!("lines[{i}].line_id"), ShortId::parse(&l.line_id));
            let q = positive_points(&mut v, &format!("lines[{i}].quantity"), l.quantity);
            Some((id?, q?))
        })
        .collect();
    let lines: Option<Vec<(ShortId, i64)>> = lines.into_iter().collect();
    match (rid, order_id, return_id, lines) {
        (Some(rid), Some(order_id), Some(return_id), Some(lines)) if v.is_empty() => Ok((
            mutation(rid, caller, fingerprint(req)),
            ReturnCommand {
                order_id,
                return_id,
                lines,
            },
        )),
        _ => Err(v.into_error()),
    }
}

pub fn adjust(
    req: &v1::AdjustPointsRequest,
    caller: Caller,
) -> Result<(Mutation, AdjustCommand), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let member = member_key(&mut v, "member", req.member.as_ref());
    if req.points == 0 || req.points.unsigned_abs() > MAX_POINTS.unsigned_abs() {
        v.push(
            "points",
            format!("must not be 0, and at most {MAX_POINTS} either way"),
        );
    }
    let reason = match v1::AdjustReason::try_from(req.reason_code) {
        Ok(v1::AdjustReason::Goodwill) => Some(AdjustReason::Goodwill),
        Ok(v1::AdjustReason::Correction) => Some(AdjustReason::Correction),
        Ok(v1::AdjustReason::Migration) => Some(AdjustReason::Migration),
        Ok(v1::AdjustReason::Unspecified) | Err(_) => {
            v.push("reason_code", "must be GOODWILL, CORRECTION or MIGRATION");
            None
        }
    };
    if req.note.chars().count() > 500 || req.note.chars().any(char::is_control) {
        v.push(
            "note",
            "must be at most 500 characters without control characters",
        );
    }
    match (rid, member, reason) {
        (Some(rid), Some(member), Some(reason)) if v.is_empty() => Ok((
            mutation(rid, caller, fingerprint(req)),
            AdjustCommand {
                member,
                points: req.points,
                reason,
                note: (!req.note.is_empty()).then(|| req.note.clone()),
            },
        )),
        _ => Err(v.into_error()),
    }
}

pub fn confirm_order(
    req: &v1::ConfirmOrderRequest,
    caller: Caller,
) -> Result<(Mutation, ShortId), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let order_id = v.check("order_id", ShortId::parse(&req.order_id));
    match (rid, order_id) {
        (Some(rid), Some(order_id)) if v.is_empty() => {
            Ok((mutation(rid, caller, fingerprint(req)), order_id))
        }
        _ => Err(v.into_error()),
    }
}

fn hold_status(status: &str) -> v1::HoldStatus {
    match status {
        "ACTIVE" => v1::HoldStatus::Active,
        "CAPTURED" => v1::HoldStatus::Captured,
        "VOIDED" => v1::HoldStatus::Voided,
        "EXPIRED" => v1::HoldStatus::Expired,
        _ => v1::HoldStatus::Unspecified,
    }
}

impl From<HoldView> for v1::Hold {
    fn from(h: HoldView) -> Self {
        Self {
            hold_id: h.hold_id,
            member_id: h.member_id,
            points: h.points,
            captured_points: h.captured_points,
            status: hold_status(&h.status).into(),
            order_id: h.order_id.unwrap_or_default(),
            expire_time: Some(timestamp(h.expires_at)),
        }
    }
}

impl From<Redemption> for v1::RedeemResponse {
    fn from(r: Redemption) -> Self {
        Self {
            transaction_id: r.transaction_id,
            member_id: r.member_id,
            points: r.points,
            value_minor: r.value_minor,
            currency: r.currency,
            balance: Some(r.balance.into()),
        }
    }
}

impl From<HoldOutcome> for v1::CreateHoldResponse {
    fn from(o: HoldOutcome) -> Self {
        Self {
            hold: Some(o.hold.into()),
            balance: Some(o.balance.into()),
        }
    }
}

impl From<HoldOutcome> for v1::CaptureHoldResponse {
    fn from(o: HoldOutcome) -> Self {
        Self {
            transaction_id: o.transaction_id,
            hold: Some(o.hold.into()),
            value_minor: o.value_minor,
            balance: Some(o.balance.into()),
        }
    }
}

impl From<HoldOutcome> for v1::VoidHoldResponse {
    fn from(o: HoldOutcome) -> Self {
        Self {
            hold: Some(o.hold.into()),
            balance: Some(o.balance.into()),
        }
    }
}

impl From<ReturnOutcome> for v1::ReturnItemsResponse {
    fn from(r: ReturnOutcome) -> Self {
        Self {
            transaction_id: r.transaction_id,
            member_id: r.member_id,
            points_reversed: r.points_reversed,
            points_charged: r.points_charged,
            shortfall_points: r.shortfall,
            points_waived: r.points_waived,
            points_refunded: r.points_refunded,
            balance: Some(r.balance.into()),
            shortfall_recovered_points: r.shortfall_recovered,
        }
    }
}

impl From<Adjustment> for v1::AdjustPointsResponse {
    fn from(a: Adjustment) -> Self {
        Self {
            transaction_id: a.transaction_id,
            member_id: a.member_id,
            balance: Some(a.balance.into()),
        }
    }
}

impl From<Confirmation> for v1::ConfirmOrderResponse {
    fn from(c: Confirmation) -> Self {
        Self {
            member_id: c.member_id,
            points_released: c.points_released,
            balance: Some(c.balance.into()),
        }
    }
}

impl From<ExpiringSoon> for v1::ExpiringPoints {
    fn from(e: ExpiringSoon) -> Self {
        Self {
            points: e.points,
            first_expire_time: e.first_expiry.map(timestamp),
        }
    }
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
