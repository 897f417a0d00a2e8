use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "promotion_usage")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub program_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub rule_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub member_id: String,
    pub points_used: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
