//! moto's server, started for a test: a Python venv with `moto[server]` is
//! made on first use (PyPI must be reachable; the venv is kept for the next
//! run), then `python -m moto.server` runs on a free port until dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The moto release the tests are written against.
pub const MOTO: &str = "moto[server]==5.2.5";

/// Where the venv lives: `$ROLLOUTD_MOTO_VENV`, or a directory under the
/// system's temporary directory named after the pinned release.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("ROLLOUTD_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("rolloutd-moto-5.2.5"))
}

fn python(venv: &Path) -> PathBuf {
    venv.join("bin").join("python")
}

fn has_moto(venv: &Path) -> bool {
    Command::new(python(venv))
        .args(["-c", "import moto.server, flask"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes the venv unless it is already there. Several test processes may
/// race here: each builds in its own directory and renames it into place;
/// the tests of one process take turns (they would share the directory).
pub fn ensure_venv() -> anyhow::Result<PathBuf> {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = BUILDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let venv = venv_dir();
    if has_moto(&venv) {
        return Ok(venv);
    }
    let tmp = venv.with_extension(format!("building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let run = |cmd: &mut Command, what: &str| -> anyhow::Result<()> {
        let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&tmp),
        "python3 -m venv (moto's server needs Python 3)",
    )?;
    run(
        Command::new(python(&tmp)).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            MOTO,
        ]),
        &format!("pip install '{MOTO}' (PyPI must be reachable)"),
    )?;
    if std::fs::rename(&tmp, &venv).is_err() {
        // Another process won the race; use its venv.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if !has_moto(&venv) {
        bail!("moto is not importable from {}", venv.display());
    }
    Ok(venv)
}

/// A running moto server.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto's server on a free port; its log goes to `log`.
    pub fn start(log: &Path) -> anyhow::Result<Moto> {
        let venv = ensure_venv()?;
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let out = std::fs::File::create(log)?;
            let mut child = Command::new(python(&venv))
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .context("cannot start moto's server")?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Some(status) = child.try_wait()? {
                    // Most likely the port was taken in between: try another.
                    let _ = status;
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(Moto {
                        url: format!("http://127.0.0.1:{port}"),
                        child,
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("moto's server did not start; see {}", log.display())
    }
}
