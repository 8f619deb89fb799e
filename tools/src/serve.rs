//! `tally serve`: one node serving SQL over the PostgreSQL wire protocol and streaming ingest
//! over Arrow Flight on the embedded database (`--demo` first fills an empty data directory
//! with the demo ledger), and `tally user add`. Wiring and messages only; the server is `tally-server`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;
use tally_query::Sql;

use tally_server::{ConnectionLimits, Secret, ServeOptions, Server, Users};
use tally_storage::cluster::{BasicNode, Node};
use tally_storage::{Database, Options};

/// `tally serve`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// Data directory (one process at a time owns it).
    #[arg(long, default_value = "./tally-data")]
    pub data: PathBuf,
    /// Address to listen on; without users only a loopback address is allowed.
    #[arg(long, default_value = tally_server::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Address streaming ingest (Arrow Flight) listens on; `off`: none.
    #[arg(long, default_value = tally_server::DEFAULT_INGEST_LISTEN)]
    pub ingest: IngestAddr,
    /// Users file (SCRAM verifiers); default `<data>/users`. None: development mode.
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Fill an empty data directory with the demo ledger first.
    #[arg(long)]
    pub demo: bool,
    /// Inferences in the demo ledger (with --demo).
    #[arg(long, default_value_t = 200_000)]
    pub demo_inferences: u64,
    /// PEM certificate chain: with --tls-key, clients may use TLS.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Answer every query through DataFusion's execution, also those a direct read of the
    /// engine state answers: for A/B benchmarks of the two read paths (benches/wire).
    #[arg(long, hide = true)]
    pub no_direct_reads: bool,
    /// Connections served at once; more are refused (SQLSTATE 53300).
    #[arg(long, default_value_t = tally_server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// The longest any statement may run, in seconds.
    #[arg(long = "statement-timeout", value_name = "SECONDS", default_value_t = tally_server::DEFAULT_STATEMENT_TIMEOUT.as_secs())]
    pub statement_timeout_s: u64,
    /// The time a client gets from connecting to being authenticated, in seconds.
    #[arg(long = "startup-timeout", value_name = "SECONDS", default_value_t = tally_server::DEFAULT_STARTUP_TIMEOUT.as_secs())]
    pub startup_timeout_s: u64,
    /// The longest a connection may wait for its next message, in seconds (0: no limit); a
    /// session may ask for less with `SET idle_session_timeout`.
    #[arg(long = "idle-session-timeout", value_name = "SECONDS", default_value_t = tally_server::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout_s: u64,
    /// The batch-settlement backend: `auto` (a GPU when one can be used, else the CPU), `cpu`
    /// or `gpu` (refuses to start without a usable GPU). The numbers are the same on each.
    #[arg(long, value_enum, default_value = "auto")]
    pub settler: super::settler::Choice,
    /// This node's id in a cluster (one of --peers).
    #[arg(long)]
    pub node_id: Option<u64>,
    /// The cluster's voters as first formed, `ID=HOST:PORT,…` (their Raft addresses), the same
    /// on every node; the lowest id forms the cluster. Without it, a lone node.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<Peer>,
    /// Address this node's Raft port listens on (default: its own address in --peers).
    #[arg(long)]
    pub raft: Option<SocketAddr>,
    /// File holding the secret every node of the cluster shares (required unless every Raft
    /// address is a loopback one).
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
    /// PEM certificates this node trusts when it calls the others over TLS (default: the
    /// --tls-cert file, for nodes that share one certificate). With --tls-*, the Raft port
    /// speaks TLS too.
    #[arg(long)]
    pub cluster_ca: Option<PathBuf>,
}

/// One `--peers` item: `ID=HOST:PORT`.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: u64,
    pub addr: String,
}

impl std::str::FromStr for Peer {
    type Err = String;

    fn from_str(text: &str) -> Result<Peer, String> {
        let (id, addr) =
            text.split_once('=').ok_or("a peer is ID=HOST:PORT, e.g. 2=10.0.0.2:5435")?;
        let id = id.parse().map_err(|_| format!("node id {id:?} is not a whole number"))?;
        if addr.is_empty() || !addr.contains(':') {
            return Err(format!("peer {id}: {addr:?} is not HOST:PORT"));
        }
        Ok(Peer { id, addr: addr.to_owned() })
    }
}

/// Opens the data directory as a lone node, or as a node of the cluster `--peers` names,
/// with the Raft port's address and secret.
fn open(args: &Args) -> super::Result<(Database, Option<(SocketAddr, Secret)>)> {
    let (settler, why) = super::settler::choose(args.settler)?;
    tracing::info!("settlement backend: {why}");
    let options = Options { settler, ..Options::default() };
    if args.peers.is_empty() {
        if args.node_id.is_some() || args.raft.is_some() {
            return Err("--node-id and --raft need --peers (the cluster's nodes)".into());
        }
        return Ok((Database::open_with(&args.data, options)?, None));
    }
    if args.demo {
        return Err("--demo fills a lone node; load a cluster through its SQL port".into());
    }
    let id = args.node_id.ok_or("--peers needs --node-id (this node's id among them)")?;
    let mut peers = BTreeMap::new();
    for p in &args.peers {
        if peers.insert(p.id, BasicNode::new(&p.addr)).is_some() {
            return Err(format!("node {} is listed twice in --peers", p.id).into());
        }
    }
    let own = peers.get(&id).ok_or_else(|| format!("--node-id {id} is not one of --peers"))?;
    let listen = match args.raft {
        Some(addr) => addr,
        None => own.addr.parse().map_err(|e| {
            format!(
                "node {id}'s address {:?} in --peers: {e}; give --raft ADDR to listen on",
                own.addr
            )
        })?,
    };
    let secret = Secret::new(super::cluster::read_secret(args.cluster_secret_file.as_ref())?);
    let trusted = args.cluster_ca.as_ref().or(args.tls_cert.as_ref());
    let network = super::cluster::network(secret.clone(), trusted)?.from_address(listen.ip());
    let node = Node { id, peers, network: network.clone(), forward: Arc::new(network) };
    let db = Database::open_node(&args.data, options, node)?;
    Ok((db, Some((listen, secret))))
}

/// Stack of each server thread. Deep expressions are refused before they are parsed
/// (tally_query::MAX_EXPRESSION_DEPTH); the walks over what is accepted recurse, and this
/// leaves them room many times over. Reserved address space, not memory, until touched.
const THREAD_STACK_BYTES: usize = 16 << 20;

/// `--ingest`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct IngestAddr(Option<SocketAddr>);

impl std::str::FromStr for IngestAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<IngestAddr, String> {
        if text == "off" {
            return Ok(IngestAddr(None));
        }
        let addr =
            text.parse().map_err(|e| format!("{e} (an address like 127.0.0.1:5434, or off)"))?;
        Ok(IngestAddr(Some(addr)))
    }
}

/// The users file of a data directory unless `--users` names another.
pub fn users_path(data: &Path, users: Option<&PathBuf>) -> PathBuf {
    users.cloned().unwrap_or_else(|| data.join("users"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub fn run(args: Args) -> super::Result<ExitCode> {
    let tls = match (args.tls_cert.clone(), args.tls_key.clone()) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("TLS needs both --tls-cert and --tls-key".into()),
    };
    if args.demo {
        if super::demo::is_empty(&args.data)? {
            super::demo::fill(
                &args.data,
                tally_workload::Shape::DEFAULT_SEED,
                args.demo_inferences,
            )?;
        } else {
            println!(
                "{} is not empty: serving the ledger that is there (--demo fills only an empty directory)",
                args.data.display()
            );
        }
    }
    // Read the users before opening the database: a bad file should fail fast.
    let users =
        Users::for_server(&users_path(&args.data, args.users.as_ref()), args.users.is_some())?;
    let (db, raft) = open(&args)?;
    let db = Arc::new(db);
    let sql = Sql::new(db.clone())?;
    let sql = if args.no_direct_reads { sql.without_direct_reads() } else { sql };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(THREAD_STACK_BYTES)
        .enable_all()
        .build()?;
    let options = ServeOptions {
        listen: args.listen,
        users,
        tls,
        max_connections: args.max_connections,
        statement_timeout: Duration::from_secs(args.statement_timeout_s),
        limits: ConnectionLimits {
            startup: Duration::from_secs(args.startup_timeout_s),
            idle: (args.idle_timeout_s > 0).then(|| Duration::from_secs(args.idle_timeout_s)),
        },
        ingest: args.ingest.0,
        raft,
    };
    let checkpoint_key: String = db.checkpoint_key()?.iter().map(|b| format!("{b:02x}")).collect();
    let served = runtime.block_on(async {
        let server = Server::bind(sql, options).await?;
        let addr = server.local_addr();
        if server.development_mode() {
            println!(
                "development mode: no users configured, so any user name is accepted without a \
                 password, as a writer, from loopback only (add users with `tally user add`)"
            );
        }
        let (lsn, open) = db.read(|l| (l.last_lsn(), l.open_epoch()));
        println!(
            "tally serving {} (lsn {lsn}, open epoch {open}) on {addr}; connect with: psql \"host={} port={} user=tally dbname=tally\"",
            args.data.display(),
            addr.ip(),
            addr.port()
        );
        println!("checkpoints are signed with this node's Ed25519 key {checkpoint_key}");
        if let Some(raft) = server.raft_addr() {
            let status = db.cluster_status();
            println!("node {} of a cluster: Raft on {raft}, leader {:?}", status.id, status.leader);
        }
        if let Some(ingest) = server.ingest_addr() {
            println!("streaming ingest (Arrow Flight) on {ingest}: `tally ingest --server {ingest} FILE`");
        }
        server.run(shutdown_signal()).await;
        Ok::<(), tally_server::ServerError>(())
    });
    drop(runtime);
    served?;
    println!("shutting down");
    match Arc::try_unwrap(db) {
        Ok(db) => db.close()?,
        // Every acknowledged write is already durable; the log is closed by the OS.
        Err(_) => eprintln!("tally: connections were still open at exit"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tally user add`: reads the password as one line from stdin.
pub fn add_user(
    data: &Path,
    users: Option<&PathBuf>,
    name: &str,
    role: &str,
) -> super::Result<ExitCode> {
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']);
    std::fs::create_dir_all(data)?;
    let path = users_path(data, users);
    Users::add(&path, name, role, password)?;
    println!("user {name} ({role}) saved in {}; restart `tally serve` to use it", path.display());
    Ok(ExitCode::SUCCESS)
}
