//! The server's access keys: created on first start, kept in the store, and written to
//! `<data-dir>/credentials.json` (mode 0600) so the CLI and users can find them.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use lambent_store::{AccessKey, Store};

/// The contents of `credentials.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CredentialsFile {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Region the server reports.
    pub region: String,
    /// Where the server listens.
    pub endpoint: String,
}

/// Path of the credentials file in a data directory.
pub fn file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("credentials.json")
}

/// Returns the bootstrap key, creating it on first start; the flag says whether it is new.
pub fn bootstrap_key(store: &dyn Store) -> anyhow::Result<(AccessKey, bool)> {
    if let Some(key) = store.list_access_keys()?.into_iter().next() {
        return Ok((key, false));
    }
    let key = AccessKey {
        access_key_id: format!(
            "LKIA{}",
            random_string(16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")?
        ),
        secret_access_key: random_string(
            40,
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        )?,
    };
    store.put_access_key(&key)?;
    Ok((key, true))
}

fn random_string(len: usize, alphabet: &[u8]) -> anyhow::Result<String> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).map_err(|e| {
        anyhow::anyhow!("the operating system's random number generator failed: {e}")
    })?;
    Ok(bytes
        .iter()
        .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
        .collect())
}

/// Writes `credentials.json` with mode 0600.
pub fn write_file(data_dir: &Path, contents: &CredentialsFile) -> anyhow::Result<PathBuf> {
    let path = file_path(data_dir);
    let partial = path.with_extension("json.partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.write_all(serde_json::to_string_pretty(contents)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, &path)?;
    Ok(path)
}

/// Shell lines that point the AWS CLI and SDKs at this server.
pub fn export_lines(contents: &CredentialsFile) -> String {
    format!(
        "export AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_DEFAULT_REGION={}\nexport AWS_ENDPOINT_URL_LAMBDA={}\n",
        contents.access_key_id, contents.secret_access_key, contents.region, contents.endpoint
    )
}
