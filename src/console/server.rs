//! The console's HTTP server (hyper 1, HTTP/1.1): connections, routing and the headers of
//! every answer. Each request passes [`super::auth`]'s checks in order — `Host`, `Origin`,
//! the session (or the token exchange), and for a `POST` the CSRF token — before any route.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /?token=T` | `303` to `/`, setting the session cookie |
//! | `GET /`, `/app.js`, `/style.css` | the page |
//! | `GET /api/runs` | every run ([`api::RunRow`]) |
//! | `GET /api/runs/RUN/requests` | its requests ([`api::RequestRow`]) |
//! | `GET /api/runs/RUN/audit` | the recent lines of its audit log |
//! | `GET /api/events?run=RUN` | the page's server-sent events ([`super::events`]) |
//! | `POST /api/runs/RUN/requests/ID` | `{"action":"approve"\|"deny"\|"answer","reason"?,"text"?}`: the answer, as `bottle supervise` gives it |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::api::{self, ApiError};
use super::auth::{Auth, Refusal};
use super::{events, page};
use crate::store::Store;

/// The largest body accepted (a reply with a reason or an answer).
pub const MAX_BODY: usize = 16 * 1024;
/// How long a body may take to arrive, and a request head.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once (each open page holds one for its events).
const MAX_CONNECTIONS: usize = 64;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One start of the console: the store it shows and the secrets of this start.
pub struct Console {
    store: Store,
    auth: Auth,
}

impl Console {
    /// A console for `store` listening on `addr` (its real port), with fresh secrets.
    pub fn new(store: Store, addr: SocketAddr) -> Console {
        Console {
            store,
            auth: Auth::new(addr),
        }
    }

    /// The URL that signs a browser in (it holds the token).
    pub fn url(&self) -> String {
        self.auth.url()
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(console: Arc<Console>, listener: TcpListener) -> Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .context("the console's listener failed")?;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let console = console.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let console = console.clone();
                async move { Ok::<_, Infallible>(handle(&console, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn answer(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(page::CSP),
    );
    r
}

fn text(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    answer(
        status,
        "text/plain; charset=utf-8",
        full(format!("{message}\n")),
    )
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("answers serialize");
    answer(status, "application/json", full(bytes))
}

fn error(e: ApiError) -> Response<Body> {
    json(e.status, &serde_json::json!({ "error": e.message }))
}

fn refused(r: Refusal) -> Response<Body> {
    let status = match r {
        Refusal::NoSession | Refusal::Token => StatusCode::UNAUTHORIZED,
        _ => StatusCode::FORBIDDEN,
    };
    text(status, r)
}

/// The checks, then the route.
async fn handle(console: &Console, req: Request<Incoming>) -> Response<Body> {
    let auth = &console.auth;
    let host = match auth.check_host(req.headers()) {
        Ok(h) => h,
        Err(r) => return refused(r),
    };
    let post = req.method() == Method::POST;
    if let Err(r) = auth.check_origin(req.headers(), &host, post) {
        return refused(r);
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    if req.method() == Method::GET && path == "/" {
        match auth.token_in(query.as_deref()) {
            Some(true) => {
                let mut r = text(StatusCode::SEE_OTHER, "signed in");
                let cookie = HeaderValue::from_str(&auth.set_cookie()).expect("a cookie header");
                r.headers_mut().insert(header::SET_COOKIE, cookie);
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/"));
                return r;
            }
            Some(false) => return refused(Refusal::Token),
            None => {}
        }
    }
    if !auth.has_session(req.headers()) {
        return refused(Refusal::NoSession);
    }
    if post {
        if let Err(r) = auth.check_csrf(req.headers()) {
            return refused(r);
        }
        return post_route(console, &path, req).await;
    }
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the console takes GET, and POST for replies",
        );
    }
    get_route(console, &path, query.as_deref())
}

fn get_route(console: &Console, path: &str, query: Option<&str>) -> Response<Body> {
    let store = &console.store;
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [""] => answer(
            StatusCode::OK,
            "text/html; charset=utf-8",
            full(page::index(console.auth.csrf())),
        ),
        ["app.js"] => answer(
            StatusCode::OK,
            "text/javascript; charset=utf-8",
            full(page::SCRIPT),
        ),
        ["style.css"] => answer(StatusCode::OK, "text/css; charset=utf-8", full(page::STYLE)),
        ["api", "runs"] => match api::runs(store) {
            Ok(rows) => json(StatusCode::OK, &rows),
            Err(e) => error(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{e:#}"),
            )),
        },
        ["api", "runs", run, "requests"] => match api::requests(store, run) {
            Ok(rows) => json(StatusCode::OK, &rows),
            Err(e) => error(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{e:#}"),
            )),
        },
        ["api", "runs", run, "audit"] => {
            let lines = api::audit_reader(store, run)
                .and_then(|mut r| r.read_new().ok())
                .unwrap_or_default();
            json(StatusCode::OK, &lines)
        }
        ["api", "events"] => {
            let run = query.and_then(|q| {
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .find(|(k, _)| *k == "run")
                    .map(|(_, v)| v.to_string())
            });
            let body = StreamBody::new(events::stream(store.clone(), run)).boxed_unsync();
            answer(StatusCode::OK, "text/event-stream", body)
        }
        _ => text(StatusCode::NOT_FOUND, format!("no page {path:?}")),
    }
}

async fn post_route(console: &Console, path: &str, req: Request<Incoming>) -> Response<Body> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["api", "runs", run, "requests", id] = parts.as_slice() else {
        return text(StatusCode::NOT_FOUND, format!("no action {path:?}"));
    };
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return error(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the reply as application/json",
        ));
    }
    let body = Limited::new(req.into_body(), MAX_BODY);
    let bytes = match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return error(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {MAX_BODY} bytes"),
            ));
        }
        Err(_) => {
            return error(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            ));
        }
    };
    let reply: api::ReplyBody = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return error(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a reply ({e}); send {{\"action\":\"approve\"|\"deny\"|\"answer\",\"reason\"?,\"text\"?}}"
                ),
            ));
        }
    };
    match api::reply(&console.store, run, id, reply) {
        Ok(view) => json(StatusCode::OK, &view),
        Err(e) => error(e),
    }
}
