//! The registry endpoints of the plugin API (distribution.md §3): `GET /plugins/privileges`,
//! `POST /plugins/pull` (install) and `POST /plugins/{name}/upgrade`, with Docker's order of
//! checks (body first, then the remote and the name, then the backend), its texts and status
//! codes, the `Docker-Plugin-Name` header and the progress stream.

use std::sync::Arc;

use crate::body::RequestBody;
use bytes::Bytes;
use hyper::{header, HeaderMap, Request, Response, StatusCode};

use crate::{
    backend::{PluginPrivilege, RemoteOperation},
    body,
    error::{Endpoint, HttpError},
    progress,
    query::Query,
    server::{full, Body, State},
};

/// The header naming the local plugin of a pull or upgrade (the CLI reads it for `set` and
/// `enable` after an install).
pub(crate) const PLUGIN_NAME_HEADER: &str = "Docker-Plugin-Name";

/// Credentials as sent: the backend decodes them (junk is ignored, as in Docker).
fn registry_auth(headers: &HeaderMap) -> String {
    headers
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `GET /plugins/privileges?remote=`: the array without a trailing newline.
pub(crate) async fn privileges(
    state: &State,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response<Body>, HttpError> {
    let list = state
        .backend
        .privileges(q.get("remote"), &registry_auth(headers))
        .await
        .map_err(|e| HttpError::backend(Endpoint::Remote, e))?;
    let json = serde_json::to_string(&list)
        .map_err(|e| HttpError::internal(format!("encoding the response: {e}")))?;
    Ok(full(
        StatusCode::OK,
        "application/json",
        Bytes::from(progress::go_escape(&json)),
    ))
}

/// The privileges the user accepted, decoded as moby does before anything else: a form body
/// was consumed by `ParseForm` (EOF), an empty body is EOF, and a value that is not an array
/// is Go's unmarshal error.
async fn read_privileges(
    state: &State,
    req: Request<RequestBody>,
) -> Result<Vec<PluginPrivilege>, HttpError> {
    let fail = |detail: &str| HttpError::internal(format!("failed to parse privileges: {detail}"));
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let limit = state.options.json_body_limit;
    if body::content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(body::too_large(limit));
    }
    let bytes = body::read_limited(req.into_body(), limit, state.options.body_timeout).await?;
    if is_form {
        return Err(fail("EOF"));
    }
    decode_privileges(&bytes).map_err(|d| fail(&d))
}

/// Go's `json.Decoder.Decode(&types.PluginPrivileges)` on the first value of `body`.
fn decode_privileges(body: &[u8]) -> Result<Vec<PluginPrivilege>, String> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err("EOF".to_owned());
    };
    let go_type = match body[start] {
        b'{' => Some("object"),
        b'"' => Some("string"),
        b't' | b'f' => Some("bool"),
        b'-' | b'0'..=b'9' => Some("number"),
        _ => None,
    };
    if let Some(kind) = go_type {
        return Err(format!(
            "json: cannot unmarshal {kind} into Go value of type types.PluginPrivileges"
        ));
    }
    let mut values = serde_json::Deserializer::from_slice(&body[start..])
        .into_iter::<Option<Vec<PluginPrivilege>>>();
    match values.next() {
        Some(Ok(list)) => Ok(list.unwrap_or_default()),
        Some(Err(e)) if e.is_eof() => Err("unexpected EOF".to_owned()),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("EOF".to_owned()),
    }
}

/// `POST /plugins/pull?remote=&name=` with the accepted privileges as body.
pub(crate) async fn pull(
    state: &State,
    req: Request<RequestBody>,
) -> Result<Response<Body>, HttpError> {
    let op = remote_operation(state, None, req).await?;
    let backend = Arc::clone(&state.backend);
    let local = op.name.clone();
    stream_with_name(
        &local,
        move |sink| async move { backend.pull(op, sink).await },
    )
    .await
}

/// `POST /plugins/{name}/upgrade?remote=` with the accepted privileges as body.
pub(crate) async fn upgrade(
    state: &State,
    name: &str,
    req: Request<RequestBody>,
) -> Result<Response<Body>, HttpError> {
    let op = remote_operation(state, Some(name), req).await?;
    let backend = Arc::clone(&state.backend);
    let local = op.name.clone();
    stream_with_name(&local, move |sink| async move {
        backend.upgrade(op, sink).await
    })
    .await
}

/// What pull and upgrade share, in moby's order: the privileges body first, then the
/// remote, then the local name normalised (`getName`): the path's for upgrade (`Some`), the
/// query's `name` for pull.
async fn remote_operation(
    state: &State,
    name: Option<&str>,
    req: Request<RequestBody>,
) -> Result<RemoteOperation, HttpError> {
    let uri = req.uri().clone();
    let auth = registry_auth(req.headers());
    let privileges = read_privileges(state, req).await?;
    let q = Query::parse(uri.query())?;
    let remote = q.get("remote").to_owned();
    let local = state
        .backend
        .pull_name(&remote, name.unwrap_or(q.get("name")))
        .map_err(|e| HttpError::backend(Endpoint::Remote, e))?;
    Ok(RemoteOperation {
        remote,
        name: local,
        auth,
        privileges,
    })
}

async fn stream_with_name<F, Fut>(local: &str, operation: F) -> Result<Response<Body>, HttpError>
where
    F: FnOnce(progress::ProgressSink) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::BackendError>> + Send + 'static,
{
    let mut resp = progress::respond(operation, |e| {
        HttpError::backend(Endpoint::Remote, e).with_plugin_name(local)
    })
    .await?;
    if let Ok(v) = header::HeaderValue::from_str(local) {
        resp.headers_mut().insert(PLUGIN_NAME_HEADER, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_bodies_decode_as_go_does() {
        assert_eq!(decode_privileges(b"").unwrap_err(), "EOF");
        assert_eq!(decode_privileges(b" \n").unwrap_err(), "EOF");
        assert_eq!(
            decode_privileges(b"{}").unwrap_err(),
            "json: cannot unmarshal object into Go value of type types.PluginPrivileges"
        );
        assert_eq!(decode_privileges(b"null").unwrap(), vec![]);
        assert_eq!(decode_privileges(b"[]").unwrap(), vec![]);
        let list = decode_privileges(
            br#"[{"Name": "network", "Description": "x", "Value": ["host"]}] trailing"#,
        )
        .unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "network");
        assert_eq!(list[0].value, vec!["host"]);
    }
}
