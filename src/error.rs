//! Errors as clients see them: a status code and a machine-readable `error`
//! code they can branch on, plus details where they help (limits, device
//! ids). Internal causes are logged with their chain and never shown.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

/// An error that ends an HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("{message}")]
    PayloadTooLarge { message: String, limit: u64 },
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        limit_messages: u32,
        limit_bytes: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("the remote server failed: {0}")]
    BadGateway(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>, details: Value) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
            details,
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::Internal(cause.into())
    }

    /// The machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Conflict { code, .. }
            | Self::Forbidden { code, .. }
            | Self::NotFound { code, .. } => code,
            Self::Unauthorized { code, .. } => code,
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "mailbox_full",
            Self::Unavailable(_) => "unavailable",
            Self::BadGateway(_) => "remote_failed",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<crate::storage::StorageError> for ApiError {
    fn from(error: crate::storage::StorageError) -> Self {
        match error {
            crate::storage::StorageError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                Self::Unavailable("the database is unavailable; try again shortly".into())
            }
            other => Self::internal(other),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            tracing::error!(error = ?cause, "internal error");
        }
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        match self {
            Self::Conflict { details, .. } => {
                if let (Some(body), Some(extra)) = (body.as_object_mut(), details.as_object()) {
                    body.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
            Self::PayloadTooLarge { limit, .. } => body["limit"] = json!(limit),
            Self::QuotaExceeded {
                limit_messages,
                limit_bytes,
                ..
            } => {
                body["limit"] = json!({
                    "max_pending_messages_per_device": limit_messages,
                    "max_pending_bytes_per_device": limit_bytes,
                });
            }
            Self::TooManyRequests {
                retry_after_secs, ..
            } => body["retry_after_secs"] = json!(retry_after_secs),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Self::TooManyRequests {
            retry_after_secs, ..
        } = self
        {
            response.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        if let Self::Unauthorized { .. } = self {
            response.insert_header(("WWW-Authenticate", "Bearer"));
        }
        response.json(body)
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(error: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError as E;
        let code = match &error {
            E::InvalidChallenge => "invalid_challenge",
            E::UnknownDevice => "unknown_device",
            E::BadSignature => "bad_signature",
            E::MissingToken => "missing_token",
            E::InvalidToken => "invalid_token",
            E::Storage(_) => "",
        };
        match error {
            E::Storage(cause) => cause.into(),
            other => Self::Unauthorized {
                code,
                message: other.to_string(),
            },
        }
    }
}

impl From<crate::identity::IdentityError> for ApiError {
    fn from(error: crate::identity::IdentityError) -> Self {
        use crate::crypto::identity::DocumentError;
        use crate::crypto::CryptoError;
        use crate::identity::IdentityError as E;
        let message = error.to_string();
        match error {
            E::RegistrationClosed => Self::forbidden("registration_closed", message),
            E::InviteRequired => Self::forbidden("invite_required", message),
            E::InviteInvalid => Self::forbidden("invite_invalid", message),
            E::AliasReserved(_) => Self::bad_request("alias_reserved", message),
            E::AliasTaken => Self::conflict("alias_taken", message, Value::Null),
            E::AccountExists(alias) => {
                Self::conflict("account_exists", message, json!({ "alias": alias }))
            }
            E::DeviceKeyInUse => Self::conflict("device_key_in_use", message, Value::Null),
            E::DeviceIdUsed(_) => Self::conflict("device_id_used", message, Value::Null),
            E::Document(DocumentError::Crypto(CryptoError::BadSignature)) | E::BadProof => {
                Self::bad_request("bad_signature", message)
            }
            E::Document(_) => Self::bad_request("invalid_document", message),
            E::Rollback { current, .. } => Self::conflict(
                "device_list_rollback",
                message,
                json!({ "current_version": current }),
            ),
            E::ListMismatch(_) => Self::conflict("device_list_mismatch", message, Value::Null),
            E::UnknownDevice => Self::not_found("unknown_device", message),
            E::UnknownAccount => Self::not_found("unknown_account", message),
            E::Storage(cause) => cause.into(),
        }
    }
}

impl From<crate::mailbox::MailboxError> for ApiError {
    fn from(error: crate::mailbox::MailboxError) -> Self {
        use crate::mailbox::MailboxError as E;
        let message = error.to_string();
        match error {
            E::Invalid(_) => Self::bad_request("invalid_request", message),
            E::TooLarge { limit } => Self::PayloadTooLarge { message, limit },
            E::MessageIdReused(_) => Self::conflict("message_id_reused", message, Value::Null),
            E::UnknownRecipient(address) => Self::NotFound {
                code: "unknown_recipient",
                message: format!("no such recipient: {address}"),
            },
            E::FederationDenied(_) => Self::forbidden("federation_denied", message),
            E::StaleDevices(recipients) => Self::conflict(
                "stale_devices",
                message,
                json!({ "recipients": recipients }),
            ),
            E::MailboxFull {
                limit_messages,
                limit_bytes,
            } => Self::QuotaExceeded {
                message,
                limit_messages,
                limit_bytes,
            },
            E::UnknownMessage => Self::not_found("unknown_message", message),
            E::Storage(cause) => cause.into(),
        }
    }
}
