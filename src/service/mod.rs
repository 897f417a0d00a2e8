//! Use cases. Each mutation is one database transaction that claims its idempotency key,
//! applies domain rules and writes through the store; reads go straight to the store.
mod accrual_batch;
pub mod context;
pub mod events;
pub mod feedback;
mod idempotency;
pub mod jobs;
mod ledger;
pub mod members;
pub mod offers;
pub(crate) mod paging;
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

/// The key of a member by an id read from the database (a member's own row, an order's,
/// a hold's…): such ids are always valid, so a bad one is an internal error.
pub(crate) fn stored_member(
    member_id: &str,
) -> Result<crate::domain::MemberKey, crate::error::AppError> {
    crate::domain::MemberId::parse(member_id)
        .map(crate::domain::MemberKey::Id)
        .map_err(|e| crate::error::AppError::Internal(anyhow::anyhow!(e)))
}
