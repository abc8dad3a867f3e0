//! Outgoing HTTP: the calls of webhook steps. Each call is one POST of a
//! JSON body, made on a blocking thread (ureq, rustls with aws-lc-rs, the
//! system's roots), with the step's timeout; the answer is classified for
//! the core ([`WebhookOutcome`]): 2xx passes, any other status refuses, no
//! answer is retried by the core.

use std::time::Duration;

use hmac::{Hmac, Mac};
use rollout_core::WebhookOutcome;
use rollout_spec::Webhook;
use sha2::Sha256;

/// The most of an answer's body read (its reason).
const MAX_ANSWER: u64 = 64 * 1024;
/// The most of a reason kept in messages.
const MAX_REASON: usize = 300;

/// An HTTP client for hooks.
#[derive(Clone)]
pub struct Hooks {
    agent: ureq::Agent,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks::new()
    }
}

impl Hooks {
    /// A client trusting the system's root certificates.
    pub fn new() -> Hooks {
        let roots: Vec<ureq::tls::Certificate<'static>> = rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .into();
        Hooks { agent }
    }

    /// POSTs `body` (JSON) to `url` with `headers`, within `timeout`: the
    /// answer's status and (the start of) its body, or why there was none.
    pub async fn post(
        &self,
        url: String,
        body: String,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<(u16, String), String> {
        let agent = self.agent.clone();
        tokio::task::spawn_blocking(move || {
            let mut req = agent
                .post(&url)
                .config()
                .timeout_global(Some(timeout))
                .build()
                .header("Content-Type", "application/json")
                .header(
                    "User-Agent",
                    concat!("rolloutd/", env!("CARGO_PKG_VERSION")),
                );
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let mut answer = req
                .send(&body)
                .map_err(|e| format!("{}: {e}", crate::redact::redact(&url)))?;
            let text = answer
                .body_mut()
                .with_config()
                .limit(MAX_ANSWER)
                .read_to_string()
                .unwrap_or_default();
            Ok((answer.status().as_u16(), text))
        })
        .await
        .unwrap_or_else(|e| Err(format!("the call did not finish: {e}")))
    }

    /// POSTs `body` to the webhook and says how it went.
    pub async fn call(&self, hook: &Webhook, body: String) -> WebhookOutcome {
        let mut headers = Vec::new();
        if let Some(path) = &hook.secret_file {
            match read_secret(path, "secret") {
                Ok(key) => headers.push((
                    "X-Rolloutd-Signature".to_string(),
                    signature(key.as_bytes(), body.as_bytes()),
                )),
                Err(message) => return WebhookOutcome::NoAnswer { message },
            }
        }
        for (name, path) in &hook.header_files {
            match read_secret(path, &format!("`{name}` header")) {
                Ok(value) => headers.push((name.clone(), value)),
                Err(message) => return WebhookOutcome::NoAnswer { message },
            }
        }
        let timeout = Duration::from_millis(hook.timeout.as_millis());
        match self.post(hook.url.clone(), body, headers, timeout).await {
            Ok((status, text)) if (200..300).contains(&status) => WebhookOutcome::Passed {
                status,
                reason: reason_of(&text),
            },
            Ok((status, text)) => WebhookOutcome::Refused {
                status,
                reason: reason_of(&text),
            },
            Err(message) => WebhookOutcome::NoAnswer { message },
        }
    }
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes a key of any length; kept total all the same.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A secret from a file on the host, without its final newline.
pub fn read_secret(path: &str, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("cannot read the {what} file {path}: {e}"))
}

/// The answer's reason: its JSON `reason` (or `message`) field, else the
/// start of its text, on one line.
fn reason_of(text: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            ["reason", "message"]
                .iter()
                .find_map(|k| v.get(k).and_then(|r| r.as_str()).map(str::to_string))
        });
    let reason = from_json.unwrap_or_else(|| text.trim().to_string());
    let one_line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    one_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_reason_comes_from_the_json_or_the_text() {
        assert_eq!(
            reason_of(r#"{"reason":"smoke test failed: /health 503"}"#),
            "smoke test failed: /health 503"
        );
        assert_eq!(reason_of("not ok\nat all"), "not ok at all");
        assert_eq!(reason_of(&"x".repeat(1000)).len(), MAX_REASON);
    }
}
