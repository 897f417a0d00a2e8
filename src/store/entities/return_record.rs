use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "returns")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub program_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub return_id: String,
    pub member_id: String,
    pub transaction_id: String,
    pub points_reversed: i64,
    pub points_charged: i64,
    pub points_waived: i64,
    pub shortfall: i64,
    pub points_refunded: i64,
    pub shortfall_recovered: i64,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
