//! Content-addressed storage of function code: each zip is kept once under its SHA-256 and
//! unpacked once into a read-only tree that environments use as `/var/task`.
//!
//! Extraction refuses hostile archives: paths that leave the tree (absolute or `..`), symlinks
//! pointing out of it, and archives whose content expands beyond Lambda's unzipped limit. The
//! size is counted on the bytes actually written, not on what the archive declares.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use sha2::{Digest, Sha256};

use lambent_types::limits;

/// Why a code package was refused or could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// Not a zip, or a corrupt one.
    #[error(
        "Could not unzip uploaded file. Please check your file, then try to upload again. ({0})"
    )]
    InvalidZip(String),
    /// An entry would land outside the code directory.
    #[error("Could not unzip uploaded file: entry '{0}' points outside the deployment package")]
    UnsafePath(String),
    /// The unpacked content exceeds Lambda's limit.
    #[error("Unzipped size must be smaller than {max} bytes", max = limits::UNZIPPED_CODE_BYTES)]
    TooLarge,
    /// The zip itself is over the upload limit.
    #[error("Zipped size must be smaller than {max} bytes", max = limits::ZIPPED_CODE_BYTES)]
    ZipTooLarge,
    /// The filesystem failed.
    #[error("code storage failed: {0}")]
    Io(#[from] io::Error),
}

/// What the store knows about a stored zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCode {
    /// Hex SHA-256, the storage key.
    pub sha256_hex: String,
    /// Base64 SHA-256, Lambda's `CodeSha256`.
    pub sha256_base64: String,
    /// Zip size in bytes.
    pub size: u64,
}

/// Code zips and their unpacked trees under one directory.
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    /// Uses (creating if needed) `root` for zips and unpacked trees.
    pub fn open(root: &Path) -> Result<Self, CodeError> {
        fs::create_dir_all(root.join("zips"))?;
        fs::create_dir_all(root.join("trees"))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// Validates, stores and unpacks a zip; returns its identity. Idempotent per content.
    pub fn put_zip(&self, zip: &[u8]) -> Result<StoredCode, CodeError> {
        if zip.len() as u64 > limits::ZIPPED_CODE_BYTES {
            return Err(CodeError::ZipTooLarge);
        }
        let digest = Sha256::digest(zip);
        let code = StoredCode {
            sha256_hex: hex_encode(&digest),
            sha256_base64: base64::engine::general_purpose::STANDARD.encode(digest),
            size: zip.len() as u64,
        };
        let tree = self.task_root(&code.sha256_hex);
        if !tree.exists() {
            let staging = self.root.join("trees").join(format!(
                ".staging-{}-{}",
                code.sha256_hex,
                std::process::id()
            ));
            if staging.exists() {
                fs::remove_dir_all(&staging)?;
            }
            fs::create_dir_all(&staging)?;
            if let Err(e) = extract(zip, &staging) {
                let _ = fs::remove_dir_all(&staging);
                return Err(e);
            }
            if let Err(e) = fs::rename(&staging, &tree) {
                let _ = fs::remove_dir_all(&staging);
                if !tree.exists() {
                    return Err(e.into());
                }
            }
        }
        let zip_path = self.zip_path(&code.sha256_hex);
        if !zip_path.exists() {
            let partial = zip_path.with_extension("partial");
            fs::write(&partial, zip)?;
            fs::rename(&partial, &zip_path)?;
        }
        Ok(code)
    }

    /// The unpacked tree of a stored zip.
    pub fn task_root(&self, sha256_hex: &str) -> PathBuf {
        self.root.join("trees").join(sha256_hex)
    }

    /// Bytes of the regular files of a stored zip's unpacked tree (its unzipped size); 0 when
    /// the tree does not exist.
    pub fn tree_size(&self, sha256_hex: &str) -> Result<u64, CodeError> {
        let root = self.task_root(sha256_hex);
        if !root.exists() {
            return Ok(0);
        }
        let mut total = 0;
        let mut pending = vec![root];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    total += entry.metadata()?.len();
                }
            }
        }
        Ok(total)
    }

    /// The stored zip itself.
    pub fn zip_path(&self, sha256_hex: &str) -> PathBuf {
        self.root.join("zips").join(format!("{sha256_hex}.zip"))
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpacks `zip` into the empty directory `dest`, enforcing the safety rules.
fn extract(zip: &[u8], dest: &Path) -> Result<(), CodeError> {
    let mut archive = zip::ZipArchive::new(io::Cursor::new(zip))
        .map_err(|e| CodeError::InvalidZip(e.to_string()))?;
    let mut budget = limits::UNZIPPED_CODE_BYTES;
    let mut symlinks = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|e| CodeError::InvalidZip(e.to_string()))?;
        let raw_name = entry.name().map(|n| n.to_string()).unwrap_or_default();
        if raw_name.starts_with(['/', '\\']) {
            return Err(CodeError::UnsafePath(raw_name));
        }
        let relative = entry
            .enclosed_name()
            .filter(|p| p.components().all(|c| matches!(c, Component::Normal(_))))
            .ok_or_else(|| CodeError::UnsafePath(raw_name.clone()))?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        let path = dest.join(&relative);
        if entry.is_dir() {
            fs::create_dir_all(&path)?;
            continue;
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        if entry.is_symlink() {
            let mut target = String::new();
            entry
                .by_ref()
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| CodeError::InvalidZip(e.to_string()))?;
            if !link_stays_inside(&relative, Path::new(&target)) {
                return Err(CodeError::UnsafePath(format!("{raw_name} -> {target}")));
            }
            symlinks.push((target, path));
            continue;
        }
        let mode = entry.unix_mode().unwrap_or(0o644) & 0o777;
        let mut out = fs::File::create(&path)?;
        let written = io::copy(&mut entry.by_ref().take(budget + 1), &mut out)
            .map_err(|e| CodeError::InvalidZip(e.to_string()))?;
        if written > budget {
            return Err(CodeError::TooLarge);
        }
        budget -= written;
        out.flush()?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode | 0o444))?;
    }
    // Links are made last so no later entry can be written through one.
    for (target, path) in symlinks {
        symlink(target, path)?;
    }
    Ok(())
}

/// True when a symlink at `link` (relative to the tree root) with `target` resolves inside the tree.
fn link_stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: usize = link.components().count().saturating_sub(1);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn build_zip(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let options = SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(*mode);
            writer.start_file(*name, options).unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    fn symlink_zip(name: &str, target: &str) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        writer
            .add_symlink(name, target, SimpleFileOptions::default())
            .unwrap();
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn stores_and_unpacks_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path()).unwrap();
        let zip = build_zip(&[
            ("bootstrap", b"#!/bin/sh\n", 0o755),
            ("lib/data.txt", b"hello", 0o644),
        ]);
        let code = store.put_zip(&zip).unwrap();
        assert_eq!(code.size, zip.len() as u64);
        assert_eq!(code.sha256_hex.len(), 64);
        let root = store.task_root(&code.sha256_hex);
        let mode = fs::metadata(root.join("bootstrap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "exec bit kept");
        assert_eq!(fs::read(root.join("lib/data.txt")).unwrap(), b"hello");
        assert_eq!(fs::read(store.zip_path(&code.sha256_hex)).unwrap(), zip);
        assert_eq!(store.put_zip(&zip).unwrap(), code, "idempotent");
        assert_eq!(store.tree_size(&code.sha256_hex).unwrap(), 15);
        assert_eq!(store.tree_size("00").unwrap(), 0);
    }

    #[test]
    fn refuses_hostile_archives() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.put_zip(b"not a zip"),
            Err(CodeError::InvalidZip(_))
        ));
        let mut corrupt = build_zip(&[("a.txt", &[7u8; 2000], 0o644)]);
        let middle = corrupt.len() / 2;
        corrupt.truncate(middle);
        assert!(matches!(
            store.put_zip(&corrupt),
            Err(CodeError::InvalidZip(_))
        ));
        let mut absolute = build_zip(&[("Xabs/path", b"x", 0o644)]);
        for at in 0..absolute.len() - 4 {
            if &absolute[at..at + 4] == b"Xabs" {
                absolute[at] = b'/';
            }
        }
        let refused = store.put_zip(&absolute);
        assert!(
            matches!(refused, Err(CodeError::UnsafePath(_))),
            "{refused:?}"
        );
        for name in ["../evil", "a/../../evil"] {
            let zip = build_zip(&[(name, b"x", 0o644)]);
            assert!(
                matches!(store.put_zip(&zip), Err(CodeError::UnsafePath(_))),
                "{name}"
            );
        }
        for target in ["/etc/passwd", "../../outside", "a/../../x"] {
            assert!(
                matches!(
                    store.put_zip(&symlink_zip("link", target)),
                    Err(CodeError::UnsafePath(_))
                ),
                "{target}"
            );
        }
        store
            .put_zip(&symlink_zip("dir/link", "../inside"))
            .unwrap();
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("trees"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            .collect();
        assert!(leftovers.is_empty(), "staging cleaned up");
    }

    #[test]
    fn refuses_zip_bombs_by_written_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = CodeStore::open(dir.path()).unwrap();
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        writer.start_file("zeros", options).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..251 {
            writer.write_all(&chunk).unwrap();
        }
        let bomb = writer.finish().unwrap().into_inner();
        assert!(bomb.len() < 1 << 20);
        assert!(matches!(store.put_zip(&bomb), Err(CodeError::TooLarge)));
    }

    #[test]
    fn symlink_containment() {
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("../c")));
        assert!(!link_stays_inside(Path::new("a"), Path::new("/c")));
    }
}
