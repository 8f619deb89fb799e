//! The server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) against stored verifiers: checks a
//! client's proof with StoredKey and proves itself with ServerKey, so the server never needs
//! the password or anything that could log in. Pure message handling: the wire exchange is in
//! `startup.rs`. Channel binding is not offered (`n`/`y` GS2 flags only).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::users::{hmac, sha256, Verifier};

/// What the server remembers between its first message and the client's final one.
#[derive(Debug)]
pub(crate) struct Pending {
    gs2_header: String,
    nonce: String,
    /// client-first-message-bare + "," + server-first-message
    auth_prefix: String,
}

/// Answers a client-first-message; returns the server-first-message.
pub(crate) fn on_client_first(
    message: &[u8],
    verifier: &Verifier,
    server_nonce: &str,
) -> Result<(String, Pending), String> {
    let text = std::str::from_utf8(message).map_err(|_| "client-first-message is not UTF-8")?;
    let (gs2_flag, rest) = text.split_once(',').ok_or("malformed client-first-message")?;
    match gs2_flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => return Err("channel binding is not supported".into()),
        _ => return Err("malformed GS2 header".into()),
    }
    let (authzid, bare) = rest.split_once(',').ok_or("malformed client-first-message")?;
    if !authzid.is_empty() {
        return Err("authorization identities are not supported".into());
    }
    let gs2_header = format!("{gs2_flag},{authzid},");
    let client_nonce = bare
        .split(',')
        .find_map(|a| a.strip_prefix("r="))
        .filter(|n| !n.is_empty())
        .ok_or("client-first-message has no nonce")?;
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first =
        format!("r={nonce},s={},i={}", STANDARD.encode(&verifier.salt), verifier.iterations);
    let pending = Pending { gs2_header, nonce, auth_prefix: format!("{bare},{server_first}") };
    Ok((server_first, pending))
}

/// Checks a client-final-message; returns the server-final-message, or why it failed.
pub(crate) fn on_client_final(
    pending: &Pending,
    message: &[u8],
    verifier: &Verifier,
) -> Result<String, String> {
    let text = std::str::from_utf8(message).map_err(|_| "client-final-message is not UTF-8")?;
    let (without_proof, proof) =
        text.rsplit_once(",p=").ok_or("client-final-message has no proof")?;
    let mut binding = None;
    let mut nonce = None;
    for attr in without_proof.split(',') {
        if let Some(c) = attr.strip_prefix("c=") {
            binding = Some(c);
        } else if let Some(r) = attr.strip_prefix("r=") {
            nonce = Some(r);
        }
    }
    if binding != Some(STANDARD.encode(&pending.gs2_header).as_str()) {
        return Err("channel binding data does not match".into());
    }
    if nonce != Some(pending.nonce.as_str()) {
        return Err("nonce does not match".into());
    }
    let proof = STANDARD.decode(proof).map_err(|_| "proof is not base64")?;
    if proof.len() != 32 {
        return Err("proof has the wrong length".into());
    }
    let auth_message = format!("{},{without_proof}", pending.auth_prefix);
    let signature = hmac(&verifier.stored_key, auth_message.as_bytes());
    let mut client_key = [0u8; 32];
    for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
        *k = p ^ s;
    }
    // Constant-time comparison: the difference is accumulated, never short-circuited.
    let diff =
        sha256(&client_key).iter().zip(verifier.stored_key).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err("wrong password".into());
    }
    let server_signature = hmac(&verifier.server_key, auth_message.as_bytes());
    Ok(format!("v={}", STANDARD.encode(server_signature)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3's example exchange (user "user", password "pencil").
    #[test]
    fn rfc7677_exchange() {
        let verifier = Verifier::for_test("pencil", "W22ZaJ0SNY7soEsUEjb6gQ==", 4096);
        let (first, pending) = on_client_first(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            &verifier,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let fin = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                   p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            on_client_final(&pending, fin.as_bytes(), &verifier).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let wrong = Verifier::for_test("pencil2", "W22ZaJ0SNY7soEsUEjb6gQ==", 4096);
        assert_eq!(
            on_client_final(&pending, fin.as_bytes(), &wrong).unwrap_err(),
            "wrong password"
        );
        let tampered = fin.replace("c=biws", "c=eSws");
        assert!(on_client_final(&pending, tampered.as_bytes(), &verifier).is_err());
        assert!(on_client_first(b"p=tls-server-end-point,,n=user,r=x", &verifier, "s").is_err());
    }
}
