//! The guarded restore of one backup into the target behind an import command.
//!
//! The restore never touches the target before the backup is proven intact: it checks the
//! target is empty (unless forced), verifies the whole object against its manifest, and only
//! then runs the import command. When the import reads stdin, the object is streamed a second
//! time and the final chunk is held back until the checksum matches again, so a backup that
//! changed in between is never fed to the importer complete.

use std::path::PathBuf;
use std::process::Stdio;

use async_compression::tokio::bufread::ZstdDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::catalogue::{check_sums, open_data, read_manifest, verify_backup};
use crate::command::{describe_status, finish, scratch_dir, CommandSpec};
use crate::error::{Error, Result};
use crate::hashing::HashingReader;
use crate::interrupt::Interrupt;
use crate::manifest::{Compression, Manifest};
use crate::progress::{human_bytes, Progress};
use crate::storage::Storage;

/// Size of the chunks streamed into an importer.
const CHUNK: usize = 1 << 20;

pub struct BackupRestoreOptions {
    pub name: String,
    pub force: bool,
    /// Appended to the import command when `force` is set (StackState: `-force`).
    pub force_arg: Option<String>,
    /// Exit 0 = target empty, 1 = target holds data, anything else = error.
    pub empty_check: Option<CommandSpec>,
    pub import: CommandSpec,
    pub scratch_dir: Option<PathBuf>,
    /// The exact command to rerun with `--force`, for the refusal message.
    pub rerun_hint: String,
}

/// Restores one backup into the target behind the import command.
pub async fn restore(storage: &Storage, opts: &BackupRestoreOptions) -> Result<Manifest> {
    let name = opts.name.as_str();
    let manifest = read_manifest(storage, name).await?;
    check_target(opts).await?;

    let import = match (&opts.force_arg, opts.force) {
        (Some(arg), true) => opts.import.with_arg(arg),
        _ => opts.import.clone(),
    };
    let mut interrupt = Interrupt::new()?;
    if import.uses_file() {
        let scratch = scratch_dir(opts.scratch_dir.as_deref(), "sts-restore-")?;
        let file = scratch.path().join(name);
        tracing::info!(
            "=== Downloading backup \"{name}\" ({}) to \"{}\"...",
            human_bytes(manifest.size),
            file.display()
        );
        let mut out = tokio::fs::File::create(&file)
            .await
            .map_err(|e| Error::io(format!("creating {}", file.display()), e))?;
        let progress = Progress::start("downloaded");
        let (size, sha256) = stream_out(storage, &manifest, &progress, &mut out, &mut interrupt, false).await?;
        out.sync_all()
            .await
            .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
        drop(out);
        check_sums(&manifest, size, &sha256)?;
        tracing::info!(
            "=== Backup verified (sha256 {sha256}); importing with `{}`...",
            import.display()
        );
        let mut child = import.spawn(Some(&file), Stdio::null(), Stdio::from(std::io::stderr()))?;
        finish(&import, "import command", &mut child, &mut interrupt).await?;
    } else {
        verify_backup(storage, name).await?;
        tracing::info!(
            "=== Importing backup \"{name}\" with `{}` (streamed on stdin)...",
            import.display()
        );
        let mut child = import.spawn(None, Stdio::piped(), Stdio::from(std::io::stderr()))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let progress = Progress::start("imported");
        let streamed = stream_out(storage, &manifest, &progress, &mut stdin, &mut interrupt, true).await;
        let streamed = streamed.and_then(|(size, sha256)| check_sums(&manifest, size, &sha256));
        if let Err(e) = streamed {
            // The importer never saw the end of the stream; stop it before it can commit.
            crate::command::kill(&mut child).await;
            return Err(e);
        }
        drop(stdin);
        finish(&import, "import command", &mut child, &mut interrupt).await?;
    }
    tracing::info!(
        "=== Restored backup \"{name}\" ({} of data)",
        human_bytes(manifest.raw_size)
    );
    Ok(manifest)
}

/// Runs `--empty-check` and applies the force rule.
async fn check_target(opts: &BackupRestoreOptions) -> Result<()> {
    let Some(check) = &opts.empty_check else {
        return Ok(());
    };
    tracing::info!("=== Checking that the target is empty with `{}`...", check.display());
    let status = check.run(None).await?;
    match status.code() {
        Some(0) => {
            tracing::info!("target is empty");
            Ok(())
        }
        Some(1) if opts.force => {
            tracing::warn!("the target holds data; --force was given, so it will be overwritten");
            Ok(())
        }
        Some(1) => Err(Error::Refused(format!(
            "the target holds data and restoring backup {:?} would overwrite it; nothing was changed. \
             To replace the data, rerun with --force: {}",
            opts.name, opts.rerun_hint
        ))),
        _ => Err(Error::Command(format!(
            "--empty-check `{}` {} (expected 0 = empty or 1 = holds data)",
            check.display(),
            describe_status(status)
        ))),
    }
}

/// Streams the stored object, decompressed, into `out`. With `hold_back`, the last chunk is
/// written only after the stored bytes hashed to the manifest's checksum. Returns the size and
/// SHA-256 of the stored bytes.
async fn stream_out<W: AsyncWrite + Unpin>(
    storage: &Storage,
    manifest: &Manifest,
    progress: &Progress,
    out: &mut W,
    interrupt: &mut Interrupt,
    hold_back: bool,
) -> Result<(u64, String)> {
    let stream = open_data(storage, manifest).await?;
    let stored = HashingReader::new(stream).with_progress(progress.counter());
    match manifest.compression {
        Compression::None => {
            let mut reader = stored;
            copy_chunks(
                &mut reader,
                out,
                interrupt,
                hold_back,
                manifest,
                |r| r.count(),
                |r| r.sha_so_far(),
            )
            .await?;
            Ok(reader.finish())
        }
        Compression::Zstd => {
            // Multi-member decoding reads the object to its very end, so the checksum is final
            // when the decoder reports end of stream (trailing bytes fail to decode).
            let mut reader = ZstdDecoder::new(BufReader::with_capacity(256 * 1024, stored));
            reader.multiple_members(true);
            copy_chunks(
                &mut reader,
                out,
                interrupt,
                hold_back,
                manifest,
                |r| r.get_ref().get_ref().count(),
                |r| r.get_ref().get_ref().sha_so_far(),
            )
            .await?;
            Ok(reader.into_inner().into_inner().finish())
        }
    }
}

async fn copy_chunks<R, W>(
    reader: &mut R,
    out: &mut W,
    interrupt: &mut Interrupt,
    hold_back: bool,
    manifest: &Manifest,
    count: impl Fn(&R) -> u64,
    sha: impl Fn(&R) -> String,
) -> Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let name = &manifest.name;
    let mut held: Vec<u8> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            let n = tokio::select! {
                n = reader.read(&mut chunk[filled..]) => n.map_err(|e| Error::Integrity(format!("backup {name:?}: reading or decompressing failed: {e}")))?,
                err = interrupt.wait() => return Err(err),
            };
            if n == 0 {
                break;
            }
            filled += n;
        }
        chunk.truncate(filled);
        let eof = filled < CHUNK;
        if !held.is_empty() {
            write_all(out, &held, interrupt).await?;
        }
        held = chunk;
        if eof {
            break;
        }
    }
    if hold_back {
        // The stored stream has been read to its end: judge it before the last chunk goes out.
        if count(reader) != manifest.size || sha(reader) != manifest.sha256 {
            return Err(Error::Integrity(format!(
                "backup {name:?} changed while it was being restored; the import was stopped before the end"
            )));
        }
    }
    if !held.is_empty() {
        write_all(out, &held, interrupt).await?;
    }
    out.flush()
        .await
        .map_err(|e| Error::Command(format!("the import command stopped reading: {e}")))?;
    Ok(())
}

async fn write_all<W: AsyncWrite + Unpin>(out: &mut W, data: &[u8], interrupt: &mut Interrupt) -> Result<()> {
    tokio::select! {
        w = out.write_all(data) => w.map_err(|e| Error::Command(format!("the import command stopped reading: {e}"))),
        err = interrupt.wait() => Err(err),
    }
}
