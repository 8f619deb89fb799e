//! The users file: one line per user, `name role verifier`, where the verifier is PostgreSQL's
//! own SCRAM-SHA-256 format (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`,
//! base64). It holds no password and nothing a client could log in with. `tally user add`
//! writes it (atomically, mode 0600); the server only reads it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};
use tally_query::Access;

use crate::ServerError;

/// PBKDF2 rounds for new verifiers (PostgreSQL's default is 4096).
pub const SCRAM_ITERATIONS: u32 = 4096;
const SALT_BYTES: usize = 16;
/// User names are short and printable: they appear in logs and in this file's columns.
const MAX_USER_BYTES: usize = 63;

/// What the server keeps of a password: enough to check a SCRAM proof, not to make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct User {
    pub access: Access,
    pub verifier: Verifier,
}

/// Every configured user, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: BTreeMap<String, User>,
}

pub(crate) fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

impl Verifier {
    /// Derives a verifier from a password (RFC 5802 / 7677), with a fresh random salt.
    pub fn new(password: &str) -> Result<Verifier, ServerError> {
        let mut salt = vec![0u8; SALT_BYTES];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| ServerError::Users("the system random generator failed".into()))?;
        Ok(Verifier::with_salt(password, salt, SCRAM_ITERATIONS))
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Verifier {
        // SASLprep, as PostgreSQL does; a password it cannot normalise is used as given.
        let prepared = stringprep::saslprep(password)
            .map(|p| p.into_owned())
            .unwrap_or_else(|_| password.to_owned());
        let mut salted = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(iterations).expect("iterations are positive"),
            &salt,
            prepared.as_bytes(),
            &mut salted,
        );
        let client_key = hmac(&salted, b"Client Key");
        Verifier {
            iterations,
            salt,
            stored_key: sha256(&client_key),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this verifier was derived from (for clients that send
    /// a password, as HTTP Basic does, instead of a SCRAM exchange). Costs one PBKDF2.
    pub fn verify(&self, password: &str) -> bool {
        let derived = Verifier::with_salt(password, self.salt.clone(), self.iterations);
        // Compared in constant time: no early exit tells how much of the key matched.
        derived.stored_key.iter().zip(&self.stored_key).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
    }

    #[cfg(test)]
    pub(crate) fn for_test(password: &str, salt_base64: &str, iterations: u32) -> Verifier {
        Verifier::with_salt(password, STANDARD.decode(salt_base64).unwrap(), iterations)
    }

    pub fn to_text(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }

    pub fn parse(text: &str) -> Option<Verifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: u32 = iterations.parse().ok().filter(|i| *i >= 1)?;
        Some(Verifier {
            iterations,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: STANDARD.decode(stored).ok()?.try_into().ok()?,
            server_key: STANDARD.decode(server).ok()?.try_into().ok()?,
        })
    }
}

fn access_name(a: Access) -> &'static str {
    match a {
        Access::Reader => "reader",
        Access::Writer => "writer",
    }
}

pub fn parse_access(role: &str) -> Result<Access, ServerError> {
    match role {
        "reader" => Ok(Access::Reader),
        "writer" => Ok(Access::Writer),
        other => Err(ServerError::Users(format!(
            "unknown role {other:?}: a role is `reader` or `writer`"
        ))),
    }
}

fn check_name(name: &str) -> Result<(), ServerError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ServerError::Users(format!(
            "bad user name {name:?}: use 1 to {MAX_USER_BYTES} characters from [A-Za-z0-9._@-]"
        )))
    }
}

impl Users {
    /// Reads the users file; a missing file means no users (development mode).
    pub fn load(path: &Path) -> Result<Users, ServerError> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(e) => {
                return Err(ServerError::Users(format!("cannot read {}: {e}", path.display())))
            }
        };
        let mut users = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad =
                |why: &str| ServerError::Users(format!("{} line {}: {why}", path.display(), n + 1));
            let mut parts = line.split_whitespace();
            let (Some(name), Some(role), Some(verifier), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `name role verifier`"));
            };
            check_name(name)?;
            let access = parse_access(role)?;
            let verifier = Verifier::parse(verifier).ok_or_else(|| bad("bad SCRAM verifier"))?;
            users.insert(name.to_owned(), User { access, verifier });
        }
        Ok(Users { users })
    }

    /// The users a server accepts. No file at the default place (`named` false) means
    /// development mode; a file named with `--users` must exist, and any users file must hold
    /// at least one user: a typo or an empty file never silently drops authentication.
    pub fn for_server(path: &Path, named: bool) -> Result<Users, ServerError> {
        if !path.exists() {
            if named {
                return Err(ServerError::Users(format!(
                    "{} does not exist: create it with `tally user add NAME --role ROLE --users {}`, \
                     or leave out --users for development mode",
                    path.display(),
                    path.display()
                )));
            }
            return Ok(Users::default());
        }
        let users = Users::load(path)?;
        if users.is_empty() {
            return Err(ServerError::Users(format!(
                "{} holds no users: add one with `tally user add`, or remove the file to run in \
                 development mode",
                path.display()
            )));
        }
        Ok(users)
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Adds or replaces a user and rewrites the file atomically (mode 0600).
    pub fn add(path: &Path, name: &str, role: &str, password: &str) -> Result<(), ServerError> {
        check_name(name)?;
        let access = parse_access(role)?;
        if password.is_empty() {
            return Err(ServerError::Users("the password is empty".into()));
        }
        let mut users = Users::load(path)?;
        users.users.insert(name.to_owned(), User { access, verifier: Verifier::new(password)? });
        let mut text = String::from(
            "# Tally users: name role SCRAM-SHA-256 verifier. Written by `tally user add`.\n",
        );
        for (name, u) in &users.users {
            text.push_str(&format!("{name} {} {}\n", access_name(u.access), u.verifier.to_text()));
        }
        let tmp = path.with_extension("tmp");
        let io =
            |e: std::io::Error| ServerError::Users(format!("cannot write {}: {e}", path.display()));
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp).map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_round_trip_in_postgresql_format() {
        let v = Verifier::for_test("pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 4096);
        let text = v.to_text();
        assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"), "{text}");
        assert_eq!(Verifier::parse(&text), Some(v));
        assert_eq!(Verifier::parse("SCRAM-SHA-256$0:AA==$AA==:AA=="), None);
        assert_ne!(Verifier::new("pencil").unwrap().salt, Verifier::new("pencil").unwrap().salt);
    }

    #[test]
    fn the_file_round_trips_and_never_holds_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        Users::add(&path, "alice", "writer", "s3cret-pw").unwrap();
        Users::add(&path, "bob", "reader", "other-pw").unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("s3cret-pw") && !text.contains("other-pw"));
        let users = Users::load(&path).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.get("bob").unwrap().access, Access::Reader);
        assert!(Users::add(&path, "bad name", "writer", "x").is_err());
        assert!(Users::add(&path, "carol", "admin", "x").is_err());
        assert_eq!(Users::for_server(&path, true).unwrap().len(), 2);
        assert_eq!(Users::for_server(&dir.path().join("none"), false).unwrap().len(), 0);
        assert!(
            Users::for_server(&dir.path().join("none"), true).is_err(),
            "a named file must exist"
        );
        let empty = dir.path().join("empty");
        fs::write(&empty, "# nobody\n").unwrap();
        assert!(Users::for_server(&empty, false).is_err(), "an empty file is not development mode");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
