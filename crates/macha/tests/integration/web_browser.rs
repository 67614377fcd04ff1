//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver) logs
//! in with `macha web login`, approves and rejects through the real daemon (the outcome is the
//! one `macha approve` gets), gets the stale-card refusal, and renders hostile text inert in the
//! DOM. Runs when `MACHA_TEST_CHROMEDRIVER` names chromedriver (tests/run.sh sets it) and fails
//! clearly when it is set but broken. With `MACHA_WEB_SCREENSHOTS=1` it rewrites docs/web/*.png.

use super::support::daemon::{TestDaemon, wait_for};
use super::web::{free_port, queue_approvals};
use fantoccini::{ClientBuilder, Locator};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state(daemon: &TestDaemon, id: i64) -> (String, Option<String>) {
    let a =
        daemon.store().get_approval(id).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("approval {id}"));
    (a.state.as_str().to_owned(), a.decision_note)
}

#[test]
fn a_real_browser_approves_rejects_is_refused_a_stale_card_and_runs_no_hostile_script() {
    let Some(driver_path) = std::env::var_os("MACHA_TEST_CHROMEDRIVER") else {
        eprintln!("MACHA_TEST_CHROMEDRIVER is not set: the browser test does not run (tests/run.sh sets it)");
        return;
    };
    let driver_port = free_port();
    let mut driver = Driver(
        Command::new(&driver_path)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("MACHA_TEST_CHROMEDRIVER={driver_path:?} does not start: {e}")),
    );
    wait_for("chromedriver's port", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", driver_port)).is_ok()
    });
    assert!(driver.0.try_wait().ok().flatten().is_none(), "chromedriver exited at once");

    let port = free_port();
    let daemon = TestDaemon::builder()
        .autonomy("observe")
        .tables(&format!("[web]\nenable = true\nlisten = \"127.0.0.1:{port}\"\n"))
        .prepare(queue_approvals)
        .start();
    wait_for("the console's port", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let base = format!("http://127.0.0.1:{port}");
    let login = daemon.cli(&["web", "login"]);
    assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
    let login_url = String::from_utf8_lossy(&login.stdout).trim().to_owned();

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        let mut chrome =
            serde_json::json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=412,915"]});
        if std::path::Path::new("/usr/bin/chromium").exists() {
            chrome["binary"] = serde_json::json!("/usr/bin/chromium");
        }
        caps.insert("goog:chromeOptions".into(), chrome);
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .unwrap_or_else(|e| panic!("MACHA_TEST_CHROMEDRIVER={driver_path:?} gives no browser session: {e}"));
        let body = |c: &fantoccini::Client| {
            let c = c.clone();
            async move {
                c.find(Locator::Css("main")).await.unwrap_or_else(|e| panic!("{e}")).text().await.unwrap_or_default()
            }
        };

        // Log in with the one-time link.
        c.goto(&login_url).await.unwrap_or_else(|e| panic!("{e}"));
        c.find(Locator::Css("button[type=submit]"))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        wait_text(&c, "Logged in as").await;

        // The hostile card: no alert, one script element (htmx), no injected image.
        c.goto(&format!("{base}/approvals/1")).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(c.get_alert_text().await.is_err(), "an alert is open: hostile text ran");
        let scripts = c.execute("return document.scripts.length", vec![]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(scripts, serde_json::json!(1), "only htmx's script element");
        let imgs =
            c.execute("return document.querySelectorAll('img').length", vec![]).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(imgs, serde_json::json!(0));
        let js_links = c
            .execute("return [...document.links].filter(a => !/^https?:/.test(a.href)).length", vec![])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(js_links, serde_json::json!(0), "every link is http(s)");
        assert!(body(&c).await.contains("<script>alert(1)</script>"), "the hostile text is shown as text");
        shots(&c, "approval-card").await;

        // Approve in the browser: the same outcome as `macha approve` (at autonomy observe the
        // policy refuses at execution).
        let form = c.form(Locator::Css("form[action='/approvals/1/approve']")).await.unwrap_or_else(|e| panic!("{e}"));
        form.set_by_name("note", "from the browser").await.unwrap_or_else(|e| panic!("{e}"));
        form.submit().await.unwrap_or_else(|e| panic!("{e}"));
        wait_text(&c, "refused it at execution").await;

        // Reject with a reason.
        c.goto(&format!("{base}/approvals/3")).await.unwrap_or_else(|e| panic!("{e}"));
        let form = c.form(Locator::Css("form[action='/approvals/3/reject']")).await.unwrap_or_else(|e| panic!("{e}"));
        form.set_by_name("note", "not now").await.unwrap_or_else(|e| panic!("{e}"));
        form.submit().await.unwrap_or_else(|e| panic!("{e}"));
        wait_text(&c, "rejected; nothing runs").await;
        assert_eq!(state(&daemon, 3), ("rejected".to_owned(), Some("not now".to_owned())));

        // A stale card: loaded here, then decided on the CLI; the browser's approval is refused
        // (409) and does nothing. The CLI's approval ends as the browser's did.
        c.goto(&format!("{base}/approvals/4")).await.unwrap_or_else(|e| panic!("{e}"));
        let form = c.form(Locator::Css("form[action='/approvals/4/approve']")).await.unwrap_or_else(|e| panic!("{e}"));
        let cli = daemon.cli(&["approve", "approve", "4"]);
        assert!(String::from_utf8_lossy(&cli.stdout).contains("approval 4"), "{cli:?}");
        form.submit().await.unwrap_or_else(|e| panic!("{e}"));
        wait_text(&c, "nothing was done").await;
        assert_eq!(state(&daemon, 1).0, state(&daemon, 4).0, "the browser's approval ends as the CLI's");

        for (name, path) in [("fleet", "/"), ("issues", "/issues"), ("approvals", "/approvals"), ("quest-log", "/logs")]
        {
            c.goto(&format!("{base}{path}")).await.unwrap_or_else(|e| panic!("{e}"));
            assert!(c.get_alert_text().await.is_err());
            shots(&c, name).await;
        }
        c.close().await.unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Waits (up to 10 s) until the page's main text contains `needle`: a form's answer is a new
/// page, loaded after `submit` returns.
async fn wait_text(c: &fantoccini::Client, needle: &str) {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(main) = c.find(Locator::Css("main")).await {
            last = main.text().await.unwrap_or_default();
            if last.contains(needle) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never said {needle:?}; it says: {last}");
}

/// Saves a screenshot to docs/web/<name>.png when `MACHA_WEB_SCREENSHOTS=1`.
async fn shots(c: &fantoccini::Client, name: &str) {
    if std::env::var("MACHA_WEB_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let png = c.screenshot().await.unwrap_or_else(|e| panic!("{e}"));
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/web");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap_or_else(|e| panic!("{e}"));
}
