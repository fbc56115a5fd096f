//! `entrada demo` and `serve --demo`: a demo organizer, organization, event
//! and ticket types, so a new user sees a sale at once. Idempotent.

use entrada_gateway::App;
use entrada_identity::{DisplayName, IdentityError, Password};
use entrada_primitives::{Email, PlatformRole};

pub const DEMO_EMAIL: &str = "demo-organizer@entrada.local";

pub struct Seeded {
    pub ids: entrada_ticketing::catalog::DemoIds,
    /// Present only when this run created the organizer.
    pub password: Option<String>,
}

pub async fn seed(app: &App) -> Result<Seeded, String> {
    let email = Email::parse(DEMO_EMAIL).map_err(|e| e.to_string())?;
    // A random password per deployment, shown once: a fixed demo password
    // would be a known credential on every server that ran the demo.
    let password = entrada_primitives::token::random_token()[..20].to_owned();
    let (owner, created) = match app
        .identity
        .register(
            email.clone(),
            Password::parse(&password).map_err(|e| e.to_string())?,
            DisplayName::parse("Demo Organizer").map_err(|e| e.to_string())?,
        )
        .await
    {
        Ok(tokens) => (tokens.user.id, true),
        Err(IdentityError::EmailTaken) => {
            let user = app.identity.grant_platform_role(&email, PlatformRole::Fan).await.map_err(|e| e.to_string())?;
            (user.id, false)
        }
        Err(e) => return Err(format!("demo organizer: {e}")),
    };
    let ids = app.catalog.seed_demo(owner).await.map_err(|e| format!("demo catalog: {e}"))?;
    Ok(Seeded { ids, password: created.then_some(password) })
}

pub fn print(app: &App, s: &Seeded) {
    let base = &app.config.server.public_url;
    println!("Demo event on sale: {base}/api/v1/events/{}", s.ids.event_id);
    match &s.password {
        Some(p) => println!("Demo organizer: {DEMO_EMAIL} / {p}  (shown once)"),
        None => println!("Demo organizer: {DEMO_EMAIL} (password shown when it was created)"),
    }
}

pub async fn grant_role(app: &App, email: &str, role: &str) -> Result<(), String> {
    let email = Email::parse(email).map_err(|e| e.to_string())?;
    let role = PlatformRole::parse(role).ok_or_else(|| format!("unknown role `{role}`: fan, support or admin"))?;
    app.identity.grant_platform_role(&email, role).await.map_err(|e| e.to_string())?;
    Ok(())
}
