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
use super::MAX_POINTS;
use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::{BasketLine, Channel, LineEarning, apportion::largest_remainder};

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

    /// Every problem with the ruleset as `(field path, description)`; empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        let mut bad = |f: String, d: &str| v.push((f, d.to_owned()));
        if self.time_zone.parse::<chrono_tz::Tz>().is_err() {
            bad(
                "time_zone".into(),
                "must be an IANA time zone such as Europe/Berlin",
            );
        }
        if !(0..=1_000_000).contains(&self.base_points) {
            bad("base_points".into(), "must be between 0 and 1000000");
        }
        if !(1..=1_000_000_000).contains(&self.base_spend_minor) {
            bad(
                "base_spend_minor".into(),
                "must be between 1 and 1000000000",
            );
        }
        if !(1..=120).contains(&self.tier_window_months) {
            bad("tier_window_months".into(), "must be between 1 and 120");
        }
        if self.tier_grace_days > 366 {
            bad("tier_grace_days".into(), "must be at most 366");
        }
        for (name, value) in [
            ("birthday_bonus_points", self.birthday_bonus_points),
            ("anniversary_bonus_points", self.anniversary_bonus_points),
            ("referral_bonus_referrer", self.referral_bonus_referrer),
            ("referral_bonus_referred", self.referral_bonus_referred),
        ] {
            if !(0..=1_000_000).contains(&value) {
                bad(name.into(), "must be between 0 and 1000000");
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let f = |name: &str| format!("rules[{i}].{name}");
            if r.rule_id.is_empty()
                || r.rule_id.len() > 64
                || r.rule_id == BASE_RULE
                || r.rule_id.starts_with("tier:")
            {
                bad(
                    f("rule_id"),
                    "must be 1 to 64 characters, not \"base\" or \"tier:…\"",
                );
            } else if !ids.insert(r.rule_id.as_str()) {
                bad(f("rule_id"), "duplicates an earlier rule");
            }
            match r.effect {
                Effect::Multiplier { percent } if !(100..=10_000).contains(&percent) => {
                    bad(
                        f("multiplier_percent"),
                        "must be between 100 and 10000 (no negative or reducing multipliers)",
                    );
                }
                Effect::PerUnitBonus { points } | Effect::BasketBonus { points }
                    if !(1..=1_000_000).contains(&points) =>
                {
                    bad(f("bonus_points_per_unit"), "must be between 1 and 1000000");
                }
                _ => {}
            }
            if r.per_member_limit.is_some_and(|l| l < 1) {
                bad(f("per_member_limit"), "must be at least 1 when set");
            }
            if r.budget.is_some_and(|b| b < 1) {
                bad(f("budget_points"), "must be at least 1 when set");
            }
            if let Some(w) = &r.window {
                if w.end <= w.start {
                    bad(f("window.end_time"), "must be after start_time");
                }
                if w.days_of_week.iter().any(|d| !(1..=7).contains(d)) {
                    bad(f("window.days_of_week"), "must be 1 (Monday) to 7 (Sunday)");
                }
                match (w.from_minute, w.to_minute) {
                    (None, None) => {}
                    (Some(a), Some(b)) if a < b && b <= 1440 => {}
                    _ => bad(
                        f("window.from_minute"),
                        "from_minute and to_minute go together, 0 ≤ from < to ≤ 1440",
                    ),
                }
            }
        }
        // Text the database stores and tills send back: no control characters (PostgreSQL
        // stores no NUL, so a NUL here would fail every accrual that touches it).
        let control = |s: &str| s.chars().any(char::is_control);
        for (name, list) in [
            ("excluded_skus", &self.excluded_skus),
            ("excluded_categories", &self.excluded_categories),
        ] {
            if list.len() > 10_000 {
                bad(name.to_owned(), "at most 10000 entries");
            }
            if let Some(i) = list
                .iter()
                .position(|id| super::ShortId::parse(id).is_err())
            {
                bad(
                    format!("{name}[{i}]"),
                    "must be 1 to 64 characters without control or invisible characters",
                );
            }
        }
        for (i, r) in self.rules.iter().enumerate() {
            let lists = [
                ("skus", &r.skus),
                ("categories", &r.categories),
                ("channels", &r.channels),
                ("stores", &r.stores),
            ];
            for (name, text) in [("rule_id", &r.rule_id), ("name", &r.name)] {
                if control(text) {
                    bad(
                        format!("rules[{i}].{name}"),
                        "must not hold control characters",
                    );
                }
            }
            for (name, list) in lists {
                if list.iter().any(|t| control(t)) {
                    bad(
                        format!("rules[{i}].{name}"),
                        "must not hold control characters",
                    );
                }
            }
        }
        for (i, t) in self.tiers.iter().enumerate() {
            for (name, text) in [("tier_id", &t.tier_id), ("name", &t.name)] {
                if control(text) {
                    bad(
                        format!("tiers[{i}].{name}"),
                        "must not hold control characters",
                    );
                }
            }
        }
        let mut ranks = std::collections::HashSet::new();
        let mut tier_ids = std::collections::HashSet::new();
        for (i, t) in self.tiers.iter().enumerate() {
            let f = |name: &str| format!("tiers[{i}].{name}");
            if super::ShortId::parse(&t.tier_id).is_err() || !tier_ids.insert(t.tier_id.as_str()) {
                bad(
                    f("tier_id"),
                    "must be 1 to 64 characters without control or invisible characters, and unique",
                );
            }
            if !ranks.insert(t.rank) {
                bad(f("rank"), "must be unique");
            }
            if t.threshold_points.is_none() && t.threshold_spend_minor.is_none() {
                bad(
                    f("threshold_points"),
                    "a tier needs a points or a spend threshold",
                );
            }
            if t.threshold_points.is_some_and(|p| p < 0) {
                bad(f("threshold_points"), "thresholds must not be negative");
            }
            if t.threshold_spend_minor.is_some_and(|p| p < 0) {
                bad(
                    f("threshold_spend_minor"),
                    "thresholds must not be negative",
                );
            }
            if !(100..=10_000).contains(&t.earn_multiplier_percent) {
                bad(
                    f("earn_multiplier_percent"),
                    "must be between 100 and 10000",
                );
            }
        }
        // Thresholds must rise with rank, or tiers would overlap.
        let mut sorted: Vec<(usize, &Tier)> = self.tiers.iter().enumerate().collect();
        sorted.sort_by_key(|(_, t)| t.rank);
        for pair in sorted.windows(2) {
            let ((_, lo), (i, hi)) = (pair[0], pair[1]);
            let overlaps =
                |a: Option<i64>, b: Option<i64>| matches!((a, b), (Some(a), Some(b)) if b <= a);
            for (name, overlap) in [
                (
                    "threshold_points",
                    overlaps(lo.threshold_points, hi.threshold_points),
                ),
                (
                    "threshold_spend_minor",
                    overlaps(lo.threshold_spend_minor, hi.threshold_spend_minor),
                ),
            ] {
                if overlap {
                    bad(
                        format!("tiers[{i}].{name}"),
                        "thresholds must rise with rank (tiers overlap)",
                    );
                }
            }
        }
        v
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

fn matches_window(w: &Window, at: DateTime<Utc>, tz: chrono_tz::Tz) -> bool {
    if at < w.start || at >= w.end {
        return false;
    }
    let local = at.with_timezone(&tz);
    if !w.days_of_week.is_empty()
        && !w
            .days_of_week
            .contains(&local.weekday().number_from_monday())
    {
        return false;
    }
    match (w.from_minute, w.to_minute) {
        (Some(from), Some(to)) => {
            let minute = local.hour() * 60 + local.minute();
            from <= minute && minute < to
        }
        _ => true,
    }
}

/// The facts about one accrual that rules look at.
#[derive(Debug, Clone)]
pub struct EarnContext<'a> {
    pub at: DateTime<Utc>,
    pub channel: Channel,
    pub store_id: &'a str,
    pub tier: Option<&'a Tier>,
    /// Points each capped rule may still grant this member (the smaller of its budget and
    /// member limit left). A capped rule missing here grants nothing.
    pub remaining: &'a HashMap<String, i64>,
    /// Rules that apply to this basket only (the points offers a member redeems).
    pub extra_rules: &'a [EarnRule],
}

/// What a basket earns under a ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesEarning {
    pub points: i64,
    pub eligible_minor: i64,
    pub lines: Vec<LineEarning>,
    /// Points granted per rule (only rules that granted some).
    pub by_rule: Vec<(String, i64)>,
}

impl RulesEarning {
    /// Whether the points fit one movement's bound ([`MAX_POINTS`]): a programme whose
    /// rules would grant more on a basket is refused, never rounded.
    pub fn within_bounds(&self) -> bool {
        self.points <= MAX_POINTS && self.lines.iter().all(|l| l.points <= MAX_POINTS)
    }
}

impl Ruleset {
    /// Capped rules that could grant points on this basket; their remaining allowance
    /// must be looked up (and locked) before [`Ruleset::evaluate`].
    pub fn capped_candidates(&self, lines: &[BasketLine], ctx: &EarnContext<'_>) -> Vec<&EarnRule> {
        self.rules
            .iter()
            .filter(|r| r.is_capped() && lines.iter().any(|l| self.rule_matches(r, l, ctx)))
            .collect()
    }

    fn excluded(&self, line: &BasketLine) -> bool {
        self.excluded_skus.iter().any(|s| s == line.sku.as_str())
            || line
                .category
                .as_ref()
                .is_some_and(|c| self.excluded_categories.iter().any(|e| e == c.as_str()))
    }

    fn rule_matches(&self, r: &EarnRule, line: &BasketLine, ctx: &EarnContext<'_>) -> bool {
        let any = |list: &[String], value: &str| list.is_empty() || list.iter().any(|x| x == value);
        !self.excluded(line)
            && any(&r.skus, line.sku.as_str())
            && (r.categories.is_empty()
                || line
                    .category
                    .as_ref()
                    .is_some_and(|c| any(&r.categories, c.as_str())))
            && any(&r.channels, ctx.channel.as_str())
            && any(&r.stores, ctx.store_id)
            && r.window
                .as_ref()
                .is_none_or(|w| matches_window(w, ctx.at, self.tz()))
    }

    /// Applies the rules to a basket (see the module documentation).
    pub fn evaluate(&self, lines: &[BasketLine], ctx: &EarnContext<'_>) -> RulesEarning {
        // Per rule: the exact numerator of each line over one denominator.
        let den_base = i128::from(self.base_spend_minor);
        let mut components: Vec<(String, i128, Vec<i128>)> = Vec::new();
        let eligible: Vec<i128> = lines
            .iter()
            .map(|l| {
                if self.excluded(l) {
                    0
                } else {
                    i128::from(l.eligible_minor())
                }
            })
            .collect();
        let base: Vec<i128> = eligible
            .iter()
            .map(|e| e * i128::from(self.base_points))
            .collect();
        components.push((BASE_RULE.to_owned(), den_base, base.clone()));

        let mut basket_bonus_lines: std::collections::BTreeMap<String, (i64, Vec<usize>)> =
            std::collections::BTreeMap::new();
        let mut add = |id: &str, den: i128, line: usize, num: i128| {
            if num == 0 {
                return;
            }
            match components.iter_mut().find(|(r, _, _)| r == id) {
                Some((_, _, nums)) => nums[line] += num,
                None => {
                    let mut nums = vec![0; lines.len()];
                    nums[line] = num;
                    components.push((id.to_owned(), den, nums));
                }
            }
        };
        for (i, line) in lines.iter().enumerate() {
            if self.excluded(line) {
                continue;
            }
            let matching: Vec<&EarnRule> = self
                .rules
                .iter()
                .chain(ctx.extra_rules)
                .filter(|r| self.rule_matches(r, line, ctx))
                .collect();
            let best_of = |want_multiplier: bool| {
                matching
                    .iter()
                    .filter(|r| {
                        r.combine == Combine::Best
                            && matches!(r.effect, Effect::Multiplier { .. }) == want_multiplier
                    })
                    .max_by(|a, b| {
                        value(a)
                            .cmp(&value(b))
                            .then_with(|| b.rule_id.cmp(&a.rule_id))
                    })
                    .copied()
            };
            let chosen = matching
                .iter()
                .filter(|r| r.combine == Combine::Stack)
                .copied()
                .chain(best_of(true))
                .chain(best_of(false));
            for rule in chosen {
                match rule.effect {
                    Effect::Multiplier { percent } => add(
                        &rule.rule_id,
                        den_base * 100,
                        i,
                        base[i] * i128::from(percent - 100),
                    ),
                    Effect::PerUnitBonus { points } => add(
                        &rule.rule_id,
                        1,
                        i,
                        i128::from(points) * i128::from(line.quantity),
                    ),
                    // Split below, once every matching line is known.
                    Effect::BasketBonus { points } => basket_bonus_lines
                        .entry(rule.rule_id.clone())
                        .or_insert_with(|| (points, Vec::new()))
                        .1
                        .push(i),
                }
            }
            if let Some(tier) = ctx.tier.filter(|t| t.earn_multiplier_percent > 100) {
                add(
                    &format!("tier:{}", tier.tier_id),
                    den_base * 100,
                    i,
                    base[i] * i128::from(tier.earn_multiplier_percent - 100),
                );
            }
        }

        for (rule_id, (points, matched)) in basket_bonus_lines {
            // The bonus over the matching lines by value (all to the first when they are free).
            let value: i128 = matched.iter().map(|&i| eligible[i]).sum();
            let mut nums = vec![0i128; lines.len()];
            let den = if value > 0 {
                for &i in &matched {
                    nums[i] = eligible[i] * i128::from(points);
                }
                value
            } else {
                nums[matched[0]] = i128::from(points);
                1
            };
            components.push((rule_id, den, nums));
        }
        let mut line_points = vec![0i64; lines.len()];
        let mut line_rules: Vec<Vec<String>> = vec![Vec::new(); lines.len()];
        let mut by_rule = Vec::new();
        for (rule_id, den, nums) in &components {
            let (_, shares) =
                largest_remainder(nums, *den, |a, b| lines[a].line_id.cmp(&lines[b].line_id));
            let mut shares: Vec<i64> = shares.into_iter().map(clamp_points).collect();
            let total: i64 = shares.iter().sum();
            let capped = self
                .rules
                .iter()
                .any(|r| &r.rule_id == rule_id && r.is_capped());
            if capped {
                let left = ctx.remaining.get(rule_id).copied().unwrap_or(0).max(0);
                if total > left {
                    // Split what is left in proportion, ties to the smaller line id (not the
                    // position), so the split never depends on line order.
                    let sum: i128 = shares.iter().map(|s| i128::from(*s)).sum();
                    let nums: Vec<i128> = shares
                        .iter()
                        .map(|s| i128::from(*s) * i128::from(left))
                        .collect();
                    let (_, capped) = largest_remainder(&nums, sum, |a, b| {
                        lines[a].line_id.cmp(&lines[b].line_id)
                    });
                    shares = capped.into_iter().map(clamp_points).collect();
                }
            }
            let total: i64 = shares.iter().sum();
            if total > 0 || rule_id == BASE_RULE {
                if total > 0 {
                    by_rule.push((rule_id.clone(), total));
                }
                for (i, s) in shares.iter().enumerate() {
                    line_points[i] = line_points[i].saturating_add(*s);
                    if *s > 0 || (rule_id == BASE_RULE && eligible[i] > 0 && self.base_points > 0) {
                        line_rules[i].push(rule_id.clone());
                    }
                }
            }
        }
        // Stable receipts: `base` first, then the other rules by id.
        let order = |id: &String| (id != BASE_RULE, id.clone());
        for ids in &mut line_rules {
            ids.sort_by_key(order);
        }
        by_rule.sort_by_key(|(id, _)| order(id));
        RulesEarning {
            points: line_points.iter().fold(0, |a, p| a.saturating_add(*p)),
            eligible_minor: lines.iter().map(BasketLine::eligible_minor).sum(),
            lines: lines
                .iter()
                .zip(line_points)
                .zip(line_rules)
                .map(|((line, points), rule_ids)| LineEarning {
                    line_id: line.line_id.as_str().to_owned(),
                    eligible_minor: if self.excluded(line) {
                        0
                    } else {
                        line.eligible_minor()
                    },
                    points,
                    rule_ids,
                })
                .collect(),
            by_rule,
        }
    }
}

/// A share as points: past [`MAX_POINTS`] it is held just above the bound (so that sums
/// of shares cannot overflow, and [`RulesEarning::within_bounds`] refuses it), never
/// wrapped or dropped.
fn clamp_points(share: i128) -> i64 {
    i64::try_from(share.clamp(0, i128::from(MAX_POINTS) + 1)).unwrap_or(MAX_POINTS + 1)
}

fn value(r: &EarnRule) -> i64 {
    match r.effect {
        Effect::Multiplier { percent } => percent,
        Effect::PerUnitBonus { points } | Effect::BasketBonus { points } => points,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::domain::ShortId;

    fn line(id: &str, sku: &str, category: Option<&str>, quantity: i64, unit: i64) -> BasketLine {
        BasketLine::new(
            ShortId::parse(id).expect("id"),
            ShortId::parse(sku).expect("sku"),
            category.map(|c| ShortId::parse(c).expect("category")),
            quantity,
            unit,
            0,
        )
        .expect("line")
    }

    fn rule(id: &str, effect: Effect, combine: Combine) -> EarnRule {
        EarnRule {
            rule_id: id.into(),
            name: String::new(),
            skus: Vec::new(),
            categories: Vec::new(),
            channels: Vec::new(),
            stores: Vec::new(),
            effect,
            combine,
            window: None,
            per_member_limit: None,
            budget: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn run(
        rs: &Ruleset,
        lines: &[BasketLine],
        tier: Option<&Tier>,
        remaining: &HashMap<String, i64>,
    ) -> RulesEarning {
        rs.evaluate(
            lines,
            &EarnContext {
                at: at("2026-11-23T10:00:00Z"),
                channel: Channel::Pos,
                store_id: "S1",
                tier,
                remaining,
                extra_rules: &[],
            },
        )
    }

    fn base() -> Ruleset {
        Ruleset::base_only(1, 100, "Europe/Berlin")
    }

    #[test]
    fn earnings_past_one_movements_bound_are_flagged_never_wrapped_or_dropped() {
        let rs = Ruleset::base_only(1_000_000, 1, "UTC");
        let none = HashMap::new();
        let within = run(&rs, &[line("1", "A", None, 1, 1_000_000)], None, &none);
        assert_eq!(within.points, MAX_POINTS);
        assert!(within.within_bounds());
        for unit in [1_000_001, 10_000_000_000_000] {
            let past = run(&rs, &[line("1", "A", None, 1, unit)], None, &none);
            assert!(past.points > MAX_POINTS, "{unit}: {}", past.points);
            assert!(!past.within_bounds());
        }
        // 500 lines at the largest price, each far past the bound: sums saturate.
        let lines: Vec<BasketLine> = (0..500)
            .map(|i| line(&format!("{i:03}"), "A", None, 1_000_000, 10_000_000))
            .collect();
        let huge = run(&rs, &lines, None, &none);
        assert!(!huge.within_bounds() && huge.points > 0);
    }

    #[test]
    fn best_multiplier_wins_and_stacking_multipliers_add() {
        let mut rs = base();
        rs.rules = vec![
            rule("double", Effect::Multiplier { percent: 200 }, Combine::Best),
            rule("triple", Effect::Multiplier { percent: 300 }, Combine::Best),
            rule(
                "plus50",
                Effect::Multiplier { percent: 150 },
                Combine::Stack,
            ),
        ];
        let e = run(
            &rs,
            &[line("a", "X", None, 1, 10_000)],
            None,
            &HashMap::new(),
        );
        // 100 base + 200 (triple beats double) + 50 (stacked).
        assert_eq!(e.points, 350);
        assert_eq!(e.lines[0].rule_ids, vec!["base", "plus50", "triple"]);
        assert_eq!(
            e.by_rule,
            vec![
                ("base".into(), 100),
                ("plus50".into(), 50),
                ("triple".into(), 200)
            ]
        );
    }

    #[test]
    fn equal_best_multipliers_pick_the_smaller_rule_id() {
        let mut rs = base();
        rs.rules = vec![
            rule(
                "b-promo",
                Effect::Multiplier { percent: 200 },
                Combine::Best,
            ),
            rule(
                "a-promo",
                Effect::Multiplier { percent: 200 },
                Combine::Best,
            ),
        ];
        let e = run(
            &rs,
            &[line("a", "X", None, 1, 1_000)],
            None,
            &HashMap::new(),
        );
        assert_eq!(e.points, 20);
        assert_eq!(e.lines[0].rule_ids, vec!["base", "a-promo"]);
    }

    #[test]
    fn per_unit_bonuses_by_sku_category_channel_and_store() {
        let mut rs = base();
        let mut by_sku = rule("coffee", Effect::PerUnitBonus { points: 5 }, Combine::Stack);
        by_sku.skus = vec!["COFFEE".into()];
        let mut by_category = rule("dairy", Effect::PerUnitBonus { points: 2 }, Combine::Stack);
        by_category.categories = vec!["dairy".into()];
        let mut online_only = rule("web", Effect::PerUnitBonus { points: 100 }, Combine::Stack);
        online_only.channels = vec!["ONLINE".into()];
        let mut other_store = rule("s9", Effect::PerUnitBonus { points: 100 }, Combine::Stack);
        other_store.stores = vec!["S9".into()];
        rs.rules = vec![by_sku, by_category, online_only, other_store];
        let lines = [
            line("1", "COFFEE", None, 2, 500),
            line("2", "MILK", Some("dairy"), 3, 100),
        ];
        let e = run(&rs, &lines, None, &HashMap::new());
        // base 10 + 3, coffee 2×5, dairy 3×2; the online and S9 rules do not match a POS sale in S1.
        assert_eq!(e.lines[0].points, 20);
        assert_eq!(e.lines[1].points, 9);
        assert_eq!(e.points, 29);
    }

    #[test]
    fn excluded_skus_and_categories_earn_nothing_from_any_rule() {
        let mut rs = base();
        rs.excluded_skus = vec!["GIFTCARD".into()];
        rs.excluded_categories = vec!["tobacco".into()];
        rs.rules = vec![rule(
            "bonus",
            Effect::PerUnitBonus { points: 10 },
            Combine::Stack,
        )];
        let lines = [
            line("1", "GIFTCARD", None, 1, 5_000),
            line("2", "CIGS", Some("tobacco"), 1, 1_000),
            line("3", "BREAD", None, 1, 300),
        ];
        let e = run(&rs, &lines, None, &HashMap::new());
        assert_eq!(
            (e.lines[0].points, e.lines[1].points, e.lines[2].points),
            (0, 0, 13)
        );
        assert!(e.lines[0].rule_ids.is_empty());
    }

    #[test]
    fn windows_use_the_programme_time_zone() {
        let mut rs = base();
        let mut weekend = rule(
            "weekend",
            Effect::Multiplier { percent: 200 },
            Combine::Best,
        );
        weekend.window = Some(Window {
            start: at("2026-11-01T00:00:00Z"),
            end: at("2026-12-01T00:00:00Z"),
            days_of_week: vec![6, 7],
            from_minute: Some(9 * 60),
            to_minute: Some(12 * 60),
        });
        rs.rules = vec![weekend];
        let at_time = |t: &str| {
            rs.evaluate(
                &[line("a", "X", None, 1, 1_000)],
                &EarnContext {
                    at: at(t),
                    channel: Channel::Pos,
                    store_id: "S1",
                    tier: None,
                    remaining: &HashMap::new(),
                    extra_rules: &[],
                },
            )
            .points
        };
        // Saturday 28 November 2026, 08:30 UTC = 09:30 in Berlin: inside.
        assert_eq!(at_time("2026-11-28T08:30:00Z"), 20);
        // 11:30 UTC = 12:30 in Berlin: outside the hours.
        assert_eq!(at_time("2026-11-28T11:30:00Z"), 10);
        // Friday: wrong day. After the end: outside.
        assert_eq!(at_time("2026-11-27T08:30:00Z"), 10);
        assert_eq!(at_time("2026-12-05T08:30:00Z"), 10);
    }

    #[test]
    fn tier_multiplier_stacks_on_top() {
        let tier = Tier {
            tier_id: "gold".into(),
            name: "Gold".into(),
            rank: 2,
            threshold_points: Some(1000),
            threshold_spend_minor: None,
            earn_multiplier_percent: 150,
        };
        let mut rs = base();
        rs.rules = vec![rule(
            "double",
            Effect::Multiplier { percent: 200 },
            Combine::Best,
        )];
        let e = run(
            &rs,
            &[line("a", "X", None, 1, 10_000)],
            Some(&tier),
            &HashMap::new(),
        );
        assert_eq!(e.points, 250);
        assert!(e.lines[0].rule_ids.contains(&"tier:gold".to_string()));
    }

    #[test]
    fn capped_rules_grant_at_most_what_is_left() {
        let mut rs = base();
        let mut promo = rule(
            "launch",
            Effect::PerUnitBonus { points: 50 },
            Combine::Stack,
        );
        promo.budget = Some(1_000);
        rs.rules = vec![promo];
        let lines = [line("a", "X", None, 3, 100), line("b", "Y", None, 1, 100)];
        let left = HashMap::from([("launch".to_string(), 120)]);
        let e = run(&rs, &lines, None, &left);
        assert_eq!(
            e.by_rule
                .iter()
                .find(|(r, _)| r == "launch")
                .map(|(_, p)| *p),
            Some(120)
        );
        assert_eq!(e.points, 4 + 120);
        assert_eq!(
            rs.capped_candidates(
                &lines,
                &EarnContext {
                    at: at("2026-11-23T10:00:00Z"),
                    channel: Channel::Pos,
                    store_id: "S1",
                    tier: None,
                    remaining: &left,
                    extra_rules: &[],
                }
            )
            .len(),
            1
        );
        // Nothing left (or never looked up): nothing granted.
        let e = run(&rs, &lines, None, &HashMap::new());
        assert_eq!(e.points, 4);
    }

    #[test]
    fn validation_names_each_problem() {
        let mut rs = base();
        rs.time_zone = "Mars/Olympus".into();
        let mut bad = rule("neg", Effect::Multiplier { percent: -200 }, Combine::Best);
        bad.window = Some(Window {
            start: at("2026-12-01T00:00:00Z"),
            end: at("2026-11-01T00:00:00Z"),
            days_of_week: vec![8],
            from_minute: None,
            to_minute: None,
        });
        rs.rules = vec![bad.clone(), bad];
        rs.tiers = vec![
            Tier {
                tier_id: "silver".into(),
                name: "S".into(),
                rank: 1,
                threshold_points: Some(500),
                threshold_spend_minor: None,
                earn_multiplier_percent: 100,
            },
            Tier {
                tier_id: "gold".into(),
                name: "G".into(),
                rank: 2,
                threshold_points: Some(400),
                threshold_spend_minor: None,
                earn_multiplier_percent: 50,
            },
        ];
        let fields: Vec<String> = rs.validate().into_iter().map(|(f, _)| f).collect();
        for expected in [
            "time_zone",
            "rules[0].multiplier_percent",
            "rules[0].window.end_time",
            "rules[0].window.days_of_week",
            "rules[1].rule_id",
            "tiers[1].earn_multiplier_percent",
            "tiers[1].threshold_points",
        ] {
            assert!(
                fields.iter().any(|f| f == expected),
                "{expected} missing from {fields:?}"
            );
        }
        assert!(base().validate().is_empty());
    }

    #[test]
    fn tier_qualification_and_next_tier() {
        let mut rs = base();
        rs.tiers = vec![
            Tier {
                tier_id: "silver".into(),
                name: "S".into(),
                rank: 1,
                threshold_points: Some(500),
                threshold_spend_minor: Some(50_000),
                earn_multiplier_percent: 100,
            },
            Tier {
                tier_id: "gold".into(),
                name: "G".into(),
                rank: 2,
                threshold_points: Some(2_000),
                threshold_spend_minor: None,
                earn_multiplier_percent: 150,
            },
        ];
        assert_eq!(rs.qualified_tier(499, 0), None);
        assert_eq!(
            rs.qualified_tier(0, 50_000).map(|t| t.tier_id.as_str()),
            Some("silver")
        );
        assert_eq!(
            rs.qualified_tier(2_000, 0).map(|t| t.tier_id.as_str()),
            Some("gold")
        );
        assert_eq!(
            rs.next_tier(None).map(|t| t.tier_id.as_str()),
            Some("silver")
        );
        assert_eq!(
            rs.next_tier(Some("silver")).map(|t| t.tier_id.as_str()),
            Some("gold")
        );
        assert_eq!(rs.next_tier(Some("gold")), None);
    }

    fn arb_ruleset() -> impl Strategy<Value = Ruleset> {
        let arb_rule = (
            0usize..4,
            100i64..400,
            1i64..20,
            any::<bool>(),
            any::<bool>(),
            prop::option::of(1i64..500),
        );
        prop::collection::vec(arb_rule, 0..5).prop_map(|raw| {
            let mut rs = Ruleset::base_only(1, 100, "UTC");
            rs.excluded_skus = vec!["SKU0".into()];
            rs.rules = raw
                .into_iter()
                .enumerate()
                .map(|(i, (sku, percent, bonus, is_multiplier, best, budget))| {
                    let effect = if is_multiplier {
                        Effect::Multiplier { percent }
                    } else {
                        Effect::PerUnitBonus { points: bonus }
                    };
                    let mut r = rule(
                        &format!("r{i}"),
                        effect,
                        if best { Combine::Best } else { Combine::Stack },
                    );
                    if sku > 0 {
                        r.skus = vec![format!("SKU{sku}")];
                    }
                    r.budget = budget;
                    r
                })
                .collect();
            rs
        })
    }

    fn arb_lines() -> impl Strategy<Value = Vec<BasketLine>> {
        prop::collection::vec((0usize..4, 1i64..5, 0i64..5_000), 1..8).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (sku, q, u))| line(&format!("l{i}"), &format!("SKU{sku}"), None, q, u))
                .collect()
        })
    }

    proptest! {
        #[test]
        fn rules_never_depend_on_line_order_never_go_negative_and_never_exceed_caps(
            rs in arb_ruleset(),
            lines in arb_lines(),
            left in 0i64..300,
        ) {
            let remaining: HashMap<String, i64> = rs.rules.iter().filter(|r| r.is_capped()).map(|r| (r.rule_id.clone(), left)).collect();
            let a = run(&rs, &lines, None, &remaining);
            let mut reversed = lines.clone();
            reversed.reverse();
            let b = run(&rs, &reversed, None, &remaining);
            prop_assert_eq!(a.points, b.points);
            let mut la: Vec<(String, i64)> = a.lines.iter().map(|l| (l.line_id.clone(), l.points)).collect();
            let mut lb: Vec<(String, i64)> = b.lines.iter().map(|l| (l.line_id.clone(), l.points)).collect();
            la.sort();
            lb.sort();
            prop_assert_eq!(la, lb);
            prop_assert!(a.lines.iter().all(|l| l.points >= 0));
            prop_assert_eq!(a.lines.iter().map(|l| l.points).sum::<i64>(), a.points);
            prop_assert_eq!(a.by_rule.iter().map(|(_, p)| p).sum::<i64>(), a.points);
            for (rule_id, points) in &a.by_rule {
                if let Some(cap) = remaining.get(rule_id) {
                    prop_assert!(points <= cap, "{} granted {} over its {} left", rule_id, points, cap);
                }
            }
            // Excluded lines earn nothing.
            for (l, e) in lines.iter().zip(&a.lines) {
                if l.sku.as_str() == "SKU0" {
                    prop_assert_eq!(e.points, 0);
                }
            }
        }
    }

    #[test]
    fn tz_is_parsed() {
        let rs = base();
        let local = Utc
            .with_ymd_and_hms(2026, 7, 1, 12, 0, 0)
            .single()
            .expect("time")
            .with_timezone(&rs.tz());
        assert_eq!(local.hour(), 14);
    }
}

#[cfg(test)]
mod basket_bonus_tests {
    use std::collections::HashMap;

    use super::*;
    use crate::domain::ShortId;

    #[test]
    fn an_extra_basket_bonus_is_spread_over_its_lines_by_value() {
        let rs = Ruleset::base_only(1, 100, "UTC");
        let line = |id: &str, sku: &str, unit: i64| {
            BasketLine::new(
                ShortId::parse(id).expect("id"),
                ShortId::parse(sku).expect("sku"),
                None,
                1,
                unit,
                0,
            )
            .expect("line")
        };
        let bonus = EarnRule {
            rule_id: "offer:B50".into(),
            name: String::new(),
            skus: vec!["A".into(), "B".into()],
            categories: Vec::new(),
            channels: Vec::new(),
            stores: Vec::new(),
            effect: Effect::BasketBonus { points: 50 },
            combine: Combine::Stack,
            window: None,
            per_member_limit: None,
            budget: None,
        };
        let e = rs.evaluate(
            &[line("1", "A", 300), line("2", "B", 100)],
            &EarnContext {
                at: Utc::now(),
                channel: Channel::Pos,
                store_id: "S",
                tier: None,
                remaining: &HashMap::new(),
                extra_rules: std::slice::from_ref(&bonus),
            },
        );
        assert_eq!(
            e.by_rule
                .iter()
                .find(|(r, _)| r == "offer:B50")
                .map(|(_, p)| *p),
            Some(50)
        );
        assert_eq!((e.lines[0].points, e.lines[1].points), (3 + 38, 1 + 12));
    }
}
