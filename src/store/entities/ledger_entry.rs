use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_entries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub member_id: String,
    pub transaction_id: String,
    pub kind: String,
    pub points: i64,
    pub balance_after: i64,
    pub order_id: Option<String>,
    pub store_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub pending_delta: i64,
    pub held_delta: i64,
    pub reason_code: Option<String>,
    pub note: Option<String>,
    pub hold_id: Option<String>,
    pub return_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
