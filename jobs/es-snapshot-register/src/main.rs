//! es-snapshot-register: registers the Elasticsearch S3 snapshot repository and SLM policy,
//! and lists/restores snapshots from inside the one-shot restore pods. All logic lives in
//! the `sts-backup-elasticsearch` library; this is the command line: it parses the flags,
//! renders the library's reports as text or JSON and maps errors to exit codes.
#![warn(clippy::too_many_lines)]

mod orchestrated;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use sts_backup_cli as cli;
use sts_backup_cluster::orchestrate::OrchestrateArgs;
use sts_backup_core::exit::{Exit, EXIT_CODES_HELP};
use sts_backup_core::logging::{self, LogFormat};
use sts_backup_core::storage::{Addressing, StorageArgs};
use sts_backup_elasticsearch::snapshots::format_table;
use sts_backup_elasticsearch::validate::validate_name;
use sts_backup_elasticsearch::{
    list_snapshots, register, restore, ConnectionArgs, CredentialsMode, Error, EsClient, RegisterOptions,
    RestoreOptions,
};

const AFTER_HELP: &str = "\
For es-snapshot-register, exit 1 also covers Elasticsearch errors and failed shards of a
restore; 3 also covers registering a repository location that another cluster writes to.

Elasticsearch authentication (environment only for secret values):
  ES_USERNAME + ES_PASSWORD or ES_PASSWORD_FILE   basic auth
  ES_API_KEY or ES_API_KEY_FILE                   API key (encoded, or id:key)
  ES_CA_BUNDLE                                    extra CA certificates (PEM)
Rejected credentials (HTTP 401) exit with 2; missing privileges (HTTP 403) with 1.
A missing bucket exits with 2 (nothing is changed).";

#[derive(Debug, Parser)]
#[command(
    name = "es-snapshot-register",
    version = env!("CARGO_PKG_VERSION"),
    about = "Elasticsearch snapshot repository + SLM policy registration, and snapshot list/restore"
)]
struct Cli {
    #[command(flatten)]
    es: EsArgs,

    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct EsArgs {
    #[command(flatten)]
    connection: ConnectionArgs,

    /// Snapshot repository name.
    #[arg(
        long,
        env = "BACKUP_ELASTICSEARCH_SNAPSHOT_REPOSITORY_NAME",
        default_value = "sts-backup",
        global = true
    )]
    repository: String,

    /// How long to wait for Elasticsearch (and, for register, the bucket) to answer, with
    /// retries and backoff.
    #[arg(long, env = "ES_WAIT_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration, global = true)]
    wait_timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register (or update) the S3 snapshot repository and the SLM policy; idempotent.
    ///
    /// Two clusters writing one repository corrupt it. A writable registration therefore
    /// records this cluster's UUID in `sts-backup-owner.json` at the repository root and
    /// refuses (exit 3) a location that another cluster owns, or that already holds snapshots
    /// this cluster did not register, and never turns a read-only registration writable.
    /// Use --readonly to attach another cluster's repository for restores, or --take-over
    /// once the other cluster no longer writes there (e.g. after a disaster recovery).
    Register(Box<RegisterArgs>),
    /// List the snapshots in the repository (newest last).
    List(ListArgs),
    /// Restore a snapshot, after every check has passed (never the internal indices; never
    /// over existing indices without --force, which closes rather than deletes where it can).
    Restore(Box<RestoreArgs>),
}

#[derive(Debug, Args)]
struct RegisterArgs {
    /// Bucket of the repository.
    #[arg(
        long,
        env = "BACKUP_ELASTICSEARCH_BUCKET_NAME",
        default_value = "sts-elasticsearch-backup"
    )]
    bucket: String,

    /// S3 endpoint as Elasticsearch and this job reach it, e.g. http://sts-backup-minio:9000.
    #[arg(long, env = "S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,

    /// Path inside the bucket (repository `base_path`).
    #[arg(long, env = "BACKUP_ELASTICSEARCH_S3_PREFIX", value_name = "PATH")]
    base_path: Option<String>,

    /// Where Elasticsearch gets the S3 keys: `keystore` (s3.client.<name>.* in the ES keystore,
    /// the only way on ES 8) or `inline` (in the repository settings; ES 7 with
    /// -Des.allow_insecure_settings=true).
    #[arg(long, env = "ES_S3_CREDENTIALS", value_enum, default_value_t = CredentialsMode::Keystore)]
    credentials: CredentialsMode,

    /// S3 client name in the ES keystore (keystore mode).
    #[arg(long, env = "ES_S3_CLIENT", default_value = "default")]
    s3_client: String,

    /// S3 region (SigV4 needs one even for MinIO).
    #[arg(long, env = "S3_REGION", default_value = "us-east-1")]
    region: String,

    /// S3 addressing; `path` sets path_style_access (needed for MinIO).
    #[arg(long, env = "S3_ADDRESSING", value_enum, default_value_t = Addressing::Path)]
    s3_addressing: Addressing,

    /// Directory with files `accesskey`, `secretkey` (bucket check; inline keys).
    #[arg(long, env = "S3_CREDENTIALS_DIR", value_name = "DIR")]
    credentials_dir: Option<PathBuf>,

    /// PEM bundle of extra CA certificates for the S3 endpoint (bucket check).
    #[arg(long, env = "S3_CA_BUNDLE", value_name = "FILE")]
    ca_bundle: Option<PathBuf>,

    /// Server-side encryption: none or AES256 (repository server_side_encryption). SSE-KMS is refused.
    #[arg(long, env = "S3_SSE", default_value = "none", value_name = "MODE")]
    sse: String,

    /// SLM policy id.
    #[arg(
        long,
        env = "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_POLICY_NAME",
        default_value = "auto-sts-backup"
    )]
    policy: String,

    /// SLM schedule: Quartz cron WITH a seconds field and '?' in one day field.
    #[arg(long, env = "BACKUP_ELASTICSEARCH_SCHEDULED_SCHEDULE", default_value = "0 0 3 * * ?")]
    schedule: String,

    /// Snapshot name (Elasticsearch date math; SLM appends a unique suffix).
    #[arg(
        long,
        env = "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_NAME_TEMPLATE",
        default_value = "<sts-backup-{now{yyyyMMdd-HHmm}}>"
    )]
    snapshot_name: String,

    /// Index pattern the policy snapshots (never `*`).
    #[arg(long, env = "BACKUP_ELASTICSEARCH_SCHEDULED_INDICES", default_value = "sts*")]
    indices: String,

    /// Retention: delete snapshots older than this (ES time value).
    #[arg(
        long,
        env = "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_EXPIRE_AFTER",
        default_value = "30d"
    )]
    expire_after: String,

    /// Retention: always keep at least this many snapshots (>= 1).
    #[arg(
        long,
        env = "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MIN_COUNT",
        default_value_t = 5
    )]
    min_count: u32,

    /// Retention: keep at most this many snapshots.
    #[arg(
        long,
        env = "BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MAX_COUNT",
        default_value_t = 30
    )]
    max_count: u32,

    /// Register the repository only (restore-only setups).
    #[arg(long, env = "ES_NO_POLICY")]
    no_policy: bool,

    /// Run the policy once now and wait for the snapshot.
    #[arg(long, env = "ES_EXECUTE_NOW")]
    execute_now: bool,

    /// How long --execute-now waits for the snapshot.
    #[arg(long, env = "ES_SNAPSHOT_TIMEOUT", default_value = "2h", value_parser = humantime::parse_duration)]
    snapshot_timeout: Duration,

    /// Create the bucket when it is missing (the chart sets this when scheduled snapshots are on).
    #[arg(long, env = "ES_CREATE_BUCKET")]
    create_bucket: bool,

    /// Attach the repository read-only (another cluster's snapshots, for cross-cluster restore).
    #[arg(long, env = "ES_READONLY")]
    readonly: bool,

    /// Make this cluster the writer of a location another cluster wrote to (only once that
    /// cluster no longer writes there).
    #[arg(long, env = "ES_TAKE_OVER")]
    take_over: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Output: a table (with size and whether each snapshot can be restored), or one line of
    /// JSON (an array).
    #[arg(short = 'o', long = "output", env = "OUTPUT_FORMAT", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Args)]
struct RestoreArgs {
    /// Snapshot to restore (see `list`); or --latest.
    #[arg(env = "SNAPSHOT_NAME")]
    snapshot: Option<String>,

    /// Restore the newest SUCCESS snapshot of the repository.
    #[arg(long, env = "RESTORE_LATEST")]
    latest: bool,

    /// Indices to restore (comma-separated patterns; empty = the configured pattern).
    #[arg(long, env = "INDICES_TO_RESTORE")]
    indices: Option<String>,

    /// The configured pattern, used when --indices is empty.
    #[arg(long, env = "BACKUP_ELASTICSEARCH_SCHEDULED_INDICES", default_value = "sts*")]
    default_indices: String,

    /// Overwrite what the restore conflicts with: close open indices, roll over data streams
    /// and delete their conflicting backing indices (and indices whose shard count differs).
    #[arg(long, env = "RESTORE_FORCE")]
    force: bool,

    /// Restore a PARTIAL snapshot: only its indices whose shards all succeeded (the others
    /// are left out and listed).
    #[arg(long, env = "RESTORE_ALLOW_PARTIAL")]
    allow_partial: bool,

    /// Restore beside the live indices under new names, `{}` being the original name (e.g.
    /// restored-{}); never overwrites, needs no --force.
    #[arg(long, env = "RESTORE_RENAME_TO", value_name = "PATTERN")]
    rename_to: Option<String>,

    /// Fail (exit 1) when the restore makes no progress for this long; it keeps running in
    /// Elasticsearch.
    #[arg(long, env = "RESTORE_NO_PROGRESS_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    no_progress_timeout: Duration,

    /// How often to poll the running restore.
    #[arg(long, env = "RESTORE_POLL_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    poll_interval: Duration,

    /// How often to log a progress line while the restore runs (at most 10s).
    #[arg(long, env = "STS_PROGRESS_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    progress_interval: Duration,

    /// Output of the final report: text lines, or one line of JSON.
    #[arg(short = 'o', long = "output", env = "OUTPUT_FORMAT", value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,

    #[command(flatten)]
    orchestrate: OrchestrateArgs,
}

fn client(es: &EsArgs) -> Result<EsClient, Error> {
    es.connection.client()
}

/// Writes report lines to stdout.
fn print_lines(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
}

fn register_options(es: &EsArgs, args: RegisterArgs) -> RegisterOptions {
    RegisterOptions {
        repository: es.repository.clone(),
        bucket: args.bucket,
        base_path: args.base_path,
        credentials: args.credentials,
        s3_client: args.s3_client,
        policy: args.policy,
        schedule: args.schedule,
        snapshot_name: args.snapshot_name,
        indices: args.indices,
        expire_after: args.expire_after,
        min_count: args.min_count,
        max_count: args.max_count,
        no_policy: args.no_policy,
        execute_now: args.execute_now,
        create_bucket: args.create_bucket,
        readonly: args.readonly,
        take_over: args.take_over,
        wait_timeout: es.wait_timeout,
        snapshot_timeout: args.snapshot_timeout,
        s3: StorageArgs {
            s3_endpoint: args.s3_endpoint,
            region: args.region,
            s3_addressing: args.s3_addressing,
            credentials_dir: args.credentials_dir,
            ca_bundle: args.ca_bundle,
            sse: args.sse,
            ..StorageArgs::default()
        },
    }
}

async fn run_register(es: &EsArgs, args: RegisterArgs) -> Result<(), Error> {
    let opts = register_options(es, args);
    // Validate before connecting anywhere: invalid input sends no request.
    opts.validate()?;
    let client = client(es)?;
    let report = register(&client, &opts).await?;
    print_lines(&report.steps);
    let word = |changed: bool| if changed { "written" } else { "unchanged" };
    tracing::info!(
        "register done (repository {}, policy {})",
        word(report.repository_changed),
        word(report.policy_changed)
    );
    Ok(())
}

async fn run_list(es: &EsArgs, args: ListArgs) -> Result<(), Error> {
    let client = client(es)?;
    client.wait_ready(es.wait_timeout).await?;
    let rows = list_snapshots(&client, &es.repository).await?;
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string(&rows).map_err(|e| Error::failed(format!("encoding the list: {e}")))?;
            print_lines(&[json]);
        }
        OutputFormat::Table => {
            print_lines(&[format_table(&rows).trim_end().to_string()]);
            tracing::info!("{} snapshot(s) in repository {:?}", rows.len(), es.repository);
        }
    }
    Ok(())
}

fn restore_options(es: &EsArgs, args: &RestoreArgs) -> Result<RestoreOptions, Error> {
    let indices = args
        .indices
        .clone()
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_else(|| args.default_indices.clone());
    for (flag, d) in [
        ("--no-progress-timeout", args.no_progress_timeout),
        ("--poll-interval", args.poll_interval),
        ("--progress-interval", args.progress_interval),
    ] {
        if d.is_zero() {
            return Err(Error::invalid(format!("{flag}: must be more than 0")));
        }
    }
    if args.progress_interval > Duration::from_secs(10) {
        return Err(Error::invalid("--progress-interval: at most 10s"));
    }
    let opts = RestoreOptions {
        repository: es.repository.clone(),
        snapshot: args.snapshot.clone().filter(|s| !s.is_empty()),
        latest: args.latest,
        indices,
        force: args.force,
        allow_partial: args.allow_partial,
        rename_to: args.rename_to.clone().filter(|s| !s.is_empty()),
        poll_interval: args.poll_interval,
        progress_interval: args.progress_interval,
        no_progress_timeout: args.no_progress_timeout,
        delete_timeout: Duration::from_secs(30),
    };
    opts.validate()?;
    Ok(opts)
}

async fn run_restore(es: &EsArgs, args: RestoreArgs) -> Result<(), Error> {
    let opts = restore_options(es, &args)?;
    let orchestration = args
        .orchestrate
        .orchestrate
        .then(|| args.orchestrate.orchestration(false, orchestrated::STORE))
        .transpose()
        .map_err(|e| Error::invalid(e.to_string()))?;
    let client = client(es)?;
    client.wait_ready(es.wait_timeout).await?;
    let report = match &orchestration {
        Some(orch) => orchestrated::restore(&client, &opts, orch).await?,
        None => restore(&client, &opts).await?,
    };
    match args.output {
        OutputFormat::Json => {
            let json =
                serde_json::to_string(&report).map_err(|e| Error::failed(format!("encoding the report: {e}")))?;
            print_lines(&[json]);
        }
        OutputFormat::Table => print_lines(&report.lines()),
    }
    match report.failure() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    // Every subcommand talks to this repository: check its name before any request.
    validate_name("--repository", &cli.es.repository)?;
    match cli.command {
        Command::Register(args) => run_register(&cli.es, *args).await,
        Command::List(args) => run_list(&cli.es, args).await,
        Command::Restore(args) => run_restore(&cli.es, *args).await,
    }
}

/// Prints the error as one line (a JSON log line with `LOG_FORMAT=json`) and returns its
/// exit code.
fn report_error(err: &Error) -> Exit {
    let exit = err.exit();
    let line = err.to_string().replace('\n', " ");
    match logging::format() {
        LogFormat::Json => tracing::error!(exit_code = exit as u8, "{line}"),
        LogFormat::Text => {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {line}");
        }
    }
    exit
}

fn main() -> ExitCode {
    // The core's one start-up: one-line usage errors (exit 2), logging, the runtime. Errors
    // of this crate carry their exit code, so they are reported here without downcasting.
    let command = Cli::command().after_help(format!("{EXIT_CODES_HELP}\n\n{AFTER_HELP}"));
    let cli: Cli = match cli::parse_from(command, std::env::args_os()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let log_format = cli.log_format;
    cli::run(log_format, || async move {
        Ok(match run(cli).await {
            Ok(()) => Exit::Ok,
            Err(e) => report_error(&e),
        })
    })
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
