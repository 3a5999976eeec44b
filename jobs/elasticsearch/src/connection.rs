//! How to reach Elasticsearch, as flags with their env twins: one definition for every binary
//! that talks to it (`es-snapshot-register`, `backup-monitor`).

use std::path::PathBuf;

use clap::Args;

use crate::client::{EsAuth, EsClient, EsConfig};
use crate::error::Result;

#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Elasticsearch URL (a bare host:port gets http://).
    #[arg(
        long,
        env = "ELASTICSEARCH_ENDPOINT",
        default_value = "http://localhost:9200",
        global = true
    )]
    pub es_url: String,

    /// Elasticsearch user for basic auth (password from ES_PASSWORD or ES_PASSWORD_FILE).
    #[arg(long, env = "ES_USERNAME", global = true)]
    pub es_username: Option<String>,

    /// File holding the Elasticsearch password.
    #[arg(long, env = "ES_PASSWORD_FILE", value_name = "FILE", global = true)]
    pub es_password_file: Option<PathBuf>,

    /// File holding the Elasticsearch API key.
    #[arg(long, env = "ES_API_KEY_FILE", value_name = "FILE", global = true)]
    pub es_api_key_file: Option<PathBuf>,

    /// PEM bundle of extra CA certificates for TLS to Elasticsearch.
    #[arg(long, env = "ES_CA_BUNDLE", value_name = "FILE", global = true)]
    pub es_ca_bundle: Option<PathBuf>,
}

impl ConnectionArgs {
    /// The client these flags describe. `ES_PASSWORD` and `ES_API_KEY` are read from the
    /// environment only, never from argv.
    pub fn client(&self) -> Result<EsClient> {
        let env = |k: &str| std::env::var(k).ok();
        let auth = EsAuth::from_sources(
            self.es_username.clone(),
            env("ES_PASSWORD"),
            self.es_password_file.clone(),
            env("ES_API_KEY"),
            self.es_api_key_file.clone(),
        )?;
        EsClient::new(&EsConfig {
            url: self.es_url.clone(),
            auth,
            ca_bundle: self.es_ca_bundle.clone(),
        })
    }
}
