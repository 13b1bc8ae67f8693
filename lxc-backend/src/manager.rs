//! The LXC manager: the [`Manager`] contract over liblxc.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_core::error::BoxError;
use berth_core::hardware::host_arch;
use berth_core::progress::{Progress, Step};
use berth_core::{
    ContainerDirs, Error, HardwareCharacteristics, Instance, InstanceId, MachineConfig, Manager,
    ManagerConfig, NetworkConfig, Result,
};

use crate::cgroup::CgroupLayout;
use crate::config::Settings;
use crate::image::simplestreams::{Client, ImageQuery};
use crate::image::{ImageSource, ResolvedImage, RootfsContent, busybox, short_hash, slug_part};

/// How long a simplestreams look-up is reused before the index is read
/// again, so a long-lived manager picks up new image builds.
const IMAGE_LOOKUP_TTL: Duration = Duration::from_secs(600);

/// Creates, destroys and lists LXC containers through liblxc, in-process.
///
/// Containers are named `<manager name>-<machine tag>` and live in the
/// configured lxc path. Each is a snapshot clone of a template container
/// built once per image (see [`crate::template`]): a btrfs snapshot when the
/// lxc path is on btrfs, an overlay clone otherwise, or a full copy when
/// `backing-store` is `copy`. The manager is
/// `Send + Sync`; liblxc calls from all threads are serialised by the lock
/// described in [`crate::container`].
pub struct LxcManager {
    pub(crate) settings: Settings,
    pub(crate) cgroups: CgroupLayout,
    busybox_slug: OnceLock<String>,
    lookups: Mutex<HashMap<String, (Instant, ResolvedImage)>>,
    #[cfg(feature = "fault-injection")]
    pub(crate) fault_hook: Mutex<Option<std::sync::Arc<crate::fault::FaultHook>>>,
}

impl std::fmt::Debug for LxcManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LxcManager")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LxcManager {
    /// Creates a manager from `config`, taking the keys listed in
    /// [`crate::config`] and warning about any other. Fails when the name is
    /// missing or any value is invalid. Nothing is created on disk until a
    /// container is.
    pub fn new(config: ManagerConfig) -> Result<Self> {
        let settings = Settings::from_config(config)?;
        tracing::info!(
            manager = settings.name.as_str(),
            lxc_path = %settings.lxc_path.display(),
            image = ?settings.image,
            "lxc manager ready"
        );
        Ok(Self {
            settings,
            cgroups: CgroupLayout::detect(),
            busybox_slug: OnceLock::new(),
            lookups: Mutex::new(HashMap::new()),
            #[cfg(feature = "fault-injection")]
            fault_hook: Mutex::new(None),
        })
    }

    /// Returns the manager name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Returns the lxc path that contains this manager's containers.
    pub fn lxc_path(&self) -> &Path {
        &self.settings.lxc_path
    }

    /// Returns the per-container directories.
    pub fn dirs(&self) -> &ContainerDirs {
        &self.settings.dirs
    }

    /// Returns the parsed configuration.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Resolves the configured image for `series` to its content. A
    /// simplestreams image is looked up in the server's index here but only
    /// downloaded when its template has to be built.
    pub(crate) fn resolve_image(
        &self,
        series: &str,
    ) -> std::result::Result<ResolvedImage, BoxError> {
        match &self.settings.image {
            ImageSource::Busybox => {
                let binary = PathBuf::from(busybox::DEFAULT_BUSYBOX);
                let slug = match self.busybox_slug.get() {
                    Some(slug) => slug.clone(),
                    None => {
                        // The binary's size, modification time and inode
                        // change when the package is upgraded, so they name
                        // its content without reading 2 MB on every start.
                        let meta = std::fs::metadata(&binary).map_err(|error| Error::Host {
                            message: format!(
                                "the busybox image needs the static busybox at {}: apt-get install busybox-static",
                                binary.display()
                            ),
                            source: Some(Box::new(error)),
                        })?;
                        let slug = format!(
                            "busybox-{}",
                            short_hash(&[
                                &busybox::LAYOUT_VERSION.to_le_bytes(),
                                &meta.len().to_le_bytes(),
                                &modified_nanos(&meta).to_le_bytes(),
                                &std::os::unix::fs::MetadataExt::ino(&meta).to_le_bytes(),
                            ])
                        );
                        self.busybox_slug.get_or_init(|| slug).clone()
                    }
                };
                Ok(ResolvedImage {
                    slug,
                    content: RootfsContent::Busybox(binary),
                })
            }
            ImageSource::Tarball(path) => {
                let meta = std::fs::metadata(path)
                    .map_err(|error| Error::io("read image tarball", path.clone(), error))?;
                let modified = modified_nanos(&meta);
                let stem = path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .unwrap_or("rootfs");
                let stem = stem.split(".t").next().unwrap_or(stem);
                let hash = short_hash(&[
                    path.as_os_str().as_encoded_bytes(),
                    &meta.len().to_le_bytes(),
                    &modified.to_le_bytes(),
                ]);
                Ok(ResolvedImage {
                    slug: format!("{}-{hash}", slug_part(stem)),
                    content: RootfsContent::Tarball(path.clone()),
                })
            }
            ImageSource::Simplestreams(url) => {
                let mut lookups = self
                    .lookups
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((when, image)) = lookups.get(series)
                    && when.elapsed() < IMAGE_LOOKUP_TTL
                {
                    return Ok(image.clone());
                }
                let client = Client::new(url);
                let query = ImageQuery {
                    os: self.settings.image_os.clone(),
                    release: series.to_owned(),
                    arch: host_arch().to_owned(),
                    variant: self.settings.image_variant.clone(),
                };
                let remote = client.find(&query)?;
                let slug = format!("{}-{}", slug_part(&remote.product), &remote.sha256[..12]);
                let image = ResolvedImage {
                    slug,
                    content: RootfsContent::Remote {
                        base_url: url.clone(),
                        image: remote,
                        cache_dir: self.settings.image_cache_dir.clone(),
                    },
                };
                lookups.insert(series.to_owned(), (Instant::now(), image.clone()));
                Ok(image)
            }
        }
    }
}

/// Fault points compiled to nothing without the `fault-injection` feature
/// (see `fault.rs`).
#[cfg(not(feature = "fault-injection"))]
impl LxcManager {
    #[inline(always)]
    pub(crate) fn fault_after(&self, _name: &str, _step: berth_core::progress::Step) -> Result<()> {
        Ok(())
    }

    #[inline(always)]
    pub(crate) fn fault_template_built(&self, _building: &str) -> Result<()> {
        Ok(())
    }
}

/// Returns the modification time of a file in nanoseconds since the epoch,
/// or 0 when the file system does not record it.
fn modified_nanos(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |time| time.as_nanos())
}

impl Manager for LxcManager {
    fn create_container_with_progress(
        &self,
        machine: &MachineConfig,
        series: &str,
        network: &NetworkConfig,
        progress: &dyn Progress,
    ) -> Result<(Instance, HardwareCharacteristics)> {
        crate::create::create(self, machine, series, network, progress)
    }

    fn destroy_container(&self, id: &InstanceId) -> Result<()> {
        crate::destroy::destroy(self, id)
    }

    fn list_containers(&self) -> Result<Vec<Instance>> {
        crate::list::list(self)
    }

    fn collect_garbage(&self) -> Result<Vec<InstanceId>> {
        let prefix = berth_core::manager::container_prefix(&self.settings.name);
        let mut removed = Vec::new();
        for half_made in self.settings.dirs.half_made(&prefix)? {
            if !berth_core::is_container_of(&self.settings.name, &half_made.name) {
                continue;
            }
            let id = InstanceId::new(half_made.name.as_str())?;
            tracing::info!(
                container = id.as_str(),
                "removing a container whose create died half way"
            );
            // The create lock is held through `half_made`, so destroy
            // must not wait for it.
            crate::destroy::destroy_locked(self, id.as_str())?;
            removed.push(id);
        }
        // Template builds are shared by every manager of the lxc path, and
        // one whose builder died is never used, so it goes too.
        let builds = crate::template::remove_dead_builds(&self.settings.lxc_path)
            .map_err(|error| Error::step(&self.settings.name, Step::Template, error))?;
        for template in builds {
            tracing::info!(
                template = template.as_str(),
                "removed a template build whose builder died"
            );
        }
        Ok(removed)
    }
}
