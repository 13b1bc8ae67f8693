//! The berth LXC manager on a bridge and lxc path of its own.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use berth_core::progress::{Progress, ProgressEvent};
use berth_core::{ContainerDirs, ManagerConfig, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::bridge;
use berth_lxc::config::{KEY_CONTAINERS_DIR, KEY_LOG_DIR, KEY_LXC_PATH, KEY_NAME, KEY_REMOVED_DIR};
use berth_lxc::container::{Container, ContainerState, ListKind, list_containers, lock_file_path};
use berth_lxc::template::is_template_name;

use super::{bench_dir, remove_tree};

/// Directories, bridge and manager name of one benchmark.
pub struct LxcEnv {
    /// Root of everything on disk: `ROOT/<tag>`.
    pub base: PathBuf,
    /// The bridge, `bb-<tag>`.
    pub bridge: String,
    /// The manager name, `bb<tag>`; containers are `bb<tag>-machine-<id>`.
    pub manager_name: String,
}

impl LxcEnv {
    /// Removes what an earlier run with the same `tag` left, then creates
    /// the directories and the bridge. `tag` is at most 12 characters so that
    /// the bridge name fits in an interface name.
    pub fn new(tag: &str) -> Self {
        assert!(tag.len() <= 12, "tag {tag:?} is too long for a bridge name");
        let env = Self {
            base: bench_dir(tag),
            bridge: format!("bb-{tag}"),
            manager_name: format!("bb{tag}"),
        };
        env.cleanup();
        std::fs::create_dir_all(env.lxc_path()).unwrap();
        std::fs::create_dir_all(env.log_dir()).unwrap();
        bridge::ensure_bridge(&env.bridge, None)
            .unwrap_or_else(|error| panic!("create bridge {}: {error}", env.bridge));
        env
    }

    /// Returns the lxc path of berth's containers.
    pub fn lxc_path(&self) -> PathBuf {
        self.base.join("lxc")
    }

    /// Returns the host log directory bind-mounted into containers.
    pub fn log_dir(&self) -> PathBuf {
        self.base.join("log")
    }

    /// Returns the per-container directories.
    pub fn dirs(&self) -> ContainerDirs {
        ContainerDirs::under(self.base.join("containers"))
    }

    /// Returns the manager configuration: everything under `base`, the
    /// embedded busybox image and defaults for the rest.
    pub fn config(&self) -> ManagerConfig {
        let dirs = self.dirs();
        ManagerConfig::new()
            .with(KEY_NAME, self.manager_name.as_str())
            .with(KEY_LXC_PATH, self.lxc_path().to_str().unwrap())
            .with(KEY_LOG_DIR, self.log_dir().to_str().unwrap())
            .with(KEY_CONTAINERS_DIR, dirs.containers_root().to_str().unwrap())
            .with(KEY_REMOVED_DIR, dirs.removed_root().to_str().unwrap())
    }

    /// Returns a manager of this environment's configuration.
    pub fn manager(&self) -> LxcManager {
        LxcManager::new(self.config()).expect("create LXC manager")
    }

    /// Returns the network of every container: a veth on the bridge.
    pub fn network(&self) -> NetworkConfig {
        NetworkConfig::bridge(&self.bridge).unwrap()
    }

    /// Returns the name of container `id`.
    pub fn container_name(&self, id: &str) -> String {
        berth_core::container_name(&self.manager_name, id).unwrap()
    }

    /// Returns the template container berth built in the lxc path.
    pub fn template(&self) -> String {
        list_containers(&self.lxc_path(), ListKind::Defined)
            .unwrap()
            .into_iter()
            .find(|name| is_template_name(name))
            .expect("berth has built its template; create one container first")
    }

    /// Makes `count` stopped containers, numbered from `first`, as overlay
    /// snapshot clones of berth's template through liblxc. berth's create
    /// always starts a container, so this is how a list gets defined but
    /// stopped ones.
    pub fn define_stopped(&self, first: usize, count: usize) {
        let template = self.template();
        for index in first..first + count {
            let name = self.container_name(&index.to_string());
            berth_lxc::template::clone_template(&self.lxc_path(), &template, &name, true)
                .unwrap_or_else(|error| panic!("clone {name}: {error}"));
        }
    }

    /// Destroys every container of the lxc path (clones first, because
    /// liblxc refuses to destroy a template that has clones), deletes the
    /// bridge and liblxc's lock directory and removes `base`.
    pub fn cleanup(&self) {
        destroy_all(&self.lxc_path());
        let _ = bridge::delete_bridge(&self.bridge);
        remove_tree(&self.base);
        // liblxc keeps per-container lock files under /run/lxc/lock/<lxc path>.
        remove_tree(&Path::new("/run/lxc/lock").join(self.base.strip_prefix("/").unwrap()));
    }
}

impl Drop for LxcEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Stops and destroys every container in `lxc_path`, clones before
/// templates, and removes liblxc's lock files of that path.
pub fn destroy_all(lxc_path: &Path) {
    if !lxc_path.is_dir() {
        return;
    }
    let names = list_containers(lxc_path, ListKind::All).unwrap_or_default();
    let (templates, clones): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|name| is_template_name(name) || name.contains("tmpl"));
    for name in clones.into_iter().chain(templates) {
        if let Ok(container) = Container::new(&name, lxc_path) {
            if container
                .state()
                .is_ok_and(|state| state != ContainerState::Stopped)
            {
                let _ = container.stop();
            }
            if let Err(error) = container.destroy() {
                eprintln!("warning: could not destroy leftover container {name}: {error}");
            }
        }
    }
    if let Some(locks) = lock_file_path(lxc_path, "x").parent() {
        remove_tree(locks);
    }
}

/// A [`Progress`] that records how long each create step took.
#[derive(Default)]
pub struct StepTimes {
    steps: Mutex<Vec<(&'static str, Duration)>>,
}

impl StepTimes {
    /// Returns the steps recorded so far and clears them.
    pub fn take(&self) -> Vec<(&'static str, Duration)> {
        std::mem::take(&mut *self.steps.lock().unwrap())
    }
}

impl Progress for StepTimes {
    fn report(&self, event: &ProgressEvent<'_>) {
        if let ProgressEvent::StepFinished { step, elapsed, .. } = event {
            self.steps.lock().unwrap().push((step.as_str(), *elapsed));
        }
    }
}
