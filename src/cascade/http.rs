//! A minimal blocking HTTP/1.1 client for the remote large-model backend: one POST per
//! request, `Connection: close`, content-length or chunked bodies, one overall deadline.
//! Plain `http://` only (put a TLS-terminating proxy in front of a remote https server).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest response body accepted.
const MAX_BODY: usize = 4 << 20;

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address.
    pub host: String,
    /// Port (default 80).
    pub port: u16,
    /// Path with query (default `/`).
    pub path: String,
}

impl Url {
    /// Parses a URL; only `http://` is supported.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                "https is not supported; use http:// (behind a TLS proxy if remote)".to_string()
            } else {
                "expected a URL such as http://127.0.0.1:8080/v1/chat/completions".to_string()
            }
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("port {p:?} is not a number"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        Ok(Self {
            host: host.into(),
            port,
            path: path.into(),
        })
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// Transport failures.
#[derive(Debug)]
pub enum HttpError {
    /// The deadline passed.
    Timeout,
    /// Anything else (connection refused, reset, bad response).
    Other(String),
}

fn io(e: std::io::Error) -> HttpError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout,
        _ => HttpError::Other(e.to_string()),
    }
}

/// POSTs a JSON body; the whole exchange must finish within `timeout`.
pub fn post_json(
    url: &str,
    body: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let u = Url::parse(url).map_err(HttpError::Other)?;
    let deadline = Instant::now() + timeout;
    let addr = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .map_err(|e| HttpError::Other(format!("cannot resolve {}: {e}", u.host)))?
        .next()
        .ok_or_else(|| HttpError::Other(format!("{} has no address", u.host)))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(HttpError::Timeout)
    };
    s.set_write_timeout(Some(left()?)).map_err(io)?;
    let auth = bearer
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nAccept: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        u.path,
        u.host,
        u.port,
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(io)?;
    s.write_all(body.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        s.set_read_timeout(Some(left()?)).map_err(io)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_BODY {
                    return Err(HttpError::Other("response larger than 4 MiB".into()));
                }
                if complete(&raw) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    parse_response(&raw).map_err(HttpError::Other)
}

fn split_head(raw: &[u8]) -> Option<(&str, &[u8])> {
    let i = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((std::str::from_utf8(&raw[..i]).ok()?, &raw[i + 4..]))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether a full response (by content-length or final chunk) has arrived.
fn complete(raw: &[u8]) -> bool {
    let Some((head, body)) = split_head(raw) else {
        return false;
    };
    if let Some(n) = header(head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        return body.len() >= n;
    }
    header(head, "transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        && body.ends_with(b"0\r\n\r\n")
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let i = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk header")?;
        let size_txt = std::str::from_utf8(&body[..i]).map_err(|_| "bad chunk header")?;
        let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_txt:?}"))?;
        body = &body[i + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// Parses a raw HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let (head, body) = split_head(raw).ok_or("the connection closed before a full response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {:?}", head.lines().next().unwrap_or("")))?;
    let body = if header(head, "transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)?
    } else if let Some(n) = header(head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() < n {
            return Err(format!("body truncated at {} of {n} bytes", body.len()));
        }
        body[..n].to_vec()
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://127.0.0.1:8080/v1/chat/completions").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/v1/chat/completions")
        );
        assert_eq!(Url::parse("http://h").unwrap().path, "/");
        assert!(Url::parse("https://h/").unwrap_err().contains("https"));
        assert!(Url::parse("ftp://h/").is_err());
        assert!(Url::parse("http://h:x/").unwrap_err().contains("port"));
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert!(complete(c));
        assert_eq!(parse_response(c).unwrap().body, "abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(parse_response(b"garbage").is_err());
    }
}
