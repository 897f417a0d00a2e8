//! The engine: a basket's points under a ruleset.
use std::collections::HashMap;

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::{BASE_RULE, Combine, EarnRule, Effect, Ruleset, Tier, Window};
use crate::domain::{BasketLine, Channel, LineEarning, MAX_POINTS, apportion::largest_remainder};

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
