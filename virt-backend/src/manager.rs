//! [`VirtManager`]: creates, destroys and lists VMs through libvirt.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_core::pending::CreateGuard;
use berth_core::progress::run_step;
use berth_core::userdata::write_user_data_for_host;
use berth_core::{
    Error, HardwareCharacteristics, Instance, InstanceId, InstanceStatus, MachineConfig, Manager,
    ManagerConfig, NetworkConfig, Progress, Result, Step, container_name,
};
use tracing::{debug, info, warn};
use virt::domain::DomainState;
use virt::error::ErrorNumber;

use crate::config::{VirtConfig, validate_series};
use crate::create_lock::wait_for_create;
use crate::handle::{AddressSource, Connection, DomainHandle, PoolHandle};
use crate::image::{BaseImage, ImportContext, ensure_base_image, remove_dead_imports};
use crate::platform::{GuestPlatform, backend, choose_platform};
use crate::reconnect::{ReconnectingConnection, Retry};
use crate::seed::{MetaData, Seed, network_config};
use crate::spec::{
    CONSOLE_LOG, DomainSpec, Resources, domain_document, random_mac, resources, root_volume_name,
    seed_volume_name,
};
use crate::volumes::{create_volume, delete_volume, has_code, lookup_volume, upload_bytes};
use crate::xml::storage::{BackingStore, Capacity, Format, StorageVolume, VolumeTarget};
use crate::xml::to_xml;

/// How long a started domain may take to report that it runs.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);
const MIB: u64 = 1 << 20;

/// A [`Manager`] of libvirt VMs.
///
/// Each VM is a domain named `<manager name>-machine-<n>...` with a qcow2
/// root disk that overlays the series' base image, a NoCloud seed disk,
/// one NIC, and a directory on this host that contains its cloud-init file
/// and console log. One libvirt connection is shared by all calls; libvirt
/// serialises what it must itself.
///
/// When the daemon goes away (a libvirtd restart), the call that finds the
/// connection lost fails with an error that names the URI, and the
/// connection is reopened at that URI. List and destroy then run once more
/// on the new connection; a create fails, because it may have made part of
/// the VM, and the next create works.
pub struct VirtManager {
    config: VirtConfig,
    connection: ReconnectingConnection,
    platform: GuestPlatform,
    #[cfg(feature = "fault-injection")]
    pub(crate) fault_hook: std::sync::Mutex<Option<std::sync::Arc<crate::fault::FaultHook>>>,
}

impl std::fmt::Debug for VirtManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtManager")
            .field("config", &self.config)
            .field("platform", &self.platform)
            .finish()
    }
}

/// Opens a connection to `uri`, or explains how to make it reachable.
pub(crate) fn connect(uri: &str) -> Result<Connection> {
    Connection::open(uri).map_err(|error| Error::Host {
        message: format!(
            "cannot connect to libvirt at {uri:?}; for a local URI start the daemons \
             (mkdir -p /var/log/libvirt /var/run/libvirt; virtlogd -d; libvirtd -d) and check the URI"
        ),
        source: Some(Box::new(error)),
    })
}

impl VirtManager {
    /// Creates a manager from `config` (keys in [`crate::config`]): checks
    /// every key, opens the libvirt connection and chooses the guest
    /// architecture and hypervisor type. Nothing is created.
    pub fn new(config: ManagerConfig) -> Result<Self> {
        let config = VirtConfig::from_manager_config(config)?;
        let connection = connect(&config.uri)?;
        Self::from_parts(config, connection)
    }

    /// Creates a manager from `config` that uses `connection` instead of
    /// opening one at the `uri` key. An agent can share one connection
    /// between managers this way. libvirt's test driver keeps its state in
    /// the connection, so there it is the only way for two objects to see
    /// the same domains and pools.
    pub fn with_connection(config: ManagerConfig, connection: Connection) -> Result<Self> {
        Self::from_parts(VirtConfig::from_manager_config(config)?, connection)
    }

    fn from_parts(config: VirtConfig, connection: Connection) -> Result<Self> {
        let platform = choose_platform(&connection, config.virt_type)?;
        info!(
            manager = config.name.as_str(),
            uri = config.uri.as_str(),
            virt_type = platform.virt_type.as_str(),
            "libvirt manager ready"
        );
        Ok(Self {
            connection: ReconnectingConnection::new(&config.uri, connection),
            config,
            platform,
            #[cfg(feature = "fault-injection")]
            fault_hook: std::sync::Mutex::new(None),
        })
    }

    /// Returns the validated configuration.
    pub fn config(&self) -> &VirtConfig {
        &self.config
    }

    /// Returns the libvirt connection: the newest one when it has been
    /// reopened after the daemon went away.
    pub fn connection(&self) -> &Connection {
        self.connection.current()
    }

    /// Returns the guest architecture and hypervisor type in use.
    pub fn platform(&self) -> &GuestPlatform {
        &self.platform
    }

    /// Returns the directory of container `name`.
    pub fn container_dir(&self, name: &str) -> Result<PathBuf> {
        self.config.dirs.container_dir(name)
    }

    fn pool(&self) -> Result<PoolHandle> {
        let name = &self.config.pool;
        let pool = self
            .connection()
            .lookup_storage_pool_by_name(name)
            .map(PoolHandle::new)
            .map_err(|error| Error::Host {
                message: format!(
                    "storage pool {name:?} not found at {}; run the libvirt initialiser",
                    self.config.uri
                ),
                source: Some(Box::new(error)),
            })?;
        if !pool.is_active().unwrap_or(false) {
            return Err(Error::Host {
                message: format!(
                    "storage pool {name:?} is not active; run the libvirt initialiser"
                ),
                source: None,
            });
        }
        Ok(pool)
    }

    fn lookup_domain(
        &self,
        name: &str,
    ) -> std::result::Result<Option<DomainHandle>, virt::error::Error> {
        match self.connection().lookup_domain_by_name(name) {
            Ok(domain) => Ok(Some(DomainHandle::new(domain))),
            Err(error) if has_code(&error, ErrorNumber::NoDomain) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Calls the fault hook after `step` (see `fault.rs`).
    #[cfg(feature = "fault-injection")]
    fn injected(&self, container: &str, step: Step) -> Result<()> {
        self.fault_step(container, step)
    }

    /// Fault points compile to nothing without the `fault-injection`
    /// feature.
    #[cfg(not(feature = "fault-injection"))]
    fn injected(&self, _container: &str, _step: Step) -> Result<()> {
        Ok(())
    }

    fn hardware(&self, resources: &Resources) -> HardwareCharacteristics {
        HardwareCharacteristics {
            arch: Some(self.platform.agent_arch()),
            mem: Some(resources.mem_mib),
            cpu_cores: Some(resources.cpu_cores),
            cpu_power: None,
            root_disk: Some(resources.root_disk_mib),
            virt_type: Some(self.platform.virt_type.clone()),
        }
    }
}

/// One undo action: what it undoes, and the action, which returns a
/// message when it fails.
type UndoAction<'a> = (
    String,
    Box<dyn FnOnce() -> std::result::Result<(), String> + 'a>,
);

/// Undo actions of a create, run newest first when it fails.
struct Undo<'a> {
    actions: Vec<UndoAction<'a>>,
}

impl<'a> Undo<'a> {
    fn new() -> Self {
        Self {
            actions: Vec::new(),
        }
    }

    fn push(
        &mut self,
        what: impl Into<String>,
        action: impl FnOnce() -> std::result::Result<(), String> + 'a,
    ) {
        self.actions.push((what.into(), Box::new(action)));
    }

    /// Runs every action and returns the failures as messages.
    fn run(self, container: &str) -> Vec<String> {
        let mut failures = Vec::new();
        for (what, action) in self.actions.into_iter().rev() {
            match action() {
                Ok(()) => debug!(container, undo = what.as_str(), "undone"),
                Err(error) => {
                    warn!(
                        container,
                        undo = what.as_str(),
                        error = error.as_str(),
                        "undo failed"
                    );
                    failures.push(format!("{what}: {error}"));
                }
            }
        }
        failures
    }

    fn forget(self) {}
}

impl Manager for VirtManager {
    fn create_container_with_progress(
        &self,
        machine: &MachineConfig,
        series: &str,
        network: &NetworkConfig,
        progress: &dyn Progress,
    ) -> Result<(Instance, HardwareCharacteristics)> {
        self.connection.run("create", Retry::Never, || {
            self.create_vm(machine, series, network, progress)
        })
    }

    fn destroy_container(&self, id: &InstanceId) -> Result<()> {
        let name = id.as_str();
        if !berth_core::is_container_of(&self.config.name, name) {
            return Err(berth_core::InvalidValue::new(
                "container name",
                name,
                format!(
                    "does not belong to manager {:?}: its VMs are named {}-machine-<machine id with '/' as '-'>",
                    self.config.name, self.config.name
                ),
            )
            .into());
        }
        let lock = wait_for_create(name, &self.container_dir(name)?)?;
        // A directory that appears while this destroy runs belongs to a
        // create that started after it, so it is left to that create.
        self.connection
            .run(&format!("destroy {id}"), Retry::Once, || {
                self.destroy_vm(id, lock.directory_existed)
            })
    }

    fn list_containers(&self) -> Result<Vec<Instance>> {
        self.connection.run("list", Retry::Once, || self.list_vms())
    }

    fn collect_garbage(&self) -> Result<Vec<InstanceId>> {
        let prefix = berth_core::manager::container_prefix(&self.config.name);
        let mut removed = Vec::new();
        for half_made in self.config.dirs.half_made(&prefix)? {
            if !berth_core::is_container_of(&self.config.name, &half_made.name) {
                continue;
            }
            let id = InstanceId::new(half_made.name.as_str())?;
            info!(
                container = id.as_str(),
                "removing a VM whose create died half way"
            );
            // `half_made` holds the create lock, so this destroy must not
            // wait for it.
            self.connection
                .run(&format!("destroy {id}"), Retry::Once, || {
                    self.destroy_vm(&id, true)
                })?;
            removed.push(id);
        }
        // Base image imports whose process died left `.partial` volumes.
        let dead_imports = self.pool().and_then(|pool| {
            remove_dead_imports(&pool, &self.config.lock_dir)
                .map_err(|error| backend("remove dead image imports", error))
        });
        if let Err(error) = dead_imports {
            warn!(error = %berth_core::error::error_chain(&error), "removing partial image imports failed");
        }
        Ok(removed)
    }
}

impl VirtManager {
    fn create_vm(
        &self,
        machine: &MachineConfig,
        series: &str,
        network: &NetworkConfig,
        progress: &dyn Progress,
    ) -> Result<(Instance, HardwareCharacteristics)> {
        let name = container_name(&self.config.name, &machine.machine_id)?;
        let name = name.as_str();
        let resources = run_step(progress, name, Step::Validate, || {
            self.validate(name, machine, series)
        })?;
        info!(container = name, series, network = %network, "creating VM");
        let mut undo = Undo::new();
        // The create lock is held until the undo, if any, has finished, so
        // that garbage collection never works on this VM at the same time.
        let mut guard = None;
        match self.create_steps(
            name, machine, series, network, &resources, progress, &mut undo, &mut guard,
        ) {
            Ok(instance) => {
                undo.forget();
                info!(container = name, "VM running");
                Ok((instance, self.hardware(&resources)))
            }
            Err(error) => {
                warn!(container = name, error = %berth_core::error::error_chain(&error), "create failed; undoing its steps");
                let failures = undo.run(name);
                Err(error.with_undo_failures(failures))
            }
        }
    }

    /// Destroys VM `id`, whose create lock the caller holds or which has
    /// no create lock. Moves its directory aside when `move_directory`.
    fn destroy_vm(&self, id: &InstanceId, move_directory: bool) -> Result<()> {
        let name = id.as_str();
        info!(container = name, "destroying VM");
        let domain = self
            .lookup_domain(name)
            .map_err(|error| Error::step(name, Step::Destroy, error))?;
        if let Some(domain) = domain {
            stop(&domain).map_err(|error| Error::step(name, Step::Stop, error))?;
            undefine(&domain).map_err(|error| Error::step(name, Step::Destroy, error))?;
        }
        match self.pool() {
            Ok(pool) => {
                for volume in [root_volume_name(name), seed_volume_name(name)] {
                    if let Some(handle) = lookup_volume(&pool, &volume)
                        .map_err(|error| Error::step(name, Step::Destroy, error))?
                    {
                        delete_volume(&handle).map_err(|error| {
                            Error::step(name, Step::Destroy, VolumeFailure(volume.clone(), error))
                        })?;
                        debug!(container = name, volume = volume.as_str(), "deleted volume");
                    }
                }
            }
            Err(error) => {
                warn!(container = name, error = %error, "no storage pool, so no volumes to delete")
            }
        }
        if move_directory && let Some(moved) = self.config.dirs.remove_directory(name)? {
            debug!(container = name, to = %moved.display(), "moved the container directory aside");
        }
        info!(container = name, "VM destroyed");
        Ok(())
    }

    fn list_vms(&self) -> Result<Vec<Instance>> {
        let domains = self
            .connection()
            .list_all_domains(0)
            .map_err(|error| backend(format!("list domains at {}", self.config.uri), error))?;
        let mut instances = Vec::new();
        for domain in domains.into_iter().map(DomainHandle::new) {
            let Ok(name) = domain.name() else { continue };
            if !berth_core::is_container_of(&self.config.name, &name) {
                continue;
            }
            let Ok(id) = InstanceId::new(name.as_str()) else {
                debug!(
                    domain = name.as_str(),
                    "skipping a domain whose name is not a container name"
                );
                continue;
            };
            let status = status(&domain);
            let mut instance = Instance::new(id, status);
            if status == InstanceStatus::Running {
                instance.addresses = addresses(&domain);
            }
            instances.push(instance);
        }
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }
}

/// A volume that could not be deleted.
#[derive(Debug, thiserror::Error)]
#[error("delete volume {0}")]
struct VolumeFailure(String, #[source] virt::error::Error);

impl VirtManager {
    fn validate(&self, name: &str, machine: &MachineConfig, series: &str) -> Result<Resources> {
        machine.validate()?;
        validate_series(series)?;
        let resources = resources(&machine.constraints, &self.platform.agent_arch())?;
        if self.config.image_for(series).is_none() {
            return Err(berth_core::InvalidValue::new(
                "series",
                series,
                "has no base image: set the manager config key \"image\" or \"image.<series>\"",
            )
            .into());
        }
        if self
            .lookup_domain(name)
            .map_err(|error| Error::step(name, Step::Validate, error))?
            .is_some()
        {
            return Err(Error::AlreadyExists {
                name: name.to_owned(),
            });
        }
        Ok(resources)
    }

    #[allow(clippy::too_many_arguments)]
    fn create_steps<'a>(
        &'a self,
        name: &'a str,
        machine: &MachineConfig,
        series: &str,
        network: &NetworkConfig,
        resources: &Resources,
        progress: &dyn Progress,
        undo: &mut Undo<'a>,
        guard: &mut Option<CreateGuard>,
    ) -> Result<Instance> {
        let created = run_step(progress, name, Step::Directory, || {
            self.config.dirs.new_directory_for_create(name)
        })?;
        let dir = created.dir().to_path_buf();
        let created = guard.insert(created);
        undo.push("remove the container directory", {
            let dir = dir.clone();
            move || remove_created_dir(&dir)
        });
        self.injected(name, Step::Directory)?;

        let user_data_path = run_step(progress, name, Step::UserData, || {
            write_user_data_for_host(machine, name, &dir)
        })?;
        let user_data = std::fs::read(&user_data_path)
            .map_err(|error| Error::io("read user data", &user_data_path, error))?;
        self.injected(name, Step::UserData)?;

        let pool = self.pool()?;
        let base = run_step(progress, name, Step::Image, || {
            let source = self.config.image_for(series).expect("checked in validate");
            let context = ImportContext {
                connection: self.connection(),
                pool: &pool,
                lock_dir: &self.config.lock_dir,
                progress,
                #[cfg(feature = "fault-injection")]
                before_publish: &|| self.fault(name, crate::fault::FaultPoint::ImageUploaded),
            };
            ensure_base_image(&context, series, source)
                .map_err(|error| Error::step(name, Step::Image, error))
        })?;
        self.injected(name, Step::Image)?;

        let root_name = root_volume_name(name);
        run_step(progress, name, Step::Clone, || {
            self.create_root_volume(name, &pool, &root_name, &base, resources)
        })?;
        undo.push(format!("delete volume {root_name}"), {
            let pool = self.pool();
            let root_name = root_name.clone();
            move || delete_named_volume(pool, &root_name)
        });
        self.injected(name, Step::Clone)?;

        let mac = match network.mac() {
            Some(mac) => mac,
            None => random_mac().map_err(|error| Error::step(name, Step::Seed, error))?,
        };
        let seed_name = seed_volume_name(name);
        run_step(progress, name, Step::Seed, || {
            self.create_seed_volume(name, &pool, &seed_name, machine, network, mac, user_data)
        })?;
        undo.push(format!("delete volume {seed_name}"), {
            let pool = self.pool();
            let seed_name = seed_name.clone();
            move || delete_named_volume(pool, &seed_name)
        });
        self.injected(name, Step::Seed)?;

        let console_log = dir.join(CONSOLE_LOG);
        let domain = run_step(progress, name, Step::Define, || {
            self.define(
                name,
                resources,
                &root_name,
                &seed_name,
                network,
                mac,
                &console_log,
            )
        })?;
        undo.push("undefine the domain", {
            let domain = DomainHandle::new((*domain).clone());
            move || undefine(&domain).map_err(|error| error.to_string())
        });
        self.injected(name, Step::Define)?;

        run_step(progress, name, Step::Configure, || {
            domain
                .set_autostart(true)
                .map(|_| ())
                .map_err(|error| Error::step(name, Step::Configure, error))
        })?;
        self.injected(name, Step::Configure)?;

        run_step(progress, name, Step::Start, || {
            domain
                .create()
                .map(|_| ())
                .map_err(|error| Error::step(name, Step::Start, error))
        })?;
        undo.push("stop the domain", {
            let domain = DomainHandle::new((*domain).clone());
            move || stop(&domain).map_err(|error| error.to_string())
        });
        self.injected(name, Step::Start)?;

        run_step(progress, name, Step::Wait, || wait_running(name, &domain))?;
        self.injected(name, Step::Wait)?;
        created.mark_created()?;

        let id = InstanceId::new(name)?;
        let mut instance = Instance::new(id, status(&domain));
        instance.addresses = addresses(&domain);
        Ok(instance)
    }

    fn create_root_volume(
        &self,
        name: &str,
        pool: &PoolHandle,
        volume: &str,
        base: &BaseImage,
        resources: &Resources,
    ) -> Result<()> {
        let capacity = resources.root_disk_mib * MIB;
        if capacity < base.virtual_size {
            return Err(berth_core::InvalidValue::new(
                "constraint root-disk",
                resources.root_disk_mib.to_string(),
                format!(
                    "is smaller than the {} MiB disk of the base image {}",
                    base.virtual_size.div_ceil(MIB),
                    base.volume
                ),
            )
            .into());
        }
        let document = StorageVolume {
            volume_type: None,
            name: volume.to_owned(),
            key: None,
            capacity: Capacity::bytes(capacity),
            allocation: Some(Capacity::bytes(0)),
            target: Some(VolumeTarget {
                path: None,
                format: Some(Format::new("qcow2")),
            }),
            backing_store: Some(BackingStore {
                path: base.path.clone(),
                format: Some(Format::new(base.format.as_str())),
            }),
        };
        replace_stale_volume(name, pool, volume)?;
        create_volume(pool, &document).map_err(|error| {
            Error::step(name, Step::Clone, VolumeStepError(volume.to_owned(), error))
        })?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_seed_volume(
        &self,
        name: &str,
        pool: &PoolHandle,
        volume: &str,
        machine: &MachineConfig,
        network: &NetworkConfig,
        mac: berth_core::MacAddress,
        user_data: Vec<u8>,
    ) -> Result<()> {
        let seed = Seed {
            user_data,
            meta_data: MetaData {
                instance_id: name.to_owned(),
                local_hostname: name.to_owned(),
            },
            network_config: network_config(&machine.network_interfaces, network, mac)?,
        };
        let image = seed
            .build_image()
            .map_err(|error| Error::step(name, Step::Seed, error))?;
        let document = StorageVolume {
            volume_type: None,
            name: volume.to_owned(),
            key: None,
            capacity: Capacity::bytes(image.len() as u64),
            allocation: None,
            target: Some(VolumeTarget {
                path: None,
                format: Some(Format::new("raw")),
            }),
            backing_store: None,
        };
        replace_stale_volume(name, pool, volume)?;
        let handle = create_volume(pool, &document).map_err(|error| {
            Error::step(name, Step::Seed, VolumeStepError(volume.to_owned(), error))
        })?;
        if let Err(error) = upload_bytes(self.connection(), &handle, &image) {
            if let Err(delete_error) = delete_volume(&handle) {
                warn!(container = name, volume, error = %delete_error, "deleting the seed volume after a failed upload failed");
            }
            return Err(Error::step(
                name,
                Step::Seed,
                VolumeFailure(volume.to_owned(), error),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn define(
        &self,
        name: &str,
        resources: &Resources,
        root_volume: &str,
        seed_volume: &str,
        network: &NetworkConfig,
        mac: berth_core::MacAddress,
        console_log: &Path,
    ) -> Result<DomainHandle> {
        let document = domain_document(&DomainSpec {
            name,
            platform: &self.platform,
            resources: *resources,
            pool: &self.config.pool,
            root_volume,
            seed_volume,
            kernel_boot: self.config.kernel_boot.as_ref(),
            network,
            mac,
            console_log,
        });
        let xml = to_xml(&document).map_err(|error| Error::step(name, Step::Define, error))?;
        self.connection()
            .define_domain_xml(&xml)
            .map(DomainHandle::new)
            .map_err(|error| Error::step(name, Step::Define, error))
    }
}

/// A volume that could not be created.
#[derive(Debug, thiserror::Error)]
#[error("create volume {0}")]
struct VolumeStepError(String, #[source] crate::volumes::VolumeError);

/// Deletes a volume of this container's name left by a create that was
/// killed before it could undo. The container directory, created earlier
/// in the same create, already proves no other create of this name runs.
fn replace_stale_volume(name: &str, pool: &PoolHandle, volume: &str) -> Result<()> {
    if let Some(stale) =
        lookup_volume(pool, volume).map_err(|error| Error::step(name, Step::Define, error))?
    {
        warn!(
            container = name,
            volume, "deleting a volume left by an earlier create"
        );
        delete_volume(&stale).map_err(|error| {
            Error::step(name, Step::Define, VolumeFailure(volume.to_owned(), error))
        })?;
    }
    Ok(())
}

fn delete_named_volume(pool: Result<PoolHandle>, volume: &str) -> std::result::Result<(), String> {
    let pool = pool.map_err(|error| error.to_string())?;
    match lookup_volume(&pool, volume).map_err(|error| error.to_string())? {
        Some(handle) => delete_volume(&handle).map_err(|error| error.to_string()),
        None => Ok(()),
    }
}

/// Removes a directory this create made. It holds only files berth
/// wrote, and a symlink in its place is never followed.
fn remove_created_dir(dir: &Path) -> std::result::Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {
            std::fs::remove_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))
        }
        Ok(_) => Err(format!(
            "{} is no longer a directory; left in place",
            dir.display()
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(format!("{}: {error}", dir.display())),
    }
}

/// Stops `domain` at once if it runs. A domain that is not running, or no
/// longer exists, counts as stopped.
fn stop(domain: &DomainHandle) -> std::result::Result<(), virt::error::Error> {
    match domain.is_active() {
        Ok(false) => return Ok(()),
        Ok(true) => {}
        Err(error) if has_code(&error, ErrorNumber::NoDomain) => return Ok(()),
        Err(error) => return Err(error),
    }
    match domain.destroy() {
        Ok(()) => Ok(()),
        Err(error)
            if has_code(&error, ErrorNumber::NoDomain)
                || has_code(&error, ErrorNumber::OperationInvalid) =>
        {
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// Undefines `domain` with its NVRAM, managed save image and snapshot
/// metadata. Drivers that reject the NVRAM flag (the test driver does)
/// get a plain undefine. A domain already gone counts as undefined.
fn undefine(domain: &DomainHandle) -> std::result::Result<(), virt::error::Error> {
    let flags = virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM
        | virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA;
    let result = match domain.undefine_flags(flags) {
        Err(error)
            if has_code(&error, ErrorNumber::InvalidArg)
                || has_code(&error, ErrorNumber::NoSupport) =>
        {
            debug!(error = %error, "undefine with NVRAM rejected; undefining without flags");
            domain.undefine()
        }
        other => other,
    };
    match result {
        Err(error) if has_code(&error, ErrorNumber::NoDomain) => Ok(()),
        other => other,
    }
}

fn wait_running(name: &str, domain: &DomainHandle) -> Result<()> {
    let started = Instant::now();
    loop {
        let (state, _) = domain
            .state()
            .map_err(|error| Error::step(name, Step::Wait, error))?;
        match state {
            virt::enumutil::Enum::Known(DomainState::Running | DomainState::Blocked) => {
                return Ok(());
            }
            virt::enumutil::Enum::Known(DomainState::Shutoff | DomainState::Crashed) => {
                return Err(Error::step(
                    name,
                    Step::Wait,
                    format!("the domain stopped while starting (state {state:?})"),
                ));
            }
            _ => {}
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(Error::step(
                name,
                Step::Wait,
                format!(
                    "timed out after {} s waiting for the domain to run (state {state:?})",
                    START_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn status(domain: &DomainHandle) -> InstanceStatus {
    match domain.state() {
        Ok((virt::enumutil::Enum::Known(state), _)) => match state {
            DomainState::Running | DomainState::Blocked => InstanceStatus::Running,
            DomainState::Paused | DomainState::PMSuspended => InstanceStatus::Paused,
            DomainState::Shutdown => InstanceStatus::Stopping,
            DomainState::Shutoff => InstanceStatus::Stopped,
            DomainState::Crashed => InstanceStatus::Error,
            DomainState::NoState => InstanceStatus::Unknown,
        },
        _ => InstanceStatus::Unknown,
    }
}

/// Reads addresses from libvirt's DHCP leases, then the host's ARP table.
/// Bridges without a libvirt network have no leases, and the ARP table
/// lists only guests that have sent traffic, so an empty list is normal.
fn addresses(domain: &DomainHandle) -> Vec<std::net::IpAddr> {
    for source in [AddressSource::Lease, AddressSource::Arp] {
        match domain.ip_addresses(source) {
            Ok(found) if !found.is_empty() => return found,
            Ok(_) => {}
            Err(error) => debug!(?source, error = %error, "reading domain addresses failed"),
        }
    }
    Vec::new()
}

#[cfg(all(test, feature = "fault-injection"))]
#[path = "manager_tests.rs"]
mod tests;
