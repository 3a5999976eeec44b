//! Exit codes: the contract between the jobs and whatever runs them (CronJobs, the restore
//! scripts, operators). They are documented in every binary's `--help` and in the README.

use std::process::ExitCode;

/// The documented exit codes of every sts-backup job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The job did what was asked.
    Ok = 0,
    /// A runtime failure: storage, the export/import command, the network.
    Failure = 1,
    /// Invalid input or usage; nothing was changed.
    Invalid = 2,
    /// Refused for safety, e.g. restoring into a non-empty target without `--force`.
    Refused = 3,
    /// Integrity failure: checksum mismatch, missing or unreadable manifest.
    Integrity = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The text appended to every binary's `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  runtime failure (storage, export/import command, network)
  2  invalid input or usage (nothing was changed)
  3  refused for safety (restore into a non-empty target without --force,
     or a backup of that name already exists)
  4  integrity failure (checksum mismatch, missing or unreadable manifest)";
