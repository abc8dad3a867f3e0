//! A real local HTTP server that receives rolloutd's outgoing calls
//! (webhook steps, notifications) in tests: it records every request and
//! answers as its `answer` function says (a status, after a delay).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use rollout_core::sync::lock;

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When, since the receiver started.
    pub at: Duration,
    /// The path.
    pub path: String,
    /// The headers, lowercased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Received {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How to answer a request: (HTTP status, body, delay before answering).
pub type Answer = (u16, String, Duration);

type AnswerFn = dyn Fn(&Received) -> Answer + Send + Sync;

/// The running receiver; stops when dropped.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Listens on a free loopback port; `answer` decides each reply.
    pub async fn start(
        answer: impl Fn(&Received) -> Answer + Send + Sync + 'static,
    ) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let answer: Arc<AnswerFn> = Arc::new(answer);
        let started = Instant::now();
        let app = {
            let received = Arc::clone(&received);
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                let received = Arc::clone(&received);
                let answer = Arc::clone(&answer);
                async move {
                    let r = Received {
                        at: started.elapsed(),
                        path: uri.path().to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect(),
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let (status, text, delay) = answer(&r);
                    lock(&received).push(r);
                    tokio::time::sleep(delay).await;
                    (
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        text,
                    )
                }
            })
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            url,
            received,
            task,
        })
    }

    /// Every request so far, in the order they arrived.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }
}
