//! Members enrolled before churn scoring existed get a placeholder score that is older
//! than any real one, so the jobs score them first.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let epoch = match manager.get_database_backend() {
            sea_orm_migration::sea_orm::DatabaseBackend::Postgres => {
                "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
            }
            _ => "'1970-01-01 00:00:00+00:00'",
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO member_risk (member_id, score, recency_days, frequency, monetary_minor, \
                 satisfaction, open_complaints, reasons, scored_at) \
                 SELECT id, 0, NULL, 0, 0, NULL, 0, 'not scored yet', {epoch} FROM members \
                 WHERE NOT EXISTS (SELECT 1 FROM member_risk r WHERE r.member_id = members.id)"
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        Ok(())
    }
}
