//! `tally cluster status|add|promote|remove`: looks at and changes a cluster's members through
//! any node's Raft port (changes go to the leader). Wiring and messages only; the calls are
//! `tally-server`'s and the rules (a learner is promoted only once caught up) the database's.

use std::path::PathBuf;
use std::process::ExitCode;

use tally_server::{Network, Secret};
use tally_storage::cluster::{Change, Status};

/// `tally cluster`'s options.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
    /// Raft address of any node of the cluster.
    #[arg(long, global = true, default_value = tally_server::DEFAULT_RAFT_LISTEN)]
    server: String,
    /// File holding the cluster's secret (as given to `tally serve`).
    #[arg(long, global = true)]
    cluster_secret_file: Option<PathBuf>,
    /// PEM certificates to trust: the nodes' Raft ports speak TLS (they run with --tls-*).
    #[arg(long, global = true)]
    cluster_ca: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Each member: address, role, how far behind the leader.
    Status,
    /// Add a node as a learner (`ID=HOST:PORT`, its Raft address): it receives the whole log.
    Add { node: crate::serve::Peer },
    /// Make a learner that has caught up a voter.
    Promote { id: u64 },
    /// Remove a node from the cluster.
    Remove { id: u64 },
}

/// The cluster secret in `path` (one line of ASCII), if a file is named.
pub fn read_secret(path: Option<&PathBuf>) -> Result<Option<String>, String> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the cluster secret {}: {e}", path.display()))?;
    let text = text.trim();
    if text.is_empty() || !text.is_ascii() || text.contains(['\n', '\r']) {
        return Err(format!("{} must hold the secret as one line of ASCII", path.display()));
    }
    Ok(Some(text.to_owned()))
}

/// The network to a cluster's nodes: calls carry `secret` and, with `trusted_file`, go over
/// TLS trusting the certificates it holds.
pub fn network(secret: Secret, trusted_file: Option<&PathBuf>) -> Result<Network, String> {
    let trusted = match trusted_file {
        Some(ca) => {
            Some(std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?)
        }
        None => None,
    };
    Ok(Network::new(secret, trusted.as_deref()))
}

pub fn run(args: Args) -> super::Result<ExitCode> {
    let secret = Secret::new(read_secret(args.cluster_secret_file.as_ref())?);
    let network = network(secret, args.cluster_ca.as_ref())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let server = args.server.as_str();
    let change = match args.command {
        Command::Status => {
            let status = runtime.block_on(tally_server::cluster_status(&network, server))?;
            print_status(&status);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Add { node } => Change::Add { id: node.id, addr: node.addr },
        Command::Promote { id } => Change::Promote { id },
        Command::Remove { id } => Change::Remove { id },
    };
    let shown = format!("{change:?}");
    runtime.block_on(tally_server::change_members(&network, server, change))?;
    println!("done: {shown}");
    Ok(ExitCode::SUCCESS)
}

fn print_status(status: &Status) {
    println!(
        "node {} ({}), term {}, leader {}",
        status.id,
        status.role.as_str(),
        status.term,
        status.leader.map_or("none known".into(), |l| l.to_string())
    );
    let last = status.last_log_index.unwrap_or(0);
    for m in &status.members {
        let lag = match (m.id == status.id, m.matched) {
            (true, _) => "this node".to_owned(),
            (false, Some(x)) => format!("{} entries behind", last.saturating_sub(x)),
            (false, None) => "lag known on the leader".to_owned(),
        };
        let kind = if m.voter { "voter" } else { "learner" };
        println!("  {:>4}  {:<24} {:<8} {lag}", m.id, m.addr, kind);
    }
}
