//! The gateway between an SDK client and moto: CloudWatch's RPC v2 CBOR
//! requests are translated to the JSON protocol (see [`crate::cbor`]), every
//! other request (ELBv2 and EC2 speak the query protocol, which moto serves)
//! passes through untouched. Every call is counted by service and operation,
//! and a share of them can be failed the ways AWS fails: throttled (400
//! `Throttling` / `ThrottlingException`), unavailable (503), or answered 500
//! after moto has done the work (the response lost on the way back).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use rollout_sim::Rng;

use crate::cbor;

const CBOR_PREFIX: &str = "/service/GraniteServiceVersion20100801/operation/";

/// What the gateway saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Calls {
    /// Requests by `(service, operation)`, faults included.
    pub by_operation: BTreeMap<(String, String), u64>,
    /// Requests failed on purpose.
    pub injected: u64,
    /// Requests by `(region, service, operation)`, from the SigV4
    /// credential scope (the region the client signed for).
    pub by_region: BTreeMap<(String, String, String), u64>,
}

impl Calls {
    /// Requests of one operation.
    pub fn count(&self, service: &str, operation: &str) -> u64 {
        self.by_operation
            .get(&(service.to_string(), operation.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

struct State {
    moto: String,
    agent: ureq::Agent,
    fault_permille: AtomicU32,
    /// Throttle this share of ELBv2 calls (and nothing else).
    elb_throttle_permille: AtomicU32,
    /// Every call's time (since the gateway started), service and operation.
    log: Mutex<Vec<(f64, String, String)>>,
    started: std::time::Instant,
    injected: AtomicU64,
    calls: Mutex<BTreeMap<(String, String), u64>>,
    regions: Mutex<BTreeMap<(String, String, String), u64>>,
    rng: Mutex<Rng>,
    /// Every `GetMetricData` answer carries a `NextToken` (a misbehaving
    /// service that never ends its pages).
    endless_pages: std::sync::atomic::AtomicBool,
}

/// A running gateway.
pub struct Gateway {
    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT_URL`.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gateway {
    /// Starts a gateway in front of moto at `moto` (its URL).
    pub async fn start(moto: &str, seed: u64) -> anyhow::Result<Gateway> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        let state = Arc::new(State {
            moto: moto.trim_end_matches('/').to_string(),
            agent,
            fault_permille: AtomicU32::new(0),
            elb_throttle_permille: AtomicU32::new(0),
            log: Mutex::new(Vec::new()),
            started: std::time::Instant::now(),
            injected: AtomicU64::new(0),
            calls: Mutex::new(BTreeMap::new()),
            regions: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(Rng::new(seed)),
            endless_pages: std::sync::atomic::AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().fallback({
            let state = Arc::clone(&state);
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&state);
                async move { handle(state, method, uri, headers, body).await }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Gateway { url, state, task })
    }

    /// Fails this share of calls from now on (0.0 to 1.0).
    pub fn set_fault_rate(&self, rate: f64) {
        let permille = (rate.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self.state.fault_permille.store(permille, Ordering::SeqCst);
    }

    /// From now on, every `GetMetricData` answer says there is another
    /// page (`NextToken`), or again behaves.
    pub fn set_endless_metric_pages(&self, on: bool) {
        self.state.endless_pages.store(on, Ordering::SeqCst);
    }

    /// Answers this share of ELBv2 calls with `Throttling` (AWS's answer when
    /// the account's bucket is empty), from now on.
    pub fn set_elb_throttle_rate(&self, rate: f64) {
        let permille = (rate.clamp(0.0, 1.0) * 1000.0).round() as u32;
        self.state
            .elb_throttle_permille
            .store(permille, Ordering::SeqCst);
    }

    /// Every call so far: seconds since the gateway started, service,
    /// operation (throttled ones included).
    pub fn log(&self) -> Vec<(f64, String, String)> {
        self.state.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Seconds since the gateway started (the clock of [`Gateway::log`]).
    pub fn elapsed(&self) -> f64 {
        self.state.started.elapsed().as_secs_f64()
    }

    /// The calls so far.
    pub fn calls(&self) -> Calls {
        Calls {
            by_operation: self
                .state
                .calls
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default(),
            injected: self.state.injected.load(Ordering::SeqCst),
            by_region: self
                .state
                .regions
                .lock()
                .map(|c| c.clone())
                .unwrap_or_default(),
        }
    }

    /// Forgets the calls so far.
    pub fn reset_calls(&self) {
        if let Ok(mut c) = self.state.calls.lock() {
            c.clear();
        }
        if let Ok(mut c) = self.state.regions.lock() {
            c.clear();
        }
        self.state.injected.store(0, Ordering::SeqCst);
    }
}

/// Which AWS protocol a request speaks.
enum Protocol {
    /// RPC v2 CBOR: CloudWatch in the current SDK.
    Cbor(String),
    /// The query protocol: `Action=…` in a form body.
    Query(String),
}

/// A part of the SigV4 credential scope: KEY/DATE/REGION/SERVICE/aws4_request.
fn scope_part(headers: &HeaderMap, index: usize) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split(',').next())
        .and_then(|c| c.split('/').nth(index))
        .unwrap_or("unknown")
        .to_string()
}

fn service_of(headers: &HeaderMap) -> String {
    scope_part(headers, 3)
}

fn protocol(uri: &Uri, body: &[u8]) -> Option<Protocol> {
    if let Some(op) = uri.path().strip_prefix(CBOR_PREFIX) {
        return Some(Protocol::Cbor(op.to_string()));
    }
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .map(|a| Protocol::Query(a.to_string()))
}

/// The kinds of injected failure.
#[derive(Clone, Copy)]
enum Fault {
    Throttle,
    Unavailable,
    LostResponse,
}

async fn handle(
    state: Arc<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let service = service_of(&headers);
    let proto = protocol(&uri, &body);
    let op = match &proto {
        Some(Protocol::Cbor(op) | Protocol::Query(op)) => op.clone(),
        None => "other".to_string(),
    };
    if let Ok(mut c) = state.calls.lock() {
        *c.entry((service.clone(), op.clone())).or_default() += 1;
    }
    if let Ok(mut c) = state.regions.lock() {
        *c.entry((scope_part(&headers, 2), service.clone(), op.clone()))
            .or_default() += 1;
    }
    if let Ok(mut l) = state.log.lock() {
        l.push((
            state.started.elapsed().as_secs_f64(),
            service.clone(),
            op.clone(),
        ));
    }
    let fault = {
        let permille = state.fault_permille.load(Ordering::SeqCst);
        let throttle = state.elb_throttle_permille.load(Ordering::SeqCst);
        let mut rng = match state.rng.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        if throttle > 0
            && service == "elasticloadbalancing"
            && (rng.next_u64() % 1000) < u64::from(throttle)
        {
            Some(Fault::Throttle)
        } else if permille > 0 && (rng.next_u64() % 1000) < u64::from(permille) {
            Some(match rng.next_u64() % 3 {
                0 => Fault::Throttle,
                1 => Fault::Unavailable,
                _ => Fault::LostResponse,
            })
        } else {
            None
        }
    };
    if fault.is_some() {
        state.injected.fetch_add(1, Ordering::SeqCst);
    }
    let cbor_op = matches!(proto, Some(Protocol::Cbor(_)));
    match fault {
        Some(Fault::Throttle) => return injected(cbor_op, 400, "Throttling", "Rate exceeded"),
        Some(Fault::Unavailable) => {
            return injected(cbor_op, 503, "ServiceUnavailable", "Service unavailable")
        }
        Some(Fault::LostResponse) | None => {}
    }
    let st = Arc::clone(&state);
    let answer = tokio::task::spawn_blocking(move || match proto {
        Some(Protocol::Cbor(op)) => forward_cbor(&st, &op, &headers, &body),
        _ => forward_raw(&st, &method, &uri, &headers, &body),
    })
    .await
    .unwrap_or_else(|e| plain(502, format!("gateway task failed: {e}")));
    if matches!(fault, Some(Fault::LostResponse)) {
        return injected(cbor_op, 500, "InternalFailure", "The response was lost");
    }
    answer
}

fn plain(status: u16, text: String) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    r
}

fn injected(cbor_op: bool, status: u16, code: &str, message: &str) -> Response {
    let (body, content_type) = if cbor_op {
        let code = if code == "Throttling" {
            "ThrottlingException"
        } else {
            code
        };
        (cbor::error_to_cbor(code, message), "application/cbor")
    } else {
        let kind = if status >= 500 { "Receiver" } else { "Sender" };
        (
            format!(
                "<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>injected</RequestId></ErrorResponse>"
            )
            .into_bytes(),
            "text/xml",
        )
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    if cbor_op {
        r.headers_mut()
            .insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    }
    r
}

fn forward_raw(
    state: &State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let url = format!(
        "{}{}",
        state.moto,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = ureq::http::Request::builder()
        .method(method.as_str())
        .uri(&url);
    for (k, v) in headers {
        if k == "host" || k == "content-length" || k == "transfer-encoding" {
            continue;
        }
        req = req.header(k.as_str(), v.as_bytes());
    }
    let Ok(req) = req.body(body.to_vec()) else {
        return plain(502, "bad request to forward".into());
    };
    match state.agent.run(req) {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/xml")
                .to_string();
            let bytes = resp.body_mut().read_to_vec().unwrap_or_default();
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            if let Ok(v) = HeaderValue::from_str(&ct) {
                r.headers_mut().insert("content-type", v);
            }
            r
        }
        Err(e) => plain(502, format!("moto: {e}")),
    }
}

fn cbor_response(status: u16, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/cbor"));
    r.headers_mut()
        .insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    r
}

fn forward_cbor(state: &State, op: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let Some(shape) = cbor::output_shape(op) else {
        return cbor_response(
            400,
            cbor::error_to_cbor(
                "UnknownOperationException",
                &format!("the gateway does not translate {op}"),
            ),
        );
    };
    let json = match cbor::request_to_json(body) {
        Ok(j) => j,
        Err(e) => return cbor_response(400, cbor::error_to_cbor("SerializationException", &e)),
    };
    let mut req = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("{}/", state.moto))
        .header("content-type", "application/x-amz-json-1.0")
        .header(
            "x-amz-target",
            format!("GraniteServiceVersion20100801.{op}"),
        );
    for h in ["authorization", "x-amz-date", "x-amz-security-token"] {
        if let Some(v) = headers.get(h) {
            req = req.header(h, v.as_bytes());
        }
    }
    let Ok(req) = req.body(json.to_string().into_bytes()) else {
        return cbor_response(500, cbor::error_to_cbor("InternalFailure", "bad request"));
    };
    let mut resp = match state.agent.run(req) {
        Ok(r) => r,
        Err(e) => {
            return cbor_response(
                502,
                cbor::error_to_cbor("InternalFailure", &format!("moto: {e}")),
            )
        }
    };
    let status = resp.status().as_u16();
    let bytes = resp.body_mut().read_to_vec().unwrap_or_default();
    let parsed: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                return cbor_response(
                    502,
                    cbor::error_to_cbor(
                        "InternalFailure",
                        &format!(
                            "moto answered {status} with no JSON: {e}: {}",
                            String::from_utf8_lossy(&bytes)
                        ),
                    ),
                )
            }
        }
    };
    if status >= 300 {
        let (code, message) = cbor::json_error(&parsed);
        return cbor_response(status, cbor::error_to_cbor(&code, &message));
    }
    let mut parsed = parsed;
    if op == "GetMetricData" && state.endless_pages.load(Ordering::SeqCst) {
        if let serde_json::Value::Object(map) = &mut parsed {
            map.insert("NextToken".into(), serde_json::json!("one-more-page"));
        }
    }
    match cbor::response_to_cbor(&parsed, shape) {
        Ok(b) => cbor_response(200, b),
        Err(e) => cbor_response(502, cbor::error_to_cbor("InternalFailure", &e)),
    }
}
