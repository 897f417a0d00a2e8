//! The offer engine's tests.
use proptest::prelude::*;

use super::*;
use crate::domain::ShortId;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    at("2026-11-23T12:00:00Z")
}

fn facts() -> MemberFacts {
    MemberFacts {
        tier_id: Some("gold".into()),
        tags: vec!["vip".into()],
        enrolled_at: at("2026-11-01T00:00:00Z"),
        last_purchase_at: Some(at("2026-08-01T00:00:00Z")),
        birth_month: Some(11),
        window_spend_minor: 50_000,
    }
}

#[test]
fn each_targeting_condition() {
    let f = facts();
    let m = |t: Targeting| t.matches(&f, now(), 11);
    assert!(m(Targeting::default()), "no condition targets everyone");
    assert!(m(Targeting {
        tiers: vec!["gold".into(), "silver".into()],
        ..Default::default()
    }));
    assert!(!m(Targeting {
        tiers: vec!["silver".into()],
        ..Default::default()
    }));
    assert!(m(Targeting {
        tags: vec!["vip".into()],
        ..Default::default()
    }));
    assert!(!m(Targeting {
        tags: vec!["staff".into()],
        ..Default::default()
    }));
    assert!(m(Targeting {
        new_within_days: Some(30),
        ..Default::default()
    }));
    assert!(!m(Targeting {
        new_within_days: Some(7),
        ..Default::default()
    }));
    assert!(m(Targeting {
        lapsed_days: Some(90),
        ..Default::default()
    }));
    assert!(!m(Targeting {
        lapsed_days: Some(180),
        ..Default::default()
    }));
    assert!(m(Targeting {
        birthday_month: true,
        ..Default::default()
    }));
    assert!(
        !Targeting {
            birthday_month: true,
            ..Default::default()
        }
        .matches(&f, now(), 12)
    );
    assert!(m(Targeting {
        min_spend_minor: Some(50_000),
        max_spend_minor: Some(100_000),
        ..Default::default()
    }));
    assert!(
        !m(Targeting {
            max_spend_minor: Some(50_000),
            ..Default::default()
        }),
        "bands are [min, max)"
    );
    let never_bought = MemberFacts {
        last_purchase_at: None,
        ..facts()
    };
    assert!(
        Targeting {
            lapsed_days: Some(90),
            ..Default::default()
        }
        .matches(&never_bought, now(), 11)
    );
}

fn arb_targeting() -> impl Strategy<Value = Targeting> {
    (
        prop::option::of(prop::sample::subsequence(
            vec!["gold", "silver", "bronze"],
            0..3,
        )),
        prop::option::of(prop::sample::subsequence(vec!["vip", "staff"], 0..2)),
        prop::option::of(1u32..400),
        prop::option::of(1u32..400),
        any::<bool>(),
        prop::option::of(0i64..100_000),
        prop::option::of(0i64..100_000),
    )
        .prop_map(|(tiers, tags, new, lapsed, birthday, min, max)| Targeting {
            tiers: tiers
                .unwrap_or_default()
                .into_iter()
                .map(String::from)
                .collect(),
            tags: tags
                .unwrap_or_default()
                .into_iter()
                .map(String::from)
                .collect(),
            new_within_days: new,
            lapsed_days: lapsed,
            birthday_month: birthday,
            min_spend_minor: min,
            max_spend_minor: max,
        })
}

proptest! {
    /// Targeting is a conjunction: dropping any one condition never excludes a member
    /// who was targeted, and a member is targeted only if every condition holds.
    #[test]
    fn dropping_a_condition_never_narrows_the_audience(t in arb_targeting(), spend in 0i64..100_000, days in 0i64..400) {
        let f = MemberFacts {
            window_spend_minor: spend,
            last_purchase_at: Some(now() - Duration::days(days)),
            enrolled_at: now() - Duration::days(days),
            ..facts()
        };
        if t.matches(&f, now(), 11) {
            let looser = [
                Targeting { tiers: vec![], ..t.clone() },
                Targeting { tags: vec![], ..t.clone() },
                Targeting { new_within_days: None, ..t.clone() },
                Targeting { lapsed_days: None, ..t.clone() },
                Targeting { birthday_month: false, ..t.clone() },
                Targeting { min_spend_minor: None, max_spend_minor: None, ..t.clone() },
            ];
            for l in looser {
                prop_assert!(l.matches(&f, now(), 11));
            }
        }
        let each = [
            Targeting { tiers: t.tiers.clone(), ..Default::default() },
            Targeting { tags: t.tags.clone(), ..Default::default() },
            Targeting { new_within_days: t.new_within_days, ..Default::default() },
            Targeting { lapsed_days: t.lapsed_days, ..Default::default() },
            Targeting { birthday_month: t.birthday_month, ..Default::default() },
            Targeting { min_spend_minor: t.min_spend_minor, max_spend_minor: t.max_spend_minor, ..Default::default() },
        ];
        prop_assert_eq!(t.matches(&f, now(), 11), each.iter().all(|c| c.matches(&f, now(), 11)));
    }
}

fn line(id: &str, sku: &str, quantity: i64, unit: i64) -> BasketLine {
    BasketLine::new(
        ShortId::parse(id).expect("id"),
        ShortId::parse(sku).expect("sku"),
        None,
        quantity,
        unit,
        0,
    )
    .expect("line")
}

fn offer(code: &str, kind: OfferKind) -> Offer {
    Offer {
        offer_id: format!("id-{code}"),
        code: code.into(),
        name: code.into(),
        description: String::new(),
        kind,
        free_sku: None,
        skus: Vec::new(),
        categories: Vec::new(),
        min_basket_minor: 0,
        channels: Vec::new(),
        valid_from: None,
        valid_until: None,
        per_member_limit: None,
        total_limit: None,
        priority: 0,
        stackable: true,
        active: true,
        targeting: Targeting::default(),
        reward_id: None,
    }
}

fn apply(
    offers: &[Offer],
    codes: &[&str],
    lines: &[BasketLine],
    left: Option<i64>,
) -> OffersApplied {
    let f = facts();
    let codes: Vec<String> = codes.iter().map(|c| (*c).to_string()).collect();
    apply_offers(
        &codes,
        offers,
        &|_| left,
        lines,
        &OfferContext {
            now: now(),
            month: 11,
            channel: Channel::Pos,
            facts: &f,
        },
    )
}

fn status(a: &OffersApplied, code: &str) -> OfferStatus {
    a.effects
        .iter()
        .find(|e| e.code == code)
        .map(|e| e.status)
        .expect("effect")
}

#[test]
fn discounts_are_spread_over_matching_lines_and_never_exceed_them() {
    let lines = [line("1", "A", 1, 300), line("2", "B", 1, 100)];
    let a = apply(
        &[offer(
            "FIVE",
            OfferKind::FixedDiscount { amount_minor: 500 },
        )],
        &["FIVE"],
        &lines,
        None,
    );
    assert_eq!(
        a.effects[0].discount_minor, 400,
        "never more than the basket"
    );
    let a = apply(
        &[offer("TEN", OfferKind::PercentDiscount { percent: 10 })],
        &["TEN"],
        &lines,
        None,
    );
    assert_eq!(
        a.effects[0].discounts,
        vec![("1".into(), 30), ("2".into(), 10)]
    );
    assert_eq!(
        a.lines[0].discount_minor, 30,
        "points are earned on what is paid"
    );
    let mut free = offer("FREE-B", OfferKind::FreeItem);
    free.free_sku = Some("B".into());
    let a = apply(
        &[free.clone()],
        &["FREE-B"],
        &[line("1", "B", 3, 100)],
        None,
    );
    assert_eq!(a.effects[0].discounts, vec![("1".into(), 100)]);
    let a = apply(&[free], &["FREE-B"], &[line("1", "A", 1, 100)], None);
    assert_eq!(status(&a, "FREE-B"), OfferStatus::NoMatchingItems);
}

#[test]
fn points_offers_become_rules_for_the_engine() {
    let lines = [line("1", "A", 1, 1_000)];
    let a = apply(
        &[
            offer("X2", OfferKind::PointsMultiplier { percent: 200 }),
            offer("B50", OfferKind::BonusPoints { points: 50 }),
        ],
        &["X2", "B50"],
        &lines,
        None,
    );
    let ids: Vec<&str> = a.rules.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(ids, vec!["offer:B50", "offer:X2"]);
    assert!(a.effects.iter().all(|e| e.status == OfferStatus::Applied));
}

#[test]
fn every_reason_an_offer_does_not_apply() {
    let lines = [line("1", "A", 1, 1_000)];
    let mut expired = offer("OLD", OfferKind::BonusPoints { points: 5 });
    expired.valid_until = Some(at("2026-01-01T00:00:00Z"));
    let mut online = offer("WEB", OfferKind::BonusPoints { points: 5 });
    online.channels = vec!["ONLINE".into()];
    let mut silver = offer("SILVER", OfferKind::BonusPoints { points: 5 });
    silver.targeting.tiers = vec!["silver".into()];
    let mut big = offer("BIG", OfferKind::BonusPoints { points: 5 });
    big.min_basket_minor = 5_000;
    let a = apply(
        &[expired, online, silver, big],
        &["OLD", "WEB", "SILVER", "BIG", "NOPE"],
        &lines,
        None,
    );
    assert_eq!(status(&a, "OLD"), OfferStatus::Expired);
    assert_eq!(status(&a, "WEB"), OfferStatus::WrongChannel);
    assert_eq!(status(&a, "SILVER"), OfferStatus::NotEligible);
    assert_eq!(status(&a, "BIG"), OfferStatus::BasketTooSmall);
    assert_eq!(status(&a, "NOPE"), OfferStatus::UnknownCode);
    let a = apply(
        &[offer("USED", OfferKind::BonusPoints { points: 5 })],
        &["USED"],
        &lines,
        Some(0),
    );
    assert_eq!(status(&a, "USED"), OfferStatus::LimitReached);
}

#[test]
fn a_non_stackable_offer_applies_alone_in_priority_order() {
    let lines = [line("1", "A", 1, 1_000)];
    let mut exclusive = offer("SOLO", OfferKind::FixedDiscount { amount_minor: 100 });
    exclusive.stackable = false;
    exclusive.priority = 10;
    let other = offer("ALSO", OfferKind::BonusPoints { points: 5 });
    let a = apply(
        &[exclusive.clone(), other.clone()],
        &["ALSO", "SOLO"],
        &lines,
        None,
    );
    assert_eq!(
        (status(&a, "SOLO"), status(&a, "ALSO")),
        (OfferStatus::Applied, OfferStatus::NotStackable)
    );
    exclusive.priority = -1;
    let a = apply(&[exclusive, other], &["ALSO", "SOLO"], &lines, None);
    assert_eq!(
        (status(&a, "ALSO"), status(&a, "SOLO")),
        (OfferStatus::Applied, OfferStatus::NotStackable)
    );
}

#[test]
fn validation_names_each_problem() {
    let mut o = offer("bad code!", OfferKind::PercentDiscount { percent: 150 });
    o.valid_from = Some(at("2026-12-01T00:00:00Z"));
    o.valid_until = Some(at("2026-11-01T00:00:00Z"));
    o.total_limit = Some(0);
    o.targeting.min_spend_minor = Some(10);
    o.targeting.max_spend_minor = Some(5);
    let fields: Vec<String> = o.validate().into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        fields,
        vec![
            "code",
            "value",
            "valid_until",
            "total_limit",
            "targeting.max_spend_minor"
        ]
    );
    assert!(
        offer("OK", OfferKind::BonusPoints { points: 5 })
            .validate()
            .is_empty()
    );
    let free = offer("FREE", OfferKind::FreeItem);
    assert_eq!(
        free.validate()
            .into_iter()
            .map(|(f, _)| f)
            .collect::<Vec<_>>(),
        vec!["free_sku"]
    );
}

#[test]
fn remaining_uses_take_the_tighter_limit() {
    let mut o = offer("L", OfferKind::BonusPoints { points: 5 });
    assert_eq!(o.remaining_uses(3, 100), None);
    o.per_member_limit = Some(2);
    o.total_limit = Some(10);
    assert_eq!(o.remaining_uses(1, 0), Some(1));
    assert_eq!(o.remaining_uses(0, 9), Some(1));
    assert_eq!(o.remaining_uses(5, 20), Some(0));
}
