//! When earned points expire.
use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};

/// The programme's expiry policy. Dates are computed in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryPolicy {
    /// Points never expire.
    Never,
    /// Points expire N months after they were earned, to the instant (the day is clamped
    /// to the end of a shorter month: 31 January + 1 month is 28/29 February).
    MonthsAfterEarning(u32),
    /// Points expire at the end of the Nth month after the month they were earned in:
    /// earned in November with N = 12, they last until the end of the next November.
    EndOfNthMonth(u32),
}

impl ExpiryPolicy {
    /// The instant from which points earned at `earned_at` are expired, if ever.
    pub fn expires_at(self, earned_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Never => None,
            Self::MonthsAfterEarning(n) => earned_at.checked_add_months(Months::new(n)),
            Self::EndOfNthMonth(n) => {
                let first = NaiveDate::from_ymd_opt(earned_at.year(), earned_at.month(), 1)?;
                // The first instant of the month after the Nth: the end of the Nth month.
                let next = first.checked_add_months(Months::new(n.checked_add(1)?))?;
                Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0)?).into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("date")
            .with_timezone(&Utc)
    }

    #[test]
    fn never_expires() {
        assert_eq!(
            ExpiryPolicy::Never.expires_at(at("2026-11-23T10:00:00Z")),
            None
        );
    }

    #[test]
    fn months_after_earning_clamps_short_months() {
        let p = ExpiryPolicy::MonthsAfterEarning(12);
        assert_eq!(
            p.expires_at(at("2026-11-23T10:00:00Z")),
            Some(at("2027-11-23T10:00:00Z"))
        );
        let p = ExpiryPolicy::MonthsAfterEarning(1);
        assert_eq!(
            p.expires_at(at("2027-01-31T08:00:00Z")),
            Some(at("2027-02-28T08:00:00Z"))
        );
    }

    #[test]
    fn end_of_nth_month() {
        let p = ExpiryPolicy::EndOfNthMonth(12);
        assert_eq!(
            p.expires_at(at("2026-11-23T10:00:00Z")),
            Some(at("2027-12-01T00:00:00Z"))
        );
        let p = ExpiryPolicy::EndOfNthMonth(0);
        assert_eq!(
            p.expires_at(at("2026-12-31T23:59:59Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );
        let p = ExpiryPolicy::EndOfNthMonth(2);
        assert_eq!(
            p.expires_at(at("2026-11-01T00:00:00Z")),
            Some(at("2027-02-01T00:00:00Z"))
        );
    }
}
