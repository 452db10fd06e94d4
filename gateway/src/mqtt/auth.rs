//! MQTT authentication (user name and password) and authorization (which topics a client
//! may publish to and which filters it may subscribe to), from a TOML file given with
//! `--mqtt-auth`:
//!
//! ```toml
//! allow_anonymous = false          # clients without a user name
//!
//! [anonymous]                      # what anonymous clients may do, when allowed
//! subscribe = ["public/#"]
//!
//! [[users]]
//! name = "sensor-1"
//! password = "pbkdf2-sha256$100000$<salt>$<hash>"   # from `sluice mqtt-password`
//! publish = ["sensors/sensor-1/#"]
//! subscribe = ["commands/sensor-1/#"]
//! ```
//!
//! Passwords are stored as PBKDF2-HMAC-SHA256 hashes (salt and hash in base64). A publish
//! is allowed when one of the user's `publish` filters matches its topic; a subscription
//! when one of the `subscribe` filters covers every topic the requested filter can match.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use sluice_protocols::mqtt::topic;

const SCHEME: &str = "pbkdf2-sha256";
pub const DEFAULT_ITERATIONS: u32 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl Rules {
    pub fn may_publish(&self, name: &str) -> bool {
        self.publish.iter().any(|f| topic::matches(f, name))
    }

    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|f| covers(f, filter))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password: String,
    #[serde(flatten)]
    rules: Rules,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    allow_anonymous: bool,
    #[serde(default)]
    anonymous: Rules,
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Debug)]
struct Hash {
    iterations: u32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

impl Hash {
    fn parse(s: &str) -> Result<Hash, String> {
        let parts: Vec<&str> = s.split('$').collect();
        let [scheme, iterations, salt, hash] = parts[..] else {
            return Err(format!("expected {SCHEME}$ITERATIONS$SALT$HASH"));
        };
        if scheme != SCHEME {
            return Err(format!("unknown password scheme '{scheme}'"));
        }
        Ok(Hash {
            iterations: iterations
                .parse()
                .map_err(|_| "iterations is not a number".to_string())?,
            salt: B64.decode(salt).map_err(|e| format!("salt: {e}"))?,
            hash: B64.decode(hash).map_err(|e| format!("hash: {e}"))?,
        })
    }

    fn verify(&self, password: &[u8]) -> bool {
        let mut out = vec![0u8; self.hash.len()];
        pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, &self.salt, self.iterations, &mut out);
        // Constant time: compare every byte.
        out.len() == self.hash.len()
            && out
                .iter()
                .zip(&self.hash)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// A password hash for the auth file.
pub fn hash_password(password: &[u8], iterations: u32) -> String {
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, &salt, iterations, &mut out);
    format!(
        "{SCHEME}${iterations}${}${}",
        B64.encode(salt),
        B64.encode(out)
    )
}

/// Whether every topic `requested` can match is also matched by `allowed`.
pub fn covers(allowed: &str, requested: &str) -> bool {
    let mut a = allowed.split('/');
    let mut r = requested.split('/');
    loop {
        match (a.next(), r.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(x), Some(y)) if x == y && x != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    BadCredentials,
    NotAuthorized,
    /// The user store could not be read.
    Unavailable,
}

#[derive(Debug)]
pub struct Auth {
    allow_anonymous: bool,
    anonymous: Rules,
    users: HashMap<String, (Hash, Rules)>,
}

impl Auth {
    pub fn load(path: &str) -> Result<Auth, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_string(),
            source,
        })?;
        Auth::parse(&text).map_err(|e| AuthError::Parse(format!("{path}: {e}")))
    }

    pub fn parse(text: &str) -> Result<Auth, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let check = |rules: &Rules, who: &str| -> Result<(), String> {
            for f in rules.publish.iter().chain(&rules.subscribe) {
                topic::validate_filter(f).map_err(|e| format!("{who}: filter '{f}': {e}"))?;
            }
            Ok(())
        };
        check(&file.anonymous, "anonymous")?;
        let mut users = HashMap::new();
        for u in file.users {
            check(&u.rules, &u.name)?;
            let hash = Hash::parse(&u.password).map_err(|e| format!("user {}: {e}", u.name))?;
            if users.insert(u.name.clone(), (hash, u.rules)).is_some() {
                return Err(format!("user {} is listed twice", u.name));
            }
        }
        Ok(Auth {
            allow_anonymous: file.allow_anonymous,
            anonymous: file.anonymous,
            users,
        })
    }

    /// Whether the file lists this user.
    pub fn has_user(&self, name: &str) -> bool {
        self.users.contains_key(name)
    }

    /// What anonymous clients may do, if they may connect.
    pub fn anonymous(&self) -> Option<&Rules> {
        self.allow_anonymous.then_some(&self.anonymous)
    }

    /// The rules of a client that connects with these credentials.
    pub fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Rules, Refused> {
        match username {
            None if self.allow_anonymous => Ok(self.anonymous.clone()),
            None => Err(Refused::NotAuthorized),
            Some(name) => {
                let (hash, rules) = self.users.get(name).ok_or(Refused::BadCredentials)?;
                if password.is_some_and(|p| hash.verify(p)) {
                    Ok(rules.clone())
                } else {
                    Err(Refused::BadCredentials)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cover_narrower_filters_only() {
        assert!(covers("a/#", "a/b/+"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/+/c", "a/x/c"));
        assert!(covers("a/+/c", "a/+/c"));
        assert!(!covers("a/+/c", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(covers("#", "#"));
    }

    #[test]
    fn users_anonymous_clients_and_rules() {
        let hash = hash_password(b"s3cret", 1000);
        let auth = Auth::parse(&format!(
            r#"
            allow_anonymous = true
            [anonymous]
            subscribe = ["public/#"]
            [[users]]
            name = "dev"
            password = "{hash}"
            publish = ["sensors/dev/#"]
            subscribe = ["commands/dev/+"]
            "#
        ))
        .expect("parse");
        let rules = auth
            .authenticate(Some("dev"), Some(b"s3cret"))
            .expect("accepted");
        assert!(rules.may_publish("sensors/dev/temp"));
        assert!(!rules.may_publish("sensors/other/temp"));
        assert!(rules.may_subscribe("commands/dev/reboot"));
        assert!(!rules.may_subscribe("commands/#"));
        assert_eq!(
            auth.authenticate(Some("dev"), Some(b"wrong")).err(),
            Some(Refused::BadCredentials)
        );
        assert_eq!(
            auth.authenticate(Some("nobody"), Some(b"s3cret")).err(),
            Some(Refused::BadCredentials)
        );
        assert_eq!(
            auth.authenticate(Some("dev"), None).err(),
            Some(Refused::BadCredentials)
        );
        let anon = auth.authenticate(None, None).expect("anonymous");
        assert!(anon.may_subscribe("public/news") && !anon.may_publish("public/news"));
        let closed = Auth::parse("").expect("parse");
        assert_eq!(
            closed.authenticate(None, None).err(),
            Some(Refused::NotAuthorized)
        );
        assert!(Auth::parse("[[users]]\nname = \"x\"\npassword = \"plain\"").is_err());
        assert!(Auth::parse("surprise = 1").is_err());
    }
}
