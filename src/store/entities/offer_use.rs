use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "offer_uses")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub offer_id: String,
    pub member_id: String,
    pub order_id: String,
    pub transaction_id: String,
    pub points: i64,
    pub discount_minor: i64,
    pub returned: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
