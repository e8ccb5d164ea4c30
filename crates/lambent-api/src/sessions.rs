//! Temporary credentials for execution roles, like STS's: an access key id `ASIA…`, a
//! secret, and a session token that carries the role, the session name and the expiry under
//! a MAC of the server's master key. Nothing is stored: the server recognises its own tokens
//! and derives the secret again from the token.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use lambent_store::SecretBox;

/// Temporary credentials handed to an execution environment.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionCredentials {
    /// `ASIA` + 16 characters.
    pub access_key_id: String,
    /// The signing secret.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: String,
    /// When they stop working, seconds since the epoch.
    pub expires_at: u64,
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Who a verified session token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The role's ARN.
    pub role_arn: String,
    /// The session name (the function's name).
    pub name: String,
    /// The secret the request must be signed with.
    pub secret_access_key: String,
}

/// Why a session token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    /// The token is not one this server issued, or does not belong to the key id.
    #[error("The security token included in the request is invalid.")]
    Invalid,
    /// The token's time is up.
    #[error("The security token included in the request is expired")]
    Expired,
}

impl SessionError {
    /// AWS's error name.
    pub fn aws_code(&self) -> &'static str {
        match self {
            Self::Invalid => "UnrecognizedClientException",
            Self::Expired => "ExpiredTokenException",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Claims {
    /// Access key id.
    k: String,
    /// Role ARN.
    r: String,
    /// Session name.
    s: String,
    /// Expiry, epoch seconds.
    e: u64,
}

/// Issues and verifies session credentials.
#[derive(Clone)]
pub struct Sessions {
    secrets: SecretBox,
    duration: Duration,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

const TOKEN_LABEL: &str = "session-token";
const SECRET_LABEL: &str = "session-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sessions {
    /// Sessions signed with the master key, each valid for `duration`.
    pub fn new(secrets: SecretBox, duration: Duration) -> Self {
        Self { secrets, duration }
    }

    /// How long a session lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// New credentials for a role, named after the function using them.
    pub fn issue(&self, role_arn: &str, name: &str) -> SessionCredentials {
        let mut random = [0u8; 10];
        if getrandom::fill(&mut random).is_err() {
            // Unique enough even without the OS generator: the MAC of the time and name.
            let seed = format!("{:?}{name}", SystemTime::now());
            random.copy_from_slice(&self.secrets.mac("session-id", seed.as_bytes())[..10]);
        }
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let id: String = random
            .iter()
            .flat_map(|b| [b >> 3, b & 7])
            .take(16)
            .map(|v| ALPHABET[usize::from(v) % ALPHABET.len()] as char)
            .collect();
        let claims = Claims {
            k: format!("ASIA{id}"),
            r: role_arn.to_string(),
            s: name.to_string(),
            e: now() + self.duration.as_secs(),
        };
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let mac = B64.encode(self.secrets.mac(TOKEN_LABEL, payload.as_bytes()));
        SessionCredentials {
            secret_access_key: self.secret_for(&payload),
            access_key_id: claims.k,
            session_token: format!("{payload}.{mac}"),
            expires_at: claims.e,
        }
    }

    fn secret_for(&self, payload: &str) -> String {
        let raw = self.secrets.mac(SECRET_LABEL, payload.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(raw)[..40].to_string()
    }

    /// Checks a session token presented with an access key id.
    pub fn verify(&self, access_key_id: &str, token: &str) -> Result<Session, SessionError> {
        let (payload, mac) = token.split_once('.').ok_or(SessionError::Invalid)?;
        let expected = B64.encode(self.secrets.mac(TOKEN_LABEL, payload.as_bytes()));
        if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) {
            return Err(SessionError::Invalid);
        }
        let claims: Claims = B64
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(SessionError::Invalid)?;
        if claims.k != access_key_id {
            return Err(SessionError::Invalid);
        }
        if claims.e <= now() {
            return Err(SessionError::Expired);
        }
        Ok(Session {
            secret_access_key: self.secret_for(payload),
            role_arn: claims.r,
            name: claims.s,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_credentials_verify_and_tampering_does_not() {
        let sessions = Sessions::new(SecretBox::ephemeral().unwrap(), Duration::from_secs(60));
        let creds = sessions.issue("arn:aws:iam::000000000000:role/r", "f");
        assert!(creds.access_key_id.starts_with("ASIA"));
        assert_eq!(creds.access_key_id.len(), 20);
        let session = sessions
            .verify(&creds.access_key_id, &creds.session_token)
            .unwrap();
        assert_eq!(session.role_arn, "arn:aws:iam::000000000000:role/r");
        assert_eq!(session.name, "f");
        assert_eq!(session.secret_access_key, creds.secret_access_key);
        assert!(!format!("{creds:?}").contains(&creds.secret_access_key));

        let other = sessions.issue("arn:aws:iam::000000000000:role/r", "g");
        assert_eq!(
            sessions.verify(&other.access_key_id, &creds.session_token),
            Err(SessionError::Invalid),
            "a token belongs to its key id"
        );
        let mut forged = creds.session_token.clone();
        forged.insert(3, 'x');
        assert_eq!(
            sessions.verify(&creds.access_key_id, &forged),
            Err(SessionError::Invalid)
        );
        let stranger = Sessions::new(SecretBox::ephemeral().unwrap(), Duration::from_secs(60));
        assert_eq!(
            stranger.verify(&creds.access_key_id, &creds.session_token),
            Err(SessionError::Invalid),
            "another server's key does not verify"
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let sessions = Sessions::new(SecretBox::ephemeral().unwrap(), Duration::ZERO);
        let creds = sessions.issue("arn:aws:iam::000000000000:role/r", "f");
        assert_eq!(
            sessions.verify(&creds.access_key_id, &creds.session_token),
            Err(SessionError::Expired)
        );
    }
}
