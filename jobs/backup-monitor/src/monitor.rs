//! One check of everything the monitor watches, and the state carried between checks (the
//! last verification of each store, the last known catalogue when storage stops answering).
//!
//! Logs are quiet while all is well: a line is written when a store's verdict changes
//! (unreachable, overdue, broken, corrupt, and back to healthy), naming the store and the
//! first thing to check.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sts_backup_core::catalogue;
use sts_backup_core::storage::{Storage, StorageArgs};

use crate::config::{Config, ElasticsearchConfig, StoreConfig};
use sts_backup_elasticsearch::EsClient;

use crate::elasticsearch::{self, EsState};
use crate::schedule::{judge, Dialect, Due, Schedule};
use crate::stores::{self, Catalogue};

/// The outcome of re-reading a store's newest backup.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    pub at: DateTime<Utc>,
    pub backup: String,
    pub ok: bool,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    pub name: String,
    /// Why the bucket could not be read at this check; the catalogue is then the last known.
    pub error: Option<String>,
    pub catalogue: Option<Catalogue>,
    pub due: Due,
    pub verify: Option<Verification>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EsStatus {
    pub repository: String,
    pub policy: String,
    pub error: Option<String>,
    pub state: Option<EsState>,
    pub due: Option<Due>,
}

/// Everything one check saw.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub duration: Duration,
    pub stores: Vec<StoreStatus>,
    pub elasticsearch: Option<EsStatus>,
}

impl Report {
    /// Whether anything needs a human: unreachable, overdue, broken or corrupt.
    pub fn healthy(&self) -> bool {
        let stores_ok = self.stores.iter().all(|s| {
            s.error.is_none()
                && !s.due.overdue
                && s.catalogue.as_ref().is_some_and(|c| c.broken == 0)
                && s.verify.as_ref().is_none_or(|v| v.ok)
        });
        let es_ok = self.elasticsearch.as_ref().is_none_or(|es| {
            es.error.is_none()
                && es.state.as_ref().is_some_and(|s| s.repository_up && s.slm_running)
                && !es.due.as_ref().is_some_and(|d| d.overdue)
        });
        stores_ok && es_ok
    }
}

struct StoreWatch {
    config: StoreConfig,
    storage: Storage,
    last: Option<Catalogue>,
    verify: Arc<Mutex<Option<Verification>>>,
    verifying: Arc<Mutex<bool>>,
    verdict: String,
}

pub struct Monitor {
    stores: Vec<StoreWatch>,
    es: Option<(ElasticsearchConfig, EsClient)>,
    es_verdict: String,
    started: DateTime<Utc>,
    clock_offset: chrono::Duration,
}

impl Monitor {
    /// Opens every store (nothing is contacted yet). `clock_offset` moves the monitor's
    /// notion of now, for drills and tests ("what will it say tomorrow at 05:00?").
    pub async fn new(
        config: Config,
        storage: &StorageArgs,
        es: Option<EsClient>,
        clock_offset: chrono::Duration,
    ) -> Result<Monitor, sts_backup_core::Error> {
        let mut stores = Vec::new();
        for c in config.stores {
            // The S3 settings are shared by every s3:// store; a directory takes none of them.
            let args = if c.storage.starts_with("file://") {
                StorageArgs {
                    storage: c.storage.clone(),
                    ..StorageArgs::default()
                }
            } else {
                StorageArgs {
                    storage: c.storage.clone(),
                    ..storage.clone()
                }
            };
            stores.push(StoreWatch {
                storage: Storage::open(&args).await?,
                config: c,
                last: None,
                verify: Arc::default(),
                verifying: Arc::default(),
                verdict: String::new(),
            });
        }
        let es = match (config.elasticsearch, es) {
            (Some(c), Some(client)) => Some((c, client)),
            _ => None,
        };
        let now = Utc::now() + clock_offset;
        Ok(Monitor {
            stores,
            es,
            es_verdict: String::new(),
            started: now,
            clock_offset,
        })
    }

    /// Counts a store with no backup as overdue for starts after `since` (default: when the
    /// monitor started), e.g. when it took over from a monitor that ran before.
    pub fn watch_since(&mut self, since: DateTime<Utc>) {
        self.started = since;
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// Looks at every store and Elasticsearch once. Verifications run in the background and
    /// show up in a later report.
    pub async fn check(&mut self) -> Report {
        let began = Instant::now();
        let at = self.now();
        let observations = futures::future::join_all(self.stores.iter().map(|s| stores::observe(&s.storage))).await;
        let mut statuses = Vec::new();
        for (watch, observed) in self.stores.iter_mut().zip(observations) {
            let error = match observed {
                Ok(c) => {
                    watch.last = Some(c);
                    None
                }
                Err(e) => Some(e.to_string()),
            };
            let newest = watch.last.as_ref().and_then(|c| c.newest.clone());
            let due = judge(
                &watch.config.schedule,
                watch.config.grace,
                newest.as_ref().map(|n| n.created),
                self.started,
                at,
            );
            if error.is_none() {
                start_verification(watch, at);
            }
            let verify = watch.verify.lock().map(|v| v.clone()).unwrap_or(None);
            let status = StoreStatus {
                name: watch.config.name.clone(),
                error,
                catalogue: watch.last.clone(),
                due,
                verify,
            };
            log_transition(&mut watch.verdict, &status_verdict(&status, &watch.config));
            statuses.push(status);
        }
        let elasticsearch = match &self.es {
            Some((config, client)) => {
                let status = observe_es(config, client, self.started, at).await;
                log_transition(&mut self.es_verdict, &es_verdict(&status));
                Some(status)
            }
            None => None,
        };
        Report {
            at,
            duration: began.elapsed(),
            stores: statuses,
            elasticsearch,
        }
    }

    /// Waits until no verification is running (for one-shot checks).
    pub async fn settle(&self) {
        loop {
            let busy = self
                .stores
                .iter()
                .any(|s| s.verifying.lock().map(|b| *b).unwrap_or(false));
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Re-reads the newest backup when the last verification is older than `verify_every`, or
/// was of another backup. At most one verification per store runs at a time.
fn start_verification(watch: &StoreWatch, at: DateTime<Utc>) {
    if watch.config.verify_every.is_zero() {
        return;
    }
    let Some(newest) = watch.last.as_ref().and_then(|c| c.newest.clone()) else {
        return;
    };
    let every = chrono::Duration::from_std(watch.config.verify_every).unwrap_or(chrono::Duration::MAX);
    let due = match &*watch.verify.lock().unwrap_or_else(|p| p.into_inner()) {
        None => true,
        Some(v) => v.backup != newest.name || at - v.at >= every,
    };
    let mut busy = watch.verifying.lock().unwrap_or_else(|p| p.into_inner());
    if !due || *busy {
        return;
    }
    *busy = true;
    drop(busy);
    let storage = watch.storage.clone();
    let slot = watch.verify.clone();
    let verifying = watch.verifying.clone();
    tokio::spawn(async move {
        let outcome = catalogue::verify_backup(&storage, &newest.name).await;
        let result = match outcome {
            Ok(_) => Some(Verification {
                at,
                backup: newest.name.clone(),
                ok: true,
                detail: None,
            }),
            Err(sts_backup_core::Error::Integrity(why)) => Some(Verification {
                at,
                backup: newest.name.clone(),
                ok: false,
                detail: Some(why),
            }),
            // Storage trouble says nothing about the backup: keep the previous verdict and
            // try again at the next check (the storage_up metric carries the problem).
            Err(_) => None,
        };
        if let Some(r) = result {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        }
        *verifying.lock().unwrap_or_else(|p| p.into_inner()) = false;
    });
}

async fn observe_es(
    config: &ElasticsearchConfig,
    client: &EsClient,
    started: DateTime<Utc>,
    at: DateTime<Utc>,
) -> EsStatus {
    let mut status = EsStatus {
        repository: config.repository.clone(),
        policy: config.policy.clone(),
        error: None,
        state: None,
        due: None,
    };
    match elasticsearch::observe(client, &config.repository, &config.policy).await {
        Ok(state) => {
            status.due = state
                .schedule
                .as_deref()
                .and_then(|s| Schedule::parse(s, Dialect::Quartz, "UTC").ok())
                .map(|s| judge(&s, config.grace, state.last_success, started, at));
            status.state = Some(state);
        }
        Err(e) => status.error = Some(e),
    }
    status
}

/// One line saying what is wrong with a store and what to check first; empty when healthy.
fn status_verdict(s: &StoreStatus, c: &StoreConfig) -> String {
    let store = &s.name;
    if let Some(e) = &s.error {
        return format!("store {store}: storage unreachable ({e}); check the storage service and its credentials");
    }
    if let Some(v) = s.verify.as_ref().filter(|v| !v.ok) {
        return format!(
            "store {store}: newest backup {:?} is corrupt ({}); restore from an older backup and check the storage",
            v.backup,
            v.detail.as_deref().unwrap_or("checksum mismatch")
        );
    }
    if s.due.overdue {
        let newest = s
            .catalogue
            .as_ref()
            .and_then(|c| c.newest.as_ref())
            .map(|n| format!("newest backup {:?} is from {}", n.name, n.created.to_rfc3339()))
            .unwrap_or_else(|| "there is no committed backup".into());
        return format!(
            "store {store}: backup overdue: {newest}, but schedule {:?} ({}) started one at {} (grace {}); check the CronJob (suspended? failing? never scheduled?)",
            c.schedule.expr(),
            c.schedule.time_zone(),
            s.due.due_since.map(|t| t.to_rfc3339()).unwrap_or_default(),
            humantime::format_duration(c.grace)
        );
    }
    if let Some(c) = s.catalogue.as_ref().filter(|c| c.broken > 0) {
        return format!(
            "store {store}: {} broken backup(s) (a manifest that cannot vouch for its data); run `stackgraph-backup list` and `verify`",
            c.broken
        );
    }
    String::new()
}

fn es_verdict(s: &EsStatus) -> String {
    if let Some(e) = &s.error {
        return format!("elasticsearch: {e}");
    }
    let Some(state) = &s.state else {
        return String::new();
    };
    if !state.repository_up {
        return format!(
            "elasticsearch: snapshot repository {:?} cannot be listed; check it exists and its storage answers",
            s.repository
        );
    }
    if !state.slm_running {
        return "elasticsearch: snapshot lifecycle management is not RUNNING; start it with POST _slm/start".into();
    }
    if s.due.as_ref().is_some_and(|d| d.overdue) {
        return format!(
            "elasticsearch: snapshot overdue: no SUCCESS snapshot since the SLM policy {:?} was due; check GET _slm/policy/{}",
            s.policy, s.policy
        );
    }
    String::new()
}

fn log_transition(previous: &mut String, now: &str) {
    if previous == now {
        return;
    }
    if now.is_empty() {
        tracing::info!("{}: healthy again", previous.split(':').next().unwrap_or("monitor"));
    } else {
        tracing::warn!("{now}");
    }
    *previous = now.to_string();
}
