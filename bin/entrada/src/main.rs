//! The `entrada` binary: parse the command line, load configuration, build
//! the app, run. Everything else lives in the crates.

use clap::{Parser, Subcommand};
use entrada_gateway::{App, Config};
use entrada_primitives::{SharedClock, SystemClock};
use figment2::Figment;
use figment2::providers::{Env, Format, Toml};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod demo;

/// mimalloc: in the check-in benchmark about 8 % more scans per second than the system
/// allocator, and 10 % more requests per second on a trivial endpoint (`docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "entrada", version, about = "Ticketing where every ticket is a collectible NFT")]
struct Cli {
    /// A TOML configuration file; `ENTRADA_*` variables override it.
    #[arg(long, short, global = true, env = "ENTRADA_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API, the web apps and the background workers (the default).
    Serve {
        /// Seed a demo organization, event and ticket types first.
        #[arg(long)]
        demo: bool,
        /// Run only these components (comma-separated): identity, ticketing,
        /// payments, checkin, workers. Default: all.
        #[arg(long, value_delimiter = ',')]
        components: Option<Vec<String>>,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Seed the demo organization, event and ticket types and exit.
    Demo,
    /// Give a user a platform role (fan, support, admin).
    GrantRole { email: String, role: String },
    /// Custodial wallet maintenance.
    Wallet {
        #[command(subcommand)]
        command: WalletCommand,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
}

#[derive(Subcommand)]
enum WalletCommand {
    /// Re-wrap every custodial key's data key under the active master key
    /// (`wallet.active_key_id`). Idempotent and resumable: run it after making a new key
    /// active, then remove the old key once no key is left under it.
    Rewrap,
}

/// Top-level configuration keys; other `ENTRADA_*` variables (`ENTRADA_LOG`,
/// test settings) are not configuration.
const CONFIG_KEYS: &[&str] = &[
    "data_dir",
    "server",
    "database",
    "identity",
    "sales",
    "payments",
    "mail",
    "rate_limit",
    "chain",
    "wallet",
    "components",
];

fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    // Defaults come from `#[serde(default)]` on the config types, not from a
    // serialized `Config::default()`: serializing would redact the secrets.
    let mut fig = Figment::new();
    match path {
        Some(p) => {
            if !p.exists() {
                return Err(format!("configuration file {} does not exist", p.display()));
            }
            fig = fig.merge(Toml::file(p));
        }
        None => fig = fig.merge(Toml::file("entrada.toml")),
    }
    fig.merge(
        Env::prefixed("ENTRADA_")
            .split("__")
            .filter(|k| CONFIG_KEYS.iter().any(|c| k.as_str().to_ascii_lowercase().starts_with(c))),
    )
    .extract::<Config>()
    .map_err(|e| format!("configuration: {e}"))
}

fn init_tracing() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_env("ENTRADA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("ENTRADA_LOG_FORMAT").as_deref() == Ok("json") {
        fmt().json().with_env_filter(filter).with_current_span(true).init();
    } else {
        fmt().with_env_filter(filter).init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested; finishing in-flight work");
}

#[tokio::main]
async fn main() -> ExitCode {
    // One TLS crypto provider for every client in the process (reqwest,
    // sqlx, lettre); with two compiled in, rustls refuses to pick.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    init_tracing();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut config = load_config(cli.config.as_ref())?;
    let clock: SharedClock = Arc::new(SystemClock);
    match cli.command.unwrap_or(Command::Serve { demo: false, components: None }) {
        Command::Config => {
            println!("{}", config_json(&config)?);
            Ok(())
        }
        Command::Migrate => {
            let app = App::build(config, clock).await.map_err(|e| e.to_string())?;
            app.db.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Demo => {
            let app = App::build(config, clock).await.map_err(|e| e.to_string())?;
            let ids = demo::seed(&app).await?;
            demo::print(&app, &ids);
            app.db.close().await;
            Ok(())
        }
        Command::GrantRole { email, role } => {
            let app = App::build(config, clock).await.map_err(|e| e.to_string())?;
            demo::grant_role(&app, &email, &role).await?;
            println!("{email} is now {role}");
            app.db.close().await;
            Ok(())
        }
        Command::Wallet { command: WalletCommand::Rewrap } => {
            let app = App::build(config, clock).await.map_err(|e| e.to_string())?;
            let report = app.wallet.custody().rewrap(500).await.map_err(|e| e.to_string());
            app.db.close().await;
            let report = report?;
            let active = app.wallet.custody().active_master_key();
            println!("re-wrapped {} key(s) under master key `{active}`", report.rewrapped);
            for (kid, n) in &report.per_master_key {
                println!("  {kid}: {n} key(s)");
            }
            if !report.failed.is_empty() {
                return Err(format!(
                    "{} key(s) could not be re-wrapped; is their master key still configured?",
                    report.failed.len()
                ));
            }
            Ok(())
        }
        Command::Serve { demo, components } => {
            if let Some(c) = components {
                config.components = c;
            }
            let bind = config.server.bind.clone();
            let listener = tokio::net::TcpListener::bind(&bind).await.map_err(|e| format!("bind {bind}: {e}"))?;
            let app = App::build(config, clock).await.map_err(|e| e.to_string())?;
            if demo {
                let ids = demo::seed(&app).await?;
                demo::print(&app, &ids);
            }
            tracing::info!(address = %bind, public_url = %app.config.server.public_url, "entrada listening");
            println!(
                "Entrada is listening on {}  (API docs: {}/api/docs)",
                app.config.server.public_url, app.config.server.public_url
            );
            app.serve(listener, true, shutdown_signal()).await.map_err(|e| e.to_string())
        }
    }
}

fn config_json(config: &Config) -> Result<String, String> {
    serde_json::to_string_pretty(config).map_err(|e| e.to_string())
}
