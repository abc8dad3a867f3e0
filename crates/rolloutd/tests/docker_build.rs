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
    // The same strip step: the image gets binaries without symbols.
    let strip = dockerfile
        .lines()
        .find(|l| l.starts_with("RUN mkdir -p out && for b in"))
        .expect("a RUN line that strips the binaries")
        .trim_start_matches("RUN ")
        .trim();
    assert!(script.contains(strip), "the script strips as `{strip}`");
    assert!(dockerfile.contains("COPY --from=build /src/out/rolloutd /src/out/rolloutctl"));
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
    // On 0.0.0.0 with the token from the secret's path.
    assert!(dockerfile.contains("ROLLOUTD_LISTEN=0.0.0.0:8080"));
    assert!(dockerfile.contains("ROLLOUTD_API_TOKEN_FILE=/run/secrets/rolloutd-api-token"));
    assert!(script.contains("ROLLOUTD_LISTEN=\"0.0.0.0:$port\""));
    assert!(script.contains("ROLLOUTD_API_TOKEN_FILE=\"$out/secrets/rolloutd-api-token\""));

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
    assert!(text.contains("refused without a token"), "{text}");
    assert!(text.contains("healthy: curl -fsS"), "{text}");
    assert!(text.contains("stripped: rolloutd"), "{text}");
    assert!(text.contains("state written as uid 10001"), "{text}");
    assert!(text.contains("stopped cleanly on SIGTERM"), "{text}");
    for bin in ["rolloutd", "rolloutctl"] {
        assert!(
            out.join("rootfs/usr/local/bin").join(bin).is_file(),
            "{bin}"
        );
    }
}
