//! `rolloutctl status NAME [--watch]`: one rollout's state, and with
//! `--watch` its stream of server-sent events followed to the run's end.

use std::process::ExitCode;
use std::time::Duration;

use rollout_api::{print, println, ErrorBody, RolloutResource};
use rollout_core::Phase;
use serde_json::Value;

use crate::remote::{typed, view, Client, Failure};

impl Client {
    /// Follows `path`'s server-sent events: `on(kind, data)` for each, until
    /// it answers false (`Ok(true)`) or the stream ends (`Ok(false)`).
    pub(crate) fn follow(
        &self,
        path: &str,
        mut on: impl FnMut(&str, Value) -> bool,
    ) -> Result<bool, Failure> {
        use std::io::BufRead;
        let mut r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Accept", "text/event-stream")
            .config()
            .timeout_global(None)
            .build();
        if let Some(t) = &self.token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = r
            .call()
            .map_err(|e| Failure::Unreachable(format!("{} ({e})", self.base)))?;
        let code = resp.status().as_u16();
        if code >= 400 {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(e) => Failure::Refused(code, e.error, e.details),
                Err(_) => Failure::Refused(code, text, Vec::new()),
            });
        }
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        let (mut kind, mut data) = (String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return Ok(false) };
            if let Some(k) = line.strip_prefix("event:") {
                kind = k.trim().to_string();
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if line.is_empty() && !data.is_empty() {
                let value = serde_json::from_str(&data).unwrap_or(Value::Null);
                data.clear();
                if !on(&std::mem::take(&mut kind), value) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

/// `rolloutctl status NAME [--watch]`. With `--watch` it follows the run of
/// the revision the spec names now (a run that ended before the spec
/// changed is not its end) until that run ends, and the exit code says how:
/// 0 when it succeeded, 1 (with the reason on stderr) when it was rolled
/// back, aborted or failed: a CI step that waits for a release fails with
/// it.
pub fn status(client: &Client, name: &str, watch: bool) -> ExitCode {
    if !watch {
        return match client
            .call("GET", &format!("/api/v1/rollouts/{name}"), None)
            .and_then(typed::<RolloutResource<'static>>)
        {
            Ok(item) => {
                print!("{}", view(&item));
                ExitCode::SUCCESS
            }
            Err(f) => f.report(),
        };
    }
    // Follows the rollout's stream (`/api/v1/rollouts/NAME/watch`),
    // printing each new state; reconnects when the stream breaks.
    use std::io::IsTerminal;
    let terminal = std::io::stdout().is_terminal();
    let mut shown = String::new();
    let mut outcome: Option<ExitCode> = None;
    loop {
        let followed = client.follow(&format!("/api/v1/rollouts/{name}/watch"), |kind, data| {
            let item = match kind {
                "snapshot" => data["rollout"].clone(),
                "rollout" => data,
                "deleted" => {
                    eprintln!("rolloutctl: rollout/{name} was deleted");
                    outcome = Some(ExitCode::from(1));
                    return false;
                }
                "stale" => {
                    eprintln!(
                        "rolloutctl: {}",
                        data["staleReason"]
                            .as_str()
                            .unwrap_or("the data may be stale")
                    );
                    return true;
                }
                _ => return true,
            };
            let Ok(item) = typed::<RolloutResource<'static>>(item) else {
                return true;
            };
            let text = view(&item);
            if text != shown {
                if terminal {
                    print!("\x1b[2J\x1b[H");
                } else if !shown.is_empty() {
                    println!();
                }
                print!("{text}");
                shown = text;
            }
            outcome = ended(name, &item);
            outcome.is_none()
        });
        match followed {
            Ok(true) => return outcome.unwrap_or(ExitCode::SUCCESS),
            Ok(false) => {}
            Err(f @ Failure::Unreachable(_)) if shown.is_empty() => return f.report(),
            Err(Failure::Unreachable(why)) => {
                eprintln!("rolloutctl: the stream broke ({why}); reconnecting");
            }
            Err(f) => return f.report(),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// How `status --watch` exits once the run of the revision the spec names
/// now ended: 0 when it succeeded, 1 (with the reason on stderr) when it
/// was rolled back, aborted or failed.
fn ended(name: &str, item: &RolloutResource<'static>) -> Option<ExitCode> {
    let st = item.status.as_deref()?;
    if st.revision != item.spec.revision {
        return None;
    }
    match st.phase {
        Phase::Succeeded => Some(ExitCode::SUCCESS),
        Phase::RolledBack | Phase::Aborted | Phase::Failed => {
            eprintln!(
                "rolloutctl: rollout/{name}: revision {} ended {}: {}",
                st.revision,
                st.phase.as_str(),
                st.message
            );
            Some(ExitCode::from(1))
        }
        _ => None,
    }
}
