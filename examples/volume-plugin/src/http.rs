//! Minimal HTTP/1.1 server side for the plugin protocol: read one request (Content-Length or
//! chunked body), write one response. Only what Docker's plugin client sends is supported.

use std::io::{self, BufRead, Read, Write};

/// Upper bound for the request line plus headers: plugin requests have a handful of short headers.
const MAX_HEAD: usize = 64 * 1024;
/// Upper bound for a request body: plugin requests are small JSON objects.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// One parsed request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// Whether the connection must be closed after the response (HTTP/1.0 or `Connection: close`).
    pub close: bool,
}

/// Why reading a request failed: the client went away or sent something unusable.
#[derive(Debug)]
pub enum ReadError {
    /// Clean end of stream before a new request began (keep-alive connection closed).
    Eof,
    Io(io::Error),
    /// A malformed request; answered with 400 and the connection is closed.
    Bad(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn read_line(r: &mut impl BufRead, budget: &mut usize) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n > *budget {
        return Err(ReadError::Bad("request head too large".into()));
    }
    *budget -= n;
    if n == 0 {
        return Err(ReadError::Eof);
    }
    if !buf.ends_with(b"\n") {
        return Err(ReadError::Bad("truncated request head".into()));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| ReadError::Bad("request head is not utf-8".into()))
}

/// Reads one request from `r`.
pub fn read_request(r: &mut impl BufRead) -> Result<Request, ReadError> {
    let mut budget = MAX_HEAD;
    let line = read_line(r, &mut budget)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!("bad request line {line:?}")));
    };
    let mut close = version == "HTTP/1.0";
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    loop {
        let line = match read_line(r, &mut budget) {
            Err(ReadError::Eof) => return Err(ReadError::Bad("truncated request head".into())),
            other => other?,
        };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(format!("bad header line {line:?}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value
                    .parse::<usize>()
                    .map_err(|_| ReadError::Bad(format!("bad content-length {value:?}")))?;
                content_length = Some(n);
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(r)?
    } else {
        let n = content_length.unwrap_or(0);
        if n > MAX_BODY {
            return Err(ReadError::Bad(format!("body of {n} bytes is too large")));
        }
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        body
    };
    // Keep only the path; plugin calls carry no query string worth reading.
    let path = target.split('?').next().unwrap_or(target).to_string();
    Ok(Request {
        method: method.to_string(),
        path,
        body,
        close,
    })
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    let mut budget = MAX_HEAD;
    loop {
        let line = read_line(r, &mut budget)?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| ReadError::Bad(format!("bad chunk size {size_hex:?}")))?;
        if size == 0 {
            // Skip trailers up to the blank line.
            while !read_line(r, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(ReadError::Bad("chunked body is too large".into()));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ReadError::Bad("chunk not followed by CRLF".into()));
        }
    }
}

/// The content type of every plugin response.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// Writes one response with a JSON body.
pub fn write_response(w: &mut impl Write, status: u16, body: &[u8], close: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Request, ReadError> {
        read_request(&mut io::BufReader::new(raw.as_bytes()))
    }

    #[test]
    fn content_length_body_and_keep_alive() {
        let r = parse("POST /VolumeDriver.Get HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\n\r\n{\"Name\":\"v\"}\n").unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/VolumeDriver.Get");
        assert_eq!(r.body, b"{\"Name\":\"v\"}\n");
        assert!(!r.close);
    }

    #[test]
    fn chunked_body_and_close() {
        let r = parse(
            "POST /a?x=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;ext\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.path, "/a");
        assert_eq!(r.body, b"abcde");
        assert!(r.close);
    }

    #[test]
    fn http10_closes_and_empty_input_is_eof() {
        assert!(parse("POST / HTTP/1.0\r\n\r\n").unwrap().close);
        assert!(matches!(parse(""), Err(ReadError::Eof)));
        assert!(matches!(parse("garbage\r\n\r\n"), Err(ReadError::Bad(_))));
        assert!(matches!(
            parse("POST / HTTP/1.1\r\nContent-Length: zz\r\n\r\n"),
            Err(ReadError::Bad(_))
        ));
    }

    #[test]
    fn response_has_length_and_type() {
        let mut out = Vec::new();
        write_response(&mut out, 404, b"{}", true).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Content-Length: 2\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\n{}"));
    }
}
