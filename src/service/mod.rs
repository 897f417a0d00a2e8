//! Use cases. Each mutation is one database transaction that claims its idempotency key,
//! applies domain rules and writes through the store; reads go straight to the store.
mod idempotency;
pub mod jobs;
pub mod members;
pub mod offers;
mod paging;
pub mod points;
pub mod program;
pub mod returns;
pub mod rewards;
mod rewards_engine;
pub mod spending;
mod wallet;

pub use idempotency::Mutation;
pub use members::{Member, MemberPage, MemberPatch, MemberService, NewMember};
pub use points::{
    AccrualReceipt, AccrueCommand, BalanceView, ExpiringSoon, LedgerEntryView, PointsService,
    StatementPage,
};

pub use crate::auth::Caller;
