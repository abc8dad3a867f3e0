//! `--tls-cert-file`/`--tls-key-file`: the real binary serves its API over
//! HTTPS (a certificate made for the test with the `openssl` command), and
//! refuses to start with half a configuration or a key that does not match.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn openssl_cert(dir: &Path, name: &str) {
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(dir.join(format!("{name}.crt")))
        .output()
        .expect("the openssl command (Debian package openssl) makes the test certificate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_api_is_served_over_https() {
    let dir = std::env::temp_dir().join(format!("rolloutd-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    openssl_cert(&dir, "server");
    openssl_cert(&dir, "other");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let serve = |cert: &str, key: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rolloutd"));
        cmd.arg("serve")
            .arg("--database-url")
            .arg(format!("sqlite://{}", dir.join("state.db").display()))
            .arg("--simulate-world")
            .arg(format!("sqlite://{}", dir.join("world.db").display()))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert-file")
            .arg(dir.join(cert))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(k) = key {
            cmd.arg("--tls-key-file").arg(dir.join(k));
        }
        cmd
    };

    // Half a configuration, or a key of another certificate: refused.
    let half = serve("server.crt", None).output().expect("run");
    assert!(!half.status.success());
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("TLS needs both"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
    let wrong = serve("server.crt", Some("other.key"))
        .output()
        .expect("run");
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("do not match"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    let mut child = serve("server.crt", Some("server.key"))
        .spawn()
        .expect("rolloutd");
    let url = format!("https://localhost:{port}/healthz");
    let ca = dir.join("server.crt").display().to_string();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let t = Instant::now();
    let mut answer = (false, String::new());
    while t.elapsed() < Duration::from_secs(30) {
        answer = curl(&["--cacert", &ca, "--resolve", &resolve, &url]);
        if answer.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(answer.0, "HTTPS health check: {}", answer.1);
    assert!(answer.1.contains("\"ok\""), "{}", answer.1);
    // The certificate is checked: without trusting it, curl refuses.
    let untrusted = curl(&["--resolve", &resolve, &url]);
    assert!(!untrusted.0, "{}", untrusted.1);
    // Plain HTTP gets no answer.
    let plain = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(!plain.0, "plain HTTP must not be served: {}", plain.1);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
