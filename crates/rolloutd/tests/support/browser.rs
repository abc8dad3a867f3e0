//! Real headless Chromium (Debian's `chromium` package) driven over the
//! Chrome DevTools Protocol: launched with `--remote-debugging-port=0`, one
//! WebSocket to the browser, pages attached as flat sessions. Installs the
//! package when it is missing and fails loudly when it cannot.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Makes sure Debian's Chromium is installed: installs it with apt-get when
/// missing; panics with apt-get's output when that fails.
pub fn ensure_chromium() -> PathBuf {
    if Path::new(CHROMIUM).exists() {
        return PathBuf::from(CHROMIUM);
    }
    let out = Command::new("apt-get")
        .args(["install", "-y", "chromium"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output();
    match out {
        Ok(o) if o.status.success() && Path::new(CHROMIUM).exists() => PathBuf::from(CHROMIUM),
        Ok(o) => panic!(
            "the browser tests need Debian's chromium and `apt-get install -y chromium` failed ({}):\n{}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("the browser tests need Debian's chromium; apt-get could not run: {e}"),
    }
}

/// A running headless Chromium, killed when dropped.
pub struct Browser {
    child: Child,
    ws: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Events read while waiting for answers, not yet looked at.
    pending: VecDeque<Value>,
    /// Console errors, uncaught exceptions and error log entries, as text.
    pub errors: Vec<String>,
    _profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One tab.
#[derive(Clone)]
pub struct Page {
    session: String,
}

impl Browser {
    /// Launches Chromium with a fresh profile under `dir`.
    pub fn launch(dir: &Path) -> Browser {
        let exe = ensure_chromium();
        let profile = dir.join("chromium-profile");
        let _ = std::fs::remove_dir_all(&profile);
        let mut child = Command::new(exe)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = tx.send(url.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium printed its DevTools address within 60 s");
        let (ws, _) = tungstenite::connect(url.as_str()).expect("DevTools WebSocket");
        Browser {
            child,
            ws,
            next_id: 0,
            pending: VecDeque::new(),
            errors: Vec::new(),
            _profile: profile,
        }
    }

    fn read(&mut self) -> Value {
        loop {
            match self.ws.read().expect("DevTools message") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
                Message::Close(_) => panic!("chromium closed the DevTools connection"),
                _ => {}
            }
        }
    }

    fn note(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| {
                                v["value"]
                                    .as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v["description"].to_string())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "uncaught: {}",
                params["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .unwrap_or_else(|| params["exceptionDetails"]["text"].as_str().unwrap_or("?"))
            )),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors.push(format!(
                    "log: {} ({})",
                    params["entry"]["text"].as_str().unwrap_or("?"),
                    params["entry"]["url"].as_str().unwrap_or("")
                ))
            }
            _ => {}
        }
    }

    /// Sends `method` (to the page's session when given) and returns its
    /// result; panics on a protocol error.
    pub fn call(&mut self, page: Option<&Page>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(p) = page {
            msg["sessionId"] = json!(p.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to DevTools");
        loop {
            let m = self.read();
            if m["id"] == id {
                if let Some(e) = m.get("error") {
                    panic!("{method}: {e}");
                }
                return m["result"].clone();
            }
            self.note(&m);
            self.pending.push_back(m);
            if self.pending.len() > 10_000 {
                self.pending.pop_front();
            }
        }
    }

    /// A new tab (its own session storage) at `url`, with console and log
    /// errors recorded.
    pub fn open(&mut self, url: &str) -> Page {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        let page = Page {
            session: attached["sessionId"].as_str().expect("session").to_string(),
        };
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            self.call(Some(&page), m, json!({}));
        }
        self.viewport(&page, 1280, 1000, false);
        self.call(Some(&page), "Page.navigate", json!({"url": url}));
        page
    }

    /// Makes the page `width`×`height` CSS pixels, as a phone when `mobile`.
    pub fn viewport(&mut self, page: &Page, width: u32, height: u32, mobile: bool) {
        self.call(
            Some(page),
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": if mobile { 2 } else { 1 }, "mobile": mobile}),
        );
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its
    /// value; panics when it throws.
    pub fn eval(&mut self, page: &Page, expr: &str) -> Value {
        let r = self.call(
            Some(page),
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("`{expr}` threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is truthy; panics after `limit` with `why`.
    pub fn wait_for(&mut self, page: &Page, expr: &str, limit: Duration, why: &str) -> Value {
        let t = Instant::now();
        loop {
            let v = self.eval(
                page,
                &format!("(() => {{ try {{ return {expr}; }} catch (e) {{ return null; }} }})()"),
            );
            let truthy = !(v.is_null() || v == json!(false) || v == json!(0) || v == json!(""));
            if truthy {
                return v;
            }
            assert!(t.elapsed() < limit, "{why}: not within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Presses a key as a keyboard would (`Tab`, `Enter`, `Escape`).
    pub fn press(&mut self, page: &Page, key: &str) {
        let (code, text) = match key {
            "Tab" => (9, ""),
            "Enter" => (13, "\r"),
            "Escape" => (27, ""),
            other => panic!("no key code for {other}"),
        };
        let mut down = json!({"type": "keyDown", "key": key, "code": key, "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code});
        if !text.is_empty() {
            down["text"] = json!(text);
        }
        self.call(Some(page), "Input.dispatchKeyEvent", down);
        self.call(
            Some(page),
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": key, "code": key, "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code}),
        );
    }

    /// A PNG of the page, written to `path`.
    pub fn screenshot(&mut self, page: &Page, path: &Path) {
        let r = self.call(
            Some(page),
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let data = r["data"].as_str().expect("screenshot data");
        std::fs::write(path, base64_decode(data)).expect("write screenshot");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let Some(v) = T.iter().position(|&t| t == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
