//! Partial updates of a ruleset (AIP-134 field masks): which of the programme's fields
//! an update names, and copying exactly those.
use super::Ruleset;

/// A field of the programme that UpdateProgram may change (tiers change through
/// UpsertTier; the version is the service's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramField {
    TimeZone,
    BasePoints,
    BaseSpendMinor,
    ExcludedSkus,
    ExcludedCategories,
    Rules,
    TierWindowMonths,
    TierGraceDays,
    BirthdayBonusPoints,
    AnniversaryBonusPoints,
    ReferralBonusReferrer,
    ReferralBonusReferred,
}

impl ProgramField {
    pub const ALL: [Self; 12] = [
        Self::TimeZone,
        Self::BasePoints,
        Self::BaseSpendMinor,
        Self::ExcludedSkus,
        Self::ExcludedCategories,
        Self::Rules,
        Self::TierWindowMonths,
        Self::TierGraceDays,
        Self::BirthdayBonusPoints,
        Self::AnniversaryBonusPoints,
        Self::ReferralBonusReferrer,
        Self::ReferralBonusReferred,
    ];

    /// The field's name in the API (the path of a field mask).
    pub const fn path(self) -> &'static str {
        match self {
            Self::TimeZone => "time_zone",
            Self::BasePoints => "base_points",
            Self::BaseSpendMinor => "base_spend_minor",
            Self::ExcludedSkus => "excluded_skus",
            Self::ExcludedCategories => "excluded_categories",
            Self::Rules => "rules",
            Self::TierWindowMonths => "tier_window_months",
            Self::TierGraceDays => "tier_grace_days",
            Self::BirthdayBonusPoints => "birthday_bonus_points",
            Self::AnniversaryBonusPoints => "anniversary_bonus_points",
            Self::ReferralBonusReferrer => "referral_bonus_referrer",
            Self::ReferralBonusReferred => "referral_bonus_referred",
        }
    }

    pub fn parse(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.path() == path)
    }
}

impl Ruleset {
    /// `self` with `fields` taken from `from`; every other field, and the tiers, stay.
    pub fn with_fields(&self, from: &Ruleset, fields: &[ProgramField]) -> Ruleset {
        let mut next = self.clone();
        for field in fields {
            match field {
                ProgramField::TimeZone => next.time_zone = from.time_zone.clone(),
                ProgramField::BasePoints => next.base_points = from.base_points,
                ProgramField::BaseSpendMinor => next.base_spend_minor = from.base_spend_minor,
                ProgramField::ExcludedSkus => next.excluded_skus = from.excluded_skus.clone(),
                ProgramField::ExcludedCategories => {
                    next.excluded_categories = from.excluded_categories.clone()
                }
                ProgramField::Rules => next.rules = from.rules.clone(),
                ProgramField::TierWindowMonths => next.tier_window_months = from.tier_window_months,
                ProgramField::TierGraceDays => next.tier_grace_days = from.tier_grace_days,
                ProgramField::BirthdayBonusPoints => {
                    next.birthday_bonus_points = from.birthday_bonus_points
                }
                ProgramField::AnniversaryBonusPoints => {
                    next.anniversary_bonus_points = from.anniversary_bonus_points
                }
                ProgramField::ReferralBonusReferrer => {
                    next.referral_bonus_referrer = from.referral_bonus_referrer
                }
                ProgramField::ReferralBonusReferred => {
                    next.referral_bonus_referred = from.referral_bonus_referred
                }
            }
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_path_that_parses_back() {
        for f in ProgramField::ALL {
            assert_eq!(ProgramField::parse(f.path()), Some(f));
        }
        assert_eq!(ProgramField::parse("tiers"), None);
        assert_eq!(ProgramField::parse("version"), None);
        assert_eq!(ProgramField::parse("*"), None);
    }

    #[test]
    fn only_the_named_fields_change() {
        let mut current = Ruleset::base_only(1, 100, "Europe/Berlin");
        current.birthday_bonus_points = 50;
        current.excluded_skus = vec!["GIFT".into()];
        let mut sent = Ruleset::base_only(3, 100, "UTC");
        sent.birthday_bonus_points = 0;
        let next = current.with_fields(&sent, &[ProgramField::BasePoints]);
        assert_eq!(next.base_points, 3);
        assert_eq!(next.time_zone, "Europe/Berlin");
        assert_eq!(next.birthday_bonus_points, 50);
        assert_eq!(next.excluded_skus, vec!["GIFT".to_owned()]);
        let cleared = current.with_fields(
            &sent,
            &[
                ProgramField::BirthdayBonusPoints,
                ProgramField::ExcludedSkus,
            ],
        );
        assert_eq!(cleared.birthday_bonus_points, 0);
        assert!(cleared.excluded_skus.is_empty());
        assert_eq!(
            current.with_fields(&sent, &ProgramField::ALL).base_points,
            3
        );
    }
}
