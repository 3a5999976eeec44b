//! What the monitor watches: one entry per store (its bucket and CronJob schedule) and,
//! optionally, Elasticsearch's snapshot repository and SLM policy. The chart renders this
//! file from the same values that render the CronJobs, so the schedule judged here is the
//! schedule that runs.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sts_backup_core::storage::StorageUrl;

use crate::schedule::{Dialect, Schedule, ScheduleError};

/// A config problem: one line naming the field, for exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.to_string(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    stores: Vec<RawStore>,
    elasticsearch: Option<RawElasticsearch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStore {
    name: String,
    storage: String,
    schedule: String,
    time_zone: Option<String>,
    grace: Option<String>,
    verify_every: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawElasticsearch {
    repository: String,
    policy: String,
    grace: Option<String>,
}

/// One store to judge.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub name: String,
    /// `s3://BUCKET[/PREFIX]` or `file:///PATH`, as the store's backup job writes it.
    pub storage: String,
    pub schedule: Schedule,
    /// How long after a scheduled start the backup may take before it is overdue.
    pub grace: Duration,
    /// How often the newest backup is re-read and checked against its manifest (0 = never).
    pub verify_every: Duration,
}

#[derive(Debug, Clone)]
pub struct ElasticsearchConfig {
    pub repository: String,
    pub policy: String,
    pub grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub stores: Vec<StoreConfig>,
    pub elasticsearch: Option<ElasticsearchConfig>,
}

pub const DEFAULT_GRACE: &str = "1h";
pub const DEFAULT_VERIFY_EVERY: &str = "7d";

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let field = format!("--config {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| err(&field, e))?;
        Config::parse(&text).map_err(|e| err(format!("{field}: {}", e.field), e.reason))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| err("config", e))?;
        let mut names = HashSet::new();
        let mut stores = Vec::new();
        for (i, s) in raw.stores.into_iter().enumerate() {
            let at = |f: &str| format!("stores[{i}].{f}");
            check_name(&s.name).map_err(|r| err(at("name"), r))?;
            if !names.insert(s.name.clone()) {
                return Err(err(at("name"), format!("{:?} is listed twice", s.name)));
            }
            StorageUrl::parse(&s.storage).map_err(|e| err(at("storage"), e))?;
            let tz = s.time_zone.as_deref().unwrap_or("Etc/UTC");
            let schedule = Schedule::parse(&s.schedule, Dialect::Kubernetes, tz).map_err(|e| match e {
                ScheduleError::TimeZone(_) => err(at("timeZone"), e),
                ScheduleError::Expression { .. } => err(at("schedule"), e),
            })?;
            stores.push(StoreConfig {
                grace: duration(s.grace.as_deref().unwrap_or(DEFAULT_GRACE)).map_err(|r| err(at("grace"), r))?,
                verify_every: duration(s.verify_every.as_deref().unwrap_or(DEFAULT_VERIFY_EVERY))
                    .map_err(|r| err(at("verifyEvery"), r))?,
                name: s.name,
                storage: s.storage,
                schedule,
            });
        }
        let elasticsearch = raw
            .elasticsearch
            .map(|es| -> Result<_, ConfigError> {
                for (field, value) in [("repository", &es.repository), ("policy", &es.policy)] {
                    let bad = value.is_empty()
                        || value == "."
                        || value == ".."
                        || value.starts_with(['_', '-', '+'])
                        || value
                            .chars()
                            .any(|c| c.is_control() || c.is_uppercase() || "/\\*?\"<>| ,#".contains(c));
                    if bad {
                        return Err(err(
                            format!("elasticsearch.{field}"),
                            format!("{value:?} is not a valid Elasticsearch name"),
                        ));
                    }
                }
                Ok(ElasticsearchConfig {
                    grace: duration(es.grace.as_deref().unwrap_or(DEFAULT_GRACE))
                        .map_err(|r| err("elasticsearch.grace", r))?,
                    repository: es.repository,
                    policy: es.policy,
                })
            })
            .transpose()?;
        if stores.is_empty() && elasticsearch.is_none() {
            return Err(err("config", "nothing to watch: no stores and no elasticsearch"));
        }
        Ok(Config { stores, elasticsearch })
    }
}

/// Store names become label values and chart object names: keep them DNS-label-like.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be 1-40 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration like 1h or 7d: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config() {
        let c = Config::parse(
            r#"{"stores":[{"name":"stackgraph","storage":"s3://sts-stackgraph-backup","schedule":"0 3 * * *",
                "timeZone":"Europe/Amsterdam","grace":"2h","verifyEvery":"0s"}],
                "elasticsearch":{"repository":"sts-backup","policy":"auto-sts-backup"}}"#,
        )
        .unwrap();
        assert_eq!(c.stores[0].grace, Duration::from_secs(7200));
        assert_eq!(c.stores[0].verify_every, Duration::ZERO);
        assert_eq!(c.stores[0].schedule.time_zone(), chrono_tz::Europe::Amsterdam);
        assert_eq!(c.elasticsearch.unwrap().grace, Duration::from_secs(3600));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                r#"{"stores":[{"name":"A","storage":"file:///x","schedule":"0 3 * * *"}]}"#,
                "stores[0].name",
            ),
            (
                r#"{"stores":[{"name":"a","storage":"ftp://x","schedule":"0 3 * * *"}]}"#,
                "stores[0].storage",
            ),
            (
                r#"{"stores":[{"name":"a","storage":"file:///x","schedule":"0 0 3 * * ?"}]}"#,
                "stores[0].schedule",
            ),
            (
                r#"{"stores":[{"name":"a","storage":"file:///x","schedule":"0 3 * * *","timeZone":"CEST"}]}"#,
                "stores[0].timeZone",
            ),
            (
                r#"{"stores":[{"name":"a","storage":"file:///x","schedule":"0 3 * * *","grace":"soon"}]}"#,
                "stores[0].grace",
            ),
            (
                r#"{"stores":[{"name":"a","storage":"file:///x","schedule":"@daily"},{"name":"a","storage":"file:///y","schedule":"@daily"}]}"#,
                "stores[1].name",
            ),
            (
                r#"{"elasticsearch":{"repository":"..","policy":"p"}}"#,
                "elasticsearch.repository",
            ),
            (r#"{"stores":[],"unknown":1}"#, "config"),
            (r#"{}"#, "config"),
        ];
        for (text, field) in cases {
            let e = Config::parse(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
