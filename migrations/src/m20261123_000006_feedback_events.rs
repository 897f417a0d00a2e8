//! Feedback, complaints, churn-risk scores and the event outbox that CRM systems tail.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Members {
    Table,
    EventSeq,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    Cursor,
    MemberId,
    MemberSeq,
    EventType,
    TransactionId,
    Payload,
    CreatedAt,
}

#[derive(DeriveIden)]
enum EventRelay {
    Table,
    Id,
    LastCursor,
    PrunedThrough,
}

#[derive(DeriveIden)]
enum Feedback {
    Table,
    Id,
    MemberId,
    OrderId,
    StoreId,
    TierId,
    Kind,
    Score,
    Topics,
    Comment,
    BonusPoints,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Complaints {
    Table,
    Id,
    MemberId,
    OrderId,
    StoreId,
    TierId,
    Topic,
    Severity,
    Status,
    Outcome,
    GoodwillPoints,
    Note,
    OpenedAt,
    ResolvedAt,
    ResolutionSeconds,
}

#[derive(DeriveIden)]
enum MemberRisk {
    Table,
    MemberId,
    Score,
    RecencyDays,
    Frequency,
    MonetaryMinor,
    Satisfaction,
    OpenComplaints,
    Reasons,
    ScoredAt,
}

fn ts(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .timestamp_with_time_zone()
        .not_null()
        .to_owned()
}

fn id36(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string_len(36).not_null().to_owned()
}

fn opt(col: impl IntoIden, len: u32) -> ColumnDef {
    ColumnDef::new(col).string_len(len).null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Per-member event sequence, bumped in the transaction that writes the event.
        manager
            .alter_table(
                Table::alter()
                    .table(Members::Table)
                    .add_column(
                        ColumnDef::new(Members::EventSeq)
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
                    .table(Events::Table)
                    .col(
                        ColumnDef::new(Events::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    // Assigned by the relay in commit order: gap-free, never reused.
                    .col(
                        ColumnDef::new(Events::Cursor)
                            .big_integer()
                            .null()
                            .unique_key(),
                    )
                    .col(opt(Events::MemberId, 36))
                    .col(ColumnDef::new(Events::MemberSeq).big_integer().not_null())
                    .col(ColumnDef::new(Events::EventType).string_len(32).not_null())
                    .col(opt(Events::TransactionId, 36))
                    .col(ColumnDef::new(Events::Payload).text().not_null())
                    .col(ts(Events::CreatedAt))
                    .to_owned(),
            )
            .await?;
        // The relay's work queue: only events still without a cursor.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX idx_events_unassigned ON events (id) WHERE cursor IS NULL",
            )
            .await?;
        for (name, cols) in [
            ("idx_events_member", vec![Events::MemberId, Events::Cursor]),
            ("idx_events_created", vec![Events::CreatedAt]),
        ] {
            let mut index = Index::create().name(name).table(Events::Table).to_owned();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(EventRelay::Table)
                    .col(
                        ColumnDef::new(EventRelay::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(EventRelay::LastCursor)
                            .big_integer()
                            .not_null(),
                    )
                    // Events up to this cursor were pruned: a consumer behind it has lost some.
                    .col(
                        ColumnDef::new(EventRelay::PrunedThrough)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(EventRelay::Table)
                    .columns([EventRelay::Id, EventRelay::LastCursor])
                    .values_panic([1.into(), 0i64.into()])
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Feedback::Table)
                    .col(id36(Feedback::Id).primary_key())
                    .col(id36(Feedback::MemberId))
                    .col(opt(Feedback::OrderId, 64))
                    .col(opt(Feedback::StoreId, 64))
                    .col(opt(Feedback::TierId, 64))
                    .col(ColumnDef::new(Feedback::Kind).string_len(8).not_null())
                    .col(ColumnDef::new(Feedback::Score).integer().not_null())
                    .col(ColumnDef::new(Feedback::Topics).string_len(200).not_null())
                    .col(ColumnDef::new(Feedback::Comment).text().null())
                    .col(
                        ColumnDef::new(Feedback::BonusPoints)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ts(Feedback::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Complaints::Table)
                    .col(id36(Complaints::Id).primary_key())
                    .col(id36(Complaints::MemberId))
                    .col(opt(Complaints::OrderId, 64))
                    .col(opt(Complaints::StoreId, 64))
                    .col(opt(Complaints::TierId, 64))
                    .col(ColumnDef::new(Complaints::Topic).string_len(16).not_null())
                    .col(
                        ColumnDef::new(Complaints::Severity)
                            .string_len(16)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Complaints::Status).string_len(16).not_null())
                    .col(opt(Complaints::Outcome, 32))
                    .col(
                        ColumnDef::new(Complaints::GoodwillPoints)
                            .big_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(Complaints::Note).text().null())
                    .col(ts(Complaints::OpenedAt))
                    .col(
                        ColumnDef::new(Complaints::ResolvedAt)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .col(
                        ColumnDef::new(Complaints::ResolutionSeconds)
                            .big_integer()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(MemberRisk::Table)
                    .col(id36(MemberRisk::MemberId).primary_key())
                    .col(ColumnDef::new(MemberRisk::Score).integer().not_null())
                    .col(ColumnDef::new(MemberRisk::RecencyDays).integer().null())
                    .col(ColumnDef::new(MemberRisk::Frequency).integer().not_null())
                    .col(
                        ColumnDef::new(MemberRisk::MonetaryMinor)
                            .big_integer()
                            .not_null(),
                    )
                    .col(opt(MemberRisk::Satisfaction, 16))
                    .col(
                        ColumnDef::new(MemberRisk::OpenComplaints)
                            .integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(MemberRisk::Reasons).text().not_null())
                    .col(ts(MemberRisk::ScoredAt))
                    .to_owned(),
            )
            .await?;
        let indexes: Vec<(&str, DynIden, Vec<DynIden>)> = vec![
            (
                "idx_feedback_created",
                Feedback::Table.into_iden(),
                vec![Feedback::CreatedAt.into_iden()],
            ),
            (
                "idx_feedback_member",
                Feedback::Table.into_iden(),
                vec![
                    Feedback::MemberId.into_iden(),
                    Feedback::CreatedAt.into_iden(),
                ],
            ),
            (
                "idx_complaints_opened",
                Complaints::Table.into_iden(),
                vec![Complaints::OpenedAt.into_iden()],
            ),
            (
                "idx_complaints_member",
                Complaints::Table.into_iden(),
                vec![
                    Complaints::MemberId.into_iden(),
                    Complaints::Status.into_iden(),
                ],
            ),
            (
                "idx_member_risk_rank",
                MemberRisk::Table.into_iden(),
                vec![
                    MemberRisk::Score.into_iden(),
                    MemberRisk::MemberId.into_iden(),
                ],
            ),
            (
                "idx_member_risk_scored",
                MemberRisk::Table.into_iden(),
                vec![MemberRisk::ScoredAt.into_iden()],
            ),
        ];
        for (name, table, cols) in indexes {
            let mut index = Index::create().name(name).table(table).to_owned();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index).await?;
        }
        // Feedback earns its bonus at most once per order.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX idx_feedback_bonus_order ON feedback (order_id) WHERE bonus_points > 0",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            MemberRisk::Table.into_iden(),
            Complaints::Table.into_iden(),
            Feedback::Table.into_iden(),
            EventRelay::Table.into_iden(),
            Events::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Members::Table)
                    .drop_column(Members::EventSeq)
                    .to_owned(),
            )
            .await
    }
}
