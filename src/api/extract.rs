//! Extractor configuration: every malformed request becomes a JSON error
//! with a code, never actix's plain-text default.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{web, HttpRequest};

use crate::api::error::ApiError;

/// JSON bodies: size-limited, content type checked, errors as `ApiError`.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |error, _request| json_error(error, limit).into())
}

fn json_error(error: JsonPayloadError, limit: usize) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::PayloadTooLarge {
                message: format!("the request body exceeds {limit} bytes"),
                limit: limit as u64,
            }
        }
        JsonPayloadError::ContentType => ApiError::bad_request(
            "bad_content_type",
            "expected Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(cause) => {
            ApiError::bad_request("bad_json", format!("invalid request body: {cause}"))
        }
        // Encoding an answer is the server's own failure, not the client's.
        JsonPayloadError::Serialize(cause) => ApiError::internal(cause),
        other => ApiError::bad_request("bad_request", other.to_string()),
    }
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error: PathError, _| {
        ApiError::bad_request("bad_path", error.to_string()).into()
    })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error: QueryPayloadError, _| {
        ApiError::bad_request("bad_query", error.to_string()).into()
    })
}

/// Unknown routes.
pub async fn not_found(request: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(
        "not_found",
        format!("no route for {} {}", request.method(), request.path()),
    ))
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError;

    use super::*;

    #[test]
    fn a_body_that_does_not_parse_is_the_clients_fault() {
        let cause = serde_json::from_str::<u8>("x").unwrap_err();
        let error = json_error(JsonPayloadError::Deserialize(cause), 10);
        assert_eq!(error.status_code(), 400);
    }

    #[test]
    fn an_answer_that_does_not_encode_is_the_servers_fault() {
        // Any serde_json error stands for the encoder's.
        let cause = serde_json::from_str::<u8>("x").unwrap_err();
        let error = json_error(JsonPayloadError::Serialize(cause), 10);
        assert_eq!(error.status_code(), 500);
    }
}
