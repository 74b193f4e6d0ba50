//! A real headless Chromium for the dashboard tests, driven over WebDriver: Debian's
//! `chromium` and `chromium-driver` (installed by `tests/env/setup.sh`) and the
//! `fantoccini` client. The helpers block, like the rest of the suite, and every wait polls
//! the page until a deadline; a wait that times out saves a screenshot and says what the
//! page showed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::fixture::free_port;
use crate::{wait_for, Daemon};

/// Window size of the laptop-sized screenshots.
pub const LAPTOP: (u32, u32) = (1280, 900);

/// Where Debian installs the browser binary (`/usr/bin/chromium` is a wrapper script).
const CHROMIUM_BINARIES: [&str; 2] = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

pub struct Browser {
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
    /// `chromedriver`, killed when the browser drops (after the session is closed).
    _driver: Daemon,
    _profile: tempfile::TempDir,
    artifacts: PathBuf,
    size: (u32, u32),
}

/// `target/test-artifacts/<name>`, beside the binaries the suite runs.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/e2e-xxxx -> target
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("test-artifacts").join(name)
}

fn missing_browser() -> String {
    "the dashboard tests need Debian's chromium and chromium-driver: run tests/env/setup.sh \
     (it installs them), or apt-get install chromium chromium-driver"
        .to_owned()
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session; screenshots go to
    /// `target/test-artifacts/<artifacts>/`. Fails, saying what to install, when either
    /// program is missing.
    pub fn start(artifacts: &str) -> Result<Self> {
        let binary = CHROMIUM_BINARIES
            .iter()
            .find(|p| Path::new(p).exists())
            .with_context(missing_browser)?;
        let driver_ok = Command::new("chromedriver")
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !driver_ok {
            bail!("chromedriver does not run; {}", missing_browser());
        }
        let port = free_port();
        let mut command = Command::new("chromedriver");
        command.arg(format!("--port={port}"));
        let driver = Daemon::spawn("chromedriver", command)?;
        let url = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver to answer /status", crate::DEADLINE, || {
            crate::http_call(&url, "GET", "/status", None, None, &[])
                .ok()
                .filter(|(s, v)| *s == 200 && v["value"]["ready"] == true)
        })?;
        let profile = tempfile::tempdir()?;
        let size = LAPTOP;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary,
                "args": [
                    "--headless=new",
                    // The suite runs as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    "--lang=en-US",
                    format!("--window-size={},{}", size.0, size.1),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(capabilities) = capabilities else {
            bail!("capabilities are an object");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(capabilities)
                    .connect(&url),
            )
            .with_context(|| format!("starting {binary} through chromedriver"))?;
        let artifacts = artifacts_dir(artifacts);
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        Ok(Self {
            client: Some(client),
            rt,
            _driver: driver,
            _profile: profile,
            artifacts,
            size,
        })
    }

    fn client(&self) -> Result<&Client> {
        self.client
            .as_ref()
            .context("the browser session is closed")
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        let c = self.client()?;
        self.rt
            .block_on(c.goto(url))
            .with_context(|| format!("opening {url}"))
    }

    /// The page's URL.
    pub fn url(&self) -> Result<String> {
        let c = self.client()?;
        Ok(self.rt.block_on(c.current_url())?.to_string())
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        let c = self.client()?;
        self.rt
            .block_on(c.execute(script, args))
            .with_context(|| format!("running script {script:?}"))
    }

    /// Clicks the element `css` names.
    pub fn click(&self, css: &str) -> Result<()> {
        let c = self.client()?;
        self.rt
            .block_on(async {
                let e = c.find(Locator::Css(css)).await?;
                e.click().await
            })
            .with_context(|| format!("clicking {css}"))
    }

    /// Replaces the text of the input `css` names, typing like a user.
    pub fn fill(&self, css: &str, text: &str) -> Result<()> {
        let c = self.client()?;
        self.rt
            .block_on(async {
                let e = c.find(Locator::Css(css)).await?;
                e.clear().await?;
                e.send_keys(text).await
            })
            .with_context(|| format!("typing into {css}"))
    }

    /// The text content of the first element `css` names (empty when there is none).
    pub fn text(&self, css: &str) -> Result<String> {
        let v = self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
            vec![json!(css)],
        )?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// How many elements `css` names.
    pub fn count(&self, css: &str) -> Result<usize> {
        let v = self.js(
            "return document.querySelectorAll(arguments[0]).length;",
            vec![json!(css)],
        )?;
        Ok(v.as_u64().unwrap_or(0) as usize)
    }

    /// Waits until `script` returns something other than `null`, `false`, `0` or `""`,
    /// and returns it. On timeout, saves `timeout-<what>.png` and reports the page's text.
    pub fn wait_js(
        &self,
        what: &str,
        script: &str,
        args: Vec<Value>,
        deadline: Duration,
    ) -> Result<Value> {
        let found = wait_for(what, deadline, || {
            self.js(script, args.clone()).ok().filter(|v| match v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            })
        });
        match found {
            Ok(v) => Ok(v),
            Err(e) => {
                let name: String = what
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                let shot = self.screenshot(&format!("timeout-{name}"));
                let page = self
                    .js("return document.body.innerText;", vec![])
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                Err(e.context(format!(
                    "the page at {} showed:\n{page}\n(screenshot: {:?})",
                    self.url().unwrap_or_default(),
                    shot.ok()
                )))
            }
        }
    }

    /// Waits until an element matches `css`.
    pub fn wait(&self, what: &str, css: &str) -> Result<()> {
        self.wait_js(
            what,
            "return document.querySelector(arguments[0]) !== null;",
            vec![json!(css)],
            crate::DEADLINE,
        )
        .map(drop)
    }

    /// Waits until the text of `css` contains `needle`; returns the whole text.
    pub fn wait_text(&self, css: &str, needle: &str) -> Result<String> {
        let v = self.wait_js(
            &format!("{css} to say {needle:?}"),
            "const e = document.querySelector(arguments[0]); \
             return e && e.textContent.includes(arguments[1]) ? e.textContent : null;",
            vec![json!(css), json!(needle)],
            crate::DEADLINE,
        )?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// Resizes the window (the next screenshots use it).
    pub fn resize(&mut self, width: u32, height: u32) -> Result<()> {
        let c = self.client()?;
        self.rt.block_on(c.set_window_size(width, height))?;
        self.size = (width, height);
        Ok(())
    }

    /// Saves a PNG of the whole page (the window is stretched to the page's height for
    /// the shot) as `<name>.png` in the artefacts folder.
    pub fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let c = self.client()?;
        // The window's height includes what is not page (outer minus inner height).
        let height = self
            .js(
                "return Math.max(document.documentElement.scrollHeight, window.innerHeight) \
                   + Math.max(0, window.outerHeight - window.innerHeight);",
                vec![],
            )?
            .as_u64()
            .unwrap_or(u64::from(self.size.1));
        let (width, base) = self.size;
        let tall = u32::try_from(height).unwrap_or(base).clamp(base, 5000);
        let png = self.rt.block_on(async {
            if tall != base {
                c.set_window_size(width, tall).await?;
            }
            let png = c.screenshot().await;
            if tall != base {
                c.set_window_size(width, base).await?;
            }
            png
        })?;
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
    }
}
