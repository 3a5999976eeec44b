//! The least destructive overwrite (`--force`): roll over the data streams involved, close
//! the indices that can be closed, delete only what cannot (backing indices, a different
//! shard count), and reopen what was closed if the restore cannot start.
//!
//! Elasticsearch restores over a closed index with the same number of primary shards and
//! opens it again ("Existing indices can only be restored if they are closed and have the
//! same number of shards as the indices in the snapshot. The restore operation
//! automatically opens restored indices if they were closed", restore snapshot API docs).

use std::time::Duration;

use super::{Plan, RestoreOptions, RestoreReport};
use crate::client::EsClient;
use crate::error::{Context, Error, Result};
use crate::retry::{retry, Attempt, Backoff, GaveUp};

/// Rolls over, closes and deletes what the plan says, recording each step in `report`.
pub async fn clear(client: &EsClient, opts: &RestoreOptions, plan: &Plan, report: &mut RestoreReport) -> Result<()> {
    let steps = async {
        for ds in &plan.rollover {
            let new_index = client
                .rollover(ds)
                .await
                .with_context(|| format!("rolling over data stream {ds:?}"))?;
            tracing::info!("rolled over data stream {ds:?} (new write index {new_index})");
            report.rolled_over.push(ds.clone());
        }
        for index in &plan.close {
            client
                .close_index(index)
                .await
                .with_context(|| format!("closing index {index:?}"))?;
            tracing::info!("closed index {index:?}");
            report.closed.push(index.clone());
        }
        for index in &plan.delete {
            if client
                .delete_index(index)
                .await
                .with_context(|| format!("deleting index {index:?}"))?
            {
                tracing::info!("deleted index {index:?}");
                report.deleted.push(index.clone());
            }
        }
        Ok::<(), Error>(())
    };
    if let Err(e) = steps.await {
        undo(client, report).await;
        return Err(e);
    }
    wait_deleted(client, opts, &plan.delete).await
}

/// Waits until every deleted index is gone (a writer could recreate one).
async fn wait_deleted(client: &EsClient, opts: &RestoreOptions, deleted: &[String]) -> Result<()> {
    let backoff = Backoff {
        first: Duration::from_millis(250),
        max: Duration::from_secs(1),
        timeout: opts.delete_timeout,
    };
    for index in deleted {
        retry("a deleted index to be gone", backoff, || async {
            match client.index_exists(index).await {
                Ok(false) => Attempt::Ready(()),
                Ok(true) => Attempt::Pending(Error::failed(format!(
                    "index {index:?} still exists after deleting it; is a writer recreating it?"
                ))),
                Err(e) if e.is_transient() => Attempt::Retry(Error::Api(e)),
                Err(e) => Attempt::Fail(Error::Api(e)),
            }
        })
        .await
        .map_err(GaveUp::into_inner)?;
    }
    Ok(())
}

/// Reopens the indices this run closed (the restore could not start). Deleted indices cannot
/// come back; the report lists them.
pub async fn undo(client: &EsClient, report: &mut RestoreReport) {
    for index in report.closed.clone() {
        match client.open_index(&index).await {
            Ok(()) => {
                tracing::warn!("reopened index {index:?}: the restore did not start");
                report.reopened.push(index);
            }
            Err(e) => tracing::error!("index {index:?} stays closed: reopening it failed: {e}"),
        }
    }
    if !report.deleted.is_empty() {
        tracing::error!(
            "deleted before the restore failed to start: {}",
            report.deleted.join(", ")
        );
    }
}
