//! Checking a ruleset before it is stored: every problem named by its field.
use super::*;

impl Ruleset {
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
                .position(|id| crate::domain::ShortId::parse(id).is_err())
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
            if crate::domain::ShortId::parse(&t.tier_id).is_err()
                || !tier_ids.insert(t.tier_id.as_str())
            {
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
}
