//! Driving a function's router in process with `oneshot` (no socket).

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

/// One answer of a router.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Sends `req` to `app`; the body is parsed as JSON (`Null` when it is not).
pub async fn call(app: &axum::Router, req: Request<Body>) -> Answer {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// Asserts an RFC 9457 problem: the status, `application/problem+json`, the type
/// `/problems/{slug}`, the status again in the body, and a detail to read.
pub fn assert_problem(a: &Answer, status: u16, slug: &str) {
    assert_eq!(a.status.as_u16(), status, "{:?}", a.body);
    assert_eq!(a.headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(a.body["type"], format!("/problems/{slug}"), "{:?}", a.body);
    assert_eq!(a.body["status"], status);
    assert!(a.body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}
