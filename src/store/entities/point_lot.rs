use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "point_lots")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub member_id: String,
    pub transaction_id: String,
    pub order_id: Option<String>,
    pub source: String,
    pub state: String,
    pub points_original: i64,
    pub points_remaining: i64,
    pub points_expired: i64,
    pub points_reversed: i64,
    pub earned_at: DateTimeUtc,
    pub available_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
