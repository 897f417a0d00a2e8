//! sea-orm entities, one per table; the schema itself is owned by the migrations crate.
pub mod bonus_grant;
pub mod hold;
pub mod idempotency_key;
pub mod ledger_entry;
pub mod lot_allocation;
pub mod member;
pub mod order;
pub mod order_line;
pub mod point_lot;
pub mod promotion_usage;
pub mod return_record;
pub mod reward;
pub mod reward_redemption;
pub mod ruleset;
