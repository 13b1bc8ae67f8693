//! The string map a manager is constructed from.

use std::collections::BTreeMap;

/// Key of the manager name, which namespaces every container (required).
pub const CONFIG_KEY_NAME: &str = "name";
/// Key of the host directory bind-mounted into containers for agent logs.
pub const CONFIG_KEY_LOG_DIR: &str = "log-dir";
/// Default of [`CONFIG_KEY_LOG_DIR`].
pub const DEFAULT_LOG_DIR: &str = "/var/log/juju";

/// Configuration given to a manager's constructor, as string keys and
/// values. The constructor takes each key it knows with
/// [`ManagerConfig::pop_value`] and then calls
/// [`ManagerConfig::warn_about_unused`] for whatever is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagerConfig {
    values: BTreeMap<String, String>,
}

impl ManagerConfig {
    /// Creates an empty configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.values.insert(key.into(), value.into());
        self
    }

    /// Returns a copy of this configuration with `key` set to `value`.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// Returns the value of `key` without removing it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Removes `key` and returns its value, or `None` when it is missing.
    pub fn pop_value(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    /// Removes `key` and returns its value, or `default` when it is missing
    /// or empty.
    pub fn pop_or(&mut self, key: &str, default: &str) -> String {
        match self.values.remove(key) {
            Some(value) if !value.is_empty() => value,
            _ => default.to_owned(),
        }
    }

    /// Returns the keys still present, in sorted order.
    pub fn unused_keys(&self) -> Vec<&str> {
        self.values.keys().map(String::as_str).collect()
    }

    /// Logs one warning per key still present, in sorted order, naming
    /// `owner` (such as `lxc manager`) as the one that ignored it. Values
    /// are not logged, because a misspelt key may hold a secret.
    pub fn warn_about_unused(&self, owner: &str) {
        for key in self.values.keys() {
            tracing::warn!(
                owner,
                key = key.as_str(),
                "unused manager config key {key:?}"
            );
        }
    }

    /// Returns true when no key is left.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for ManagerConfig {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            values: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop_value_removes_key() {
        let mut config = ManagerConfig::new()
            .with("name", "juju")
            .with("log-dir", "/tmp/x");
        assert_eq!(config.pop_value("name").as_deref(), Some("juju"));
        assert_eq!(config.pop_value("name"), None);
        assert_eq!(config.unused_keys(), vec!["log-dir"]);
    }

    #[test]
    fn pop_value_missing_is_none() {
        let mut config = ManagerConfig::new();
        assert_eq!(config.pop_value("name"), None);
        assert_eq!(config.pop_or("log-dir", DEFAULT_LOG_DIR), DEFAULT_LOG_DIR);
    }

    #[test]
    fn pop_or_treats_empty_as_missing() {
        let mut config = ManagerConfig::new().with("log-dir", "");
        assert_eq!(config.pop_or("log-dir", DEFAULT_LOG_DIR), DEFAULT_LOG_DIR);
        assert!(config.is_empty());
    }
}
