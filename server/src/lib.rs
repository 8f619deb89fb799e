//! A Tally node as a library: the PostgreSQL wire front end over `tally_query::Sql`.
//! `Server::bind` claims the address (a clear error if it is taken or not allowed), `run`
//! serves until the shutdown future resolves, then stops accepting and lets open connections
//! finish for a grace period. Nothing reachable from the network may touch the server's files
//! (see `tally_query`), run past the statement time limit, or skip authentication outside
//! development mode (no users configured: loopback only).

mod connection;
mod frames;
mod interrupt;
mod rows;
mod scram;
mod settings;
mod socket;
mod startup;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::scalar::ScalarValue;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
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
use crate::socket::Handlers;
pub use crate::socket::{ConnectionLimits, DEFAULT_IDLE_TIMEOUT, DEFAULT_STARTUP_TIMEOUT};
use crate::startup::Startup;
pub use crate::users::Users;

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

/// `version()` answers like PostgreSQL's, which drivers parse, and says what it is.
fn register_version(sql: &Sql) {
    let text = format!(
        "PostgreSQL {} (Tally {}, an attribution ledger; SQL by Apache DataFusion)",
        startup::SERVER_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    let udf = create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    );
    sql.context().register_udf(udf);
}

/// `to_regtype(name)`: PostgreSQL's type lookup by name (NULL when unknown), which drivers use
/// to discover types (psycopg's `TypeInfo.fetch`, hence SQLAlchemy on connect). Answered from
/// the catalog's `pg_type`, read once.
async fn register_to_regtype(sql: &Sql) -> Result<(), ServerError> {
    let err = |e: datafusion::error::DataFusionError| ServerError::Sql(e.to_string());
    let batches = sql
        .context()
        .sql("SELECT typname, oid FROM pg_catalog.pg_type")
        .await
        .map_err(err)?
        .collect()
        .await
        .map_err(err)?;
    let Some(first) = batches.first() else {
        return Err(ServerError::Sql("pg_catalog.pg_type is empty".into()));
    };
    let oid_type = first.schema().field(1).data_type().clone();
    let mut oids = std::collections::HashMap::new();
    for b in &batches {
        for row in 0..b.num_rows() {
            let name = ScalarValue::try_from_array(b.column(0), row).map_err(err)?;
            let oid = ScalarValue::try_from_array(b.column(1), row).map_err(err)?;
            if let ScalarValue::Utf8(Some(n)) | ScalarValue::Utf8View(Some(n)) = name {
                oids.insert(n, oid);
            }
        }
    }
    // The SQL spellings drivers ask for, beside pg_type's own names.
    for (alias, name) in [
        ("integer", "int4"),
        ("int", "int4"),
        ("bigint", "int8"),
        ("smallint", "int2"),
        ("boolean", "bool"),
        ("double precision", "float8"),
        ("real", "float4"),
        ("character varying", "varchar"),
        ("timestamp without time zone", "timestamp"),
        ("timestamp with time zone", "timestamptz"),
    ] {
        if let Some(oid) = oids.get(name).cloned() {
            oids.insert(alias.to_owned(), oid);
        }
    }
    let null = ScalarValue::try_from(&oid_type).map_err(err)?;
    let lookup = move |name: Option<&str>| -> ScalarValue {
        let Some(name) = name else { return null.clone() };
        let name = name.trim().trim_matches('"').to_ascii_lowercase();
        let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
        oids.get(name).cloned().unwrap_or_else(|| null.clone())
    };
    let udf = create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        oid_type,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| match &args[0] {
            ColumnarValue::Scalar(v) => {
                let name = match v {
                    ScalarValue::Utf8(n) | ScalarValue::Utf8View(n) | ScalarValue::LargeUtf8(n) => {
                        n.as_deref()
                    }
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(lookup(name)))
            }
            ColumnarValue::Array(a) => {
                let values = (0..a.len())
                    .map(|i| match ScalarValue::try_from_array(a, i)? {
                        ScalarValue::Utf8(n)
                        | ScalarValue::Utf8View(n)
                        | ScalarValue::LargeUtf8(n) => Ok(lookup(n.as_deref())),
                        _ => Ok(lookup(None)),
                    })
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                Ok(ColumnarValue::Array(ScalarValue::iter_to_array(values)?))
            }
        }),
    );
    sql.context().register_udf(udf);
    Ok(())
}

/// Catalog functions drivers call that DataFusion lacks. Most have a fixed answer here: the
/// ledger's tables have no serial columns (`pg_get_serial_sequence` is NULL) and one collation
/// (always visible); `json_build_object` is real.
fn register_catalog_functions(sql: &Sql) {
    let null_text = create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    );
    sql.context().register_udf(null_text);
    for name in ["pg_collation_is_visible", "pg_type_is_visible"] {
        sql.context().register_udf(create_udf(
            name,
            vec![DataType::Int64],
            DataType::Boolean,
            Volatility::Stable,
            Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
        ));
    }
    // json_build_object(k1, v1, …): SQLAlchemy's column reflection builds identity and
    // collation details with it.
    let json = datafusion::logical_expr::expr_fn::SimpleScalarUDF::new_with_signature(
        "json_build_object",
        datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
        DataType::Utf8,
        Arc::new(|args: &[ColumnarValue]| {
            let rows = args
                .iter()
                .find_map(|a| match a {
                    ColumnarValue::Array(a) => Some(a.len()),
                    ColumnarValue::Scalar(_) => None,
                })
                .unwrap_or(1);
            let mut out = Vec::with_capacity(rows);
            for row in 0..rows {
                let mut object = String::from("{");
                for (i, pair) in args.chunks(2).enumerate() {
                    let value = |a: &ColumnarValue| match a {
                        ColumnarValue::Scalar(v) => Ok(v.clone()),
                        ColumnarValue::Array(a) => ScalarValue::try_from_array(a, row),
                    };
                    if i > 0 {
                        object.push_str(", ");
                    }
                    object.push_str(&json_value(&value(&pair[0])?, true));
                    object.push_str(" : ");
                    let v = pair.get(1).map(value).transpose()?.unwrap_or(ScalarValue::Null);
                    object.push_str(&json_value(&v, false));
                }
                object.push('}');
                out.push(Some(object));
            }
            let array = datafusion::arrow::array::StringArray::from(out);
            Ok(if rows == 1 && args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            } else {
                ColumnarValue::Array(Arc::new(array))
            })
        }),
    );
    sql.context().register_udf(datafusion::logical_expr::ScalarUDF::from(json));
}

/// A value as JSON text: numbers and booleans bare, NULL as null, everything else a string.
fn json_value(v: &ScalarValue, key: bool) -> String {
    if v.is_null() {
        return "null".into();
    }
    let text = v.to_string();
    let bare = !key
        && matches!(
            v,
            ScalarValue::Boolean(_)
                | ScalarValue::Int8(_)
                | ScalarValue::Int16(_)
                | ScalarValue::Int32(_)
                | ScalarValue::Int64(_)
                | ScalarValue::UInt8(_)
                | ScalarValue::UInt16(_)
                | ScalarValue::UInt32(_)
                | ScalarValue::UInt64(_)
        );
    if bare {
        text
    } else {
        let mut quoted = String::with_capacity(text.len() + 2);
        quoted.push('"');
        for c in text.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        quoted
    }
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
        setup_pg_catalog(sql.context(), "tally", EmptyContextProvider)
            .map_err(|e| ServerError::Sql(e.to_string()))?;
        register_version(&sql);
        register_to_regtype(&sql).await?;
        register_catalog_functions(&sql);
        let listener = TcpListener::bind(options.listen).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                ServerError::Bind(format!(
                    "{} is already in use (is another `tally serve` running?); pick another \
                     address with --listen",
                    options.listen
                ))
            } else {
                ServerError::Bind(format!("cannot listen on {}: {e}", options.listen))
            }
        })?;
        let shared = Arc::new(Shared {
            sql,
            parser: PostgresCompatibilityParser::new(),
            max_statement_time: options.statement_timeout,
            heavy_planning: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
        });
        Ok(Server {
            listener,
            shared,
            users: Arc::new(options.users),
            tls,
            limit: Arc::new(Semaphore::new(options.max_connections)),
            connections: Arc::new(ConnectionManager::new()),
            pids: Arc::new(RandomPidSecretKeyGenerator::default()),
            mock_key: Arc::new(startup::mock_key().map_err(ServerError::Users)?),
            limits: options.limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn development_mode(&self) -> bool {
        self.users.is_empty()
    }

    /// Serves until `shutdown` resolves; then stops accepting and waits (a bounded time) for
    /// open connections to finish.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let max = self.limit.available_permits();
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
        let open = max - self.limit.available_permits();
        if open > 0 {
            tracing::info!("waiting up to {SHUTDOWN_GRACE:?} for {open} open connections");
            let all = u32::try_from(max).unwrap_or(u32::MAX);
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.limit.acquire_many(all)).await;
        }
    }
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
