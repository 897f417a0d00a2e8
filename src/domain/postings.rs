//! The planners: each money movement as a [`Posting`], from what its use case read under
//! the member's lock. Pure: `now` and every balance and lot come in as arguments.
use super::{
    EntryKind, LotRemainder, LotSource, ReturnPlan, Ruleset,
    ledger::{Credit, Insufficient, LotOp, Posting},
};

/// Points as payment: a REDEMPTION entry, burnt from the lots first-expiring first.
pub fn plan_redeem(
    mut p: Posting,
    points: i64,
    order_id: Option<String>,
    store_id: Option<String>,
    spendable: &[LotRemainder],
) -> Result<Posting, Insufficient> {
    let entry = p.spend(EntryKind::Redemption, points, None, spendable)?;
    entry.order_id = order_id;
    entry.store_id = store_id;
    Ok(p)
}

/// A hold: points move from available to held, burnt from the lots under the hold's id
/// so that a void gives the same lots back.
pub fn plan_hold(
    mut p: Posting,
    hold: &HeldPoints,
    spendable: &[LotRemainder],
) -> Result<Posting, Insufficient> {
    let entry = p.spend(EntryKind::Hold, hold.points, Some(&hold.hold_id), spendable)?;
    entry.order_id = hold.order_id.clone();
    entry.store_id = hold.store_id.clone();
    Ok(p)
}

/// A hold as its settlement sees it.
#[derive(Debug, Clone)]
pub struct HeldPoints {
    pub hold_id: String,
    pub points: i64,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
}

/// Settles a hold: `captured` of its points are spent (a REDEMPTION out of held), the rest
/// go back to the available balance and to their lots (HOLD_RELEASE with `reason`:
/// CAPTURED, VOIDED or EXPIRED). Released points first pay off a negative balance.
pub fn plan_settle(
    mut p: Posting,
    hold: &HeldPoints,
    captured: i64,
    reason: &'static str,
) -> Posting {
    let captured = captured.clamp(0, hold.points);
    let released = hold.points - captured;
    let tag = |e: &mut super::ledger::Entry| {
        e.order_id = hold.order_id.clone();
        e.store_id = hold.store_id.clone();
        e.hold_id = Some(hold.hold_id.clone());
    };
    if captured > 0 {
        tag(p.push(EntryKind::Redemption, 0, 0, -captured));
    }
    if released > 0 {
        let entry = p.push(EntryKind::HoldRelease, released, 0, -released);
        entry.reason_code = Some(reason);
        tag(entry);
        let debt = p.debt_paid(released);
        if released > debt {
            p.lots.push(LotOp::ReleaseHold {
                hold_id: hold.hold_id.clone(),
                points: released - debt,
            });
        }
    }
    p
}

/// A manual adjustment (GOODWILL, CORRECTION, MIGRATION): a credit to a new lot, or a
/// debit the available balance must cover.
pub fn plan_adjust(
    mut p: Posting,
    credit: Credit,
    reason: &'static str,
    note: Option<String>,
    spendable: &[LotRemainder],
) -> Result<Posting, Insufficient> {
    let entry = if credit.points > 0 {
        p.credit(EntryKind::Adjustment, credit)
    } else {
        p.spend(EntryKind::Adjustment, -credit.points, None, spendable)?
    };
    entry.reason_code = Some(reason);
    entry.note = note;
    Ok(p)
}

/// A programme bonus (BIRTHDAY, ANNIVERSARY, REFERRAL, FEEDBACK), spendable at once.
pub fn plan_bonus(mut p: Posting, credit: Credit, reason: &'static str) -> Posting {
    p.credit(EntryKind::Bonus, credit).reason_code = Some(reason);
    p
}

/// A pending lot whose return window ended (or whose order was confirmed).
#[derive(Debug, Clone)]
pub struct PendingLot {
    pub lot_id: i64,
    pub points: i64,
    pub order_id: Option<String>,
}

/// Pending points become available (PENDING_RELEASE); the lot keeps what did not pay off
/// a negative balance. The posting's transaction is the one that credited the lot.
pub fn plan_pending_release(mut p: Posting, lot: &PendingLot) -> Posting {
    p.push(EntryKind::PendingRelease, lot.points, -lot.points, 0)
        .order_id = lot.order_id.clone();
    let debt = p.debt_paid(lot.points);
    p.lots.push(LotOp::MakeAvailable {
        lot_id: lot.lot_id,
        points: lot.points,
        remaining: lot.points - debt,
    });
    p
}

/// What is left of a lot past its expiry date leaves the available balance (EXPIRY).
pub fn plan_expiry(mut p: Posting, lot_id: i64, points: i64, order_id: Option<String>) -> Posting {
    let entry = p.push(EntryKind::Expiry, -points, 0, 0);
    entry.order_id = order_id;
    entry.note = Some(format!("lot {lot_id}"));
    p.lots.push(LotOp::Expire { lot_id, points });
    p
}

/// The order's lot a return reverses from.
#[derive(Debug, Clone, Copy)]
pub struct ReturnedLot {
    pub lot_id: i64,
    pub pending: bool,
}

/// Writes a [`ReturnPlan`] as a posting: the order's lot reversed, the refund credited
/// first (RETURN_REFUND, to a new lot) so its points can pay the charge, then the RETURN
/// entry taking the reversal off the balances, with the charged points burnt from the
/// lots (the new refund lot last).
pub fn plan_return_posting(
    mut p: Posting,
    plan: &ReturnPlan,
    lot: Option<ReturnedLot>,
    refund: Credit,
    spendable: &[LotRemainder],
    ids: ReturnIds,
) -> Posting {
    if let Some(lot) = lot {
        p.lots.push(LotOp::Reverse {
            lot_id: lot.lot_id,
            pending: lot.pending,
            from_remaining: plan.from_pending + plan.from_lot,
            charged: plan.charged + plan.shortfall,
        });
    }
    let tag = |e: &mut super::ledger::Entry| {
        e.order_id = Some(ids.order_id.clone());
        e.store_id = Some(ids.store_id.clone());
        e.return_id = Some(ids.return_id.clone());
    };
    if plan.refund > 0 {
        tag(p.credit(
            EntryKind::ReturnRefund,
            Credit {
                points: plan.refund,
                source: LotSource::Refund,
                pending: false,
                counts_as_earned: false,
                ..refund
            },
        ));
    }
    tag(p.push(EntryKind::Return, -plan.taken(), -plan.from_pending, 0));
    p.delta.lifetime = p.delta.lifetime.saturating_sub(plan.reversed);
    p.take_from_lots(plan.burn_from_lots, spendable, None);
    p
}

/// What identifies a return on its entries.
#[derive(Debug, Clone)]
pub struct ReturnIds {
    pub order_id: String,
    pub store_id: String,
    pub return_id: String,
}

/// Why an accrual cannot be written with others in a shared transaction and must run
/// alone, on the path that reads and writes what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsAlone {
    /// Offer codes: their counters and targeting are read under lock.
    OfferCodes,
    /// A promotion with a budget or a per-member limit: its usage is read under lock.
    CappedPromotion,
    /// The member's first spendable purchase pays a referral bonus to two members.
    ReferralPayout,
    /// The accrual lifts the member into a higher tier.
    TierUpgrade,
}

/// What an accrual planner needs beyond the posting's start.
#[derive(Debug, Clone)]
pub struct AccrualInput<'a> {
    /// Points the basket earned (rules and offers applied).
    pub points: i64,
    /// Spend (minor units) the basket counts toward tiers.
    pub spend: i64,
    pub credit: Credit,
    pub store_id: String,
    pub offer_codes: bool,
    pub capped_promotion: bool,
    pub referral_pending: bool,
    /// The member's tier, and the points and spend that count toward tiers before this
    /// accrual when it falls inside the qualifying window; `None` when the caller reviews
    /// the tier itself.
    pub tier: Option<TierOutlook<'a>>,
}

/// What decides whether an accrual changes the member's tier.
#[derive(Debug, Clone, Copy)]
pub struct TierOutlook<'a> {
    pub ruleset: &'a Ruleset,
    pub tier_id: Option<&'a str>,
    /// Points and spend in the window before this accrual.
    pub qualifying: (i64, i64),
    /// The accrual falls inside the window.
    pub in_window: bool,
}

/// An accrual planned: its posting, and whether it needs more than the posting.
#[derive(Debug, Clone)]
pub struct AccrualPlan {
    pub posting: Posting,
    pub runs_alone: Option<RunsAlone>,
}

/// An accrual: an ACCRUAL entry crediting the basket's points, pending for the return
/// window or spendable at once (paying off a negative balance first), and a lot holding
/// them. Reports what else the accrual needs, which the posting does not carry.
pub fn plan_accrual(mut p: Posting, input: AccrualInput<'_>) -> AccrualPlan {
    let order_id = input.credit.order_id.clone();
    let pending = input.credit.pending;
    let entry = p.credit(
        EntryKind::Accrual,
        Credit {
            points: input.points,
            counts_as_earned: true,
            source: LotSource::Accrual,
            ..input.credit
        },
    );
    entry.order_id = order_id;
    entry.store_id = Some(input.store_id);
    let upgrades = input.tier.is_some_and(|t| {
        let (mut points, mut spend) = t.qualifying;
        if t.in_window {
            points = points.saturating_add(input.points);
            spend = spend.saturating_add(input.spend);
        }
        t.ruleset.qualifies_above(t.tier_id, points, spend)
    });
    let runs_alone = if input.offer_codes {
        Some(RunsAlone::OfferCodes)
    } else if input.capped_promotion {
        Some(RunsAlone::CappedPromotion)
    } else if input.referral_pending && !pending && input.points > 0 {
        Some(RunsAlone::ReferralPayout)
    } else if upgrades {
        Some(RunsAlone::TierUpgrade)
    } else {
        None
    };
    AccrualPlan {
        posting: p,
        runs_alone,
    }
}

#[cfg(test)]
#[path = "postings_tests.rs"]
mod tests;
