//! Domain rules and validated types. No I/O, no tonic, no sea_orm: everything here
//! is plain Rust, unit- and property-tested.
mod channel;
mod earning;
mod ids;
mod member;
mod money;

pub use channel::Channel;
pub use earning::{BASE_RULE_ID, BasketEarning, BasketLine, EarnRate, LineEarning, earn};
pub use ids::{CardNumber, MemberId, MemberKey, RequestId, ShortId};
pub use member::{Birthday, Consents, Email, MemberName, Phone};
pub use money::Currency;
