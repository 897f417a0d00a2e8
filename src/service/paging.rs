//! AIP-158 pagination: page sizes and opaque keyset tokens.
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::AppError;

const DEFAULT_PAGE_SIZE: u64 = 50;
const MAX_PAGE_SIZE: i32 = 500;

/// 0 means the default; 1 to 500 as asked.
pub fn page_size(raw: i32) -> Result<u64, AppError> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(u64::try_from(raw).unwrap_or(DEFAULT_PAGE_SIZE)),
        _ => Err(AppError::invalid(
            "page_size",
            format!("must be between 0 and {MAX_PAGE_SIZE}"),
        )),
    }
}

/// Wraps a cursor so callers treat it as opaque.
pub fn encode_token(kind: &str, cursor: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{cursor}"))
}

/// The cursor inside a token of the given kind; `None` for the first page.
pub fn decode_token(kind: &str, token: &str) -> Result<Option<String>, AppError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || AppError::invalid("page_token", "is not a token returned by this method");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let cursor = text
        .strip_prefix(kind)
        .and_then(|r| r.strip_prefix(':'))
        .ok_or_else(bad)?;
    // Our cursors are ids, numbers and timestamps: a control character means a forged
    // token (NUL would otherwise reach PostgreSQL and fail there without a field name).
    if cursor.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(Some(cursor.to_owned()))
}

/// Cuts a page from rows fetched with `size + 1`: the extra row only tells that another
/// page follows, whose token is made from the kept page's last row.
pub fn split<T>(
    mut rows: Vec<T>,
    size: u64,
    kind: &str,
    cursor: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    let more = rows.len() as u64 > size;
    rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
    let token = match rows.last() {
        Some(last) if more => encode_token(kind, &cursor(last)),
        _ => String::new(),
    };
    (rows, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_kind_checked() {
        let t = encode_token("members", "abc");
        assert_eq!(decode_token("members", &t).expect("ok"), Some("abc".into()));
        assert!(decode_token("ledger", &t).is_err());
        assert!(decode_token("members", "%%%").is_err());
        assert_eq!(decode_token("members", "").expect("ok"), None);
        let forged = URL_SAFE_NO_PAD.encode("members:a\0b");
        assert!(decode_token("members", &forged).is_err());
    }

    #[test]
    fn split_keeps_a_page_and_tokens_its_last_row_only_when_more_follow() {
        let (page, token) = split(vec![1, 2, 3], 2, "n", |n| n.to_string());
        assert_eq!(page, vec![1, 2]);
        assert_eq!(decode_token("n", &token).expect("ok"), Some("2".into()));
        let (page, token) = split(vec![1, 2], 2, "n", |n| n.to_string());
        assert_eq!((page, token), (vec![1, 2], String::new()));
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(0).expect("ok"), 50);
        assert_eq!(page_size(500).expect("ok"), 500);
        assert!(page_size(-1).is_err());
        assert!(page_size(501).is_err());
    }
}
