//! What Elasticsearch says about its snapshots: the repository's snapshots by state, the SLM
//! policy's schedule, last success and failure, and SLM's own counters. Read-only: the
//! monitor sends only GET requests, through the Elasticsearch crate's typed client.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;
use sts_backup_elasticsearch::{ApiError, EsClient};

/// SLM's counters for the policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SlmCounters {
    pub taken: u64,
    pub failed: u64,
    pub deleted: u64,
}

/// One look at Elasticsearch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EsState {
    /// SLM's operation mode is RUNNING (not STOPPING/STOPPED).
    pub slm_running: bool,
    /// The repository could be listed (it exists and its storage answers).
    pub repository_up: bool,
    /// Snapshots in the repository by state (SUCCESS, PARTIAL, FAILED, IN_PROGRESS, ...).
    pub snapshots: BTreeMap<String, usize>,
    /// End of the newest SUCCESS snapshot.
    pub last_success: Option<DateTime<Utc>>,
    /// The newest failure: SLM's `last_failure` or the end of the newest FAILED/PARTIAL snapshot.
    pub last_failure: Option<DateTime<Utc>>,
    /// The policy's Quartz schedule, when the policy exists.
    pub schedule: Option<String>,
    pub slm: Option<SlmCounters>,
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// Reads the state of `repository` and `policy`. An error means Elasticsearch itself could
/// not be asked; a missing or failing repository, or a missing policy, is in the state.
pub async fn observe(client: &EsClient, repository: &str, policy: &str) -> Result<EsState, String> {
    let mut state = EsState {
        slm_running: client.slm_status().await.map_err(|e| e.to_string())? == "RUNNING",
        ..EsState::default()
    };
    let entry = client.get_policy_entry(policy).await.map_err(|e| e.to_string())?;
    state.schedule = entry
        .as_ref()
        .and_then(|e| e.pointer("/policy/schedule"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let slm_failure = entry
        .as_ref()
        .and_then(|e| e.pointer("/last_failure/time"))
        .and_then(Value::as_i64)
        .and_then(millis);
    let stats = client.slm_stats().await.map_err(|e| e.to_string())?;
    state.slm = stats
        .get("policy_stats")
        .and_then(Value::as_array)
        .and_then(|all| {
            all.iter()
                .find(|p| p.get("policy").and_then(Value::as_str) == Some(policy))
        })
        .map(|p| {
            let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
            SlmCounters {
                taken: n("snapshots_taken"),
                failed: n("snapshots_failed"),
                deleted: n("snapshots_deleted"),
            }
        });
    match client.get_snapshots(repository).await {
        Ok(snapshots) => {
            state.repository_up = true;
            let mut newest_failure = None;
            for snap in snapshots {
                let kind = snap.state.clone().unwrap_or_else(|| "UNKNOWN".into());
                *state.snapshots.entry(kind.clone()).or_default() += 1;
                let end = snap.end_time_in_millis.or(snap.start_time_in_millis).and_then(millis);
                match kind.as_str() {
                    "SUCCESS" => state.last_success = state.last_success.max(end),
                    "FAILED" | "PARTIAL" => newest_failure = newest_failure.max(end),
                    _ => {}
                }
            }
            state.last_failure = slm_failure.max(newest_failure);
        }
        // Elasticsearch answered, but the repository is missing or its storage fails.
        Err(ApiError::Api { .. }) => state.last_failure = slm_failure,
        Err(e) => return Err(e.to_string()),
    }
    Ok(state)
}
