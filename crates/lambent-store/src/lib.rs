//! Lambent's persistent state: the [`Store`] trait over functions and access keys, its
//! SQLite implementation, and [`CodeStore`], the content-addressed store of code zips.

mod code;
mod sqlite;

pub use code::{CodeError, CodeStore, StoredCode};
pub use sqlite::SqliteStore;

use lambent_types::FunctionConfig;

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The function (or version) does not exist.
    #[error("function not found: {0}")]
    NotFound(String),
    /// A function with this name already exists.
    #[error("function already exists: {0}")]
    AlreadyExists(String),
    /// A `RevisionId` precondition did not hold.
    #[error("revision mismatch for {0}")]
    RevisionMismatch(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The store's lock was poisoned by a panic elsewhere.
    #[error("store lock poisoned")]
    Poisoned,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Marker for the next page, absent on the last one.
    pub next_marker: Option<String>,
}

/// An access key pair that may sign requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// Public key id.
    pub access_key_id: String,
    /// Secret used to sign.
    pub secret_access_key: String,
}

/// Everything Lambent persists, behind one interface so SQLite and PostgreSQL can both back it.
pub trait Store: Send + Sync {
    /// Creates a function's `$LATEST`; fails if the name is taken.
    fn create_function(&self, config: &FunctionConfig) -> Result<(), StoreError>;
    /// Reads one version of a function.
    fn get_function(&self, name: &str, version: &str) -> Result<FunctionConfig, StoreError>;
    /// Lists `$LATEST` of every function in name order, after `marker`.
    fn list_functions(
        &self,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<Page<FunctionConfig>, StoreError>;
    /// Atomically reads `$LATEST`, checks the revision precondition, applies `change` and writes it back.
    fn update_function(
        &self,
        name: &str,
        expected_revision: Option<&str>,
        change: &mut dyn FnMut(&mut FunctionConfig) -> Result<(), lambent_types::ValidationError>,
    ) -> Result<Result<FunctionConfig, lambent_types::ValidationError>, StoreError>;
    /// Deletes a function and all its versions.
    fn delete_function(&self, name: &str) -> Result<(), StoreError>;
    /// Number of functions and the total size of their code.
    fn usage(&self) -> Result<(u64, u64), StoreError>;
    /// Adds an access key.
    fn put_access_key(&self, key: &AccessKey) -> Result<(), StoreError>;
    /// Looks up the secret of an access key id.
    fn access_key_secret(&self, access_key_id: &str) -> Result<Option<String>, StoreError>;
    /// Returns every access key, oldest first.
    fn list_access_keys(&self) -> Result<Vec<AccessKey>, StoreError>;
}
