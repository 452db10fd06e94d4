//! SASL for Kafka connections (SaslHandshake v1, SaslAuthenticate): SCRAM-SHA-256 and
//! SCRAM-SHA-512 (RFC 5802, 7677) and PLAIN (RFC 4616), all checked against the user store.
//! This module is the mechanisms' state machines, with no I/O: the connection feeds them
//! the client's tokens and the user's stored credential.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sluice_metadata::records::ScramCredentialRecord;

use crate::users::Mechanism;

/// The mechanisms a SASL listener offers, in SaslHandshake's answer.
const MECHANISMS: &[&str] = &["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"];

/// The mechanisms a SASL listener offers: OAUTHBEARER too with `--oauth-jwks`.
pub fn mechanisms(oauth: bool) -> impl Iterator<Item = &'static str> {
    MECHANISMS
        .iter()
        .copied()
        .chain(oauth.then_some("OAUTHBEARER"))
}

/// Why an exchange failed. The client is told only that authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("malformed SASL message: {0}")]
    Malformed(&'static str),
    #[error("invalid credentials")]
    BadCredentials,
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("the user store could not be read")]
    Unavailable,
    #[error("re-authentication as another principal")]
    PrincipalChanged,
    #[error("{0}")]
    Token(#[from] crate::oauth::TokenError),
    #[error("the authorization id {0:?} is not the token's principal")]
    AuthzId(String),
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// A SCRAM `saslname`: `=2C` and `=3D` stand for `,` and `=`.
fn unescape_name(s: &str) -> Result<String, SaslError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(SaslError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub user: String,
    gs2_header: String,
    bare: String,
    nonce: String,
}

/// Parses `gs2-header client-first-bare` (`n,,n=user,r=nonce[,extensions]`).
pub fn client_first(token: &[u8]) -> Result<ClientFirst, SaslError> {
    let text = std::str::from_utf8(token).map_err(|_| SaslError::Malformed("not UTF-8"))?;
    let (cb, rest) = text
        .split_once(',')
        .ok_or(SaslError::Malformed("no GS2 header"))?;
    match cb {
        "n" | "y" => {}
        _ if cb.starts_with("p=") => return Err(SaslError::ChannelBinding),
        _ => return Err(SaslError::Malformed("bad channel binding flag")),
    }
    let (_authzid, bare) = rest
        .split_once(',')
        .ok_or(SaslError::Malformed("no GS2 header"))?;
    let gs2_header = text[..text.len() - bare.len()].to_string();
    let mut user = None;
    let mut nonce = None;
    for attr in bare.split(',') {
        if let Some(v) = attr.strip_prefix("n=") {
            user = Some(unescape_name(v)?);
        } else if let Some(v) = attr.strip_prefix("r=") {
            nonce = Some(v.to_string());
        } else if attr.starts_with("m=") {
            return Err(SaslError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or(SaslError::Malformed("no user name"))?;
    let nonce = nonce
        .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
        .ok_or(SaslError::Malformed("no client nonce"))?;
    Ok(ClientFirst {
        user,
        gs2_header,
        bare: bare.to_string(),
        nonce,
    })
}

/// The server's side of one SCRAM exchange, between its first and final messages.
#[derive(Debug, Clone)]
pub struct ScramServer {
    mechanism: Mechanism,
    first: ClientFirst,
    server_first: String,
    nonce: String,
    /// The user's credential; `None` for an unknown user, whose exchange runs on (with a
    /// made-up salt) and fails at the end, so a client cannot tell who exists.
    credential: Option<ScramCredentialRecord>,
}

impl ScramServer {
    /// Answers a client-first message. `server_nonce` must be fresh and unpredictable;
    /// `fake_salt` is used when the user has no credential of this mechanism.
    pub fn start(
        mechanism: Mechanism,
        first: ClientFirst,
        credential: Option<ScramCredentialRecord>,
        server_nonce: &str,
        fake_salt: &[u8],
    ) -> (Self, Vec<u8>) {
        let nonce = format!("{}{server_nonce}", first.nonce);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (fake_salt.to_vec(), 4096),
        };
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let reply = server_first.clone().into_bytes();
        (
            Self {
                mechanism,
                first,
                server_first,
                nonce,
                credential,
            },
            reply,
        )
    }

    pub fn user(&self) -> &str {
        &self.first.user
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Checks the client-final message; on success returns the server-final message.
    pub fn finish(self, token: &[u8]) -> Result<Vec<u8>, SaslError> {
        let text = std::str::from_utf8(token).map_err(|_| SaslError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(SaslError::Malformed("no proof"))?;
        let mut cb = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                cb = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let expected_cb = B64.encode(self.first.gs2_header.as_bytes());
        if cb != Some(expected_cb.as_str()) {
            return Err(SaslError::Malformed("channel binding does not match"));
        }
        // Kafka checks that the nonce ends with the combined one (not that it equals it),
        // and librdkafka before 2.2 relies on that: it repeats the client nonce in front.
        if !nonce.is_some_and(|n| n.ends_with(self.nonce.as_str())) {
            return Err(SaslError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| SaslError::Malformed("proof is not base64"))?;
        let credential = self.credential.ok_or(SaslError::BadCredentials)?;
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let m = self.mechanism;
        let client_signature = m.hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(SaslError::BadCredentials);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if !same(&m.hash(&client_key), &credential.stored_key) {
            return Err(SaslError::BadCredentials);
        }
        let server_signature = m.hmac(&credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// A PLAIN message (`authzid NUL authcid NUL password`): the user and password.
/// The client's message of OAUTHBEARER (RFC 7628 §3.1): `n,[a=AUTHZID],` then
/// `\x01`-separated `key=value` pairs, among them `auth=Bearer TOKEN`, and a final `\x01`.
/// Returns the authorization id (if any) and the token; extensions are ignored.
pub fn oauthbearer(message: &[u8]) -> Result<(Option<String>, String), SaslError> {
    let text = std::str::from_utf8(message)
        .map_err(|_| SaslError::Malformed("OAUTHBEARER message is not UTF-8"))?;
    let rest = text
        .strip_prefix("n,")
        .ok_or(SaslError::Malformed("OAUTHBEARER needs the gs2 header n,"))?;
    let (authzid, rest) = rest
        .split_once(',')
        .ok_or(SaslError::Malformed("OAUTHBEARER gs2 header is not closed"))?;
    let authzid = match authzid {
        "" => None,
        a => Some(unescape_name(a.strip_prefix("a=").ok_or(
            SaslError::Malformed("OAUTHBEARER gs2 header: expected a=AUTHZID"),
        )?)?),
    };
    let pairs = rest
        .strip_prefix('\x01')
        .and_then(|r| r.strip_suffix("\x01\x01"))
        .ok_or(SaslError::Malformed(
            "OAUTHBEARER key-value pairs are not framed",
        ))?;
    let mut token = None;
    for pair in pairs.split('\x01') {
        let (key, value) = pair
            .split_once('=')
            .ok_or(SaslError::Malformed("OAUTHBEARER pair without ="))?;
        if key == "auth" {
            let t = value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
                .ok_or(SaslError::Malformed(
                    "OAUTHBEARER auth is not a bearer token",
                ))?;
            token = Some(t.trim().to_string());
        }
    }
    let token = token.ok_or(SaslError::Malformed("OAUTHBEARER message has no auth"))?;
    Ok((authzid, token))
}

pub fn plain(token: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
    let mut parts = token.split(|b| *b == 0);
    let (Some(_authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed(
            "PLAIN needs authzid, user and password",
        ));
    };
    let user =
        std::str::from_utf8(user).map_err(|_| SaslError::Malformed("user name is not UTF-8"))?;
    if user.is_empty() {
        return Err(SaslError::Malformed("no user name"));
    }
    Ok((user.to_string(), password.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauthbearer_messages() {
        // librdkafka's and Kafka's client message, with an extension.
        let m = b"n,,\x01auth=Bearer eyJ.x.y\x01traceId=42\x01\x01";
        assert_eq!(oauthbearer(m), Ok((None, "eyJ.x.y".to_string())));
        let m = b"n,a=svc=2Cx,\x01auth=Bearer t\x01\x01";
        assert_eq!(
            oauthbearer(m),
            Ok((Some("svc,x".to_string()), "t".to_string()))
        );
        for bad in [
            &b""[..],
            b"y,,\x01auth=Bearer t\x01\x01",
            b"n,,auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t\x01",
            b"n,,\x01auth=Basic t\x01\x01",
            b"n,,\x01host=x\x01\x01",
            b"n,,\x01novalue\x01\x01",
            b"n,x=y,\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer \xff\x01\x01",
        ] {
            assert!(oauthbearer(bad).is_err(), "{bad:?}");
        }
    }

    /// RFC 7677's example exchange, byte for byte.
    fn rfc7677_credential() -> ScramCredentialRecord {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        let salted = Mechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        let (stored_key, server_key) = Mechanism::Sha256.scram_keys(&salted);
        ScramCredentialRecord {
            mechanism: "SCRAM-SHA-256".into(),
            iterations: 4096,
            salt,
            stored_key,
            server_key,
        }
    }

    #[test]
    fn scram_sha_256_follows_rfc_7677() {
        let first = client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").expect("parses");
        assert_eq!(first.user, "user");
        let (server, reply) = ScramServer::start(
            Mechanism::Sha256,
            first,
            Some(rfc7677_credential()),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
            b"unused",
        );
        assert_eq!(
            reply,
            b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let last = server
            .clone()
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .expect("the proof holds");
        assert_eq!(last, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
        // A wrong proof, another nonce, or an unknown user fail.
        assert_eq!(
            server.clone().finish(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=not*base64"
            ),
            Err(SaslError::Malformed("proof is not base64"))
        );
        assert_eq!(
            server.clone().finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
            Err(SaslError::BadCredentials)
        );
        assert!(server
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqOother,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .is_err());
        let first = client_first(b"n,,n=nobody,r=abc").expect("parses");
        let (server, reply) =
            ScramServer::start(Mechanism::Sha256, first, None, "def", b"fake salt");
        assert!(
            reply.starts_with(b"r=abcdef,s="),
            "an unknown user gets a salt too"
        );
        assert_eq!(
            server.finish(b"c=biws,r=abcdef,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
            Err(SaslError::BadCredentials)
        );
    }

    #[test]
    fn client_first_messages_are_checked() {
        assert_eq!(
            client_first(b"n,,n=a=2Cb=3Dc,r=xyz").expect("parses").user,
            "a,b=c"
        );
        assert_eq!(
            client_first(b"p=tls-unique,,n=a,r=x"),
            Err(SaslError::ChannelBinding)
        );
        for bad in [
            &b"n,,n=,r=x"[..],
            b"n,,r=x",
            b"n,,n=a",
            b"n,,n=a=2,r=x",
            b"x",
            b"\xff",
        ] {
            assert!(client_first(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn plain_checks_the_password_against_the_scram_credential() {
        let c = rfc7677_credential();
        let (user, password) = plain(b"\0user\0pencil").expect("parses");
        assert_eq!(user, "user");
        assert!(crate::users::password_matches(
            Mechanism::Sha256,
            &c,
            &password
        ));
        assert!(!crate::users::password_matches(
            Mechanism::Sha256,
            &c,
            b"pencil2"
        ));
        assert!(plain(b"user\0pencil").is_err());
        assert!(plain(b"\0\0pencil").is_err());
    }
}
