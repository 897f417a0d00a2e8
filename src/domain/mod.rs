//! Domain rules and validated types. No I/O, no tonic, no sea_orm: everything here
//! is plain Rust, unit- and property-tested.
mod apportion;
mod channel;
mod earning;
mod entry_kind;
pub mod events;
mod expiry;
mod ids;
pub mod insights;
pub mod ledger;
mod lots;
mod member;
mod money;
mod offers;
mod postings;
mod returns;
mod rules;

pub use apportion::{apportion, cumulative_share};
pub use channel::Channel;
pub use earning::{BasketLine, LineEarning};
pub use entry_kind::{EntryKind, LotSource};
pub use expiry::ExpiryPolicy;
pub use ids::{CardNumber, MemberId, MemberKey, ProgramId, RequestId, ShortId, random_code};
pub use ledger::{Balances, Credit, Entry, Insufficient, LotOp, NewLot, Posting};
pub use lots::{
    LotRemainder, MAX_BALANCE, MAX_POINTS, PointValue, ReturnPolicy, plan_burn, plan_release,
};
pub use member::{Birthday, Consents, Email, MemberName, Phone};
pub use money::Currency;
pub use offers::{
    MemberFacts, Offer, OfferContext, OfferEffect, OfferKind, OfferStatus, OffersApplied,
    Targeting, apply_offers, month_in,
};
pub use postings::{
    AccrualInput, AccrualPlan, HeldPoints, PendingLot, ReturnIds, ReturnedLot, RunsAlone,
    TierOutlook, plan_accrual, plan_adjust, plan_bonus, plan_expiry, plan_hold,
    plan_pending_release, plan_redeem, plan_return_posting, plan_settle,
};
pub use returns::{OrderLot, ReturnLine, ReturnPlan, ReturnState, plan_return};
pub use rules::{
    BASE_RULE, Combine, EarnContext, EarnRule, Effect, ProgramField, RulesEarning, Ruleset, Tier,
    Window,
};
