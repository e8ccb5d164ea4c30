//! Lambent's persistent state: the [`Store`] trait over functions, principals and access
//! keys, its SQLite implementation, [`SecretBox`] (the master key that encrypts secrets at
//! rest), and [`CodeStore`], the content-addressed store of code zips.

mod code;
pub mod iam;
pub mod logs;
pub mod queue;
pub mod secrets;
mod sqlite;
mod sqlite_iam;
mod sqlite_queue;

pub use code::{CodeError, CodeStore, StoredCode};
pub use iam::IamStore;
pub use secrets::SecretBox;
pub use sqlite::{MASTER_KEY_FILE, SqliteStore};

use lambent_types::FunctionConfig;

/// Failures of the store, and refusals of a change (each maps to one AWS error).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The function, version or document does not exist; carries the message for the caller.
    #[error("{0}")]
    NotFound(String),
    /// Something with this name already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// A `RevisionId` precondition did not hold.
    #[error("revision mismatch for {0}")]
    RevisionMismatch(String),
    /// The change conflicts with the current state (e.g. a version an alias still uses).
    #[error("{0}")]
    Conflict(String),
    /// The change breaks a rule.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The store's lock was poisoned by a panic elsewhere.
    #[error("store lock poisoned")]
    Poisoned,
    /// The master key file could not be read, created or trusted; the message says what to do.
    #[error("{0}")]
    MasterKey(String),
    /// A secret could not be sealed or opened (altered, sealed under another master key), or
    /// the random number generator failed.
    #[error("{0}")]
    Crypto(String),
}

impl From<lambent_types::ValidationError> for StoreError {
    fn from(e: lambent_types::ValidationError) -> Self {
        Self::Invalid(e.0)
    }
}

/// The kinds of JSON documents kept with [`Store::modify_document`]; `scope` is the function
/// (or layer) name the document belongs to.
pub mod kinds {
    /// An alias of a function (key: alias name).
    pub const ALIAS: &str = "alias";
    /// A function's resource policy (key: qualifier, `""` for the unqualified function).
    pub const POLICY: &str = "policy";
    /// Reserved concurrency of a function (key: `""`).
    pub const CONCURRENCY: &str = "concurrency";
    /// Provisioned concurrency of a version or alias (key: qualifier).
    pub const PROVISIONED_CONCURRENCY: &str = "provisioned-concurrency";
    /// Asynchronous invocation settings (key: qualifier, `$LATEST` included).
    pub const EVENT_INVOKE_CONFIG: &str = "event-invoke-config";
    /// Function URL configuration (key: qualifier, `""` for none).
    pub const URL_CONFIG: &str = "url-config";
    /// A layer and all its versions (scope: `""`, key: layer name).
    pub const LAYER: &str = "layer";
    /// An event-source mapping (scope: `""`, key: UUID).
    pub const EVENT_SOURCE_MAPPING: &str = "event-source-mapping";
    /// A schedule that fires a function (scope: `""`, key: schedule name).
    pub const SCHEDULE: &str = "schedule";
    /// A webhook source of S3-style bucket notifications (scope: `""`, key: source name).
    pub const S3_SOURCE: &str = "s3-source";
    /// A named connection to a broker (scope: `""`, key: name; `{"Url": …}`).
    pub const CONNECTION: &str = "connection";
    /// An HTTP or WebSocket API with its routes, authorizers and stages (scope: `""`, key:
    /// the API id).
    pub const API: &str = "api";
    /// Usage of a function in one minute (key: the minute's epoch seconds, zero-padded to 12
    /// digits). Kept after the function is deleted, like Lambda's CloudWatch metrics.
    pub const USAGE: &str = "usage";

    /// Kinds whose documents belong to a function (scope = function name) and are deleted with it.
    pub const FUNCTION_SCOPED: &[&str] = &[
        ALIAS,
        POLICY,
        CONCURRENCY,
        PROVISIONED_CONCURRENCY,
        EVENT_INVOKE_CONFIG,
        URL_CONFIG,
    ];
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
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// Public key id.
    pub access_key_id: String,
    /// Secret used to sign.
    pub secret_access_key: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Everything Lambent persists, behind one interface so SQLite and PostgreSQL can both back it.
pub trait Store: queue::EventQueue + iam::IamStore + Send + Sync {
    /// Creates a function's `$LATEST`; fails if the name is taken.
    fn create_function(&self, config: &FunctionConfig) -> Result<(), StoreError>;
    /// Reads one version of a function.
    fn get_function(&self, name: &str, version: &str) -> Result<FunctionConfig, StoreError>;
    /// Lists `$LATEST` of every function in name order (with `all_versions`, every published
    /// version too), after `marker`.
    fn list_functions(
        &self,
        marker: Option<&str>,
        max_items: usize,
        all_versions: bool,
    ) -> Result<Page<FunctionConfig>, StoreError>;
    /// Atomically reads `$LATEST`, checks the revision precondition, applies `change` and writes it back.
    fn update_function(
        &self,
        name: &str,
        expected_revision: Option<&str>,
        change: &mut dyn FnMut(&mut FunctionConfig) -> Result<(), StoreError>,
    ) -> Result<FunctionConfig, StoreError>;
    /// Publishes `$LATEST` as the next version number, unless the newest version already has
    /// the same code and configuration, in which case that version is returned.
    fn publish_version(
        &self,
        name: &str,
        expected_revision: Option<&str>,
        expected_code_sha256: Option<&str>,
        description: Option<&str>,
    ) -> Result<FunctionConfig, StoreError>;
    /// Lists `$LATEST` and the published versions of a function, oldest first, after `marker`.
    fn list_versions(
        &self,
        name: &str,
        marker: Option<&str>,
        max_items: usize,
    ) -> Result<Page<FunctionConfig>, StoreError>;
    /// Deletes one published version; refused while an alias routes to it.
    fn delete_version(&self, name: &str, version: u64) -> Result<(), StoreError>;
    /// Reads, changes and writes one JSON document in a transaction: `change` gets the
    /// current document (if any) and returns the new one (`None` deletes it).
    fn modify_document(
        &self,
        kind: &str,
        scope: &str,
        key: &str,
        change: &mut dyn FnMut(
            Option<serde_json::Value>,
        ) -> Result<Option<serde_json::Value>, StoreError>,
    ) -> Result<Option<serde_json::Value>, StoreError>;
    /// Reads one document.
    fn get_document(
        &self,
        kind: &str,
        scope: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError>;
    /// Lists documents of a kind, in one scope or all, ordered by scope then key.
    fn list_documents(
        &self,
        kind: &str,
        scope: Option<&str>,
    ) -> Result<Vec<(String, String, serde_json::Value)>, StoreError>;
    /// Deletes a function, all its versions and every document scoped to it.
    fn delete_function(&self, name: &str) -> Result<(), StoreError>;
    /// Number of functions and the total size of the code of all their versions.
    fn usage(&self) -> Result<(u64, u64), StoreError>;
    /// Adds (or replaces) an access key of the user `root`, creating `root` if missing (with
    /// ARN [`iam::PLACEHOLDER_ROOT_ARN`]); the secret is sealed. Not bound by the limit of
    /// two keys per user that [`IamStore::create_access_key`] enforces.
    fn put_access_key(&self, key: &AccessKey) -> Result<(), StoreError>;
    /// The secret of an access key id, if the key exists and is `Active`.
    fn access_key_secret(&self, access_key_id: &str) -> Result<Option<String>, StoreError>;
    /// Every access key of the user `root` (secrets decrypted), oldest first.
    fn list_access_keys(&self) -> Result<Vec<AccessKey>, StoreError>;
}
