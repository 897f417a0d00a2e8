//! Schema migrations, applied by `loyalty migrate` (and by `serve` when
//! `database.migrate_on_start` is on). A migration is never edited once released.
pub use sea_orm_migration::prelude::*;

mod m20261123_000001_create_core;
mod m20261123_000002_money_path;
mod m20261123_000003_programme_rules;
mod m20261123_000004_offers;
mod m20261123_000005_security;
mod m20261123_000006_feedback_events;
mod m20261123_000007_backfill_risk;
mod m20261123_000008_ledger_order_index;
mod m20261130_000009_order_lines_in_orders;
mod m20261130_000010_lean_accrual_writes;
mod m20261201_000011_return_shortfall_recovered;
mod m20261205_000012_programs;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_core::Migration),
            Box::new(m20261123_000002_money_path::Migration),
            Box::new(m20261123_000003_programme_rules::Migration),
            Box::new(m20261123_000004_offers::Migration),
            Box::new(m20261123_000005_security::Migration),
            Box::new(m20261123_000006_feedback_events::Migration),
            Box::new(m20261123_000007_backfill_risk::Migration),
            Box::new(m20261123_000008_ledger_order_index::Migration),
            Box::new(m20261130_000009_order_lines_in_orders::Migration),
            Box::new(m20261130_000010_lean_accrual_writes::Migration),
            Box::new(m20261201_000011_return_shortfall_recovered::Migration),
            Box::new(m20261205_000012_programs::Migration),
        ]
    }
}
