//! A Tally node as a library: the PostgreSQL wire front end over `tally_query::Sql`.
//! `Server::bind` claims the address (a clear error if it is taken or not allowed), `run`
//! serves until the shutdown future resolves, then stops accepting and lets open connections
//! finish for a grace period. Nothing reachable from the network may touch the server's files
//! (see `tally_query`), run past the statement time limit, or skip authentication outside
//! development mode (no users configured: loopback only).

mod coalesce;
mod connection;
mod flight;
mod frames;
mod interrupt;
mod raft_network;
mod raft_service;
mod rows;
mod scram;
mod settings;
mod socket;
mod startup;
mod tokens;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion_postgres::pgwire;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ConnectionManager, RandomPidSecretKeyGenerator};
use tally_query::Sql;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use crate::connection::{Connection, Shared};
pub use crate::flight::{
    BATCHES_IN_FLIGHT, BYTES_IN_FLIGHT, DEFAULT_INGEST_LISTEN, DRY_RUN_HEADER, MAX_STREAMS,
    PRODUCER_HEADER,
};
pub use crate::raft_network::{change_members, cluster_status, Network, Secret};
use crate::socket::Handlers;
pub use crate::socket::{ConnectionLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_STARTUP_TIMEOUT};
use crate::startup::Startup;
pub use crate::users::Users;

/// The address a cluster node's Raft port listens on unless told otherwise.
pub const DEFAULT_RAFT_LISTEN: &str = "127.0.0.1:5435";
/// The address `tally serve` listens on unless told otherwise (surface.md).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
/// Connections served at once; more are refused with SQLSTATE 53300, as PostgreSQL does.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;
/// The longest any statement may run (a session may ask for less with statement_timeout).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long open connections get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Bind(String),
    #[error("users file: {0}")]
    Users(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("setting up SQL: {0}")]
    Sql(String),
}

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Empty: development mode.
    pub users: Users,
    /// PEM certificate chain and private key; TLS is offered when given.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_connections: usize,
    pub statement_timeout: Duration,
    /// Startup and idle time limits of every connection.
    pub limits: ConnectionLimits,
    /// Where streaming ingest (Arrow Flight) listens; `None`: not at all.
    pub ingest: Option<SocketAddr>,
    /// Where the Raft port listens, for a node of a cluster; `None`: a lone node.
    pub raft: Option<(SocketAddr, Secret)>,
}

impl ServeOptions {
    pub fn new(listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            listen,
            users: Users::default(),
            tls: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            limits: ConnectionLimits::default(),
            ingest: None,
            raft: None,
        }
    }
}

/// A bound, not yet serving, PostgreSQL front end.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    users: Arc<Users>,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
    connections: Arc<ConnectionManager>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    mock_key: Arc<[u8; 32]>,
    limits: ConnectionLimits,
    ingest: Option<GrpcPort>,
    raft: Option<GrpcPort>,
}

/// A bound gRPC port (streaming ingest, a cluster node's Raft port) with its service, not yet
/// serving.
struct GrpcPort {
    listener: TcpListener,
    router: tonic::transport::server::Router,
    name: &'static str,
}

impl GrpcPort {
    fn new(
        listener: TcpListener,
        tls: Option<tonic::transport::ServerTlsConfig>,
        name: &'static str,
        add: impl FnOnce(&mut tonic::transport::Server) -> tonic::transport::server::Router,
    ) -> Result<GrpcPort, ServerError> {
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder =
                builder.tls_config(tls).map_err(|e| ServerError::Tls(format!("{name}: {e}")))?;
        }
        Ok(GrpcPort { listener, router: add(&mut builder), name })
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener")
    }

    /// Serves on a task of its own until the returned handle is stopped.
    fn spawn(self) -> Serving {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let incoming =
                tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true));
            let served = self
                .router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!("{} stopped: {e}", self.name);
            }
        });
        Serving { stop, task }
    }
}

/// A gRPC port being served.
struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Stops accepting and waits (a bounded time) for open calls to finish.
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.task).await;
    }
}

fn tls_acceptor(cert: &PathBuf, key: &PathBuf) -> Result<TlsAcceptor, ServerError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!("{} holds no certificate", cert.display())));
    }
    let key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{} holds no private key", key.display())))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Server {
    pub async fn bind(sql: Sql, options: ServeOptions) -> Result<Server, ServerError> {
        if options.users.is_empty() && !options.listen.ip().is_loopback() {
            return Err(ServerError::Bind(format!(
                "refusing to listen on {}: no users are configured (development mode accepts \
                 loopback connections only); add one with `tally user add`, or listen on 127.0.0.1",
                options.listen
            )));
        }
        let tls = match &options.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key)?),
            None => None,
        };
        sql.add_postgres_catalog().await.map_err(|e| ServerError::Sql(e.to_string()))?;
        let listener = listen(options.listen, "--listen").await?;
        let users = Arc::new(options.users);
        let mock_key = Arc::new(startup::mock_key().map_err(ServerError::Users)?);
        let ingest = match options.ingest {
            Some(addr) => {
                flight::check_listen(addr, users.is_empty()).map_err(ServerError::Bind)?;
                let auth = Arc::new(tokens::Auth::new(users.clone(), mock_key.clone()));
                let service = flight::Ingest::new(sql.clone(), auth).service();
                let tls = options.tls.as_ref().map(|(c, k)| flight_tls(c, k)).transpose()?;
                let listener = listen(addr, "--ingest").await?;
                Some(GrpcPort::new(listener, tls, "streaming ingest", |b| b.add_service(service))?)
            }
            None => None,
        };
        let raft = match options.raft {
            Some((addr, secret)) => {
                raft_service::check_listen(addr, &secret).map_err(ServerError::Bind)?;
                let db = sql.database().clone();
                let service = raft_service::RaftService::new(db, secret).service();
                let tls = options.tls.as_ref().map(|(c, k)| flight_tls(c, k)).transpose()?;
                let listener = listen(addr, "--raft").await?;
                Some(GrpcPort::new(listener, tls, "the Raft port", |b| b.add_service(service))?)
            }
            None => None,
        };
        let shared = Arc::new(Shared { sql, max_statement_time: options.statement_timeout });
        Ok(Server {
            listener,
            shared,
            users,
            tls,
            limit: Arc::new(Semaphore::new(options.max_connections)),
            connections: Arc::new(ConnectionManager::new()),
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
            mock_key,
            limits: options.limits,
            ingest,
            raft,
        })
    }

    /// Where streaming ingest listens, when it does.
    pub fn ingest_addr(&self) -> Option<SocketAddr> {
        self.ingest.as_ref().map(GrpcPort::addr)
    }

    /// Where the Raft port listens, for a node of a cluster.
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.raft.as_ref().map(GrpcPort::addr)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn development_mode(&self) -> bool {
        self.users.is_empty()
    }

    /// Serves until `shutdown` resolves; then stops accepting and waits (a bounded time) for
    /// open connections to finish.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let max = self.limit.available_permits();
        let grpc: Vec<Serving> = [self.ingest.take(), self.raft.take()]
            .into_iter()
            .flatten()
            .map(GrpcPort::spawn)
            .collect();
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => accepted,
            };
            let (mut socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            };
            let Ok(permit) = self.limit.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "refused: {max} connections are open");
                tokio::spawn(async move {
                    let _ = socket.write_all(&too_many_connections()).await;
                    let _ = socket.shutdown().await;
                });
                continue;
            };
            let _ = socket.set_nodelay(true);
            let handlers = Handlers {
                connection: Arc::new(Connection::new(self.shared.clone())),
                startup: Arc::new(Startup::new(
                    self.users.clone(),
                    self.connections.clone(),
                    self.pids.clone(),
                    self.mock_key.clone(),
                )),
                cancel: Arc::new(DefaultCancelHandler::new(self.connections.clone())),
            };
            let (tls, limits) = (self.tls.clone(), self.limits);
            tokio::spawn(async move {
                if let Err(e) = socket::serve(socket, tls, handlers, limits).await {
                    tracing::debug!(%peer, "connection ended: {e}");
                }
                drop(permit);
            });
        }
        drop(self.listener);
        for serving in grpc {
            serving.stop().await;
        }
        let open = max - self.limit.available_permits();
        if open > 0 {
            tracing::info!("waiting up to {SHUTDOWN_GRACE:?} for {open} open connections");
            let all = u32::try_from(max).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.limit.acquire_many(all)).await;
        }
    }
}

/// Binds a listener, with a clear error when the address is taken or not allowed.
async fn listen(addr: SocketAddr, flag: &str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            ServerError::Bind(format!(
                "{addr} is already in use (is another `tally serve` running?); pick another \
                 address with {flag}"
            ))
        } else {
            ServerError::Bind(format!("cannot listen on {addr}: {e}"))
        }
    })
}

/// The Flight endpoint's TLS, from the same PEM files as the PostgreSQL port's.
fn flight_tls(
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<tonic::transport::ServerTlsConfig, ServerError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", p.display())))
    };
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    Ok(tonic::transport::ServerTlsConfig::new().identity(identity))
}

/// A FATAL ErrorResponse (53300), written before the client's startup message is read.
fn too_many_connections() -> Vec<u8> {
    let mut body = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "53300"),
        (b'M', "sorry, too many clients already"),
    ] {
        body.push(tag);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = vec![b'E'];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(&body);
    message
}
