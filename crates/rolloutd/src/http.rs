//! The API's HTTP server, with limits: a client that sends its headers too
//! slowly, dribbles its body, sits idle on a kept-alive connection or keeps
//! a request running too long is cut off; at most `max_connections`
//! connections are open at once (so the process keeps file descriptors for
//! its database and AWS): at the cap the connection that has waited longest
//! for a request makes room for a new one; on shutdown open connections get
//! `shutdown_grace` to finish.
//!
//! hyper serves each connection (HTTP/1.1; the TLS listener offers only
//! that). Its header read timeout also runs while a kept-alive connection
//! waits for its next request, so the idle timeout here is the longer
//! bound of the two: it closes a connection with no request in flight once
//! nothing has been read or written for that long.

use rollout_core::sync::lock;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{Request, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, Semaphore};
use tower::ServiceExt;
use tracing::{debug, warn};

/// How many finished handshakes the kernel may queue for `accept` (Linux
/// caps it at `net.core.somaxconn`, 4096 by default). tokio's `bind` asks
/// for 1,024: in a burst beyond that (a reconnect storm, a flood held at
/// the connection cap) the kernel drops the handshake's last ACK and the
/// client waits for SYN-ACK retransmissions, 1 + 2 + 4 + 8 + 16 s, before
/// it is even seen, and health checks queue behind it.
pub const ACCEPT_BACKLOG: u32 = 4096;

/// Listens on `addr` (host:port, names resolved; the first address that
/// binds wins) with a deep accept queue ([`ACCEPT_BACKLOG`]).
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(ACCEPT_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// The server's limits (config keys `http*`, see docs/operations.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request's headers must arrive within this (from its first byte,
    /// or from the end of the previous request on a kept-alive connection).
    pub header_timeout: Duration,
    /// A whole request, body and answer, must be done within this.
    pub request_timeout: Duration,
    /// A kept-alive connection with nothing in flight is closed after this.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// On shutdown, how long open connections may take to finish.
    pub shutdown_grace: Duration,
}

impl HttpLimits {
    /// The defaults, with the connection cap kept below the process's
    /// file-descriptor limit (`soft_nofile`), leaving 256 for the database
    /// pools, AWS connections, the specs directory and logs.
    pub fn defaults(soft_nofile: Option<u64>) -> HttpLimits {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: default_max_connections(soft_nofile),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Half of what the file-descriptor limit leaves after 256 for the rest of
/// the process, between 16 and 4,096 (an idle connection costs about 16 KB:
/// 4,096 of them stay under 64 MB); 1,024 when the limit is unknown.
pub fn default_max_connections(soft_nofile: Option<u64>) -> usize {
    match soft_nofile {
        Some(n) => usize::try_from((n.saturating_sub(256) / 2).clamp(16, 4096)).unwrap_or(1024),
        None => 1024,
    }
}

/// Raises the process's soft limit of open files to its hard limit (as Go's
/// runtime and most servers do: the soft limit is often 1,024 while the hard
/// one allows far more). Returns the limit before and after, or why not.
#[cfg(unix)]
pub fn raise_open_files_limit() -> Result<(u64, u64), String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (now.current, now.maximum) else {
        return Err("the soft limit of open files is already unlimited".into());
    };
    // Linux refuses more than fs.nr_open (1,048,576 by default) even when
    // the hard limit says "unlimited".
    let target = hard.unwrap_or(1 << 20);
    if target <= soft {
        return Ok((soft, soft));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(target),
            maximum: hard,
        },
    )
    .map_err(|e| format!("cannot raise the open-files limit from {soft} to {target}: {e}"))?;
    Ok((soft, target))
}

/// The process's soft limit of open files (Linux: `/proc/self/limits`).
pub fn soft_nofile() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Serves `app` on `listener` until `stop` turns true, then gives open
/// connections `limits.shutdown_grace` to finish.
///
/// At the connection cap a new connection is still accepted, and the open
/// connection that has waited longest for a request (a client sending its
/// headers slowly, or a kept-alive connection sitting idle) is closed to
/// make room: a flood of slow clients beyond the cap cannot lock out a
/// health check or a command. Only when every open connection has a
/// request in flight does the new one wait for a slot.
pub async fn serve<L>(mut listener: L, app: Router, limits: HttpLimits, stop: watch::Receiver<bool>)
where
    L: axum::serve::Listener,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cap = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let permits = Arc::new(Semaphore::new(cap as usize));
    let open = Arc::new(Open::default());
    let mut stopping = stop.clone();
    loop {
        let (io, _) = tokio::select! {
            c = listener.accept() => c,
            _ = stopped(&mut stopping) => break,
        };
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if open.evict_longest_waiting() {
                    debug!("at the connection cap: closed the connection waiting longest for a request");
                }
                tokio::select! {
                    p = Arc::clone(&permits).acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = stopped(&mut stopping) => break,
                }
            }
        };
        let app = app.clone();
        let stop = stop.clone();
        let activity = open.register();
        let open = Arc::clone(&open);
        tokio::spawn(async move {
            let id = activity.id;
            connection(io, app, limits, stop, activity).await;
            open.forget(id);
            drop(permit);
        });
    }
    // No new connections; the open ones were told to finish.
    drop(listener);
    let waited = tokio::time::timeout(
        limits.shutdown_grace + Duration::from_secs(1),
        permits.acquire_many(cap),
    )
    .await;
    if waited.is_err() {
        warn!(
            grace = ?limits.shutdown_grace,
            "HTTP connections still open after the shutdown grace; closing them"
        );
    }
}

/// The open connections, for choosing one to close at the cap.
struct Open {
    epoch: tokio::time::Instant,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Default for Open {
    fn default() -> Open {
        Open {
            epoch: tokio::time::Instant::now(),
            next: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        }
    }
}

impl Open {
    fn register(&self) -> Arc<Activity> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            id,
            epoch: self.epoch,
            last_ms: AtomicU64::new(since(self.epoch)),
            waiting_since_ms: AtomicU64::new(since(self.epoch)),
            in_flight: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        {
            let mut conns = lock(&self.conns);
            conns.insert(id, Arc::clone(&activity));
        }
        activity
    }

    fn forget(&self, id: u64) {
        {
            let mut conns = lock(&self.conns);
            conns.remove(&id);
        }
    }

    /// Tells the connection with no request in flight that has waited
    /// longest for one to close; false when every connection is busy.
    fn evict_longest_waiting(&self) -> bool {
        let conns = lock(&self.conns);
        let victim = conns
            .values()
            .filter(|a| {
                a.in_flight.load(Ordering::Relaxed) == 0 && !a.evicted.load(Ordering::Relaxed)
            })
            .min_by_key(|a| (a.waiting_since_ms.load(Ordering::Relaxed), a.id));
        match victim {
            Some(a) => {
                a.evicted.store(true, Ordering::Relaxed);
                a.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Milliseconds from `epoch` to now.
fn since(epoch: tokio::time::Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// When something was last read or written on a connection, since when it
/// has waited for a request, and how many requests are in flight on it.
struct Activity {
    id: u64,
    epoch: tokio::time::Instant,
    last_ms: AtomicU64,
    waiting_since_ms: AtomicU64,
    in_flight: AtomicUsize,
    evicted: AtomicBool,
    evict: Notify,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(since(self.epoch), Ordering::Relaxed);
    }
}

/// An IO that notes its activity.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Counts a request in flight while it lives.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .waiting_since_ms
            .store(since(self.0.epoch), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection<I>(
    io: I,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Watched {
        inner: io,
        activity: Arc::clone(&activity),
    };
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req: Request<Incoming>| {
            activity.in_flight.fetch_add(1, Ordering::Relaxed);
            let guard = InFlight(Arc::clone(&activity));
            let app = app.clone();
            async move {
                let _guard = guard;
                // The whole request: reading its body (the handlers read
                // it) and answering.
                match tokio::time::timeout(limits.request_timeout, app.oneshot(req)).await {
                    Ok(r) => r,
                    Err(_) => Ok((
                        StatusCode::REQUEST_TIMEOUT,
                        axum::Json(crate::openapi::ErrorBody {
                            error: format!(
                                "the request took longer than {} s (body and answer)",
                                limits.request_timeout.as_secs()
                            ),
                            details: Vec::new(),
                        }),
                    )
                        .into_response()),
                }
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let tick = (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut check = tokio::time::interval(tick);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                if tokio::time::timeout(limits.shutdown_grace, conn.as_mut()).await.is_err() {
                    debug!("HTTP connection cut at the end of the shutdown grace");
                }
                return;
            }
            _ = activity.evict.notified() => return,
            _ = check.tick() => {
                let idle_for = Duration::from_millis(
                    since(activity.epoch).saturating_sub(activity.last_ms.load(Ordering::Relaxed)),
                );
                if activity.in_flight.load(Ordering::Relaxed) == 0 && idle_for >= limits.idle_timeout {
                    debug!(?idle_for, "closing an idle HTTP connection");
                    return;
                }
            }
        }
    }
}
