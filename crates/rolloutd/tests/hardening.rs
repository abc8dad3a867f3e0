//! The API as an attacker meets it (issue 14), against the real binary: it
//! will not serve beyond loopback without a token unless told to, and slow,
//! idle, dribbling, unauthenticated and numerous clients are cut off while
//! `/healthz` keeps answering and rollouts keep their pace.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{free_port, get, post_with_token, start_simulated, until, work_dir, Daemon};

fn rolloutd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rolloutd"))
        .args(args)
        .env_remove("ROLLOUTD_API_TOKEN_FILE")
        .env_remove("ROLLOUTD_API_TOKEN")
        .env_remove("ROLLOUTD_INSECURE_NO_AUTH")
        .output()
        .expect("rolloutd")
}

#[test]
fn serving_beyond_loopback_needs_a_token_or_an_explicit_choice() {
    let dir = work_dir("exposure");
    let listen = format!("0.0.0.0:{}", free_port());
    let db = format!("sqlite://{}", dir.join("state.db").display());
    let world = format!("sqlite://{}", dir.join("world.db").display());
    let out = rolloutd(&[
        "serve",
        "--database-url",
        &db,
        "--simulate-world",
        &world,
        "--listen",
        &listen,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--api-token-file") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    // Nothing was created: the refusal comes before the database.
    assert!(!dir.join("state.db").exists());

    // With either, it starts.
    let token = support::token_file(&dir, "s3cret-token");
    for extra in [
        vec!["--insecure-no-auth"],
        vec!["--api-token-file", token.to_str().expect("path")],
    ] {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rolloutd"))
            .args(["serve", "--database-url", &db, "--simulate-world", &world])
            .args(["--listen", &format!("0.0.0.0:{port}")])
            .args(&extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("rolloutd");
        let t = Instant::now();
        let mut ready = false;
        while t.elapsed() < Duration::from_secs(30) && !ready {
            ready = TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                let _ =
                    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut text = String::new();
                let _ = s.read_to_string(&mut text);
                text.starts_with("HTTP/1.1 200")
            });
            if !ready {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(ready, "{extra:?}: did not start");
    }
}

/// Reads until the server closes the connection (or `limit` passes);
/// returns what it sent and how long it took.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), t.elapsed())
}

fn connect(d: &Daemon) -> TcpStream {
    TcpStream::connect(d.base.trim_start_matches("http://")).expect("connect")
}

#[test]
fn slow_idle_and_unauthenticated_clients_are_cut_off() {
    let dir = work_dir("slow-clients");
    let token = support::token_file(&dir, "s3cret-token");
    let d = start_simulated(
        &dir,
        &[
            "--api-token-file",
            token.to_str().expect("path"),
            "--http-header-timeout",
            "2s",
            "--http-request-timeout",
            "3s",
            "--http-idle-timeout",
            "2s",
            "--http-shutdown-grace",
            "2s",
        ],
    );

    // Headers one byte every half second: cut off at the header timeout.
    let mut s = connect(&d);
    let t = Instant::now();
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: rolloutd\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = None;
    for b in request {
        if s.write_all(&[*b]).is_err() {
            cut = Some(t.elapsed());
            break;
        }
        let (_, _) = read_until_closed(&mut s, Duration::from_millis(400));
        if s.peek(&mut [0u8; 1]).is_ok_and(|n| n == 0) {
            cut = Some(t.elapsed());
            break;
        }
    }
    let cut = cut.expect("a client dribbling its headers was never cut off");
    println!("slow headers: cut off after {cut:?}");
    assert!(
        cut >= Duration::from_millis(1500) && cut < Duration::from_millis(4000),
        "{cut:?}"
    );

    // A kept-alive connection left idle: closed after the idle timeout.
    let mut s = connect(&d);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: rolloutd\r\n\r\n")
        .expect("write");
    let (text, took) = read_until_closed(&mut s, Duration::from_secs(10));
    println!("idle keep-alive: closed after {took:?}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(4500),
        "{took:?}"
    );

    // A body dribbled by an authenticated client: the request times out.
    let mut s = connect(&d);
    s.write_all(
        b"POST /api/v1/apply HTTP/1.1\r\nHost: rolloutd\r\nAuthorization: Bearer s3cret-token\r\nContent-Type: application/yaml\r\nContent-Length: 100000\r\n\r\n",
    )
    .expect("write");
    let t = Instant::now();
    let mut answer = String::new();
    while t.elapsed() < Duration::from_secs(10) {
        if s.write_all(b"#").is_err() {
            break;
        }
        let (text, _) = read_until_closed(&mut s, Duration::from_millis(300));
        answer.push_str(&text);
        if !answer.is_empty() {
            break;
        }
    }
    let took = t.elapsed();
    println!("dribbled body: {:?} after {took:?}", answer.lines().next());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(took < Duration::from_millis(4500), "{took:?}");

    // An unauthenticated request announcing 1 MiB: refused before its body.
    let mut s = connect(&d);
    s.write_all(
        b"POST /api/v1/apply HTTP/1.1\r\nHost: rolloutd\r\nContent-Type: application/yaml\r\nContent-Length: 1048576\r\n\r\n",
    )
    .expect("write");
    let (text, took) = read_until_closed(&mut s, Duration::from_secs(5));
    println!(
        "unauthenticated 1 MiB: {:?} after {took:?}",
        text.lines().next()
    );
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(get(&d, "/healthz").0, 200);

    // A half-sent request does not keep the process alive past SIGTERM
    // longer than the shutdown grace (2 s here).
    let mut d = d;
    let mut s = connect(&d);
    s.write_all(b"POST /api/v1/apply HTTP/1.1\r\nHost: rolloutd\r\nAuthorization: Bearer s3cret-token\r\nContent-Length: 100\r\n\r\n#")
        .expect("write");
    std::thread::sleep(Duration::from_millis(200));
    let (status, took) = support::sigterm(&mut d.child, Duration::from_secs(15));
    println!("SIGTERM with a half-sent request open: exited after {took:?} ({status})");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

fn stepping_rollout(name: &str, id: u32) -> String {
    format!(
        "apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  revision: \"r1\"
  trafficRouting:
    alb:
      listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/{id:016x}
  stable: {{targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue-{name}/73e2d6bc24d8a067\"}}
  canary: {{targetGroupArn: \"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green-{name}/0f2a6b1c9d8e7f60\"}}
  strategy:
    canary:
      steps: [{{setWeight: 5}}, {{pause: {{duration: 1s}}}}, {{setWeight: 10}}, {{pause: {{duration: 1s}}}}, {{setWeight: 25}}, {{pause: {{duration: 1s}}}}, {{setWeight: 50}}, {{pause: {{duration: 1s}}}}, {{setWeight: 100}}]
"
    )
}

/// Applies a stepping rollout and returns how long it took to succeed.
async fn run_once(d: &Daemon, name: &str, id: u32) -> Duration {
    let t = Instant::now();
    let (code, body) = post_with_token(
        d,
        "/api/v1/apply",
        &stepping_rollout(name, id),
        "s3cret-token",
    );
    assert_eq!(code, 200, "{body}");
    until(d, Duration::from_secs(120), "the rollout succeeds", || {
        support::phase(d, name) == "Succeeded"
    })
    .await;
    t.elapsed()
}

/// The tests that open thousands of sockets take turns: they share this
/// process's open-files limit.
static SOCKET_FLOODS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_slow_clients_leave_health_checks_and_rollouts_alone() {
    let _turn = SOCKET_FLOODS.lock().await;
    // This process opens 2,000 sockets: make sure it may (where the hard
    // limit is lower, as many as it allows, still well beyond the cap).
    support::allow_open_files(16384);
    let limit = rolloutd::http::soft_nofile().unwrap_or(1024);
    let n = usize::try_from(limit.saturating_sub(300))
        .unwrap_or(2000)
        .min(2000);
    let cap = (n / 2).min(400);
    println!("open-files limit {limit}: {n} slow clients against a cap of {cap} connections");
    assert!(
        n >= 200,
        "this test needs an open-files limit of at least 500, not {limit}"
    );
    let dir = work_dir("slow-flood");
    let token = support::token_file(&dir, "s3cret-token");
    // The cap is below the number of slow clients: they must not lock out
    // a health check or a command (the connection waiting longest for a
    // request makes room).
    let d = start_simulated(
        &dir,
        &[
            "--api-token-file",
            token.to_str().expect("path"),
            "--http-header-timeout",
            "5s",
            "--http-max-connections",
            &cap.to_string(),
        ],
    );
    let quiet = run_once(&d, "quiet", 1).await;

    // The clients each send a header byte a second.
    let addr = d.base.trim_start_matches("http://").to_string();
    let mut clients = Vec::new();
    let opened = Instant::now();
    for _ in 0..n {
        let addr = addr.clone();
        clients.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                return None;
            };
            let t = Instant::now();
            for b in b"GET /healthz HTTP/1.1\r\nHost: rolloutd\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
                if s.write_all(&[*b]).await.is_err() {
                    return Some(t.elapsed());
                }
                let mut buf = [0u8; 256];
                match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
                    _ => {}
                }
            }
            None
        }));
    }
    println!("{n} slow clients connecting ({:?})", opened.elapsed());
    // While they hold on: health checks answer, a rollout keeps its pace.
    let mut worst_health = Duration::ZERO;
    let health = {
        let d_base = d.base.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for _ in 0..8 {
                let t = Instant::now();
                let base = d_base.clone();
                let ok = tokio::task::spawn_blocking(move || {
                    ureq::get(format!("{base}/healthz"))
                        .config()
                        .timeout_global(Some(Duration::from_secs(5)))
                        .build()
                        .call()
                        .is_ok()
                })
                .await
                .unwrap_or(false);
                assert!(ok, "/healthz did not answer within 5 s");
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            worst
        })
    };
    let busy = run_once(&d, "busy", 2).await;
    worst_health = worst_health.max(health.await.expect("health checks"));
    let mut cut: Vec<Duration> = Vec::new();
    let mut never = 0;
    for c in clients {
        match c.await.expect("client") {
            Some(t) => cut.push(t),
            None => never += 1,
        }
    }
    cut.sort();
    let longest = cut.last().copied().unwrap_or_default();
    println!(
        "rollout of 4 steps with 1 s pauses: {quiet:?} quiet, {busy:?} with {n} slow clients; slowest /healthz {worst_health:?}; clients cut off: {} (longest after {longest:?}), never: {never}",
        cut.len()
    );
    assert_eq!(never, 0, "clients that sent all their headers slowly");
    // The header timeout is 5 s; a client notices the close at its next
    // read (every second). Beyond the cap, a client waits in the kernel's
    // accept queue until a slot is made for it (one eviction per accept):
    // quick on an idle machine (5.9 s in all), up to 18.5 s seen on one
    // kept busy by two compilers. With tokio's shallow default queue a
    // loaded CI machine saw 31.9 s: the clients beyond it waited for SYN
    // retransmissions (see the burst test above). A client sending a byte a
    // second would need about 90 s for its headers: none is left hanging.
    assert!(longest < Duration::from_secs(45), "{longest:?}");
    assert!(worst_health < Duration::from_secs(3), "{worst_health:?}");
    assert!(
        busy < quiet + Duration::from_secs(5),
        "{busy:?} against {quiet:?}"
    );
}

/// A burst of connections while the daemon cannot accept (stopped by the
/// kernel here; a stalled host in life) waits in the kernel's accept queue
/// instead of being dropped to SYN retransmissions (1 + 2 + 4 + 8 + 16 s):
/// the queue is deeper than tokio's default of 1,024.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_connections_queues_while_the_daemon_is_stalled() {
    let _turn = SOCKET_FLOODS.lock().await;
    support::allow_open_files(16384);
    let n = 1500_usize;
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        somaxconn > n,
        "this test needs net.core.somaxconn above {n}, not {somaxconn}"
    );
    let dir = work_dir("burst");
    let token = support::token_file(&dir, "s3cret-token");
    let d = start_simulated(&dir, &["--api-token-file", token.to_str().expect("path")]);
    let pid = d.child.id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "kill {sig} {pid}");
    };
    signal("-STOP");
    let addr = d.base.trim_start_matches("http://").to_string();
    let mut connects = Vec::new();
    for _ in 0..n {
        let addr = addr.clone();
        connects.push(tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_millis(1500),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            .ok()
            .and_then(Result::ok)
        }));
    }
    let mut streams = Vec::new();
    for c in connects {
        if let Some(s) = c.await.expect("connect task") {
            streams.push(s);
        }
    }
    signal("-CONT");
    println!(
        "{} of {n} connections completed while the daemon was stopped",
        streams.len()
    );
    assert_eq!(
        streams.len(),
        n,
        "connections dropped by a full accept queue"
    );
    // Once it runs again, the newest of them is served.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut last = streams.pop().expect("a stream");
    drop(streams);
    last.write_all(b"GET /healthz HTTP/1.1\r\nHost: rolloutd\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), last.read_to_string(&mut answer)).await;
    assert!(read.is_ok(), "no answer within 10 s");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Specs made to cost: a mebibyte of empty documents, a megabyte revision
/// or name. Each is answered at once, briefly, naming the field and limit.
#[test]
fn pathological_specs_are_refused_quickly_and_briefly() {
    let dir = work_dir("pathological");
    let token = support::token_file(&dir, "s3cret-token");
    let d = start_simulated(&dir, &["--api-token-file", token.to_str().expect("path")]);
    let apply = |body: &str| {
        let t = Instant::now();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut r = agent
            .post(format!("{}/api/v1/apply", d.base))
            .header("Authorization", "Bearer s3cret-token")
            .send(body)
            .expect("apply");
        let code = r.status().as_u16();
        let text = r.body_mut().read_to_string().expect("body");
        (code, text, t.elapsed())
    };

    let empty = "{}\n---\n".repeat((1 << 20) / 7);
    let (code, text, took) = apply(&empty);
    println!(
        "1 MiB of empty documents: {code} in {took:?}, {} bytes of answer",
        text.len()
    );
    assert_eq!(code, 422, "{}", &text[..text.len().min(500)]);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(text.len() < 32 * 1024, "{} bytes", text.len());
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let details = v["details"].as_array().expect("details");
    assert!(details.len() <= 101, "{}", details.len());
    assert!(
        details
            .iter()
            .any(|d| d["message"].as_str().unwrap_or("").contains("not checked")),
        "{text}"
    );

    let doc = |name: &str, revision: &str| {
        format!(
            "apiVersion: rolloutd.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}}}
spec:
  revision: \"{revision}\"
  trafficRouting: {{alb: {{listenerArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/0000000000000001}}}}
  stable: {{targetGroupArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/73e2d6bc24d8a067}}
  canary: {{targetGroupArn: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/green/0f2a6b1c9d8e7f60}}
  strategy: {{canary: {{steps: [{{setWeight: 100}}]}}}}
"
        )
    };
    let huge = "a".repeat(1_000_000);
    for (what, body, path) in [
        ("revision", doc("fine", &huge), "spec.revision"),
        ("name", doc(&huge, "r1"), "metadata.name"),
        (
            "revision of 300 bytes",
            doc("fine", &"b".repeat(300)),
            "spec.revision",
        ),
    ] {
        let (code, text, took) = apply(&body);
        println!("a 1 MB {what}: {code} in {took:?}, {} bytes", text.len());
        assert_eq!(code, 422, "{what}");
        assert!(text.len() < 4096, "{what}: {} bytes", text.len());
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let d = &v["details"][0];
        assert_eq!(d["path"], path, "{what}: {text}");
        assert!(
            d["message"].as_str().unwrap_or("").contains("at most"),
            "{what}: {text}"
        );
    }
    // Nothing was applied.
    let (_, list) = get(&d, "/api/v1/rollouts");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
}

/// A deleted rollout leaves no series in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_rollouts_series_leave_metrics() {
    let dir = work_dir("series");
    let token = support::token_file(&dir, "s3cret-token");
    let d = start_simulated(&dir, &["--api-token-file", token.to_str().expect("path")]);
    let spec = include_str!("../../rollout-spec/tests/valid-base.yaml")
        .replace("- pause: {duration: 5m}", "- pause: {}")
        .replace("- setWeight: 5\n", "- setWeight: 50\n")
        .replace("interval: 1m", "interval: 1s")
        .replace("period: 60s", "period: 1s\n    delay: 1s");
    let (code, body) = post_with_token(&d, "/api/v1/apply", &spec, "s3cret-token");
    assert_eq!(code, 200, "{body}");
    let mine = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains("rollout=\"checkout-api\""))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    until(&d, Duration::from_secs(60), "verdicts are counted", || {
        mine(&support::metrics_text(&d))
            .iter()
            .any(|l| l.starts_with("rolloutd_analysis_verdicts_total{"))
    })
    .await;
    println!(
        "before: {} series of the rollout",
        mine(&support::metrics_text(&d)).len()
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .delete(format!("{}/api/v1/rollouts/checkout-api", d.base))
        .header("Authorization", "Bearer s3cret-token")
        .call()
        .expect("delete");
    assert!([200, 202].contains(&r.status().as_u16()), "{}", r.status());
    until(
        &d,
        Duration::from_secs(30),
        "the rollout's series are gone",
        || mine(&support::metrics_text(&d)).is_empty(),
    )
    .await;
}

/// Seconds of the day of a log line's timestamp (`2026-…T10:21:15.006Z …`).
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The longest gap between two reconciles of one rollout within `[from, to)`
/// (seconds of the day), from the daemon's debug log.
/// The longest gap between two reconciles of one rollout logged between
/// `from` and `to`, and how many such pairs there were.
fn longest_gap(log: &str, from: f64, to: f64) -> (f64, usize) {
    let mut last: std::collections::HashMap<String, f64> = Default::default();
    let mut longest: f64 = 0.0;
    let mut pairs = 0;
    for line in log.lines().filter(|l| l.contains("reconciled")) {
        let (Some(t), Some(name)) = (
            log_time(line),
            line.split("rollout=")
                .nth(1)
                .and_then(|r| r.split([' ', '}']).next()),
        ) else {
            continue;
        };
        if t < from || t >= to {
            continue;
        }
        if let Some(prev) = last.insert(name.to_string(), t) {
            longest = longest.max(t - prev);
            pairs += 1;
        }
    }
    (longest, pairs)
}

fn now_of_day() -> f64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    secs % 86_400.0
}

/// The attack suite: while slow headers, slow bodies, idle keep-alives,
/// unauthenticated large bodies, pathological specs and concurrent applies
/// hit the API, 20 holding rollouts keep their reconcile cadence (1 s).
/// Prints the longest gap between two reconciles of a rollout without and
/// with the attack (docs/BENCHMARKS.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_keep_their_cadence_under_attack() {
    let _turn = SOCKET_FLOODS.lock().await;
    support::allow_open_files(16384);
    let dir = work_dir("attack");
    let token = support::token_file(&dir, "s3cret-token");
    let d = support::start_simulated_logging(
        &dir,
        &["--api-token-file", token.to_str().expect("path")],
        "info,rolloutd::daemon=debug",
    );
    let log = d.log.clone();
    let holding: String = (0..20)
        .map(|i| {
            stepping_rollout(&format!("hold-{i}"), 100 + i)
                .replace("{setWeight: 10}, {pause: {duration: 1s}}", "{pause: {}}")
        })
        .collect::<Vec<_>>()
        .join("---\n");
    let (code, body) = post_with_token(&d, "/api/v1/apply", &holding, "s3cret-token");
    assert_eq!(code, 200, "{body}");
    until(&d, Duration::from_secs(60), "all 20 hold", || {
        (0..20).all(|i| support::phase(&d, &format!("hold-{i}")) == "Paused")
    })
    .await;

    // Quiet.
    let quiet_from = now_of_day();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let quiet_to = now_of_day();

    // The attack, for 12 seconds.
    let addr = d.base.trim_start_matches("http://").to_string();
    let attack_from = now_of_day();
    let stop_at = Instant::now() + Duration::from_secs(12);
    let mut tasks = Vec::new();
    let raw = |addr: String, head: &'static [u8], drip: &'static [u8]| async move {
        use tokio::io::AsyncWriteExt;
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            return;
        };
        if s.write_all(head).await.is_err() {
            return;
        }
        for b in drip {
            if Instant::now() > stop_at || s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    // (how many, what they send at once, what they dribble afterwards)
    let kinds: [(usize, &'static [u8], &'static [u8]); 4] = [
        // Slow headers.
        (
            1500,
            b"GET /api/v1/rollouts HTTP/1.1\r\n",
            b"Host: rolloutd\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
        ),
        // Slow bodies (authenticated).
        (
            100,
            b"POST /api/v1/apply HTTP/1.1\r\nHost: rolloutd\r\nAuthorization: Bearer s3cret-token\r\nContent-Length: 100000\r\n\r\n",
            b"################################################",
        ),
        // Idle keep-alives.
        (200, b"GET /healthz HTTP/1.1\r\nHost: rolloutd\r\n\r\n", b""),
        // Unauthenticated requests announcing 1 MiB.
        (
            100,
            b"POST /api/v1/apply HTTP/1.1\r\nHost: rolloutd\r\nContent-Length: 1048576\r\n\r\n",
            b"xxxxxxxxxxxxxxxxxxxxxxxx",
        ),
    ];
    for (count, head, drip) in kinds {
        for _ in 0..count {
            tasks.push(tokio::spawn(raw(addr.clone(), head, drip)));
        }
    }
    // Pathological specs and concurrent applies, over and over.
    let empty = "{}\n---\n".repeat((1 << 20) / 7);
    let long_revision =
        stepping_rollout("long", 999).replace("\"r1\"", &format!("\"{}\"", "r".repeat(1_000_000)));
    let unknown: String = (0..2000)
        .map(|i| format!("apiVersion: rolloutd.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: u{i}}}\nspec: {{revison: x, strateg: y, trafficRoutin: z}}\n---\n"))
        .collect();
    let mut applies = 0;
    let mut refused = 0;
    {
        let base = d.base.clone();
        let bodies = [empty, long_revision, unknown, holding.clone()];
        let mut handles = Vec::new();
        for worker in 0..4 {
            let base = base.clone();
            let bodies = bodies.clone();
            handles.push(tokio::task::spawn_blocking(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                let mut n = (0, 0);
                let mut i = worker;
                while Instant::now() < stop_at {
                    let body = &bodies[i % bodies.len()];
                    i += 1;
                    if let Ok(r) = agent
                        .post(format!("{base}/api/v1/apply"))
                        .header("Authorization", "Bearer s3cret-token")
                        .send(body.as_str())
                    {
                        n.0 += 1;
                        if r.status().as_u16() == 422 {
                            n.1 += 1;
                        }
                    }
                }
                n
            }));
        }
        for h in handles {
            let (a, r) = h.await.expect("applies");
            applies += a;
            refused += r;
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let attack_to = now_of_day();
    // Let the log catch up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let text = std::fs::read_to_string(&log).expect("log");
    let (quiet, quiet_pairs) = longest_gap(&text, quiet_from, quiet_to);
    let (attacked, attacked_pairs) = longest_gap(&text, attack_from, attack_to);
    println!(
        "longest gap between two reconciles of a rollout (interval 1 s, 20 rollouts): {quiet:.2} s quiet, {attacked:.2} s under attack ({attacked_pairs} reconciles; {applies} applies, {refused} refused with 422)"
    );
    // Each rollout reconciles at least once a second, so 20 rollouts give
    // well over 100 pairs in 8 s (and more under the attack, whose
    // applies of the 20 valid rollouts wake them: their gaps can be far
    // shorter than the interval, so only the longest is bounded).
    assert!(
        quiet_pairs >= 100 && attacked_pairs >= 150,
        "too few reconciles in the log: {quiet_pairs} quiet, {attacked_pairs} under attack"
    );
    assert!(attacked < 3.0, "{attacked:.2} s");
    assert_eq!(get(&d, "/healthz").0, 200);
}
