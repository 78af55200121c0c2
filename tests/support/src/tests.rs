//! Tests of the client against a raw HTTP server on a unix socket, so the exact bytes on the
//! wire (sized, chunked, streamed, stalled) are under the test's control.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::{UnixListener, UnixStream},
    sync::mpsc,
    thread,
};

use super::*;

/// A request as the server saw it.
#[derive(Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

fn read_request(stream: &UnixStream) -> Seen {
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Seen { head, body }
}

/// Serves one connection with `respond` and sends what the request looked like.
fn serve_once(
    respond: impl FnOnce(&mut UnixStream) + Send + 'static,
) -> (tempfile::TempDir, PathBuf, mpsc::Receiver<Seen>) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let seen = read_request(&stream);
        tx.send(seen).unwrap();
        respond(&mut stream);
    });
    (dir, socket, rx)
}

#[test]
fn sends_method_path_headers_and_json_and_reads_a_sized_answer() {
    let (_dir, socket, seen) = serve_once(|s| {
        s.write_all(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"Id\":\"x\"}\n")
            .unwrap();
    });
    let response = Request::new("POST", "/v1.41/volumes/create?x=1")
        .header("X-Test", "yes")
        .json(&serde_json::json!({"Name": "v"}))
        .send(&socket)
        .unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.header("content-type"), Some("application/json"));
    assert_eq!(response.json().unwrap(), serde_json::json!({"Id": "x"}));

    let seen = seen.recv().unwrap();
    assert!(
        seen.head
            .starts_with("POST /v1.41/volumes/create?x=1 HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    let head = seen.head.to_ascii_lowercase();
    assert!(head.contains("x-test: yes"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(head.contains("host: plugind"), "{head}");
    assert_eq!(seen.body, br#"{"Name":"v"}"#);
}

#[test]
fn a_chunked_answer_is_read_to_the_end_and_decoded() {
    let (_dir, socket, _seen) = serve_once(|s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for piece in ["{\"a\":1}\n", "{\"b\"", ":2}\n"] {
            write!(s, "{:x}\r\n{piece}\r\n", piece.len()).unwrap();
            s.flush().unwrap();
        }
        s.write_all(b"0\r\n\r\n").unwrap();
    });
    let response = request(&socket, "GET", "/events", None).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "{\"a\":1}\n{\"b\":2}\n");
}

#[test]
fn an_answer_ended_by_close_is_read_to_the_end() {
    let (_dir, socket, _seen) = serve_once(|s| {
        s.write_all(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n{\"message\":\"no\"}")
            .unwrap();
    });
    let response = request(&socket, "GET", "/plugins/x/json", None).unwrap();
    assert_eq!(response.status, 404);
    assert_eq!(response.text(), r#"{"message":"no"}"#);
}

#[test]
fn lines_are_handed_over_as_they_arrive_and_the_caller_can_stop() {
    let (go_on_tx, go_on_rx) = mpsc::channel::<()>();
    let (_dir, socket, _seen) = serve_once(move |s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        s.write_all(b"6\r\nline1\n\r\n").unwrap();
        s.flush().unwrap();
        // The second line only comes once the client has seen the first: a client that
        // waited for the end of the body would never get here.
        go_on_rx.recv().unwrap();
        s.write_all(b"c\r\nline2\r\nline3\r\n").unwrap();
        // The body never ends: the caller stops after line2.
        let _ = go_on_rx.recv();
    });
    let mut lines = Vec::new();
    let status = stream_lines(&socket, &Request::new("GET", "/events"), |line| {
        lines.push(line.to_owned());
        go_on_tx.send(()).unwrap();
        lines.len() < 2
    })
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(lines, ["line1", "line2"]);
}

#[test]
fn a_last_line_without_newline_is_handed_over_at_the_end() {
    let (_dir, socket, _seen) = serve_once(|s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\na\nb\nend")
            .unwrap();
    });
    let mut lines = Vec::new();
    stream_lines(&socket, &Request::new("GET", "/x"), |l| {
        lines.push(l.to_owned());
        true
    })
    .unwrap();
    assert_eq!(lines, ["a", "b", "end"]);
}

#[test]
fn a_stalled_answer_times_out_with_a_typed_error() {
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    let (_dir, socket, _seen) = serve_once(move |s| {
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        // Keep the connection open and silent until the client gave up.
        let _ = hold_rx.recv();
    });
    let err = Request::new("GET", "/slow")
        .timeout(Duration::from_millis(200))
        .send(&socket)
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                what: "the next body piece",
                ..
            }
        ),
        "{err:?}"
    );
    drop(hold_tx);
}

#[test]
fn a_missing_socket_is_a_connect_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let err = request(&socket, "GET", "/_ping", None).unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("none.sock"), "{err}");
}

#[test]
fn a_bad_header_is_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let err = Request::new("GET", "/")
        .header("Bad Header", "x")
        .send(&dir.path().join("none.sock"))
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err:?}");
}
