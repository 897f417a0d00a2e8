use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub program_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: String,
    pub member_id: String,
    pub transaction_id: String,
    pub store_id: String,
    pub channel: String,
    pub currency: String,
    pub eligible_minor: i64,
    pub points_earned: i64,
    pub occurred_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub ruleset_version: i64,
    pub points_reversed: i64,
    pub eligible_returned: i64,
    /// The basket lines as a JSON array of `store::ledger::OrderLine`.
    pub lines: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
