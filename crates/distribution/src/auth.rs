//! [`AuthConfig`]: the credentials a client sends in `X-Registry-Auth`, decoded as dockerd does.

use base64::Engine as _;
use serde::Deserialize;

/// Credentials for one registry, from the client's `X-Registry-Auth` header.
///
/// dockerd prefers an identity token over username/password, and a registry token is used as a
/// bearer token directly.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// User name for Basic auth or the token server.
    pub username: Option<String>,
    /// Password for Basic auth or the token server.
    pub password: Option<String>,
    /// OAuth refresh token (`docker login` against a token server stores one).
    pub identity_token: Option<String>,
    /// A bearer token to send as is.
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    // Secrets never reach logs: only whether each field is set.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<set>"),
            )
            .field(
                "registry_token",
                &self.registry_token.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

#[derive(Deserialize, Default)]
struct WireAuth {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// The largest header value decoded; anything longer is junk (Docker's own are < 1 KiB).
const MAX_HEADER_LEN: usize = 64 * 1024;

impl AuthConfig {
    /// Decodes `X-Registry-Auth`: base64url (padded or not; standard alphabet accepted too) of a
    /// JSON object. Anything that does not decode gives empty credentials, as dockerd does.
    pub fn from_header(x_registry_auth: &str) -> AuthConfig {
        let value = x_registry_auth.trim();
        if value.is_empty() || value.len() > MAX_HEADER_LEN {
            return AuthConfig::default();
        }
        let Some(bytes) = decode_base64_lenient(value) else {
            return AuthConfig::default();
        };
        AuthConfig::from_json(&bytes)
    }

    /// Decodes the JSON object `X-Registry-Auth` carries (also one entry of a docker CLI
    /// `config.json`'s `auths`: `{"auth": base64("user:password")}` or an `identitytoken`).
    /// Anything else gives empty credentials.
    pub fn from_json(bytes: &[u8]) -> AuthConfig {
        // Go's json decoder matches keys case-insensitively; lowercasing the keys of a flat
        // object does the same for the fields Docker sends.
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(bytes)
        else {
            return AuthConfig::default();
        };
        let lowered: serde_json::Map<String, serde_json::Value> = map
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let Ok(wire) = serde_json::from_value::<WireAuth>(serde_json::Value::Object(lowered))
        else {
            return AuthConfig::default();
        };
        let mut username = wire.username;
        let mut password = wire.password;
        // `auth` is base64("user:password"), what config.json stores; used when the explicit
        // fields are empty (dockerd's ConvertToHostname/DecodeAuthConfig do the same).
        if username.is_empty() && password.is_empty() && !wire.auth.is_empty() {
            if let Some((u, p)) = decode_base64_lenient(&wire.auth)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())))
            {
                username = u;
                password = p;
            }
        }
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        AuthConfig {
            username: non_empty(username),
            password: non_empty(password),
            identity_token: non_empty(wire.identitytoken),
            registry_token: non_empty(wire.registrytoken),
        }
    }

    /// Basic credentials with a user name and password.
    pub fn basic(username: &str, password: &str) -> AuthConfig {
        AuthConfig {
            username: Some(username.to_owned()),
            password: Some(password.to_owned()),
            ..AuthConfig::default()
        }
    }

    /// True when no credential is set (anonymous access).
    pub fn is_anonymous(&self) -> bool {
        self.username.is_none()
            && self.password.is_none()
            && self.identity_token.is_none()
            && self.registry_token.is_none()
    }
}

fn decode_base64_lenient(value: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [URL_SAFE, URL_SAFE_NO_PAD, STANDARD, STANDARD_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE;

    fn header(json: &str) -> String {
        URL_SAFE.encode(json)
    }

    #[test]
    fn cli_empty_object_is_anonymous() {
        assert!(AuthConfig::from_header("e30=").is_anonymous());
    }

    #[test]
    fn username_password_and_tokens_are_read() {
        let a = AuthConfig::from_header(&header(
            r#"{"username":"u","password":"p?>","serveraddress":"127.0.0.1:5000"}"#,
        ));
        assert_eq!(a, AuthConfig::basic("u", "p?>"));
        let t = AuthConfig::from_header(&header(r#"{"identitytoken":"it","registrytoken":"rt"}"#));
        assert_eq!(t.identity_token.as_deref(), Some("it"));
        assert_eq!(t.registry_token.as_deref(), Some("rt"));
    }

    #[test]
    fn keys_are_case_insensitive_and_auth_field_is_decoded() {
        let a = AuthConfig::from_header(&header(r#"{"Username":"u","Password":"p"}"#));
        assert_eq!(a, AuthConfig::basic("u", "p"));
        let b = AuthConfig::from_header(&header(&format!(
            r#"{{"auth":"{}"}}"#,
            base64::engine::general_purpose::STANDARD.encode("me:se:cret")
        )));
        assert_eq!(b, AuthConfig::basic("me", "se:cret"));
    }

    #[test]
    fn junk_gives_empty_credentials() {
        for junk in [
            "",
            "!!!",
            "bm90IGpzb24",
            &header("[1,2]"),
            &header(r#"{"username":1}"#),
        ] {
            assert!(AuthConfig::from_header(junk).is_anonymous(), "{junk}");
        }
        assert!(AuthConfig::from_header(&"A".repeat(MAX_HEADER_LEN + 4)).is_anonymous());
    }

    #[test]
    fn debug_hides_secrets() {
        let shown = format!("{:?}", AuthConfig::basic("u", "hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
