//! sea-orm entities, one per table; the schema itself is owned by the migrations crate.
pub mod idempotency_key;
pub mod ledger_entry;
pub mod member;
pub mod order;
pub mod order_line;
