//! Destroy right after create: the container's init gets the halt signal
//! even when the first one arrives before it has installed its handler.
//!
//! Destroy logs how it stopped each container in a debug event "container
//! stopped" whose field `stop` is `shutdown` (init exited on the halt
//! signal) or `killed` (killed after the shutdown timeout). The tests
//! record those events on their own thread and assert the path taken.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use berth_core::{Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::config::{KEY_IMAGE, KEY_SHUTDOWN_TIMEOUT};
use common::{TestEnv, machine};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::Registry;

/// Fields of one "container stopped" event.
#[derive(Debug, Default, Clone)]
struct StopEvent {
    message: String,
    container: String,
    stop: String,
    halt_signals: u64,
}

impl Visit for StopEvent {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "container" => self.container = value.to_owned(),
            "stop" => self.stop = value.to_owned(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "halt_signals" {
            self.halt_signals = value;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

/// Recorder of the "container stopped" events of the current thread.
#[derive(Clone, Default)]
struct StopEvents(Arc<Mutex<Vec<StopEvent>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StopEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let mut fields = StopEvent::default();
        event.record(&mut fields);
        if fields.message == "container stopped" {
            self.0.lock().unwrap().push(fields);
        }
    }
}

impl StopEvents {
    /// Runs `work` with this recorder as the thread's subscriber.
    fn record<T>(&self, work: impl FnOnce() -> T) -> T {
        let subscriber = Registry::default().with(self.clone());
        tracing::subscriber::with_default(subscriber, work)
    }

    fn take(&self) -> Vec<StopEvent> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Creates machine `id`, destroys it at once and returns the stop event
/// of that destroy.
fn create_then_destroy(
    manager: &LxcManager,
    network: &NetworkConfig,
    id: &str,
    events: &StopEvents,
) -> StopEvent {
    let (instance, _) = manager.create_container(&machine(id), "", network).unwrap();
    events.record(|| manager.destroy_container(&instance.id).unwrap());
    let mut recorded = events.take();
    assert_eq!(
        recorded.len(),
        1,
        "destroy of {} logged {recorded:?}",
        instance.id
    );
    let event = recorded.remove(0);
    assert_eq!(event.container, instance.id.as_str());
    assert!(
        manager.list_containers().unwrap().is_empty(),
        "{} is still listed after destroy",
        instance.id
    );
    event
}

#[test]
fn destroy_after_create_shuts_down() {
    let env = TestEnv::new("stopnow", None);
    // The timeout is long so that a slow clean stop on a loaded host is
    // not killed. The assertions check the way each container stopped.
    let manager = LxcManager::new(env.config("juju").with(KEY_SHUTDOWN_TIMEOUT, "30")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let events = StopEvents::default();

    for index in 0..5 {
        let event = create_then_destroy(&manager, &network, &index.to_string(), &events);
        assert_eq!(
            event.stop, "shutdown",
            "machine {index} was not stopped by its halt signal: {event:?}"
        );
        assert!(event.halt_signals >= 1, "{event:?}");
    }
    env.cleanup();
}

/// Packs the busybox image, with an init that only installs its handler
/// for the halt signal after `delay_seconds`, into `<directory>/slow.tar`.
fn slow_init_tarball(directory: &Path, delay_seconds: u32) -> PathBuf {
    let rootfs = directory.join("slow-rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    berth_lxc::image::busybox::build_rootfs(Path::new("/bin/busybox"), &rootfs).unwrap();
    let init = format!(
        "#!/bin/sh\nexport PATH=/bin:/sbin\nsleep {delay_seconds}\ntrap 'exit 0' PWR\nwhile true; do\n    sleep 2147483647 &\n    wait $!\ndone\n"
    );
    std::fs::write(rootfs.join("sbin/init"), init).unwrap();
    let archive = directory.join("slow.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", &rootfs).unwrap();
    builder.into_inner().unwrap();
    archive
}

#[test]
fn early_halt_signal_is_repeated() {
    let env = TestEnv::new("stopslow", None);
    // The init ignores every halt signal during its first second, so the
    // first signal of the destroy is lost and a later one must stop it.
    let archive = slow_init_tarball(&env.base, 1);
    let manager = LxcManager::new(
        env.config("juju")
            .with(KEY_IMAGE, archive.to_str().unwrap())
            .with(KEY_SHUTDOWN_TIMEOUT, "30"),
    )
    .unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let events = StopEvents::default();

    let event = create_then_destroy(&manager, &network, "0", &events);
    assert_eq!(
        event.stop, "shutdown",
        "the init was killed instead of stopped by a repeated halt signal: {event:?}"
    );
    assert!(
        event.halt_signals >= 2,
        "the init ignores the halt signal for a second after it starts, so the first signal must have been lost: {event:?}"
    );
    env.cleanup();
}

#[test]
fn zero_timeout_kills() {
    let env = TestEnv::new("stopkill", None);
    let manager = LxcManager::new(env.config("juju").with(KEY_SHUTDOWN_TIMEOUT, "0")).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let events = StopEvents::default();

    let event = create_then_destroy(&manager, &network, "0", &events);
    assert_eq!(event.stop, "killed", "{event:?}");
    assert_eq!(event.halt_signals, 0, "{event:?}");
    env.cleanup();
}
