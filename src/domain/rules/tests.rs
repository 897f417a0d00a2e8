//! The rules engine's tests.
use super::*;
use crate::domain::{BasketLine, Channel, MAX_POINTS};
use chrono::{DateTime, Timelike, Utc};
use std::collections::HashMap;

mod core {
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

mod basket_bonus {
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
