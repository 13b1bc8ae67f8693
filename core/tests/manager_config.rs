//! Warnings about manager configuration keys that no one used.

use std::io::Write;
use std::sync::{Arc, Mutex};

use berth_core::ManagerConfig;

/// Collects everything a `fmt` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `work` under a subscriber that captures every event as text lines.
fn capture_logs(work: impl FnOnce()) -> Vec<String> {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, work);
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_owned).collect()
}

#[test]
fn one_warning_per_unused_key_sorted() {
    let mut config: ManagerConfig = [
        ("zeta", "1"),
        ("name", "juju"),
        ("alpha", "2"),
        ("log-dir", "/x"),
        ("mid", "secret-value"),
    ]
    .into_iter()
    .collect();
    assert_eq!(config.pop_value("name").as_deref(), Some("juju"));
    assert_eq!(config.pop_or("log-dir", "/var/log/juju"), "/x");

    let lines = capture_logs(|| config.warn_about_unused("lxc manager"));
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (line, key) in lines.iter().zip(["alpha", "mid", "zeta"]) {
        assert!(line.contains("WARN"), "{line}");
        assert!(
            line.contains(&format!("unused manager config key \"{key}\"")),
            "{line}"
        );
        assert!(line.contains("owner=\"lxc manager\""), "{line}");
    }
    assert!(
        !lines.iter().any(|line| line.contains("secret-value")),
        "a value was logged: {lines:#?}"
    );
}

#[test]
fn no_warning_when_all_keys_used() {
    let mut config = ManagerConfig::new().with("name", "juju");
    config.pop_value("name");
    let lines = capture_logs(|| config.warn_about_unused("lxc manager"));
    assert_eq!(lines, Vec::<String>::new());
}

#[test]
fn warnings_stable_across_insert_order() {
    let forward: ManagerConfig = [("b", "1"), ("a", "1"), ("c", "1")].into_iter().collect();
    let backward: ManagerConfig = [("c", "1"), ("a", "1"), ("b", "1")].into_iter().collect();
    let first = capture_logs(|| forward.warn_about_unused("virt manager"));
    let second = capture_logs(|| backward.warn_about_unused("virt manager"));
    assert_eq!(first, second);
    assert_eq!(first.len(), 3);
}
