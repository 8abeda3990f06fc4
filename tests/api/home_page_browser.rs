//! The home page in headless Chromium through Selenium
//! (`tests/browser/home_page.py`): the DOM a person sees, with and without
//! JavaScript, the look-up and copy button, no request elsewhere, and
//! screenshots at phone and desktop widths under `target/home-page/`.
//! `HOMING_BROWSER_PYTHON` names a Python with `selenium` (default
//! `python3`); the browser and driver are Debian's `chromium` and
//! `chromium-driver`. Without them the test says so and skips, unless
//! `HOMING_REQUIRE_BROWSER` is set, as CI sets it.

use std::time::{Duration, Instant};

use crate::home_page::{about_app, assert_strict_policy, HOSTILE};

fn python() -> String {
    std::env::var("HOMING_BROWSER_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Where chromedriver and chromium are (Debian's packages).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// True when the browser test can run; otherwise says why.
fn browser_available() -> bool {
    let selenium = std::process::Command::new(python())
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|output| output.status.success());
    let browser =
        std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists();
    if !(selenium && browser) {
        assert!(
            std::env::var_os("HOMING_REQUIRE_BROWSER").is_none(),
            "HOMING_REQUIRE_BROWSER is set but {} has no selenium or {CHROMEDRIVER} / {CHROMIUM} is missing",
            python()
        );
        eprintln!(
            "skipped: needs Debian's chromium and chromium-driver and a Python with selenium \
             (HOMING_BROWSER_PYTHON; .ci/run installs them)"
        );
    }
    selenium && browser
}

#[tokio::test]
async fn the_page_works_in_a_real_browser() {
    if !browser_available() {
        return;
    }
    let app = about_app().await;
    let alice = app.register("alice").await;

    // The header the browser enforces, read here: WebDriver cannot see it.
    let page = app.get("/").await;
    assert_strict_policy(&page);

    let screenshots = concat!(env!("CARGO_MANIFEST_DIR"), "/target/home-page");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/home_page.py");
    let started = Instant::now();
    let run = tokio::process::Command::new(python())
        .arg(script)
        .args(["--url", &app.address])
        .args(["--server-name", &app.server_name])
        .args(["--alias", &alice.alias])
        // One argument: a base64url key may begin with '-', which argparse
        // would take for an option.
        .arg(format!("--account-key={}", alice.account.public()))
        .args(["--description", HOSTILE])
        .args(["--screenshots", screenshots])
        .args(["--chromium", CHROMIUM, "--chromedriver", CHROMEDRIVER])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser test finished within three minutes")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}browser test: {:.1?}", started.elapsed());
}
