//! SCRAM (RFC 5802, RFC 7677) as Kafka uses it: the two mechanisms and their primitives,
//! shared by the server (the user store, SASL) and the clients (`sluice user`, the load
//! generator), and the client's side of an exchange.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// The SCRAM mechanisms, with Kafka's wire codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Mechanism::Sha256, Mechanism::Sha512]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

impl Mechanism {
    /// HMAC with this mechanism's hash.
    pub fn hmac(self, key: &[u8], msg: &[u8]) -> Vec<u8> {
        macro_rules! run {
            ($d:ty) => {{
                let mut mac = Hmac::<$d>::new_from_slice(key)
                    .expect("invariant: HMAC takes keys of any length");
                mac.update(msg);
                mac.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            Mechanism::Sha256 => run!(Sha256),
            Mechanism::Sha512 => run!(Sha512),
        }
    }

    /// This mechanism's hash.
    pub fn hash(self, b: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(b).to_vec(),
            Mechanism::Sha512 => Sha512::digest(b).to_vec(),
        }
    }

    /// PBKDF2 of a password, as a SCRAM client computes it (RFC 5802 `Hi`).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            Mechanism::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }

    /// `(StoredKey, ServerKey)` from a salted password (RFC 5802 section 3).
    pub fn scram_keys(self, salted_password: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let client_key = self.hmac(salted_password, b"Client Key");
        (
            self.hash(&client_key),
            self.hmac(salted_password, b"Server Key"),
        )
    }
}

/// Why a SCRAM exchange failed on the client's side.
#[derive(Debug, thiserror::Error)]
pub enum ScramClientError {
    #[error("malformed server message: {0}")]
    Malformed(String),
    #[error("the server's nonce does not extend ours")]
    Nonce,
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("the server's signature is wrong: it does not know the password")]
    ServerSignature,
}

/// A client's SCRAM exchange: [`ClientExchange::first`], then
/// [`ClientExchange::respond`] to the server's first message, then
/// [`ClientExchange::verify`] the server's final message.
pub struct ClientExchange {
    mechanism: Mechanism,
    password: Vec<u8>,
    first_bare: String,
    nonce: String,
    auth_message: String,
    server_key: Vec<u8>,
}

impl ClientExchange {
    /// Starts an exchange for `user` with a fresh `nonce` (printable, no commas).
    pub fn new(mechanism: Mechanism, user: &str, password: &[u8], nonce: &str) -> Self {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Self {
            mechanism,
            password: password.to_vec(),
            first_bare: format!("n={user},r={nonce}"),
            nonce: nonce.to_string(),
            auth_message: String::new(),
            server_key: Vec::new(),
        }
    }

    /// The client-first-message.
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// The client-final-message answering the server-first-message. `salted` computes the
    /// salted password from (salt, iterations) — PBKDF2, or a cached result.
    pub fn respond_with(
        &mut self,
        server_first: &[u8],
        salted: impl FnOnce(&[u8], u32) -> Vec<u8>,
    ) -> Result<Vec<u8>, ScramClientError> {
        let text = std::str::from_utf8(server_first)
            .map_err(|_| ScramClientError::Malformed("not UTF-8".into()))?;
        let (mut r, mut s, mut i) = (None, None, None);
        for part in text.split(',') {
            match part.split_at_checked(2) {
                Some(("r=", v)) => r = Some(v),
                Some(("s=", v)) => s = Some(v),
                Some(("i=", v)) => i = Some(v),
                Some(("e=", v)) => return Err(ScramClientError::Refused(v.to_string())),
                _ => {}
            }
        }
        let (Some(r), Some(s), Some(i)) = (r, s, i) else {
            return Err(ScramClientError::Malformed(text.to_string()));
        };
        if !r.starts_with(&self.nonce) || r.len() == self.nonce.len() {
            return Err(ScramClientError::Nonce);
        }
        let salt = B64
            .decode(s)
            .map_err(|_| ScramClientError::Malformed(format!("salt {s}")))?;
        let iterations: u32 = i
            .parse()
            .map_err(|_| ScramClientError::Malformed(format!("iterations {i}")))?;
        let salted = salted(&salt, iterations);
        let m = self.mechanism;
        let without_proof = format!("c=biws,r={r}");
        self.auth_message = format!("{},{text},{without_proof}", self.first_bare);
        let client_key = m.hmac(&salted, b"Client Key");
        let signature = m.hmac(&m.hash(&client_key), self.auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        self.server_key = m.hmac(&salted, b"Server Key");
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// [`ClientExchange::respond_with`], running PBKDF2 on the password.
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramClientError> {
        let (m, password) = (self.mechanism, self.password.clone());
        self.respond_with(server_first, |salt, i| {
            m.salted_password(&password, salt, i)
        })
    }

    /// Checks the server-final-message: the server proves it holds the credential.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramClientError> {
        let text = std::str::from_utf8(server_final)
            .map_err(|_| ScramClientError::Malformed("not UTF-8".into()))?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramClientError::Refused(e.to_string()));
        }
        let v = text
            .strip_prefix("v=")
            .ok_or_else(|| ScramClientError::Malformed(text.to_string()))?;
        let expected = self
            .mechanism
            .hmac(&self.server_key, self.auth_message.as_bytes());
        if B64.decode(v).ok().as_deref() != Some(expected.as_slice()) {
            return Err(ScramClientError::ServerSignature);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange, from the client's side.
    #[test]
    fn rfc7677_client() {
        let mut c =
            ClientExchange::new(Mechanism::Sha256, "user", b"pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(c.first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = c
            .respond(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .expect("server-first");
        assert_eq!(
            String::from_utf8(last).expect("utf-8"),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .expect("server signature");
        assert!(c.verify(b"v=AAAA").is_err());
        assert!(c.verify(b"e=invalid-proof").is_err());
    }

    #[test]
    fn a_server_that_does_not_extend_the_nonce_is_refused() {
        let mut c = ClientExchange::new(Mechanism::Sha512, "u", b"p", "abc");
        assert!(matches!(
            c.respond(b"r=xyz,s=AAAA,i=4096"),
            Err(ScramClientError::Nonce)
        ));
        assert!(matches!(
            c.respond(b"r=abc"),
            Err(ScramClientError::Malformed(_))
        ));
        assert!(matches!(
            c.respond(b"e=unknown-user"),
            Err(ScramClientError::Refused(_))
        ));
    }
}
