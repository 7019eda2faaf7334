//! The HTTP client of the remote large-model backend, on `ureq` (rustls for `https://`,
//! proxies from the usual environment variables): one JSON POST per request with one
//! overall deadline, and the answer's status and body.

use std::time::Duration;

/// Largest response body accepted.
const MAX_BODY: u64 = 4 << 20;

/// A response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// Status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// Transport failures.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// The deadline passed.
    Timeout,
    /// Anything else (bad URL, connection refused, reset, bad response).
    Other(String),
}

/// POSTs a JSON body; the whole exchange must finish within `timeout`.
pub(crate) fn post_json(
    url: &str,
    body: &str,
    bearer: Option<&str>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .post(url)
        .header("Accept", "application/json")
        .content_type("application/json");
    if let Some(k) = bearer {
        req = req.header("Authorization", format!("Bearer {k}"));
    }
    let mut resp = req.send(body).map_err(transport)?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(transport)?;
    Ok(Response { status, body })
}

fn transport(e: ureq::Error) -> HttpError {
    match e {
        ureq::Error::Timeout(_) => HttpError::Timeout,
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) =>
        {
            HttpError::Timeout
        }
        other => HttpError::Other(other.to_string()),
    }
}
