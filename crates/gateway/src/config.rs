//! Configuration: defaults that run the embedded mode with no file at all,
//! overridden by a TOML file and then by `ENTRADA_*` environment variables
//! (`ENTRADA_DATABASE__URL`, `ENTRADA_SERVER__BIND`, …; `__` separates
//! levels). Secrets are `Secret` values: printing the configuration, or
//! logging it, shows `[redacted]`.

use entrada_notify::SmtpConfig;
use entrada_primitives::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where embedded state lives: the SQLite database, the mailbox folder.
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub identity: IdentitySettings,
    pub sales: SalesSettings,
    pub payments: PaymentsSettings,
    pub mail: MailSettings,
    pub rate_limit: RateLimitSettings,
    pub chain: ChainSettings,
    pub wallet: WalletSettings,
    /// Which components this process runs: `all`, or any of `identity`,
    /// `ticketing`, `payments`, `checkin`, `market`, `wallet`, `workers` (outbox, expiry,
    /// webhook delivery, market sweep).
    pub components: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    /// The address users and providers reach this deployment at; token
    /// issuer, mail links and sandbox webhooks use it.
    pub public_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://…` (embedded) or `postgres://…` (scaled). Empty means the
    /// SQLite file `entrada.db` in the data directory. Treated as a secret,
    /// since PostgreSQL URLs carry passwords.
    pub url: Secret<String>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySettings {
    pub access_ttl_seconds: i64,
    pub refresh_ttl_days: i64,
    /// `standard` (argon2id, OWASP parameters) or `fast` (for tests and
    /// benchmarks only: it makes stolen hashes cheap to crack).
    pub password_cost: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SalesSettings {
    pub hold_ttl_seconds: i64,
    pub payment_window_seconds: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsSettings {
    /// `sandbox` (embedded, the default) or `stripe`.
    pub provider: String,
    /// Signs the sandbox's webhooks. Empty: a random secret per process,
    /// which is right for one process and wrong for several (configure it).
    pub sandbox_webhook_secret: Secret<String>,
    /// Deliver every Nth sandbox webhook twice (exercises idempotency).
    pub sandbox_duplicate_every: Option<u32>,
    pub stripe_api_base: String,
    pub stripe_secret_key: Secret<String>,
    pub stripe_webhook_secret: Secret<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// `mailbox` (one mbox file a day in `<data_dir>/mailbox`) or `smtp`.
    pub transport: String,
    pub from: String,
    pub smtp: Option<SmtpConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests per second per client IP on the API; 0 turns limiting off.
    pub per_ip_per_second: u32,
    pub burst: u32,
    /// Requests per minute per client IP on `/api/v1/auth/*`.
    pub auth_per_ip_per_minute: u32,
}

/// Where tickets become tokens. `embedded` (the default) runs the contracts in this process
/// with the chain's state in the data directory; `rpc` sends them to an EVM node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainSettings {
    /// `embedded` or `rpc`.
    pub mode: String,
    /// Most tickets in one mint transaction.
    pub batch_size: usize,
    /// A smaller batch is sent once its oldest ticket has waited this long.
    pub batch_window_ms: i64,
    /// How long a send may stay unanswered before another process reads the chain to learn
    /// its outcome.
    pub send_lease_seconds: i64,
    /// Pause between reconciliation pages (each compares up to 200 tokens with the chain).
    pub reconcile_every_seconds: u64,
    /// Pause of the mint worker between rounds when idle.
    pub tick_ms: u64,
    /// `rpc`: the node's HTTP(S) endpoint.
    pub rpc_url: String,
    /// `rpc`: the EIP-155 chain id the node must report.
    pub chain_id: u64,
    /// `rpc`: blocks that must follow a transaction's block before it counts.
    pub confirmations: u64,
    /// `rpc`: limit for one request to the node; a send past it has an unknown outcome.
    pub rpc_timeout_ms: u64,
    /// `rpc`: hex private keys of the platform accounts. Only `minter_key` is required; the
    /// other roles use it when left empty.
    pub minter_key: Secret<String>,
    pub admin_key: Secret<String>,
    pub custodian_key: Secret<String>,
    pub organizer_key: Secret<String>,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self {
            mode: "embedded".into(),
            batch_size: 100,
            batch_window_ms: 2_000,
            send_lease_seconds: 60,
            reconcile_every_seconds: 5,
            tick_ms: 250,
            rpc_url: String::new(),
            chain_id: 0,
            confirmations: 1,
            rpc_timeout_ms: 10_000,
            minter_key: Secret::new(String::new()),
            admin_key: Secret::new(String::new()),
            custodian_key: Secret::new(String::new()),
            organizer_key: Secret::new(String::new()),
        }
    }
}

/// The custodial wallet's master keys. Each fan's private key is sealed under its own data key,
/// and the data key under the master key `active_key_id`. Rotation: add a new key, make it
/// active, run `entrada wallet rewrap`, then remove the old key. With no keys configured, a key
/// is generated at first start into `<data_dir>/wallet-master.key` (mode 0600): right for one
/// embedded process; every process of a scaled deployment must be given the same keys here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalletSettings {
    /// Key id → standard base64 of 32 random bytes (`openssl rand -base64 32`).
    pub master_keys: std::collections::BTreeMap<String, Secret<String>>,
    /// The key id that wraps new (and re-wrapped) data keys.
    pub active_key_id: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            server: ServerConfig::default(),
            database: DatabaseConfig::default(),
            identity: IdentitySettings::default(),
            sales: SalesSettings::default(),
            payments: PaymentsSettings::default(),
            mail: MailSettings::default(),
            rate_limit: RateLimitSettings::default(),
            chain: ChainSettings::default(),
            wallet: WalletSettings::default(),
            components: vec!["all".into()],
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { bind: "127.0.0.1:8080".into(), public_url: "http://127.0.0.1:8080".into() }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: Secret::new(String::new()), max_connections: 16 }
    }
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self { access_ttl_seconds: 900, refresh_ttl_days: 30, password_cost: "standard".into() }
    }
}

impl Default for SalesSettings {
    fn default() -> Self {
        Self { hold_ttl_seconds: 600, payment_window_seconds: 1800 }
    }
}

impl Default for PaymentsSettings {
    fn default() -> Self {
        Self {
            provider: "sandbox".into(),
            sandbox_webhook_secret: Secret::new(String::new()),
            sandbox_duplicate_every: None,
            stripe_api_base: "https://api.stripe.com".into(),
            stripe_secret_key: Secret::new(String::new()),
            stripe_webhook_secret: Secret::new(String::new()),
        }
    }
}

impl Default for MailSettings {
    fn default() -> Self {
        Self { transport: "mailbox".into(), from: "Entrada <no-reply@entrada.local>".into(), smtp: None }
    }
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self { per_ip_per_second: 200, burst: 400, auth_per_ip_per_minute: 60 }
    }
}

impl Config {
    /// The database URL to use: the configured one, or the embedded file.
    pub fn database_url(&self) -> String {
        let url = self.database.url.expose();
        if url.is_empty() { format!("sqlite://{}/entrada.db", self.data_dir.display()) } else { url.clone() }
    }

    pub fn runs(&self, component: &str) -> bool {
        self.components.iter().any(|c| c == "all" || c == component)
    }

    /// Checks values that serde cannot: known names and sane ranges.
    pub fn validate(&self) -> Result<(), String> {
        for c in &self.components {
            if !matches!(
                c.as_str(),
                "all" | "identity" | "ticketing" | "payments" | "checkin" | "market" | "wallet" | "workers"
            ) {
                return Err(format!("unknown component `{c}`"));
            }
        }
        if !self.wallet.master_keys.is_empty() && !self.wallet.master_keys.contains_key(&self.wallet.active_key_id) {
            return Err("wallet.active_key_id must name one of wallet.master_keys".into());
        }
        if !matches!(self.payments.provider.as_str(), "sandbox" | "stripe") {
            return Err(format!("payments.provider must be sandbox or stripe, not `{}`", self.payments.provider));
        }
        if self.payments.provider == "stripe"
            && (self.payments.stripe_secret_key.expose().is_empty()
                || self.payments.stripe_webhook_secret.expose().is_empty())
        {
            return Err("payments.stripe_secret_key and payments.stripe_webhook_secret are required for stripe".into());
        }
        match self.mail.transport.as_str() {
            "mailbox" => {}
            "smtp" if self.mail.smtp.is_some() => {}
            "smtp" => return Err("mail.smtp must be set when mail.transport = smtp".into()),
            other => return Err(format!("mail.transport must be mailbox or smtp, not `{other}`")),
        }
        if !matches!(self.identity.password_cost.as_str(), "standard" | "fast") {
            return Err("identity.password_cost must be standard or fast".into());
        }
        match self.chain.mode.as_str() {
            "embedded" => {}
            "rpc" if !self.chain.rpc_url.is_empty() && !self.chain.minter_key.expose().is_empty() => {}
            "rpc" => return Err("chain.rpc_url and chain.minter_key are required when chain.mode = rpc".into()),
            other => return Err(format!("chain.mode must be embedded or rpc, not `{other}`")),
        }
        if !(1..=500).contains(&self.chain.batch_size) || self.chain.batch_window_ms < 0 {
            return Err("chain.batch_size must be 1 to 500 and chain.batch_window_ms ≥ 0".into());
        }
        if self.sales.hold_ttl_seconds < 30 || self.sales.payment_window_seconds < 60 {
            return Err("sales.hold_ttl_seconds must be ≥ 30 and sales.payment_window_seconds ≥ 60".into());
        }
        Ok(())
    }
}
