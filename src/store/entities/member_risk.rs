use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "member_risk")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: String,
    pub program_id: String,
    pub score: i32,
    pub recency_days: Option<i32>,
    pub frequency: i32,
    pub monetary_minor: i64,
    pub satisfaction: Option<String>,
    pub open_complaints: i32,
    pub reasons: String,
    pub scored_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
