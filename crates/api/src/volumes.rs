//! The volume routes (`/volumes`, `/volumes/create`, `/volumes/{name}`, `/volumes/prune`) over
//! a [`VolumeBackend`] (the volume service, or a fake in tests), with Docker's JSON shapes and
//! status codes.

use crate::body::RequestBody;
use hyper::{Request, Response, StatusCode};
use plugind_volumes::{FilterUse, VolumeFilters};

use crate::{
    body,
    error::{Endpoint, HttpError},
    query::Query,
    server::{empty, json, Body, State},
    volume_backend::{volume_error, VolumeBackend},
    volume_json::{VolumeCreateRequest, VolumeListResponse, VolumePruneResponse},
};

fn service(state: &State) -> Result<&dyn VolumeBackend, HttpError> {
    state
        .options
        .volumes
        .as_deref()
        .ok_or_else(|| HttpError::not_implemented("volumes"))
}

fn to_http(e: crate::backend::BackendError) -> HttpError {
    HttpError::backend(Endpoint::Other, e)
}

fn filters(q: &Query, usage: FilterUse) -> Result<VolumeFilters, HttpError> {
    VolumeFilters::parse(q.get("filters"), usage)
        .map_err(volume_error)
        .map_err(to_http)
}

/// `GET /volumes?filters=`.
pub(crate) async fn list(state: &State, q: &Query) -> Result<Response<Body>, HttpError> {
    let svc = service(state)?;
    let (volumes, warnings) = svc
        .list(&filters(q, FilterUse::List)?)
        .await
        .map_err(to_http)?;
    Ok(json(
        StatusCode::OK,
        &VolumeListResponse::new(volumes, warnings),
    ))
}

/// `POST /volumes/create` with a JSON body; 201 and the volume.
pub(crate) async fn create(
    state: &State,
    req: Request<RequestBody>,
) -> Result<Response<Body>, HttpError> {
    let svc = service(state)?;
    let is_empty = body::declared_empty(req.headers());
    body::check_json_content_type(req.headers(), is_empty)?;
    let bytes = body::read_limited(
        req.into_body(),
        state.options.json_body_limit,
        state.options.body_timeout,
    )
    .await?;
    let request: VolumeCreateRequest = if bytes.is_empty() {
        VolumeCreateRequest::default()
    } else {
        VolumeCreateRequest::parse(&bytes)
            .map_err(|e| HttpError::bad_request(format!("invalid JSON: {e}")))?
    };
    let volume = request.execute(svc).await.map_err(to_http)?;
    Ok(json(StatusCode::CREATED, &volume))
}

/// `GET /volumes/{name}`.
pub(crate) async fn inspect(state: &State, name: &str) -> Result<Response<Body>, HttpError> {
    let volume = service(state)?.inspect(name).await.map_err(to_http)?;
    Ok(json(StatusCode::OK, &volume))
}

/// `DELETE /volumes/{name}?force=`; 204.
pub(crate) async fn remove(
    state: &State,
    name: &str,
    q: &Query,
) -> Result<Response<Body>, HttpError> {
    service(state)?
        .remove(name, q.bool_value("force"))
        .await
        .map_err(to_http)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune?filters=`. `path` is the request path, whose `/v1.xx` prefix selects
/// moby's rule: before API 1.42 prune removed every unused volume, so `all=true` is added to
/// the filters (to the set of values, as moby's `Args.Add` does: `all=false` given by such a
/// client then makes two values, which is an error there too); from 1.42 on, only anonymous
/// volumes unless `all=true`.
pub(crate) async fn prune(
    state: &State,
    q: &Query,
    path: &str,
) -> Result<Response<Body>, HttpError> {
    let svc = service(state)?;
    let mut args = plugind_volumes::filters::parse_args(q.get("filters"))
        .map_err(volume_error)
        .map_err(to_http)?;
    let (version, _) = crate::server::split_version(path);
    if prunes_all_unused(version) {
        let all = args.entry("all".to_owned()).or_default();
        if !all.iter().any(|v| v == "true") {
            all.push("true".to_owned());
            all.sort();
        }
    }
    let filters = VolumeFilters::from_args(&args, FilterUse::Prune)
        .map_err(volume_error)
        .map_err(to_http)?;
    let report = svc.prune(&filters).await.map_err(to_http)?;
    Ok(json(StatusCode::OK, &VolumePruneResponse::from(report)))
}

/// True for API versions before 1.42 (an unprefixed request is the newest version).
fn prunes_all_unused(version: &str) -> bool {
    !version.is_empty()
        && crate::server::compare_versions(version, "1.42") == std::cmp::Ordering::Less
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_rule_follows_the_api_version() {
        assert!(prunes_all_unused("1.41"));
        assert!(prunes_all_unused("1.24"));
        assert!(!prunes_all_unused("1.42"));
        assert!(!prunes_all_unused("1.51"));
        assert!(!prunes_all_unused(""));
    }
}
