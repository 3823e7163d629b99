//! The Keyward server: configuration ([`config`]), the HTTP API ([`routes`]), authentication
//! extractors ([`extract`]), the error mapping ([`error`]), the web console ([`console`]) and
//! startup ([`start`], [`run`]).
//!
//! [`app`] builds the one `Router` that both `keyward serve` and the tests use.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod admin;
pub mod audit;
pub mod config;
pub mod console;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod keylimits;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod telemetry;
pub mod throttle;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::Router;
use keyward_core::{
    AccountService, Clock, DeviceService, DeviceSettings, KeyService, KeySettings, LeakService,
    PasswordHasher, PasswordHasherConfig, SessionConfig, TokenSigner, UsageService, UsageSettings,
    WebhookService,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;

pub use config::{Config, Overrides, Settings};
pub use keyward_store::redact_url as redact_database_url;
pub use state::AppState;

/// The router with every route and layer.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.settings.limits.body_bytes;
    Router::new()
        .merge(routes::auth::router())
        .merge(routes::device::router())
        .merge(routes::keys::router())
        .merge(routes::service::router())
        .merge(routes::usage::router())
        .merge(routes::audit::router())
        .merge(routes::webhooks::router())
        .merge(routes::leaks::router())
        // The `RateLimit-*` headers of answers to keys with a rate limit.
        .layer(axum::middleware::from_fn(keylimits::headers))
        .nest("/console", console::router())
        .fallback(routes::service::not_found)
        .method_not_allowed_fallback(routes::service::method_not_allowed)
        // The client address and user agent of the audit events a request records.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit::origin,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::new())
        // Inside `observe`, which writes the problem body of its refusals.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::guard_secrets,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::observe,
        ))
        .with_state(state)
}

/// Opens the store, loads the signing keys and builds the services.
pub async fn build_state(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let store = keyward_store::connect(&config.database_url, &config.pool)
        .await
        .with_context(|| {
            format!(
                "opening the database {}",
                keyward_store::redact_url(&config.database_url)
            )
        })?;
    let settings = &config.settings;
    let signer = TokenSigner::load(
        store.clone(),
        clock.clone(),
        config.public_url.clone(),
        settings.sessions.audience.clone(),
        settings.sessions.access_token_ttl_seconds,
    )
    .await
    .context("loading the token signing keys")?;
    let limiter = keylimits::limiter(
        settings.keys.rate_limit_store,
        settings.redis_url.as_deref(),
        &config.database_url,
        store.clone(),
    )
    .await?;
    let keys = Arc::new(
        KeyService::new(
            store.clone(),
            clock.clone(),
            KeySettings {
                format: config.key_format.clone(),
                max_per_user: settings.keys.max_per_user,
                cache_capacity: settings.keys.cache_capacity as usize,
            },
        )
        .with_rate_limiter(limiter),
    );
    let webhooks = Arc::new(WebhookService::new(store.clone(), clock.clone()));
    keys.set_webhooks(webhooks.clone());
    let leaks = Arc::new(LeakService::new(
        store.clone(),
        clock.clone(),
        keys.clone(),
        webhooks.clone(),
        settings.leaks.auto_revoke,
    ));
    let device = Arc::new(DeviceService::new(
        store.clone(),
        clock.clone(),
        keys.clone(),
        DeviceSettings {
            code_ttl_seconds: settings.device.code_ttl_seconds,
            interval_seconds: settings.device.interval_seconds,
            verification_uri: format!("{}/console/device", config.public_url),
        },
    ));
    let usage = Arc::new(UsageService::new(
        store.clone(),
        clock.clone(),
        UsageSettings {
            enabled: settings.usage.enabled,
            queue_capacity: settings.usage.queue_capacity,
            batch_size: settings.usage.batch_size,
            flush_interval: Duration::from_millis(settings.usage.flush_interval_ms),
        },
    ));
    let mut hasher_config = PasswordHasherConfig::default();
    if let Some(concurrency) = settings.limits.password_hash_concurrency {
        hasher_config.max_concurrent = concurrency;
    }
    if let Some(queue) = settings.limits.password_hash_queue {
        hasher_config.queue_capacity = queue;
    }
    let accounts = Arc::new(AccountService::new(
        store.clone(),
        clock,
        PasswordHasher::new(hasher_config).context("setting up password hashing")?,
        Arc::new(signer),
        keys.clone(),
        SessionConfig {
            refresh_token_ttl_days: settings.sessions.refresh_token_ttl_days,
            refresh_reuse_grace_seconds: settings.sessions.refresh_reuse_grace_seconds,
            create_key_on_register: settings.keys.create_on_register,
        },
    ));
    let metrics = Arc::new(metrics::Metrics::new(keys.cache().clone()));
    let throttles = Arc::new(throttle::Throttles::new(&settings.rate_limits));
    Ok(AppState::new(state::Services {
        throttles,
        accounts,
        keys,
        device,
        usage,
        webhooks,
        leaks,
        store,
        metrics,
        config: Arc::new(config),
    }))
}

/// The default `public_url` is `http://<listen>`: with port 0 (tests, embedding) that must be
/// the port actually bound, or tokens carry `iss = http://127.0.0.1:0`.
fn with_bound_address(mut config: Config, addr: SocketAddr) -> Config {
    if config.settings.public_url.is_none() {
        config.public_url = format!("http://{addr}");
    }
    config
}

/// A server running in the background (for tests and embedding).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The gateway's address, when one is configured.
    pub gateway_addr: Option<SocketAddr>,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in flight finish, flushes pending writes.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task")?
    }
}

/// Binds `config.listen` and serves in a background task.
pub async fn start(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.listen))?;
    let addr = listener.local_addr()?;
    let gateway = bind_gateway(&config).await?;
    let gateway_addr = gateway
        .as_ref()
        .map(|(listener, _)| listener.local_addr())
        .transpose()?;
    let state = build_state(with_bound_address(config, addr), clock).await?;
    let (shutdown, mut signal) = watch::channel(false);
    let task = tokio::spawn(serve(listener, gateway, state.clone(), async move {
        let _ = signal.wait_for(|stop| *stop).await;
    }));
    Ok(RunningServer {
        addr,
        gateway_addr,
        state,
        shutdown,
        task,
    })
}

/// Binds the gateway's listener when one is configured.
async fn bind_gateway(
    config: &Config,
) -> anyhow::Result<Option<(TcpListener, gateway::GatewayConfig)>> {
    let Some(gateway) = &config.gateway else {
        return Ok(None);
    };
    let listener = TcpListener::bind(gateway.listen)
        .await
        .with_context(|| format!("gateway.listen: cannot bind {}", gateway.listen))?;
    Ok(Some((listener, gateway.clone())))
}

async fn serve(
    listener: TcpListener,
    gateway: Option<(TcpListener, gateway::GatewayConfig)>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The verification cache serves only while this follows every instance's key changes.
    let key_watch = state.store.watch_key_changes(state.keys.cache().clone());
    let keys = state.keys.clone();
    let accounts = state.accounts.clone();
    let throttles = state.throttles.clone();
    // How often the signing keys are reread, so that this instance's JWKS lists keys other
    // instances added, and it signs with a key `keyward admin rotate-signing-key` added.
    let signing_key_reload_seconds =
        u64::try_from(state.config.settings.sessions.signing_key_reload_seconds)
            .unwrap_or(30)
            .max(1);
    let flusher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut seconds: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(error) = keys.flush_last_used().await {
                tracing::warn!(%error, "writing last_used_at failed; will retry");
            }
            seconds += 1;
            if seconds % throttle::PRUNE_INTERVAL.as_secs() == 0 {
                throttles.prune();
                keys.rate_limiter().prune();
            }
            if seconds % signing_key_reload_seconds == 0 {
                if let Err(error) = accounts.signer().reload().await {
                    tracing::warn!(%error, "reloading signing keys failed; will retry");
                }
            }
        }
    });
    // The usage writer is stopped, not aborted: it drains the queue and writes what is left
    // once no request can add to it any more, and before the store closes.
    let (stop_usage, usage_stopped) = watch::channel(false);
    let usage_writer = tokio::spawn(state.usage.clone().run(usage_stopped));
    // The webhook dispatcher: stopped after the listeners, so events of the last requests
    // are queued; what it has not sent waits in the database for the next instance.
    let (stop_webhooks, webhooks_stopped) = watch::channel(false);
    let dispatcher = tokio::spawn(
        webhooks::Dispatcher::new(
            state.webhooks.clone(),
            state.metrics.clone(),
            &state.config.settings.webhooks,
        )
        .run(webhooks_stopped),
    );
    // One signal stops both listeners; each lets its requests in flight finish.
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopped = |mut stopping: watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let api = async {
        // The peer address is the client's, unless a trusted proxy forwarded the request.
        axum::serve(
            listener,
            app(state.clone()).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stopping.clone()))
        .await
    };
    let gateway = async {
        let Some((listener, config)) = gateway else {
            return Ok(());
        };
        let router = gateway::router(state.clone(), config)?;
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stopping.clone()))
        .await
        .context("serving the gateway")
    };
    let (api, gateway): (std::io::Result<()>, anyhow::Result<()>) = tokio::join!(api, gateway);
    let result = api.context("serving HTTP").and(gateway);
    flusher.abort();
    let _ = stop_webhooks.send(true);
    // Attempts in flight finish within the delivery timeout; past it they are dropped, and
    // their leases let another instance (or the next start) retry them.
    let webhook_grace = Duration::from_secs(
        state
            .config
            .settings
            .webhooks
            .timeout_seconds
            .saturating_add(1),
    );
    let dispatcher_abort = dispatcher.abort_handle();
    if tokio::time::timeout(webhook_grace, dispatcher)
        .await
        .is_err()
    {
        dispatcher_abort.abort();
    }
    let _ = stop_usage.send(true);
    if let Err(error) = usage_writer.await {
        tracing::error!(%error, "usage writer task failed");
    }
    if let Err(error) = state.keys.flush_last_used().await {
        tracing::warn!(%error, "final last_used_at flush failed");
    }
    // Stopped before the store closes, which removes this instance from the feed's
    // `instances`: a poll after that would add it back.
    key_watch.abort();
    let _ = key_watch.await;
    state.store.close().await;
    result
}

/// `keyward migrate`: connects and applies any pending migrations, then returns.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = keyward_store::connect(&config.database_url, &config.pool)
        .await
        .with_context(|| {
            format!(
                "migrating {}",
                keyward_store::redact_url(&config.database_url)
            )
        })?;
    store.close().await;
    Ok(())
}

/// `keyward serve`: runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen: cannot bind {}", config.listen))?;
    let config = with_bound_address(config, listener.local_addr()?);
    let public_url = config.public_url.clone();
    let database = keyward_store::redact_url(&config.database_url);
    let gateway = bind_gateway(&config).await?;
    let state = build_state(config, clock).await?;
    tracing::info!(addr = %listener.local_addr()?, %public_url, %database, "keyward listening");
    if let Some((listener, config)) = &gateway {
        tracing::info!(
            addr = %listener.local_addr()?,
            upstream = %config.upstream_origin(),
            "keyward gateway listening"
        );
    }
    serve(listener, gateway, state, shutdown_signal()).await?;
    tracing::info!("keyward stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}
