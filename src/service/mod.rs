//! Use cases. Each mutation is one database transaction that claims its idempotency key,
//! applies domain rules and writes through the store; reads go straight to the store.
pub mod accrual;
pub mod balances;
pub mod context;
pub mod events;
pub mod feedback;
mod idempotency;
pub mod jobs;
mod ledger;
pub mod members;
pub mod offers;
pub(crate) mod paging;
pub mod program;
pub mod programs;
pub mod returns;
pub mod rewards;
mod risk;
pub mod spending;
mod tiers;
pub mod views;
mod wallet;

pub use accrual::{AccrualReceipt, AccrualService, AccrueCommand};
pub use balances::{BalanceService, ExpiringSoon};
pub use context::ProgramContext;
pub use idempotency::Mutation;
pub use jobs::JobRunner;
pub use members::{Member, MemberPage, MemberPatch, MemberService, NewMember};
pub use program::ProgramAdmin;
pub use returns::ReturnService;
pub use spending::SpendingService;
pub use views::{BalanceView, LedgerEntryView, StatementPage};

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
