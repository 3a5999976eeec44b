//! `retention-pruner`: deletes expired StackGraph backups safely (time delta, GFS, floor,
//! dry-run, orphan and stale-upload cleanup). All logic lives in
//! `sts_backup_core::retention`; this is flags, output and exit codes.
#![warn(clippy::too_many_lines)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use sts_backup_cli as cli;
use sts_backup_core::logging::LogFormat;
use sts_backup_core::retention::{self, RetentionArgs};
use sts_backup_core::signature::{self, Policy, TrustArgs};
use sts_backup_core::storage::{Storage, StorageArgs};
use sts_backup_core::Exit;

const AFTER_HELP: &str = "\
Output: one line per backup, `Purging backup \"<key>\"` or `Not purging backup \"<key>\"`,
then a summary; `-o json` prints the same as one JSON line. Logs go to stderr.

Exit codes:
  0  success (also with nothing to delete)
  1  runtime failure: storage unreachable, listing failed, or a key could not be deleted
     (the run goes on and reports every failed key)
  2  invalid input or usage, including a missing bucket or rejected credentials
     (nothing was changed)";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// Reference-style lines and a summary.
    #[default]
    #[value(alias = "table")]
    Text,
    /// One JSON document on one line.
    Json,
}

/// Deletes expired backups: keeps those younger than --retention or kept by a --keep-* rule,
/// never fewer than --min-keep and never the newest; deletes manifest first, then data, in
/// batches; aborts stale multipart uploads.
#[derive(Debug, Parser)]
#[command(name = "retention-pruner", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(flatten)]
    storage: StorageArgs,

    /// With trusted keys, unsigned backups do not count towards --min-keep.
    #[command(flatten)]
    trust: TrustArgs,

    #[command(flatten)]
    retention: RetentionArgs,

    /// Output format: text or json.
    #[arg(short = 'o', long = "output", env = "OUTPUT_FORMAT", value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    let cli: Cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli::run(cli.log_format, || run(&cli)) {
        // This job only ever ends with 0, 1 or 2.
        Exit::Refused | Exit::Integrity => Exit::Failure.into(),
        other => other.into(),
    }
}

async fn run(cli: &Cli) -> anyhow::Result<Exit> {
    // Validate every flag before touching storage: a bad value changes nothing (exit 2).
    let policy = cli.retention.policy()?;
    let config = cli.storage.config()?;
    signature::install(Policy::from_args(&cli.trust, None)?)?;
    let storage = Storage::open_config(config).await?;
    storage.check(false).await?;
    let report = retention::prune_with(&storage, &policy, chrono::Utc::now()).await?;
    let mut out = std::io::stdout().lock();
    match cli.output {
        OutputFormat::Text => report.print_text(&mut out)?,
        OutputFormat::Json => writeln!(out, "{}", report.to_json())?,
    }
    out.flush()?;
    Ok(if report.has_failures() { Exit::Failure } else { Exit::Ok })
}
