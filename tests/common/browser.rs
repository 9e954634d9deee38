//! A real browser for the status page's tests: Debian's `chromium`, headless, driven over
//! WebDriver (`fantoccini`) through a `chromedriver` this test starts on a free port, with
//! a profile of its own in a temp folder. Everything it started is killed by process
//! group when the `Browser` is dropped, also when the test fails.
//!
//! The tests are synchronous; the WebDriver client is async, so the `Browser` owns a
//! current-thread tokio runtime and blocks on each command.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::{free_port, wait_for};

/// Chromium's switches for a browser that talks to nothing but the page under test.
const CHROMIUM_ARGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// The browser's profile: removed after the processes that use it are gone.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless chromium of `width`×`height`.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let profile = tempfile::tempdir().expect("a temp folder for the browser profile");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver runs (Debian's chromium-driver; scripts/test installs it)");
        let mut browser = Browser {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the WebDriver client"),
            client: None,
            driver,
            _profile: profile,
        };
        wait_for("chromedriver to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        args.push(format!("--window-size={width},{height}"));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "unhandledPromptBehavior": "ignore",
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let driver_url = format!("http://127.0.0.1:{port}");
        let client = browser
            .runtime
            .block_on(builder.connect(&driver_url))
            .expect("a WebDriver session with chromium");
        browser.client = Some(client);
        browser
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// Runs `script` in the page (`return ...` for a value) and returns its value.
    pub fn run(&self, script: &str) -> Value {
        self.runtime
            .block_on(self.client().execute(script, Vec::new()))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns `true`; panics naming `what` after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, script: &str) {
        wait_for(what, timeout, || self.run(script) == Value::Bool(true));
    }

    /// Clicks the element `css` selects; found again if the page redrew it between the
    /// finding and the click (a stale element).
    pub fn click(&self, css: &str) {
        let client = self.client();
        wait_for(
            &format!("a click on {css}"),
            Duration::from_secs(30),
            || {
                let clicked = self
                    .runtime
                    .block_on(async { client.find(Locator::Css(css)).await?.click().await });
                match clicked {
                    Ok(()) => true,
                    Err(e) if e.to_string().contains("stale element") => false,
                    Err(e) => panic!("cannot click {css}: {e}"),
                }
            },
        );
    }

    /// Types `text` into the field `css` selects, after clearing it.
    pub fn type_into(&self, css: &str, text: &str) {
        let client = self.client();
        self.runtime
            .block_on(async {
                let field = client.find(Locator::Css(css)).await?;
                field.clear().await?;
                field.send_keys(text).await
            })
            .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
    }

    /// The text of an open `alert()` dialog, if one is open.
    pub fn dialog_text(&self) -> Option<String> {
        self.runtime.block_on(self.client().get_alert_text()).ok()
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        self.runtime
            .block_on(self.client().screenshot())
            .expect("a screenshot of the page")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        // chromedriver and the chromium it started share its process group.
        let _ = killpg(Pid::from_raw(self.driver.id() as i32), Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}
