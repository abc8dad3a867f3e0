//! The HTTP API over real HTTP: the real router and the real daemon loop,
//! on a fresh PostgreSQL database and the in-memory simulated world, bound to
//! a free port; a blocking client calls it as a user's script would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rollout_sim::memory::MemoryWorld;
use rollout_store::Store;
use rolloutd::config::Config;
use rolloutd::daemon::now;
use serde_json::Value;

struct Server {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(token: Option<&str>) -> Server {
    start_with(token, None)
}

fn start_with(token: Option<&str>, read_token: Option<&str>) -> Server {
    let token = token.map(str::to_string);
    let read_token = read_token.map(str::to_string);
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let url = rollout_store::testing::fresh_postgres_database("rolloutd_api").await;
            let store = Store::connect(&url).await.expect("store");
            store.migrate().await.expect("migrate");
            let world = Arc::new(MemoryWorld::new(1000.0, now));
            let config = Config {
                reconcile_interval: rollout_spec::Duration::from_millis(500),
                lease_ttl: rollout_spec::Duration::from_secs(3),
                replica: "api-test".into(),
                concurrency: 4,
                ..Config::for_test(&url)
            };
            let setup = rolloutd::Setup {
                token,
                read_token,
                ..rolloutd::Setup::on_store(config, store)
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (stop_all, mut stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(rolloutd::serve(
                listener,
                setup,
                Arc::clone(&world),
                world,
                async move {
                    let _ = (&mut stopped).await;
                },
            ));
            tx.send(format!("http://{addr}")).expect("send");
            let _ = stop_rx.await;
            let _ = stop_all.send(());
            let _ = serving.await;
        });
    });
    let base = rx.recv_timeout(Duration::from_secs(30)).expect("server up");
    Server {
        base,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn json(mut r: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    json(
        agent()
            .get(format!("{}{path}", s.base))
            .call()
            .expect("GET"),
    )
}

fn post(s: &Server, path: &str, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = agent().post(format!("{}{path}", s.base));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    json(req.send(body).expect("POST"))
}

const DOCS: &str = include_str!("../../rollout-spec/tests/valid-base.yaml");

fn wait_for(s: &Server, name: &str, what: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        let (_, r) = get(s, &format!("/api/v1/rollouts/{name}"));
        if what(&r) {
            return r;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn health_readiness_and_metrics() {
    let s = start(None);
    assert_eq!(get(&s, "/healthz").0, 200);
    assert_eq!(
        get(&s, "/readyz"),
        (200, serde_json::json!({"status": "ready"}))
    );
    let (code, _) = post(&s, "/api/v1/apply", DOCS, None);
    assert_eq!(code, 200);
    // The observed weight is what the next reconcile read back.
    wait_for(&s, "checkout-api", |r| {
        r["status"]["observedWeights"]["canary"] == 5
    });
    let mut r = agent()
        .get(format!("{}/metrics", s.base))
        .call()
        .expect("metrics");
    let text = r.body_mut().read_to_string().expect("text");
    for needle in [
        "rolloutd_rollout_info{phase=\"Progressing\",revision=\"r1\",rollout=\"checkout-api\",strategy=\"canary\"} 1",
        "rolloutd_rollout_phase{phase=\"Progressing\",rollout=\"checkout-api\"} 1",
        "rolloutd_rollout_phase{phase=\"Succeeded\",rollout=\"checkout-api\"} 0",
        "rolloutd_rollout_canary_weight{rollout=\"checkout-api\"} 5",
        "rolloutd_rollout_observed_canary_weight{rollout=\"checkout-api\"} 5",
        "rolloutd_rollout_step{rollout=\"checkout-api\"} 1",
        "# TYPE rolloutd_reconcile_duration_seconds histogram",
        "rolloutd_leases_held 1",
        "# TYPE rolloutd_reconcile_queue_depth gauge",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
}

#[test]
fn apply_is_all_or_nothing_idempotent_and_has_a_dry_run() {
    let s = start(None);
    let (code, body) = post(&s, "/api/v1/apply?dryRun=true", DOCS, None);
    assert_eq!(code, 200);
    assert_eq!(body["dryRun"], true);
    assert_eq!(body["results"][1]["change"], "created");
    assert_eq!(
        get(&s, "/api/v1/rollouts").1["items"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "a dry run changes nothing"
    );

    // One valid and one invalid document: 422 with the place, nothing applied.
    let bad = DOCS.replace("  failureLimit: 0", "  failureLimit: lots");
    let (code, body) = post(&s, "/api/v1/apply", &bad, None);
    assert_eq!(code, 422);
    let d = &body["details"][0];
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(37), Some(17))
    );
    assert_eq!(d["path"], "spec.failureLimit");
    assert_eq!(
        d["message"],
        "expected a whole number, found a string `lots`"
    );
    assert_eq!(
        get(&s, "/api/v1/rollouts").1["items"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    assert_eq!(post(&s, "/api/v1/apply", DOCS, None).0, 200);
    let (_, again) = post(&s, "/api/v1/apply", DOCS, None);
    assert_eq!(again["results"][0]["change"], "unchanged");
    assert_eq!(again["results"][1]["change"], "unchanged");
    let json_body =
        serde_json::to_string(&get(&s, "/api/v1/rollouts/checkout-api").1).expect("json");
    assert!(json_body.contains("\"revision\":\"r1\""));
    // JSON bodies are accepted too.
    let (code, _) = post(
        &s,
        "/api/v1/apply",
        "{\"apiVersion\": \"rolloutd.dev/v1alpha1\", \"kind\": \"Nope\"}",
        None,
    );
    assert_eq!(code, 422);
}

#[test]
fn overrides_answer_409_when_they_do_not_apply() {
    let s = start(None);
    post(&s, "/api/v1/apply", DOCS, None);
    wait_for(&s, "checkout-api", |r| {
        r["status"]["phase"] == "Progressing"
    });
    let (code, body) = post(&s, "/api/v1/rollouts/checkout-api/retry", "", None);
    assert_eq!(code, 409, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("this run is Progressing")));
    let (code, _) = post(
        &s,
        "/api/v1/rollouts/checkout-api/abort",
        "{\"reason\": \"bad deploy\"}",
        None,
    );
    assert_eq!(code, 202);
    let r = wait_for(&s, "checkout-api", |r| r["status"]["phase"] == "Aborted");
    assert_eq!(r["status"]["message"], "aborted by api: bad deploy");
    assert_eq!(r["status"]["canaryWeight"], 0);
    let (code, body) = post(
        &s,
        "/api/v1/rollouts/checkout-api/promote",
        "{\"full\": true}",
        None,
    );
    assert_eq!(code, 409);
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("has ended (Aborted)")));
    let (code, _) = post(&s, "/api/v1/rollouts/checkout-api/retry", "", None);
    assert_eq!(code, 202);
    wait_for(&s, "checkout-api", |r| r["status"]["run"] == 2);
    let (_, events) = get(&s, "/api/v1/rollouts/checkout-api/events");
    let kinds: Vec<&str> = events["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(kinds.first(), Some(&"RunStarted"));
    assert!(
        kinds.contains(&"Aborted") && kinds.contains(&"Retried"),
        "{kinds:?}"
    );
    let aborted = events["items"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["kind"] == "Aborted"))
        .expect("abort event");
    assert_eq!(aborted["actor"], "api");
    assert_eq!(
        post(&s, "/api/v1/rollouts/checkout-api/frobnicate", "", None).0,
        404
    );
    assert_eq!(
        post(&s, "/api/v1/rollouts/checkout-api/pause", "{not json", None).0,
        400
    );
}

#[test]
fn unknown_rollouts_are_404_and_delete_stops_managing() {
    let s = start(None);
    assert_eq!(get(&s, "/api/v1/rollouts/nope").0, 404);
    assert_eq!(post(&s, "/api/v1/rollouts/nope/abort", "", None).0, 404);
    assert_eq!(get(&s, "/api/v1/rollouts/nope/events").0, 404);
    post(&s, "/api/v1/apply", DOCS, None);
    let deleted = agent()
        .delete(format!("{}/api/v1/rollouts/checkout-api", s.base))
        .call()
        .expect("DELETE");
    assert_eq!(json(deleted).0, 200);
    assert_eq!(get(&s, "/api/v1/rollouts/checkout-api").0, 404);
    let again = agent()
        .delete(format!("{}/api/v1/rollouts/checkout-api", s.base))
        .call()
        .expect("DELETE");
    assert_eq!(json(again).0, 404);
}

#[test]
fn a_token_guards_every_mutating_request() {
    let s = start(Some("s3cret"));
    let (code, body) = post(&s, "/api/v1/apply", DOCS, None);
    assert_eq!(code, 401, "{body}");
    assert_eq!(post(&s, "/api/v1/apply", DOCS, Some("wrong")).0, 401);
    assert_eq!(post(&s, "/api/v1/apply", DOCS, Some("s3cret")).0, 200);
    assert_eq!(get(&s, "/api/v1/rollouts").0, 200, "reads need no token");
    assert_eq!(
        post(&s, "/api/v1/rollouts/checkout-api/abort", "", None).0,
        401
    );
    let denied = agent()
        .delete(format!("{}/api/v1/rollouts/checkout-api", s.base))
        .call()
        .expect("DELETE");
    assert_eq!(json(denied).0, 401);
}

#[test]
fn a_read_only_token_reads_and_changes_nothing() {
    let s = start_with(Some("writer"), Some("reader"));
    assert_eq!(post(&s, "/api/v1/apply", DOCS, Some("writer")).0, 200);
    let read = |token: Option<&str>| {
        let mut req = agent().get(format!("{}/api/v1/rollouts/checkout-api", s.base));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        json(req.call().expect("GET")).0
    };
    assert_eq!(read(None), 401);
    assert_eq!(read(Some("reader")), 200);
    assert_eq!(read(Some("writer")), 200);
    let (code, body) = post(
        &s,
        "/api/v1/rollouts/checkout-api/abort",
        "",
        Some("reader"),
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(get(&s, "/healthz").0, 200, "health checks stay open");
    assert_eq!(get(&s, "/metrics").0, 200, "so does /metrics");
}

#[test]
fn bodies_over_one_mebibyte_are_refused() {
    let s = start(None);
    let big = format!("# {}\n{DOCS}", "x".repeat(1024 * 1024));
    let (code, _) = post(&s, "/api/v1/apply", &big, None);
    assert_eq!(code, 413);
}

#[test]
fn a_whole_run_through_the_api() {
    let s = start(None);
    let fast = DOCS
        .replace("- pause: {duration: 5m}", "- pause: {duration: 1s}")
        .replace("interval: 1m", "interval: 1s")
        // The canary gets about 50 requests in a 1 s interval at 5%:
        // exactly the default minRequests, so on a loaded machine intervals
        // came out inconclusive and the run paused. 20 keeps it judged.
        .replace(
            "period: 60s",
            "period: 1s\n    delay: 1s\n    minRequests: 20",
        );
    let (code, body) = post(&s, "/api/v1/apply", &fast, None);
    assert_eq!(code, 200, "{body}");
    let r = wait_for(&s, "checkout-api", |r| r["status"]["phase"] == "Succeeded");
    assert_eq!(r["status"]["canaryWeight"], 100);
    assert_eq!(r["status"]["observedWeights"]["canary"], 100);
    assert!(r["status"]["startedAt"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let last = &r["status"]["analysis"]["templates"]["golden"]["last"]["result"]["metrics"][0];
    assert_eq!(last["metric"], "errorRate");
    assert!(
        last["stable"].is_number() && last["canary"].is_number() && last["verdict"].is_string(),
        "{last}"
    );
    // Its report: every check of the template, with both arms, the effect,
    // its interval and a verdict; the same run alone at /runs/{run}.
    let (code, runs) = get(&s, "/api/v1/rollouts/checkout-api/runs");
    assert_eq!(code, 200, "{runs}");
    let newest = &runs["items"][0];
    assert_eq!(newest["outcome"], "Succeeded", "{runs}");
    assert_eq!(newest["run"], r["status"]["run"], "{runs}");
    assert!(
        newest["canaryRequests"].as_f64().is_some_and(|n| n > 0.0),
        "{newest}"
    );
    for check in ["errorRate", "latency"] {
        let e = &newest["checks"]["golden"][check];
        assert!(
            e["stable"].is_number() && e["canary"].is_number(),
            "{check}: {e}"
        );
        assert!(
            ["improved", "unchanged", "regressed", "unknown"]
                .contains(&e["verdict"].as_str().unwrap_or("")),
            "{check}: {e}"
        );
    }
    let run = newest["run"].as_u64().expect("run");
    let (code, one) = get(&s, &format!("/api/v1/rollouts/checkout-api/runs/{run}"));
    assert_eq!(code, 200, "{one}");
    assert_eq!(&one, newest);
    let (code, none) = get(
        &s,
        &format!("/api/v1/rollouts/checkout-api/runs/{}", run + 5),
    );
    assert_eq!(code, 404, "{none}");
    assert!(
        none["error"]
            .as_str()
            .is_some_and(|e| e.contains("has no run")),
        "{none}"
    );
}

/// Resolves a local `$ref` of the OpenAPI document.
fn schema<'a>(doc: &'a Value, r: &Value) -> &'a Value {
    let name = r["$ref"]
        .as_str()
        .and_then(|s| s.strip_prefix("#/components/schemas/"))
        .expect("a component reference");
    &doc["components"]["schemas"][name]
}

#[test]
fn the_openapi_document_covers_every_route_and_matches_the_answers() {
    let s = start(None);
    let (code, doc) = get(&s, "/api/v1/openapi.json");
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    // Every route of the list is in the document and served by the router.
    assert_eq!(
        doc["paths"].as_object().map(|p| p
            .values()
            .map(|ops| ops.as_object().map_or(0, |o| o.len()))
            .sum::<usize>()),
        Some(rolloutd::openapi::ROUTES.len())
    );
    for (method, path, _) in rolloutd::openapi::ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
        let concrete = path.replace("{name}", "nobody").replace("{run}", "1");
        let req = agent();
        if concrete == "/api/v1/watch" {
            // A stream: served when it starts as one (its body never ends).
            let r = req
                .get(format!("{}{concrete}", s.base))
                .call()
                .expect("GET");
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(
                r.headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok()),
                Some("text/event-stream")
            );
            continue;
        }
        let (code, body) = json(
            match *method {
                "get" => req.get(format!("{}{concrete}", s.base)).call(),
                "post" => req.post(format!("{}{concrete}", s.base)).send(""),
                _ => req.delete(format!("{}{concrete}", s.base)).call(),
            }
            .expect("request"),
        );
        // Served: either an answer, or the handler's own 404 for an unknown
        // rollout (JSON with `error`), never the router's empty 404/405.
        assert!(code != 405, "{method} {path}: {code}");
        assert!(
            code != 404 || body["error"].is_string(),
            "{method} {path}: the router does not serve it"
        );
    }
    // The schemas come from the daemon's types.
    let status = &doc["components"]["schemas"]["RolloutStatus"];
    for field in [
        "phase",
        "revision",
        "currentStepIndex",
        "canaryWeight",
        "observedWeights",
        "message",
        "startedAt",
        "updatedAt",
        "analysis",
    ] {
        assert!(
            status["properties"][field].is_object(),
            "RolloutStatus.{field}"
        );
    }
    let phases = doc["components"]["schemas"]["Phase"].to_string();
    for p in [
        "Pending",
        "Progressing",
        "Paused",
        "Succeeded",
        "RolledBack",
        "Aborted",
        "Failed",
    ] {
        assert!(phases.contains(p), "{p} in {phases}");
    }
    // A real answer has every property the document requires.
    let (code, _) = post(&s, "/api/v1/apply", DOCS, None);
    assert_eq!(code, 200);
    let (_, one) = get(&s, "/api/v1/rollouts/checkout-api");
    let resource = schema(
        &doc,
        &doc["paths"]["/api/v1/rollouts/{name}"]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"],
    );
    for req in resource["required"].as_array().expect("required") {
        let f = req.as_str().expect("name");
        assert!(
            !one[f].is_null() || f == "status",
            "the answer has `{f}`: {one}"
        );
        assert!(resource["properties"][f].is_object());
    }
    let (_, err) = get(&s, "/api/v1/rollouts/nobody");
    let error = &doc["components"]["schemas"]["ErrorBody"];
    for f in error["required"].as_array().expect("required") {
        assert!(!err[f.as_str().expect("name")].is_null(), "{err}");
    }
}
