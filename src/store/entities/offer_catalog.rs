use sea_orm::entity::prelude::*;

/// The offer catalogue's version, one row per programme.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "offer_catalogs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub program_id: String,
    pub version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
