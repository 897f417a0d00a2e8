//! A member's personal data, validated.
use chrono::NaiveDate;

/// Full name: 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberName(String);

impl MemberName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 200 {
            return Err("must be 1 to 200 characters".into());
        }
        if trimmed.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// E-mail address. Deliberately shallow: one `@`, something on both sides, a dot in the
/// domain, no white space, at most 254 characters. Deliverability is the CRM's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let bad = || "must be an e-mail address such as name@example.com".to_string();
        if raw.len() > 254 || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = raw.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(bad());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Phone number in E.164 form: `+` then 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let digits = raw.strip_prefix('+').unwrap_or("");
        if (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
        {
            Ok(Self(raw.to_owned()))
        } else {
            Err("must be in E.164 form, e.g. +4915112345678".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Birthday: month and day always, year when the member gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Birthday {
    pub year: Option<i32>,
    pub month: u32,
    pub day: u32,
}

impl Birthday {
    /// `year` 0 means not given. `today` bounds the year: no birthdays in the future.
    pub fn parse(year: i32, month: i32, day: i32, today: NaiveDate) -> Result<Self, String> {
        let month = u32::try_from(month).map_err(|_| "month must be 1 to 12".to_string())?;
        let day = u32::try_from(day).map_err(|_| "day must be valid for the month".to_string())?;
        if !(1..=12).contains(&month) {
            return Err("month must be 1 to 12".into());
        }
        // Without a year, validate against a leap year so that 29 February is allowed.
        let check_year = if year == 0 { 2000 } else { year };
        if year != 0 && !(1900..=chrono::Datelike::year(&today)).contains(&year) {
            return Err("year must be 0 (not given) or between 1900 and this year".into());
        }
        let date = NaiveDate::from_ymd_opt(check_year, month, day)
            .ok_or_else(|| "day must be valid for the month".to_string())?;
        if year != 0 && date > today {
            return Err("must not be in the future".into());
        }
        Ok(Self {
            year: (year != 0).then_some(year),
            month,
            day,
        })
    }
}

/// What the member agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Consents {
    pub email_marketing: bool,
    pub sms_marketing: bool,
    pub profiling: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).expect("date")
    }

    #[test]
    fn names() {
        assert_eq!(
            MemberName::parse("  Ada Lovelace ").expect("ok").as_str(),
            "Ada Lovelace"
        );
        assert!(MemberName::parse("   ").is_err());
        assert!(MemberName::parse(&"x".repeat(201)).is_err());
    }

    #[test]
    fn emails() {
        assert!(Email::parse("ada@example.com").is_ok());
        for bad in [
            "ada",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones() {
        assert!(Phone::parse("+4915112345678").is_ok());
        for bad in ["015112345678", "+49 151", "+0123456789", "+1234"] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn birthdays() {
        assert_eq!(Birthday::parse(0, 2, 29, today()).expect("ok").year, None);
        assert!(Birthday::parse(1990, 2, 29, today()).is_err());
        assert!(Birthday::parse(1992, 2, 29, today()).is_ok());
        assert!(Birthday::parse(1990, 13, 1, today()).is_err());
        assert!(Birthday::parse(1990, 4, 31, today()).is_err());
        assert!(Birthday::parse(2027, 1, 1, today()).is_err());
        assert!(Birthday::parse(1800, 1, 1, today()).is_err());
        assert!(Birthday::parse(0, 0, 0, today()).is_err());
    }
}
