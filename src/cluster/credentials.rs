//! The etcd user roster signs in as, from `[cluster] username` and
//! `password_file`. Read and checked once at start-up, so that a missing
//! or empty file stops roster naming the setting and the file, instead of
//! showing later as etcd refusing it.
//!
//! Owns: reading the password file. Must not: sign in (see
//! [`super::etcd`]), or show the password anywhere.

use std::path::Path;

use tracing::warn;

use crate::config::{ClusterConfig, ConfigError, Secret};

/// Where the errors of this module say they come from.
const ORIGIN: &str = "etcd credentials";

/// An etcd user and its password. Debug hides the password.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// The credentials `config` names, `None` if it names none.
/// [`ClusterConfig`]'s validation has made sure the two settings go
/// together.
pub fn from_config(config: &ClusterConfig) -> Result<Option<Credentials>, ConfigError> {
    if config.username.is_empty() {
        return Ok(None);
    }
    let password = read_password(&config.password_file)?;
    if config.etcd.iter().any(|url| url.starts_with("http://")) {
        // etcd takes the password as it comes, so without TLS anyone on
        // the path can read it; etcdctl allows it, and so does roster.
        warn!(
            username = %config.username,
            "cluster.username over http://: the password crosses the network unencrypted"
        );
    }
    Ok(Some(Credentials {
        username: config.username.clone(),
        password,
    }))
}

/// The first line of `path`, without its line ending.
fn read_password(path: &Path) -> Result<Secret, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        origin: ORIGIN.to_owned(),
        key: "cluster.password_file",
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|error| invalid(format!("cannot read {}: {error}", path.display())))?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(invalid(format!(
            "{}: the first line, the password, is empty",
            path.display()
        )));
    }
    warn_if_readable_by_others(path);
    Ok(Secret(password.to_owned()))
}

/// A password file others may read is worth a word, as ssh says of keys;
/// roster still starts (the operator may have reasons).
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        warn!(
            file = %path.display(),
            "cluster.password_file may be read by other users: chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(username: &str, password_file: &Path) -> ClusterConfig {
        ClusterConfig {
            etcd: vec!["https://127.0.0.1:2379".into()],
            username: username.into(),
            password_file: password_file.into(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn the_first_line_is_the_password_and_debug_hides_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("password");
        std::fs::write(&file, "s3cret pass\r\nignored\n").expect("write");
        let credentials = from_config(&config("roster", &file))
            .expect("readable")
            .expect("named");
        assert_eq!(credentials.username, "roster");
        assert_eq!(credentials.password.0, "s3cret pass");
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }

    #[test]
    fn no_username_is_no_credentials() {
        let unset = from_config(&ClusterConfig::default()).expect("nothing to read");
        assert!(unset.is_none());
    }

    #[test]
    fn a_missing_or_empty_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\nsecond line\n").expect("write");
        for file in [missing, empty] {
            let error = from_config(&config("roster", &file))
                .expect_err("no password")
                .to_string();
            assert!(error.contains("cluster.password_file"), "{error}");
            assert!(error.contains(&file.display().to_string()), "{error}");
        }
    }
}
