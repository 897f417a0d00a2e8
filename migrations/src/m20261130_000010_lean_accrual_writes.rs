//! Less written per accrual. `orders (member_id)` duplicated the leading column of
//! `orders (member_id, occurred_at)`, which serves every lookup by member: one index entry
//! per order for nothing. On PostgreSQL, `members` leaves a tenth of each page free, so a
//! balance update can stay on its page (a HOT update) and skip the table's six indexes;
//! on pages filled to the brim, by an import or a bulk load, it could not.
use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP INDEX IF EXISTS orders_member_id")
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE members SET (fillfactor = 90)")
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared("ALTER TABLE members RESET (fillfactor)")
                .await?;
        }
        db.execute_unprepared("CREATE INDEX orders_member_id ON orders (member_id)")
            .await?;
        Ok(())
    }
}
