//! A minimal Chrome DevTools Protocol client, enough to drive Debian's
//! `chromium` from a test without any JavaScript tooling: start it headless
//! on a throwaway profile, open a page, evaluate expressions, type and click.
//!
//! It speaks CDP over one WebSocket to the browser (found through the
//! `DevToolsActivePort` file chromium writes into its profile) and talks to
//! the page through a flattened target session. Synchronous: run it on a
//! blocking thread (`tokio::task::spawn_blocking`). The browser is killed
//! and its profile removed when the [`Browser`] is dropped.

use std::error::Error;
use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub type BoxError = Box<dyn Error + Send + Sync>;

/// How long chromium may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one CDP answer.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Kills the browser when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headless chromium and one page in it.
pub struct Browser {
    // Dropped in this order: the socket, the process, then its profile.
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    _process: Process,
    _profile: tempfile::TempDir,
    next_id: u64,
    session: Option<String>,
}

impl Browser {
    /// Start `binary` headless and connect to it.
    pub fn launch(binary: &Path) -> Result<Browser, BoxError> {
        let profile = tempfile::tempdir()?;
        let log_path = profile.path().join("chromium.log");
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--no-first-run",
                "--no-default-browser-check",
                "--no-proxy-server",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log_path)?)
            .spawn()?;
        let mut process = Process(child);
        let port_file = profile.path().join("DevToolsActivePort");
        let started = Instant::now();
        let (port, path) = loop {
            if let Ok(text) = fs::read_to_string(&port_file)
                && let Some((port, path)) = text.split_once('\n')
                && !path.trim().is_empty()
            {
                break (port.trim().to_owned(), path.trim().to_owned());
            }
            let exited = process.0.try_wait()?;
            if exited.is_some() || started.elapsed() > START_TIMEOUT {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let tail: String = log.lines().rev().take(15).collect::<Vec<_>>().join("\n");
                return Err(format!(
                    "chromium did not start ({exited:?}); its log ends with:\n{tail}"
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (mut socket, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}{path}"))?;
        if let MaybeTlsStream::Plain(stream) = socket.get_mut() {
            stream.set_read_timeout(Some(READ_TIMEOUT))?;
        }
        Ok(Browser {
            socket,
            _process: process,
            _profile: profile,
            next_id: 0,
            session: None,
        })
    }

    /// Send one command (to the page's session when `page`) and wait for its answer.
    fn send(&mut self, page: bool, method: &str, params: Value) -> Result<Value, BoxError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if page {
            let session = self.session.clone().ok_or("no page is open")?;
            message["sessionId"] = Value::String(session);
        }
        self.socket.send(Message::text(message.to_string()))?;
        loop {
            let Message::Text(text) = self.socket.read()? else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str())?;
            if reply["id"] != json!(id) {
                continue; // an event, or another session's answer
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("{method}: {error}").into());
            }
            return Ok(reply["result"].clone());
        }
    }

    /// Open `url` in a new page and attach to it.
    pub fn open(&mut self, url: &str) -> Result<(), BoxError> {
        let target = self.send(false, "Target.createTarget", json!({ "url": url }))?;
        let target_id = target["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let attached = self.send(
            false,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        )?;
        let session = attached["sessionId"].as_str().ok_or("no sessionId")?;
        self.session = Some(session.to_owned());
        Ok(())
    }

    /// Evaluate a JavaScript expression in the page and return its value.
    pub fn eval(&mut self, expression: &str) -> Result<Value, BoxError> {
        let result = self.send(
            true,
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )?;
        if let Some(details) = result.get("exceptionDetails") {
            return Err(format!("{expression}: {details}").into());
        }
        Ok(result["result"]["value"].clone())
    }

    /// Poll `expression` until it is `true` (errors while a page loads
    /// count as "not yet").
    pub fn wait_until(&mut self, expression: &str, timeout: Duration) -> Result<(), BoxError> {
        let started = Instant::now();
        loop {
            if let Ok(Value::Bool(true)) = self.eval(expression) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                let text = self
                    .eval("document.location.href + '\\n' + document.body.innerText")
                    .unwrap_or_default();
                return Err(
                    format!("timed out waiting for {expression}; the page shows:\n{text}").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Focus the element `selector` finds and type `text` into it.
    pub fn type_into(&mut self, selector: &str, text: &str) -> Result<(), BoxError> {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.focus(); return true; }})()",
            json!(selector)
        ))?;
        if found != Value::Bool(true) {
            return Err(format!("nothing matches {selector}").into());
        }
        self.send(true, "Input.insertText", json!({ "text": text }))?;
        Ok(())
    }

    /// Click the element `selector` finds.
    pub fn click(&mut self, selector: &str) -> Result<(), BoxError> {
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; e.click(); return true; }})()",
            json!(selector)
        ))?;
        if found != Value::Bool(true) {
            return Err(format!("nothing matches {selector}").into());
        }
        Ok(())
    }

    /// Let the browser save downloads into `dir` (for a test to read).
    pub fn allow_downloads(&mut self, dir: &Path) -> Result<(), BoxError> {
        self.send(
            false,
            "Browser.setDownloadBehavior",
            json!({ "behavior": "allow", "downloadPath": dir.display().to_string() }),
        )?;
        Ok(())
    }

    /// The page as it looks now, as PNG, written to `path`.
    pub fn screenshot(&mut self, path: &Path) -> Result<(), BoxError> {
        use base64::Engine as _;
        let shot = self.send(
            true,
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        )?;
        let data = shot["data"].as_str().ok_or("no screenshot data")?;
        fs::write(
            path,
            base64::engine::general_purpose::STANDARD.decode(data)?,
        )?;
        Ok(())
    }

    /// Go to `url` in the open page.
    pub fn navigate(&mut self, url: &str) -> Result<(), BoxError> {
        self.send(true, "Page.navigate", json!({ "url": url }))?;
        Ok(())
    }
}
