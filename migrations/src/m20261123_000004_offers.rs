//! Member-exclusive offers: the catalogue (with a version that caches key on), use
//! counters, each use, and member tags for targeting.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Members {
    Table,
    Tags,
}

#[derive(DeriveIden)]
enum Offers {
    Table,
    Id,
    Code,
    Body,
    Priority,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OfferCounters {
    Table,
    OfferId,
    Uses,
}

#[derive(DeriveIden)]
enum OfferUses {
    Table,
    Id,
    OfferId,
    MemberId,
    OrderId,
    TransactionId,
    Points,
    DiscountMinor,
    Returned,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OfferCatalog {
    Table,
    Id,
    Version,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Members::Table)
                    .add_column(
                        ColumnDef::new(Members::Tags)
                            .string_len(1000)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Offers::Table)
                    .col(
                        ColumnDef::new(Offers::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(Offers::Code)
                            .string_len(64)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(Offers::Body).text().not_null())
                    .col(ColumnDef::new(Offers::Priority).integer().not_null())
                    .col(ColumnDef::new(Offers::Active).boolean().not_null())
                    .col(
                        ColumnDef::new(Offers::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Offers::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OfferCounters::Table)
                    .col(
                        ColumnDef::new(OfferCounters::OfferId)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(OfferCounters::Uses)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OfferUses::Table)
                    .col(
                        ColumnDef::new(OfferUses::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(OfferUses::OfferId).string_len(36).not_null())
                    .col(
                        ColumnDef::new(OfferUses::MemberId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(ColumnDef::new(OfferUses::OrderId).string_len(64).not_null())
                    .col(
                        ColumnDef::new(OfferUses::TransactionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(ColumnDef::new(OfferUses::Points).big_integer().not_null())
                    .col(
                        ColumnDef::new(OfferUses::DiscountMinor)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(OfferUses::Returned)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(
                        ColumnDef::new(OfferUses::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "offer_uses_member_offer",
                vec![OfferUses::MemberId, OfferUses::OfferId],
            ),
            ("offer_uses_order", vec![OfferUses::OrderId]),
            ("offer_uses_offer", vec![OfferUses::OfferId]),
        ] {
            let mut index = Index::create()
                .name(name)
                .table(OfferUses::Table)
                .to_owned();
            for c in cols {
                index.col(c);
            }
            manager.create_index(index).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(OfferCatalog::Table)
                    .col(
                        ColumnDef::new(OfferCatalog::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(OfferCatalog::Version)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(OfferCatalog::Table)
                    .columns([OfferCatalog::Id, OfferCatalog::Version])
                    .values_panic([1.into(), 0.into()])
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OfferCatalog::Table.into_iden(),
            OfferUses::Table.into_iden(),
            OfferCounters::Table.into_iden(),
            Offers::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Members::Table)
                    .drop_column(Members::Tags)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
