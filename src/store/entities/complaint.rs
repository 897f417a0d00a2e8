use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "complaints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub program_id: String,
    pub member_id: String,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
    pub tier_id: Option<String>,
    pub topic: String,
    pub severity: String,
    pub status: String,
    pub outcome: Option<String>,
    pub goodwill_points: i64,
    pub note: Option<String>,
    pub opened_at: DateTimeUtc,
    pub resolved_at: Option<DateTimeUtc>,
    pub resolution_seconds: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
