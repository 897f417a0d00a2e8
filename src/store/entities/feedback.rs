use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "feedback")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub program_id: String,
    pub member_id: String,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
    pub tier_id: Option<String>,
    pub kind: String,
    pub score: i32,
    pub topics: String,
    pub comment: Option<String>,
    pub bonus_points: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
