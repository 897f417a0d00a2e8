//! Basket lines and what each earned. The rules engine (`rules.rs`) prices them; the
//! base rate's rounding, tested below through the engine:
//! - a line's exact points are `eligible_minor × earn_points / earn_spend_minor`, a rational;
//! - the basket earns `floor(Σ exact)`: rounding happens once, on the basket, so splitting a
//!   purchase into lines never costs the member a point;
//! - each line gets `floor(exact)`, and the points left over (fewer than the number of lines)
//!   go one each to the lines with the largest fractional remainders, ties to the smaller
//!   `line_id`. Lines therefore always sum to the basket total, and the split does not depend
//!   on the order of the lines.
use serde::{Deserialize, Serialize};

use super::ShortId;

/// Largest quantity accepted on one line.
const MAX_QUANTITY: i64 = 1_000_000;
/// Largest line total accepted, in minor units (10^13: far beyond any real basket, and
/// small enough that points arithmetic on it cannot overflow i128).
const MAX_LINE_TOTAL_MINOR: i64 = 10_000_000_000_000;

/// A validated basket line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasketLine {
    pub line_id: ShortId,
    pub sku: ShortId,
    pub category: Option<ShortId>,
    pub quantity: i64,
    pub unit_price_minor: i64,
    pub discount_minor: i64,
}

impl BasketLine {
    /// Validates the numbers; the error names the offending field.
    pub fn new(
        line_id: ShortId,
        sku: ShortId,
        category: Option<ShortId>,
        quantity: i64,
        unit_price_minor: i64,
        discount_minor: i64,
    ) -> Result<Self, (&'static str, String)> {
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(("quantity", format!("must be between 1 and {MAX_QUANTITY}")));
        }
        if unit_price_minor < 0 {
            return Err(("unit_price_minor", "must not be negative".into()));
        }
        let gross = quantity
            .checked_mul(unit_price_minor)
            .filter(|g| *g <= MAX_LINE_TOTAL_MINOR)
            .ok_or((
                "unit_price_minor",
                format!("line total must not exceed {MAX_LINE_TOTAL_MINOR}"),
            ))?;
        if discount_minor < 0 || discount_minor > gross {
            return Err((
                "discount_minor",
                "must be between 0 and quantity × unit_price_minor".into(),
            ));
        }
        Ok(Self {
            line_id,
            sku,
            category,
            quantity,
            unit_price_minor,
            discount_minor,
        })
    }

    /// What the line cost after its discount: the amount that earns points.
    pub fn eligible_minor(&self) -> i64 {
        self.quantity * self.unit_price_minor - self.discount_minor
    }
}

/// What one line earned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineEarning {
    pub line_id: String,
    pub eligible_minor: i64,
    pub points: i64,
    pub rule_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use std::collections::HashMap;

    use chrono::Utc;

    use super::*;
    use crate::domain::{Channel, EarnContext, RulesEarning, Ruleset};

    /// `points` points per `per_minor` minor units, as the base rate of a ruleset.
    type Rate = (i64, i64);

    /// Prices a basket with the production rules engine under a base rate only.
    fn earn(rate: Rate, lines: &[BasketLine]) -> RulesEarning {
        Ruleset::base_only(rate.0, rate.1, "UTC").evaluate(
            lines,
            &EarnContext {
                at: Utc::now(),
                channel: Channel::Pos,
                store_id: "S",
                tier: None,
                remaining: &HashMap::new(),
                extra_rules: &[],
            },
        )
    }

    fn line(id: &str, quantity: i64, unit: i64, discount: i64) -> BasketLine {
        BasketLine::new(
            ShortId::parse(id).expect("id"),
            ShortId::parse("SKU").expect("sku"),
            None,
            quantity,
            unit,
            discount,
        )
        .expect("valid line")
    }

    fn one_per_euro() -> Rate {
        (1, 100)
    }

    #[test]
    fn whole_currency_units_earn_whole_points() {
        let e = earn(one_per_euro(), &[line("1", 2, 1_000, 0)]);
        assert_eq!(e.points, 20);
        assert_eq!(e.lines[0].points, 20);
        assert_eq!(e.lines[0].rule_ids, vec!["base"]);
    }

    #[test]
    fn basket_rounds_down_once_not_per_line() {
        // Three lines of 0.99 EUR: per-line flooring would give 0; the basket earns floor(2.97) = 2.
        let e = earn(
            one_per_euro(),
            &[
                line("a", 1, 99, 0),
                line("b", 1, 99, 0),
                line("c", 1, 99, 0),
            ],
        );
        assert_eq!(e.points, 2);
        // Equal remainders: the left-over points go to the smallest line ids.
        let per_line: Vec<i64> = e.lines.iter().map(|l| l.points).collect();
        assert_eq!(per_line, vec![1, 1, 0]);
    }

    #[test]
    fn largest_remainder_gets_the_left_over_point() {
        // 1.50 and 0.80: floors 1 and 0, total floor(2.30) = 2, the .80 line gets the extra point.
        let e = earn(one_per_euro(), &[line("a", 1, 150, 0), line("b", 1, 80, 0)]);
        assert_eq!(e.points, 2);
        assert_eq!(e.lines[0].points, 1);
        assert_eq!(e.lines[1].points, 1);
    }

    #[test]
    fn discounts_reduce_the_eligible_amount() {
        let e = earn(one_per_euro(), &[line("a", 3, 500, 250)]);
        assert_eq!(e.eligible_minor, 1_250);
        assert_eq!(e.points, 12);
    }

    #[test]
    fn fractional_rates_and_zero_rate() {
        // 1 point per 10 EUR.
        let e = earn((1, 1_000), &[line("a", 1, 9_999, 0)]);
        assert_eq!(e.points, 9);
        // 5 points per 1 EUR.
        let e = earn((5, 100), &[line("a", 1, 199, 0)]);
        assert_eq!(e.points, 9);
        let e = earn((0, 100), &[line("a", 1, 10_000, 0)]);
        assert_eq!(e.points, 0);
        assert!(e.lines[0].rule_ids.is_empty());
    }

    #[test]
    fn line_validation_names_the_field() {
        let mk = |q, u, d| {
            BasketLine::new(
                ShortId::parse("1").expect("id"),
                ShortId::parse("S").expect("sku"),
                None,
                q,
                u,
                d,
            )
            .map_err(|(f, _)| f)
        };
        assert_eq!(mk(0, 100, 0), Err("quantity"));
        assert_eq!(mk(-1, 100, 0), Err("quantity"));
        assert_eq!(mk(1, -5, 0), Err("unit_price_minor"));
        assert_eq!(mk(1, 100, 101), Err("discount_minor"));
        assert_eq!(mk(1, 100, -1), Err("discount_minor"));
        assert_eq!(mk(1_000_000, i64::MAX / 2, 0), Err("unit_price_minor"));
        assert!(mk(1, 100, 100).is_ok());
    }

    #[test]
    fn rate_validation() {
        assert!(!Ruleset::base_only(-1, 100, "UTC").validate().is_empty());
        assert!(!Ruleset::base_only(1, 0, "UTC").validate().is_empty());
    }

    fn arb_basket() -> impl Strategy<Value = Vec<BasketLine>> {
        prop::collection::vec((1i64..50, 0i64..100_000, 0u8..=100), 1..20).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (q, u, pct))| {
                    let discount = q * u * i64::from(pct) / 100;
                    line(&format!("l{i}"), q, u, discount)
                })
                .collect()
        })
    }

    fn arb_rate() -> impl Strategy<Value = Rate> {
        (0i64..20, 1i64..5_000)
    }

    proptest! {
        #[test]
        fn points_never_depend_on_line_order(basket in arb_basket(), rate in arb_rate(), seed in any::<u64>()) {
            let mut shuffled = basket.clone();
            // Deterministic shuffle from the seed.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = usize::try_from(s >> 33).unwrap_or(0) % (i + 1);
                shuffled.swap(i, j);
            }
            let a = earn(rate, &basket);
            let b = earn(rate, &shuffled);
            prop_assert_eq!(a.points, b.points);
            let by_id = |e: &RulesEarning| {
                let mut v: Vec<(String, i64)> = e.lines.iter().map(|l| (l.line_id.clone(), l.points)).collect();
                v.sort();
                v
            };
            prop_assert_eq!(by_id(&a), by_id(&b));
        }

        #[test]
        fn points_are_never_negative_and_lines_sum_to_the_total(basket in arb_basket(), rate in arb_rate()) {
            let e = earn(rate, &basket);
            prop_assert!(e.points >= 0);
            prop_assert!(e.lines.iter().all(|l| l.points >= 0));
            prop_assert_eq!(e.lines.iter().map(|l| l.points).sum::<i64>(), e.points);
        }

        #[test]
        fn total_is_the_floor_of_the_exact_basket_value(basket in arb_basket(), rate in arb_rate()) {
            let e = earn(rate, &basket);
            let exact_num: i128 = basket.iter().map(|l| i128::from(l.eligible_minor()) * i128::from(rate.0)).sum();
            let den = i128::from(rate.1);
            prop_assert_eq!(i128::from(e.points), exact_num / den);
            for (l, le) in basket.iter().zip(&e.lines) {
                // Each line is within one point of its exact share.
                let num = i128::from(l.eligible_minor()) * i128::from(rate.0);
                let p = i128::from(le.points);
                prop_assert!(p * den > num - den && p * den < num + den);
            }
        }
    }
}
