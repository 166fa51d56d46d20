//! Everything the CLI writes to stdout goes through here (`out!` and `outln!`, which
//! `cli/mod.rs` forbids `print!` and `println!` in favour of).
//!
//! `println!` panics when stdout is a pipe whose reader has gone (`faultline report x | head
//! -1`, `faultline status | true`): exit 101 with a panic message, and for `run --wait` the
//! verdict's exit code lost after the experiment ran. Here a reader that went away ends our
//! output quietly and the command goes on to its own exit code: the reader had what it wanted,
//! and a verdict still counts. Any other write error (a full disk behind `>`) also stops the
//! output, and [`finish`] reports it once when the command ends.
//!
//! Why not reset SIGPIPE to its default at startup, as many Rust CLIs do: the crate forbids
//! `unsafe` (which `signal(2)` needs); the same binary is the controller and the agent, where a
//! signal that kills the process on a closed socket is no option; and `run --wait` must outlive
//! its reader: it still has to wait for the verdict to exit with it, and to abort its
//! experiments on Ctrl-C, after `head -3` has gone.

use std::{
    fmt,
    io::{self, Write},
    process::ExitCode,
    sync::{
        OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

/// Set once a write failed: nothing more is written.
static STOPPED: AtomicBool = AtomicBool::new(false);
/// The first write error that was not a reader going away, for [`finish`].
static FAILURE: OnceLock<String> = OnceLock::new();

/// Like `print!`, through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::stdout::write(format_args!($($arg)*))
    };
}

/// Like `println!`, through [`write`].
macro_rules! outln {
    () => {
        $crate::cli::stdout::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

/// Writes to stdout unless an earlier write failed; a failure stops later writes.
pub(crate) fn write(args: fmt::Arguments<'_>) {
    if STOPPED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(error) = io::stdout().lock().write_fmt(args) {
        stop(&error);
    }
}

/// Flushes stdout (for a line without a newline, such as a progress bar).
pub(crate) fn flush() {
    if STOPPED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(error) = io::stdout().lock().flush() {
        stop(&error);
    }
}

fn stop(error: &io::Error) {
    STOPPED.store(true, Ordering::Relaxed);
    if error.kind() != io::ErrorKind::BrokenPipe {
        let _ = FAILURE.set(error.to_string());
    }
}

/// The exit code once the command returned `code`. A reader that went away changes nothing.
/// Another write error is printed; it turns a success into 3 (the output asked for is lost),
/// but a non-zero code stays: it says more (a verdict, a usage error) than the lost output.
pub(crate) fn finish(code: ExitCode) -> ExitCode {
    flush();
    match FAILURE.get() {
        None => code,
        Some(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            if code == ExitCode::SUCCESS {
                ExitCode::from(3)
            } else {
                code
            }
        }
    }
}
