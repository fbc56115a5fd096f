//! Builds the application from configuration: connects storage, starts the
//! contexts, assembles the router and the OpenAPI document, and runs the
//! background workers until shutdown.

use crate::config::Config;
use crate::middleware::{self, RateLimits, TokenVerifier};
use axum::Router;
use axum::http::HeaderName;
use axum::response::IntoResponse;
use axum::routing::get;
use entrada_chain::pipeline::{Pipeline, PipelineConfig, WorkerConfig};
use entrada_chain::{AddressBook, ChainClient, EmbeddedChain, RoleKeys, RpcChain, RpcConfig};
use entrada_checkin::{Checkin, CheckinConfig};
use entrada_identity::{Identity, IdentityConfig, PasswordCost};
use entrada_market::{Market, MarketConfig};
use entrada_notify::{MailConsumer, MailboxMailer, Mailer, SmtpMailer};
use entrada_payments::{Payments, PaymentsConfig, ProviderConfig, SandboxConfig, StripeConfig};
use entrada_primitives::auth::Principal;
use entrada_primitives::{Problem, Secret, SharedClock};
use entrada_storage::{Db, DbConfig, Dispatcher};
use entrada_ticketing::catalog::Catalog;
use entrada_ticketing::sales::{Sales, SalesConfig};
use entrada_wallet::{Custody, MasterKeys, Wallet, WalletConfig};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Component(String),
}

/// Every service of one process, built once.
#[derive(Clone)]
pub struct App {
    pub config: Config,
    pub db: Db,
    pub clock: SharedClock,
    pub identity: Identity,
    pub catalog: Catalog,
    pub sales: Sales,
    pub payments: Payments,
    pub checkin: Checkin,
    /// The mint pipeline over the configured chain.
    pub chain: Pipeline,
    pub market: Market,
    /// Custodial keys, the assets view, collectible metadata, linked wallets and export.
    pub wallet: Wallet,
    pub dispatcher: Dispatcher,
    limits: Arc<RateLimits>,
    router: Router,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Entrada API",
        description = "Ticketing where every ticket is a collectible NFT. Errors are RFC 9457 problem+json with a stable `code`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

struct IdentityVerifier(Identity);

#[async_trait::async_trait]
impl TokenVerifier for IdentityVerifier {
    async fn verify(&self, token: &str) -> Result<Principal, &'static str> {
        self.0.verify_access(token).await
    }
}

fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Several apps in one test process share the global recorder.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl App {
    pub async fn build(config: Config, clock: SharedClock) -> Result<App, BuildError> {
        Self::build_with_chain(config, clock, None).await
    }

    /// Builds the app over `chain` instead of the configured one (tools and tests that wrap
    /// the real chain, e.g. to cut it off).
    pub async fn build_with_chain(
        config: Config,
        clock: SharedClock,
        chain: Option<Arc<dyn ChainClient>>,
    ) -> Result<App, BuildError> {
        config.validate().map_err(BuildError::Config)?;
        let db =
            Db::connect(&DbConfig { url: config.database_url(), max_connections: config.database.max_connections })
                .await?;
        db.migrate().await?;

        let public_url = config.server.public_url.trim_end_matches('/').to_owned();
        let identity = Identity::start(
            db.clone(),
            clock.clone(),
            IdentityConfig {
                issuer: public_url.clone(),
                access_ttl: time::Duration::seconds(config.identity.access_ttl_seconds),
                refresh_ttl: time::Duration::days(config.identity.refresh_ttl_days),
                password_cost: if config.identity.password_cost == "fast" {
                    PasswordCost::Fast
                } else {
                    PasswordCost::Standard
                },
            },
        )
        .await
        .map_err(|e| BuildError::Component(format!("identity: {e}")))?;

        let provider = match config.payments.provider.as_str() {
            "stripe" => ProviderConfig::Stripe(StripeConfig {
                api_base: config.payments.stripe_api_base.clone(),
                secret_key: config.payments.stripe_secret_key.clone(),
                webhook_secret: config.payments.stripe_webhook_secret.clone(),
            }),
            _ => {
                let secret = if config.payments.sandbox_webhook_secret.expose().is_empty() {
                    Secret::new(format!("whsec_{}", entrada_primitives::token::random_token()))
                } else {
                    config.payments.sandbox_webhook_secret.clone()
                };
                ProviderConfig::Sandbox(SandboxConfig {
                    webhook_secret: secret,
                    public_base_url: public_url.clone(),
                    duplicate_every: config.payments.sandbox_duplicate_every,
                })
            }
        };
        // The sandbox stands in for an outside provider; its charges and
        // webhook queue share the database (and, on SQLite, the writer's
        // grouped commits). A file of its own on SQLite cost a second
        // writer, WAL and checkpointer: about a tenth fewer purchases a second.
        let payments = Payments::new(db.clone(), clock.clone(), PaymentsConfig { provider });
        let catalog = Catalog::new(db.clone(), clock.clone());
        let checkin = Checkin::new(db.clone(), clock.clone(), CheckinConfig::default());
        let sales = Sales::new(
            db.clone(),
            clock.clone(),
            Arc::new(payments.clone()),
            SalesConfig {
                hold_ttl: time::Duration::seconds(config.sales.hold_ttl_seconds),
                payment_window: time::Duration::seconds(config.sales.payment_window_seconds),
                public_base_url: public_url.clone(),
            },
        );
        let market = Market::new(
            db.clone(),
            clock.clone(),
            payments.clone(),
            MarketConfig { public_base_url: public_url.clone(), ..MarketConfig::default() },
        );

        let chain: Arc<dyn ChainClient> = match (chain, config.chain.mode.as_str()) {
            (Some(chain), _) => chain,
            (None, "embedded") => Arc::new(
                EmbeddedChain::open(&config.data_dir, clock.clone())
                    .map_err(|e| BuildError::Component(format!("chain: {e}")))?,
            ),
            (None, "rpc") => Arc::new(rpc_chain(&config).await?),
            (None, other) => return Err(BuildError::Config(format!("chain.mode `{other}` is not available"))),
        };
        // Tokens go to each holder's custodial address, created (and its key sealed) on first need.
        let custody = Custody::new(db.clone(), clock.clone(), wallet_keys(&config, &db)?);
        let address_book: Arc<dyn AddressBook> = Arc::new(custody.clone());
        let chain = Pipeline::new(
            db.clone(),
            clock.clone(),
            chain,
            address_book,
            PipelineConfig {
                batch_size: config.chain.batch_size,
                batch_window_ms: config.chain.batch_window_ms,
                send_lease_ms: config.chain.send_lease_seconds.saturating_mul(1000),
                single_process: config.chain.mode == "embedded",
                ..PipelineConfig::new(config.chain.mode.clone(), public_url.clone())
            },
        );

        let wallet = Wallet::new(
            db.clone(),
            clock.clone(),
            custody,
            WalletConfig {
                fee_recipient: Some(chain.chain().roles().organizer),
                ..WalletConfig::new(&public_url, chain.chain().chain_id())
            },
        );

        let mailer: Arc<dyn Mailer> = match (config.mail.transport.as_str(), &config.mail.smtp) {
            ("smtp", Some(smtp)) => Arc::new(
                SmtpMailer::new(smtp, config.mail.from.clone())
                    .map_err(|e| BuildError::Config(format!("mail: {e}")))?,
            ),
            _ => Arc::new(MailboxMailer::new(config.data_dir.join("mailbox"), config.mail.from.clone(), clock.clone())),
        };
        let dispatcher = Dispatcher::new(
            db.clone(),
            clock.clone(),
            vec![
                sales.consumer(),
                payments.consumer(),
                chain.consumer(),
                market.consumer(),
                MailConsumer::new(mailer, clock.clone(), public_url.clone()),
            ],
        );

        let limits = Arc::new(RateLimits::new(
            config.rate_limit.per_ip_per_second,
            config.rate_limit.burst,
            config.rate_limit.auth_per_ip_per_minute,
        ));
        let verifier: Arc<dyn TokenVerifier> = Arc::new(IdentityVerifier(identity.clone()));

        let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi());
        if config.runs("identity") {
            api = api.merge(entrada_identity::http::router(identity.clone()));
        }
        if config.runs("ticketing") {
            api = api
                .merge(entrada_ticketing::catalog::http::router(catalog.clone()))
                .merge(entrada_ticketing::sales::http::router(sales.clone()));
        }
        if config.runs("payments") {
            api = api.merge(entrada_payments::http::router(payments.clone()));
        }
        if config.runs("checkin") {
            api = api.merge(entrada_checkin::router(checkin.clone()));
        }
        if config.runs("market") {
            api = api.merge(entrada_market::http::router(market.clone()));
        }
        if config.runs("wallet") {
            api = api.merge(entrada_wallet::router(wallet.clone()));
        }
        // The chain pipeline's operator endpoints read and requeue its tables: any API node.
        api = api.merge(entrada_chain::http::router(chain.clone()));
        let (api, mut openapi) = api.split_for_parts();
        crate::openapi::complete(&mut openapi);

        let db_ready = db.clone();
        let metrics_handle = prometheus();
        let request_id = HeaderName::from_static("x-request-id");
        let router = Router::new()
            .merge(api)
            .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", openapi))
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(move || {
                    let db = db_ready.clone();
                    async move {
                        match db.ping().await {
                            Ok(()) => "ready".into_response(),
                            Err(e) => {
                                tracing::warn!(error = %e, "readiness check failed");
                                Problem::unavailable("not_ready", "the database is not reachable").into_response()
                            }
                        }
                    }
                }),
            )
            .route("/metrics", get(move || std::future::ready(metrics_handle.render())))
            .fallback(crate::web::serve)
            .method_not_allowed_fallback(middleware::method_not_allowed)
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(middleware::Edge { limits: limits.clone(), verifier }),
                middleware::edge,
            ))
            .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
            .layer(CatchPanicLayer::custom(middleware::panic_to_problem))
            .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(PropagateRequestIdLayer::new(request_id.clone()))
            .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid));

        Ok(App {
            config,
            db,
            clock,
            identity,
            catalog,
            sales,
            payments,
            checkin,
            market,
            wallet,
            chain,
            dispatcher,
            limits,
            router,
        })
    }

    /// The complete HTTP router.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Delivers everything that is due now — sandbox webhooks, outbox events,
    /// expiries — until nothing moves. Tests call this instead of waiting for
    /// the background workers.
    pub async fn settle(&self) -> Result<usize, String> {
        let mut total = 0;
        for _ in 0..100 {
            let mut round = self.payments.deliver_sandbox_webhooks().await.map_err(|e| e.to_string())?;
            round += self.dispatcher.drain().await.map_err(|e| e.to_string())?;
            round += self.payments.process_refund_requests().await.map_err(|e| e.to_string())?;
            // Every pending mint is flushed regardless of the batching window; a chain outage
            // is not an error here, it only means nothing moved on chain.
            round += self.chain.run_once(true).await.map_err(|e| e.to_string())?.progress;
            round += self.market.sweep().await.map_err(|e| e.to_string())?;
            total += round;
            if round == 0 {
                return Ok(total);
            }
        }
        Err("settle did not converge after 100 rounds".into())
    }

    /// Serves HTTP on `listener` and runs the background workers this
    /// process is configured for, until `shutdown` resolves; then stops
    /// accepting, finishes in-flight requests and stops every worker.
    pub async fn serve(
        self,
        listener: TcpListener,
        background: bool,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut workers = Vec::new();
        if background && self.config.runs("workers") {
            workers.push(tokio::spawn(self.dispatcher.clone().run(Duration::from_millis(20), stopped())));
            workers.push(tokio::spawn(self.sales.clone().run_expiry(Duration::from_secs(1), stopped())));
            workers.push(tokio::spawn(self.payments.clone().run_background(stopped())));
            let chain_worker = WorkerConfig {
                reconcile_every: Duration::from_secs(self.config.chain.reconcile_every_seconds.max(1)),
                tick: Duration::from_millis(self.config.chain.tick_ms.max(1)),
                ..WorkerConfig::default()
            };
            workers.push(tokio::spawn(self.chain.clone().run(chain_worker, stopped())));
            workers.push(tokio::spawn(self.market.clone().run_sweeper(Duration::from_secs(1), stopped())));
        }
        let limits = self.limits.clone();
        let prune = stopped();
        workers.push(tokio::spawn(async move {
            tokio::pin!(prune);
            loop {
                tokio::select! {
                    _ = &mut prune => return,
                    _ = tokio::time::sleep(Duration::from_secs(60)) => limits.prune(),
                }
            }
        }));

        let app = self.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
        let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        let _ = stop_tx.send(true);
        for w in workers {
            let _ = w.await;
        }
        self.db.close().await;
        result
    }
}

/// The custodial wallet's master keys: from `[wallet]`, or else the key file in the data
/// directory, generated at first start. The log names the file and the key id, never the key.
fn wallet_keys(config: &Config, db: &Db) -> Result<MasterKeys, BuildError> {
    let w = &config.wallet;
    if !w.master_keys.is_empty() {
        return MasterKeys::from_config(&w.master_keys, &w.active_key_id)
            .map_err(|e| BuildError::Config(format!("wallet: {e}")));
    }
    let (keys, created) =
        MasterKeys::load_or_create_file(&config.data_dir).map_err(|e| BuildError::Component(format!("wallet: {e}")))?;
    let file = MasterKeys::file_path(&config.data_dir);
    if created {
        tracing::warn!(file = %file.display(), key_id = keys.active_id(),
            "generated the wallet master key; back up this file: without it no custodial key can be opened");
    }
    if db.backend() == entrada_storage::Backend::Postgres {
        tracing::warn!(file = %file.display(),
            "wallet.master_keys is not configured: using the data directory's key file; every process \
             of a scaled deployment must share the same keys, so configure [wallet] instead");
    }
    Ok(keys)
}

/// The JSON-RPC chain from `[chain]`: roles left without a key use the minter's; the factory
/// is recorded in the data directory. A node that is down or on another chain stops the start
/// (a misconfiguration must not go unnoticed); once running, outages only delay minting.
async fn rpc_chain(config: &Config) -> Result<RpcChain, BuildError> {
    let s = &config.chain;
    let or_minter = |k: &Secret<String>| if k.expose().is_empty() { s.minter_key.clone() } else { k.clone() };
    let keys = RoleKeys {
        admin: or_minter(&s.admin_key),
        minter: s.minter_key.clone(),
        custodian: or_minter(&s.custodian_key),
        organizer: or_minter(&s.organizer_key),
    };
    let mut rpc = RpcConfig::new(s.rpc_url.clone(), s.chain_id, keys);
    rpc.confirmations = s.confirmations.max(1);
    rpc.request_timeout = Duration::from_millis(s.rpc_timeout_ms.max(1));
    // Waiting for a receipt ends well inside the send's lease, so no other process starts
    // resolving a send this one is still waiting on.
    rpc.receipt_timeout = Duration::from_millis(u64::try_from(s.send_lease_seconds.max(2)).unwrap_or(2) * 500);
    rpc.data_dir = Some(config.data_dir.clone());
    RpcChain::connect(rpc).await.map_err(|e| BuildError::Component(format!("chain: {e}")))
}
