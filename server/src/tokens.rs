//! Who a streaming-ingest (Flight) call comes from. With users configured, a client proves a
//! user's password once — HTTP Basic in a `Handshake`, what pyarrow's
//! `authenticate_basic_token` sends — and gets a bearer token for its later calls; a call may
//! also carry Basic credentials itself. Development mode (no users) accepts any call as a
//! writer: the listener is then loopback-only (`flight.rs`).
//!
//! Never: a token that outlives `TOKEN_LIFETIME`, more than `MAX_TOKENS` of them, or a password
//! check that tells unknown users from wrong passwords (unknown users are checked against a
//! decoy verifier, as on the PostgreSQL port).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use tally_query::Access;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::startup::decoy;
use crate::users::Users;

/// How long a bearer token stays valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Tokens held at once; past it the oldest is forgotten (its client authenticates again).
pub const MAX_TOKENS: usize = 10_000;
/// Password checks running at once: each is a PBKDF2 of thousands of rounds.
const CHECKS_AT_ONCE: usize = 4;
/// Longest `authorization` header read.
const MAX_AUTHORIZATION_BYTES: usize = 4096;

pub(crate) struct Auth {
    users: Arc<Users>,
    mock_key: Arc<[u8; 32]>,
    tokens: Mutex<HashMap<String, (Access, Instant)>>,
    checks: Semaphore,
}

impl Auth {
    pub fn new(users: Arc<Users>, mock_key: Arc<[u8; 32]>) -> Auth {
        Auth { users, mock_key, tokens: Mutex::default(), checks: Semaphore::new(CHECKS_AT_ONCE) }
    }

    pub fn development_mode(&self) -> bool {
        self.users.is_empty()
    }

    /// The role of the call's client.
    pub async fn caller(&self, metadata: &MetadataMap) -> Result<Access, Status> {
        if self.development_mode() {
            return Ok(Access::Writer);
        }
        let header = authorization(metadata)?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            let mut tokens = self.tokens.lock().expect("token lock");
            return match tokens.get(token.trim()) {
                Some((access, expires)) if *expires > Instant::now() => Ok(*access),
                Some(_) => {
                    tokens.remove(token.trim());
                    Err(Status::unauthenticated("the token expired: authenticate again"))
                }
                None => Err(Status::unauthenticated("unknown token: authenticate again")),
            };
        }
        self.basic(&header).await
    }

    /// A `Handshake`: checks Basic credentials and issues a bearer token for them.
    pub async fn handshake(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let access = self.caller(metadata).await?;
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Status::internal("the system random generator failed"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut tokens = self.tokens.lock().expect("token lock");
        let now = Instant::now();
        tokens.retain(|_, (_, expires)| *expires > now);
        if tokens.len() >= MAX_TOKENS {
            let oldest = tokens.iter().min_by_key(|(_, (_, e))| *e).map(|(t, _)| t.clone());
            tokens.remove(&oldest.expect("the map is full"));
        }
        tokens.insert(token.clone(), (access, now + TOKEN_LIFETIME));
        Ok(token)
    }

    async fn basic(&self, header: &str) -> Result<Access, Status> {
        let wrong = || Status::unauthenticated("password authentication failed");
        let encoded = header.strip_prefix("Basic ").ok_or_else(|| {
            Status::unauthenticated(
                "send `authorization: Basic …` (user and password) or a bearer token",
            )
        })?;
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| wrong())?;
        let text = String::from_utf8(decoded).map_err(|_| wrong())?;
        let (name, password) = text.split_once(':').ok_or_else(wrong)?;
        let _permit =
            self.checks.acquire().await.map_err(|_| Status::unavailable("shutting down"))?;
        let (user, verifier) = match self.users.get(name) {
            Some(u) => (Some(u.access), u.verifier.clone()),
            None => (None, decoy(&self.mock_key, name)),
        };
        let (password, verifier_ok) = (password.to_owned(), verifier.clone());
        let matches = tokio::task::spawn_blocking(move || verifier_ok.verify(&password))
            .await
            .map_err(|_| Status::internal("the password check failed"))?;
        match user {
            Some(access) if matches => Ok(access),
            _ => Err(wrong()),
        }
    }
}

fn authorization(metadata: &MetadataMap) -> Result<String, Status> {
    let missing = || {
        Status::unauthenticated(
            "this server has users: authenticate (Handshake with `authorization: Basic …`) \
             and send `authorization: Bearer <token>`",
        )
    };
    let value = metadata.get("authorization").ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| missing())?;
    if text.len() > MAX_AUTHORIZATION_BYTES {
        return Err(Status::unauthenticated("the authorization header is too long"));
    }
    Ok(text.to_owned())
}
