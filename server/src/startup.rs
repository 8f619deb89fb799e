//! Connection startup: who the client is and what it may do. With users configured, every
//! connection proves its password by SCRAM-SHA-256 (`scram.rs`) and gets its user's role;
//! without users (development mode) any name is accepted, from loopback only, as a writer.
//! One handler per connection: it holds that connection's exchange state. The connection's
//! role is left in its metadata under `ACCESS_KEY` for the query handler.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use datafusion_postgres::pgwire;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, METADATA_USER,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use ring::rand::{SecureRandom, SystemRandom};
use tally_query::Access;

use crate::interrupt::CancelHandle;
use crate::scram::{self, Pending};
use crate::users::{hmac, Users, Verifier};

/// Metadata key holding the connection's role (`reader` or `writer`).
pub(crate) const ACCESS_KEY: &str = "tally.access";

enum State {
    Start,
    /// The SASL mechanisms were offered.
    Offered,
    /// The server-first-message was sent.
    Challenged {
        user: String,
        access: Option<Access>,
        verifier: Verifier,
        pending: Pending,
    },
    Done,
}

pub(crate) struct Startup {
    users: Arc<Users>,
    connections: Arc<ConnectionManager>,
    pids: Arc<RandomPidSecretKeyGenerator>,
    /// The server's secret for the decoy salts of unknown users.
    mock_key: Arc<[u8; 32]>,
    state: Mutex<State>,
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message)))
}

impl Startup {
    pub fn new(
        users: Arc<Users>,
        connections: Arc<ConnectionManager>,
        pids: Arc<RandomPidSecretKeyGenerator>,
        mock_key: Arc<[u8; 32]>,
    ) -> Startup {
        Startup { users, connections, pids, mock_key, state: Mutex::new(State::Start) }
    }

    async fn finish<C>(&self, client: &mut C, access: Access) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let role = match access {
            Access::Reader => "reader",
            Access::Writer => "writer",
        };
        client.metadata_mut().insert(ACCESS_KEY.into(), role.into());
        let (pid, key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        // Registered so that a CancelRequest with this key reaches the running query.
        let (handle, guard) = self.connections.register(pid, key);
        client.session_extensions().insert(CancelHandle(handle));
        client.session_extensions().insert(guard);
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = tally_query::POSTGRES_VERSION.into();
        parameters.is_superuser = false;
        finish_authentication(client, &parameters).await
    }
}

/// A verifier for a user that does not exist: the exchange runs to its end either way, so a
/// client cannot tell unknown users from wrong passwords. Its salt is derived from the user
/// name with the server's secret key, as PostgreSQL's mock salt is: the same name always gets
/// the same salt, different names different ones, like real users.
pub(crate) fn decoy(mock_key: &[u8; 32], user: &str) -> Verifier {
    Verifier {
        iterations: crate::users::SCRAM_ITERATIONS,
        salt: hmac(mock_key, user.as_bytes())[..16].to_vec(),
        stored_key: [0; 32],
        server_key: [0; 32],
    }
}

/// A fresh random key for `decoy` salts, one per server process.
pub(crate) fn mock_key() -> Result<[u8; 32], String> {
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).map_err(|_| "the system random generator failed")?;
    Ok(key)
}

fn nonce() -> PgWireResult<String> {
    let mut bytes = [0u8; 18];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| fatal("XX000", "the system random generator failed".into()))?;
    Ok(STANDARD.encode(bytes))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let user = client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
                if self.users.is_empty() {
                    if !client.socket_addr().ip().is_loopback() {
                        return Err(fatal(
                            "28000",
                            "this server runs in development mode (no users configured) and \
                             accepts loopback connections only; add users with `tally user add`"
                                .into(),
                        ));
                    }
                    tracing::info!(%user, "development mode: connection accepted as writer");
                    *self.state.lock().expect("startup state") = State::Done;
                    return self.finish(client, Access::Writer).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                *self.state.lock().expect("startup state") = State::Offered;
                client
                    .send(PgWireBackendMessage::Authentication(Authentication::SASL(vec![
                        "SCRAM-SHA-256".into(),
                    ])))
                    .await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let state =
                    std::mem::replace(&mut *self.state.lock().expect("startup state"), State::Done);
                match state {
                    State::Offered => {
                        let initial = msg.into_sasl_initial_response()?;
                        if initial.auth_method != "SCRAM-SHA-256" {
                            return Err(fatal(
                                "28000",
                                format!("unsupported SASL mechanism {}", initial.auth_method),
                            ));
                        }
                        let data = initial.data.unwrap_or_default();
                        let user =
                            client.metadata().get(METADATA_USER).cloned().unwrap_or_default();
                        let known = self.users.get(&user);
                        let verifier = known
                            .map_or_else(|| decoy(&self.mock_key, &user), |u| u.verifier.clone());
                        let (first, pending) = scram::on_client_first(&data, &verifier, &nonce()?)
                            .map_err(|why| fatal("08P01", format!("SCRAM: {why}")))?;
                        *self.state.lock().expect("startup state") = State::Challenged {
                            user,
                            access: known.map(|u| u.access),
                            verifier,
                            pending,
                        };
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(first.into_bytes().into()),
                            ))
                            .await?;
                        Ok(())
                    }
                    State::Challenged { user, access, verifier, pending } => {
                        let response = msg.into_sasl_response()?;
                        let outcome = scram::on_client_final(&pending, &response.data, &verifier);
                        match (outcome, access) {
                            (Ok(server_final), Some(access)) => {
                                client
                                    .send(PgWireBackendMessage::Authentication(
                                        Authentication::SASLFinal(server_final.into_bytes().into()),
                                    ))
                                    .await?;
                                tracing::info!(%user, ?access, "authenticated");
                                self.finish(client, access).await
                            }
                            (outcome, _) => {
                                let why = outcome.err().unwrap_or_else(|| "unknown user".into());
                                tracing::warn!(%user, %why, "authentication failed");
                                Err(fatal(
                                    "28P01",
                                    format!("password authentication failed for user \"{user}\""),
                                ))
                            }
                        }
                    }
                    _ => Err(fatal("08P01", "unexpected authentication message".into())),
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_get_a_stable_salt_of_their_own() {
        let key = [7u8; 32];
        let a = decoy(&key, "alice").salt;
        assert_eq!(a, decoy(&key, "alice").salt);
        assert_ne!(a, decoy(&key, "bob").salt);
        assert_ne!(a, decoy(&[8u8; 32], "alice").salt, "another server, another salt");
        assert_eq!(a.len(), 16);
    }
}
