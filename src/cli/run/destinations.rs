//! Where `faultline run --report/--junit` write: checked before anything is created, and what
//! to say when writing still fails after the run.

use std::path::Path;

use nix::unistd::{AccessFlags, access};

use super::Usage;
use crate::report::Format;

/// Refuses a `--report`/`--junit` destination that cannot be written: a directory, or a file
/// in a directory that does not exist or that we may not write in. Nothing is created here: an
/// empty report left by a run refused later would pass for a real one.
pub(super) fn check_writable(flag: &str, path: &Path) -> Result<(), Usage> {
    let shown = path.display();
    if path.is_dir() {
        return Err(Usage(format!(
            "{flag} {shown} is a directory: give a file path, e.g. {}",
            path.join(if flag == "--junit" {
                "junit.xml"
            } else {
                "report.html"
            })
            .display()
        )));
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let dir = parent.display();
    if parent.exists() && !parent.is_dir() {
        return Err(Usage(format!(
            "{flag} {shown}: {dir} is not a directory: pick another path"
        )));
    }
    if !parent.exists() {
        return Err(Usage(format!(
            "{flag} {shown}: {dir} does not exist: create the directory (mkdir -p {dir}) or pick another path"
        )));
    }
    // access(2) answers for the user the write will be made as (root passes, except on a
    // read-only filesystem), without creating anything.
    let (target, flags) = if path.exists() {
        (path, AccessFlags::W_OK)
    } else {
        (parent, AccessFlags::W_OK | AccessFlags::X_OK)
    };
    access(target, flags).map_err(|errno| {
        Usage(format!(
            "{flag} {shown}: cannot write {} ({}): pick a path you may write",
            target.display(),
            errno.desc()
        ))
    })
}

/// The error for a report that could not be written after the run, with the commands that write
/// it again.
pub(super) fn cannot_write(
    path: &Path,
    format: Format,
    error: &std::io::Error,
    subjects: &[String],
) -> String {
    // Only --junit can name a file whose extension picks another format.
    let format_flag = if Format::from_path(path) == Some(format) {
        ""
    } else {
        " --format junit"
    };
    let commands: Vec<String> = subjects
        .iter()
        .map(|subject| {
            format!(
                "faultline report {subject}{format_flag} --output {}",
                path.display()
            )
        })
        .collect();
    format!(
        "cannot write {} ({error}); the verdict above and the exit code stand; write the report again with: {}",
        path.display(),
        commands.join("; ")
    )
}
