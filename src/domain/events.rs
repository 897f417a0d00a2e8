//! What the event stream carries. Each event is written in the transaction of the change
//! it reports; its detail is stored as JSON and never holds personal data.
use serde::{Deserialize, Serialize};

/// Event types as stored (and, prefixed with `EVENT_TYPE_`, as the API names them).
pub mod kind {
    pub const POINTS_ACCRUED: &str = "POINTS_ACCRUED";
    pub const POINTS_RELEASED: &str = "POINTS_RELEASED";
    pub const POINTS_REDEEMED: &str = "POINTS_REDEEMED";
    pub const POINTS_HELD: &str = "POINTS_HELD";
    pub const HOLD_RELEASED: &str = "HOLD_RELEASED";
    pub const POINTS_RETURNED: &str = "POINTS_RETURNED";
    pub const RETURN_REFUNDED: &str = "RETURN_REFUNDED";
    pub const POINTS_ADJUSTED: &str = "POINTS_ADJUSTED";
    pub const POINTS_EXPIRED: &str = "POINTS_EXPIRED";
    pub const BONUS_GRANTED: &str = "BONUS_GRANTED";
    pub const TIER_CHANGED: &str = "TIER_CHANGED";
    pub const MEMBER_ENROLLED: &str = "MEMBER_ENROLLED";
    pub const MEMBER_ERASED: &str = "MEMBER_ERASED";
    pub const OFFER_USED: &str = "OFFER_USED";
    pub const FEEDBACK_RECORDED: &str = "FEEDBACK_RECORDED";
    pub const COMPLAINT_OPENED: &str = "COMPLAINT_OPENED";
    pub const COMPLAINT_RESOLVED: &str = "COMPLAINT_RESOLVED";

    pub const ALL: [&str; 17] = [
        POINTS_ACCRUED,
        POINTS_RELEASED,
        POINTS_REDEEMED,
        POINTS_HELD,
        HOLD_RELEASED,
        POINTS_RETURNED,
        RETURN_REFUNDED,
        POINTS_ADJUSTED,
        POINTS_EXPIRED,
        BONUS_GRANTED,
        TIER_CHANGED,
        MEMBER_ENROLLED,
        MEMBER_ERASED,
        OFFER_USED,
        FEEDBACK_RECORDED,
        COMPLAINT_OPENED,
        COMPLAINT_RESOLVED,
    ];
}

/// The detail of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "detail", rename_all = "snake_case")]
pub enum EventDetail {
    /// A ledger entry: the signed change of each balance and why.
    BalanceChange {
        ledger_kind: String,
        points: i64,
        pending_delta: i64,
        held_delta: i64,
        balance_after: i64,
        reason_code: Option<String>,
        order_id: Option<String>,
        store_id: Option<String>,
        hold_id: Option<String>,
        return_id: Option<String>,
    },
    TierChange {
        from_tier_id: Option<String>,
        to_tier_id: Option<String>,
    },
    Member {},
    OfferUse {
        offer_id: String,
        order_id: String,
        points: i64,
        discount_minor: i64,
    },
    Feedback {
        feedback_id: String,
        kind: String,
        score: i32,
        order_id: Option<String>,
        store_id: Option<String>,
    },
    Complaint {
        complaint_id: String,
        topic: String,
        severity: String,
        outcome: Option<String>,
        goodwill_points: i64,
    },
}
