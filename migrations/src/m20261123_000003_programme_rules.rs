//! Programme rules: versioned rulesets (earn rules and tiers), promotion usage, tier
//! state of members, once-a-year bonus grants and referrals.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Rulesets {
    Table,
    Version,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum PromotionUsage {
    Table,
    RuleId,
    MemberId,
    PointsUsed,
}

#[derive(DeriveIden)]
enum BonusGrants {
    Table,
    MemberId,
    Kind,
    Year,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Members {
    Table,
    EnrolledAt,
    BirthMonth,
    TierId,
    TierSince,
    TierUntil,
    ReferralCode,
    ReferredBy,
    ReferralStatus,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    MemberId,
    OccurredAt,
    RulesetVersion,
    PointsReversed,
    EligibleReturned,
}

#[derive(DeriveIden)]
enum OrderLines {
    Table,
    RuleIds,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Rulesets::Table)
                    .col(
                        ColumnDef::new(Rulesets::Version)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Rulesets::Body).text().not_null())
                    .col(
                        ColumnDef::new(Rulesets::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // member_id '' is the promotion's total; a member's id is that member's share.
        manager
            .create_table(
                Table::create()
                    .table(PromotionUsage::Table)
                    .col(
                        ColumnDef::new(PromotionUsage::RuleId)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PromotionUsage::MemberId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(PromotionUsage::PointsUsed)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .primary_key(
                        Index::create()
                            .col(PromotionUsage::RuleId)
                            .col(PromotionUsage::MemberId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BonusGrants::Table)
                    .col(
                        ColumnDef::new(BonusGrants::MemberId)
                            .string_len(36)
                            .not_null(),
                    )
                    .col(ColumnDef::new(BonusGrants::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(BonusGrants::Year).integer().not_null())
                    .col(
                        ColumnDef::new(BonusGrants::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(BonusGrants::MemberId)
                            .col(BonusGrants::Kind)
                            .col(BonusGrants::Year),
                    )
                    .to_owned(),
            )
            .await?;
        let add =
            |table: DynIden, col: ColumnDef| Table::alter().table(table).add_column(col).to_owned();
        for stmt in [
            add(
                Members::Table.into_iden(),
                ColumnDef::new(Members::TierId)
                    .string_len(64)
                    .null()
                    .to_owned(),
            ),
            add(
                Members::Table.into_iden(),
                ColumnDef::new(Members::TierSince)
                    .timestamp_with_time_zone()
                    .null()
                    .to_owned(),
            ),
            add(
                Members::Table.into_iden(),
                ColumnDef::new(Members::TierUntil)
                    .timestamp_with_time_zone()
                    .null()
                    .to_owned(),
            ),
            add(
                Members::Table.into_iden(),
                ColumnDef::new(Members::ReferralCode)
                    .string_len(16)
                    .null()
                    .to_owned(),
            ),
            add(
                Members::Table.into_iden(),
                ColumnDef::new(Members::ReferredBy)
                    .string_len(36)
                    .null()
                    .to_owned(),
            ),
            add(
                Members::Table.into_iden(),
                ColumnDef::new(Members::ReferralStatus)
                    .string_len(16)
                    .null()
                    .to_owned(),
            ),
            add(
                Orders::Table.into_iden(),
                ColumnDef::new(Orders::RulesetVersion)
                    .big_integer()
                    .not_null()
                    .default(0)
                    .to_owned(),
            ),
            add(
                Orders::Table.into_iden(),
                ColumnDef::new(Orders::PointsReversed)
                    .big_integer()
                    .not_null()
                    .default(0)
                    .to_owned(),
            ),
            add(
                Orders::Table.into_iden(),
                ColumnDef::new(Orders::EligibleReturned)
                    .big_integer()
                    .not_null()
                    .default(0)
                    .to_owned(),
            ),
            add(
                OrderLines::Table.into_iden(),
                ColumnDef::new(OrderLines::RuleIds)
                    .string_len(1000)
                    .not_null()
                    .default("")
                    .to_owned(),
            ),
        ] {
            manager.alter_table(stmt).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("members_referral_code")
                    .table(Members::Table)
                    .col(Members::ReferralCode)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("members_tier_until")
                    .table(Members::Table)
                    .col(Members::TierUntil)
                    .to_owned(),
            )
            .await?;
        // Yearly bonuses look members up by birth month and by enrolment date.
        for (name, col) in [
            ("members_birth_month", Members::BirthMonth),
            ("members_enrolled_at", Members::EnrolledAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Members::Table)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        // Tier qualification sums a member's orders over a rolling window.
        manager
            .create_index(
                Index::create()
                    .name("orders_member_id_occurred_at")
                    .table(Orders::Table)
                    .col(Orders::MemberId)
                    .col(Orders::OccurredAt)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["members_birth_month", "members_enrolled_at"] {
            manager
                .drop_index(Index::drop().name(name).table(Members::Table).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("orders_member_id_occurred_at")
                    .table(Orders::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("members_tier_until")
                    .table(Members::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("members_referral_code")
                    .table(Members::Table)
                    .to_owned(),
            )
            .await?;
        let drops: [(DynIden, DynIden); 10] = [
            (Members::Table.into_iden(), Members::TierId.into_iden()),
            (Members::Table.into_iden(), Members::TierSince.into_iden()),
            (Members::Table.into_iden(), Members::TierUntil.into_iden()),
            (
                Members::Table.into_iden(),
                Members::ReferralCode.into_iden(),
            ),
            (Members::Table.into_iden(), Members::ReferredBy.into_iden()),
            (
                Members::Table.into_iden(),
                Members::ReferralStatus.into_iden(),
            ),
            (
                Orders::Table.into_iden(),
                Orders::RulesetVersion.into_iden(),
            ),
            (
                Orders::Table.into_iden(),
                Orders::PointsReversed.into_iden(),
            ),
            (
                Orders::Table.into_iden(),
                Orders::EligibleReturned.into_iden(),
            ),
            (
                OrderLines::Table.into_iden(),
                OrderLines::RuleIds.into_iden(),
            ),
        ];
        for (table, col) in drops {
            manager
                .alter_table(Table::alter().table(table).drop_column(col).to_owned())
                .await?;
        }
        for table in [
            BonusGrants::Table.into_iden(),
            PromotionUsage::Table.into_iden(),
            Rulesets::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
