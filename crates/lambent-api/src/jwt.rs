//! JWT authorizers, as HTTP APIs validate tokens: the signature against the issuer's JSON
//! Web Key Set (RS256/384/512, ES256/384), `iss`, `aud` (or `client_id`), `exp`, `nbf`, and
//! the route's scopes against `scope`/`scp`.
//!
//! Key sets come from the authorizer's `JwksUri` (`http(s)://` or `file:///`) or, without
//! one, from the issuer's OpenID discovery document; they are cached for
//! [`KEYS_TTL`] and fetched again when a token names a key id the cached set lacks.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};
use serde_json::{Map, Value};

use crate::apis::Authorizer;

/// How long a fetched key set is used before it is fetched again.
const KEYS_TTL: Duration = Duration::from_secs(300);

/// Shortest pause between two fetches of one key set (unknown key ids refetch).
const REFETCH_PAUSE: Duration = Duration::from_secs(10);

/// Largest key set or discovery document read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// How long a key set fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a token was refused; shown to the client in `www-authenticate`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JwtError {
    /// No token in the identity source.
    #[error("the token is missing")]
    Missing,
    /// The token is not a well-formed, correctly signed JWT.
    #[error("{0}")]
    Invalid(String),
    /// The key set could not be had.
    #[error("signing keys unavailable: {0}")]
    Keys(String),
}

/// A validated token: its claims and scopes.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// Every claim of the payload.
    pub claims: Map<String, Value>,
    /// The `scope` (space-separated) or `scp` claim's scopes.
    pub scopes: Vec<String>,
}

struct CachedKeys {
    keys: Vec<Value>,
    fetched: Instant,
}

fn cache() -> &'static Mutex<HashMap<String, CachedKeys>> {
    static CACHE: OnceLock<Mutex<HashMap<String, CachedKeys>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Invalid("the token is not base64url".into()))
}

async fn fetch(uri: &str) -> Result<Value, String> {
    let bytes = if let Some(path) = uri.strip_prefix("file://") {
        tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read {path}: {e}"))?
    } else {
        lambent_invoke::targets::fetch_url(uri, MAX_DOCUMENT_BYTES, FETCH_TIMEOUT)
            .await?
            .to_vec()
    };
    serde_json::from_slice(&bytes).map_err(|e| format!("{uri} is not JSON: {e}"))
}

/// Where an authorizer's key set is: its `JwksUri`, else the issuer's discovery document's.
async fn keys_uri(authorizer: &Authorizer, issuer: &str) -> Result<String, String> {
    if let Some(uri) = &authorizer.jwks_uri {
        return Ok(uri.clone());
    }
    let discovery = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let doc = fetch(&discovery).await?;
    doc.get("jwks_uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{discovery} names no jwks_uri"))
}

/// The keys of a set, from the cache or fetched (again when `kid` is not among them).
async fn keys(uri: &str, kid: Option<&str>) -> Result<Vec<Value>, String> {
    let has_kid = |keys: &[Value]| {
        kid.is_none_or(|kid| {
            keys.iter()
                .any(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
        })
    };
    {
        let cached = cache().lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = cached.get(uri) {
            let fresh = entry.fetched.elapsed() < KEYS_TTL;
            let recent = entry.fetched.elapsed() < REFETCH_PAUSE;
            if (fresh && has_kid(&entry.keys)) || recent {
                return Ok(entry.keys.clone());
            }
        }
    }
    let doc = fetch(uri).await?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| format!("{uri} is not a JSON Web Key Set (no \"keys\")"))?;
    cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            uri.to_string(),
            CachedKeys {
                keys: keys.clone(),
                fetched: Instant::now(),
            },
        );
    Ok(keys)
}

/// Checks a signature made with `jwk` over `message`.
fn verify_signature(alg: &str, jwk: &Value, message: &[u8], sig: &[u8]) -> Result<(), JwtError> {
    let text = |key: &str| -> Result<Vec<u8>, JwtError> {
        jwk.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| JwtError::Invalid(format!("the signing key has no {key}")))
            .and_then(b64)
    };
    let bad = || JwtError::Invalid("the signature does not verify".into());
    match alg {
        "RS256" | "RS384" | "RS512" => {
            let params = match alg {
                "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                _ => &signature::RSA_PKCS1_2048_8192_SHA512,
            };
            let (n, e) = (text("n")?, text("e")?);
            signature::RsaPublicKeyComponents { n: &n, e: &e }
                .verify(params, message, sig)
                .map_err(|_| bad())
        }
        "ES256" | "ES384" => {
            let params = if alg == "ES256" {
                &signature::ECDSA_P256_SHA256_FIXED
            } else {
                &signature::ECDSA_P384_SHA384_FIXED
            };
            let mut point = vec![0x04];
            point.extend(text("x")?);
            point.extend(text("y")?);
            UnparsedPublicKey::new(params, &point)
                .verify(message, sig)
                .map_err(|_| bad())
        }
        other => Err(JwtError::Invalid(format!(
            "signing algorithm {other} is not accepted"
        ))),
    }
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Checks the claims against the authorizer's issuer and audiences and the clock.
fn check_claims(
    claims: &Map<String, Value>,
    issuer: &str,
    audience: &[String],
    now: i64,
) -> Result<(), JwtError> {
    let invalid = |m: &str| Err(JwtError::Invalid(m.to_string()));
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return invalid("the token's issuer is not accepted");
    }
    let audiences: Vec<&str> = match claims.get("aud").or_else(|| claims.get("client_id")) {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences
        .iter()
        .any(|a| audience.iter().any(|want| want == a))
    {
        return invalid("the token's audience is not accepted");
    }
    match claims.get("exp").and_then(Value::as_f64) {
        Some(exp) if (exp as i64) > now => {}
        Some(_) => return invalid("the token has expired"),
        None => return invalid("the token has no exp claim"),
    }
    if claims
        .get("nbf")
        .and_then(Value::as_f64)
        .is_some_and(|nbf| nbf as i64 > now)
    {
        return invalid("the token is not valid yet");
    }
    Ok(())
}

fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    crate::apis::strings(claims.get("scope").or_else(|| claims.get("scp")), |text| {
        text.split_whitespace().collect()
    })
}

/// Validates `token` (with or without `Bearer `) for `authorizer`.
pub(crate) async fn verify(authorizer: &Authorizer, token: &str) -> Result<Verified, JwtError> {
    let token = token.trim();
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token)
        .trim();
    if token.is_empty() {
        return Err(JwtError::Missing);
    }
    let mut parts = token.split('.');
    let (Some(head), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Invalid("the token is not a JWT".into()));
    };
    let header: Value = serde_json::from_slice(&b64(head)?)
        .map_err(|_| JwtError::Invalid("the token's header is not JSON".into()))?;
    let claims: Map<String, Value> = serde_json::from_slice(&b64(body)?)
        .map_err(|_| JwtError::Invalid("the token's payload is not a JSON object".into()))?;
    let signature = b64(sig)?;
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let kid = header.get("kid").and_then(Value::as_str);
    let Some(config) = &authorizer.jwt_configuration else {
        return Err(JwtError::Keys(
            "the authorizer has no JwtConfiguration".into(),
        ));
    };
    let uri = keys_uri(authorizer, &config.issuer)
        .await
        .map_err(JwtError::Keys)?;
    let keys = keys(&uri, kid).await.map_err(JwtError::Keys)?;
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| kid.is_none_or(|kid| k.get("kid").and_then(Value::as_str) == Some(kid)))
        .filter(|k| {
            k.get("use")
                .and_then(Value::as_str)
                .is_none_or(|u| u == "sig")
        })
        .collect();
    if candidates.is_empty() {
        return Err(JwtError::Invalid(
            "no key of the issuer's key set matches the token's kid".into(),
        ));
    }
    let message = format!("{head}.{body}");
    if !candidates
        .iter()
        .any(|jwk| verify_signature(alg, jwk, message.as_bytes(), &signature).is_ok())
    {
        return Err(JwtError::Invalid("the signature does not verify".into()));
    }
    check_claims(&claims, &config.issuer, &config.audience, now_seconds())?;
    let scopes = scopes(&claims);
    Ok(Verified { claims, scopes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn claim_checks() {
        let aud = vec!["app".to_string()];
        let ok = claims(json!({"iss": "https://i", "aud": "app", "exp": 200}));
        assert!(check_claims(&ok, "https://i", &aud, 100).is_ok());
        assert!(check_claims(&ok, "https://other", &aud, 100).is_err());
        assert!(check_claims(&ok, "https://i", &aud, 300).is_err());
        let many = claims(json!({"iss": "https://i", "aud": ["x", "app"], "exp": 200}));
        assert!(check_claims(&many, "https://i", &aud, 100).is_ok());
        let client = claims(json!({"iss": "https://i", "client_id": "app", "exp": 200}));
        assert!(check_claims(&client, "https://i", &aud, 100).is_ok());
        let early = claims(json!({"iss": "https://i", "aud": "app", "exp": 200, "nbf": 150}));
        assert!(check_claims(&early, "https://i", &aud, 100).is_err());
        let no_exp = claims(json!({"iss": "https://i", "aud": "app"}));
        assert!(check_claims(&no_exp, "https://i", &aud, 100).is_err());
    }

    #[test]
    fn scope_claims() {
        assert_eq!(scopes(&claims(json!({"scope": "a b"}))), vec!["a", "b"]);
        assert_eq!(scopes(&claims(json!({"scp": ["c"]}))), vec!["c"]);
        assert!(scopes(&claims(json!({}))).is_empty());
    }
}
