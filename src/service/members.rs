//! Enrolment and member profiles.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Mutation,
    idempotency::{Begun, begin, finish, once},
    paging,
};
use crate::{
    domain::events::{EventDetail, kind},
    domain::{Birthday, CardNumber, Consents, Email, MemberId, MemberKey, MemberName, Phone},
    error::AppError,
    store::{
        Store,
        members::{self, MemberRow},
    },
};

/// A member as callers see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub member_id: String,
    pub card_number: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub birth_year: Option<i32>,
    pub birth_month: Option<u32>,
    pub birth_day: Option<u32>,
    pub consent_email_marketing: bool,
    pub consent_sms_marketing: bool,
    pub consent_profiling: bool,
    pub enrolled_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub referral_code: Option<String>,
    pub tier_id: Option<String>,
    pub tags: Vec<String>,
    pub erased_at: Option<DateTime<Utc>>,
}

impl From<MemberRow> for Member {
    fn from(row: MemberRow) -> Self {
        Self {
            member_id: row.id,
            card_number: row.card_number,
            name: row.name,
            email: row.email,
            phone: row.phone,
            birth_year: row.birth_year,
            birth_month: row.birth_month.and_then(|m| u32::try_from(m).ok()),
            birth_day: row.birth_day.and_then(|d| u32::try_from(d).ok()),
            consent_email_marketing: row.consent_email_marketing,
            consent_sms_marketing: row.consent_sms_marketing,
            consent_profiling: row.consent_profiling,
            enrolled_at: row.enrolled_at,
            updated_at: row.updated_at,
            referral_code: row.referral_code,
            tier_id: row.tier_id,
            tags: members::split_tags(&row.tags),
            erased_at: row.erased_at,
        }
    }
}

/// A validated enrolment.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub card_number: CardNumber,
    pub name: MemberName,
    pub email: Option<Email>,
    pub phone: Option<Phone>,
    pub birthday: Option<Birthday>,
    pub consents: Consents,
    /// Referral code of the member who referred this one.
    pub referred_by_code: Option<String>,
}

/// A validated profile change: `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct MemberPatch {
    pub card_number: Option<CardNumber>,
    pub name: Option<MemberName>,
    pub email: Option<Option<Email>>,
    pub phone: Option<Option<Phone>>,
    pub birthday: Option<Option<Birthday>>,
    pub email_marketing: Option<bool>,
    pub sms_marketing: Option<bool>,
    pub profiling: Option<bool>,
    /// Replaces the member's tags (validated, sorted, unique).
    pub tags: Option<Vec<String>>,
}

fn birthday_columns(b: Option<Birthday>) -> (Option<i32>, Option<i16>, Option<i16>) {
    match b {
        Some(b) => (
            b.year,
            i16::try_from(b.month).ok(),
            i16::try_from(b.day).ok(),
        ),
        None => (None, None, None),
    }
}

impl MemberPatch {
    fn apply(self, row: &mut MemberRow) {
        if let Some(card) = self.card_number {
            row.card_number = Some(card.as_str().to_owned());
        }
        if let Some(name) = self.name {
            row.name = Some(name.as_str().to_owned());
        }
        if let Some(email) = self.email {
            row.email = email.map(|e| e.as_str().to_owned());
        }
        if let Some(phone) = self.phone {
            row.phone = phone.map(|p| p.as_str().to_owned());
        }
        if let Some(birthday) = self.birthday {
            (row.birth_year, row.birth_month, row.birth_day) = birthday_columns(birthday);
        }
        if let Some(v) = self.email_marketing {
            row.consent_email_marketing = v;
        }
        if let Some(v) = self.sms_marketing {
            row.consent_sms_marketing = v;
        }
        if let Some(v) = self.profiling {
            row.consent_profiling = v;
        }
        if let Some(tags) = self.tags {
            row.tags = tags.join(",");
        }
    }
}

/// A page of members.
#[derive(Debug, Clone)]
pub struct MemberPage {
    pub members: Vec<Member>,
    pub next_page_token: String,
}

#[derive(Clone)]
pub struct MemberService {
    store: Store,
}

impl MemberService {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    #[tracing::instrument(name = "members.enroll", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn enroll(&self, mutation: &Mutation, new: NewMember) -> Result<Member, AppError> {
        let key = mutation.key("EnrollMember");
        once(&self.store, &key, async {
            let txn = match begin::<Member>(&self.store, &key).await? {
                Begun::Replay(member) => return Ok(member),
                Begun::Fresh(txn) => txn,
            };
            let now = self.store.now();
            let referrer = match &new.referred_by_code {
                None => None,
                Some(code) => {
                    let referrer = members::find_by_referral_code(&*txn, txn.program(), code)
                        .await?
                        .ok_or_else(|| {
                            AppError::invalid(
                                "referred_by_code",
                                "no member has this referral code",
                            )
                        })?;
                    // The same e-mail or phone on both sides is one person referring themselves.
                    let same = |a: &Option<String>, b: Option<&str>| {
                        a.as_deref().is_some_and(|a| Some(a) == b)
                    };
                    if same(&referrer.email, new.email.as_ref().map(Email::as_str))
                        || same(&referrer.phone, new.phone.as_ref().map(Phone::as_str))
                    {
                        return Err(AppError::SelfReferral);
                    }
                    Some(referrer)
                }
            };
            let (birth_year, birth_month, birth_day) = birthday_columns(new.birthday);
            let row = MemberRow {
                id: MemberId::new().to_string(),
                program_id: txn.program().to_owned(),
                card_number: Some(new.card_number.as_str().to_owned()),
                name: Some(new.name.as_str().to_owned()),
                email: new.email.map(|e| e.as_str().to_owned()),
                phone: new.phone.map(|p| p.as_str().to_owned()),
                birth_year,
                birth_month,
                birth_day,
                consent_email_marketing: new.consents.email_marketing,
                consent_sms_marketing: new.consents.sms_marketing,
                consent_profiling: new.consents.profiling,
                points_available: 0,
                lifetime_earned: 0,
                points_pending: 0,
                points_held: 0,
                tier_id: None,
                tier_since: None,
                tier_until: None,
                referral_code: Some(crate::domain::random_code(8)),
                referred_by: referrer.as_ref().map(|r| r.id.clone()),
                referral_status: referrer.as_ref().map(|_| "PENDING".to_owned()),
                tags: String::new(),
                erased_at: None,
                enrolled_at: now,
                updated_at: now,
                event_seq: 0,
            };
            members::insert(&*txn, row.clone()).await?;
            crate::store::feedback::upsert_risk(
                &*txn,
                vec![super::risk::initial_risk(&row.program_id, &row.id, now)],
            )
            .await?;
            super::ledger::record(
                &*txn,
                &row.id,
                kind::MEMBER_ENROLLED,
                None,
                &EventDetail::Member {},
                now,
            )
            .await?;
            let member = Member::from(row);
            finish(txn, &key, &member).await?;
            tracing::info!(member_id = %member.member_id, "member enrolled");
            Ok(member)
        })
        .await
    }

    #[tracing::instrument(name = "members.get", skip_all)]
    pub async fn get(&self, key: &MemberKey) -> Result<Member, AppError> {
        members::find(self.store.conn(), self.store.program(), key)
            .await
            .map(Member::from)
    }

    #[tracing::instrument(name = "members.update", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn update(
        &self,
        mutation: &Mutation,
        id: &MemberId,
        patch: MemberPatch,
    ) -> Result<Member, AppError> {
        let key = mutation.key("UpdateMember");
        once(&self.store, &key, async {
            let txn = match begin::<Member>(&self.store, &key).await? {
                Begun::Replay(member) => return Ok(member),
                Begun::Fresh(txn) => txn,
            };
            let mut row = members::find(&*txn, txn.program(), &MemberKey::Id(id.clone())).await?;
            if row.erased_at.is_some() {
                // Erasure is final: a CRM that still holds the profile must not write it back.
                return Err(AppError::MemberErased);
            }
            patch.apply(&mut row);
            row.updated_at = self.store.now();
            members::update_profile(&*txn, row.clone()).await?;
            let member = Member::from(row);
            finish(txn, &key, &member).await?;
            Ok(member)
        })
        .await
    }

    #[tracing::instrument(name = "members.list", skip_all)]
    pub async fn list(&self, page_size: i32, page_token: &str) -> Result<MemberPage, AppError> {
        let size = paging::page_size(page_size)?;
        let after = paging::decode_token("members", page_token)?;
        if let Some(after) = &after {
            MemberId::parse(after).map_err(|_| {
                AppError::invalid("page_token", "is not a token returned by this method")
            })?;
        }
        let rows = members::list(
            self.store.conn(),
            self.store.program(),
            after.as_deref(),
            size + 1,
        )
        .await?;
        let (rows, next_page_token) = paging::split(rows, size, "members", |m| m.id.clone());
        Ok(MemberPage {
            members: rows.into_iter().map(Member::from).collect(),
            next_page_token,
        })
    }
}

/// Everything held about a member.
#[derive(Debug, Clone)]
pub struct MemberExport {
    pub member: Member,
    pub balance: super::BalanceView,
    pub ledger: Vec<super::LedgerEntryView>,
    pub holds: Vec<super::views::HoldView>,
    pub redemptions: Vec<crate::store::rewards::RedemptionRow>,
    pub feedback: Vec<super::views::FeedbackView>,
    pub complaints: Vec<super::views::ComplaintView>,
    pub exported_at: DateTime<Utc>,
}

/// The outcome of an erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub member_id: String,
    pub erased_at: DateTime<Utc>,
}

impl MemberService {
    #[tracing::instrument(name = "members.export", skip_all)]
    pub async fn export(&self, key: &MemberKey) -> Result<MemberExport, AppError> {
        let db = self.store.conn();
        let row = members::find(db, self.store.program(), key).await?;
        let id_key = super::stored_member(&row.id)?;
        let mut ledger = Vec::new();
        let mut token = String::new();
        loop {
            let page = super::views::statement_page(&self.store, &id_key, 500, &token).await?;
            ledger.extend(page.entries);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let holds = crate::store::holds::for_member(db, &row.id)
            .await?
            .iter()
            .map(super::views::HoldView::from)
            .collect();
        let redemptions = crate::store::rewards::redemptions_for_member(db, &row.id).await?;
        let (feedback, complaints) = crate::store::feedback::for_member(db, &row.id).await?;
        Ok(MemberExport {
            feedback: feedback
                .into_iter()
                .map(TryInto::try_into)
                .collect::<Result<_, _>>()?,
            complaints: complaints.into_iter().map(Into::into).collect(),
            balance: super::BalanceView::from(&row),
            member: Member::from(row),
            ledger,
            holds,
            redemptions,
            exported_at: self.store.now(),
        })
    }

    #[tracing::instrument(name = "members.erase", skip_all, fields(request_id = %mutation.request_id.as_str()))]
    pub async fn erase(&self, mutation: &Mutation, key: &MemberKey) -> Result<Erasure, AppError> {
        let idem = mutation.key("EraseMember");
        once(&self.store, &idem, async {
            let txn = match begin::<Erasure>(&self.store, &idem).await? {
                Begun::Replay(e) => return Ok(e),
                Begun::Fresh(txn) => txn,
            };
            let row = members::lock(&*txn, txn.program(), key).await?;
            if let Some(erased_at) = row.erased_at {
                // Erased already (by another request id): the first erasure stands.
                let erasure = Erasure {
                    member_id: row.id.clone(),
                    erased_at,
                };
                finish(txn, &idem, &erasure).await?;
                return Ok(erasure);
            }
            let now = self.store.now();
            members::erase(&*txn, &row.id, now).await?;
            crate::store::feedback::erase_texts(&*txn, &row.id).await?;
            super::ledger::record(
                &*txn,
                &row.id,
                kind::MEMBER_ERASED,
                None,
                &EventDetail::Member {},
                now,
            )
            .await?;
            let erasure = Erasure {
                member_id: row.id.clone(),
                erased_at: now,
            };
            finish(txn, &idem, &erasure).await?;
            tracing::info!(member_id = %erasure.member_id, "personal data erased");
            Ok(erasure)
        })
        .await
    }
}
