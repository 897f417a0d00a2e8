//! The money path: pending and held balances, point lots with expiry, burns (allocations),
//! holds, returns and the rewards catalogue.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Members {
    Table,
    Id,
    PointsPending,
    PointsHeld,
}

#[derive(DeriveIden)]
enum LedgerEntries {
    Table,
    PendingDelta,
    HeldDelta,
    ReasonCode,
    Note,
    HoldId,
    ReturnId,
}

#[derive(DeriveIden)]
enum OrderLines {
    Table,
    ReturnedQuantity,
    PointsReversed,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    OrderId,
}

#[derive(DeriveIden)]
enum PointLots {
    Table,
    Id,
    MemberId,
    TransactionId,
    OrderId,
    Source,
    State,
    PointsOriginal,
    PointsRemaining,
    PointsExpired,
    PointsReversed,
    EarnedAt,
    AvailableAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum LotAllocations {
    Table,
    Id,
    LotId,
    MemberId,
    TransactionId,
    HoldId,
    Points,
    Released,
}

#[derive(DeriveIden)]
enum Holds {
    Table,
    Id,
    MemberId,
    ClientId,
    OrderId,
    StoreId,
    Points,
    CapturedPoints,
    Status,
    ExpiresAt,
    CreatedAt,
    SettledAt,
}

#[derive(DeriveIden)]
enum Returns {
    Table,
    OrderId,
    ReturnId,
    MemberId,
    TransactionId,
    PointsReversed,
    PointsCharged,
    PointsWaived,
    Shortfall,
    PointsRefunded,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Rewards {
    Table,
    Id,
    Name,
    Description,
    PointsCost,
    Stock,
    ValidFrom,
    ValidUntil,
    MinTier,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RewardRedemptions {
    Table,
    Id,
    Code,
    RewardId,
    MemberId,
    TransactionId,
    Points,
    CreatedAt,
}

fn big_default_zero<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one ALTER per statement.
        for col in [Members::PointsPending, Members::PointsHeld] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Members::Table)
                        .add_column(big_default_zero(col))
                        .to_owned(),
                )
                .await?;
        }
        for col in [LedgerEntries::PendingDelta, LedgerEntries::HeldDelta] {
            manager
                .alter_table(
                    Table::alter()
                        .table(LedgerEntries::Table)
                        .add_column(big_default_zero(col))
                        .to_owned(),
                )
                .await?;
        }
        for (col, len) in [
            (LedgerEntries::ReasonCode, 32),
            (LedgerEntries::Note, 500),
            (LedgerEntries::HoldId, 36),
            (LedgerEntries::ReturnId, 64),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(LedgerEntries::Table)
                        .add_column(ColumnDef::new(col).string_len(len).null())
                        .to_owned(),
                )
                .await?;
        }
        for col in [OrderLines::ReturnedQuantity, OrderLines::PointsReversed] {
            manager
                .alter_table(
                    Table::alter()
                        .table(OrderLines::Table)
                        .add_column(big_default_zero(col))
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(PointLots::Table)
                    .col(
                        ColumnDef::new(PointLots::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(PointLots::MemberId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PointLots::TransactionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(ColumnDef::new(PointLots::OrderId).string_len(64).null())
                    .col(ColumnDef::new(PointLots::Source).string_len(32).not_null())
                    .col(ColumnDef::new(PointLots::State).string_len(16).not_null())
                    .col(
                        ColumnDef::new(PointLots::PointsOriginal)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PointLots::PointsRemaining)
                            .big_integer()
                            .not_null(),
                    )
                    .col(big_default_zero(PointLots::PointsExpired))
                    .col(big_default_zero(PointLots::PointsReversed))
                    .col(
                        ColumnDef::new(PointLots::EarnedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PointLots::AvailableAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PointLots::ExpiresAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(PointLots::Table, PointLots::MemberId)
                            .to(Members::Table, Members::Id),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "point_lots_member_state",
                vec![PointLots::MemberId, PointLots::State],
            ),
            (
                "point_lots_state_expires_at",
                vec![PointLots::State, PointLots::ExpiresAt],
            ),
            (
                "point_lots_state_available_at",
                vec![PointLots::State, PointLots::AvailableAt],
            ),
            ("point_lots_order_id", vec![PointLots::OrderId]),
        ] {
            let mut index = Index::create()
                .name(name)
                .table(PointLots::Table)
                .to_owned();
            for c in cols {
                index.col(c);
            }
            manager.create_index(index).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(LotAllocations::Table)
                    .col(
                        ColumnDef::new(LotAllocations::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(LotAllocations::LotId)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LotAllocations::MemberId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(LotAllocations::TransactionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(ColumnDef::new(LotAllocations::HoldId).string_len(36).null())
                    .col(
                        ColumnDef::new(LotAllocations::Points)
                            .big_integer()
                            .not_null(),
                    )
                    .col(big_default_zero(LotAllocations::Released))
                    .foreign_key(
                        ForeignKey::create()
                            .from(LotAllocations::Table, LotAllocations::LotId)
                            .to(PointLots::Table, PointLots::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("lot_allocations_hold_id")
                    .table(LotAllocations::Table)
                    .col(LotAllocations::HoldId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Holds::Table)
                    .col(
                        ColumnDef::new(Holds::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Holds::MemberId).string_len(36).not_null())
                    .col(ColumnDef::new(Holds::ClientId).string_len(64).not_null())
                    .col(ColumnDef::new(Holds::OrderId).string_len(64).null())
                    .col(ColumnDef::new(Holds::StoreId).string_len(64).null())
                    .col(ColumnDef::new(Holds::Points).big_integer().not_null())
                    .col(big_default_zero(Holds::CapturedPoints))
                    .col(ColumnDef::new(Holds::Status).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Holds::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Holds::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Holds::SettledAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Holds::Table, Holds::MemberId)
                            .to(Members::Table, Members::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("holds_status_expires_at")
                    .table(Holds::Table)
                    .col(Holds::Status)
                    .col(Holds::ExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Returns::Table)
                    .col(ColumnDef::new(Returns::OrderId).string_len(64).not_null())
                    .col(ColumnDef::new(Returns::ReturnId).string_len(64).not_null())
                    .col(ColumnDef::new(Returns::MemberId).string_len(36).not_null())
                    .col(
                        ColumnDef::new(Returns::TransactionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Returns::PointsReversed)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Returns::PointsCharged)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Returns::PointsWaived)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Returns::Shortfall).big_integer().not_null())
                    .col(
                        ColumnDef::new(Returns::PointsRefunded)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Returns::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(Index::create().col(Returns::OrderId).col(Returns::ReturnId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Returns::Table, Returns::OrderId)
                            .to(Orders::Table, Orders::OrderId),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Rewards::Table)
                    .col(
                        ColumnDef::new(Rewards::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Rewards::Name).string_len(200).not_null())
                    .col(
                        ColumnDef::new(Rewards::Description)
                            .string_len(2000)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Rewards::PointsCost).big_integer().not_null())
                    .col(ColumnDef::new(Rewards::Stock).big_integer().null())
                    .col(
                        ColumnDef::new(Rewards::ValidFrom)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Rewards::ValidUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(ColumnDef::new(Rewards::MinTier).string_len(64).null())
                    .col(ColumnDef::new(Rewards::Active).boolean().not_null())
                    .col(
                        ColumnDef::new(Rewards::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Rewards::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RewardRedemptions::Table)
                    .col(
                        ColumnDef::new(RewardRedemptions::Id)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(RewardRedemptions::Code)
                            .string_len(32)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(RewardRedemptions::RewardId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RewardRedemptions::MemberId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RewardRedemptions::TransactionId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RewardRedemptions::Points)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(RewardRedemptions::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(RewardRedemptions::Table, RewardRedemptions::RewardId)
                            .to(Rewards::Table, Rewards::Id),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            RewardRedemptions::Table.into_iden(),
            Rewards::Table.into_iden(),
            Returns::Table.into_iden(),
            Holds::Table.into_iden(),
            LotAllocations::Table.into_iden(),
            PointLots::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        let drops: [(DynIden, DynIden); 10] = [
            (
                Members::Table.into_iden(),
                Members::PointsPending.into_iden(),
            ),
            (Members::Table.into_iden(), Members::PointsHeld.into_iden()),
            (
                LedgerEntries::Table.into_iden(),
                LedgerEntries::PendingDelta.into_iden(),
            ),
            (
                LedgerEntries::Table.into_iden(),
                LedgerEntries::HeldDelta.into_iden(),
            ),
            (
                LedgerEntries::Table.into_iden(),
                LedgerEntries::ReasonCode.into_iden(),
            ),
            (
                LedgerEntries::Table.into_iden(),
                LedgerEntries::Note.into_iden(),
            ),
            (
                LedgerEntries::Table.into_iden(),
                LedgerEntries::HoldId.into_iden(),
            ),
            (
                LedgerEntries::Table.into_iden(),
                LedgerEntries::ReturnId.into_iden(),
            ),
            (
                OrderLines::Table.into_iden(),
                OrderLines::ReturnedQuantity.into_iden(),
            ),
            (
                OrderLines::Table.into_iden(),
                OrderLines::PointsReversed.into_iden(),
            ),
        ];
        for (table, col) in drops {
            manager
                .alter_table(Table::alter().table(table).drop_column(col).to_owned())
                .await?;
        }
        Ok(())
    }
}
