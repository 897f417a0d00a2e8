//! The service's errors and their one mapping to gRPC status codes.
use sea_orm::DbErr;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

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
    #[error("a member cannot refer themselves")]
    SelfReferral,
    #[error("this client may not do that")]
    PermissionDenied,
    #[error("offer not found")]
    OfferNotFound,
    #[error("another offer has this code")]
    OfferCodeTaken,
    #[error("reward not found")]
    RewardNotFound,
    #[error("the reward is out of stock")]
    RewardOutOfStock,
    #[error("the reward cannot be redeemed now")]
    RewardNotAvailable,
    #[error("complaint not found")]
    ComplaintNotFound,
    #[error("the complaint was already resolved")]
    ComplaintAlreadyResolved,
    #[error("events after this cursor were pruned; resume from a newer cursor")]
    CursorExpired,
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl AppError {
    /// A single bad field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The stable `ErrorInfo.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::MemberNotFound => "MEMBER_NOT_FOUND",
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
            Self::RewardNotFound => "REWARD_NOT_FOUND",
            Self::OfferNotFound => "OFFER_NOT_FOUND",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::OfferCodeTaken => "OFFER_CODE_TAKEN",
            Self::SelfReferral => "SELF_REFERRAL",
            Self::RewardOutOfStock => "REWARD_OUT_OF_STOCK",
            Self::RewardNotAvailable => "REWARD_NOT_AVAILABLE",
            Self::ComplaintNotFound => "COMPLAINT_NOT_FOUND",
            Self::ComplaintAlreadyResolved => "COMPLAINT_ALREADY_RESOLVED",
            Self::CursorExpired => "CURSOR_EXPIRED",
            Self::Unavailable(_) => "DATABASE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL",
        }
    }
}

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        match err {
            DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => Self::Unavailable(err),
            other => Self::Internal(other.into()),
        }
    }
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
                for v in violations {
                    details.add_bad_request_violation(v.field.clone(), v.description.clone());
                }
                Status::with_error_details(Code::InvalidArgument, err.to_string(), info(details))
            }
            AppError::InsufficientPoints
            | AppError::HoldAlreadyCaptured
            | AppError::HoldAlreadyVoided
            | AppError::HoldExpired
            | AppError::ReturnQuantityExceeded
            | AppError::GoodwillCapExceeded
            | AppError::RewardOutOfStock
            | AppError::SelfReferral
            | AppError::ComplaintAlreadyResolved
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
            | AppError::OfferNotFound => Status::with_error_details(
                Code::NotFound,
                err.to_string(),
                info(ErrorDetails::new()),
            ),
            AppError::CardNumberTaken
            | AppError::OrderAlreadyAccrued
            | AppError::ReturnAlreadyRecorded
            | AppError::OfferCodeTaken
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
