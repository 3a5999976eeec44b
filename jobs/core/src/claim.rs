//! One writer per backup name on storage that ignores conditional writes (`rclone serve s3`
//! today). There, two runs of one name can both upload, and the server may even mix one
//! request's metadata with another's bytes, so nothing after the upload can tell the runs
//! apart for certain. The runs therefore settle it before uploading.
//!
//! A run writes a claim object of its own, then lists the name's claims: it goes on only when
//! its claim is the only one, otherwise it withdraws and tries again a few times after a
//! random pause. With read-after-write listing, two runs can never both see themselves
//! alone: whichever lists second sees the other's claim, because each wrote its claim before
//! listing. A claim is removed after the commit (or the abort), so a later run either sees
//! it and waits, or sees the committed backup and stops with "already exists".
//!
//! A claim left by a killed run is ignored once older than [`STALE_AFTER`] and removed by
//! the pruner like other leftovers of interrupted runs.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::storage::{ObjectMeta, Storage};

/// How claim keys start, directly under the storage prefix (listings do not descend into
/// "directories"). The leading '.' and the '~' separators, which backup names never contain,
/// keep claims apart from backups and from any name pattern that starts with a letter.
pub const CLAIM_PREFIX: &str = ".sts-backup-claim~";

/// A claim older than this belongs to a run that was killed: longer than any backup runs
/// (the chart's job deadline defaults to a few hours).
pub const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long removing a claim may take before the run ends without it.
const RELEASE_BUDGET: Duration = Duration::from_secs(3);

/// Attempts before a run gives up on a name that other runs keep claiming.
const ATTEMPTS: u32 = 6;

/// A run's claim on a name, released with [`Claim::release`].
#[derive(Debug)]
pub struct Claim {
    key: String,
}

/// The claim key of `run` on backup `name`.
pub fn claim_key(name: &str, run: &str) -> String {
    format!("{CLAIM_PREFIX}{name}~{run}")
}

/// Whether a listed key is a claim (for the pruner and the catalogue).
pub fn is_claim(key: &str) -> bool {
    key.starts_with(CLAIM_PREFIX)
}

/// Takes the claim on `name` for `run`, or refuses (exit 3) while another fresh claim exists.
pub async fn take(storage: &Storage, name: &str, run: &str) -> Result<Claim> {
    let key = claim_key(name, run);
    let mut others = Vec::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(pause(attempt)).await;
        }
        storage.put_bytes(&key, Bytes::from(run.to_string())).await?;
        others = rivals(storage, name, &key).await?;
        if others.is_empty() {
            return Ok(Claim { key });
        }
        let _ = storage.delete(&key).await;
    }
    let holder = others.first().map(|o| o.key.as_str()).unwrap_or_default();
    Err(Error::Refused(format!(
        "backup {name:?}: another run of the same name is in progress (claim {holder:?} in {}); not starting \
         a second one. If no such run is active, the claim is left from a killed run: delete it, or it is \
         ignored after {}h",
        storage.location(),
        STALE_AFTER.as_secs() / 3600
    )))
}

impl Claim {
    /// Removes the claim. Best effort and bounded ([`RELEASE_BUDGET`]): it runs after an
    /// interrupted upload's abort too, which already used its own bound on a stalled server,
    /// and a claim left behind only holds that one name until it is stale (the pruner then
    /// removes it).
    pub async fn release(self, storage: &Storage) {
        match tokio::time::timeout(RELEASE_BUDGET, storage.delete(&self.key)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("could not remove the claim {:?}: {e}", self.key),
            Err(_) => tracing::warn!(
                "could not remove the claim {:?}: no answer within {}s",
                self.key,
                RELEASE_BUDGET.as_secs()
            ),
        }
    }
}

/// The other fresh claims on `name`.
async fn rivals(storage: &Storage, name: &str, mine: &str) -> Result<Vec<ObjectMeta>> {
    let prefix = format!("{CLAIM_PREFIX}{name}~");
    let now = SystemTime::now();
    let mut others: Vec<ObjectMeta> = storage
        .list()
        .await?
        .into_iter()
        .filter(|o| o.key.strip_prefix(&prefix).is_some_and(|run| !run.contains('~')) && o.key != mine)
        .collect();
    others.retain(|o| {
        let age = o.modified.and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
        let fresh = age < STALE_AFTER;
        if !fresh {
            tracing::warn!(
                "ignoring the stale claim {:?} ({}h old): its run was killed",
                o.key,
                age.as_secs() / 3600
            );
        }
        fresh
    });
    Ok(others)
}

/// A random pause that grows with the attempt, so that competing runs stop colliding.
fn pause(attempt: u32) -> Duration {
    let jitter = crate::storage::random_id() % 1000;
    Duration::from_millis(200 * u64::from(attempt) + jitter)
}
