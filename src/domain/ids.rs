//! Identifiers that arrive from callers, parsed once at the boundary.
use std::fmt;

/// Idempotency key of a mutation: 1 to 128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 128 {
            return Err("must be 1 to 128 characters".into());
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err("may contain only A-Z, a-z, 0-9 and . _ : -".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A programme's id: 1 to 64 characters of `[a-z0-9]` with single `-` between them (e.g.
/// `default`, `fashion-de`). It names the programme in keys, headers and URLs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProgramId(std::sync::Arc<str>);

impl ProgramId {
    /// The programme every database from before programmes was migrated into, and the
    /// one an unconfigured deployment serves.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            || raw.starts_with('-')
            || raw.ends_with('-')
            || raw.contains("--")
        {
            return Err(
                "may contain only a-z, 0-9 and single - between them (e.g. fashion-uk)".into(),
            );
        }
        Ok(Self(raw.into()))
    }

    pub fn default_program() -> Self {
        Self(Self::DEFAULT.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProgramId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Server-assigned member id: a UUID (v7 for new members), stored in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberId(String);

impl MemberId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    pub fn parse(raw: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(raw)
            .map(|u| Self(u.to_string()))
            .map_err(|_| "must be a UUID".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for MemberId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Loyalty card number: 4 to 32 characters of `[A-Za-z0-9-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CardNumber(String);

impl CardNumber {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() < 4 || raw.len() > 32 {
            return Err("must be 4 to 32 characters".into());
        }
        if !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err("may contain only A-Z, a-z, 0-9 and -".into());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A caller-chosen identifier (order, store, line, SKU, category): 1 to 64 printable
/// characters without surrounding white space.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortId(String);

impl ShortId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.chars().count() > 64 {
            return Err("must be 1 to 64 characters".into());
        }
        if raw.trim() != raw || raw.chars().any(|c| c.is_control() || invisible(c)) {
            return Err(
                "must not contain control or invisible characters or surrounding spaces".into(),
            );
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Zero-width and bidirectional formatting characters: they make two different ids print
/// alike (or reorder a receipt line), so ids that people read and type refuse them.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programme_ids_are_lower_case_words_joined_by_single_dashes() {
        for good in ["default", "fashion-uk", "b2", "a-b-c"] {
            assert!(ProgramId::parse(good).is_ok(), "{good}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "Fashion",
            "-a",
            "a-",
            "a--b",
            "a b",
            "a_b",
            "fashión",
            long.as_str(),
        ] {
            assert!(ProgramId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn short_ids_refuse_invisible_characters() {
        assert!(ShortId::parse("order-1").is_ok());
        assert!(ShortId::parse("Zürich-1").is_ok());
        for bad in [
            "order\u{200B}1",
            "\u{202E}1-redro",
            "store\u{FEFF}",
            "a\u{2066}b",
        ] {
            assert!(ShortId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn request_id_accepts_the_documented_alphabet_only() {
        assert!(RequestId::parse("pos-7:2026.11.23_0001").is_ok());
        assert!(RequestId::parse(&"a".repeat(128)).is_ok());
        assert!(RequestId::parse("").is_err());
        assert!(RequestId::parse(&"a".repeat(129)).is_err());
        assert!(RequestId::parse("has space").is_err());
        assert!(RequestId::parse("ümlaut").is_err());
    }

    #[test]
    fn a_member_key_names_its_member_by_id_or_by_card_only() {
        let id = MemberId::new();
        let by_id = MemberKey::Id(id.clone());
        let by_card = MemberKey::Card(CardNumber::parse("CARD-0001").expect("card"));
        assert!(by_id.names(id.as_str(), None));
        assert!(by_id.names(id.as_str(), Some("CARD-0002")));
        assert!(!by_id.names(MemberId::new().as_str(), None));
        assert!(by_card.names("any", Some("CARD-0001")));
        assert!(!by_card.names("any", Some("CARD-0002")));
        assert!(!by_card.names("CARD-0001", None));
    }

    #[test]
    fn member_id_is_canonicalised() {
        let id = MemberId::parse("0193A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B").expect("valid uuid");
        assert_eq!(id.as_str(), "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b");
        assert!(MemberId::parse("not-a-uuid").is_err());
    }

    #[test]
    fn card_numbers_and_short_ids() {
        assert!(CardNumber::parse("4000-1234").is_ok());
        assert!(CardNumber::parse("123").is_err());
        assert!(CardNumber::parse("12 34").is_err());
        assert!(ShortId::parse("order 17").is_ok());
        assert!(ShortId::parse(" order").is_err());
        assert!(ShortId::parse("").is_err());
    }
}

/// A random code people can read out: `len` characters (at most 25) of Crockford's
/// base32, which has no I, L, O or U.
pub fn random_code(len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let bits = uuid::Uuid::new_v4().as_u128();
    (0..len.min(25))
        .map(|i| char::from(ALPHABET[usize::try_from((bits >> (i * 5)) & 31).unwrap_or(0)]))
        .collect()
}

/// How a request names a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKey {
    Id(MemberId),
    Card(CardNumber),
}

impl MemberKey {
    /// Whether this key names the member with this id and card number.
    pub fn names(&self, id: &str, card_number: Option<&str>) -> bool {
        match self {
            Self::Id(key) => key.as_str() == id,
            Self::Card(key) => card_number == Some(key.as_str()),
        }
    }

    /// The key as one string, distinct for ids and card numbers (a member named both
    /// ways has two).
    pub fn gate_key(&self) -> String {
        match self {
            Self::Id(id) => format!("id:{}", id.as_str()),
            Self::Card(card) => format!("card:{}", card.as_str()),
        }
    }
}
