//! The Dockerfile cannot be built here (no Docker engine), so its steps live
//! in `scripts/docker-build.sh` too. This test keeps the two in step (the
//! same build command, the same files copied, the same user, environment and
//! health check) and runs the script: a release build from only the copied
//! files, then the binary serving as uid 10001 and answering the health check.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn the_script_follows_the_dockerfile_and_works() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let script = std::fs::read_to_string(repo().join("scripts/docker-build.sh")).expect("script");
    // The same build command.
    let run = dockerfile
        .lines()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("a RUN cargo build line")
        .trim_start_matches("RUN ")
        .trim();
    assert!(script.contains(run), "the script runs `{run}`");
    // The same files copied into the build stage.
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[1..parts.len() - 1].to_vec()
        })
        .collect();
    assert!(copied.len() >= 5, "{copied:?}");
    for c in &copied {
        assert!(
            script.contains(c),
            "the script copies {c} as the Dockerfile does"
        );
    }
    // The same user, environment and health check.
    assert!(dockerfile.contains("--uid 10001") && dockerfile.contains("USER rolloutd"));
    assert!(script.contains("--reuid=10001"));
    assert!(dockerfile.contains("ROLLOUTD_DATABASE_URL=sqlite:///var/lib/rolloutd/rolloutd.db"));
    assert!(script.contains("/var/lib/rolloutd/rolloutd.db"));
    assert!(dockerfile.contains("curl -fsS http://127.0.0.1:8080/healthz"));
    assert!(script.contains("curl -fsS \"http://127.0.0.1:$port/healthz\""));
    assert!(dockerfile.contains("CMD [\"serve\"]") && script.contains("rolloutd\" serve"));

    // A fixed directory, so a second run reuses the first one's build.
    let out = std::env::temp_dir().join("rolloutd-docker-build");
    let run = Command::new("bash")
        .arg(repo().join("scripts/docker-build.sh"))
        .arg(&out)
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "{text}");
    assert!(text.contains("healthy: curl -fsS"), "{text}");
    assert!(text.contains("state written as uid 10001"), "{text}");
    assert!(text.contains("stopped cleanly on SIGTERM"), "{text}");
    for bin in ["rolloutd", "rolloutctl"] {
        assert!(
            out.join("rootfs/usr/local/bin").join(bin).is_file(),
            "{bin}"
        );
    }
}
