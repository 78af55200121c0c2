//! The API spoken over HTTP on a temporary unix socket against the fake backend: every route,
//! status codes, exact error texts, version prefixes, names with `/` and `:`, events, bodies.

mod common;

use std::os::unix::fs::PermissionsExt;

use bytes::Bytes;
use common::{now_nanos, plugin_tar, Server, AUTHZ_CONFIG, VOLUME_CONFIG};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use plugind_api::EventMessage;

#[tokio::test]
async fn ping_sets_the_headers_the_cli_negotiates_with() {
    let s = Server::start().await;
    for path in ["/_ping", "/v1.45/_ping"] {
        let r = s.get(path).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "OK");
        assert_eq!(r.header("api-version"), Some("1.51"));
        assert_eq!(r.header("ostype"), Some("linux"));
        assert_eq!(r.header("docker-experimental"), Some("false"));
        assert_eq!(r.header("server"), Some("Docker/0.1.0-test (linux)"));
        assert_eq!(r.header("swarm"), Some("inactive"));
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
        assert_eq!(
            r.header("cache-control"),
            Some("no-cache, no-store, must-revalidate")
        );
        assert_eq!(r.header("pragma"), Some("no-cache"));
    }
    let head = s.call("HEAD", "/_ping", &[], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("0"));
    assert_eq!(head.header("api-version"), Some("1.51"));
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn version_prefixes_are_checked_like_moby() {
    let s = Server::start().await;
    assert_eq!(s.get("/v1.24/plugins").await.status, 200);
    assert_eq!(s.get("/v1.51/plugins").await.status, 200);
    assert_eq!(s.get("/plugins").await.status, 200);
    let new = s.get("/v1.52/plugins").await;
    new.assert_error(
        400,
        "client version 1.52 is too new. Maximum supported API version is 1.51",
    );
    assert_eq!(new.header("api-version"), Some("1.51"));
    // Before 1.24 moby answers errors as plain text.
    let old = s.get("/v1.19/plugins").await;
    assert_eq!(old.status, 400);
    assert_eq!(
        old.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        old.text(),
        "client version 1.19 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version\n"
    );
}

#[tokio::test]
async fn unknown_routes_are_page_not_found_without_version_headers() {
    let s = Server::start().await;
    for (m, p) in [
        ("GET", "/containers/json"),
        ("GET", "/v1.45/nope"),
        ("PUT", "/plugins"),
        ("HEAD", "/version"),
        ("GET", "/plugins/json"),
        // docker-py's push_plugin bug posts here; moby answers 404.
        ("POST", "/v1.45/plugins/foo/pull"),
    ] {
        let r = s.call(m, p, &[], b"").await;
        if m == "HEAD" {
            assert_eq!(r.status, 404);
        } else {
            r.assert_error(404, "page not found");
        }
        assert_eq!(r.header("api-version"), None, "{m} {p}");
    }
    let opt = s.call("OPTIONS", "/v1.45/plugins/x/json", &[], b"").await;
    assert_eq!(opt.status, 200);
    assert_eq!(opt.header("api-version"), Some("1.51"));
}

#[tokio::test]
async fn version_and_info_bodies() {
    let s = Server::start().await;
    s.backend.add("a/b:latest", VOLUME_CONFIG, true);
    let v = s.get("/version").await;
    assert_eq!(v.header("content-type"), Some("application/json"));
    let j = v.json();
    assert_eq!(j["ApiVersion"], "1.51");
    assert_eq!(j["MinAPIVersion"], "1.24");
    assert_eq!(j["Version"], "0.1.0-test");
    assert_eq!(j["Os"], "linux");
    assert_eq!(j["Components"][0]["Name"], "Engine");
    let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
    assert_eq!(
        keys[..4],
        ["Platform", "Components", "Version", "ApiVersion"]
    );
    let i = s.get("/v1.50/info").await.json();
    assert_eq!(i["OSType"], "linux");
    assert_eq!(i["ID"], "fake-backend");
    assert_eq!(i["DockerRootDir"], "/var/lib/plugind");
    assert_eq!(i["LiveRestoreEnabled"], true);
    assert_eq!(i["Runtimes"]["runc"]["path"], "runc");
    assert_eq!(i["Swarm"]["LocalNodeState"], "inactive");
    assert_eq!(i["PluginD"]["Plugins"], 1);
    assert_eq!(i["PluginD"]["PluginsEnabled"], 1);
    assert!(i["SystemTime"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn list_with_filters_in_both_encodings() {
    let s = Server::start().await;
    assert_eq!(s.get("/plugins").await.text(), "[]\n");
    s.backend.add("vol:latest", VOLUME_CONFIG, true);
    s.backend.add("authz:latest", AUTHZ_CONFIG, false);
    s.backend.add("notypes:latest", "{}", false);
    let s = &s;
    let names = |path: String| async move {
        let r = s.get(&path).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let mut n: Vec<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["Name"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let q = |f: &str| format!("/v1.45/plugins?filters={}", esc(f));
    assert_eq!(
        names(q(r#"{"enabled":{"true":true}}"#)).await,
        ["vol:latest"]
    );
    assert_eq!(names(q(r#"{"enabled":["1"]}"#)).await, ["vol:latest"]);
    assert_eq!(
        names(q(r#"{"enabled":["false"]}"#)).await,
        ["authz:latest", "notypes:latest"]
    );
    // Capabilities are unanchored regexes; a plugin without types always passes.
    assert_eq!(
        names(q(r#"{"capability":{"volume":true}}"#)).await,
        ["notypes:latest", "vol:latest"]
    );
    assert_eq!(
        names(q(r#"{"capability":["volume.*"]}"#)).await,
        ["notypes:latest", "vol:latest"]
    );
    assert_eq!(
        names(q(r#"{"capability":["authz"],"enabled":["0"]}"#)).await,
        ["authz:latest", "notypes:latest"]
    );
    s.get(&q(r#"{"foo":["x"]}"#))
        .await
        .assert_error(400, "invalid filter 'foo'");
    s.get(&q(r#"{"enabled":["maybe"]}"#))
        .await
        .assert_error(400, "invalid filter 'enabled=[maybe]'");
    s.get(&q(r#"{"enabled":["true","0"]}"#))
        .await
        .assert_error(400, "invalid filter 'enabled=[0 true]'");
    s.get(&q("not json"))
        .await
        .assert_error(400, "invalid filter");
    s.get("/plugins?filters=%zz")
        .await
        .assert_error(400, r#"invalid URL escape "%zz""#);
}

fn esc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn inspect_resolves_names_ids_and_prefixes() {
    let s = Server::start().await;
    let id = s
        .backend
        .add("localhost:5000/foo/bar:latest", VOLUME_CONFIG, false);
    let other = s.backend.add("test/vol:latest", AUTHZ_CONFIG, true);
    for name in [
        "localhost:5000/foo/bar:latest",
        "localhost:5000/foo/bar",
        "localhost%3A5000%2Ffoo%2Fbar",
        id.as_str(),
        &id[..4],
    ] {
        let r = s.get(&format!("/v1.45/plugins/{name}/json")).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.json()["Id"], id.as_str());
    }
    let r = s.get("/plugins/test/vol/json").await;
    assert_eq!(r.json()["Id"], other.as_str());
    // Keys in moby's order, then plugind's own.
    let text = r.text();
    let order: Vec<usize> = [
        "\"Config\"",
        "\"Enabled\"",
        "\"Id\"",
        "\"Name\"",
        "\"PluginReference\"",
        "\"Settings\"",
        "\"PluginD\"",
    ]
    .iter()
    .map(|k| text.rfind(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.ends_with("}\n"));
    assert!(text.contains(r#""Settings":{"Args":[],"Devices":[],"Env":[],"Mounts":[]}"#));
    assert!(text.contains(r#""PluginD":{"State":"running","Pid":4242,"RestartCount":0}"#));
    s.get("/plugins/nope/json")
        .await
        .assert_error(404, r#"plugin "nope" not found"#);
    s.get("/plugins/TEST/vol/json")
        .await
        .assert_error(404, r#"plugin "TEST/vol" not found"#);
    // Both ids start with "0".
    s.get("/plugins/0/json")
        .await
        .assert_error(400, r#"multiple plugins found for "0""#);
}

#[tokio::test]
async fn enable_disable_remove_state_rules() {
    let s = Server::start().await;
    s.backend.add("vol:latest", VOLUME_CONFIG, false);
    s.backend
        .add("bad:latest", r#"{"Entrypoint":["/fail"]}"#, false);
    // An integer timeout is required; a bad one is a 400 (moby master; moby 28 answered 500).
    s.call("POST", "/v1.45/plugins/vol/enable", &[], b"")
        .await
        .assert_error(400, r#"strconv.Atoi: parsing "": invalid syntax"#);
    s.call("POST", "/v1.45/plugins/vol/enable?timeout=abc", &[], b"")
        .await
        .assert_error(400, r#"strconv.Atoi: parsing "abc": invalid syntax"#);
    s.call("POST", "/v1.45/plugins/vol/enable?timeout=-1", &[], b"")
        .await
        .assert_error(400, "negative timeout -1 is invalid");
    assert!(s.backend.calls.lock().unwrap().is_empty());
    let r = s
        .call("POST", "/v1.45/plugins/vol/enable?timeout=30", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("0"));
    assert_eq!(
        *s.backend.last_timeout.lock().unwrap(),
        Some(Some(std::time::Duration::from_secs(30)))
    );
    s.call("POST", "/v1.45/plugins/vol/enable?timeout=0", &[], b"")
        .await
        .assert_error(409, "plugin already enabled: plugin vol:latest is enabled");
    assert_eq!(*s.backend.last_timeout.lock().unwrap(), Some(None));
    s.call("POST", "/plugins/bad/enable?timeout=0", &[], b"").await.assert_error(
        500,
        "failed to create shim task: OCI runtime create failed: exec: \"/fail\": stat /fail: no such file or directory: unknown",
    );
    s.call("DELETE", "/v1.45/plugins/vol?force=False", &[], b"")
        .await
        .assert_error(409, "plugin vol:latest is enabled");
    assert_eq!(
        s.call("POST", "/v1.45/plugins/vol/disable", &[], b"")
            .await
            .status,
        200
    );
    s.call("POST", "/v1.45/plugins/vol/disable?force=1", &[], b"")
        .await
        .assert_error(
            409,
            "plugin is already disabled: plugin vol:latest found but disabled",
        );
    s.call("POST", "/plugins/nope/disable", &[], b"")
        .await
        .assert_error(404, r#"plugin "nope" not found"#);
    let r = s
        .call("DELETE", "/v1.45/plugins/vol:latest", &[], b"")
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(s.backend.names(), ["bad:latest"]);
    s.backend.add("forced:latest", "{}", true);
    assert_eq!(
        s.call("DELETE", "/plugins/forced?force=1", &[], b"")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn set_body_rules_and_status_codes() {
    let s = Server::start().await;
    s.backend.add("vol:latest", VOLUME_CONFIG, false);
    let json = [("Content-Type", "application/json")];
    let r = s
        .call("POST", "/v1.45/plugins/vol/set", &json, br#"["DEBUG=1"]"#)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let p = s.get("/plugins/vol/json").await.json();
    assert_eq!(p["Settings"]["Env"], serde_json::json!(["DEBUG=1"]));
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [u8], &'a str);
    let cases: &[Case] = &[
        (
            &[("Content-Type", "text/plain")],
            b"[]",
            "unsupported Content-Type header (text/plain): must be 'application/json'",
        ),
        (
            &[],
            b"[]",
            "malformed Content-Type header (): mime: no media type",
        ),
        (
            &json,
            b"{i",
            "invalid JSON: invalid character 'i' looking for beginning of object key string",
        ),
        (&json, br#"["a"] ["b"]"#, "unexpected content after JSON"),
        (
            &json,
            br#"{"a":"b"}"#,
            "invalid JSON: json: cannot unmarshal object into Go value of type []string",
        ),
        (
            &json,
            b"   ",
            "invalid JSON: got EOF while reading request body",
        ),
        (&json, br#"["a""#, "invalid JSON: unexpected EOF"),
    ];
    for (headers, body, msg) in cases {
        s.call("POST", "/v1.45/plugins/vol/set", headers, body)
            .await
            .assert_error(400, msg);
        // The body is checked before the name: unknown plugins get the same 400.
        s.call("POST", "/v1.45/plugins/nope/set", headers, body)
            .await
            .assert_error(400, msg);
    }
    // An empty body is "no value": the lookup runs and fails with 404.
    s.call("POST", "/plugins/nope/set", &json, b"")
        .await
        .assert_error(404, r#"plugin "nope" not found"#);
    s.call("POST", "/plugins/vol/set", &json, br#"["NOPE=1"]"#)
        .await
        .assert_error(
            500,
            r#"setting "NOPE" not found in the plugin configuration"#,
        );
    s.call("POST", "/plugins/vol/set", &json, br#"["=1"]"#)
        .await
        .assert_error(500, "invalid format, must be <name>[.<field>][=<value>]");
    s.backend.add("on:latest", VOLUME_CONFIG, true);
    s.call("POST", "/plugins/on/set", &json, br#"["DEBUG=1"]"#)
        .await
        .assert_error(
            500,
            "cannot set on an active plugin, disable plugin before setting",
        );
    let calls = s.backend.calls.lock().unwrap().clone();
    assert_eq!(calls, [("set".to_owned(), "vol".to_owned())]);
    // Oversized JSON bodies are refused before they are read.
    let big = vec![b' '; 2 << 20];
    let r = s.call("POST", "/plugins/vol/set", &json, &big).await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn create_streams_the_tar_to_the_backend() {
    let s = Server::start().await;
    let tar = plugin_tar(VOLUME_CONFIG, 300_000);
    let ct = [("Content-Type", "application/x-tar")];
    let r = s
        .call("POST", "/v1.45/plugins/create?name=local/vol", &ct, &tar)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(
        *s.backend.last_create_bytes.lock().unwrap(),
        tar.len() as u64
    );
    let p = s.get("/plugins/local/vol:latest/json").await.json();
    assert_eq!(p["Config"]["Description"], "a volume plugin");
    assert_eq!(p["Enabled"], false);
    s.call("POST", "/plugins/create?name=local/vol:latest", &[], &tar)
        .await
        .assert_error(409, "plugin local/vol:latest already exists");
    s.call("POST", "/plugins/create?name=Bad", &[], &tar)
        .await
        .assert_error(
            500,
            "failed to parse reference Bad: invalid reference format: repository name must be lowercase",
        );
    let no_config = {
        let mut b = tar::Builder::new(Vec::new());
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_size(0);
        d.set_cksum();
        b.append_data(&mut d, "rootfs/", &[][..]).unwrap();
        b.into_inner().unwrap()
    };
    s.call("POST", "/plugins/create?name=x", &[], &no_config)
        .await
        .assert_error(500, "config not found");
    s.call("POST", "/plugins/create?name=y", &[], b"")
        .await
        .assert_error(500, "no rootfs found: EOF");
    assert_eq!(s.backend.names(), ["local/vol:latest"]);
}

#[tokio::test]
async fn create_body_limit_creates_nothing() {
    let s = Server::start_with(|o| o.create_body_limit = 100_000).await;
    let tar = plugin_tar(VOLUME_CONFIG, 200_000);
    // Declared too large: refused before reading.
    s.call("POST", "/plugins/create?name=big", &[], &tar)
        .await
        .assert_error(413, "request body exceeds the limit of 100000 bytes");
    // Chunked, so only counting can catch it.
    let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = tar
        .chunks(16 * 1024)
        .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = http_body_util::StreamBody::new(futures::stream::iter(chunks));
    let stream = tokio::net::UnixStream::connect(&s.sock).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::post("/plugins/create?name=big")
                .header("Host", "x")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        &text[..],
        b"{\"message\":\"request body exceeds the limit of 100000 bytes\"}\n"
    );
    assert!(s.backend.names().is_empty());
    assert!(s.backend.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn privileges_answer_dockers_array_without_newline() {
    let s = Server::start().await;
    let r = s
        .get("/v1.41/plugins/privileges?remote=acme/sample:1.0")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.text(),
        r#"[{"Name":"network","Description":"permissions to access a network","Value":["host"]}]"#
    );
    s.get("/plugins/privileges")
        .await
        .assert_error(500, "invalid reference format");
    s.get("/plugins/privileges?remote=Acme/x")
        .await
        .assert_error(
            500,
            "invalid reference format: repository name must be lowercase",
        );
    s.get("/plugins/privileges?remote=acme/missing")
        .await
        .assert_error(404, "error resolving plugin reference: manifest unknown");
}

const GRANTED: &[u8] =
    br#"[{"Name": "network", "Description": "permissions to access a network", "Value": ["host"]}]"#;

#[tokio::test]
async fn pull_checks_body_then_names_then_streams_with_the_plugin_name() {
    let s = Server::start().await;
    let json = [("Content-Type", "application/json")];
    // The body first, before the remote: Docker's texts, no name header yet.
    let r = s
        .call("POST", "/plugins/pull?remote=acme/sample", &json, b"")
        .await;
    r.assert_error(500, "failed to parse privileges: EOF");
    assert_eq!(r.header("docker-plugin-name"), None);
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    s.call("POST", "/plugins/pull?remote=acme/sample", &form, GRANTED)
        .await
        .assert_error(500, "failed to parse privileges: EOF");
    s.call("POST", "/plugins/pull?remote=acme/sample", &json, b"{}")
        .await
        .assert_error(
            500,
            "failed to parse privileges: json: cannot unmarshal object into Go value of type types.PluginPrivileges",
        );
    s.call("POST", "/plugins/pull", &json, GRANTED)
        .await
        .assert_error(500, "invalid reference format");
    s.call("POST", "/plugins/pull?remote=acme/sample&name=a@sha256:0123456789012345678901234567890123456789012345678901234567890123", &json, GRANTED)
        .await
        .assert_error(500, "cannot use digest in plugin tag");
    let r = s
        .call(
            "POST",
            "/plugins/pull?remote=acme/missing:1.0&name=",
            &json,
            GRANTED,
        )
        .await;
    r.assert_error(404, "error resolving plugin reference: manifest unknown");
    assert_eq!(r.header("docker-plugin-name"), Some("acme/missing:1.0"));
    assert!(s.backend.names().is_empty());

    // Success: the header, a chunked JSON stream, one object per chunk.
    let req = Request::builder()
        .method("POST")
        .uri("/v1.41/plugins/pull?remote=acme/sample:1.0&name=x")
        .header("Content-Type", "application/json")
        .body(Full::new(Bytes::from_static(GRANTED)))
        .unwrap();
    let resp = s.send(req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["docker-plugin-name"], "x:latest");
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["transfer-encoding"], "chunked");
    let mut body = resp.into_body();
    let mut chunks = Vec::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            chunks.push(String::from_utf8(d.to_vec()).unwrap());
        }
    }
    assert_eq!(
        chunks.concat(),
        concat!(
            "{\"status\":\"Pulling from acme/sample\",\"id\":\"latest\"}\r\n",
            "{\"status\":\"Waiting\",\"progressDetail\":{},\"id\":\"abababababab\"}\r\n",
            "{\"status\":\"Extracting\",\"progressDetail\":{\"current\":1146880,\"total\":1669322},\"progress\":\"[==================================\\u003e                ]  1.147MB/1.669MB\",\"id\":\"abababababab\"}\r\n",
            "{\"status\":\"Complete\",\"progressDetail\":{},\"id\":\"abababababab\"}\r\n",
        )
    );
    assert!(chunks
        .iter()
        .all(|c| c.ends_with("\r\n") && c.matches("\r\n").count() == 1));
    assert_eq!(s.backend.names(), ["x:latest"]);

    // The name is taken: 400 (not create's 409), with the header.
    let r = s
        .call(
            "POST",
            "/plugins/pull?remote=acme/sample:1.0&name=x",
            &json,
            GRANTED,
        )
        .await;
    r.assert_error(400, "plugin x:latest already exists");
    assert_eq!(r.header("docker-plugin-name"), Some("x:latest"));

    // Wrong privileges: 200, and the error is the last object.
    let r = s
        .call(
            "POST",
            "/plugins/pull?remote=acme/sample:1.0&name=y",
            &json,
            b"[]",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().ends_with("{\"errorDetail\":{\"message\":\"incorrect privileges\"},\"error\":\"incorrect privileges\"}\r\n"),
        "{}",
        r.text()
    );
    assert_eq!(s.backend.names(), ["x:latest"]);
}

#[tokio::test]
async fn upgrade_reads_the_body_first_and_names_the_plugin() {
    let s = Server::start().await;
    s.backend.add("on:latest", VOLUME_CONFIG, true);
    s.backend.add("off:latest", VOLUME_CONFIG, false);
    let json = [("Content-Type", "application/json")];
    // No body: the body error even for an unknown plugin.
    s.call(
        "POST",
        "/plugins/nosuch/upgrade?remote=acme/sample:2.0",
        &json,
        b"",
    )
    .await
    .assert_error(500, "failed to parse privileges: EOF");
    s.call("POST", "/plugins/nosuch/upgrade", &json, GRANTED)
        .await
        .assert_error(500, "invalid reference format");
    let r = s
        .call(
            "POST",
            "/plugins/nosuch/upgrade?remote=acme/sample:2.0",
            &json,
            GRANTED,
        )
        .await;
    r.assert_error(404, r#"plugin "nosuch:latest" not found"#);
    assert_eq!(r.header("docker-plugin-name"), Some("nosuch:latest"));
    let r = s
        .call(
            "POST",
            "/plugins/on/upgrade?remote=acme/sample:2.0",
            &json,
            GRANTED,
        )
        .await;
    r.assert_error(
        409,
        "plugin must be disabled before upgrading: plugin on:latest is enabled",
    );
    assert_eq!(r.header("docker-plugin-name"), Some("on:latest"));
    let r = s
        .call(
            "POST",
            "/plugins/off/upgrade?remote=acme/sample:2.0",
            &json,
            GRANTED,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-plugin-name"), Some("off:latest"));
    assert_eq!(
        r.text(),
        "{\"status\":\"Pulling from acme/sample\",\"id\":\"2.0\"}\r\n"
    );
}

async fn next_line(body: &mut hyper::body::Incoming) -> Option<serde_json::Value> {
    loop {
        let frame = body.frame().await?.unwrap();
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Some(serde_json::from_slice(&data).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn events_backlog_since_until_and_filters() {
    let s = Server::start().await;
    let id = "ab".repeat(32);
    for (action, t) in [
        ("create", 10),
        ("enable", 20),
        ("disable", 30),
        ("remove", 40),
    ] {
        s.backend.publish(EventMessage::plugin(
            action,
            &id,
            "test/vol",
            t * 1_000_000_000,
        ));
    }
    s.backend.publish(EventMessage::plugin(
        "enable",
        &"cd".repeat(32),
        "other",
        50_000_000_000,
    ));
    let actions = |r: common::Reply| {
        r.text()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["Action"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    // until in the past: the backlog only, then the stream ends.
    let r = s.get("/v1.45/events?since=20&until=40").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(actions(r), ["enable", "disable", "remove"]);
    let r = s.get("/v1.45/events?since=20.5&until=30.000000000").await;
    assert_eq!(actions(r), ["disable"]);
    let f = esc(
        r#"{"type":{"plugin":true},"plugin":{"test/v":true},"event":{"enable":true,"remove":true}}"#,
    );
    let r = s
        .get(&format!("/events?since=0&until=60&filters={f}"))
        .await;
    assert_eq!(actions(r), ["enable", "remove"]);
    let line = s.get("/events?since=10&until=10").await.text();
    assert_eq!(
        line,
        format!("{{\"Type\":\"plugin\",\"Action\":\"create\",\"Actor\":{{\"ID\":\"{id}\",\"Attributes\":{{\"name\":\"test/vol\"}}}},\"scope\":\"local\",\"time\":10,\"timeNano\":10000000000}}\n")
    );
    s.get("/events?since=30&until=20")
        .await
        .assert_error(400, "`since` time (30) cannot be after `until` time (20)");
    s.get("/events?since=bla")
        .await
        .assert_error(500, r#"strconv.ParseInt: parsing "bla": invalid syntax"#);
    s.get("/events?until=1&filters=nope")
        .await
        .assert_error(400, "invalid filter");
}

#[tokio::test]
async fn events_stream_live_until_the_client_leaves() {
    let s = Server::start().await;
    s.backend
        .publish(EventMessage::plugin("create", "old", "old", 1));
    let before = s.backend.event_receivers();
    let resp = s
        .send(
            Request::get(format!(
                "/v1.45/events?filters={}",
                esc(r#"{"type":["plugin"]}"#)
            ))
            .header("Host", "x")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        )
        .await;
    // Headers arrive before any event.
    assert_eq!(resp.status(), 200);
    assert_eq!(s.backend.event_receivers(), before + 1);
    let mut body = resp.into_body();
    s.backend
        .publish(EventMessage::plugin("enable", "id1", "a", now_nanos()));
    let ev = next_line(&mut body).await.unwrap();
    // No backlog without since/until: the old event is not replayed.
    assert_eq!(ev["Action"], "enable");
    assert_eq!(ev["Actor"]["ID"], "id1");
    s.backend
        .publish(EventMessage::plugin("disable", "id1", "a", now_nanos()));
    assert_eq!(next_line(&mut body).await.unwrap()["Action"], "disable");
    drop(body);
    // The server notices the client left and drops its subscription.
    while s.backend.event_receivers() > before {
        s.backend
            .publish(EventMessage::plugin("ping", "x", "x", now_nanos()));
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn events_with_future_until_end_by_themselves() {
    let s = Server::start().await;
    let until = (now_nanos() / 1_000_000_000) + 1;
    let resp = s
        .send(
            Request::get(format!("/events?since=0&until={until}"))
                .header("Host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    s.backend
        .publish(EventMessage::plugin("enable", "id1", "a", now_nanos()));
    assert_eq!(next_line(&mut body).await.unwrap()["Action"], "enable");
    // Ends at the deadline without any further event.
    assert!(next_line(&mut body).await.is_none());
}

#[tokio::test]
async fn shutdown_ends_streams_and_serve_returns() {
    let s = Server::start().await;
    let resp = s
        .send(
            Request::get("/events")
                .header("Host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    let mut body = resp.into_body();
    let sock = s.sock.clone();
    s.shutdown().await;
    assert!(next_line(&mut body).await.is_none());
    assert!(tokio::net::UnixStream::connect(&sock).await.is_err() || !sock.exists());
}

#[tokio::test]
async fn logs_tail_timestamps_and_follow() {
    let s = Server::start().await;
    s.backend.add("vol:latest", VOLUME_CONFIG, true);
    assert_eq!(
        s.get("/plugins/vol/logs").await.text(),
        "line 1\nline 2\nline 3\n"
    );
    let r = s.get("/v1.45/plugins/vol/logs?tail=1&timestamps=1").await;
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.text(), "1970-01-01T00:00:03Z line 3\n");
    s.get("/plugins/vol/logs?tail=x")
        .await
        .assert_error(400, r#"invalid tail value "x""#);
    s.get("/plugins/nope/logs")
        .await
        .assert_error(404, r#"plugin "nope" not found"#);
    let resp = s
        .send(
            Request::get("/plugins/vol/logs?follow=1&tail=0")
                .header("Host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    let mut body = resp.into_body();
    while s.backend.log_receivers() == 0 {
        tokio::task::yield_now().await;
    }
    s.backend.log("live one");
    let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&frame[..], b"live one\n");
}

#[tokio::test]
async fn bind_sets_mode_refuses_live_sockets_and_replaces_stale_ones() {
    let s = Server::start().await;
    let mode = std::fs::metadata(&s.sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let err = plugind_api::bind(&s.sock).unwrap_err();
    assert!(
        matches!(err, plugind_api::ApiError::SocketInUse { .. }),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(plugind_api::bind(&stale).is_ok());
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(plugind_api::bind(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[tokio::test]
async fn raw_wire_format_matches_go() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let s = Server::start().await;
    let mut stream = tokio::net::UnixStream::connect(&s.sock).await.unwrap();
    stream
        .write_all(b"GET /v1.50/plugins/nope/json HTTP/1.1\r\nHost: api.moby.localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    // Go's canonical header spelling and the exact content type the CLI requires.
    for line in [
        "Content-Type: application/json",
        "Api-Version: 1.51",
        "Ostype: linux",
        "Docker-Experimental: false",
        "Server: Docker/0.1.0-test (linux)",
    ] {
        assert!(
            head.lines().any(|l| l == line),
            "missing {line:?} in\n{head}"
        );
    }
    assert_eq!(body, "{\"message\":\"plugin \\\"nope\\\" not found\"}\n");
}

/// A raw connection to the server, for clients that misbehave on purpose.
async fn raw(s: &Server) -> tokio::net::UnixStream {
    tokio::net::UnixStream::connect(&s.sock).await.unwrap()
}

/// Everything the server sends until it closes the connection. A generous bound turns a hang
/// (the defect) into a failure instead of a stuck test; passing never depends on it.
async fn read_until_closed(stream: &mut tokio::net::UnixStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut out),
    )
    .await
    .expect("the server never closed the connection")
    .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn send_raw(stream: &mut tokio::net::UnixStream, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    stream.write_all(bytes).await.unwrap();
}

fn short_timeouts(o: &mut plugind_api::ServerOptions) {
    o.header_timeout = std::time::Duration::from_millis(300);
    o.idle_timeout = std::time::Duration::from_millis(500);
    o.body_timeout = std::time::Duration::from_millis(500);
}

#[tokio::test]
async fn json_nested_5000_deep_is_400_and_the_server_stays_up() {
    let s = Server::start().await;
    s.backend.add("vol:latest", VOLUME_CONFIG, false);
    let json = [("Content-Type", "application/json")];
    let arrays = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(5_000), "}".repeat(5_000));
    for name in ["vol", "nope"] {
        let path = format!("/plugins/{name}/set");
        s.call("POST", &path, &json, arrays.as_bytes())
            .await
            .assert_error(
                400,
                "invalid JSON: json: cannot unmarshal array into Go value of type string",
            );
        s.call("POST", &path, &json, objects.as_bytes())
            .await
            .assert_error(
                400,
                "invalid JSON: json: cannot unmarshal object into Go value of type []string",
            );
        s.call("POST", &path, &json, "[".repeat(5_000).as_bytes())
            .await
            .assert_error(400, "invalid JSON: unexpected EOF");
        // Past Go's own nesting limit: Go's syntax error.
        s.call("POST", &path, &json, "[".repeat(10_001).as_bytes())
            .await
            .assert_error(
                400,
                "invalid JSON: invalid character '[' exceeded max depth",
            );
    }
    // JSON in the `filters` parameter of every route that takes one.
    let deep_filter = esc(&format!(
        r#"{{"enabled":{}{}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    ));
    for route in ["/plugins", "/events"] {
        let r = s.get(&format!("{route}?filters={deep_filter}")).await;
        assert_eq!(r.status, 400, "{route}: {}", r.text());
    }
    assert_eq!(s.get("/_ping").await.status, 200);
    assert!(s.backend.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn stalled_heads_and_idle_connections_are_closed() {
    let s = Server::start_with(short_timeouts).await;
    // Half a request head, then nothing: closed without an answer, as Go does.
    let mut half = raw(&s).await;
    send_raw(&mut half, b"GET /_ping HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert_eq!(read_until_closed(&mut half).await, "");
    // Connected, never a byte: closed once idle.
    let mut silent = raw(&s).await;
    assert_eq!(read_until_closed(&mut silent).await, "");
    // A keep-alive connection after its answer: closed once idle.
    let mut kept = raw(&s).await;
    send_raw(&mut kept, b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nOK"), "{answer}");
    // New clients are answered all along.
    assert_eq!(s.get("/_ping").await.status, 200);
}

#[tokio::test]
async fn stalled_bodies_are_cut_off_with_408() {
    let s = Server::start_with(short_timeouts).await;
    s.backend.add("vol:latest", VOLUME_CONFIG, false);
    let mut set = raw(&s).await;
    send_raw(
        &mut set,
        b"POST /plugins/vol/set HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n[\"DEBUG=",
    )
    .await;
    let answer = read_until_closed(&mut set).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with(
            "{\"message\":\"timed out reading the request body: nothing received for 500ms\"}\n"
        ),
        "{answer}"
    );
    let mut create = raw(&s).await;
    send_raw(
        &mut create,
        b"POST /plugins/create?name=slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await;
    send_raw(&mut create, &plugin_tar(VOLUME_CONFIG, 0)[..1024]).await;
    let answer = read_until_closed(&mut create).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert_eq!(s.backend.names(), ["vol:latest"]);
    assert!(s.backend.calls.lock().unwrap().is_empty());
}

#[tokio::test]
async fn uploads_that_keep_moving_are_never_cut_off() {
    let s = Server::start_with(short_timeouts).await;
    let tar = plugin_tar(VOLUME_CONFIG, 64 * 1024);
    // Each piece arrives well within the body timeout, the whole upload takes several times
    // the timeout: the deadline is per read, not per request.
    let pieces: Vec<Bytes> = tar
        .chunks(tar.len().div_ceil(20))
        .map(Bytes::copy_from_slice)
        .collect();
    let stream = futures::stream::unfold(pieces.into_iter(), |mut it| async move {
        let piece = it.next()?;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Some((
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(piece)),
            it,
        ))
    });
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(raw(&s).await))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::post("/plugins/create?name=slow/upload")
                .header("Host", "x")
                .body(http_body_util::StreamBody::new(stream))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(s.backend.names(), ["slow/upload:latest"]);
}

#[tokio::test]
async fn event_streams_outlive_the_idle_timeout() {
    let s = Server::start_with(short_timeouts).await;
    let resp = s
        .send(
            Request::get("/events")
                .header("Host", "x")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Several idle timeouts with nothing to send: the stream is a request in flight.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    s.backend.publish(EventMessage::plugin(
        "enable",
        "ab",
        "late:latest",
        now_nanos(),
    ));
    let ev = next_line(&mut body)
        .await
        .expect("the stream is still open");
    assert_eq!(ev["Actor"]["Attributes"]["name"], "late:latest");
}

#[tokio::test]
async fn connections_past_the_cap_get_503_and_slots_come_back() {
    let s = Server::start_with(|o| o.max_connections = 2).await;
    let held = [raw(&s).await, raw(&s).await];
    // Let the server take both before the third arrives.
    let mut probe = raw(&s).await;
    send_raw(&mut probe, b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut probe).await;
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("\r\nContent-Type: application/json\r\n"),
        "{answer}"
    );
    assert!(
        answer.ends_with("{\"message\":\"too many API connections (limit 2), try again later\"}\n"),
        "{answer}"
    );
    drop(held);
    // The slots are free again once the server has seen the closes; a well-formed client is
    // then served (polling, since the close is noticed asynchronously).
    loop {
        let r = s.get("/_ping").await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503);
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn create_with_a_taken_name_is_409_before_the_upload() {
    let s = Server::start().await;
    s.backend.add("local/vol:latest", VOLUME_CONFIG, false);
    let mut conn = raw(&s).await;
    // 100 MB announced, 1 KiB sent, then the client waits for the answer.
    send_raw(
        &mut conn,
        b"POST /plugins/create?name=local/vol HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await;
    send_raw(&mut conn, &[0u8; 1024]).await;
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 409 Conflict\r\n"), "{answer}");
    assert!(
        answer.ends_with("{\"message\":\"plugin local/vol:latest already exists\"}\n"),
        "{answer}"
    );
    // An invalid name is answered as create answers it, also before the upload.
    let mut conn = raw(&s).await;
    send_raw(
        &mut conn,
        b"POST /plugins/create?name=Bad HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await;
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 500 "), "{answer}");
    assert!(s.backend.calls.lock().unwrap().is_empty());
}

/// The docker CLI streams a plugin tar chunked and reads the answer only after its upload:
/// when the name is taken, the whole upload (4 MiB here, far past Go's 256 KiB drain) must
/// still be accepted, so the client sees the 409, not a broken pipe.
#[tokio::test]
async fn create_with_a_taken_name_lets_a_chunked_upload_finish() {
    let s = Server::start().await;
    s.backend.add("local/vol:latest", VOLUME_CONFIG, false);
    let mut conn = raw(&s).await;
    send_raw(
        &mut conn,
        b"POST /plugins/create?name=local/vol HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .await;
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..64 {
        send_raw(&mut conn, format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        send_raw(&mut conn, &chunk).await;
        send_raw(&mut conn, b"\r\n").await;
    }
    send_raw(&mut conn, b"0\r\n\r\n").await;
    let answer = read_until_closed(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 409 Conflict\r\n"), "{answer}");
    assert!(s.backend.calls.lock().unwrap().is_empty());
}
