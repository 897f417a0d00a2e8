//! Member-exclusive offers: who may use them (targeting) and what they do to a basket.
//! Pure functions; the caller supplies the member's facts and what limits have left.
use chrono::{DateTime, Datelike, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{BasketLine, Channel, EarnRule, Effect, apportion};

/// What an offer gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferKind {
    /// Fixed points on the basket, spread over the matching lines by value.
    BonusPoints { points: i64 },
    /// Points multiplier on the matching lines (200 = double), stacking on other rules.
    PointsMultiplier { percent: i64 },
    /// Money off the matching lines, in minor units.
    FixedDiscount { amount_minor: i64 },
    /// Percent off the matching lines (1 to 100), rounded down per basket.
    PercentDiscount { percent: i64 },
    /// One unit of this SKU free.
    FreeItem,
}

/// Who an offer is for. Every condition given must hold; nothing given = every member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targeting {
    /// The member's tier is one of these.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// The member has at least one of these tags (set by CRM).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Enrolled within this many days.
    #[serde(default)]
    pub new_within_days: Option<u32>,
    /// No purchase for at least this many days (never bought counts as lapsed).
    #[serde(default)]
    pub lapsed_days: Option<u32>,
    /// The member's birthday is in the current month.
    #[serde(default)]
    pub birthday_month: bool,
    /// Spend over the programme's rolling window, in minor units, at least …
    #[serde(default)]
    pub min_spend_minor: Option<i64>,
    /// … and below.
    #[serde(default)]
    pub max_spend_minor: Option<i64>,
}

/// What targeting looks at, read once per member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    pub tier_id: Option<String>,
    pub tags: Vec<String>,
    pub enrolled_at: DateTime<Utc>,
    pub last_purchase_at: Option<DateTime<Utc>>,
    /// Birth month in 1..=12, if known.
    pub birth_month: Option<u32>,
    /// Spend over the rolling window, net of returns.
    pub window_spend_minor: i64,
}

/// The longest look-back a targeting window may have (about 100 years).
const MAX_TARGET_DAYS: u32 = 36_500;
/// The largest fixed discount: a basket line's largest total.
const MAX_DISCOUNT_MINOR: i64 = 10_000_000_000_000;
/// The most ids one offer's list (SKUs, categories, tags, tiers) may hold.
const MAX_LIST: usize = 1_000;

impl Targeting {
    /// Whether a member with `facts` is targeted at `now` (`month`: the programme's
    /// current month, for birthdays).
    pub fn matches(&self, facts: &MemberFacts, now: DateTime<Utc>, month: u32) -> bool {
        // Validation bounds the days; a stored offer from before that still must not panic.
        let days_before = |d: u32| now.checked_sub_signed(Duration::days(i64::from(d)));
        (self.tiers.is_empty()
            || facts
                .tier_id
                .as_ref()
                .is_some_and(|t| self.tiers.contains(t)))
            && (self.tags.is_empty() || facts.tags.iter().any(|t| self.tags.contains(t)))
            && self
                .new_within_days
                .is_none_or(|d| days_before(d).is_none_or(|since| facts.enrolled_at > since))
            && self.lapsed_days.is_none_or(|d| {
                facts
                    .last_purchase_at
                    .is_none_or(|p| days_before(d).is_some_and(|until| p <= until))
            })
            && (!self.birthday_month || facts.birth_month == Some(month))
            && self
                .min_spend_minor
                .is_none_or(|m| facts.window_spend_minor >= m)
            && self
                .max_spend_minor
                .is_none_or(|m| facts.window_spend_minor < m)
    }
}

/// An offer as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub offer_id: String,
    /// What tills and web shops send in `offer_codes`.
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: OfferKind,
    /// For `FreeItem`: the SKU given free. Otherwise unused.
    #[serde(default)]
    pub free_sku: Option<String>,
    /// Lines it applies to; empty lists match every line.
    #[serde(default)]
    pub skus: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    /// Smallest basket (eligible amount of all lines) it applies to.
    #[serde(default)]
    pub min_basket_minor: i64,
    /// Channel names as stored; empty = all.
    #[serde(default)]
    pub channels: Vec<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub per_member_limit: Option<i64>,
    pub total_limit: Option<i64>,
    /// Higher first.
    pub priority: i32,
    /// Whether it combines with other offers in one basket.
    pub stackable: bool,
    pub active: bool,
    #[serde(default)]
    pub targeting: Targeting,
    #[serde(default)]
    pub reward_id: Option<String>,
}

impl Offer {
    /// Every problem as `(field, description)`; empty when valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = Vec::new();
        let mut bad = |f: &str, d: &str| v.push((f.to_owned(), d.to_owned()));
        if self.code.is_empty()
            || self.code.len() > 64
            || !self
                .code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bad(
                "code",
                "must be 1 to 64 characters of A-Z, a-z, 0-9, - and _",
            );
        }
        if self.name.chars().any(char::is_control) {
            bad("name", "must not hold control characters");
        }
        if self
            .free_sku
            .as_deref()
            .is_some_and(|s| s.chars().any(char::is_control))
        {
            bad("free_sku", "must not hold control characters");
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            bad("name", "must be 1 to 200 characters");
        }
        match self.kind {
            OfferKind::BonusPoints { points } if !(1..=1_000_000).contains(&points) => {
                bad("value", "bonus points must be 1 to 1000000")
            }
            OfferKind::PointsMultiplier { percent } if !(101..=10_000).contains(&percent) => {
                bad("value", "a multiplier must be 101 to 10000 percent")
            }
            OfferKind::FixedDiscount { amount_minor }
                if !(1..=MAX_DISCOUNT_MINOR).contains(&amount_minor) =>
            {
                bad("value", "a discount must be 1 to 10^13 minor units")
            }
            OfferKind::PercentDiscount { percent } if !(1..=100).contains(&percent) => {
                bad("value", "a percent discount must be 1 to 100")
            }
            OfferKind::FreeItem if self.free_sku.as_deref().is_none_or(str::is_empty) => {
                bad("free_sku", "a free-item offer needs the SKU")
            }
            _ => {}
        }
        if self.min_basket_minor < 0 {
            bad("min_basket_minor", "must not be negative");
        }
        if let (Some(from), Some(until)) = (self.valid_from, self.valid_until)
            && until <= from
        {
            bad("valid_until", "must be after valid_from");
        }
        if self.per_member_limit.is_some_and(|l| l < 1) {
            bad("per_member_limit", "must be at least 1 when set");
        }
        if self.total_limit.is_some_and(|l| l < 1) {
            bad("total_limit", "must be at least 1 when set");
        }
        if let Err(why) = super::ShortId::parse(&self.offer_id) {
            bad("offer_id", &why);
        }
        let t = &self.targeting;
        if t.new_within_days
            .is_some_and(|d| !(1..=MAX_TARGET_DAYS).contains(&d))
        {
            bad(
                "targeting.new_within_days",
                "must be 1 to 36500 days when set",
            );
        }
        if t.lapsed_days
            .is_some_and(|d| !(1..=MAX_TARGET_DAYS).contains(&d))
        {
            bad("targeting.lapsed_days", "must be 1 to 36500 days when set");
        }
        // Ids the catalogue matches against: each a valid short id, and not too many.
        let reward = self.reward_id.iter().cloned().collect::<Vec<_>>();
        for (field, list) in [
            ("skus", &self.skus),
            ("categories", &self.categories),
            ("targeting.tags", &t.tags),
            ("targeting.tier_ids", &t.tiers),
            ("reward_id", &reward),
        ] {
            if list.len() > MAX_LIST {
                bad(field, "at most 1000 entries");
            }
            for (i, id) in list.iter().enumerate().take(MAX_LIST) {
                if let Err(why) = super::ShortId::parse(id) {
                    let at = if field == "reward_id" {
                        field.to_owned()
                    } else {
                        format!("{field}[{i}]")
                    };
                    bad(&at, &why);
                }
            }
        }
        if t.min_spend_minor.is_some_and(|m| m < 0) {
            bad("targeting.min_spend_minor", "must not be negative");
        }
        if t.max_spend_minor.is_some_and(|m| m < 0) {
            bad("targeting.max_spend_minor", "must not be negative");
        }
        if let (Some(min), Some(max)) = (t.min_spend_minor, t.max_spend_minor)
            && max <= min
        {
            bad("targeting.max_spend_minor", "must be above min_spend_minor");
        }
        v
    }

    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.active
            && self.valid_from.is_none_or(|f| f <= now)
            && self.valid_until.is_none_or(|u| now < u)
    }

    pub fn on_channel(&self, channel: Channel) -> bool {
        self.channels.is_empty() || self.channels.iter().any(|c| c == channel.as_str())
    }

    fn line_matches(&self, line: &BasketLine) -> bool {
        if let OfferKind::FreeItem = self.kind {
            return self.free_sku.as_deref() == Some(line.sku.as_str());
        }
        (self.skus.is_empty() || self.skus.iter().any(|s| s == line.sku.as_str()))
            && (self.categories.is_empty()
                || line
                    .category
                    .as_ref()
                    .is_some_and(|c| self.categories.iter().any(|x| x == c.as_str())))
    }

    /// Uses left for a member: the smaller of the member's and the total allowance.
    pub fn remaining_uses(&self, member_uses: i64, total_uses: i64) -> Option<i64> {
        let member = self.per_member_limit.map(|l| (l - member_uses).max(0));
        let total = self.total_limit.map(|l| (l - total_uses).max(0));
        match (member, total) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Why an offer code did or did not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfferStatus {
    Applied,
    UnknownCode,
    NotEligible,
    Expired,
    WrongChannel,
    LimitReached,
    BasketTooSmall,
    NoMatchingItems,
    NotStackable,
}

/// One offer's effect on the basket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferEffect {
    pub code: String,
    pub offer_id: Option<String>,
    pub status: OfferStatus,
    /// Discount per line (line id, minor units) for the till to apply.
    pub discounts: Vec<(String, i64)>,
    pub discount_minor: i64,
}

/// The facts about one checkout.
pub struct OfferContext<'a> {
    pub now: DateTime<Utc>,
    pub month: u32,
    pub channel: Channel,
    pub facts: &'a MemberFacts,
}

/// What a set of offer codes does to a basket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffersApplied {
    pub effects: Vec<OfferEffect>,
    /// The basket with the offers' discounts added to its lines: points are earned on
    /// what is paid.
    pub lines: Vec<BasketLine>,
    /// Points offers, as rules for the rules engine (ids `offer:<code>`).
    pub rules: Vec<EarnRule>,
}

/// Applies offers in priority order (then by code). `offers` holds the offers found for
/// the codes; `remaining` the uses left per offer id (`None`: unlimited). A non-stackable
/// offer applies only alone: it is skipped when another offer applied first, and once it
/// applied, no further offer does.
pub fn apply_offers(
    codes: &[String],
    offers: &[Offer],
    remaining: &dyn Fn(&str) -> Option<i64>,
    lines: &[BasketLine],
    ctx: &OfferContext<'_>,
) -> OffersApplied {
    let mut found: Vec<&Offer> = Vec::new();
    let mut effects = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for code in codes {
        if !seen.insert(code.as_str()) {
            continue;
        }
        match offers.iter().find(|o| &o.code == code) {
            Some(o) => found.push(o),
            None => effects.push(OfferEffect {
                code: code.clone(),
                offer_id: None,
                status: OfferStatus::UnknownCode,
                discounts: Vec::new(),
                discount_minor: 0,
            }),
        }
    }
    found.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.code.cmp(&b.code))
    });

    let mut adjusted: Vec<BasketLine> = lines.to_vec();
    let mut rules = Vec::new();
    let mut applied_any = false;
    let mut exclusive = false;
    let basket_minor: i64 = lines.iter().map(BasketLine::eligible_minor).sum();
    for offer in found {
        let matching: Vec<usize> = (0..lines.len())
            .filter(|&i| offer.line_matches(&lines[i]))
            .collect();
        let status = if !offer.is_live(ctx.now) {
            OfferStatus::Expired
        } else if !offer.on_channel(ctx.channel) {
            OfferStatus::WrongChannel
        } else if !offer.targeting.matches(ctx.facts, ctx.now, ctx.month) {
            OfferStatus::NotEligible
        } else if remaining(&offer.offer_id).is_some_and(|r| r <= 0) {
            OfferStatus::LimitReached
        } else if basket_minor < offer.min_basket_minor {
            OfferStatus::BasketTooSmall
        } else if matching.is_empty() {
            OfferStatus::NoMatchingItems
        } else if exclusive || (applied_any && !offer.stackable) {
            OfferStatus::NotStackable
        } else {
            OfferStatus::Applied
        };
        let mut discounts = Vec::new();
        if status == OfferStatus::Applied {
            applied_any = true;
            exclusive |= !offer.stackable;
            // What is left to pay on each matching line, after earlier offers.
            let payable: Vec<i64> = matching
                .iter()
                .map(|&i| adjusted[i].eligible_minor())
                .collect();
            let shares: Vec<i64> = match offer.kind {
                OfferKind::FixedDiscount { amount_minor } => {
                    let total = amount_minor.min(payable.iter().sum());
                    apportion(total, &payable)
                }
                OfferKind::PercentDiscount { percent } => {
                    let total = payable.iter().sum::<i64>() * percent.clamp(0, 100) / 100;
                    apportion(total, &payable)
                }
                OfferKind::FreeItem => {
                    // One unit of the first matching line, as far as it is still unpaid.
                    let first = matching[0];
                    let mut s = vec![0; matching.len()];
                    s[0] = lines[first].unit_price_minor.min(payable[0]);
                    s
                }
                OfferKind::BonusPoints { points } => {
                    rules.push(points_rule(
                        offer,
                        &matching,
                        lines,
                        Effect::BasketBonus { points },
                    ));
                    vec![0; matching.len()]
                }
                OfferKind::PointsMultiplier { percent } => {
                    rules.push(points_rule(
                        offer,
                        &matching,
                        lines,
                        Effect::Multiplier { percent },
                    ));
                    vec![0; matching.len()]
                }
            };
            for (&i, share) in matching.iter().zip(shares) {
                if share > 0 {
                    adjusted[i].discount_minor += share;
                    discounts.push((lines[i].line_id.as_str().to_owned(), share));
                }
            }
        }
        effects.push(OfferEffect {
            code: offer.code.clone(),
            offer_id: Some(offer.offer_id.clone()),
            status,
            discount_minor: discounts.iter().map(|(_, d)| d).sum(),
            discounts,
        });
    }
    OffersApplied {
        effects,
        lines: adjusted,
        rules,
    }
}

/// A points offer as a rule for the rules engine, over the lines it matched.
fn points_rule(
    offer: &Offer,
    matching: &[usize],
    lines: &[BasketLine],
    effect: Effect,
) -> EarnRule {
    EarnRule {
        rule_id: format!("offer:{}", offer.code),
        name: offer.name.clone(),
        skus: matching
            .iter()
            .map(|&i| lines[i].sku.as_str().to_owned())
            .collect(),
        categories: Vec::new(),
        channels: Vec::new(),
        stores: Vec::new(),
        effect,
        combine: super::Combine::Stack,
        window: None,
        per_member_limit: None,
        budget: None,
    }
}

/// The current month (1..=12) in a time zone.
pub fn month_in(tz: chrono_tz::Tz, now: DateTime<Utc>) -> u32 {
    now.with_timezone(&tz).month()
}

#[cfg(test)]
#[path = "offers_tests.rs"]
mod tests;
