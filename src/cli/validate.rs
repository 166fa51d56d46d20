//! `faultline validate`: check manifests offline with the CRD schema, the CEL rules and the
//! semantic checks of `crate::validate`. This module only reads files and prints.
//!
//! Exit codes: 0 every document is valid; 1 at least one is not; 3 usage error (a path that
//! does not exist, a directory without manifests, a file that cannot be read or is over
//! `input::MAX_MANIFEST_BYTES`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::{input::read_manifest, stdout::outln};
use crate::validate::{FileReport, check_bytes};

/// How to print problems.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// `FILE:LINE: path: message`, one per line.
    #[default]
    Text,
    /// One JSON object with every problem and the counts.
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Files, directories (searched recursively for *.yaml and *.yml), or `-` for stdin.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
}

/// Something to check: a file or stdin.
enum Input {
    Stdin,
    File(PathBuf),
}

/// The exit code for usage errors.
const USAGE: u8 = 3;

impl ValidateArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let Self { paths, output } = self;
        let inputs = match collect_inputs(&paths) {
            Ok(inputs) => inputs,
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(ExitCode::from(USAGE));
            }
        };
        let mut reports: Vec<FileReport> = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let (name, bytes) = match read_input(input) {
                Ok(read) => read,
                Err(message) => {
                    eprintln!("error: {message}");
                    return Ok(ExitCode::from(USAGE));
                }
            };
            tracing::debug!(file = %name, bytes = bytes.len(), "validating");
            reports.push(check_bytes(&name, &bytes));
        }
        let documents: usize = reports.iter().map(|r| r.documents).sum();
        let invalid: usize = reports.iter().map(|r| r.invalid).sum();
        let skipped: usize = reports.iter().map(|r| r.skipped).sum();
        match output {
            OutputFormat::Text => {
                for problem in reports.iter().flat_map(|r| &r.problems) {
                    outln!("{problem}");
                }
            }
            OutputFormat::Json => {
                let problems: Vec<_> = reports.iter().flat_map(|r| &r.problems).collect();
                let body = serde_json::json!({
                    "documents": documents,
                    "invalid": invalid,
                    "skipped": skipped,
                    "problems": problems,
                });
                outln!("{}", serde_json::to_string_pretty(&body)?);
            }
        }
        eprintln!("{}", summary(documents, invalid, skipped));
        Ok(if invalid > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }
}

/// `3 documents checked, 1 invalid` (and how many were skipped as not faultline's, if any).
pub fn summary(documents: usize, invalid: usize, skipped: usize) -> String {
    let noun = if documents == 1 {
        "document"
    } else {
        "documents"
    };
    let mut line = format!("{documents} {noun} checked, {invalid} invalid");
    if skipped > 0 {
        line.push_str(&format!(", {skipped} skipped (not faultline resources)"));
    }
    line
}

fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<Input>, String> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            inputs.push(Input::Stdin);
        } else if path.is_dir() {
            let before = inputs.len();
            walk(path, &mut inputs, 0)?;
            if inputs.len() == before {
                return Err(format!(
                    "{} holds no *.yaml or *.yml files; pass a directory of manifests, files, or - for stdin",
                    path.display()
                ));
            }
        } else if path.exists() {
            inputs.push(Input::File(path.clone()));
        } else {
            return Err(format!(
                "{} does not exist; pass manifest files, directories of them, or - to read stdin",
                path.display()
            ));
        }
    }
    Ok(inputs)
}

/// Directories are searched in name order so output is stable. Symlinked directories are not
/// followed (no loops); 32 levels deep is plenty.
fn walk(dir: &Path, inputs: &mut Vec<Input>, depth: usize) -> Result<(), String> {
    if depth > 32 {
        return Ok(());
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            walk(&path, inputs, depth + 1)?;
        } else if path.is_file()
            && path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            inputs.push(Input::File(path));
        }
    }
    Ok(())
}

fn read_input(input: &Input) -> Result<(String, Vec<u8>), String> {
    let path = match input {
        Input::Stdin => Path::new("-"),
        Input::File(path) => path,
    };
    read_manifest(path).map_err(|e| e.to_string())
}
