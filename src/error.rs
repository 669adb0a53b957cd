//! One error type for every handler, answering in FastAPI's shapes so legacy clients parse it:
//! `{"detail": "..."}` for plain errors and `{"detail": [{loc, msg, type}]}` for 422.

use std::borrow::Cow;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::db::DbError;

/// One entry of a 422 `detail` list, as pydantic reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValidationIssue {
    /// Where: `["body", "content"]`, `["query", "limit"]`, `["path", "chat_id"]`.
    pub loc: Vec<serde_json::Value>,
    /// Human-readable message.
    pub msg: String,
    /// Machine-readable kind (`missing`, `string_type`, `uuid_parsing`, …).
    #[serde(rename = "type")]
    pub kind: String,
}

impl ValidationIssue {
    /// A new issue at `loc`.
    pub fn new(loc: Vec<serde_json::Value>, kind: &str, msg: impl Into<String>) -> Self {
        ValidationIssue {
            loc,
            msg: msg.into(),
            kind: kind.to_string(),
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with a message.
    #[error("{0}")]
    BadRequest(Cow<'static, str>),
    /// 401: the token is missing or invalid.
    #[error("unauthorized")]
    Unauthorized,
    /// 403 with a message.
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
    /// 404 with a message (`Chat not found`, …).
    #[error("{0}")]
    NotFound(Cow<'static, str>),
    /// 409 with a message.
    #[error("{0}")]
    Conflict(Cow<'static, str>),
    /// 413: the body is over the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 422 with pydantic-style issues.
    #[error("validation failed")]
    Validation(Vec<ValidationIssue>),
    /// 429 with a message.
    #[error("{0}")]
    TooManyRequests(Cow<'static, str>),
    /// 503: the database (or another dependency) cannot serve now.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// 500; the cause is logged, never sent.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// `Result` with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

/// The 401 text legacy clients look for.
pub const UNAUTHORIZED_DETAIL: &str = "Could not validate Supabase credentials";

impl ApiError {
    /// A 404 with `detail`.
    pub fn not_found(detail: &'static str) -> Self {
        ApiError::NotFound(Cow::Borrowed(detail))
    }

    /// A 403 with `detail`.
    pub fn forbidden(detail: &'static str) -> Self {
        ApiError::Forbidden(Cow::Borrowed(detail))
    }

    /// A single-issue 422.
    pub fn invalid(loc: Vec<serde_json::Value>, kind: &str, msg: impl Into<String>) -> Self {
        ApiError::Validation(vec![ValidationIssue::new(loc, kind, msg)])
    }

    /// The protocol `error` code for the same failure over WebSocket.
    pub fn protocol_code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) | ApiError::Validation(_) => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "too_large",
            ApiError::TooManyRequests(_) => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The message a client may see (never an internal cause).
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Unauthorized => UNAUTHORIZED_DETAIL.to_string(),
            ApiError::Validation(issues) => issues
                .iter()
                .map(|i| {
                    let loc: Vec<String> = i
                        .loc
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        .collect();
                    format!("{}: {}", loc.join("."), i.msg)
                })
                .collect::<Vec<_>>()
                .join("; "),
            ApiError::Unavailable(_) => "Service temporarily unavailable".to_string(),
            ApiError::Internal(_) => "Internal Server Error".to_string(),
            ApiError::PayloadTooLarge => "Request body too large".to_string(),
            other => other.to_string(),
        }
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(msg) => ApiError::Unavailable(msg),
            DbError::Query(q) => q.into(),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _) => {
                ApiError::Unavailable(e.to_string())
            }
            Error::DatabaseError(_, ref info) if info.message().contains("database is locked") => {
                ApiError::Unavailable(e.to_string())
            }
            other => ApiError::Internal(anyhow::Error::new(other).context("database query")),
        }
    }
}

#[derive(Serialize)]
struct Detail<'a> {
    detail: &'a str,
}

#[derive(Serialize)]
struct DetailList<'a> {
    detail: &'a [ValidationIssue],
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        match self {
            ApiError::Internal(e) => tracing::error!(error = ?e, "internal error"),
            ApiError::Unavailable(e) => tracing::warn!(error = %e, "dependency unavailable"),
            _ => {}
        }
        if let ApiError::Unauthorized = self {
            builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if let ApiError::Validation(issues) = self {
            return builder.json(DetailList { detail: issues });
        }
        builder.json(Detail {
            detail: &self.public_message(),
        })
    }
}
