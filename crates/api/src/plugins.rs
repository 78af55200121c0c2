//! The plugin endpoints (docker-plugin-api.md §3) and plugind's `GET /plugins/{name}/logs`.

use std::{convert::Infallible, time::Duration};

use crate::body::RequestBody;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::{body::Frame, header, Request, Response, StatusCode};

use crate::{
    backend::LogsOptions,
    body::{self, PumpOutcome},
    error::{Endpoint, HttpError},
    filters::{filter_plugins, Filters},
    gojson,
    query::{atoi, rfc3339_nano, Query},
    server::{empty, json, stopped, Body, State},
};

/// `GET /plugins?filters=...`.
pub(crate) async fn list(state: &State, q: &Query) -> Result<Response<Body>, HttpError> {
    let filters = Filters::from_json(q.get("filters"))?;
    // Validate before asking the backend, so a bad filter costs nothing.
    filters.validate(&["enabled", "capability"])?;
    let plugins = state
        .backend
        .list()
        .await
        .map_err(|e| HttpError::backend(Endpoint::Other, e))?;
    let plugins = filter_plugins(&filters, plugins)?;
    Ok(json(StatusCode::OK, &plugins))
}

/// `GET /plugins/{name}/json`.
pub(crate) async fn inspect(state: &State, name: &str) -> Result<Response<Body>, HttpError> {
    let plugin = state
        .backend
        .inspect(name)
        .await
        .map_err(|e| HttpError::backend(Endpoint::Other, e))?;
    Ok(json(StatusCode::OK, &plugin))
}

/// `DELETE /plugins/{name}?force=`: 200 with an empty body, as real daemons answer.
pub(crate) async fn remove(
    state: &State,
    name: &str,
    q: &Query,
) -> Result<Response<Body>, HttpError> {
    state
        .backend
        .remove(name, q.bool_value("force"))
        .await
        .map_err(|e| HttpError::backend(Endpoint::Other, e))?;
    Ok(empty(StatusCode::OK))
}

/// `POST /plugins/{name}/enable?timeout=`: the timeout (seconds, 0 = none) becomes the deadline
/// of every later call to the plugin. A missing or non-integer timeout is a 400 with Go's
/// `strconv.Atoi` text (moby master; moby 28 answered 500); a negative one is a 400 with the
/// docker CLI's text (moby takes it as "none"; docs/compat.md).
pub(crate) async fn enable(
    state: &State,
    name: &str,
    q: &Query,
) -> Result<Response<Body>, HttpError> {
    let timeout = enable_timeout(q.get("timeout")).map_err(HttpError::bad_request)?;
    state
        .backend
        .enable(name, timeout)
        .await
        .map_err(|e| HttpError::backend(Endpoint::Other, e))?;
    Ok(empty(StatusCode::OK))
}

/// `POST /plugins/{name}/push`: Docker's progress stream, ending with the `aux` object; an
/// unknown plugin is a 404 before the stream starts, registry failures are in-stream.
pub(crate) async fn push(
    state: &State,
    name: &str,
    req: &hyper::Request<crate::body::RequestBody>,
) -> Result<Response<Body>, HttpError> {
    let registry_auth = req
        .headers()
        .get("X-Registry-Auth")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let backend = state.backend.clone();
    let name = name.to_owned();
    crate::progress::respond(
        move |sink| async move { backend.push(&name, &registry_auth, sink).await },
        |e| HttpError::backend(Endpoint::Other, e),
    )
    .await
}

/// The `timeout` of an enable: `None` for 0.
fn enable_timeout(raw: &str) -> Result<Option<Duration>, String> {
    let secs = atoi(raw)?;
    if secs < 0 {
        return Err(format!("negative timeout {secs} is invalid"));
    }
    Ok(u64::try_from(secs)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs))
}

/// `POST /plugins/{name}/disable?force=`.
pub(crate) async fn disable(
    state: &State,
    name: &str,
    q: &Query,
) -> Result<Response<Body>, HttpError> {
    state
        .backend
        .disable(name, q.bool_value("force"))
        .await
        .map_err(|e| HttpError::backend(Endpoint::Other, e))?;
    Ok(empty(StatusCode::OK))
}

/// `POST /plugins/{name}/set` with a JSON list of `key=value`: body rules first (400), then
/// the backend (lookup errors keep their code, setting errors are 500); 204 on success.
pub(crate) async fn set(
    state: &State,
    name: &str,
    req: Request<RequestBody>,
) -> Result<Response<Body>, HttpError> {
    let empty_body = body::declared_empty(req.headers());
    body::check_json_content_type(req.headers(), empty_body)?;
    let limit = state.options.json_body_limit;
    if body::content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(body::too_large(limit));
    }
    let args = if empty_body {
        Vec::new()
    } else {
        let bytes = body::read_limited(req.into_body(), limit, state.options.body_timeout).await?;
        gojson::decode_string_list(&bytes).map_err(HttpError::bad_request)?
    };
    state
        .backend
        .set(name, args)
        .await
        .map_err(|e| HttpError::backend(Endpoint::Set, e))?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /plugins/create?name=` with a tar body, streamed to the backend; 204 on success.
/// The name is checked first: a taken or invalid name is answered before the upload is read.
pub(crate) async fn create(
    state: &State,
    q: &Query,
    req: Request<RequestBody>,
) -> Result<Response<Body>, HttpError> {
    let limit = state.options.create_body_limit;
    if body::content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(body::too_large(limit));
    }
    let name = q.get("name").to_owned();
    let timeout = state.options.body_timeout;
    if let Err(e) = state.backend.check_create_name(&name).await {
        let declared = body::content_length(req.headers());
        body::discard(req.into_body(), declared, limit, timeout);
        return Err(HttpError::backend(Endpoint::Create, e));
    }
    let (reader, pump) = body::bridge(req.into_body(), limit, timeout);
    let (outcome, result) = tokio::join!(pump, state.backend.create(&name, Box::new(reader)));
    match (outcome, result) {
        // The limit, not whatever the backend made of the reader's error, is the answer.
        (PumpOutcome::TooLarge, _) => Err(body::too_large(limit)),
        (PumpOutcome::TimedOut, _) => Err(body::timed_out(timeout)),
        (_, Err(e)) => Err(HttpError::backend(Endpoint::Create, e)),
        (PumpOutcome::Broken, Ok(())) => Err(HttpError::bad_request(
            "request body was broken off before the end",
        )),
        (PumpOutcome::Done, Ok(())) => Ok(empty(StatusCode::NO_CONTENT)),
    }
}

/// `GET /plugins/{name}/logs?follow=&tail=&timestamps=` (plugind's extension): the plugin's
/// output as plain text lines, optionally prefixed with an RFC 3339 time.
pub(crate) async fn logs(
    state: &State,
    name: &str,
    q: &Query,
) -> Result<Response<Body>, HttpError> {
    let tail = match q.get("tail") {
        "" | "all" => None,
        t => Some(
            t.parse::<usize>()
                .map_err(|_| HttpError::bad_request(format!("invalid tail value {t:?}")))?,
        ),
    };
    let options = LogsOptions {
        tail,
        follow: q.bool_value("follow"),
    };
    let timestamps = q.bool_value("timestamps");
    let lines = state
        .backend
        .logs(name, options)
        .await
        .map_err(|e| HttpError::backend(Endpoint::Other, e))?;
    let mut stop = state.stop.clone();
    let stream = lines
        .take_until(Box::pin(async move { stopped(&mut stop).await }))
        .map(move |l| {
            let text = if timestamps {
                format!("{} {}\n", rfc3339_nano(i128::from(l.time_nano)), l.line)
            } else {
                format!("{}\n", l.line)
            };
            Ok::<_, Infallible>(Frame::data(Bytes::from(text)))
        });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_timeouts_parse_like_docker() {
        assert_eq!(enable_timeout("0"), Ok(None));
        assert_eq!(enable_timeout("30"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(enable_timeout("+5"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(
            enable_timeout(""),
            Err(r#"strconv.Atoi: parsing "": invalid syntax"#.to_owned())
        );
        assert_eq!(
            enable_timeout("1.5"),
            Err(r#"strconv.Atoi: parsing "1.5": invalid syntax"#.to_owned())
        );
        assert_eq!(
            enable_timeout("-1"),
            Err("negative timeout -1 is invalid".to_owned())
        );
        assert!(enable_timeout("99999999999999999999").is_err());
    }
}
