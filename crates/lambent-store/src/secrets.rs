//! [`SecretBox`]: the master key that keeps secrets encrypted at rest, and derives keys for
//! message authentication codes.
//!
//! The key is 32 random bytes in a file of the data directory (mode 0600). Secrets are sealed
//! with XChaCha20-Poly1305 under a key derived from it; a sealed secret is text:
//! `v1:` followed by the base64 of the 24-byte nonce and the ciphertext (with its tag).
//! Losing the key file loses every sealed secret; copying it with the database is a backup.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::StoreError;

/// Length of the master key, in bytes.
pub const KEY_LEN: usize = 32;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const SEALED_PREFIX: &str = "v1:";
const SEAL_KEY_LABEL: &[u8] = b"lambent secretbox seal v1";
const MAC_KEY_LABEL: &[u8] = b"lambent secretbox mac\0";

type HmacSha256 = Hmac<Sha256>;

/// The master key of a data directory: seals and opens secrets, and computes MACs.
#[derive(Clone)]
pub struct SecretBox {
    master: [u8; KEY_LEN],
    seal_key: [u8; KEY_LEN],
    /// Random bytes drawn when the box was made; with `counter`, the nonce of a seal if
    /// the operating system's random generator ever fails.
    nonce_prefix: [u8; NONCE_LEN - 8],
    counter: std::sync::Arc<AtomicU64>,
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBox").finish_non_exhaustive()
    }
}

impl SecretBox {
    /// Reads the master key at `path`, or creates it (32 random bytes, mode 0600, written
    /// atomically) if there is no file. Refuses a file of the wrong size, or one that the
    /// group or others may access.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        match std::fs::File::open(path) {
            Ok(file) => Self::from_file(path, file),
            Err(e) if e.kind() == ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(key_error(path, "cannot read", &e)),
        }
    }

    /// A box with a fresh random key that lives only in memory (for in-memory stores and tests).
    pub fn ephemeral() -> Result<Self, StoreError> {
        Self::from_key(random_bytes::<KEY_LEN>()?)
    }

    /// A box over a given master key.
    fn from_key(master: [u8; KEY_LEN]) -> Result<Self, StoreError> {
        Ok(Self {
            master,
            seal_key: hmac(&master, &[SEAL_KEY_LABEL]),
            nonce_prefix: random_bytes()?,
            counter: std::sync::Arc::new(AtomicU64::new(0)),
        })
    }

    fn from_file(path: &Path, file: std::fs::File) -> Result<Self, StoreError> {
        let meta = file
            .metadata()
            .map_err(|e| key_error(path, "cannot inspect", &e))?;
        if !meta.is_file() {
            return Err(StoreError::MasterKey(format!(
                "the master key {} is not a regular file; move it away (a new key is created \
                 only when no file exists, and only if the database holds no encrypted secrets)",
                path.display()
            )));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(StoreError::MasterKey(format!(
                "the master key {} has mode {mode:o}, so users other than its owner may read it; \
                 run `chmod 600 {}` and start again",
                path.display(),
                path.display()
            )));
        }
        let mut bytes = Vec::with_capacity(KEY_LEN + 1);
        file.take(KEY_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| key_error(path, "cannot read", &e))?;
        let master: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
            StoreError::MasterKey(format!(
                "the master key {} is {} bytes long, expected {KEY_LEN}: it is damaged or not a \
                 Lambent key. Restore it from a backup of the data directory; without it the \
                 secrets in the database cannot be decrypted",
                path.display(),
                if bytes.len() > KEY_LEN {
                    format!("more than {KEY_LEN}")
                } else {
                    bytes.len().to_string()
                }
            ))
        })?;
        Self::from_key(master)
    }

    /// Writes a new key next to `path` under a temporary name, syncs it, and moves it into
    /// place without replacing a file another process may have created meanwhile.
    fn create(path: &Path) -> Result<Self, StoreError> {
        let master = random_bytes::<KEY_LEN>()?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "master.key".to_owned());
        let suffix: [u8; 8] = random_bytes()?;
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let temp = path.with_file_name(format!(".{name}.{suffix}.tmp"));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&master)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(key_error(path, "cannot create", &e));
        }
        let placed = match std::fs::hard_link(&temp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(_) => std::fs::rename(&temp, path).map(|()| true),
        };
        let _ = std::fs::remove_file(&temp);
        match placed {
            Ok(true) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| key_error(path, "cannot sync the directory of", &e))?;
                }
                Self::from_key(master)
            }
            Ok(false) => {
                let file =
                    std::fs::File::open(path).map_err(|e| key_error(path, "cannot read", &e))?;
                Self::from_file(path, file)
            }
            Err(e) => Err(key_error(path, "cannot create", &e)),
        }
    }

    /// Encrypts and authenticates `plaintext`: `v1:` + base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, plaintext: &str) -> String {
        let nonce = self.nonce();
        let cipher = XChaCha20Poly1305::new(&self.seal_key.into());
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        match cipher.encrypt(&XNonce::from(nonce), plaintext.as_bytes()) {
            Ok(ciphertext) => out.extend_from_slice(&ciphertext),
            // Only messages longer than 256 GiB are refused; never store such a one in the clear.
            Err(_) => out.truncate(0),
        }
        format!("{SEALED_PREFIX}{}", STANDARD.encode(out))
    }

    /// Decrypts what [`seal`](Self::seal) produced; fails if it was changed or sealed under
    /// another key.
    pub fn open(&self, sealed: &str) -> Result<String, StoreError> {
        let encoded = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or_else(|| StoreError::Crypto("unknown format of a sealed secret".into()))?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| StoreError::Crypto("a sealed secret is not valid base64".into()))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Crypto("a sealed secret is truncated".into()));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| StoreError::Crypto("a sealed secret is truncated".into()))?;
        let cipher = XChaCha20Poly1305::new(&self.seal_key.into());
        let plaintext = cipher
            .decrypt(&XNonce::from(nonce), ciphertext)
            .map_err(|_| {
                StoreError::Crypto(
                    "a sealed secret failed authentication: it was altered, or the master key \
                     is not the one it was sealed with"
                        .into(),
                )
            })?;
        String::from_utf8(plaintext)
            .map_err(|_| StoreError::Crypto("a sealed secret is not UTF-8 text".into()))
    }

    /// HMAC-SHA256 of `data` under a key derived from the master key and `label` (each
    /// label gives an independent key).
    pub fn mac(&self, label: &str, data: &[u8]) -> [u8; 32] {
        let subkey = hmac(&self.master, &[MAC_KEY_LABEL, label.as_bytes()]);
        hmac(&subkey, &[data])
    }

    /// A fresh random nonce; should the random generator fail, a unique one made of random
    /// bytes drawn when the box was made and a counter.
    fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        if getrandom::fill(&mut nonce).is_err() {
            let count = self.counter.fetch_add(1, Ordering::Relaxed);
            nonce[..NONCE_LEN - 8].copy_from_slice(&self.nonce_prefix);
            nonce[NONCE_LEN - 8..].copy_from_slice(&count.to_be_bytes());
        }
        nonce
    }
}

/// HMAC-SHA256 of the concatenated `parts` under a 32-byte key.
fn hmac(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC pads a key shorter than the hash's block with zeros, so a 32-byte key padded to
    // the 64-byte block is the same key (and the infallible constructor accepts it).
    let mut block = [0u8; 64];
    block[..KEY_LEN].copy_from_slice(key);
    let mut mac = <HmacSha256 as hmac::digest::KeyInit>::new(&block.into());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| {
        StoreError::Crypto(format!(
            "the operating system's random number generator failed: {e}"
        ))
    })?;
    Ok(bytes)
}

fn key_error(path: &Path, what: &str, e: &std::io::Error) -> StoreError {
    StoreError::MasterKey(format!("{what} the master key {}: {e}", path.display()))
}

/// Random text of `len` characters from `alphabet` (whose length must divide 256, so every
/// character is equally likely).
pub(crate) fn random_string(len: usize, alphabet: &[u8]) -> Result<String, StoreError> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| {
        StoreError::Crypto(format!(
            "the operating system's random number generator failed: {e}"
        ))
    })?;
    Ok(bytes
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let sb = SecretBox::ephemeral().unwrap();
        let sealed = sb.seal("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("wJalrXUtnFEMI"));
        assert_eq!(
            sb.open(&sealed).unwrap(),
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        );
        assert_ne!(sb.seal("same"), sb.seal("same"), "nonces are random");
        assert_eq!(sb.open(&sb.seal("")).unwrap(), "");
    }

    #[test]
    fn detects_tampering_and_wrong_keys() {
        let sb = SecretBox::ephemeral().unwrap();
        let sealed = sb.seal("secret");
        let mut bytes = STANDARD.decode(&sealed[3..]).unwrap();
        for i in [0, NONCE_LEN, bytes.len() - 1] {
            bytes[i] ^= 1;
            let changed = format!("v1:{}", STANDARD.encode(&bytes));
            assert!(matches!(sb.open(&changed), Err(StoreError::Crypto(_))));
            bytes[i] ^= 1;
        }
        let other = SecretBox::ephemeral().unwrap();
        assert!(matches!(other.open(&sealed), Err(StoreError::Crypto(_))));
        for bad in ["", "v1:", "v1:!!!", "v2:AAAA", "secret", "v1:AAAA"] {
            assert!(matches!(sb.open(bad), Err(StoreError::Crypto(_))), "{bad}");
        }
    }

    #[test]
    fn macs_depend_on_key_label_and_data() {
        let sb = SecretBox::ephemeral().unwrap();
        let m = sb.mac("session", b"data");
        assert_eq!(m, sb.mac("session", b"data"));
        assert_ne!(m, sb.mac("session", b"datb"));
        assert_ne!(m, sb.mac("other", b"data"));
        assert_ne!(m, SecretBox::ephemeral().unwrap().mac("session", b"data"));
    }

    #[test]
    fn creates_key_file_with_mode_0600_and_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = SecretBox::load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["master.key"], "no temporary file is left behind");
        let sealed = first.seal("kept");
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "kept");
        assert_eq!(first.mac("l", b"d"), again.mac("l", b"d"));
    }

    #[test]
    fn refuses_bad_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        SecretBox::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SecretBox::load_or_create(&path).unwrap_err();
        assert!(
            matches!(&err, StoreError::MasterKey(m) if m.contains("chmod 600")),
            "{err}"
        );

        let short = dir.path().join("short.key");
        std::fs::write(&short, [1u8; 31]).unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = SecretBox::load_or_create(&short).unwrap_err();
        assert!(
            matches!(&err, StoreError::MasterKey(m) if m.contains("31 bytes")),
            "{err}"
        );
        let long = dir.path().join("long.key");
        std::fs::write(&long, [1u8; 33]).unwrap();
        std::fs::set_permissions(&long, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            SecretBox::load_or_create(&long),
            Err(StoreError::MasterKey(_))
        ));
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let sb = SecretBox::from_key([0xab; KEY_LEN]).unwrap();
        assert_eq!(format!("{sb:?}"), "SecretBox { .. }");
    }

    #[test]
    fn random_strings_use_the_alphabet() {
        let s = random_string(40, b"AB").unwrap();
        assert_eq!(s.len(), 40);
        assert!(s.chars().all(|c| c == 'A' || c == 'B'));
    }
}
