//! MemberService conversions: enrolment and profile updates, and members as sent.
use super::*;

/// An all-zero or absent date means "not given".
fn birthday(v: &mut Violations, field: &str, date: Option<&Date>) -> Option<Option<Birthday>> {
    match date {
        None => Some(None),
        Some(d) if d.year == 0 && d.month == 0 && d.day == 0 => Some(None),
        Some(d) => v
            .check(
                field,
                Birthday::parse(d.year, d.month, d.day, Utc::now().date_naive()),
            )
            .map(Some),
    }
}

fn consents(c: Option<&v1::Consents>) -> Consents {
    c.map(|c| Consents {
        email_marketing: c.email_marketing,
        sms_marketing: c.sms_marketing,
        profiling: c.profiling,
    })
    .unwrap_or_default()
}

pub fn enroll(
    req: &v1::EnrollMemberRequest,
    caller: Caller,
) -> Result<(Mutation, NewMember), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let card = v.check("card_number", CardNumber::parse(&req.card_number));
    let name = v.check("name", MemberName::parse(&req.name));
    let email = optional(&mut v, "email", &req.email, Email::parse);
    let phone = optional(&mut v, "phone", &req.phone, Phone::parse);
    let birthday = birthday(&mut v, "birthday", req.birthday.as_ref());
    let referred_by_code = (!req.referred_by_code.is_empty()).then(|| req.referred_by_code.clone());
    if req.referred_by_code.chars().count() > 64
        || req.referred_by_code.chars().any(|c| c.is_control())
    {
        v.push(
            "referred_by_code",
            "must be at most 64 characters without control characters",
        );
    }
    match (rid, card, name, email, phone, birthday) {
        (Some(rid), Some(card_number), Some(name), Some(email), Some(phone), Some(birthday))
            if v.is_empty() =>
        {
            Ok((
                mutation(rid, caller, fingerprint(req)),
                NewMember {
                    card_number,
                    name,
                    email,
                    phone,
                    birthday,
                    consents: consents(req.consents.as_ref()),
                    referred_by_code,
                },
            ))
        }
        _ => Err(v.into_error()),
    }
}

/// Member tags: at most 20, each 1 to 32 characters of [a-z0-9_-] (upper case is folded).
fn tags(raw: &[String]) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = raw.iter().map(|t| t.trim().to_lowercase()).collect();
    if tags.len() > 20
        || tags.iter().any(|t| {
            t.is_empty()
                || t.len() > 32
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
    {
        return Err("at most 20 tags of 1 to 32 characters of a-z, 0-9, _ and -".into());
    }
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Update paths callers may name.
const UPDATABLE: &[&str] = &[
    "card_number",
    "name",
    "email",
    "phone",
    "birthday",
    "consents",
    "consents.email_marketing",
    "consents.sms_marketing",
    "consents.profiling",
    "tags",
];

pub fn update(
    req: &v1::UpdateMemberRequest,
    caller: Caller,
) -> Result<(Mutation, MemberId, MemberPatch), AppError> {
    let mut v = Violations::default();
    let rid = request_id(&mut v, &req.request_id);
    let Some(member) = req.member.as_ref() else {
        v.push("member", "is required");
        return Err(v.into_error());
    };
    let id = v.check("member.member_id", MemberId::parse(&member.member_id));
    let given: Vec<String> = req
        .update_mask
        .as_ref()
        .map(|m| m.paths.clone())
        .unwrap_or_default();
    let paths: Vec<&str> = if given.iter().any(|p| p == "*") {
        UPDATABLE
            .iter()
            .filter(|p| !p.starts_with("consents."))
            .copied()
            .collect()
    } else if given.is_empty() {
        // AIP-134: no mask means every field that was given a value.
        let mut implied = Vec::new();
        for (path, set) in [
            ("card_number", !member.card_number.is_empty()),
            ("name", !member.name.is_empty()),
            ("email", !member.email.is_empty()),
            ("phone", !member.phone.is_empty()),
            ("birthday", member.birthday.is_some()),
            ("consents", member.consents.is_some()),
            ("tags", !member.tags.is_empty()),
        ] {
            if set {
                implied.push(path);
            }
        }
        implied
    } else {
        given.iter().map(String::as_str).collect()
    };
    if paths.is_empty() {
        v.push("update_mask", "names no field to change");
    }
    let mut patch = MemberPatch::default();
    let consents = member.consents.unwrap_or_default();
    for path in paths {
        match path {
            "card_number" => {
                patch.card_number =
                    v.check("member.card_number", CardNumber::parse(&member.card_number))
            }
            "name" => patch.name = v.check("member.name", MemberName::parse(&member.name)),
            "email" => patch.email = optional(&mut v, "member.email", &member.email, Email::parse),
            "phone" => patch.phone = optional(&mut v, "member.phone", &member.phone, Phone::parse),
            "birthday" => {
                patch.birthday = birthday(&mut v, "member.birthday", member.birthday.as_ref())
            }
            "consents" => {
                patch.email_marketing = Some(consents.email_marketing);
                patch.sms_marketing = Some(consents.sms_marketing);
                patch.profiling = Some(consents.profiling);
            }
            "consents.email_marketing" => patch.email_marketing = Some(consents.email_marketing),
            "consents.sms_marketing" => patch.sms_marketing = Some(consents.sms_marketing),
            "consents.profiling" => patch.profiling = Some(consents.profiling),
            "tags" => patch.tags = v.check("member.tags", tags(&member.tags)),
            other => v.push(
                "update_mask",
                format!("cannot update {other:?}; allowed: {}", UPDATABLE.join(", ")),
            ),
        }
    }
    match (rid, id) {
        (Some(rid), Some(id)) if v.is_empty() => {
            Ok((mutation(rid, caller, fingerprint(req)), id, patch))
        }
        _ => Err(v.into_error()),
    }
}

impl From<Member> for v1::Member {
    fn from(m: Member) -> Self {
        Self {
            member_id: m.member_id,
            card_number: m.card_number.unwrap_or_default(),
            name: m.name.unwrap_or_default(),
            email: m.email.unwrap_or_default(),
            phone: m.phone.unwrap_or_default(),
            birthday: match (m.birth_month, m.birth_day) {
                (Some(month), Some(day)) => Some(Date {
                    year: m.birth_year.unwrap_or(0),
                    month: i32::try_from(month).unwrap_or(0),
                    day: i32::try_from(day).unwrap_or(0),
                }),
                _ => None,
            },
            consents: Some(v1::Consents {
                email_marketing: m.consent_email_marketing,
                sms_marketing: m.consent_sms_marketing,
                profiling: m.consent_profiling,
            }),
            enroll_time: Some(timestamp(m.enrolled_at)),
            update_time: Some(timestamp(m.updated_at)),
            referral_code: m.referral_code.unwrap_or_default(),
            tier_id: m.tier_id.unwrap_or_default(),
            tags: m.tags,
            erase_time: m.erased_at.map(timestamp),
        }
    }
}
