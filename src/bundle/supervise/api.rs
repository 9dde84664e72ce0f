//! supervise's HTTP API on the bundle's address (the guest reaches it directly, not through
//! pipelock): JSON in, JSON out.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /v1/requests?wait=S` with `{"kind":"allow_host","host":H}`, `{"kind":"allow_dlp","rule":R,"value":V}` or `{"kind":"question","text":T}`, each with an optional `"why"` | `201` and the request once answered, or after `S` seconds (default [`DEFAULT_WAIT`], at most [`MAX_WAIT`]) still `pending`; `200` and the earlier request when the same one is pending (or the same grant approved) |
//! | `GET /v1/requests/ID?wait=S` | `200` and the request once answered, or after `S` seconds |
//! | `GET /v1/requests` | `200` and `{"requests": [...]}`, every request of the run |
//! | `GET /` | the guide (`SUPERVISE.md`), as text |
//!
//! A request is `{"id","kind",…what it asks…,"why"?,"time_ms","status","reason"?,"answer"?,
//! "answered_ms"?}` with `status` one of `pending`, `approved`, `denied`, `answered`.
//!
//! Bad input gets a 4xx whose JSON body says what was wrong and what to send
//! (`{"error": "..."}`), and the daemon serves on: a body that is not JSON, an unknown kind or
//! field, a field too long or a host that is not a name (400), a body over [`MAX_BODY`]
//! (413) or slower than [`BODY_TIMEOUT`] (408), more than
//! [`MAX_PENDING`](crate::daemons::supervise::MAX_PENDING) requests waiting
//! (429). A connection's head must arrive within [`HEAD_TIMEOUT`] and fit [`MAX_HEAD`];
//! past [`MAX_CONNECTIONS`] open connections, a new one gets a 503 and is closed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::service::{FileError, Service};
use crate::daemons::supervise::queue::Ask;
use crate::daemons::supervise::{DEFAULT_WAIT, MAX_TEXT, MAX_WAIT, guide};

/// The largest body accepted.
pub const MAX_BODY: usize = 16 * 1024;
/// How long a body may take to arrive.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request head may take to arrive (and a kept-alive connection stay idle).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most connections served at once (waiting requests hold theirs).
pub const MAX_CONNECTIONS: usize = 64;
/// The longest host name, DLP rule id, value, question and reason accepted, in bytes.
pub const MAX_HOST: usize = 253;
pub const MAX_RULE: usize = 64;
pub const MAX_VALUE: usize = 4096;
pub const MAX_WHY: usize = 1000;

/// What was wrong with a request to the API; its message is the `error` of the JSON answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "the body is not JSON ({0}); send one object, e.g. {{\"kind\":\"question\",\"text\":\"Which branch should I push to?\"}}"
    )]
    NotJson(String),
    #[error(
        "the body must be a JSON object with a \"kind\": \"allow_host\", \"allow_dlp\" or \"question\""
    )]
    NoKind,
    #[error("unknown kind {0:?}: supervise takes \"allow_host\", \"allow_dlp\" and \"question\"")]
    UnknownKind(String),
    #[error("{kind} takes {takes}; not {field:?}")]
    UnknownField {
        kind: &'static str,
        field: String,
        takes: &'static str,
    },
    #[error("{kind} needs {field:?}, a string")]
    Missing {
        kind: &'static str,
        field: &'static str,
    },
    #[error("{field:?} must be a string")]
    NotString { field: String },
    #[error("{field:?} is {len} bytes; it may be at most {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field:?} is empty")]
    Empty { field: &'static str },
    #[error("{host:?} is not a host name ({why}); ask for one exact name, like \"pypi.org\"")]
    BadHost { host: String, why: &'static str },
    #[error(
        "{0:?} is not a DLP rule id (lowercase letters, digits and '-'); use the rule pipelock's 403 names"
    )]
    BadRule(String),
    #[error("the body is over {MAX_BODY} bytes")]
    TooLarge,
    #[error("the body did not arrive within {} s", BODY_TIMEOUT.as_secs())]
    BodyTimeout,
    #[error("wait must be a whole number of seconds from 0 to {MAX_WAIT}, not {0:?}")]
    BadWait(String),
    #[error("this run has no request {0:?}; GET /v1/requests lists its requests")]
    NoSuchRequest(String),
    #[error("there is no {0}; GET / describes the API")]
    NotFound(String),
    #[error("{method} is not served on {path}; it takes {allow}")]
    Method {
        method: String,
        path: String,
        allow: &'static str,
    },
    #[error(transparent)]
    File(#[from] FileError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NoSuchRequest(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Method { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::File(FileError::TooManyPending { .. } | FileError::Full) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::File(FileError::Queue(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

type Reply = Response<Full<Bytes>>;

/// Serves the API on `listener` until the task is dropped.
pub async fn serve(service: Arc<Service>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let mut stream = crate::bundle::serve::accept(&listener, "supervise").await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let body = error_body(&format!(
                    "supervise is busy: {MAX_CONNECTIONS} connections are open; try again"
                ));
                let head = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(route(&service, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            drop(slot);
        });
    }
}

/// One request to the API.
pub async fn route(service: &Service, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let wait = match wait_of(req.uri().query()) {
        Ok(w) => w,
        Err(e) => return error(&e),
    };
    let method = req.method().clone();
    let answered = match (parts.as_slice(), &method) {
        ([], &Method::GET) | (["v1"], &Method::GET) => return guide_reply(),
        (["v1", "requests"], &Method::POST) => post(service, req, wait).await,
        (["v1", "requests"], &Method::GET) => Ok(list(service)),
        (["v1", "requests", id], &Method::GET) => get(service, id, wait).await,
        ([] | ["v1"] | ["v1", "requests", _], _) => Err(ApiError::Method {
            method: method.to_string(),
            path,
            allow: "GET",
        }),
        (["v1", "requests"], _) => Err(ApiError::Method {
            method: method.to_string(),
            path,
            allow: "GET and POST",
        }),
        _ => Err(ApiError::NotFound(path)),
    };
    answered.unwrap_or_else(|e| error(&e))
}

async fn post(
    service: &Service,
    req: Request<Incoming>,
    wait: Duration,
) -> Result<Reply, ApiError> {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::TooLarge);
    }
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    .map_err(|_| ApiError::BodyTimeout)?;
    let body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(ApiError::TooLarge),
        Err(e) => {
            return Err(ApiError::NotJson(format!(
                "the body could not be read: {e}"
            )));
        }
    };
    let (ask, why) = parse(&body)?;
    let (view, created) = service.file(ask, why)?;
    let view = service.wait(&view.request.id, wait).await.unwrap_or(view);
    let mut reply = json_reply(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        &view,
    );
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/requests/{}", view.request.id)) {
        reply.headers_mut().insert(header::LOCATION, v);
    }
    Ok(reply)
}

async fn get(service: &Service, id: &str, wait: Duration) -> Result<Reply, ApiError> {
    match service.wait(id, wait).await {
        Some(view) => Ok(json_reply(StatusCode::OK, &view)),
        None => Err(ApiError::NoSuchRequest(id.to_string())),
    }
}

fn list(service: &Service) -> Reply {
    json_reply(
        StatusCode::OK,
        &serde_json::json!({ "requests": service.views() }),
    )
}

/// `?wait=SECONDS`: how long to wait for an answer.
fn wait_of(query: Option<&str>) -> Result<Duration, ApiError> {
    let given = query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("wait="))
        .next_back();
    let secs = match given {
        None => DEFAULT_WAIT,
        Some(s) => s
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_WAIT)
            .ok_or_else(|| ApiError::BadWait(s.to_string()))?,
    };
    Ok(Duration::from_secs(secs))
}

/// A filing's body: the ask and its optional `why`, checked.
pub fn parse(body: &[u8]) -> Result<(Ask, Option<String>), ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ApiError::NoKind);
    };
    let kind = match map.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        _ => return Err(ApiError::NoKind),
    };
    let (kind, fields, takes): (&'static str, &[&str], &'static str) = match kind {
        "allow_host" => ("allow_host", &["host"], "\"host\" and \"why\""),
        "allow_dlp" => (
            "allow_dlp",
            &["rule", "value"],
            "\"rule\", \"value\" and \"why\"",
        ),
        "question" => ("question", &["text"], "\"text\" and \"why\""),
        other => return Err(ApiError::UnknownKind(other.to_string())),
    };
    if let Some(field) = map
        .keys()
        .find(|k| *k != "kind" && *k != "why" && !fields.contains(&k.as_str()))
    {
        return Err(ApiError::UnknownField {
            kind,
            field: field.clone(),
            takes,
        });
    }
    let why = optional(&map, "why", MAX_WHY)?;
    let ask = match kind {
        "allow_host" => Ask::AllowHost {
            host: host(&required(&map, kind, "host", MAX_HOST)?)?,
        },
        "allow_dlp" => Ask::AllowDlp {
            rule: rule(required(&map, kind, "rule", MAX_RULE)?)?,
            value: required(&map, kind, "value", MAX_VALUE)?,
        },
        _ => Ask::Question {
            text: required(&map, kind, "text", MAX_TEXT)?,
        },
    };
    Ok((ask, why))
}

fn required(
    map: &Map<String, Value>,
    kind: &'static str,
    field: &'static str,
    max: usize,
) -> Result<String, ApiError> {
    optional(map, field, max)?.ok_or(ApiError::Missing { kind, field })
}

fn optional(
    map: &Map<String, Value>,
    field: &'static str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err(ApiError::Empty { field }),
        Some(Value::String(s)) if s.len() > max => Err(ApiError::TooLong {
            field,
            len: s.len(),
            max,
        }),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::NotString {
            field: field.to_string(),
        }),
    }
}

/// An exact host name (or IPv4 address), lowercased, without a trailing dot.
fn host(given: &str) -> Result<String, ApiError> {
    let bad = |why| ApiError::BadHost {
        host: given.to_string(),
        why,
    };
    let h = given.trim().to_ascii_lowercase();
    let h = h.strip_suffix('.').unwrap_or(&h);
    if h.contains('*') {
        return Err(bad("wildcards are not granted"));
    }
    if h.contains("://") || h.contains('/') || h.contains(':') {
        return Err(bad("give the name only: no scheme, port or path"));
    }
    if !h.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
    }) {
        return Err(bad("letters, digits, '.', '-' and '_' only"));
    }
    if h.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(bad("each dot-separated label has 1 to 63 characters"));
    }
    Ok(h.to_string())
}

fn rule(r: String) -> Result<String, ApiError> {
    let ok = r
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok { Ok(r) } else { Err(ApiError::BadRule(r)) }
}

fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    let mut bytes = serde_json::to_vec(value).expect("API answers serialize");
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_body(message: &str) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&serde_json::json!({ "error": message })).expect("JSON");
    bytes.push(b'\n');
    bytes
}

fn error(e: &ApiError) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(error_body(&e.to_string()))));
    *r.status_mut() = e.status();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn guide_reply() -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(guide::text(None))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/markdown; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn filings_parse_into_asks() {
        let (a, why) =
            parse(br#"{"kind":"allow_host","host":"PyPI.org.","why":"pip install"}"#).unwrap();
        assert_eq!(
            a,
            Ask::AllowHost {
                host: "pypi.org".into()
            }
        );
        assert_eq!(why.as_deref(), Some("pip install"));
        let (a, _) = parse(br#"{"kind":"allow_dlp","rule":"jwt","value":"x.y.z"}"#).unwrap();
        assert_eq!(a.kind(), "allow_dlp");
        let (a, why) = parse(br#"{"kind":"question","text":"which?","why":null}"#).unwrap();
        assert_eq!(a.kind(), "question");
        assert_eq!(why, None);
    }

    #[test]
    fn bad_filings_say_what_to_send() {
        assert!(err("{bad").contains("not JSON"));
        assert!(err("[1]").contains("\"kind\""));
        assert!(err(r#"{"kind":"allow_everything"}"#).contains("unknown kind"));
        let e = err(r#"{"kind":"allow_host","hots":"a.test"}"#);
        assert!(e.contains("\"hots\"") && e.contains("\"host\""), "{e}");
        assert!(err(r#"{"kind":"allow_host"}"#).contains("needs \"host\""));
        assert!(err(r#"{"kind":"allow_host","host":7}"#).contains("must be a string"));
        assert!(err(r#"{"kind":"allow_host","host":"*.a.test"}"#).contains("wildcards"));
        assert!(err(r#"{"kind":"allow_host","host":"https://a.test/"}"#).contains("scheme"));
        assert!(err(r#"{"kind":"allow_host","host":"a..test"}"#).contains("label"));
        assert!(err(r#"{"kind":"allow_dlp","rule":"Bad Rule","value":"v"}"#).contains("rule id"));
        assert!(err(r#"{"kind":"question","text":"  "}"#).contains("empty"));
        let long = format!(
            r#"{{"kind":"question","text":"{}"}}"#,
            "x".repeat(MAX_TEXT + 1)
        );
        assert!(err(&long).contains("at most 4000"));
    }

    #[test]
    fn waits_are_bounded() {
        assert_eq!(wait_of(None).unwrap().as_secs(), DEFAULT_WAIT);
        assert_eq!(wait_of(Some("wait=0")).unwrap().as_secs(), 0);
        assert_eq!(wait_of(Some("x=1&wait=300")).unwrap().as_secs(), 300);
        assert!(wait_of(Some("wait=301")).is_err());
        assert!(wait_of(Some("wait=-1")).is_err());
        assert!(wait_of(Some("wait=soon")).is_err());
    }
}
