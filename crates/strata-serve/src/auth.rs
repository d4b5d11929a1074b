//! The gate every request passes:
//!
//! - with a token, the request must carry it: `Authorization: Bearer T`, or the cookie
//!   `strata_token` that `GET /?token=T` sets (the page's own requests, `<img>` and the event
//!   stream, carry the cookie); compared in constant time;
//! - without a token (loopback only), the `Host` header must name a loopback host, so a web
//!   page elsewhere cannot reach the server through DNS rebinding;
//! - a body over the size limit gets a JSON message like every other error.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::ApiError;
use crate::AppState;

pub const COOKIE: &str = "strata_token";

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_token(req: &Request) -> Option<String> {
    for v in req.headers().get_all(header::COOKIE) {
        for part in v.to_str().ok()?.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == COOKIE {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
}

fn bearer_token(req: &Request) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|s| s.trim().to_string())
}

fn query_token(req: &Request) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    matches!(name, "127.0.0.1" | "localhost" | "::1") || name.starts_with("127.")
}

pub async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match &st.cfg.token {
        Some(token) => {
            let t = token.as_bytes();
            let ok = bearer_token(&req).is_some_and(|b| ct_eq(b.as_bytes(), t))
                || cookie_token(&req).is_some_and(|c| ct_eq(c.as_bytes(), t));
            if !ok {
                if let Some(q) = query_token(&req) {
                    if ct_eq(q.as_bytes(), t) && req.method() == axum::http::Method::GET {
                        // set the cookie and drop the token from the address bar
                        let mut r = (StatusCode::SEE_OTHER, "").into_response();
                        let h = r.headers_mut();
                        h.insert(
                            header::LOCATION,
                            HeaderValue::from_str(req.uri().path())
                                .unwrap_or(HeaderValue::from_static("/")),
                        );
                        if let Ok(v) = HeaderValue::from_str(&format!(
                            "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
                        )) {
                            h.insert(header::SET_COOKIE, v);
                        }
                        return r;
                    }
                }
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "this server needs its token: open the address `strata serve` printed (it ends in ?token=...), or send `Authorization: Bearer TOKEN`",
                )
                .into_response();
            }
        }
        None => {
            let host = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            if !loopback_host(host) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("Host {host:?} is not a loopback name; this server (no --token) answers only http://127.0.0.1 / localhost"),
                )
                .into_response();
            }
        }
    }
    let r = next.run(req).await;
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        let l = &st.cfg.limits;
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body too large: uploads are limited to {} bytes, other requests to {} bytes",
                l.upload_bytes, l.body_bytes
            ),
        )
        .into_response();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(loopback_host("127.0.0.1:7860"));
        assert!(loopback_host("localhost"));
        assert!(loopback_host("[::1]:80"));
        assert!(!loopback_host("evil.example:7860"));
        assert!(!loopback_host(""));
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("a%2Fb+c"), "a/b c");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
