//! Results: one JSON file per scenario (machine, commit, parameters, figures) and the table
//! in bench/README.md, rebuilt from those files between two marker comments.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use crate::Cli;

/// One line of the README table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What was measured (e.g. `c=8`).
    pub case: String,
    /// Lambent's figure, formatted.
    pub lambent: String,
    /// The peers' figures and ratios, formatted (or why they could not run it).
    pub peers: String,
}

/// What a scenario produced.
pub struct ScenarioResult {
    /// Everything measured, for the JSON file.
    pub figures: Value,
    /// The table rows.
    pub rows: Vec<Row>,
    /// Parameters of the run.
    pub parameters: Value,
}

const START: &str = "<!-- results:start -->";
const END: &str = "<!-- results:end -->";

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "mem_total_kib": mem,
        "kernel": kernel.trim(),
    })
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Writes a scenario's JSON file.
pub fn write(path: &Path, name: &str, cli: &Cli, result: ScenarioResult) -> anyhow::Result<()> {
    let document = json!({
        "scenario": name,
        "machine": machine(),
        "commit": commit(),
        "date": time_now(),
        "smoke": cli.smoke,
        "runs": cli.runs,
        "sandbox": cli.sandbox,
        "parameters": result.parameters,
        "figures": result.figures,
        "rows": result.rows,
    });
    std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    for row in &result.rows {
        println!("{name:12} {:28} {:40} {}", row.case, row.lambent, row.peers);
    }
    Ok(())
}

fn time_now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Rebuilds the table between the markers of `readme` from every JSON file in `results`.
pub fn refresh_readme(results: &Path, readme: &Path) -> anyhow::Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(results)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut table = String::from(
        "| scenario | case | Lambent | peers (ratio = peer / Lambent) | commit |\n|---|---|---|---|---|\n",
    );
    for file in files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        let Some(rows) = doc.get("rows").and_then(Value::as_array) else {
            continue;
        };
        let scenario = doc["scenario"].as_str().unwrap_or_default();
        let commit = doc["commit"].as_str().unwrap_or_default();
        for row in rows {
            table.push_str(&format!(
                "| {scenario} | {} | {} | {} | {commit} |\n",
                row["case"].as_str().unwrap_or_default(),
                row["lambent"].as_str().unwrap_or_default(),
                row["peers"].as_str().unwrap_or_default(),
            ));
        }
    }
    let text = std::fs::read_to_string(readme)?;
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        anyhow::bail!("{} has no {START} … {END} markers", readme.display());
    };
    let updated = format!("{}{START}\n{table}{}", &text[..start], &text[end..]);
    std::fs::write(readme, updated)?;
    Ok(())
}
