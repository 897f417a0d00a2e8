//! A return's refund first pays back what earlier returns of the same order could not
//! charge (clamp policy), so returning a whole order never leaves the member points it
//! owes: the returns table records that part.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Returns {
    Table,
    ShortfallRecovered,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Returns::Table)
                    .add_column(
                        ColumnDef::new(Returns::ShortfallRecovered)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Returns::Table)
                    .drop_column(Returns::ShortfallRecovered)
                    .to_owned(),
            )
            .await
    }
}
