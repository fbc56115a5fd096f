//! Identity as a user meets it: registration, the mails it sends, tokens.

use crate::helpers::*;
use serde_json::json;

fn token_from_mail(text: &str) -> String {
    let i = text.find("token=").expect("mail carries a token link") + "token=".len();
    text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}

/// Registering sends a verification mail whose token verifies the address.
#[tokio::test]
async fn registration_mail_verifies_the_address() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let me = app.get("/api/v1/me", Some(&ana.token)).await.expect(200);
    assert_eq!(me["email_verified"], false);
    app.settle().await;
    let mails = app.mailbox();
    let (_, text) = mails.iter().find(|(n, _)| n.starts_with("email_verification")).expect("verification mail");
    assert!(text.contains("To: ana@example.com"), "{text}");
    let token = token_from_mail(text);
    app.post("/api/v1/auth/verify-email", None, json!({"token": token})).await.expect(200);
    let me = app.get("/api/v1/me", Some(&ana.token)).await.expect(200);
    assert_eq!(me["email_verified"], true);
    // Single use.
    let again = app.post("/api/v1/auth/verify-email", None, json!({"token": token})).await;
    assert_eq!(again.status, 400, "{:#}", again.body);
}

/// A password reset by mail changes the password and ends old sessions.
#[tokio::test]
async fn password_reset_by_mail() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    app.post("/api/v1/auth/password-reset", None, json!({"email": "ana@example.com"})).await.expect(202);
    // Unknown addresses get the same answer and no mail.
    app.post("/api/v1/auth/password-reset", None, json!({"email": "nobody@example.com"})).await.expect(202);
    app.settle().await;
    let resets: Vec<_> = app.mailbox().into_iter().filter(|(n, _)| n.starts_with("password_reset")).collect();
    assert_eq!(resets.len(), 1);
    let token = token_from_mail(&resets[0].1);
    app.post(
        "/api/v1/auth/password-reset/confirm",
        None,
        json!({"token": token, "new_password": "a much better passphrase"}),
    )
    .await
    .expect(200);
    app.post("/api/v1/auth/login", None, json!({"email": "ana@example.com", "password": "correct horse battery"}))
        .await
        .expect_problem(401, "invalid_credentials");
    app.post("/api/v1/auth/login", None, json!({"email": "ana@example.com", "password": "a much better passphrase"}))
        .await
        .expect(200);
    // The refresh token of the old session no longer works.
    let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": ana.refresh})).await;
    assert_eq!(r.status, 401, "{:#}", r.body);
}

/// Refresh rotates; presenting a rotated token again revokes the family.
#[tokio::test]
async fn refresh_rotation_and_reuse_detection() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    let r1 = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": ana.refresh})).await.expect(200);
    let next = r1["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next, ana.refresh);
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": ana.refresh}))
        .await
        .expect_problem(401, "refresh_token_reused");
    // The thief's reuse also killed the legitimate newer token.
    let r = app.post("/api/v1/auth/refresh", None, json!({"refresh_token": next})).await;
    assert_eq!(r.status, 401);
}

/// Access tokens expire with the (injected) clock.
#[tokio::test]
async fn access_tokens_expire() {
    let app = spawn_app().await;
    let ana = app.register("ana@example.com").await;
    app.get("/api/v1/me", Some(&ana.token)).await.expect(200);
    app.clock.advance(time::Duration::minutes(16));
    app.get("/api/v1/me", Some(&ana.token)).await.expect_problem(401, "token_expired");
}

/// The JWKS and discovery documents describe the issuer's EdDSA keys.
#[tokio::test]
async fn discovery_and_jwks() {
    let app = spawn_app().await;
    let d = app.get("/.well-known/openid-configuration", None).await.expect(200);
    assert_eq!(d["issuer"], app.base.as_str());
    assert_eq!(d["jwks_uri"], format!("{}/.well-known/jwks.json", app.base));
    let jwks = app.get("/.well-known/jwks.json", None).await.expect(200);
    let k = &jwks["keys"][0];
    assert_eq!(k["kty"], "OKP");
    assert_eq!(k["crv"], "Ed25519");
    assert_eq!(k["alg"], "EdDSA");
}

/// With `mail.transport = smtp`, mails go to a real SMTP server.
#[tokio::test]
async fn mail_goes_to_a_real_smtp_server() {
    let maildir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // aiosmtpd's Controller binds before `start()` returns; the script says
    // "ready" then, so the test waits for a line, not for time.
    let script = format!(
        "import signal\nfrom aiosmtpd.controller import Controller\nfrom aiosmtpd.handlers import Mailbox\n\
         c = Controller(Mailbox({dir:?}), hostname='127.0.0.1', port={port})\nc.start()\nprint('ready', flush=True)\nsignal.pause()\n",
        dir = maildir.path().join("inbox").display().to_string(),
    );
    let mut server = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with aiosmtpd (scripts/test installs it)");
    {
        use tokio::io::AsyncBufReadExt;
        let out = server.stdout.take().unwrap();
        let line = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            tokio::io::BufReader::new(out).lines().next_line(),
        )
        .await
        .expect("SMTP server starts within 30 s")
        .unwrap();
        assert_eq!(line.as_deref(), Some("ready"));
    }
    let app = spawn_app_with(|c| {
        c.mail.transport = "smtp".into();
        c.mail.smtp = Some(entrada_notify::SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            tls: entrada_notify::SmtpTls::None,
            username: None,
            password: None,
        });
    })
    .await;
    app.register("smtp-user@example.com").await;
    app.settle().await;
    let inbox = maildir.path().join("inbox").join("new");
    let mails: Vec<String> = std::fs::read_dir(&inbox)
        .map(|rd| rd.filter_map(Result::ok).map(|e| std::fs::read_to_string(e.path()).unwrap()).collect())
        .unwrap_or_default();
    let _ = server.kill().await;
    assert_eq!(mails.len(), 1, "one verification mail delivered over SMTP");
    assert!(mails[0].contains("smtp-user@example.com"));
    assert!(app.mailbox().is_empty(), "nothing went to the mailbox folder");
}
