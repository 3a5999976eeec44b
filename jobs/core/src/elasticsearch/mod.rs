//! Elasticsearch snapshot repository, SLM policy, list and restore (owned by the es-snapshot-register work).
