//! The daemon around the routes: loads trust and the stored registry, binds the public and
//! mesh listeners, expires silent workers, runs health checks, takes the log level and the
//! revocation list again on SIGHUP (the list also when its file changes) and shuts down on a
//! signal.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rma_daemon::Reload;
use rma_daemon::crl_watch::CrlWatch;
use tokio::net::TcpListener;

use crate::api;
use crate::app::{App, Shared};
use crate::config::{Config, DEFAULT_MESH_PORT};
use crate::edge::{self, Listener};
use crate::server::{self, Edge, Servers};
use crate::store::Store;

/// The mesh IP in this node's certificate, if the config names one.
fn certificate_ip(config: &Config) -> anyhow::Result<Option<Ipv4Addr>> {
    let Some(path) = &config.cert else {
        return Ok(None);
    };
    Ok(Some(rma_daemon::identity::load_cert(path)?.mesh_ip()))
}

/// Loads everything the config names, so `--check-config` and startup fail alike.
pub fn prepare(config: &Config) -> anyhow::Result<Shared> {
    let token = config.admin_token.read().map_err(|e| anyhow::anyhow!(e))?;
    let ca = rma_daemon::identity::load_ca(&config.ca)?;
    let crls = match &config.crl {
        Some(path) => rma_daemon::identity::load_crls(path, &ca)?,
        None => Vec::new(),
    };
    for crl in &crls {
        rma_daemon::crl_watch::warn_if_due(Some(crl), time::OffsetDateTime::now_utc());
    }
    // The certificate's, else the mesh listener's (a mesh IP unless it is a wildcard).
    let listened = config.mesh.and_then(|addr| match addr.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    });
    let mesh_ip = certificate_ip(config)?.or(listened);
    if let Some(dir) = config.store.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let store = Store::open(&config.store).with_context(|| config.store.display().to_string())?;
    let loaded = store.load()?;
    for (name, cause) in &loaded.unreadable {
        tracing::warn!(worker = %name, %cause, "stored registration unreadable; kept on disk, not routed to");
    }
    let app = Arc::new(App::new(config, ca, crls, store, mesh_ip, token));
    {
        let mut registry = app.registry();
        let now = Instant::now();
        for worker in loaded.workers {
            tracing::info!(worker = %worker.name, mesh_ip = %worker.mesh_ip, "restored from the store; dropped unless it heartbeats within the TTL");
            registry.restore(worker, now);
        }
    }
    Ok(app)
}

/// The mesh listener's address: the config's, or the certificate's mesh IP.
fn mesh_addr(config: &Config, app: &App) -> anyhow::Result<SocketAddr> {
    config
        .mesh
        .or_else(|| {
            app.mesh_ip
                .map(|ip| SocketAddr::from((ip, DEFAULT_MESH_PORT)))
        })
        .context("no mesh listen address")
}

/// Binds `addr` even before the address exists (IP_FREEBIND): routerd may start before
/// meshd has brought up the TUN device that carries its mesh IP.
fn bind_freely(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_freebind_v4(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// Expires silent workers when their TTL runs out, and forgets idle rate-limit buckets.
async fn expire_loop(app: Shared) {
    loop {
        let next = app.registry().next_expiry();
        let wake = next
            .map(|t| t + Duration::from_millis(1))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1))
            .min(Instant::now() + Duration::from_secs(1));
        tokio::time::sleep_until(wake.into()).await;
        let now = Instant::now();
        let gone = app.expire(now);
        if let Some(limiter) = app.traffic().rate_limiter.as_mut() {
            limiter.sweep(now);
        }
        if !gone.is_empty() {
            let addrs: Vec<SocketAddr> = app
                .registry()
                .endpoints()
                .into_iter()
                .map(|e| e.addr)
                .collect();
            for pool in app.pools() {
                pool.retain(|a| addrs.contains(a));
            }
        }
    }
}

/// SIGHUP re-reads the configuration for what can change while running (the log level) and
/// looks at the revocation list file at once; the file is also looked at every few seconds,
/// and a newer list in it is taken.
async fn hangup_loop(
    app: Shared,
    mut hangup: tokio::signal::unix::Signal,
    reload: Option<Reload>,
    running: Config,
) {
    let ca = app.trust.ca();
    let mut watch = running.crl.clone().map(|path| CrlWatch::new(path, ca));
    let mut poll = tokio::time::interval(rma_daemon::crl_watch::POLL);
    let mut daily = tokio::time::interval(Duration::from_secs(86_400));
    loop {
        let force = tokio::select! {
            _ = hangup.recv() => {
                match &reload {
                    Some(reload) => match reload_config(reload, &running) {
                        Ok(()) => tracing::info!(path = %reload.config_path.display(), "configuration reloaded"),
                        Err(e) => tracing::error!("reload refused, keeping the running configuration: {e:#}"),
                    },
                    None => tracing::warn!("SIGHUP: no configuration file to reload; looking at the revocation list only"),
                }
                true
            }
            _ = poll.tick() => false,
            _ = daily.tick() => {
                for crl in app.trust.lists() {
                    rma_daemon::crl_watch::warn_if_due(Some(&crl), time::OffsetDateTime::now_utc());
                }
                continue;
            }
        };
        if let Some(watch) = &mut watch {
            watch.poll(force, |crl| {
                app.trust.offer(crl, time::OffsetDateTime::now_utc())
            });
        }
    }
}

/// Reads the configuration again and applies its log level; anything else that changed needs
/// a restart, and says so.
fn reload_config(reload: &Reload, running: &Config) -> anyhow::Result<()> {
    let new = Config::load(&reload.config_path)?;
    (reload.set_log_filter)(&new.log.level).map_err(|e| anyhow::anyhow!("log.level: {e}"))?;
    let mut rest = new;
    rest.log.level.clone_from(&running.log.level);
    rma_daemon::logging::restart_needed(
        "routerd",
        &[("settings other than log.level", rest != *running)],
    );
    Ok(())
}

/// Runs routerd until `shutdown` completes; `ready` is called once both listeners are bound.
pub async fn run(
    config: Config,
    reload: Option<Reload>,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(SocketAddr, SocketAddr),
) -> anyhow::Result<()> {
    let app = prepare(&config)?;
    let public = TcpListener::bind(config.public)
        .await
        .with_context(|| format!("public listener {}", config.public))?;
    let mesh = mesh_addr(&config, &app)?;
    let mesh_listener = bind_freely(mesh).with_context(|| format!("mesh listener {mesh}"))?;
    let (public_addr, mesh_addr) = (public.local_addr()?, mesh_listener.local_addr()?);
    let mut tasks = tokio::task::JoinSet::new();
    let edge = |listener| {
        Arc::new(Edge {
            app: app.clone(),
            router: api::routes(app.clone(), listener),
            listener,
            cors: edge::cors(&config.cors_origins),
        })
    };
    let servers =
        Arc::new(Servers::start(&app.serving_pools).context("starting the serving threads")?);
    tasks.spawn(server::serve(
        public,
        edge(Listener::Public),
        servers.clone(),
        "public",
    ));
    tasks.spawn(server::serve(
        mesh_listener,
        edge(Listener::Mesh),
        servers,
        "mesh",
    ));
    tasks.spawn(expire_loop(app.clone()));
    tasks.spawn(crate::health::run(
        app.clone(),
        config.health.interval,
        config.health.timeout,
    ));
    // Installed before `ready`: from then on a SIGHUP reloads instead of ending routerd.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    tasks.spawn(hangup_loop(app.clone(), hangup, reload, config.clone()));
    let workers = app.registry().workers().count();
    tracing::info!(public = %public_addr, mesh = %mesh_addr, workers, "routerd up");
    ready(public_addr, mesh_addr);
    shutdown.await;
    tracing::info!("routerd stopping");
    tasks.abort_all();
    Ok(())
}
