//! The layer that makes every call end with a status its caller can act on: the
//! deadline (the caller's `grpc-timeout` or the server's own `server.request_timeout_ms`,
//! whichever is sooner) answers DEADLINE_EXCEEDED; bytes that are not the request message
//! answer INVALID_ARGUMENT (MALFORMED_REQUEST) rather than tonic's INTERNAL; a request
//! that never arrived whole (the client went away) is CANCELLED rather than UNKNOWN.
use std::{
    collections::HashMap,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::{FutureExt, future::BoxFuture};
use tonic::{Code, Status, body::Body};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use crate::error::ERROR_DOMAIN;

/// Answers this long before the caller's own deadline, so that the status reaches it
/// before its client gives up, and before tonic's timer (which would say CANCELLED).
const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

#[derive(Clone)]
pub struct FaultLayer {
    /// The server's own bound on a call.
    pub timeout: Duration,
}

impl<S> Layer<S> for FaultLayer {
    type Service = Faults<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Faults {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Clone)]
pub struct Faults<S> {
    inner: S,
    timeout: Duration,
}

/// A status with an `ErrorInfo` of this service's domain.
pub(crate) fn status(code: Code, reason: &str, message: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(code, message, details)
}

/// The caller's deadline (`grpc-timeout`: an integer and a unit), if it sent one.
fn caller_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let raw = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok().filter(|_| digits.len() <= 8)?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What tonic says when the request's bytes are not the method's message.
fn is_malformed(message: &str) -> bool {
    const PREFIXES: [&str; 6] = [
        "failed to decode Protobuf message",
        "protocol error:",
        "Missing request message",
        "Unexpected EOF decoding stream",
        "Error decompressing",
        "Error decoding",
    ];
    PREFIXES.iter().any(|p| message.starts_with(p))
}

/// The status tonic put in a trailers-only response, replaced where it would mislead.
fn normalised(headers: &http::HeaderMap, method: &str) -> Option<Status> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decoded)
        .unwrap_or_default();
    match Code::from_i32(code) {
        Code::Internal if is_malformed(&message) => {
            tracing::debug!(method, %message, "malformed request");
            Some(status(
                Code::InvalidArgument,
                "MALFORMED_REQUEST",
                "the request is not a valid message of this method",
            ))
        }
        Code::OutOfRange if message.contains("message length too large") => Some(status(
            Code::ResourceExhausted,
            "REQUEST_TOO_LARGE",
            "the request is larger than server.max_request_bytes",
        )),
        Code::Unimplemented if message.contains("compressed") => Some(status(
            Code::Unimplemented,
            "COMPRESSION_UNSUPPORTED",
            "compressed requests are not accepted; send them uncompressed",
        )),
        // Only tonic answers UNKNOWN: reading the request failed, because the client
        // reset the stream or closed the connection.
        Code::Unknown => {
            tracing::debug!(method, %message, "the client went away during the call");
            Some(status(
                Code::Cancelled,
                "CANCELLED",
                "the request did not arrive whole",
            ))
        }
        _ => None,
    }
}

/// `grpc-message` is percent-encoded.
fn percent_decoded(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = raw.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<S> Service<http::Request<Body>> for Faults<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let caller = caller_timeout(request.headers());
        let ours = caller.is_none_or(|c| self.timeout < c);
        let limit = match caller {
            Some(c) if !ours => c.saturating_sub(DEADLINE_MARGIN),
            _ => self.timeout,
        };
        // Taken now, before tonic starts its own timer for the caller's deadline.
        let deadline = tokio::time::Instant::now() + limit;
        // A panic is a bug of ours: the caller gets INTERNAL (not a reset stream), and the
        // connection and the other calls on it carry on.
        let future = std::panic::AssertUnwindSafe(self.inner.call(request)).catch_unwind();
        Box::pin(async move {
            match tokio::time::timeout_at(deadline, future).await {
                Ok(Err(panic)) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(method, panic = %what, "call panicked");
                    Ok(status(Code::Internal, "INTERNAL", "internal error").into_http())
                }
                Ok(Ok(Ok(response))) => Ok(match normalised(response.headers(), &method) {
                    Some(status) => status.into_http(),
                    None => response,
                }),
                Ok(Ok(Err(e))) => Err(e),
                Err(_) => {
                    if ours {
                        tracing::warn!(
                            method,
                            timeout_ms = limit.as_millis(),
                            "call ran out of the server's time (server.request_timeout_ms)"
                        );
                    } else {
                        tracing::debug!(method, "call ran out of the caller's deadline");
                    }
                    Ok(status(
                        Code::DeadlineExceeded,
                        "DEADLINE_EXCEEDED",
                        "the call did not finish within its deadline",
                    )
                    .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_unit_of_grpc_timeout() {
        let at = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().expect("header"));
            caller_timeout(&h)
        };
        assert_eq!(at("3S"), Some(Duration::from_secs(3)));
        assert_eq!(at("250m"), Some(Duration::from_millis(250)));
        assert_eq!(at("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(at("100u"), Some(Duration::from_micros(100)));
        assert_eq!(at("123456789S"), None);
        assert_eq!(at("S"), None);
        assert_eq!(at("5x"), None);
    }

    #[test]
    fn decodes_grpc_message() {
        assert_eq!(
            percent_decoded("failed to decode Protobuf message: x%3A y%"),
            "failed to decode Protobuf message: x: y%"
        );
    }
}
