//! Retention: which backups to keep and the pruning run (owned by the retention-pruner work).
