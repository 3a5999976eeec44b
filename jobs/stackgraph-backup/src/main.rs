//! `stackgraph-backup`: full, single-object backups of a store through its own export and
//! import commands, streamed to and from object storage. All logic is in `sts_backup_core`.
#![warn(clippy::too_many_lines)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use sts_backup_cli as cli;
use sts_backup_cluster::orchestrate::{self, OrchestrateArgs};
use sts_backup_cluster::Cluster;
use sts_backup_core::adopt;
use sts_backup_core::backup::{backup, BackupOptions};
use sts_backup_core::catalogue::{self, Backup};
use sts_backup_core::command::CommandSpec;
use sts_backup_core::encryption::{self, EncryptArgs, IdentityArgs, Keys};
use sts_backup_core::exit::{Exit, EXIT_CODES_HELP};
use sts_backup_core::logging::LogFormat;
use sts_backup_core::manifest::Compression;
use sts_backup_core::naming::{NameTemplate, DEFAULT_NAME_TEMPLATE};
use sts_backup_core::progress::human_bytes;
use sts_backup_core::replicate::{self, DestinationArgs};
use sts_backup_core::restore::{self, BackupRestoreOptions};
use sts_backup_core::retention::{self as pruning, RetentionArgs};
use sts_backup_core::signature::{self, Policy, SigningArgs, TrustArgs};
use sts_backup_core::storage::{Storage, StorageArgs};

/// The store this binary locks when no --store is given.
const STORE: &str = "stackgraph";

#[derive(Parser)]
#[command(
    name = "stackgraph-backup",
    version,
    about = "Streamed, checksummed full backups of a store (StackGraph, etcd, PostgreSQL...) to S3 or a directory",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run EXPORT_CMD and stream its output into a new backup. An argument `{file}` makes the
    /// command write a scratch file instead of stdout.
    #[command(after_help = EXIT_CODES_HELP)]
    Backup(BackupArgs),
    /// List the committed backups, oldest first.
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Re-read a backup and check it against its manifest.
    #[command(after_help = EXIT_CODES_HELP)]
    Verify(VerifyArgs),
    /// Verify a backup, check that the target is empty, then feed it to IMPORT_CMD (on stdin,
    /// or as the scratch file `{file}`).
    #[command(after_help = EXIT_CODES_HELP)]
    Restore(RestoreArgs),
    /// Give legacy StackState backups (no manifest) a manifest: read each once, record its
    /// checksum and that it was adopted. Later restores are verified like any other.
    #[command(after_help = EXIT_CODES_HELP)]
    Adopt(AdoptArgs),
    /// Copy the committed backups that another storage location (--to) lacks: each checked
    /// against its manifest while copied, the manifest written last. Never deletes there.
    #[command(after_help = EXIT_CODES_HELP)]
    Replicate(ReplicateArgs),
    /// Finish an interrupted restore: take the store's lock, scale its writers back to the
    /// recorded replica counts, release the lock (inside the cluster).
    #[command(after_help = EXIT_CODES_HELP)]
    Finalize(FinalizeArgs),
    /// Copy this executable into DIR (how the chart injects it into the store's container).
    CopyTo {
        /// Target directory; the binary lands in DIR/stackgraph-backup.
        dir: PathBuf,
    },
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    trust: TrustArgs,

    #[command(flatten)]
    signing: SigningArgs,

    #[command(flatten)]
    encrypt: EncryptArgs,

    /// Backup name, strftime in UTC. `$(date +FORMAT)` is accepted and translated.
    #[arg(long, env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE", default_value = DEFAULT_NAME_TEMPLATE)]
    name_template: String,

    /// Compress the stream.
    #[arg(long, env = "BACKUP_COMPRESS", value_enum, default_value_t = Compression::None)]
    compress: Compression,

    /// Directory for the scratch file of `{file}` exports (default: the system temp dir).
    #[arg(long, env = "BACKUP_SCRATCH_DIR", value_name = "DIR")]
    scratch_dir: Option<PathBuf>,

    /// Create the bucket when it does not exist (the chart sets this for its own storage).
    #[arg(long, env = "BACKUP_CREATE_BUCKET")]
    create_bucket: bool,

    /// Refuse the export (nothing committed) unless it contains TEXT, e.g. `"_version":` for a
    /// StackState configuration export. Checked in the stream; empty means no check.
    #[arg(long, env = "BACKUP_MUST_CONTAIN", value_name = "TEXT")]
    must_contain: Option<String>,

    /// Retention applied after a successful upload, when any rule is set (same flags and env
    /// as retention-pruner).
    #[command(flatten)]
    retention: RetentionArgs,

    #[command(flatten)]
    orchestrate: OrchestrateArgs,

    /// The export command and its arguments, after `--`.
    #[arg(last = true, value_name = "EXPORT_CMD")]
    export: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Table,
    Json,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    trust: TrustArgs,

    /// Output format; json is one line on stdout.
    #[arg(short = 'o', long = "output", env = "OUTPUT_FORMAT", value_enum, default_value_t = ListFormat::Table)]
    output: ListFormat,
}

#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    trust: TrustArgs,

    /// With an identity, an encrypted backup is also decrypted and its plaintext checked.
    #[command(flatten)]
    identity: IdentityArgs,

    /// The backup to verify.
    #[arg(env = "BACKUP_NAME")]
    name: String,
}

#[derive(Args)]
struct AdoptArgs {
    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    trust: TrustArgs,

    #[command(flatten)]
    signing: SigningArgs,

    /// The backup to adopt.
    #[arg(env = "BACKUP_NAME", required_unless_present = "all", conflicts_with = "all")]
    name: Option<String>,

    /// Adopt every legacy backup that `list` shows.
    #[arg(long, env = "BACKUP_ADOPT_ALL")]
    all: bool,

    /// With --object-lock: how long each new manifest is locked (the store's retention, as
    /// `backup --retention`); an adopted backup is then as undeletable as a new one.
    #[arg(
        long,
        env = "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA",
        value_name = "DELTA"
    )]
    retention: Option<String>,
}

#[derive(Args)]
struct ReplicateArgs {
    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    trust: TrustArgs,

    #[command(flatten)]
    to: DestinationArgs,

    /// Output format; json is one line on stdout.
    #[arg(short = 'o', long = "output", env = "OUTPUT_FORMAT", value_enum, default_value_t = ListFormat::Table)]
    output: ListFormat,
}

#[derive(Args)]
struct FinalizeArgs {
    #[command(flatten)]
    orchestrate: OrchestrateArgs,
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    trust: TrustArgs,

    #[command(flatten)]
    identity: IdentityArgs,

    /// The backup to restore.
    /// The backup to restore (or --latest).
    #[arg(env = "BACKUP_NAME")]
    name: Option<String>,

    /// Restore the newest committed backup (one with a manifest); no NAME.
    #[arg(long, env = "RESTORE_LATEST")]
    latest: bool,

    /// Restore even when the target holds data (it is overwritten).
    #[arg(long, env = "RESTORE_FORCE")]
    force: bool,

    /// Argument appended to IMPORT_CMD with --force (StackState's importer takes `-force`).
    /// Empty means none.
    #[arg(long, env = "RESTORE_FORCE_ARG", allow_hyphen_values = true, value_name = "ARG")]
    force_arg: Option<String>,

    /// Command that tells whether the target is empty: exit 0 = empty, 1 = holds data. Split
    /// into words like a shell would, but never run by one.
    #[arg(long, env = "RESTORE_EMPTY_CHECK", value_name = "CMD")]
    empty_check: Option<String>,

    /// Stop --empty-check (and everything it started) after this long; nothing is changed.
    #[arg(long, env = "RESTORE_EMPTY_CHECK_TIMEOUT", default_value = "5m", value_name = "DURATION", value_parser = restore::parse_timeout)]
    empty_check_timeout: std::time::Duration,

    /// Directory for the scratch file of `{file}` imports (default: the system temp dir).
    #[arg(long, env = "BACKUP_SCRATCH_DIR", value_name = "DIR")]
    scratch_dir: Option<PathBuf>,

    #[command(flatten)]
    orchestrate: OrchestrateArgs,

    /// The import command and its arguments, after `--`.
    #[arg(last = true, value_name = "IMPORT_CMD")]
    import: Vec<String>,
}

fn main() -> ExitCode {
    let cli: Cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli::run(cli.log_format, || async { run(cli.command).await.map(|()| Exit::Ok) }).into()
}

async fn run(command: Command) -> anyhow::Result<()> {
    signature::install(signature_policy(&command)?)?;
    encryption::install(encryption_keys(&command)?)?;
    match command {
        Command::Backup(args) => backup_command(args).await,
        Command::List(args) => list_command(args).await,
        Command::Verify(args) => verify_command(args).await,
        Command::Restore(args) => restore_command(args).await,
        Command::Adopt(args) => adopt_command(args).await,
        Command::Replicate(args) => replicate_command(args).await,
        Command::Finalize(args) => finalize_command(args).await,
        Command::CopyTo { dir } => copy_to(&dir),
    }
}

/// The keys this run signs with and trusts, read before anything else happens.
fn signature_policy(command: &Command) -> sts_backup_core::Result<Policy> {
    match command {
        Command::Backup(a) => Policy::from_args(&a.trust, Some(&a.signing)),
        Command::Adopt(a) => Policy::from_args(&a.trust, Some(&a.signing)),
        Command::List(ListArgs { trust, .. })
        | Command::Verify(VerifyArgs { trust, .. })
        | Command::Restore(RestoreArgs { trust, .. })
        | Command::Replicate(ReplicateArgs { trust, .. }) => Policy::from_args(trust, None),
        Command::Finalize(_) | Command::CopyTo { .. } => Ok(Policy::default()),
    }
}

/// The recipients this run encrypts to and the identities it decrypts with, read before
/// anything else happens.
fn encryption_keys(command: &Command) -> sts_backup_core::Result<Keys> {
    match command {
        Command::Backup(a) => Keys::from_args(Some(&a.encrypt), None),
        Command::Verify(a) => Keys::from_args(None, Some(&a.identity)),
        Command::Restore(a) => Keys::from_args(None, Some(&a.identity)),
        _ => Ok(Keys::default()),
    }
}

/// `backup`: one backup, then expiry when retention flags are given.
async fn backup_command(args: BackupArgs) -> anyhow::Result<()> {
    let opts = BackupOptions {
        template: NameTemplate::parse(&args.name_template)?,
        compression: args.compress,
        export: CommandSpec::new("EXPORT_CMD", args.export)?,
        scratch_dir: args.scratch_dir,
        create_bucket: args.create_bucket,
        must_contain: args.must_contain,
    };
    // Validate the retention flags before any work, so a typo changes nothing.
    let policy = args.retention.policy()?;
    let now = chrono::Utc::now();
    if policy.is_configured() && policy.backup_timestamp(&opts.template.render(now)).is_none() {
        tracing::warn!(
            "backup names from --name-template {:?} do not match --name-regexp {:?}: retention will never delete them",
            opts.template.as_str(),
            args.retention.name_regexp
        );
    }
    let orchestration = args
        .orchestrate
        .orchestrate
        .then(|| args.orchestrate.orchestration(false, STORE))
        .transpose()?;
    let mut config = args.storage.config()?;
    config.lock_for(policy.retention.as_ref().and_then(|r| r.as_timedelta().to_std().ok()))?;
    let storage = Storage::open_config(config).await?;
    match orchestration {
        Some(orch) => {
            let cluster = Cluster::connect().await.map_err(sts_backup_core::Error::from)?;
            if orchestrate::backup_run(&cluster, &orch, &storage, &opts, now)
                .await?
                .is_none()
            {
                return Ok(());
            }
        }
        None => {
            backup(&storage, &opts, now).await?;
        }
    }
    if policy.is_configured() {
        tracing::info!("=== Expiring old backups ({})...", policy.describe());
        let report = pruning::prune_with(&storage, &policy, chrono::Utc::now()).await?;
        tracing::info!("{}", report.summary_line());
        if report.has_failures() {
            anyhow::bail!(
                "the backup was committed, but pruning old backups failed: {}",
                report.summary_line()
            );
        }
    }
    Ok(())
}

/// `list`: the restorable backups as a table or JSON; broken ones are logged.
async fn list_command(args: ListArgs) -> anyhow::Result<()> {
    let storage = Storage::open(&args.storage).await?;
    let catalogue = catalogue::list(&storage).await?;
    for b in &catalogue.broken {
        tracing::warn!("backup {:?} cannot be restored: {}", b.name, b.reason);
    }
    let backups = catalogue.backups;
    let mut out = std::io::stdout().lock();
    match args.output {
        ListFormat::Json => writeln!(out, "{}", list_json(&backups))?,
        ListFormat::Table => print_table(&mut out, &backups)?,
    }
    Ok(())
}

/// `verify`: read a backup once and check it against its manifest.
async fn verify_command(args: VerifyArgs) -> anyhow::Result<()> {
    let storage = Storage::open(&args.storage).await?;
    match catalogue::verify_backup(&storage, args.name.trim()).await? {
        Backup::Committed(m) => println!("verified {}: {} bytes, sha256 {}", m.name, m.size, m.sha256),
        Backup::Legacy(l) => println!("read {}: {} bytes, no checksum (a StackState backup)", l.name, l.size),
    }
    Ok(())
}

/// `restore`: the guarded restore, orchestrated in the cluster when asked.
async fn restore_command(args: RestoreArgs) -> anyhow::Result<()> {
    let rerun_hint = rerun_with_force();
    let storage = Storage::open(&args.storage).await?;
    // The Job template sets both env twins: an empty BACKUP_NAME is no name.
    let name = match (
        args.name.as_deref().map(str::trim).filter(|n| !n.is_empty()),
        args.latest,
    ) {
        (Some(name), false) => name.to_string(),
        (None, true) => newest_committed(&storage).await?,
        (Some(_), true) => {
            return Err(sts_backup_core::Error::invalid("NAME: give a backup name or --latest, not both").into())
        }
        (None, false) => {
            return Err(sts_backup_core::Error::invalid("NAME: missing; give a backup name or --latest").into())
        }
    };
    let opts = BackupRestoreOptions {
        empty_check: args
            .empty_check
            .as_deref()
            .map(|line| CommandSpec::parse_line("--empty-check", line))
            .transpose()?,
        import: CommandSpec::new("IMPORT_CMD", args.import)?,
        name,
        force: args.force,
        force_arg: args.force_arg.filter(|arg| !arg.is_empty()),
        empty_check_timeout: args.empty_check_timeout,
        scratch_dir: args.scratch_dir,
        rerun_hint,
    };
    let orchestration = args
        .orchestrate
        .orchestrate
        .then(|| args.orchestrate.orchestration(true, STORE))
        .transpose()?;
    let restored = match orchestration {
        Some(orch) => {
            let cluster = Cluster::connect().await.map_err(sts_backup_core::Error::from)?;
            orchestrate::restore(&cluster, &orch, &storage, &opts).await?
        }
        None => restore::restore(&storage, &opts).await?,
    };
    match restored {
        Backup::Committed(m) => println!("restored {}: {} bytes of data", m.name, m.raw_size),
        Backup::Legacy(l) => println!("restored {}: {} bytes of data, no checksum", l.name, l.size),
    }
    Ok(())
}

/// `adopt`: give StackState-made backups a manifest.
async fn adopt_command(args: AdoptArgs) -> anyhow::Result<()> {
    let mut config = args.storage.config()?;
    config.lock_for(pruning::lock_period(
        args.retention.as_deref(),
        "--retention (BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA)",
    )?)?;
    let storage = Storage::open_config(config).await?;
    let now = chrono::Utc::now();
    let adopted = match &args.name {
        Some(name) => vec![adopt::adopt(&storage, name, now).await?],
        None => adopt::adopt_all(&storage, now).await?,
    };
    for m in &adopted {
        println!("adopted {}: {} bytes, sha256 {}", m.name, m.size, m.sha256);
    }
    if adopted.is_empty() {
        println!("no legacy backups to adopt");
    }
    Ok(())
}

/// `replicate`: copy what the destination lacks; exit 1 when a copy failed.
async fn replicate_command(args: ReplicateArgs) -> anyhow::Result<()> {
    let source = Storage::open(&args.storage).await?;
    let destination = args.to.open().await?;
    let report = replicate::replicate(&source, &destination).await?;
    match args.output {
        ListFormat::Json => println!("{}", serde_json::to_string(&report)?),
        ListFormat::Table => {
            for (what, names) in [("copied", &report.copied), ("present", &report.present)] {
                names.iter().for_each(|n| println!("{what} {n}"));
            }
            for (what, entries) in [("skipped", &report.skipped), ("failed", &report.failed)] {
                entries.iter().for_each(|e| println!("{what} {}: {}", e.name, e.reason));
            }
        }
    }
    if !report.failed.is_empty() {
        anyhow::bail!(
            "{} of {} backups could not be copied to {}",
            report.failed.len(),
            report.failed.len() + report.copied.len(),
            destination.location()
        );
    }
    Ok(())
}

/// `finalize`: scale back what an interrupted restore scaled down.
async fn finalize_command(args: FinalizeArgs) -> anyhow::Result<()> {
    let orch = args.orchestrate.orchestration(false, STORE)?;
    let cluster = Cluster::connect().await.map_err(sts_backup_core::Error::from)?;
    let back = orchestrate::finalize(&cluster, &orch)
        .await
        .map_err(sts_backup_core::Error::from)?;
    if back.is_empty() {
        println!("store {}: nothing to scale back", orch.store);
    }
    for w in &back {
        println!("scaled {w} back");
    }
    Ok(())
}

/// `--latest`: the newest backup with a manifest (a legacy one is restored only by name).
async fn newest_committed(storage: &Storage) -> anyhow::Result<String> {
    let all = catalogue::list(storage).await?;
    let newest = all.backups.iter().rev().find_map(|b| match b {
        Backup::Committed(m) => Some(m.name.clone()),
        Backup::Legacy(_) => None,
    });
    let name = newest.ok_or_else(|| {
        sts_backup_core::Error::invalid(format!(
            "--latest: the store holds no committed backup ({} restorable in all; see `list`)",
            all.backups.len()
        ))
    })?;
    tracing::info!("--latest: backup {name}");
    Ok(name)
}

/// This invocation again with `--force` after `restore`, quoted for a shell.
fn rerun_with_force() -> String {
    let mut argv: Vec<String> = std::env::args().collect();
    if let Some(pos) = argv.iter().position(|a| a == "restore") {
        argv.insert(pos + 1, "--force".into());
    }
    shell_words::join(argv)
}

fn list_json(backups: &[Backup]) -> serde_json::Value {
    serde_json::Value::Array(
        backups
            .iter()
            .map(|b| {
                let created = b.created().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                match b {
                    Backup::Committed(m) => serde_json::json!({
                        "name": m.name,
                        "size": m.size,
                        "created": created,
                        "sha256": m.sha256,
                        "compression": m.compression,
                        "raw_size": m.raw_size,
                        "checksum": true,
                        "adopted": m.adopted.is_some(),
                        "signed_by": m.signature.as_ref().map(|s| &s.key_id),
                        "signature_checked": signature::policy().requires_signatures(),
                        "encrypted_to": m.encryption.as_ref().map(|e| &e.recipients),
                    }),
                    Backup::Legacy(l) => serde_json::json!({
                        "name": l.name,
                        "size": l.size,
                        "created": created,
                        "sha256": null,
                        "compression": "none",
                        "raw_size": l.size,
                        "checksum": false,
                        "adopted": false,
                        "signed_by": null,
                        "signature_checked": false,
                        "encrypted_to": null,
                    }),
                }
            })
            .collect(),
    )
}

fn print_table(out: &mut impl Write, backups: &[Backup]) -> std::io::Result<()> {
    let width = backups.iter().map(|b| b.name().len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:<width$}  {:>10}  {:<20}  {:<11}  SHA256",
        "NAME", "SIZE", "CREATED (UTC)", "COMPRESSION"
    )?;
    for b in backups {
        let (compression, sha) = match b {
            Backup::Committed(m) => (m.compression.to_string(), m.sha256.chars().take(12).collect()),
            Backup::Legacy(_) => (Compression::None.to_string(), "(no checksum)".to_string()),
        };
        writeln!(
            out,
            "{:<width$}  {:>10}  {:<20}  {:<11}  {}",
            b.name(),
            human_bytes(b.size()),
            b.created().format("%Y-%m-%d %H:%M:%S").to_string(),
            compression,
            sha
        )?;
    }
    if backups.is_empty() {
        writeln!(out, "(no backups)")?;
    }
    Ok(())
}

/// Copies the running executable to `dir/stackgraph-backup` through a temp file and a
/// rename, so a half-copied binary is never run.
fn copy_to(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().context("finding this executable")?;
    let target = dir.join("stackgraph-backup");
    let temp = dir.join(".stackgraph-backup.tmp");
    std::fs::copy(&me, &temp).with_context(|| format!("DIR: copying {} to {}", me.display(), temp.display()))?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).context("DIR: setting permissions")?;
    std::fs::rename(&temp, &target).with_context(|| format!("DIR: moving the copy to {}", target.display()))?;
    println!("copied {} to {}", me.display(), target.display());
    Ok(())
}
