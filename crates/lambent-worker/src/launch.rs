//! How an environment's process is started for each runtime: the program, its arguments and
//! the environment variables Lambda sets.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use lambent_types::FunctionConfig;
use lambent_types::runtime::{RuntimeFamily, language_version, runtime_family};

/// Where a sandboxed environment sees its code.
const TASK_ROOT: &str = "/var/task";
/// Where a sandboxed environment sees Lambent's managed bootstraps.
const RUNTIME_ROOT: &str = "/var/runtime";

/// Lambent's Python bootstrap, embedded in the binary.
const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
/// Lambent's Node bootstrap, embedded in the binary.
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/node/bootstrap.mjs");

/// Why an environment's entry point could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// No `bootstrap` for a `provided` runtime.
    #[error("Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]")]
    NoBootstrap,
    /// The runtime identifier is not one Lambent runs.
    #[error("{0}")]
    UnknownRuntime(String),
    /// The interpreter for a managed runtime is not installed on this host.
    #[error("the {runtime} runtime needs {program}, which was not found on this host")]
    InterpreterMissing {
        /// The function's runtime.
        runtime: String,
        /// The missing interpreter.
        program: String,
    },
}

/// The interpreters on this host that run the managed runtimes, and where the bootstraps live.
#[derive(Debug)]
pub struct RuntimeHosts {
    /// Directory holding `python/bootstrap.py` and `node/bootstrap.mjs` (`LAMBDA_RUNTIME_DIR`).
    pub runtime_dir: PathBuf,
    /// The real CPython binary (not a shim) and its `X.Y` version.
    pub python: Option<(PathBuf, String)>,
    /// The Node.js binary and its major version.
    pub node: Option<(PathBuf, String)>,
    /// Installation directories of those interpreters outside `/usr`, which sandboxed
    /// environments see read-only at the same place.
    pub interpreter_roots: Vec<PathBuf>,
    warned: Mutex<HashSet<String>>,
}

impl RuntimeHosts {
    /// Writes the embedded bootstraps under `runtime_dir` and finds the host's interpreters
    /// (`LAMBENT_PYTHON` / `LAMBENT_NODE` override the search of `PATH`).
    pub fn prepare(runtime_dir: &Path) -> std::io::Result<Self> {
        for (dir, file, text) in [
            ("python", "bootstrap.py", PYTHON_BOOTSTRAP),
            ("node", "bootstrap.mjs", NODE_BOOTSTRAP),
        ] {
            let dir = runtime_dir.join(dir);
            std::fs::create_dir_all(&dir)?;
            let path = dir.join(file);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
                std::fs::write(&path, text)?;
            }
        }
        let python_cmd = std::env::var("LAMBENT_PYTHON").unwrap_or_else(|_| "python3".into());
        let node_cmd = std::env::var("LAMBENT_NODE").unwrap_or_else(|_| "node".into());
        let mut prefixes = Vec::new();
        let python = probe(
            &python_cmd,
            &[
                "-c",
                "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2]); print(sys.prefix); print(sys.base_prefix)",
            ],
        )
        .and_then(|out| {
            let mut lines = out.lines();
            let found = (PathBuf::from(lines.next()?), lines.next()?.to_string());
            prefixes.extend(lines.map(PathBuf::from));
            Some(found)
        });
        let node = probe(
            &node_cmd,
            &[
                "-e",
                "console.log(process.execPath); console.log(process.versions.node.split('.')[0])",
            ],
        )
        .and_then(|out| {
            let mut lines = out.lines();
            let found = (PathBuf::from(lines.next()?), lines.next()?.to_string());
            prefixes.extend(
                found
                    .0
                    .parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf),
            );
            Some(found)
        });
        prefixes.sort();
        prefixes.dedup();
        prefixes.retain(|p| {
            p.is_absolute() && p.is_dir() && !p.starts_with("/usr") && p != Path::new("/")
        });
        Ok(Self {
            runtime_dir: runtime_dir.to_path_buf(),
            python,
            node,
            interpreter_roots: prefixes,
            warned: Mutex::new(HashSet::new()),
        })
    }

    /// Logs once per runtime when the host's interpreter version differs from the one named.
    fn warn_on_mismatch(&self, runtime: &str, host_version: &str) {
        let Some(wanted) = language_version(runtime) else {
            return;
        };
        if wanted == host_version {
            return;
        }
        if let Ok(mut warned) = self.warned.lock()
            && warned.insert(runtime.to_string())
        {
            tracing::warn!(
                runtime,
                host_version,
                "runtime {runtime} runs on the host's version {host_version}"
            );
        }
    }
}

fn probe(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Everything needed to start one environment's process.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Working directory: the function's code.
    pub cwd: PathBuf,
    /// The complete environment (nothing is inherited from the server).
    pub env: Vec<(String, String)>,
    /// External extensions: the executable files in `/opt/extensions/`, by name.
    pub extensions: Vec<PathBuf>,
}

/// The executable files directly in `<opt>/extensions/`, sorted by name.
pub fn external_extensions(opt: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(opt.join("extensions")) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            std::fs::metadata(path)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
        .collect();
    found.sort();
    found
}

/// Builds (once) the merged `/opt` of an ordered list of unpacked layer trees under `opt_root`
/// and returns its path, `<opt_root>/<sha256 of the ordered tree paths>`.
///
/// Layers are merged in order, later ones overriding earlier files and symlinks, directories
/// merged; files are hard-linked where possible, else copied. The tree is assembled in a
/// staging directory and renamed into place, so concurrent builders and crashes never leave a
/// partial tree under the final name.
pub fn build_opt(opt_root: &Path, layer_roots: &[PathBuf]) -> std::io::Result<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for root in layer_roots {
        hasher.update(root.as_os_str().as_encoded_bytes());
        hasher.update([0u8]);
    }
    let key: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dest = opt_root.join(&key);
    if dest.is_dir() {
        return Ok(dest);
    }
    std::fs::create_dir_all(opt_root)?;
    let staging = opt_root.join(format!(".staging-{key}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&staging)?;
    let built = layer_roots.iter().try_for_each(|root| {
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("layer tree {} is missing", root.display()),
            ));
        }
        merge_tree(root, &staging)
    });
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&staging, &dest) {
        let _ = std::fs::remove_dir_all(&staging);
        if !dest.is_dir() {
            return Err(e);
        }
    }
    Ok(dest)
}

/// Copies `src` over `dst`: directories merge, anything else replaces what `dst` has there.
fn merge_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let existing = std::fs::symlink_metadata(&to).ok();
        if kind.is_dir() {
            match existing {
                Some(meta) if meta.is_dir() => {}
                Some(_) => {
                    std::fs::remove_file(&to)?;
                    std::fs::create_dir(&to)?;
                }
                None => std::fs::create_dir(&to)?,
            }
            merge_tree(&from, &to)?;
            continue;
        }
        match existing {
            Some(meta) if meta.is_dir() => std::fs::remove_dir_all(&to)?,
            Some(_) => std::fs::remove_file(&to)?,
            None => {}
        }
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Builds the launch plan for `config` with code unpacked at `task_root` and the merged layers
/// (see [`build_opt`]) at `opt`, which stands in for `/opt` until environments get their own
/// mount namespace; the literal `/opt/...` paths stay in the search paths after it.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    hosts: &RuntimeHosts,
    config: &FunctionConfig,
    task_root: &Path,
    opt: Option<&Path>,
    isolated: bool,
    region: &str,
    log_stream: &str,
    runtime_api: &str,
) -> Result<LaunchPlan, LaunchError> {
    let family =
        runtime_family(&config.runtime).map_err(|e| LaunchError::UnknownRuntime(e.to_string()))?;
    // In a sandbox the code, layers and bootstraps are at Lambda's paths; without one, the
    // host's directories stand in for them.
    let task_view = if isolated {
        PathBuf::from(TASK_ROOT)
    } else {
        task_root.to_path_buf()
    };
    let runtime_view = if isolated {
        PathBuf::from(RUNTIME_ROOT)
    } else {
        hosts.runtime_dir.clone()
    };
    let opt_view = opt.map(|o| {
        if isolated {
            PathBuf::from("/opt")
        } else {
            o.to_path_buf()
        }
    });
    let task = task_view.to_string_lossy().into_owned();
    let runtime_dir = runtime_view.to_string_lossy().into_owned();
    // Each search path gets the layer directory first, then the literal AWS path.
    let opt_paths = |suffixes: &[String]| -> String {
        let mut parts = Vec::new();
        if let Some(opt) = opt.filter(|_| !isolated) {
            parts.extend(suffixes.iter().map(|s| format!("{}/{s}", opt.display())));
        }
        parts.extend(suffixes.iter().map(|s| format!("/opt/{s}")));
        parts.join(":")
    };
    let mut env: Vec<(String, String)> = vec![
        ("AWS_LAMBDA_RUNTIME_API".into(), runtime_api.into()),
        ("_HANDLER".into(), config.handler.clone()),
        ("LAMBDA_TASK_ROOT".into(), task.clone()),
        ("LAMBDA_RUNTIME_DIR".into(), runtime_dir.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), config.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), config.version.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            config.memory_size.to_string(),
        ),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME".into(),
            format!("/aws/lambda/{}", config.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME".into(), log_stream.into()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "on-demand".into()),
        ("AWS_REGION".into(), region.into()),
        ("AWS_DEFAULT_REGION".into(), region.into()),
        ("AWS_XRAY_CONTEXT_MISSING".into(), "LOG_ERROR".into()),
        ("TZ".into(), ":UTC".into()),
        ("LANG".into(), "en_US.UTF-8".into()),
        (
            "PATH".into(),
            format!(
                "/usr/local/bin:/usr/bin/:/bin:{}",
                opt_paths(&["bin".into()])
            ),
        ),
        (
            "LD_LIBRARY_PATH".into(),
            format!(
                "/lib64:/usr/lib64:{runtime_dir}:{runtime_dir}/lib:{task}:{task}/lib:{}",
                opt_paths(&["lib".into()])
            ),
        ),
    ];
    let (program, args) = match family {
        RuntimeFamily::Provided => {
            let bootstrap = if task_root.join("bootstrap").exists() {
                task_view.join("bootstrap")
            } else if let Some(opt) = opt.filter(|o| o.join("bootstrap").exists()) {
                opt_view.as_deref().unwrap_or(opt).join("bootstrap")
            } else {
                return Err(LaunchError::NoBootstrap);
            };
            (bootstrap, Vec::new())
        }
        RuntimeFamily::Python => {
            // AWS adds the site-packages of the runtime's Python version; the host's version
            // (which actually runs the code) follows when it differs.
            let mut layer_dirs = vec!["python".to_string()];
            let named = language_version(&config.runtime).unwrap_or("3");
            layer_dirs.push(format!("python/lib/python{named}/site-packages"));
            if let Some((_, host)) = &hosts.python
                && host != named
            {
                layer_dirs.push(format!("python/lib/python{host}/site-packages"));
            }
            env.push((
                "PYTHONPATH".into(),
                format!("{task}:{}", opt_paths(&layer_dirs)),
            ));
            managed(
                hosts,
                config,
                &hosts.python,
                "python3",
                "python/bootstrap.py",
                &runtime_view,
                &mut env,
            )?
        }
        RuntimeFamily::Node => {
            env.push((
                "NODE_PATH".into(),
                format!(
                    "{}:{runtime_dir}/node_modules",
                    opt_paths(&[
                        format!(
                            "nodejs/node{}/node_modules",
                            hosts.node.as_ref().map_or("", |(_, v)| v.as_str())
                        ),
                        "nodejs/node_modules".into(),
                    ])
                ),
            ));
            managed(
                hosts,
                config,
                &hosts.node,
                "node",
                "node/bootstrap.mjs",
                &runtime_view,
                &mut env,
            )?
        }
    };
    env.extend(
        config
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let extensions = opt
        .map(external_extensions)
        .unwrap_or_default()
        .into_iter()
        .map(|path| match (&opt_view, opt, path.file_name()) {
            (Some(view), Some(host), Some(name)) if view != host => {
                view.join("extensions").join(name)
            }
            _ => path,
        })
        .collect();
    Ok(LaunchPlan {
        program,
        args,
        cwd: task_view,
        env,
        extensions,
    })
}

/// Program and arguments of a managed runtime: the host interpreter running Lambent's bootstrap.
fn managed(
    hosts: &RuntimeHosts,
    config: &FunctionConfig,
    interpreter: &Option<(PathBuf, String)>,
    program: &str,
    bootstrap: &str,
    runtime_view: &Path,
    env: &mut Vec<(String, String)>,
) -> Result<(PathBuf, Vec<OsString>), LaunchError> {
    let (path, version) = interpreter
        .as_ref()
        .ok_or_else(|| LaunchError::InterpreterMissing {
            runtime: config.runtime.clone(),
            program: program.into(),
        })?;
    hosts.warn_on_mismatch(&config.runtime, version);
    env.push((
        "AWS_EXECUTION_ENV".into(),
        format!("AWS_Lambda_{}", config.runtime),
    ));
    Ok((path.clone(), vec![runtime_view.join(bootstrap).into()]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn external_extensions_are_the_executables_in_opt_extensions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(external_extensions(dir.path()).is_empty());
        let ext = dir.path().join("extensions");
        std::fs::create_dir(&ext).unwrap();
        std::fs::create_dir(ext.join("subdir")).unwrap();
        for (name, mode) in [("b-ext", 0o755), ("a-ext", 0o700), ("notes.txt", 0o644)] {
            std::fs::write(ext.join(name), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(ext.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        assert_eq!(
            external_extensions(dir.path()),
            vec![ext.join("a-ext"), ext.join("b-ext")]
        );
    }

    fn config(runtime: &str) -> FunctionConfig {
        FunctionConfig {
            memory_size: 256,
            environment: BTreeMap::from([("MY_VAR".into(), "v".into())]),
            ..FunctionConfig::with_defaults("fn1", runtime, "app.handler", "r")
        }
    }

    fn hosts(dir: &Path) -> RuntimeHosts {
        RuntimeHosts {
            runtime_dir: dir.to_path_buf(),
            python: Some(("/usr/bin/python3".into(), "3.11".into())),
            node: None,
            interpreter_roots: Vec::new(),
            warned: Mutex::new(HashSet::new()),
        }
    }

    #[test]
    fn python_plan_sets_lambda_environment() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(
            &hosts(dir.path()),
            &config("python3.12"),
            dir.path(),
            None,
            false,
            "eu-west-1",
            "s",
            "127.0.0.1:1",
        )
        .unwrap();
        let get = |k: &str| {
            plan.env
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(plan.program, PathBuf::from("/usr/bin/python3"));
        assert_eq!(get("AWS_LAMBDA_RUNTIME_API"), Some("127.0.0.1:1"));
        assert_eq!(get("_HANDLER"), Some("app.handler"));
        assert_eq!(get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"), Some("256"));
        assert_eq!(get("AWS_REGION"), Some("eu-west-1"));
        assert_eq!(get("AWS_EXECUTION_ENV"), Some("AWS_Lambda_python3.12"));
        assert_eq!(get("MY_VAR"), Some("v"));
        assert_eq!(get("AWS_LAMBDA_LOG_GROUP_NAME"), Some("/aws/lambda/fn1"));
    }

    #[test]
    fn provided_needs_a_bootstrap_and_node_needs_node() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = hosts(dir.path());
        assert!(matches!(
            plan(
                &hosts,
                &config("provided.al2023"),
                dir.path(),
                None,
                false,
                "r",
                "s",
                "a"
            ),
            Err(LaunchError::NoBootstrap)
        ));
        std::fs::write(dir.path().join("bootstrap"), "#!/bin/sh\n").unwrap();
        let provided = plan(
            &hosts,
            &config("provided.al2023"),
            dir.path(),
            None,
            false,
            "r",
            "s",
            "a",
        )
        .unwrap();
        assert_eq!(provided.program, dir.path().join("bootstrap"));
        assert!(provided.env.iter().all(|(k, _)| k != "AWS_EXECUTION_ENV"));
        assert!(matches!(
            plan(
                &hosts,
                &config("nodejs20.x"),
                dir.path(),
                None,
                false,
                "r",
                "s",
                "a"
            ),
            Err(LaunchError::InterpreterMissing { .. })
        ));
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn layers_merge_in_order_with_symlinks_and_idempotence() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write(&a.join("python/shared.py"), "A");
        write(&a.join("python/only_a.py"), "a");
        write(&a.join("bin/tool"), "a-tool");
        write(&a.join("data"), "a-file-becomes-dir");
        std::os::unix::fs::symlink("only_a.py", a.join("python/link.py")).unwrap();
        write(&b.join("python/shared.py"), "B");
        write(&b.join("python/only_b.py"), "b");
        write(&b.join("data/inner"), "dir now");
        std::os::unix::fs::symlink("only_b.py", b.join("python/link.py")).unwrap();
        std::os::unix::fs::symlink("shared.py", b.join("python/only_a.py")).unwrap();
        let root = dir.path().join("opt");
        let opt = build_opt(&root, &[a.clone(), b.clone()]).unwrap();
        let read = |p: &str| std::fs::read_to_string(opt.join(p)).unwrap();
        assert_eq!(read("python/shared.py"), "B", "later layer wins");
        assert_eq!(read("python/only_b.py"), "b");
        assert_eq!(read("bin/tool"), "a-tool", "directories merge");
        assert_eq!(read("data/inner"), "dir now");
        assert_eq!(
            std::fs::read_link(opt.join("python/link.py")).unwrap(),
            PathBuf::from("only_b.py"),
            "symlinks are kept as links and overridden"
        );
        assert_eq!(
            std::fs::read_link(opt.join("python/only_a.py")).unwrap(),
            PathBuf::from("shared.py"),
            "a link replaces a file"
        );
        assert_eq!(read("python/only_a.py"), "B");
        // The same list gives the same tree without rebuilding; another order another tree.
        std::fs::write(opt.join("marker"), "kept").unwrap();
        let again = build_opt(&root, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(again, opt);
        assert!(again.join("marker").exists());
        let reversed = build_opt(&root, &[b.clone(), a.clone()]).unwrap();
        assert_ne!(reversed, opt);
        assert_eq!(
            std::fs::read_to_string(reversed.join("python/shared.py")).unwrap(),
            "A"
        );
        assert_eq!(
            std::fs::read_to_string(reversed.join("data")).unwrap(),
            "a-file-becomes-dir",
            "a file replaces a directory"
        );
        let staging: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            .collect();
        assert!(staging.is_empty());
        assert!(build_opt(&root, &[dir.path().join("missing")]).is_err());
    }

    #[test]
    fn layers_join_search_paths_and_provide_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let task = dir.path().join("task");
        let opt = dir.path().join("opt");
        std::fs::create_dir_all(&task).unwrap();
        write(&opt.join("bootstrap"), "#!/bin/sh\n");
        let hosts = hosts(dir.path());
        let provided = plan(
            &hosts,
            &config("provided.al2023"),
            &task,
            Some(&opt),
            false,
            "r",
            "s",
            "a",
        )
        .unwrap();
        assert_eq!(provided.program, opt.join("bootstrap"));
        write(&task.join("bootstrap"), "#!/bin/sh\n");
        let provided = plan(
            &hosts,
            &config("provided.al2023"),
            &task,
            Some(&opt),
            false,
            "r",
            "s",
            "a",
        )
        .unwrap();
        assert_eq!(provided.program, task.join("bootstrap"), "task root first");
        let python = plan(
            &hosts,
            &config("python3.12"),
            &task,
            Some(&opt),
            false,
            "r",
            "s",
            "a",
        )
        .unwrap();
        let get = |k: &str| {
            python
                .env
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let o = opt.display();
        assert_eq!(
            get("PYTHONPATH"),
            format!(
                "{}:{o}/python:{o}/python/lib/python3.12/site-packages:{o}/python/lib/python3.11/site-packages:\
                 /opt/python:/opt/python/lib/python3.12/site-packages:/opt/python/lib/python3.11/site-packages",
                task.display()
            )
        );
        assert!(get("PATH").ends_with(&format!(":{o}/bin:/opt/bin")));
        assert!(get("LD_LIBRARY_PATH").ends_with(&format!(":{o}/lib:/opt/lib")));
    }
}
