//! Docker's authorization plugins (`authz/1.0`) in front of every API request, as moby's
//! `pkg/authorization` middleware: each request is sent to the chain
//! (`AuthZPlugin.AuthZReq`) before its handler runs and, when the handler succeeded, with its
//! answer (`AuthZPlugin.AuthZRes`) before the answer goes out. A denial answers 403
//! `authorization denied by plugin <name>: <msg>`; a plugin that fails (error, bad answer,
//! deadline) answers 500 `plugin <name> failed with error: <err>`. Never open: an unreachable
//! plugin denies.
//!
//! The chain itself (which plugins, how to reach them) is behind [`AuthzChain`], which the
//! daemon implements over the plugin manager and tests implement with fakes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine as _;
use hyper::{header, HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::HttpError;

/// The method a plugin is asked before a request runs.
pub const AUTHZ_REQUEST_METHOD: &str = "AuthZPlugin.AuthZReq";
/// The method a plugin is asked about an answer before it goes out.
pub const AUTHZ_RESPONSE_METHOD: &str = "AuthZPlugin.AuthZRes";
/// The capability (interface type `docker.authz/1.0`) an authorization plugin implements.
pub const AUTHZ_CAPABILITY: &str = "authz";
/// moby's `maxBodySize`: bodies of this size and more are not sent to the plugins.
pub const MAX_AUTHZ_BODY: u64 = 1 << 20;

/// The authorization chain the API consults; implemented by the daemon over the manager.
#[async_trait]
pub trait AuthzChain: Send + Sync + 'static {
    /// The names of the plugins in force now, in order; empty: requests are not authorized.
    /// Read before each request and again after its handler (a plugin disabled meanwhile
    /// drops out, as in moby).
    fn plugins(&self) -> Vec<String>;

    /// Calls `method` of plugin `name` with `request`. An `Err` is the plugin's failure, in
    /// the words that follow `plugin <name> failed with error: `. The implementation bounds
    /// the call with a deadline: a hanging plugin is a failure, not a hang.
    async fn call(
        &self,
        name: &str,
        method: &str,
        request: &AuthzRequest,
    ) -> Result<AuthzResponse, String>;

    /// If `name` (as a client typed it) is a plugin of the chain, its full name: such a plugin
    /// may not be removed while it is in force.
    fn guards(&self, name: &str) -> Option<String>;
}

/// moby's `authorization.Request`, as its JSON goes to the plugin (bodies in base64, as Go
/// encodes `[]byte`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzRequest {
    /// The authenticated user (none on a unix socket).
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// How the user was authenticated.
    #[serde(
        rename = "UserAuthNMethod",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub user_authn_method: String,
    /// The HTTP method.
    #[serde(
        rename = "RequestMethod",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub request_method: String,
    /// The request target as sent (`/v1.51/volumes/create?x=y`).
    #[serde(
        rename = "RequestUri",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub request_uri: String,
    /// The body, when it is JSON and under 1 MiB.
    #[serde(
        rename = "RequestBody",
        default,
        with = "base64_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_body: Option<Vec<u8>>,
    /// The headers, without `Authorization`, `X-Registry-Auth` and `X-Registry-Config`; Go's
    /// canonical names, the last value of a repeated header.
    #[serde(
        rename = "RequestHeaders",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub request_headers: BTreeMap<String, String>,
    /// The answer's status (AuthZRes only).
    #[serde(
        rename = "ResponseStatusCode",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub response_status_code: u16,
    /// The answer's body, when it is JSON (AuthZRes only).
    #[serde(
        rename = "ResponseBody",
        default,
        with = "base64_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_body: Option<Vec<u8>>,
    /// The answer's headers (AuthZRes only).
    #[serde(
        rename = "ResponseHeaders",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub response_headers: BTreeMap<String, String>,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// moby's `authorization.Response`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthzResponse {
    /// Whether the request (or answer) may go on.
    #[serde(rename = "Allow", default)]
    pub allow: bool,
    /// Why not.
    #[serde(rename = "Msg", default, skip_serializing_if = "String::is_empty")]
    pub msg: String,
    /// The plugin's own failure.
    #[serde(rename = "Err", default, skip_serializing_if = "String::is_empty")]
    pub err: String,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// moby's `newAuthorizationError`: 403.
pub(crate) fn denied(plugin: &str, msg: &str) -> HttpError {
    HttpError::new(
        StatusCode::FORBIDDEN,
        format!("authorization denied by plugin {plugin}: {msg}"),
    )
}

/// moby's plugin failure: 500.
pub(crate) fn failed(plugin: &str, err: &str) -> HttpError {
    HttpError::internal(format!("plugin {plugin} failed with error: {err}"))
}

/// Asks every plugin of `plugins` in order; the first that denies or fails decides.
pub(crate) async fn ask(
    chain: &dyn AuthzChain,
    plugins: &[String],
    method: &str,
    request: &AuthzRequest,
) -> Result<(), HttpError> {
    for name in plugins {
        tracing::debug!(plugin = %name, method, "authorization");
        let answer = chain
            .call(name, method, request)
            .await
            .map_err(|e| failed(name, &e))?;
        if !answer.err.is_empty() {
            return Err(failed(name, &answer.err));
        }
        if !answer.allow {
            return Err(denied(name, &answer.msg));
        }
    }
    Ok(())
}

/// moby's `sendBody`: bodies go to the plugins only when JSON, and never for `/auth`.
pub(crate) fn sends_body(uri: &str, headers: &HeaderMap) -> bool {
    if uri.split('?').next().unwrap_or(uri).ends_with("/auth") {
        return false;
    }
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// moby's `headers`: Go's canonical names, the last value of each, no credentials.
pub(crate) fn flat_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if [
            "authorization",
            "x-registry-auth",
            "x-registry-config",
            "host",
        ]
        .contains(&name)
        {
            continue;
        }
        out.insert(
            canonical_header(name),
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        );
    }
    out
}

/// Go's `CanonicalMIMEHeaderKey`: `content-type` -> `Content-Type`.
fn canonical_header(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// A body as base64 text (for tests and logs of what plugins receive).
pub fn encode_body(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_is_mobys() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-registry-auth", "secret".parse().unwrap());
        headers.insert("authorization", "Bearer x".parse().unwrap());
        headers.insert("user-agent", "Docker-Client/28".parse().unwrap());
        let req = AuthzRequest {
            request_method: "POST".into(),
            request_uri: "/v1.51/volumes/create".into(),
            request_body: Some(b"{}".to_vec()),
            request_headers: flat_headers(&headers),
            ..AuthzRequest::default()
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "RequestMethod": "POST",
                "RequestUri": "/v1.51/volumes/create",
                "RequestBody": "e30=",
                "RequestHeaders": {"Content-Type": "application/json", "User-Agent": "Docker-Client/28"},
            })
        );
        assert!(sends_body("/volumes/create", &headers));
        assert!(!sends_body("/v1.51/auth", &headers));
        assert!(!sends_body("/volumes/create", &HeaderMap::new()));
        let back: AuthzRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn texts_are_mobys() {
        let d = denied("authz", "no volumes for you");
        assert_eq!(d.status, StatusCode::FORBIDDEN);
        assert_eq!(
            d.message,
            "authorization denied by plugin authz: no volumes for you"
        );
        let f = failed("authz", "boom");
        assert_eq!(f.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(f.message, "plugin authz failed with error: boom");
        let answer: AuthzResponse = serde_json::from_str(r#"{"Allow":true}"#).unwrap();
        assert!(answer.allow && answer.msg.is_empty() && answer.err.is_empty());
    }
}
