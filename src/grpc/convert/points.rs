//! PointsService conversions: baskets, accruals and quotes, spending, holds, returns,
//! adjustments, and balances and statements as sent.
use super::*;

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
