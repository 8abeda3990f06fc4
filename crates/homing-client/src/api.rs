//! Talking to one's own home server over its client API.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::network::Network;
use crate::address::ServerName;
use crate::wire::{SendRequest, SendResponse, SyncPage};

/// Why a request to the home server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the home server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{message} [{code}]")]
    Api {
        status: u16,
        code: String,
        message: String,
        body: Value,
    },
    #[error("unexpected answer from the home server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The base URL of the home server of `server`: an explicit URL wins; a
/// name with a port or an IP literal is used as is; otherwise the server's
/// `.well-known/homing/server` delegation is followed when there is one.
pub async fn home_server_url(
    server: &ServerName,
    explicit: Option<&str>,
    insecure_http: bool,
    network: &Network,
) -> String {
    if let Some(url) = explicit {
        return url.trim_end_matches('/').to_string();
    }
    let scheme = if insecure_http { "http" } else { "https" };
    let direct = format!("{scheme}://{server}");
    if server.port().is_some() || matches!(server.host(), crate::address::Host::Ip(_)) {
        return direct;
    }
    let delegated = async {
        let response = network
            .http_client(Duration::from_secs(5))
            .get(format!("{direct}/.well-known/homing/server"))
            .send()
            .await
            .ok()?;
        let document: Value = response.error_for_status().ok()?.json().await.ok()?;
        let target = ServerName::parse(document.get("homing.server")?.as_str()?).ok()?;
        Some(format!("{scheme}://{target}"))
    };
    delegated.await.unwrap_or(direct)
}

/// A connection to one home server, optionally signed in.
#[derive(Clone)]
pub struct HomeServer {
    base: String,
    http: reqwest::Client,
    network: Network,
    token: Option<String>,
}

impl HomeServer {
    /// The server at `base_url`, reached with the Web PKI and system DNS.
    pub fn new(base_url: &str) -> Self {
        Self::reached_through(base_url, &Network::default())
    }

    /// The server at `base_url`, reached with `network`'s roots and DNS.
    pub fn reached_through(base_url: &str, network: &Network) -> Self {
        Self {
            base: base_url.trim_end_matches('/').to_string(),
            http: network.http_client(Duration::from_secs(30)),
            network: network.clone(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// The same server, signed out.
    pub fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(ClientError::Api {
                status: status.as_u16(),
                code: body["error"].as_str().unwrap_or("http_error").to_string(),
                message: body["message"]
                    .as_str()
                    .map_or_else(|| format!("HTTP {status}"), str::to_string),
                body,
            });
        }
        let text = if text.is_empty() {
            "null"
        } else {
            text.as_str()
        };
        serde_json::from_str(text).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ClientError> {
        self.call(reqwest::Method::DELETE, path, Some(body)).await
    }

    pub async fn server_info(&self) -> Result<Value, ClientError> {
        self.get("/.well-known/homing/server-info").await
    }

    pub async fn register(&self, body: &Value) -> Result<Value, ClientError> {
        self.post("/api/v1/accounts", body).await
    }

    /// Signs a device in: challenge, sign, token. Returns `(token, expires_at)`.
    pub async fn sign_in(
        &self,
        server_name: &str,
        account: &crate::crypto::PublicKey,
        device: &super::keys::DeviceKeys,
    ) -> Result<(String, i64), ClientError> {
        let challenge: Value = self.post("/api/v1/auth/challenge", &json!({})).await?;
        let nonce = challenge["nonce"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("challenge without nonce".into()))?;
        let body = device
            .token_request(server_name, nonce, account)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let grant: Value = self.post("/api/v1/auth/token", &body).await?;
        let token = grant["token"]
            .as_str()
            .ok_or_else(|| ClientError::Protocol("token answer without token".into()))?;
        Ok((token.to_string(), grant["expires_at"].as_i64().unwrap_or(0)))
    }

    /// The identity behind any address, as the home server verified it.
    pub async fn directory(&self, address: &str) -> Result<Value, ClientError> {
        self.get(&format!("/api/v1/directory/{address}")).await
    }

    pub async fn send(&self, request: &SendRequest) -> Result<SendResponse, ClientError> {
        let body =
            serde_json::to_value(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.post("/api/v1/dms/send", &body).await
    }

    pub async fn sync(&self, cursor: i64, limit: i64) -> Result<SyncPage, ClientError> {
        self.post(
            "/api/v1/dms/sync",
            &json!({ "cursor": cursor, "limit": limit }),
        )
        .await
    }

    pub async fn ack(&self, message_ids: &[String]) -> Result<Value, ClientError> {
        self.post("/api/v1/dms/ack", &json!({ "message_ids": message_ids }))
            .await
    }

    pub async fn status(&self, message_id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/api/v1/dms/status/{message_id}")).await
    }

    /// The delivery feed of this account's sent messages, past `since`.
    pub async fn feed(&self, since: Option<&str>) -> Result<Value, ClientError> {
        match since {
            Some(cursor) => {
                self.get(&format!("/api/v1/dms/status?since={cursor}"))
                    .await
            }
            None => self.get("/api/v1/dms/status").await,
        }
    }

    /// Takes back a sent message from mailboxes that have not read it.
    pub async fn recall(&self, message_id: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/dms/{message_id}"),
            None,
        )
        .await
    }

    /// Sets this device's Web Push subscription: while it is not
    /// connected, new mail makes the server wake it through that service.
    pub async fn set_push(
        &self,
        device_id: &str,
        subscription: &crate::push::PushSubscription,
    ) -> Result<Value, ClientError> {
        let body =
            serde_json::to_value(subscription).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.put(&format!("/api/v1/devices/{device_id}/push"), &body)
            .await
    }

    /// This device's Web Push subscription as the server holds it.
    pub async fn push_subscription(&self, device_id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/api/v1/devices/{device_id}/push")).await
    }

    /// Removes this device's Web Push subscription.
    pub async fn clear_push(&self, device_id: &str) -> Result<Value, ClientError> {
        self.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/devices/{device_id}/push"),
            None,
        )
        .await
    }

    /// Opens the WebSocket gateway, resuming after `cursor` (over TLS
    /// when the server URL is `https`).
    pub async fn gateway(&self, cursor: i64) -> Result<GatewaySocket, ClientError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let (tls, rest) = match self.base.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            _ => {
                return Err(ClientError::Protocol(format!(
                    "unsupported server URL {}",
                    self.base
                )))
            }
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let url = format!(
            "{}://{authority}/api/v1/gateway?resume={cursor}",
            if tls { "wss" } else { "ws" }
        );
        let mut request = url
            .into_client_request()
            .map_err(|e| unreachable(e.to_string()))?;
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Protocol("token is not a valid header".into()))?;
            request.headers_mut().insert("Authorization", value);
        }
        let server = ServerName::parse(authority)
            .map_err(|_| ClientError::Protocol(format!("unsupported server URL {}", self.base)))?;
        let host = match server.host() {
            crate::address::Host::Domain(domain) => domain.clone(),
            crate::address::Host::Ip(ip) => ip.to_string(),
        };
        let port = server.port().unwrap_or(if tls { 443 } else { 80 });
        let tcp = self
            .network
            .connect(&host, port)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let stream: Box<dyn Io> = if tls {
            let config = self.network.tls_config()?;
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| unreachable(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(e.to_string()))?,
            )
        } else {
            Box::new(tcp)
        };
        let (socket, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(socket)
    }
}

/// A byte stream the gateway runs over: plain TCP or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// An open gateway connection.
pub type GatewaySocket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;
