use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "members")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub program_id: String,
    pub card_number: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub birth_year: Option<i32>,
    pub birth_month: Option<i16>,
    pub birth_day: Option<i16>,
    pub consent_email_marketing: bool,
    pub consent_sms_marketing: bool,
    pub consent_profiling: bool,
    pub points_available: i64,
    pub lifetime_earned: i64,
    pub points_pending: i64,
    pub points_held: i64,
    pub tier_id: Option<String>,
    pub tier_since: Option<DateTimeUtc>,
    pub tier_until: Option<DateTimeUtc>,
    pub referral_code: Option<String>,
    pub referred_by: Option<String>,
    pub referral_status: Option<String>,
    pub tags: String,
    pub erased_at: Option<DateTimeUtc>,
    pub enrolled_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub event_seq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
