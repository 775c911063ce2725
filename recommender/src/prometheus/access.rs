//! How to reach Prometheus, as command-line flags both binaries share: authentication, TLS and
//! the label matchers added to every query. The URL and the query settings stay with each
//! binary.

use std::path::{Path, PathBuf};

use super::Auth;

/// Authentication, TLS and extra matchers (`--prometheus-*`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Access {
    /// A file holding a bearer token.
    #[arg(long, env = "TAILOR_PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// Basic-auth user (with --prometheus-password-file).
    #[arg(long, env = "TAILOR_PROMETHEUS_USER")]
    pub prometheus_user: Option<String>,
    /// A file holding the basic-auth password.
    #[arg(long, env = "TAILOR_PROMETHEUS_PASSWORD_FILE")]
    pub prometheus_password_file: Option<PathBuf>,
    /// An extra CA certificate (PEM) for the Prometheus server.
    #[arg(long, env = "TAILOR_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Do not verify the Prometheus server's certificate.
    #[arg(long, env = "TAILOR_PROMETHEUS_INSECURE_SKIP_VERIFY")]
    pub prometheus_insecure_skip_verify: bool,
    /// Label matchers added to every query, e.g. `cluster="prod"`.
    #[arg(long, env = "TAILOR_PROMETHEUS_EXTRA_MATCHERS", default_value = "")]
    pub prometheus_extra_matchers: String,
}

fn read_secret(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

impl Access {
    /// The authentication the flags ask for, its secrets read from their files.
    pub fn auth(&self) -> Result<Auth, String> {
        match (
            &self.prometheus_token_file,
            &self.prometheus_user,
            &self.prometheus_password_file,
        ) {
            (Some(token), None, None) => Ok(Auth::Bearer(read_secret(token)?)),
            (None, Some(user), Some(password)) => Ok(Auth::Basic {
                user: user.clone(),
                password: read_secret(password)?,
            }),
            (None, None, None) => Ok(Auth::None),
            _ => Err("use either --prometheus-token-file or --prometheus-user with --prometheus-password-file".into()),
        }
    }
}
