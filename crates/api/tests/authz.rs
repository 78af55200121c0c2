//! The authorization middleware (moby's `pkg/authorization`) against a fake chain: what the
//! plugins receive before and after a request, Docker's denial and failure texts, JSON bodies
//! shown to the plugins and still handed to the handler, a chain that changes between request
//! and answer, a plugin that hangs, and the removal guard.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use common::{Server, VOLUME_CONFIG};
use plugind_api::{AuthzChain, AuthzRequest, AuthzResponse};

/// What the fake plugin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// Deny requests whose URI contains `/disable`, allow the rest.
    DenyDisable,
    /// Allow requests, deny every answer.
    DenyAnswers,
    /// Never answer (the chain's deadline turns this into a failure).
    Hang,
}

struct FakeChain {
    plugins: Mutex<Vec<String>>,
    policy: Mutex<Policy>,
    seen: Mutex<Vec<(String, AuthzRequest)>>,
}

impl FakeChain {
    fn new(policy: Policy) -> Arc<Self> {
        Arc::new(FakeChain {
            plugins: Mutex::new(vec!["authz-fake".to_owned()]),
            policy: Mutex::new(policy),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn seen(&self) -> Vec<(String, AuthzRequest)> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl AuthzChain for FakeChain {
    fn plugins(&self) -> Vec<String> {
        self.plugins.lock().unwrap().clone()
    }

    async fn call(
        &self,
        _name: &str,
        method: &str,
        request: &AuthzRequest,
    ) -> Result<AuthzResponse, String> {
        self.seen
            .lock()
            .unwrap()
            .push((method.to_owned(), request.clone()));
        let policy = *self.policy.lock().unwrap();
        let answer = |allow: bool, msg: &str| AuthzResponse {
            allow,
            msg: msg.to_owned(),
            err: String::new(),
        };
        match policy {
            Policy::Hang => {
                // The real chain bounds every call; the fake's deadline is short.
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(format!("{method}: timed out after 200ms"))
            }
            Policy::DenyDisable if request.request_uri.contains("/disable") => {
                Ok(answer(false, "disabling is not allowed"))
            }
            Policy::DenyAnswers if method == "AuthZPlugin.AuthZRes" => {
                Ok(answer(false, "you may not see this"))
            }
            _ => Ok(answer(true, "")),
        }
    }

    fn guards(&self, name: &str) -> Option<String> {
        self.plugins
            .lock()
            .unwrap()
            .iter()
            .find(|p| name.starts_with(p.as_str()))
            .map(|p| format!("{p}:latest"))
    }
}

async fn server_with(chain: &Arc<FakeChain>) -> Server {
    let chain: Arc<dyn AuthzChain> = chain.clone();
    Server::start_with(move |o| o.authz = Some(chain)).await
}

#[tokio::test]
async fn a_denied_request_gets_dockers_403_and_never_runs() {
    let chain = FakeChain::new(Policy::DenyDisable);
    let s = server_with(&chain).await;
    s.backend.add("vol:latest", VOLUME_CONFIG, true);
    let r = s
        .call("POST", "/v1.51/plugins/vol:latest/disable", &[], b"")
        .await;
    r.assert_error(
        403,
        "authorization denied by plugin authz-fake: disabling is not allowed",
    );
    assert!(s.backend.calls.lock().unwrap().is_empty(), "nothing ran");
    let seen = chain.seen();
    assert_eq!(seen.len(), 1, "only the request was asked about: {seen:?}");
    assert_eq!(seen[0].0, "AuthZPlugin.AuthZReq");
    assert_eq!(seen[0].1.request_method, "POST");
    assert_eq!(seen[0].1.request_uri, "/v1.51/plugins/vol:latest/disable");
}

#[tokio::test]
async fn allowed_requests_show_request_and_answer_to_the_plugins() {
    let chain = FakeChain::new(Policy::DenyDisable);
    let s = server_with(&chain).await;
    s.backend.add("vol:latest", VOLUME_CONFIG, false);
    let r = s
        .call(
            "GET",
            "/plugins?filters=%7B%7D",
            &[("X-Registry-Auth", "secret"), ("User-Agent", "test")],
            b"",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = chain.seen();
    assert_eq!(
        seen.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
        ["AuthZPlugin.AuthZReq", "AuthZPlugin.AuthZRes"]
    );
    let (_, req) = &seen[0];
    assert_eq!(req.request_uri, "/plugins?filters=%7B%7D");
    assert_eq!(
        req.request_headers.get("User-Agent").map(String::as_str),
        Some("test")
    );
    assert!(
        !req.request_headers.contains_key("X-Registry-Auth"),
        "credentials never go out"
    );
    let (_, res) = &seen[1];
    assert_eq!(res.response_status_code, 200);
    assert_eq!(
        res.response_headers.get("Content-Type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        res.response_body.as_deref(),
        Some(&r.body[..]),
        "the JSON answer, whole"
    );
}

#[tokio::test]
async fn json_bodies_go_to_the_plugins_and_still_reach_the_handler() {
    let chain = FakeChain::new(Policy::DenyDisable);
    let s = server_with(&chain).await;
    s.backend.add("vol:latest", VOLUME_CONFIG, false);
    let body = br#"["DEBUG=1"]"#;
    let r = s
        .call(
            "POST",
            "/plugins/vol:latest/set",
            &[("Content-Type", "application/json")],
            body,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let seen = chain.seen();
    assert_eq!(seen[0].1.request_body.as_deref(), Some(&body[..]));
    let inspect = s.get("/plugins/vol:latest/json").await.json();
    assert_eq!(
        inspect["Settings"]["Env"][0], "DEBUG=1",
        "the handler read the body"
    );
}

#[tokio::test]
async fn a_denied_answer_is_replaced_by_the_403() {
    let chain = FakeChain::new(Policy::DenyAnswers);
    let s = server_with(&chain).await;
    let r = s.get("/plugins").await;
    r.assert_error(
        403,
        "authorization denied by plugin authz-fake: you may not see this",
    );
}

#[tokio::test]
async fn a_failing_plugin_fails_closed_with_dockers_500() {
    let chain = FakeChain::new(Policy::Hang);
    let s = server_with(&chain).await;
    s.backend.add("vol:latest", VOLUME_CONFIG, true);
    let r = s
        .call("POST", "/plugins/vol:latest/disable", &[], b"")
        .await;
    r.assert_error(
        500,
        "plugin authz-fake failed with error: AuthZPlugin.AuthZReq: timed out after 200ms",
    );
    assert!(s.backend.calls.lock().unwrap().is_empty(), "nothing ran");
}

#[tokio::test]
async fn a_plugin_of_the_chain_cannot_be_removed_and_an_empty_chain_asks_no_one() {
    let chain = FakeChain::new(Policy::DenyDisable);
    let s = server_with(&chain).await;
    s.backend.add("authz-fake:latest", VOLUME_CONFIG, false);
    let r = s
        .call("DELETE", "/plugins/authz-fake:latest?force=1", &[], b"")
        .await;
    r.assert_error(409, "plugin authz-fake:latest is in use");
    assert!(s.backend.calls.lock().unwrap().is_empty());
    // Out of the chain (disabled, or a reload without it): nothing is asked, removal works.
    chain.plugins.lock().unwrap().clear();
    let before = chain.seen().len();
    let r = s
        .call("DELETE", "/plugins/authz-fake:latest?force=1", &[], b"")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(chain.seen().len(), before);
}

#[tokio::test]
async fn streamed_answers_are_shown_by_status_and_headers_before_they_start() {
    let chain = FakeChain::new(Policy::DenyDisable);
    let s = server_with(&chain).await;
    let req = hyper::Request::get("/v1.51/events")
        .header("Host", "api.moby.localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = s.send(req).await;
    assert_eq!(resp.status(), 200);
    // The stream is open (the head arrived); the plugins saw the answer's head, no body.
    let seen = chain.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (method, res) = &seen[1];
    assert_eq!(method, "AuthZPlugin.AuthZRes");
    assert_eq!(res.response_status_code, 200);
    assert!(res.response_body.is_none());
    assert!(!res.response_headers.is_empty());
    drop(resp);

    // Denied answers of a stream never start it.
    *chain.policy.lock().unwrap() = Policy::DenyAnswers;
    let r = s.get("/v1.51/events").await;
    r.assert_error(
        403,
        "authorization denied by plugin authz-fake: you may not see this",
    );
}
