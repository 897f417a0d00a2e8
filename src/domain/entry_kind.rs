//! The one vocabulary of ledger entries: what a movement of points is. Stored as text,
//! sent as `LedgerEntryKind`, published as an event type, each mapped exhaustively so that
//! a new kind cannot be added without saying what it means everywhere.
use super::events::kind as event;

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Points earned by a basket.
    Accrual,
    /// Pending points becoming spendable at the end of the return window.
    PendingRelease,
    /// Points spent as payment (directly or by capturing a hold).
    Redemption,
    /// Points reserved by a hold.
    Hold,
    /// A hold's reserve given back (void, expiry, the uncaptured part).
    HoldRelease,
    /// Earned points taken back by a return.
    Return,
    /// Spent points given back by a return.
    ReturnRefund,
    /// A manual adjustment (GOODWILL, CORRECTION, MIGRATION).
    Adjustment,
    /// Points that reached their expiry date.
    Expiry,
    /// A programme bonus (birthday, anniversary, referral, feedback).
    Bonus,
}

impl EntryKind {
    pub const ALL: [Self; 10] = [
        Self::Accrual,
        Self::PendingRelease,
        Self::Redemption,
        Self::Hold,
        Self::HoldRelease,
        Self::Return,
        Self::ReturnRefund,
        Self::Adjustment,
        Self::Expiry,
        Self::Bonus,
    ];

    /// The stored form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Accrual => "ACCRUAL",
            Self::PendingRelease => "PENDING_RELEASE",
            Self::Redemption => "REDEMPTION",
            Self::Hold => "HOLD",
            Self::HoldRelease => "HOLD_RELEASE",
            Self::Return => "RETURN",
            Self::ReturnRefund => "RETURN_REFUND",
            Self::Adjustment => "ADJUSTMENT",
            Self::Expiry => "EXPIRY",
            Self::Bonus => "BONUS",
        }
    }

    /// The kind a stored text names; `None` for a text no release wrote.
    pub fn parse(stored: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == stored)
    }

    /// The event an entry of this kind publishes.
    pub const fn event_type(self) -> &'static str {
        match self {
            Self::Accrual => event::POINTS_ACCRUED,
            Self::PendingRelease => event::POINTS_RELEASED,
            Self::Redemption => event::POINTS_REDEEMED,
            Self::Hold => event::POINTS_HELD,
            Self::HoldRelease => event::HOLD_RELEASED,
            Self::Return => event::POINTS_RETURNED,
            Self::ReturnRefund => event::RETURN_REFUNDED,
            Self::Adjustment => event::POINTS_ADJUSTED,
            Self::Expiry => event::POINTS_EXPIRED,
            Self::Bonus => event::BONUS_GRANTED,
        }
    }
}

/// Where a lot's points came from (stored as text on the lot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LotSource {
    Accrual,
    Adjustment,
    Refund,
    Bonus,
}

impl LotSource {
    /// The stored form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Accrual => "ACCRUAL",
            Self::Adjustment => "ADJUSTMENT",
            Self::Refund => "REFUND",
            Self::Bonus => "BONUS",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_and_publishes_a_known_event() {
        for k in EntryKind::ALL {
            assert_eq!(EntryKind::parse(k.as_str()), Some(k));
            assert!(event::ALL.contains(&k.event_type()), "{k}");
        }
        assert_eq!(EntryKind::parse("ACCRUALS"), None);
        assert_eq!(EntryKind::parse(""), None);
    }
}
