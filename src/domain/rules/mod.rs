//! The programme's rules and the engine that applies them to a basket. Pure: the caller
//! supplies the ruleset, the member's tier and what is left of each capped promotion.
//!
//! How rules combine, per basket line that is not excluded:
//! - the **base rate** always applies (rule id `base`);
//! - **multipliers** (`percent`, 200 = double points) add `percent − 100` % of the base
//!   points. Among matching multipliers marked `best`, only the highest applies (ties: the
//!   smaller rule id); every matching multiplier marked `stack` applies as well;
//! - the member's **tier multiplier** stacks on top (rule id `tier:<tier id>`);
//! - **per-unit bonuses** add a fixed number of points per unit; `best` and `stack` work
//!   as for multipliers, separately;
//! - **excluded** SKUs and categories earn nothing at all, from any rule.
//!
//! Rounding: each rule's points are rounded once per basket (floor of its exact total),
//! split over the lines by largest remainder (ties to the smaller line id). A capped
//! promotion (total budget or per-member limit) grants at most what is left of its cap.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Rule id of the base rate.
pub const BASE_RULE: &str = "base";

/// How a rule combines with others of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Applies on top of every other rule.
    #[default]
    Stack,
    /// Only the best of the matching `best` rules applies.
    Best,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Points × percent / 100 (200 = double points); 100 to 10000.
    Multiplier { percent: i64 },
    /// A fixed number of points per unit bought.
    PerUnitBonus { points: i64 },
    /// A fixed number of points for the basket, spread over the matching lines by value
    /// (used by offers).
    BasketBonus { points: i64 },
}

/// When a promotion runs: a time range, and optionally some days of the week and a time
/// of day, both in the programme's time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// ISO weekdays, 1 = Monday … 7 = Sunday; empty = every day.
    #[serde(default)]
    pub days_of_week: Vec<u32>,
    /// Minutes after local midnight, `[from, to)`; `None` = all day.
    #[serde(default)]
    pub from_minute: Option<u32>,
    #[serde(default)]
    pub to_minute: Option<u32>,
}

/// One earn rule or promotion. Conditions of different kinds must all hold; within a
/// kind any listed value matches; an empty list matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarnRule {
    pub rule_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub skus: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    /// Channel names as stored: POS, ONLINE, MOBILE_APP, CALL_CENTER.
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub stores: Vec<String>,
    pub effect: Effect,
    #[serde(default)]
    pub combine: Combine,
    #[serde(default)]
    pub window: Option<Window>,
    /// Most bonus points one member may get from this rule, ever.
    #[serde(default)]
    pub per_member_limit: Option<i64>,
    /// Most bonus points this rule may grant in total.
    #[serde(default)]
    pub budget: Option<i64>,
}

impl EarnRule {
    pub fn is_capped(&self) -> bool {
        self.per_member_limit.is_some() || self.budget.is_some()
    }
}

/// A tier and what it gives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    pub tier_id: String,
    pub name: String,
    /// Higher ranks are better; unique.
    pub rank: i32,
    /// Qualifying points earned within the window (either threshold qualifies).
    #[serde(default)]
    pub threshold_points: Option<i64>,
    /// Qualifying spend in minor units within the window.
    #[serde(default)]
    pub threshold_spend_minor: Option<i64>,
    /// Earn multiplier in percent (100 = none, 150 = +50 %).
    pub earn_multiplier_percent: i64,
}

impl Tier {
    fn qualifies(&self, points: i64, spend: i64) -> bool {
        self.threshold_points.is_some_and(|t| points >= t)
            || self.threshold_spend_minor.is_some_and(|t| spend >= t)
    }
}

/// Everything an admin configures about earning, versioned as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// Assigned when stored; 0 for the built-in default.
    #[serde(default)]
    pub version: i64,
    /// IANA time zone of windows, birthdays and anniversaries.
    pub time_zone: String,
    pub base_points: i64,
    pub base_spend_minor: i64,
    #[serde(default)]
    pub excluded_skus: Vec<String>,
    #[serde(default)]
    pub excluded_categories: Vec<String>,
    #[serde(default)]
    pub rules: Vec<EarnRule>,
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Rolling window over which tier qualification counts, in months; also the length of
    /// a tier period.
    pub tier_window_months: u32,
    /// Days past the end of a tier period before a member who no longer qualifies drops.
    #[serde(default)]
    pub tier_grace_days: u32,
    #[serde(default)]
    pub birthday_bonus_points: i64,
    #[serde(default)]
    pub anniversary_bonus_points: i64,
    #[serde(default)]
    pub referral_bonus_referrer: i64,
    #[serde(default)]
    pub referral_bonus_referred: i64,
}

impl Ruleset {
    /// The default: only a base rate.
    pub fn base_only(base_points: i64, base_spend_minor: i64, time_zone: &str) -> Self {
        Self {
            version: 0,
            time_zone: time_zone.to_owned(),
            base_points,
            base_spend_minor,
            excluded_skus: Vec::new(),
            excluded_categories: Vec::new(),
            rules: Vec::new(),
            tiers: Vec::new(),
            tier_window_months: 12,
            tier_grace_days: 30,
            birthday_bonus_points: 0,
            anniversary_bonus_points: 0,
            referral_bonus_referrer: 0,
            referral_bonus_referred: 0,
        }
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// The best tier whose threshold the member meets.
    pub fn qualified_tier(&self, points: i64, spend: i64) -> Option<&Tier> {
        self.tiers
            .iter()
            .filter(|t| t.qualifies(points, spend))
            .max_by_key(|t| t.rank)
    }

    /// Whether a member in `current` with `points` and `spend` in the window qualifies
    /// for a higher tier: what an upward review acts on.
    pub fn qualifies_above(&self, current: Option<&str>, points: i64, spend: i64) -> bool {
        let rank = |t: Option<&Tier>| t.map_or(i32::MIN, |t| t.rank);
        rank(self.qualified_tier(points, spend)) > rank(current.and_then(|c| self.tier(c)))
    }

    pub fn tier(&self, tier_id: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.tier_id == tier_id)
    }

    /// The next tier above `current` (the lowest tier when there is none).
    pub fn next_tier(&self, current: Option<&str>) -> Option<&Tier> {
        let rank = current.and_then(|c| self.tier(c)).map(|t| t.rank);
        self.tiers
            .iter()
            .filter(|t| rank.is_none_or(|r| t.rank > r))
            .min_by_key(|t| t.rank)
    }
}

mod evaluate;
mod fields;
mod validate;

pub use evaluate::{EarnContext, RulesEarning};
pub use fields::ProgramField;

#[cfg(test)]
mod tests;
