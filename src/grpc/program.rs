//! `loyalty.v1.ProgramService`.
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};

use super::{
    convert::{self, Violations, timestamp},
    middleware::caller,
    pb::loyalty::v1::{self as v1, program_service_server::ProgramService as ProgramServiceApi},
};
use crate::{
    auth::Role,
    config::{ExpiryPolicyKind, ProgramSettings},
    domain::{
        Combine, EarnRule, Effect, ProgramField, ProgramId, ReturnPolicy, Ruleset, Tier, Window,
    },
    error::AppError,
    service::{
        ProgramAdmin,
        programs::{NewProgram, ProgramCatalog, ProgramView, SettingsPatch, merged},
    },
};

pub struct ProgramApi {
    program: ProgramAdmin,
    catalog: ProgramCatalog,
}

impl ProgramApi {
    pub fn new(program: ProgramAdmin, catalog: ProgramCatalog) -> Self {
        Self { program, catalog }
    }
}

impl From<ProgramSettings> for v1::ProgramSettings {
    fn from(s: ProgramSettings) -> Self {
        let expiry = match s.expiry_policy {
            ExpiryPolicyKind::Never => v1::ExpiryPolicy::Never,
            ExpiryPolicyKind::MonthsAfterEarning => v1::ExpiryPolicy::MonthsAfterEarning,
            ExpiryPolicyKind::EndOfNthMonth => v1::ExpiryPolicy::EndOfNthMonth,
        };
        let returns = match s.return_policy {
            ReturnPolicy::Clamp => v1::ReturnPolicy::Clamp,
            ReturnPolicy::AllowNegative => v1::ReturnPolicy::AllowNegative,
        };
        let wide = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            currency: Some(s.currency),
            time_zone: Some(s.time_zone),
            base_points: Some(s.earn_points),
            base_spend_minor: Some(s.earn_spend_minor),
            pending_days: Some(int(s.pending_days)),
            expiry_policy: expiry as i32,
            expiry_months: Some(int(s.expiry_months)),
            redeem_value_minor: Some(s.redeem_value_minor),
            redeem_points: Some(s.redeem_points),
            return_policy: returns as i32,
            goodwill_max_per_grant: Some(s.goodwill_max_per_grant),
            goodwill_max_per_day: Some(s.goodwill_max_per_day),
            correction_max_points: Some(s.correction_max_points),
            migration_max_points: Some(s.migration_max_points),
            hold_default_ttl_seconds: Some(wide(s.hold_default_ttl_secs)),
            hold_max_ttl_seconds: Some(wide(s.hold_max_ttl_secs)),
            feedback_bonus_points: Some(s.feedback_bonus_points),
            risk_window_days: Some(int(s.risk_window_days)),
        }
    }
}

impl From<ProgramView> for v1::ProgramInfo {
    fn from(p: ProgramView) -> Self {
        Self {
            program_id: p.program_id,
            display_name: p.display_name,
            settings: Some(p.settings.into()),
            create_time: Some(timestamp(p.created_at)),
        }
    }
}

/// The settings a CreateProgram request sets, each field checked for its range.
fn settings_patch(v: &mut Violations, s: &v1::ProgramSettings) -> SettingsPatch {
    let f = |name: &str| format!("settings.{name}");
    let unsigned = |v: &mut Violations, name: &str, n: Option<i32>| {
        n.and_then(|n| {
            v.check(
                f(name),
                u32::try_from(n).map_err(|_| "must not be negative".to_string()),
            )
        })
    };
    let seconds = |v: &mut Violations, name: &str, n: Option<i64>| {
        n.and_then(|n| {
            v.check(
                f(name),
                u64::try_from(n).map_err(|_| "must not be negative".to_string()),
            )
        })
    };
    let expiry_policy = match v1::ExpiryPolicy::try_from(s.expiry_policy) {
        Ok(v1::ExpiryPolicy::Unspecified) => None,
        Ok(v1::ExpiryPolicy::Never) => Some(ExpiryPolicyKind::Never),
        Ok(v1::ExpiryPolicy::MonthsAfterEarning) => Some(ExpiryPolicyKind::MonthsAfterEarning),
        Ok(v1::ExpiryPolicy::EndOfNthMonth) => Some(ExpiryPolicyKind::EndOfNthMonth),
        Err(_) => {
            v.push(f("expiry_policy"), "must be a known expiry policy");
            None
        }
    };
    let return_policy = match v1::ReturnPolicy::try_from(s.return_policy) {
        Ok(v1::ReturnPolicy::Unspecified) => None,
        Ok(v1::ReturnPolicy::Clamp) => Some(ReturnPolicy::Clamp),
        Ok(v1::ReturnPolicy::AllowNegative) => Some(ReturnPolicy::AllowNegative),
        Err(_) => {
            v.push(f("return_policy"), "must be a known return policy");
            None
        }
    };
    SettingsPatch {
        currency: s.currency.clone(),
        time_zone: s.time_zone.clone(),
        earn_points: s.base_points,
        earn_spend_minor: s.base_spend_minor,
        pending_days: unsigned(v, "pending_days", s.pending_days),
        expiry_policy,
        expiry_months: unsigned(v, "expiry_months", s.expiry_months),
        redeem_value_minor: s.redeem_value_minor,
        redeem_points: s.redeem_points,
        return_policy,
        goodwill_max_per_grant: s.goodwill_max_per_grant,
        goodwill_max_per_day: s.goodwill_max_per_day,
        correction_max_points: s.correction_max_points,
        migration_max_points: s.migration_max_points,
        hold_default_ttl_secs: seconds(v, "hold_default_ttl_seconds", s.hold_default_ttl_seconds),
        hold_max_ttl_secs: seconds(v, "hold_max_ttl_seconds", s.hold_max_ttl_seconds),
        feedback_bonus_points: s.feedback_bonus_points,
        risk_window_days: unsigned(v, "risk_window_days", s.risk_window_days),
    }
}

fn time(
    v: &mut Violations,
    field: &str,
    ts: Option<&prost_types::Timestamp>,
) -> Option<DateTime<Utc>> {
    if ts.is_none() {
        v.push(field, "is required");
        return None;
    }
    convert::optional_time(v, field, ts).flatten()
}

fn non_negative(v: &mut Violations, field: &str, value: i32) -> Option<u32> {
    v.check(
        field,
        u32::try_from(value).map_err(|_| "must not be negative".to_string()),
    )
}

fn channel_name(v: &mut Violations, field: &str, raw: i32) -> Option<String> {
    let channel = convert::channel_of(raw).map(|c| c.as_str().to_owned());
    if channel.is_none() {
        v.push(field, "must be a known channel");
    }
    channel
}

fn rule(v: &mut Violations, i: usize, r: &v1::EarnRule) -> Option<EarnRule> {
    let f = |name: &str| format!("program.rules[{i}].{name}");
    let effect = match r.effect {
        Some(v1::earn_rule::Effect::MultiplierPercent(percent)) => {
            Some(Effect::Multiplier { percent })
        }
        Some(v1::earn_rule::Effect::BonusPointsPerUnit(points)) => {
            Some(Effect::PerUnitBonus { points })
        }
        None => {
            v.push(
                f("effect"),
                "must give multiplier_percent or bonus_points_per_unit",
            );
            None
        }
    };
    let channels: Vec<Option<String>> = r
        .channels
        .iter()
        .enumerate()
        .map(|(j, c)| channel_name(v, &f(&format!("channels[{j}]")), *c))
        .collect();
    let window = match &r.window {
        None => Some(None),
        Some(w) => {
            let start = time(v, &f("window.start_time"), w.start_time.as_ref());
            let end = time(v, &f("window.end_time"), w.end_time.as_ref());
            let days: Vec<Option<u32>> = w
                .days_of_week
                .iter()
                .map(|d| non_negative(v, &f("window.days_of_week"), *d))
                .collect();
            let from = w
                .from_minute
                .map(|m| non_negative(v, &f("window.from_minute"), m));
            let to = w
                .to_minute
                .map(|m| non_negative(v, &f("window.to_minute"), m));
            match (
                start,
                end,
                days.into_iter().collect::<Option<Vec<u32>>>(),
                from.map_or(Some(None), |m| m.map(Some)),
                to.map_or(Some(None), |m| m.map(Some)),
            ) {
                (
                    Some(start),
                    Some(end),
                    Some(days_of_week),
                    Some(from_minute),
                    Some(to_minute),
                ) => Some(Some(Window {
                    start,
                    end,
                    days_of_week,
                    from_minute,
                    to_minute,
                })),
                _ => None,
            }
        }
    };
    // An unknown value is a caller's mistake, not STACK (AIP-126: UNSPECIFIED keeps the
    // documented default).
    let combine = match v1::CombineMode::try_from(r.combine) {
        Ok(v1::CombineMode::Best) => Some(Combine::Best),
        Ok(v1::CombineMode::Stack | v1::CombineMode::Unspecified) => Some(Combine::Stack),
        Err(_) => {
            v.push(
                f("combine"),
                "must be COMBINE_MODE_STACK or COMBINE_MODE_BEST",
            );
            None
        }
    };
    if r.window.as_ref().is_some_and(|w| w.days_of_week.len() > 7) {
        v.push(f("window.days_of_week"), "at most the 7 days of the week");
    }
    if r.rule_id.starts_with("offer:") {
        v.push(
            f("rule_id"),
            "must not start with \"offer:\" (receipts name offers so)",
        );
    }
    Some(EarnRule {
        rule_id: r.rule_id.clone(),
        name: r.name.clone(),
        skus: r.skus.clone(),
        categories: r.categories.clone(),
        channels: channels.into_iter().collect::<Option<Vec<String>>>()?,
        stores: r.stores.clone(),
        effect: effect?,
        combine: combine?,
        window: window?,
        per_member_limit: r.per_member_limit,
        budget: r.budget_points,
    })
}

fn tier(t: &v1::Tier) -> Tier {
    Tier {
        tier_id: t.tier_id.clone(),
        name: t.name.clone(),
        rank: t.rank,
        threshold_points: t.threshold_points,
        threshold_spend_minor: t.threshold_spend_minor,
        earn_multiplier_percent: t.earn_multiplier_percent,
    }
}

/// The fields an UpdateProgram changes (AIP-134): those the mask names (`*`: all), or
/// without a mask those the request sets to a non-empty, non-zero value.
fn update_fields(
    v: &mut Violations,
    p: &v1::Program,
    mask: Option<&prost_types::FieldMask>,
) -> Option<Vec<ProgramField>> {
    let Some(mask) = mask.filter(|m| !m.paths.is_empty()) else {
        return Some(populated(p));
    };
    if let Some(star) = mask.paths.iter().position(|path| path == "*") {
        if mask.paths.len() > 1 {
            let other = if star == 0 { 1 } else { 0 };
            v.push(
                format!("update_mask.paths[{other}]"),
                "`*` (a full replace) takes no other paths",
            );
            return None;
        }
        return Some(ProgramField::ALL.to_vec());
    }
    let mut fields = Vec::new();
    for (i, path) in mask.paths.iter().enumerate() {
        let field = format!("update_mask.paths[{i}]");
        match ProgramField::parse(path) {
            Some(f) if !fields.contains(&f) => fields.push(f),
            Some(_) => v.push(field, "names a field twice"),
            None if path == "tiers" => {
                v.push(field, "is output only: tiers change through UpsertTier")
            }
            None if path == "version" => v.push(field, "is output only"),
            None if path.chars().any(|c| c.is_ascii_uppercase()) => v.push(
                field,
                "is not a field of Program (paths are snake_case, e.g. birthday_bonus_points)",
            ),
            None => v.push(field, "is not a field of Program"),
        }
    }
    Some(fields)
}

/// The fields a request without a mask sets: those with a non-empty, non-zero value.
fn populated(p: &v1::Program) -> Vec<ProgramField> {
    use ProgramField as F;
    let set = [
        (F::TimeZone, !p.time_zone.is_empty()),
        (F::BasePoints, p.base_points != 0),
        (F::BaseSpendMinor, p.base_spend_minor != 0),
        (F::ExcludedSkus, !p.excluded_skus.is_empty()),
        (F::ExcludedCategories, !p.excluded_categories.is_empty()),
        (F::Rules, !p.rules.is_empty()),
        (F::TierWindowMonths, p.tier_window_months != 0),
        (F::TierGraceDays, p.tier_grace_days != 0),
        (F::BirthdayBonusPoints, p.birthday_bonus_points != 0),
        (F::AnniversaryBonusPoints, p.anniversary_bonus_points != 0),
        (F::ReferralBonusReferrer, p.referral_bonus_referrer != 0),
        (F::ReferralBonusReferred, p.referral_bonus_referred != 0),
    ];
    set.into_iter()
        .filter(|(_, on)| *on)
        .map(|(f, _)| f)
        .collect()
}

fn ruleset(v: &mut Violations, p: &v1::Program) -> Option<Ruleset> {
    let rules: Vec<Option<EarnRule>> = p
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| rule(v, i, r))
        .collect();
    let window = non_negative(v, "program.tier_window_months", p.tier_window_months);
    let grace = non_negative(v, "program.tier_grace_days", p.tier_grace_days);
    Some(Ruleset {
        version: 0,
        time_zone: if p.time_zone.is_empty() {
            "UTC".into()
        } else {
            p.time_zone.clone()
        },
        base_points: p.base_points,
        base_spend_minor: p.base_spend_minor,
        excluded_skus: p.excluded_skus.clone(),
        excluded_categories: p.excluded_categories.clone(),
        rules: rules.into_iter().collect::<Option<Vec<_>>>()?,
        tiers: Vec::new(),
        tier_window_months: window?,
        tier_grace_days: grace?,
        birthday_bonus_points: p.birthday_bonus_points,
        anniversary_bonus_points: p.anniversary_bonus_points,
        referral_bonus_referrer: p.referral_bonus_referrer,
        referral_bonus_referred: p.referral_bonus_referred,
    })
}

impl From<Tier> for v1::Tier {
    fn from(t: Tier) -> Self {
        Self {
            tier_id: t.tier_id,
            name: t.name,
            rank: t.rank,
            threshold_points: t.threshold_points,
            threshold_spend_minor: t.threshold_spend_minor,
            earn_multiplier_percent: t.earn_multiplier_percent,
        }
    }
}

impl From<Ruleset> for v1::Program {
    fn from(r: Ruleset) -> Self {
        Self {
            version: r.version,
            time_zone: r.time_zone,
            base_points: r.base_points,
            base_spend_minor: r.base_spend_minor,
            excluded_skus: r.excluded_skus,
            excluded_categories: r.excluded_categories,
            rules: r
                .rules
                .into_iter()
                .map(|rule| v1::EarnRule {
                    rule_id: rule.rule_id,
                    name: rule.name,
                    skus: rule.skus,
                    categories: rule.categories,
                    channels: rule
                        .channels
                        .iter()
                        .map(|c| convert::channel_number(c))
                        .collect(),
                    stores: rule.stores,
                    effect: Some(match rule.effect {
                        Effect::Multiplier { percent } => {
                            v1::earn_rule::Effect::MultiplierPercent(percent)
                        }
                        // Basket bonuses come from offers, never from stored rules.
                        Effect::PerUnitBonus { points } | Effect::BasketBonus { points } => {
                            v1::earn_rule::Effect::BonusPointsPerUnit(points)
                        }
                    }),
                    combine: match rule.combine {
                        Combine::Best => v1::CombineMode::Best,
                        Combine::Stack => v1::CombineMode::Stack,
                    }
                    .into(),
                    window: rule.window.map(|w| v1::RuleWindow {
                        start_time: Some(timestamp(w.start)),
                        end_time: Some(timestamp(w.end)),
                        days_of_week: w
                            .days_of_week
                            .iter()
                            .map(|d| i32::try_from(*d).unwrap_or(0))
                            .collect(),
                        from_minute: w.from_minute.and_then(|m| i32::try_from(m).ok()),
                        to_minute: w.to_minute.and_then(|m| i32::try_from(m).ok()),
                    }),
                    per_member_limit: rule.per_member_limit,
                    budget_points: rule.budget,
                })
                .collect(),
            tier_window_months: i32::try_from(r.tier_window_months).unwrap_or(0),
            tier_grace_days: i32::try_from(r.tier_grace_days).unwrap_or(0),
            birthday_bonus_points: r.birthday_bonus_points,
            anniversary_bonus_points: r.anniversary_bonus_points,
            referral_bonus_referrer: r.referral_bonus_referrer,
            referral_bonus_referred: r.referral_bonus_referred,
            tiers: r.tiers.into_iter().map(Into::into).collect(),
        }
    }
}

#[tonic::async_trait]
impl ProgramServiceApi for ProgramApi {
    async fn create_program(
        &self,
        request: Request<v1::CreateProgramRequest>,
    ) -> Result<Response<v1::CreateProgramResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(
            &request,
            format!("program:{}", req.program_id),
            &req.request_id,
        );
        let mut v = Violations::default();
        // Creating a programme acts on the deployment, not in the programme the call
        // names: a retry is the same call whatever its header says.
        let mut platform = caller(&request);
        platform.program = platform.home_program.clone();
        let m = convert::checked_mutation(&mut v, &req.request_id, req, platform);
        let id = v.check("program_id", ProgramId::parse(&req.program_id));
        let name = req.display_name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            v.push(
                "display_name",
                "must be 1 to 200 characters without control characters",
            );
        }
        let patch = req
            .settings
            .as_ref()
            .map(|s| settings_patch(&mut v, s))
            .unwrap_or_default();
        let (Some(m), Some(id)) = (m, id) else {
            return Err(v.into_error().into());
        };
        if !v.is_empty() {
            return Err(v.into_error().into());
        }
        let new = NewProgram {
            program_id: id,
            display_name: name.to_owned(),
            settings: merged(self.catalog.defaults(), patch),
        };
        let created = self.catalog.create(&m, new).await?;
        Ok(Response::new(v1::CreateProgramResponse {
            program: Some(created.into()),
        }))
    }

    async fn list_programs(
        &self,
        request: Request<v1::ListProgramsRequest>,
    ) -> Result<Response<v1::ListProgramsResponse>, Status> {
        let caller = caller(&request);
        let programs = if caller.role == Role::Platform {
            self.catalog.list().await?
        } else {
            vec![self.catalog.get(&caller.home_program).await?]
        };
        Ok(Response::new(v1::ListProgramsResponse {
            programs: programs.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_program(
        &self,
        request: Request<v1::GetProgramRequest>,
    ) -> Result<Response<v1::GetProgramResponse>, Status> {
        let caller = caller(&request);
        let req = request.get_ref();
        if req.program_id.is_empty() || req.program_id == caller.program.as_str() {
            let program = self.program.program().await?;
            let info = self.catalog.get(&caller.program).await?;
            return Ok(Response::new(v1::GetProgramResponse {
                program: Some(program.into()),
                info: Some(info.into()),
            }));
        }
        let mut v = Violations::default();
        let Some(id) = v.check("program_id", ProgramId::parse(&req.program_id)) else {
            return Err(v.into_error().into());
        };
        // Only a platform administrator reads another programme than the call's.
        if caller.role != Role::Platform {
            return Err(AppError::PermissionDenied.into());
        }
        let info = self.catalog.get(&id).await?;
        let program = self.catalog.rules(&id).await?;
        Ok(Response::new(v1::GetProgramResponse {
            program: Some(program.into()),
            info: Some(info.into()),
        }))
    }

    async fn update_program(
        &self,
        request: Request<v1::UpdateProgramRequest>,
    ) -> Result<Response<v1::UpdateProgramResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(&request, "program".to_string(), &req.request_id);
        let mut v = Violations::default();
        let m = convert::checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let rules = match &req.program {
            Some(p) => ruleset(&mut v, p),
            None => {
                v.push("program", "is required");
                None
            }
        };
        let fields = req
            .program
            .as_ref()
            .and_then(|p| update_fields(&mut v, p, req.update_mask.as_ref()));
        match (m, rules, fields) {
            (Some(m), Some(rules), Some(fields)) if v.is_empty() => {
                let stored = self.program.update_program(&m, rules, &fields).await?;
                Ok(Response::new(v1::UpdateProgramResponse {
                    program: Some(stored.into()),
                }))
            }
            _ => Err(v.into_error().into()),
        }
    }

    async fn upsert_tier(
        &self,
        request: Request<v1::UpsertTierRequest>,
    ) -> Result<Response<v1::UpsertTierResponse>, Status> {
        let req = request.get_ref();
        super::middleware::note_audit(
            &request,
            format!(
                "tier:{}",
                req.tier.as_ref().map(|t| t.tier_id.as_str()).unwrap_or("")
            ),
            &req.request_id,
        );
        let mut v = Violations::default();
        let m = convert::checked_mutation(&mut v, &req.request_id, req, caller(&request));
        let t = req.tier.as_ref().map(tier);
        if t.is_none() {
            v.push("tier", "is required");
        }
        match (m, t) {
            (Some(m), Some(t)) if v.is_empty() => {
                let stored = self.program.upsert_tier(&m, t).await?;
                Ok(Response::new(v1::UpsertTierResponse {
                    program: Some(stored.into()),
                }))
            }
            _ => Err(v.into_error().into()),
        }
    }

    async fn list_tiers(
        &self,
        _request: Request<v1::ListTiersRequest>,
    ) -> Result<Response<v1::ListTiersResponse>, Status> {
        let program = self.program.program().await?;
        Ok(Response::new(v1::ListTiersResponse {
            version: program.version,
            tiers: program.tiers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_tier_status(
        &self,
        request: Request<v1::GetTierStatusRequest>,
    ) -> Result<Response<v1::GetTierStatusResponse>, Status> {
        let mut v = Violations::default();
        let Some(key) = convert::member_key(&mut v, "member", request.get_ref().member.as_ref())
        else {
            return Err(v.into_error().into());
        };
        let s = self.program.tier_status(&key).await?;
        Ok(Response::new(v1::GetTierStatusResponse {
            member_id: s.member_id,
            tier: s.tier.map(Into::into),
            tier_start_time: s.tier_since.map(timestamp),
            period_end_time: s.period_end.map(timestamp),
            kept_until_time: s.kept_until.map(timestamp),
            qualifying_points: s.qualifying_points,
            qualifying_spend_minor: s.qualifying_spend_minor,
            next_tier: s.next_tier.map(Into::into),
            points_to_next_tier: s.points_to_next,
            spend_to_next_tier_minor: s.spend_to_next_minor,
        }))
    }
}
