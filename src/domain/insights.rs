//! Satisfaction arithmetic (NPS, CSAT, time to resolution) and churn-risk scoring.
//! Integers only; every rounding rule is stated where it is applied.

/// Net Promoter Score in whole percent: promoters (9–10) minus detractors (0–6) over all
/// NPS responses, times 100, rounded half away from zero. `None` without responses.
pub fn nps_percent(promoters: i64, detractors: i64, responses: i64) -> Option<i32> {
    if responses <= 0 {
        return None;
    }
    let num = 100 * (promoters - detractors);
    Some(div_round_half_away(num, responses) as i32)
}

/// CSAT mean score times 100 (4.25 → 425), rounded half up. `None` without responses.
pub fn csat_average_x100(score_sum: i64, responses: i64) -> Option<i32> {
    if responses <= 0 {
        return None;
    }
    Some(div_round_half_away(100 * score_sum, responses) as i32)
}

/// The median of durations: the middle value, or for an even count the mean of the two
/// middle values rounded down. `None` when empty.
pub fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]).div_euclid(2)
    })
}

fn div_round_half_away(num: i64, den: i64) -> i64 {
    let q = num / den;
    let r = num % den;
    if 2 * r.abs() >= den {
        q + num.signum()
    } else {
        q
    }
}

/// How an NPS score is classed.
pub fn nps_class(score: i32) -> NpsClass {
    match score {
        9.. => NpsClass::Promoter,
        7..=8 => NpsClass::Passive,
        _ => NpsClass::Detractor,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NpsClass {
    Promoter,
    Passive,
    Detractor,
}

/// The survey a feedback score answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SurveyKind {
    /// Customer satisfaction, 1 to 5.
    Csat,
    /// Net Promoter Score, 0 to 10.
    Nps,
}

impl SurveyKind {
    /// The stored form.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Csat => "CSAT",
            Self::Nps => "NPS",
        }
    }

    /// The kind a stored text names; `None` for a text no release wrote.
    pub fn parse(stored: &str) -> Option<Self> {
        [Self::Csat, Self::Nps]
            .into_iter()
            .find(|k| k.as_str() == stored)
    }

    /// The scores this survey allows.
    pub const fn scores(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Self::Csat => 1..=5,
            Self::Nps => 0..=10,
        }
    }

    /// What a score of this survey says about the member.
    pub fn satisfaction(self, score: i32) -> Satisfaction {
        match self {
            Self::Csat => Satisfaction::from_csat(score),
            Self::Nps => Satisfaction::from_nps(score),
        }
    }
}

/// A member's most recent satisfaction signal, from their latest feedback: NPS 9–10 or
/// CSAT 4–5 is satisfied, NPS 7–8 or CSAT 3 neutral, NPS 0–6 or CSAT 1–2 dissatisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Satisfaction {
    Satisfied,
    Neutral,
    Dissatisfied,
}

impl Satisfaction {
    pub fn from_nps(score: i32) -> Self {
        match nps_class(score) {
            NpsClass::Promoter => Self::Satisfied,
            NpsClass::Passive => Self::Neutral,
            NpsClass::Detractor => Self::Dissatisfied,
        }
    }

    pub fn from_csat(score: i32) -> Self {
        match score {
            4.. => Self::Satisfied,
            3 => Self::Neutral,
            _ => Self::Dissatisfied,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Satisfied => "SATISFIED",
            Self::Neutral => "NEUTRAL",
            Self::Dissatisfied => "DISSATISFIED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "SATISFIED" => Some(Self::Satisfied),
            "NEUTRAL" => Some(Self::Neutral),
            "DISSATISFIED" => Some(Self::Dissatisfied),
            _ => None,
        }
    }
}

/// What churn scoring knows about one member over the rolling window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RfmInput {
    /// Whole days since the last purchase in the window; `None` if none.
    pub days_since_purchase: Option<i64>,
    /// Whole days since enrolment: recency for a member with no purchase in the window
    /// (a new member is not yet lapsed; an old one who never bought is).
    pub days_since_enrolment: i64,
    /// Orders in the window.
    pub orders: i64,
    /// Eligible spend in the window, minor units.
    pub spend_minor: i64,
    pub satisfaction: Option<Satisfaction>,
    pub open_complaints: i64,
}

/// Band edges: a value at or better than the k-th edge scores 5-k (recency: at most so
/// many days; frequency and spend: at least so much). Below every edge scores 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RfmBands {
    pub recency_days: [i64; 4],
    pub orders: [i64; 4],
    pub spend_minor: [i64; 4],
}

impl Default for RfmBands {
    fn default() -> Self {
        Self {
            recency_days: [30, 60, 120, 240],
            orders: [12, 6, 3, 2],
            spend_minor: [100_000, 50_000, 20_000, 5_000],
        }
    }
}

/// A member's churn risk, 0 (safe) to 100, with the R/F/M scores (1–5, 5 best) and the
/// reasons that make it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChurnRisk {
    pub score: i32,
    pub recency: i32,
    pub frequency: i32,
    pub monetary: i32,
    pub reasons: Vec<String>,
}

/// Scores churn risk: recency weighs most (12 points per band below the best, up to 48),
/// then frequency (5 per band, up to 20) and spend (3 per band, up to 12); a dissatisfied
/// latest response adds 15 and a neutral one 5; each open complaint adds 10, at most 20.
/// The sum is capped at 100. Ties are broken by the caller (member id).
pub fn churn_risk(input: &RfmInput, bands: &RfmBands) -> ChurnRisk {
    let recency = match input.days_since_purchase {
        Some(days) => band(bands.recency_days.iter().map(|&edge| days <= edge)),
        None => band(
            bands
                .recency_days
                .iter()
                .map(|&edge| input.days_since_enrolment <= edge),
        ),
    };
    let frequency = band(bands.orders.iter().map(|&edge| input.orders >= edge));
    let monetary = band(
        bands
            .spend_minor
            .iter()
            .map(|&edge| input.spend_minor >= edge),
    );
    let mut score = (5 - recency) * 12 + (5 - frequency) * 5 + (5 - monetary) * 3;
    let mut reasons = vec![
        match input.days_since_purchase {
            Some(days) => format!("last purchase {days} days ago (R{recency})"),
            None => format!(
                "no purchase in the window, enrolled {} days ago (R{recency})",
                input.days_since_enrolment
            ),
        },
        format!("{} orders in the window (F{frequency})", input.orders),
        format!("spent {} in the window (M{monetary})", input.spend_minor),
    ];
    match input.satisfaction {
        Some(Satisfaction::Dissatisfied) => {
            score += 15;
            reasons.push("latest feedback dissatisfied (+15)".into());
        }
        Some(Satisfaction::Neutral) => {
            score += 5;
            reasons.push("latest feedback neutral (+5)".into());
        }
        _ => {}
    }
    if input.open_complaints > 0 {
        let add = (input.open_complaints * 10).min(20) as i32;
        score += add;
        reasons.push(format!(
            "{} open complaint(s) (+{add})",
            input.open_complaints
        ));
    }
    ChurnRisk {
        score: score.min(100),
        recency,
        frequency,
        monetary,
        reasons,
    }
}

/// 5 when the first test passes, 4 for the second, … 1 when none does.
fn band(mut tests: impl Iterator<Item = bool>) -> i32 {
    tests.position(|ok| ok).map_or(1, |i| 5 - i as i32)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn nps_is_promoters_minus_detractors_rounded_half_away_from_zero() {
        assert_eq!(nps_percent(0, 0, 0), None);
        assert_eq!(nps_percent(1, 0, 2), Some(50));
        assert_eq!(nps_percent(1, 0, 3), Some(33));
        assert_eq!(nps_percent(2, 0, 3), Some(67));
        assert_eq!(nps_percent(1, 0, 8), Some(13)); // 12.5
        assert_eq!(nps_percent(0, 1, 8), Some(-13)); // -12.5
        assert_eq!(nps_percent(5, 5, 10), Some(0));
        assert_eq!(nps_percent(0, 4, 4), Some(-100));
        // 6 promoters, 2 passives, 2 detractors: 60% - 20% = 40.
        assert_eq!(nps_percent(6, 2, 10), Some(40));
    }

    #[test]
    fn csat_average_is_times_100_rounded_half_up() {
        assert_eq!(csat_average_x100(0, 0), None);
        assert_eq!(csat_average_x100(17, 4), Some(425));
        assert_eq!(csat_average_x100(10, 3), Some(333));
        assert_eq!(csat_average_x100(11, 3), Some(367));
        assert_eq!(csat_average_x100(9, 8), Some(113)); // 1.125
    }

    #[test]
    fn median_takes_the_middle_or_the_floor_of_the_two_middles() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [7]), Some(7));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 1, 2, 3]), Some(2)); // (2 + 3) / 2 rounded down
        assert_eq!(median(&mut [10, 20]), Some(15));
    }

    #[test]
    fn nps_classes_and_satisfaction() {
        assert_eq!(nps_class(10), NpsClass::Promoter);
        assert_eq!(nps_class(9), NpsClass::Promoter);
        assert_eq!(nps_class(8), NpsClass::Passive);
        assert_eq!(nps_class(7), NpsClass::Passive);
        assert_eq!(nps_class(6), NpsClass::Detractor);
        assert_eq!(nps_class(0), NpsClass::Detractor);
        assert_eq!(Satisfaction::from_csat(5), Satisfaction::Satisfied);
        assert_eq!(Satisfaction::from_csat(3), Satisfaction::Neutral);
        assert_eq!(Satisfaction::from_csat(2), Satisfaction::Dissatisfied);
        assert_eq!(
            Satisfaction::parse(Satisfaction::Neutral.as_str()),
            Some(Satisfaction::Neutral)
        );
    }

    fn loyal() -> RfmInput {
        RfmInput {
            days_since_purchase: Some(3),
            days_since_enrolment: 900,
            orders: 20,
            spend_minor: 200_000,
            satisfaction: Some(Satisfaction::Satisfied),
            open_complaints: 0,
        }
    }

    #[test]
    fn a_frequent_recent_big_spender_is_safe() {
        let risk = churn_risk(&loyal(), &RfmBands::default());
        assert_eq!((risk.recency, risk.frequency, risk.monetary), (5, 5, 5));
        assert_eq!(risk.score, 0);
        assert_eq!(risk.reasons.len(), 3);
    }

    #[test]
    fn a_lapsed_unhappy_member_with_complaints_is_at_the_cap() {
        let input = RfmInput {
            days_since_purchase: Some(400),
            days_since_enrolment: 900,
            orders: 1,
            spend_minor: 1_000,
            satisfaction: Some(Satisfaction::Dissatisfied),
            open_complaints: 3,
        };
        let risk = churn_risk(&input, &RfmBands::default());
        assert_eq!((risk.recency, risk.frequency, risk.monetary), (1, 1, 1));
        // 48 + 20 + 12 + 15 + 20 = 115, capped.
        assert_eq!(risk.score, 100);
        assert!(risk.reasons.iter().any(|r| r.contains("3 open complaint")));
    }

    #[test]
    fn band_edges_are_inclusive() {
        let bands = RfmBands::default();
        let at = |days| {
            churn_risk(
                &RfmInput {
                    days_since_purchase: Some(days),
                    ..loyal()
                },
                &bands,
            )
        };
        assert_eq!(at(30).recency, 5);
        assert_eq!(at(31).recency, 4);
        assert_eq!(at(240).recency, 2);
        assert_eq!(at(241).recency, 1);
        assert_eq!(at(100).score, 24); // R3: 2 bands × 12
        let never = churn_risk(
            &RfmInput {
                days_since_purchase: None,
                ..loyal()
            },
            &bands,
        );
        assert_eq!(never.recency, 1);
        let newcomer = churn_risk(
            &RfmInput {
                days_since_purchase: None,
                days_since_enrolment: 2,
                ..loyal()
            },
            &bands,
        );
        assert_eq!(newcomer.recency, 5);
        let neutral = churn_risk(
            &RfmInput {
                satisfaction: Some(Satisfaction::Neutral),
                open_complaints: 1,
                ..loyal()
            },
            &bands,
        );
        assert_eq!(neutral.score, 15);
    }

    proptest! {
        /// Worse on any one input never lowers the risk, and it stays within 0..=100.
        #[test]
        fn risk_is_bounded_and_monotone(
            days in proptest::option::of(0i64..1000),
            more_days in 0i64..500,
            orders in 0i64..30,
            fewer in 0i64..30,
            spend in 0i64..300_000,
            complaints in 0i64..5,
        ) {
            let bands = RfmBands::default();
            let base = RfmInput { days_since_purchase: days, days_since_enrolment: 1000, orders, spend_minor: spend, satisfaction: None, open_complaints: complaints };
            let risk = churn_risk(&base, &bands).score;
            prop_assert!((0..=100).contains(&risk));
            let staler = RfmInput { days_since_purchase: days.map(|d| d + more_days), ..base.clone() };
            prop_assert!(churn_risk(&staler, &bands).score >= risk);
            let rarer = RfmInput { orders: (orders - fewer).max(0), ..base.clone() };
            prop_assert!(churn_risk(&rarer, &bands).score >= risk);
            let unhappy = RfmInput { satisfaction: Some(Satisfaction::Dissatisfied), ..base.clone() };
            prop_assert!(churn_risk(&unhappy, &bands).score >= risk);
            let angrier = RfmInput { open_complaints: complaints + 1, ..base };
            prop_assert!(churn_risk(&angrier, &bands).score >= risk);
        }
    }
}
