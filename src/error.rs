//! The service's errors and their one mapping to gRPC status codes.
use sea_orm::DbErr;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// How long a caller told MEMBER_BUSY should wait before it retries.
const MEMBER_BUSY_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

/// The `ErrorInfo.domain` of every error this service returns.
pub const ERROR_DOMAIN: &str = "loyalty";

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Every way a call can fail.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the request is invalid: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("member not found")]
    MemberNotFound,
    #[error("card number is already in use")]
    CardNumberTaken,
    #[error("points were already accrued for this order")]
    OrderAlreadyAccrued,
    #[error("request_id was already used for a different request")]
    IdempotencyKeyReused,
    #[error("the available balance is too small")]
    InsufficientPoints,
    #[error("hold not found")]
    HoldNotFound,
    #[error("the hold was already captured")]
    HoldAlreadyCaptured,
    #[error("the hold was already voided")]
    HoldAlreadyVoided,
    #[error("the hold has expired")]
    HoldExpired,
    #[error("order not found")]
    OrderNotFound,
    #[error("more units would be returned than were bought")]
    ReturnQuantityExceeded,
    #[error("this return was already recorded for the order")]
    ReturnAlreadyRecorded,
    #[error("the goodwill grant exceeds the programme's caps")]
    GoodwillCapExceeded,
    #[error("the adjustment exceeds the programme's cap for its reason")]
    AdjustmentCapExceeded,
    #[error("a member cannot refer themselves")]
    SelfReferral,
    #[error("this client may not do that")]
    PermissionDenied,
    #[error("offer not found")]
    OfferNotFound,
    #[error("programme not found")]
    ProgramNotFound,
    #[error("a programme with this id exists")]
    ProgramExists,
    #[error("another offer has this code")]
    OfferCodeTaken,
    #[error("reward not found")]
    RewardNotFound,
    #[error("the reward is out of stock")]
    RewardOutOfStock,
    #[error("the reward cannot be redeemed now")]
    RewardNotAvailable,
    #[error("the member's personal data was erased; their profile can no longer change")]
    MemberErased,
    #[error("complaint not found")]
    ComplaintNotFound,
    #[error("the complaint was already resolved")]
    ComplaintAlreadyResolved,
    #[error("events after this cursor were pruned; resume from a newer cursor")]
    CursorExpired,
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    #[error("the member is busy with another call; retry shortly")]
    MemberBusy,
    #[error(
        "points out of range: one movement may carry at most {} points and a balance at most {}",
        crate::domain::MAX_POINTS,
        crate::domain::MAX_BALANCE
    )]
    PointsOutOfRange,
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    let mut text = violations
        .iter()
        .take(MAX_VIOLATIONS)
        .map(|v| format!("{}: {}", bounded(&v.field), bounded(&v.description)))
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > MAX_VIOLATIONS {
        text.push_str(&format!("; and {} more", violations.len() - MAX_VIOLATIONS));
    }
    text
}

impl AppError {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// An error that may pass: the caller retries with the same request id.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::MemberBusy)
    }

    /// The same transient error again, for each caller of a shared statement that failed.
    pub fn again(&self) -> Self {
        match self {
            Self::MemberBusy => Self::MemberBusy,
            other => Self::Unavailable(DbErr::Custom(other.to_string())),
        }
    }

    /// The stable `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::MemberNotFound => "MEMBER_NOT_FOUND",
            Self::ProgramNotFound => "PROGRAM_NOT_FOUND",
            Self::ProgramExists => "PROGRAM_EXISTS",
            Self::CardNumberTaken => "CARD_NUMBER_TAKEN",
            Self::OrderAlreadyAccrued => "ORDER_ALREADY_ACCRUED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::InsufficientPoints => "INSUFFICIENT_POINTS",
            Self::HoldNotFound => "HOLD_NOT_FOUND",
            Self::HoldAlreadyCaptured => "HOLD_ALREADY_CAPTURED",
            Self::HoldAlreadyVoided => "HOLD_ALREADY_VOIDED",
            Self::HoldExpired => "HOLD_EXPIRED",
            Self::OrderNotFound => "ORDER_NOT_FOUND",
            Self::ReturnQuantityExceeded => "RETURN_QUANTITY_EXCEEDED",
            Self::ReturnAlreadyRecorded => "RETURN_ALREADY_RECORDED",
            Self::GoodwillCapExceeded => "GOODWILL_CAP_EXCEEDED",
            Self::AdjustmentCapExceeded => "ADJUSTMENT_CAP_EXCEEDED",
            Self::RewardNotFound => "REWARD_NOT_FOUND",
            Self::OfferNotFound => "OFFER_NOT_FOUND",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::OfferCodeTaken => "OFFER_CODE_TAKEN",
            Self::SelfReferral => "SELF_REFERRAL",
            Self::RewardOutOfStock => "REWARD_OUT_OF_STOCK",
            Self::RewardNotAvailable => "REWARD_NOT_AVAILABLE",
            Self::MemberErased => "MEMBER_ERASED",
            Self::ComplaintNotFound => "COMPLAINT_NOT_FOUND",
            Self::ComplaintAlreadyResolved => "COMPLAINT_ALREADY_RESOLVED",
            Self::CursorExpired => "CURSOR_EXPIRED",
            Self::Unavailable(_) => "DATABASE_UNAVAILABLE",
            Self::MemberBusy => "MEMBER_BUSY",
            Self::PointsOutOfRange => "POINTS_OUT_OF_RANGE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        match classify(&err) {
            DbFault::Unavailable => Self::Unavailable(err),
            DbFault::Busy => {
                // Which wait ran out (a row lock, SQLite's write lock) is worth knowing
                // when MEMBER_BUSY shows up where no member is hot.
                tracing::info!(error = %err, "database busy: answering MEMBER_BUSY");
                Self::MemberBusy
            }
            DbFault::OutOfRange => Self::PointsOutOfRange,
            DbFault::BadText => Self::invalid("", "text fields may not hold NUL characters"),
            DbFault::Bug => Self::Internal(err.into()),
        }
    }
}

/// What a database error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbFault {
    /// It may pass: the connection, the server or its role (a standby) failed, or a
    /// statement ran out of time. The caller retries with the same request id.
    Unavailable,
    /// A row lock was not granted within `database.lock_timeout_ms`.
    Busy,
    /// A sum passed the column's range.
    OutOfRange,
    /// Text the database cannot store.
    BadText,
    /// Anything else is ours to fix.
    Bug,
}

fn classify(err: &DbErr) -> DbFault {
    use sea_orm::{RuntimeErr, sqlx::Error as Sqlx};
    let runtime = match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => return DbFault::Unavailable,
        DbErr::Exec(r) | DbErr::Query(r) => r,
        _ => return DbFault::Bug,
    };
    let RuntimeErr::SqlxError(sqlx) = runtime else {
        return DbFault::Bug;
    };
    match &**sqlx {
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => DbFault::Unavailable,
        Sqlx::Database(db) => {
            let sqlite = db
                .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
                .is_some();
            db.code().map_or(DbFault::Bug, |c| {
                if sqlite {
                    sqlite_code(&c)
                } else {
                    sqlstate(&c)
                }
            })
        }
        _ => DbFault::Bug,
    }
}

/// SQLite's (extended) result code, as digits.
fn sqlite_code(code: &str) -> DbFault {
    match code.parse::<u32>().map(|c| c & 0xff) {
        // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with their extended codes.
        Ok(5 | 6) => DbFault::Busy,
        // SQLITE_IOERR, SQLITE_CANTOPEN
        Ok(10 | 14) => DbFault::Unavailable,
        _ => DbFault::Bug,
    }
}

/// PostgreSQL's SQLSTATE (five characters, often all digits: never read as SQLite's).
fn sqlstate(code: &str) -> DbFault {
    match code {
        // lock_not_available: lock_timeout expired.
        "55P03" => DbFault::Busy,
        "22003" => DbFault::OutOfRange,
        // A NUL or a character the database cannot store, in a field no check caught.
        "22021" | "22P05" => DbFault::BadText,
        // Connection exceptions, an administrator or crash shutting the backend down,
        // a read-only (standby) transaction, too many connections or too little
        // memory, statement_timeout, and conflicts a retry resolves.
        c if c.starts_with("08")
            || c.starts_with("53")
            || c.starts_with("57P")
            || c == "25006"
            || c == "57014"
            || c == "40001"
            || c == "40P01" =>
        {
            DbFault::Unavailable
        }
        _ => DbFault::Bug,
    }
}

/// At most this many field violations go back to the caller (plus a count of the rest),
/// so that the whole status stays well under a client's 8 KiB of metadata.
pub const MAX_VIOLATIONS: usize = 20;
/// At most this many bytes of one violation's field or description.
const MAX_VIOLATION_TEXT: usize = 160;

fn bounded(text: &str) -> String {
    if text.len() <= MAX_VIOLATION_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_VIOLATION_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl From<AppError> for Status {
    fn from(err: AppError) -> Self {
        let reason = err.reason();
        let info = |details: ErrorDetails| {
            let mut details = details;
            details.set_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
            details
        };
        match &err {
            AppError::InvalidArgument(violations) => {
                let mut details = ErrorDetails::new();
                for v in violations.iter().take(MAX_VIOLATIONS) {
                    details.add_bad_request_violation(bounded(&v.field), bounded(&v.description));
                }
                if violations.len() > MAX_VIOLATIONS {
                    details.add_bad_request_violation(
                        "",
                        format!("and {} more violations", violations.len() - MAX_VIOLATIONS),
                    );
                }
                Status::with_error_details(Code::InvalidArgument, err.to_string(), info(details))
            }
            AppError::InsufficientPoints
            | AppError::HoldAlreadyCaptured
            | AppError::HoldAlreadyVoided
            | AppError::HoldExpired
            | AppError::ReturnQuantityExceeded
            | AppError::GoodwillCapExceeded
            | AppError::AdjustmentCapExceeded
            | AppError::RewardOutOfStock
            | AppError::SelfReferral
            | AppError::ComplaintAlreadyResolved
            | AppError::MemberErased
            | AppError::CursorExpired
            | AppError::RewardNotAvailable => Status::with_error_details(
                Code::FailedPrecondition,
                err.to_string(),
                info(ErrorDetails::new()),
            ),
            AppError::MemberNotFound
            | AppError::HoldNotFound
            | AppError::OrderNotFound
            | AppError::RewardNotFound
            | AppError::ComplaintNotFound
            | AppError::ProgramNotFound
            | AppError::OfferNotFound => Status::with_error_details(
                Code::NotFound,
                err.to_string(),
                info(ErrorDetails::new()),
            ),
            AppError::CardNumberTaken
            | AppError::OrderAlreadyAccrued
            | AppError::ReturnAlreadyRecorded
            | AppError::OfferCodeTaken
            | AppError::ProgramExists
            | AppError::IdempotencyKeyReused => Status::with_error_details(
                Code::AlreadyExists,
                err.to_string(),
                info(ErrorDetails::new()),
            ),
            AppError::PermissionDenied => Status::with_error_details(
                Code::PermissionDenied,
                err.to_string(),
                info(ErrorDetails::new()),
            ),
            AppError::MemberBusy => {
                let mut details = ErrorDetails::with_retry_info(Some(MEMBER_BUSY_RETRY));
                details.set_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
                Status::with_error_details(Code::Aborted, err.to_string(), details)
            }
            AppError::PointsOutOfRange => Status::with_error_details(
                Code::OutOfRange,
                err.to_string(),
                info(ErrorDetails::new()),
            ),
            AppError::Unavailable(cause) => {
                tracing::error!(error = %cause, "database unavailable");
                Status::with_error_details(
                    Code::Unavailable,
                    err.to_string(),
                    info(ErrorDetails::new()),
                )
            }
            AppError::Internal(cause) => {
                // Full cause chain in the log; the caller gets an opaque message.
                tracing::error!(error = ?cause, "internal error");
                Status::with_error_details(
                    Code::Internal,
                    err.to_string(),
                    info(ErrorDetails::new()),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DbFault, sqlite_code, sqlstate};

    #[test]
    fn database_codes_mean_what_the_caller_can_do() {
        assert_eq!(sqlstate("55P03"), DbFault::Busy);
        assert_eq!(sqlstate("57P01"), DbFault::Unavailable);
        assert_eq!(sqlstate("08006"), DbFault::Unavailable);
        assert_eq!(sqlstate("25006"), DbFault::Unavailable);
        assert_eq!(sqlstate("22003"), DbFault::OutOfRange);
        // All digits, and 22021 & 0xff is SQLITE_BUSY: a SQLSTATE is never read as
        // SQLite's code.
        assert_eq!(sqlstate("22021"), DbFault::BadText);
        assert_eq!(sqlstate("23505"), DbFault::Bug);
        assert_eq!(sqlite_code("5"), DbFault::Busy);
        assert_eq!(sqlite_code("517"), DbFault::Busy);
        assert_eq!(sqlite_code("6"), DbFault::Busy);
        assert_eq!(sqlite_code("2067"), DbFault::Bug);
    }
}
