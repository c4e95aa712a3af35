//! A real browser for tests: Debian's headless chromium, driven over WebDriver by chromedriver
//! on a loopback port. Tests fail with an install hint when either is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use fantoccini::{Client, Locator};

pub struct Browser {
    pub client: Client,
    driver: Child,
    screenshots: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    /// Starts chromedriver and a headless chromium with a phone-sized window. Screenshots go to
    /// `screenshots` (a test's artifacts directory).
    ///
    /// The test servers' certificates chain to a CA made for the test, which the browser's
    /// trust store cannot know: certificate errors are accepted for this session only.
    pub async fn start(screenshots: &Path) -> Browser {
        crate::require_tool("chromium", "chromium");
        crate::require_tool("chromedriver", "chromium-driver");
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let mut guard = DriverGuard(Some(driver));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "chromedriver did not listen on port {port} within 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert("acceptInsecureCerts".into(), true.into());
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=412,915", "--no-first-run"],
            }),
        );
        let client = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("opening a chromium session through chromedriver");
        std::fs::create_dir_all(screenshots).unwrap();
        Browser { client, driver: guard.0.take().unwrap(), screenshots: screenshots.to_path_buf() }
    }

    /// Saves a PNG of the page as `<name>.png` in the screenshots directory.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Ends the browser session (chromium exits) and stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        stop(&mut self.driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        stop(&mut self.driver);
    }
}

/// Stops chromedriver if the session never opened.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            stop(c);
        }
    }
}

/// SIGTERM first: chromedriver then quits the browsers it started (SIGKILL would orphan them).
fn stop(driver: &mut Child) {
    if matches!(driver.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill").arg("-TERM").arg(driver.id().to_string()).status();
    for _ in 0..40 {
        if matches!(driver.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = driver.kill();
    let _ = driver.wait();
}
