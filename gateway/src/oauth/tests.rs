use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/oauth/testdata")
        .join(name)
}

fn settings(jwks: PathBuf) -> OAuthSettings {
    OAuthSettings {
        jwks,
        issuer: Some("https://idp.example".into()),
        audience: Some("sluice".into()),
        principal_claim: "sub".into(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "iss": "https://idp.example", "aud": "sluice",
           "iat": now(), "exp": now() + 300})
}

fn sign(pem: &str, alg: Algorithm, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(testdata(pem)).expect("test key");
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        _ => EncodingKey::from_ec_pem(&pem),
    }
    .expect("test key parses");
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn oauth() -> OAuth {
    OAuth::new(settings(testdata("jwks.json"))).expect("JWKS loads")
}

#[test]
fn rs256_and_es256_tokens_are_accepted() {
    let o = oauth();
    let c = claims("svc-orders");
    let t = sign("rsa.pem", Algorithm::RS256, Some("rsa-1"), &c);
    let v = o.validate(&t).expect("valid");
    assert_eq!(v.principal, "svc-orders");
    assert_eq!(
        v.expires,
        UNIX_EPOCH + Duration::from_secs(c["exp"].as_u64().expect("exp"))
    );
    // Without a kid, the key is found by algorithm.
    let t = sign("ec.pem", Algorithm::ES256, None, &claims("device-7"));
    assert_eq!(o.validate(&t).expect("valid").principal, "device-7");
    let t = sign("rsa.pem", Algorithm::RS256, None, &claims("x"));
    assert!(o.validate(&t).is_ok());
}

#[test]
fn bad_tokens_are_refused() {
    let o = oauth();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("svc");
        f(&mut c);
        sign("rsa.pem", Algorithm::RS256, Some("rsa-1"), &c)
    };
    let invalid = |t: &str| matches!(o.validate(t), Err(TokenError::Invalid(_)));
    // Expired beyond the allowed skew; not yet valid; no expiry at all.
    assert!(invalid(&with(&|c| c["exp"] = json!(now() - 120))));
    assert!(o.validate(&with(&|c| c["exp"] = json!(now() - 10))).is_ok());
    assert!(invalid(&with(&|c| c["nbf"] = json!(now() + 120))));
    assert!(invalid(&with(&|c| {
        c.as_object_mut().expect("object").remove("exp");
    })));
    // Another issuer or audience.
    assert!(invalid(
        &with(&|c| c["iss"] = json!("https://evil.example"))
    ));
    assert!(invalid(&with(&|c| c["aud"] = json!("other"))));
    assert!(
        o.validate(&with(&|c| c["aud"] = json!(["other", "sluice"])))
            .is_ok()
    );
    // No principal.
    assert_eq!(
        o.validate(&with(&|c| {
            c.as_object_mut().expect("object").remove("sub");
        })),
        Err(TokenError::NoPrincipal("sub".into()))
    );
    // Signed by a key that is not in the set, under a kid that is.
    let t = sign(
        "other-rsa.pem",
        Algorithm::RS256,
        Some("rsa-1"),
        &claims("svc"),
    );
    assert!(invalid(&t));
    // A kid the set does not have.
    let t = sign("rsa.pem", Algorithm::RS256, Some("rsa-9"), &claims("svc"));
    assert_eq!(
        o.validate(&t),
        Err(TokenError::UnknownKey(Some("rsa-9".into())))
    );
    // HMAC (the set's shared-secret key is never used) and unsigned tokens.
    let hs = jsonwebtoken::encode(
        &Header {
            kid: Some("hmac".into()),
            ..Header::new(Algorithm::HS256)
        },
        &claims("svc"),
        &EncodingKey::from_secret(b"secret"),
    )
    .expect("sign");
    assert!(matches!(o.validate(&hs), Err(TokenError::Algorithm(_))));
    use base64::Engine;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!("{}.{}.", b64(json!({"alg": "none"})), b64(claims("svc")));
    assert!(o.validate(&none).is_err());
    assert!(matches!(
        o.validate("not a token"),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn without_issuer_and_audience_settings_those_claims_are_not_checked() {
    let o = OAuth::new(OAuthSettings {
        issuer: None,
        audience: None,
        principal_claim: "client_id".into(),
        ..settings(testdata("jwks.json"))
    })
    .expect("loads");
    let t = sign(
        "rsa.pem",
        Algorithm::RS256,
        Some("rsa-1"),
        &json!({"client_id": "app-1", "iss": "anyone", "aud": "anything", "exp": now() + 60}),
    );
    assert_eq!(o.validate(&t).expect("valid").principal, "app-1");
}

#[test]
fn a_changed_jwks_file_is_read_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::copy(testdata("jwks.json"), &path).expect("copy");
    let o = OAuth::new(settings(path.clone())).expect("loads");
    let other = sign(
        "other-rsa.pem",
        Algorithm::RS256,
        Some("rsa-1"),
        &claims("svc"),
    );
    assert!(o.validate(&other).is_err());
    assert!(!o.reload().expect("reloads"));
    std::fs::copy(testdata("jwks-other.json"), &path).expect("copy");
    assert!(o.reload().expect("reloads"));
    assert!(o.validate(&other).is_ok());
    // A broken file keeps the keys.
    std::fs::write(&path, b"{").expect("write");
    assert!(o.reload().is_err());
    assert!(o.validate(&other).is_ok());
    // A set without usable keys is refused at start.
    std::fs::write(&path, br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).expect("write");
    assert!(matches!(
        OAuth::new(settings(path)),
        Err(OAuthError::NoKeys(_))
    ));
}
