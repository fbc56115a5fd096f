//! The binary as an operator meets it: configuration layers, secrets
//! redacted, migrate, demo, grant-role, component subsets, graceful shutdown.

use std::process::{Command, Output};

fn entrada(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_entrada"));
    c.args(args).env("ENTRADA_LOG", "error");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run entrada")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A TOML file overrides the defaults, `ENTRADA_*` overrides the file, and
/// printing the configuration never shows a secret.
#[test]
fn configuration_layers_and_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("entrada.toml");
    std::fs::write(
        &file,
        "data_dir = \"/srv/entrada\"\n[server]\nbind = \"0.0.0.0:9000\"\n[payments]\nsandbox_webhook_secret = \"whsec_from_file\"\n",
    )
    .unwrap();
    let out = entrada(
        &["--config", file.to_str().unwrap(), "config"],
        &[("ENTRADA_SERVER__BIND", "127.0.0.1:9100"), ("ENTRADA_DATABASE__URL", "postgres://u:hunter2@db/entrada")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(cfg["data_dir"], "/srv/entrada", "file overrides default");
    assert_eq!(cfg["server"]["bind"], "127.0.0.1:9100", "environment overrides file");
    let text = stdout(&out);
    assert!(!text.contains("hunter2") && !text.contains("whsec_from_file"), "secrets leaked: {text}");
    assert_eq!(cfg["database"]["url"], "[redacted]");
}

/// Unknown keys and bad values are refused at start with a clear message.
#[test]
fn bad_configuration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[server]\nbnd = \"x\"\n").unwrap();
    let out = entrada(&["--config", file.to_str().unwrap(), "config"], &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bnd"), "{}", String::from_utf8_lossy(&out.stderr));
    let data = tempfile::tempdir().unwrap();
    let out = entrada(
        &["migrate"],
        &[("ENTRADA_DATA_DIR", data.path().to_str().unwrap()), ("ENTRADA_PAYMENTS__PROVIDER", "paypal")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("payments.provider"));
}

/// `migrate`, then `demo` twice (the second run finds the same event), then
/// `grant-role`.
#[test]
fn migrate_demo_and_grant_role() {
    let data = tempfile::tempdir().unwrap();
    let env = [("ENTRADA_DATA_DIR", data.path().to_str().unwrap()), ("ENTRADA_IDENTITY__PASSWORD_COST", "fast")];
    let out = entrada(&["migrate"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(data.path().join("entrada.db").exists());
    let first = entrada(&["demo"], &env);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let second = entrada(&["demo"], &env);
    let event_line = |o: &Output| stdout(o).lines().find(|l| l.starts_with("Demo event")).map(str::to_owned);
    assert_eq!(event_line(&first), event_line(&second), "demo seeding is idempotent");
    assert!(stdout(&first).contains("shown once") && !stdout(&second).contains("shown once"));
    let out = entrada(&["grant-role", "demo-organizer@entrada.local", "support"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = entrada(&["grant-role", "demo-organizer@entrada.local", "emperor"], &env);
    assert!(!out.status.success());
}

/// `serve --components identity` answers identity routes only, and SIGTERM
/// stops the server cleanly with exit status 0.
#[tokio::test]
async fn component_subset_and_graceful_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = crate::helpers::spawn_entrada(
        &["serve", "--components", "identity"],
        &[
            ("ENTRADA_DATA_DIR", data.path().display().to_string()),
            ("ENTRADA_SERVER__BIND", format!("127.0.0.1:{port}")),
            ("ENTRADA_SERVER__PUBLIC_URL", base.clone()),
            ("ENTRADA_IDENTITY__PASSWORD_COST", "fast".into()),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": "a@example.com", "password": "long enough password", "display_name": "A"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = http.get(format!("{base}/api/v1/events")).send().await.unwrap();
    assert_eq!(r.status(), 404, "ticketing is not run by this process");
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let s = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("stops within 10 s of SIGTERM")
        .unwrap();
    assert!(s.success(), "exit status {s:?}");
}
