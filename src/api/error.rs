//! Errors as clients see them: a status code and a machine-readable `error`
//! code they can branch on, plus details where they help (limits, device
//! ids). Internal causes are logged with their chain and never shown.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::mailbox::StaleRecipient;

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
    /// The path exists, the method does not (see `api::resource`).
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        details: ConflictDetails,
    },
    #[error("{message}")]
    PayloadTooLarge { message: String, limit: u64 },
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// The request body did not arrive in time (`server.body_timeout`).
    #[error("{message}")]
    RequestTimeout { message: String, limit_secs: u64 },
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        limit_messages: u32,
        limit_bytes: u64,
    },
    /// The address's account left this server (`410 Gone`); the body is
    /// the departure its account key signed.
    #[error("{}", .0.message)]
    Gone(Box<homing_proto::documents::DepartureDocument>),
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

    pub fn conflict(
        code: &'static str,
        message: impl Into<String>,
        details: ConflictDetails,
    ) -> Self {
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
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::TooManyRequests { .. } => "rate_limited",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::QuotaExceeded { .. } => "mailbox_full",
            Self::Gone(_) => "account_gone",
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
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::Gone(_) => StatusCode::GONE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let Self::Internal(cause) = self {
            tracing::error!(error = ?cause, "internal error");
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
        if let Self::Gone(departure) = self {
            return response.json(departure);
        }
        response.json(self.body())
    }
}

impl ApiError {
    /// The response body. Built through `ErrorBody`, so the published
    /// schema is the shape actually sent.
    pub fn body(&self) -> ErrorBody {
        let mut body = ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
            limit: None,
            retry_after_secs: None,
            details: ConflictDetails::default(),
        };
        match self {
            Self::Conflict { details, .. } => body.details = details.clone(),
            Self::PayloadTooLarge { limit, .. } => body.limit = Some(ErrorLimit::Bytes(*limit)),
            Self::RequestTimeout { limit_secs, .. } => {
                body.limit = Some(ErrorLimit::Seconds(*limit_secs));
            }
            Self::QuotaExceeded {
                limit_messages,
                limit_bytes,
                ..
            } => {
                body.limit = Some(ErrorLimit::Mailbox {
                    max_pending_messages_per_device: *limit_messages,
                    max_pending_bytes_per_device: *limit_bytes,
                });
            }
            Self::TooManyRequests {
                retry_after_secs, ..
            } => body.retry_after_secs = Some(*retry_after_secs),
            _ => {}
        }
        body
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code to branch on, e.g. `invalid_token`,
    /// `alias_taken`, `stale_devices`, `rate_limited`, `unavailable`.
    pub error: String,
    /// A human-readable explanation; its wording may change.
    pub message: String,
    /// The limit that was exceeded: bytes for `payload_too_large`, seconds
    /// for `request_timeout`, the mailbox quota for `mailbox_full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<ErrorLimit>,
    /// For `rate_limited`: seconds to wait (also in `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    #[serde(flatten)]
    pub details: ConflictDetails,
}

/// What a size or quota error was measured against.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorLimit {
    /// Bytes.
    Bytes(u64),
    /// Seconds, for `request_timeout`.
    Seconds(u64),
    /// A recipient device's mailbox quota.
    Mailbox {
        max_pending_messages_per_device: u32,
        max_pending_bytes_per_device: u64,
    },
}

/// Extra members of some `409 Conflict` answers.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ConflictDetails {
    /// For `account_exists`: the alias the account key already holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// For `device_list_rollback`: the stored device-list version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// For `stale_devices`: the device ids to add or drop per recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipients: Option<Vec<StaleRecipient>>,
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
            E::TooManySignIns { .. } | E::Storage(_) => "",
        };
        match error {
            E::Storage(cause) => cause.into(),
            E::TooManySignIns { retry_after } => crate::api::auth::too_many(retry_after),
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
            E::AliasTaken => Self::conflict("alias_taken", message, ConflictDetails::default()),
            E::AccountExists(alias) => Self::conflict(
                "account_exists",
                message,
                ConflictDetails {
                    alias: Some(alias),
                    ..Default::default()
                },
            ),
            E::DeviceKeyInUse => {
                Self::conflict("device_key_in_use", message, ConflictDetails::default())
            }
            E::DeviceIdUsed(_) => {
                Self::conflict("device_id_used", message, ConflictDetails::default())
            }
            E::Document(DocumentError::Crypto(CryptoError::BadSignature)) | E::BadProof => {
                Self::bad_request("bad_signature", message)
            }
            E::Document(_) => Self::bad_request("invalid_document", message),
            E::Rollback { current, .. } => Self::conflict(
                "device_list_rollback",
                message,
                ConflictDetails {
                    current_version: Some(current),
                    ..Default::default()
                },
            ),
            E::ListMismatch(_) => {
                Self::conflict("device_list_mismatch", message, ConflictDetails::default())
            }
            E::UnknownDevice => Self::not_found("unknown_device", message),
            E::UnknownAccount => Self::not_found("unknown_account", message),
            E::AliasDeparted(_) => {
                Self::conflict("alias_departed", message, ConflictDetails::default())
            }
            E::StaleDeparture => Self::bad_request("stale_departure", message),
            E::Storage(cause) => cause.into(),
        }
    }
}

impl From<crate::federation::new_destinations::AdmissionError> for ApiError {
    fn from(error: crate::federation::new_destinations::AdmissionError) -> Self {
        use crate::federation::new_destinations::AdmissionError;
        match error {
            AdmissionError::TooMany { retry_after, .. } => Self::TooManyRequests {
                message: error.to_string(),
                retry_after_secs: retry_after.as_secs().max(1),
            },
            AdmissionError::PrivateAddress(_) => {
                ApiError::forbidden("private_address", error.to_string())
            }
            AdmissionError::Storage(error) => error.into(),
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
            E::MessageIdReused(_) => {
                Self::conflict("message_id_reused", message, ConflictDetails::default())
            }
            E::UnknownRecipient(address) => Self::NotFound {
                code: "unknown_recipient",
                message: format!("no such recipient: {address}"),
            },
            E::FederationDenied(_) => Self::forbidden("federation_denied", message),
            E::StaleDevices(recipients) => Self::conflict(
                "stale_devices",
                message,
                ConflictDetails {
                    recipients: Some(recipients),
                    ..Default::default()
                },
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
