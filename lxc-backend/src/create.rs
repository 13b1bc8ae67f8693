//! Creating a container: validate, directory, user data, template, clone,
//! configure, seed, start, wait.
//!
//! Every input is checked and the whole liblxc configuration is computed
//! before anything is made. Each step that makes something first pushes
//! its undo onto a stack. When a later step fails, the stack runs in
//! reverse, so the failed create leaves nothing of its own behind and
//! touches nothing it did not make. A template built on the way stays: it belongs
//! to the image, not to the container.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_core::error::BoxError;
use berth_core::hardware::host_arch;
use berth_core::pending::CreateGuard;
use berth_core::progress::{Progress, Step, run_step};
use berth_core::userdata::render_user_data_for_host;
use berth_core::{
    Error, HardwareCharacteristics, Instance, InstanceId, InstanceStatus, InvalidValue,
    MachineConfig, NetworkConfig, NetworkKind, Result, container_name, write_cloud_init_file,
};

use crate::cgroup::{first_online_cpus, host_memory_mib, online_cpu_count};
use crate::container::{Container, ContainerState};
use crate::manager::LxcManager;
use crate::{bridge, seed, template};

/// Name of the console log in the container directory.
pub const CONSOLE_LOG: &str = "console.log";
/// Name of liblxc's log of the container in the container directory.
pub const CONTAINER_LOG: &str = "container.log";
/// Name of the container's first NIC, unless the machine names it.
pub const DEFAULT_NIC_NAME: &str = "eth0";
/// Capabilities dropped from every container: they would let it change the
/// host's clock, kernel modules, raw I/O and mandatory access control.
pub const DROPPED_CAPABILITIES: &str = "mac_admin mac_override sys_time sys_module sys_rawio";
/// Pseudo-terminals a container may open (`lxc.pty.max`).
pub const MAX_PTYS: u32 = 16;

/// Everything a create needs, computed before anything is made.
struct Plan {
    user_data: Vec<u8>,
    meta_data: String,
    network_config: Option<String>,
    items: Vec<(String, String)>,
    hardware: HardwareCharacteristics,
    series: String,
    clone_kind: template::CloneKind,
}

/// Something a create made, and so must remove when it fails.
enum Undo {
    /// The container directory.
    Directory(PathBuf),
    /// The clone in the lxc path (pushed before the clone is attempted,
    /// because a failed clone can leave a partial directory behind).
    Clone,
    /// A start was attempted.
    Start,
}

pub(crate) fn create(
    manager: &LxcManager,
    machine: &MachineConfig,
    series: &str,
    network: &NetworkConfig,
    progress: &dyn Progress,
) -> Result<(Instance, HardwareCharacteristics)> {
    let name = container_name(&manager.settings.name, &machine.machine_id)?;
    let plan = run_step(progress, &name, Step::Validate, || {
        plan(manager, &name, machine, series, network)
    })?;
    tracing::info!(container = name.as_str(), network = %network, "creating container");
    let started = Instant::now();

    let mut undo = Vec::new();
    // The create lock is held until the undo, if any, has finished, so that
    // garbage collection never works on this container at the same time.
    let mut guard = None;
    match run(manager, &name, &plan, progress, &mut undo, &mut guard) {
        Ok(instance) => {
            tracing::info!(
                container = name.as_str(),
                elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                "container created and running"
            );
            Ok((instance, plan.hardware))
        }
        Err(error) => {
            tracing::warn!(container = name.as_str(), error = %berth_core::error::error_chain(&error), "create failed, undoing its steps");
            let failures = run_undo(manager, &name, undo);
            Err(error.with_undo_failures(failures))
        }
    }
}

fn run(
    manager: &LxcManager,
    name: &str,
    plan: &Plan,
    progress: &dyn Progress,
    undo: &mut Vec<Undo>,
    guard: &mut Option<CreateGuard>,
) -> Result<Instance> {
    let settings = &manager.settings;
    let step = |step: Step| move |source: BoxError| Error::step(name, step, source);

    let directory = run_step(progress, name, Step::Directory, || {
        fs::create_dir_all(&settings.log_dir)
            .map_err(|error| Error::io("create log directory", &settings.log_dir, error))?;
        let created = settings.dirs.new_directory_for_create(name)?;
        let directory = created.dir().to_path_buf();
        *guard = Some(created);
        undo.push(Undo::Directory(directory.clone()));
        Ok::<_, Error>(directory)
    })?;
    manager.fault_after(name, Step::Directory)?;

    run_step(progress, name, Step::UserData, || {
        write_cloud_init_file(&directory, &plan.user_data)
    })?;
    manager.fault_after(name, Step::UserData)?;

    let image = run_step(progress, name, Step::Image, || {
        manager
            .resolve_image(&plan.series)
            .map_err(step(Step::Image))
    })?;
    manager.fault_after(name, Step::Image)?;
    let template_name = run_step(progress, name, Step::Template, || {
        let before_publish = |building: &str| -> std::result::Result<(), BoxError> {
            Ok(manager.fault_template_built(building)?)
        };
        template::ensure_template_checked(
            &settings.lxc_path,
            &image,
            plan.clone_kind,
            progress,
            &before_publish,
        )
        .map_err(step(Step::Template))
    })?
    .0;
    manager.fault_after(name, Step::Template)?;

    let container = run_step(progress, name, Step::Clone, || {
        undo.push(Undo::Clone);
        let snapshot = plan.clone_kind != template::CloneKind::Copy;
        template::clone_template(&settings.lxc_path, &template_name, name, snapshot)
            .map_err(step(Step::Clone))
    })?;
    manager.fault_after(name, Step::Clone)?;

    // Reopen the container after saving: the handle clone returned keeps
    // the storage layer's in-memory form of lxc.rootfs.path, which a start
    // of a full copy cannot use, while a fresh handle parses the file.
    let container = run_step(progress, name, Step::Configure, || {
        configure(&container, &plan.items).map_err(step(Step::Configure))?;
        drop(container);
        Container::new(name, &settings.lxc_path)
            .map_err(|error| Error::step(name, Step::Configure, error))
    })?;
    manager.fault_after(name, Step::Configure)?;

    run_step(progress, name, Step::Seed, || {
        seed::write_seed(
            &container,
            &settings.lxc_path,
            &plan.user_data,
            &plan.meta_data,
            plan.network_config.as_deref(),
        )
        .map_err(step(Step::Seed))
    })?;
    manager.fault_after(name, Step::Seed)?;

    run_step(progress, name, Step::Start, || {
        undo.push(Undo::Start);
        container.start().map_err(|error| {
            let log = directory.join(CONTAINER_LOG);
            Error::step(
                name,
                Step::Start,
                StartError {
                    source: error,
                    log_errors: last_errors(&log),
                    log,
                },
            )
        })
    })?;
    manager.fault_after(name, Step::Start)?;

    run_step(progress, name, Step::Wait, || {
        wait_for_state(&container, ContainerState::Running, settings.start_timeout)
            .map_err(step(Step::Wait))
    })?;
    manager.fault_after(name, Step::Wait)?;

    if let Some(guard) = guard {
        guard.mark_created()?;
    }
    let id = InstanceId::new(name)?;
    let mut instance = Instance::new(id, InstanceStatus::Running);
    instance.addresses = static_addresses(&plan.items);
    Ok(instance)
}

/// Returns the static addresses among the NIC `items`. liblxc configures
/// them before the container's init runs, so a running container has them.
fn static_addresses(items: &[(String, String)]) -> Vec<std::net::IpAddr> {
    items
        .iter()
        .filter(|(key, _)| key == "lxc.net.0.ipv4.address" || key == "lxc.net.0.ipv6.address")
        .filter_map(|(_, value)| value.split('/').next()?.parse().ok())
        .collect()
}

/// A failed start, with the error lines liblxc wrote to the container's log.
#[derive(Debug)]
struct StartError {
    source: crate::container::LxcError,
    log: PathBuf,
    log_errors: Vec<String>,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.source)?;
        if self.log_errors.is_empty() {
            write!(f, "; see {}", self.log.display())
        } else {
            write!(
                f,
                "; errors in {}: {}",
                self.log.display(),
                self.log_errors.join(" | ")
            )
        }
    }
}

impl std::error::Error for StartError {}

/// Returns the last few ERROR lines of liblxc's container log.
fn last_errors(log: &Path) -> Vec<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut errors: Vec<String> = text
        .lines()
        .filter(|line| line.contains(" ERROR "))
        .map(|line| {
            line.split_once(" ERROR ")
                .map_or(line, |(_, message)| message)
                .trim()
                .to_owned()
        })
        .collect();
    let keep = errors.len().saturating_sub(3);
    errors.drain(..keep);
    errors
}

fn configure(
    container: &Container,
    items: &[(String, String)],
) -> std::result::Result<(), BoxError> {
    // The clone carries the template's NICs (none, unless an image brought
    // some); the container gets exactly the one configured here.
    container.clear_config_item("lxc.net")?;
    for (key, value) in items {
        container.set_config_item(key, value)?;
    }
    container.save_config(None)?;
    Ok(())
}

/// Polls the container's state until it is `wanted` or `timeout` passes.
pub(crate) fn wait_for_state(
    container: &Container,
    wanted: ContainerState,
    timeout: Duration,
) -> std::result::Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        let state = container.state()?;
        if state == wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "container is {state:?}, not {wanted:?}, after {} s",
                timeout.as_secs_f64()
            )
            .into());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn run_undo(manager: &LxcManager, name: &str, undo: Vec<Undo>) -> Vec<String> {
    let lxc_path = &manager.settings.lxc_path;
    let mut failures = Vec::new();
    for step in undo.into_iter().rev() {
        let result: std::result::Result<(), String> = match step {
            Undo::Start => Container::new(name, lxc_path)
                .and_then(|container| match container.state()? {
                    ContainerState::Stopped => Ok(()),
                    _ => container.stop(),
                })
                .map_err(|error| format!("stop: {error}")),
            Undo::Clone => remove_clone(name, lxc_path),
            Undo::Directory(path) => remove_own_directory(&path)
                .map_err(|error| format!("remove {}: {error}", path.display())),
        };
        if let Err(failure) = result {
            tracing::warn!(
                container = name,
                failure = failure.as_str(),
                "undo step failed"
            );
            failures.push(failure);
        }
    }
    failures
}

/// Destroys the clone `name`, then removes whatever a failed clone left in
/// its directory in the lxc path.
fn remove_clone(name: &str, lxc_path: &Path) -> std::result::Result<(), String> {
    let container =
        Container::new(name, lxc_path).map_err(|error| format!("open clone: {error}"))?;
    if container.is_defined().map_err(|error| error.to_string())? {
        container
            .destroy()
            .map_err(|error| format!("destroy clone: {error}"))?;
    }
    drop(container);
    crate::container::remove_lock_file(lxc_path, name);
    let leftover = lxc_path.join(name);
    remove_own_directory(&leftover)
        .map_err(|error| format!("remove {}: {error}", leftover.display()))
}

/// Removes a directory this create made, with its content. A symlink in its
/// place is removed as the link only, never followed.
pub(crate) fn remove_own_directory(path: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// Checks every input and computes the user data, the seed and the liblxc
/// configuration. Nothing is made here.
fn plan(
    manager: &LxcManager,
    name: &str,
    machine: &MachineConfig,
    series: &str,
    network: &NetworkConfig,
) -> Result<Plan> {
    let settings = &manager.settings;
    let user_data = render_user_data_for_host(machine, name)?;

    let series = if series.is_empty() {
        machine.series.clone()
    } else {
        series.to_owned()
    };
    berth_core::names::validate_series(&series)?;
    if matches!(settings.image, crate::image::ImageSource::Simplestreams(_))
        && (series.is_empty()
            || !series
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        return Err(InvalidValue::new(
            "series",
            series,
            "must be a release name such as bookworm or noble",
        )
        .into());
    }

    let mut problems = Vec::new();
    let clone_kind = match template::resolve_clone_kind(settings.backing_store, &settings.lxc_path)
    {
        Ok(kind) => kind,
        Err(Error::Invalid(problem)) => {
            problems.push(problem);
            template::CloneKind::Overlay
        }
        Err(error) => return Err(error),
    };
    check_host_device(network, &mut problems)?;
    let log_target = machine
        .log_dir
        .to_string_lossy()
        .trim_start_matches('/')
        .to_owned();
    if log_target.is_empty()
        || log_target
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        problems.push(InvalidValue::new(
            "log-dir",
            machine.log_dir.display().to_string(),
            "must be an absolute path below / without whitespace, because it is bind-mounted into the container",
        ));
    }

    let directory = settings.dirs.container_dir(name)?;
    let mut items = base_items(manager, name, &directory);
    items.push((
        "lxc.mount.entry".into(),
        format!(
            "{} {log_target} none bind,create=dir 0 0",
            settings.log_dir.display()
        ),
    ));
    let (network_items, network_config) = network_items(machine, network, &mut problems);
    items.extend(network_items);
    let hardware = constraint_items(manager, machine, &mut items, &mut problems);
    items.extend(settings.extra_config.iter().cloned());

    match problems.len() {
        0 => {}
        1 => return Err(Error::Invalid(problems.remove(0))),
        _ => return Err(Error::InvalidMany(problems)),
    }

    // The same name never passes this point twice at once: the container
    // directory, made next with mkdir, is the claim on the name.
    let existing = Container::new(name, &settings.lxc_path)
        .map_err(|error| Error::step(name, Step::Validate, error))?;
    let defined = existing
        .is_defined()
        .map_err(|error| Error::step(name, Step::Validate, error))?;
    if defined
        || fs::symlink_metadata(settings.lxc_path.join(name)).is_ok()
        || fs::symlink_metadata(&directory).is_ok()
    {
        return Err(Error::AlreadyExists {
            name: name.to_owned(),
        });
    }

    let meta_data = seed::meta_data(name);
    Ok(Plan {
        user_data,
        meta_data,
        network_config,
        items,
        hardware,
        series,
        clone_kind,
    })
}

/// Checks that the bridge or host NIC exists before anything is made.
fn check_host_device(network: &NetworkConfig, problems: &mut Vec<InvalidValue>) -> Result<()> {
    let device = network.device();
    let link = bridge::link(device).map_err(|error| Error::Host {
        message: format!("could not look up network device {device:?}"),
        source: Some(Box::new(error)),
    })?;
    match (network.kind(), link) {
        (NetworkKind::Bridge, None) => problems.push(InvalidValue::new(
            "bridge",
            device,
            "does not exist on this host; create it first (berth_lxc::bridge::ensure_bridge or the LXC initialiser)",
        )),
        (NetworkKind::Bridge, Some(link)) if !link.is_bridge() => problems.push(InvalidValue::new(
            "bridge",
            device,
            format!(
                "is a {} device, not a bridge",
                link.kind.as_deref().unwrap_or("physical")
            ),
        )),
        (NetworkKind::Physical, None) => problems.push(InvalidValue::new(
            "physical device",
            device,
            "does not exist on this host",
        )),
        (NetworkKind::Physical, Some(link)) if link.is_bridge() => problems.push(InvalidValue::new(
            "physical device",
            device,
            "is a bridge; use a bridge network to join it",
        )),
        (NetworkKind::Physical, Some(link)) if link.master.is_some() => problems.push(InvalidValue::new(
            "physical device",
            device,
            "is a port of a bridge or bond; moving it into a container would take it away from there",
        )),
        _ => {}
    }
    Ok(())
}

/// Items every container gets: hostname, mounts, devices, logs, autostart.
fn base_items(manager: &LxcManager, name: &str, directory: &Path) -> Vec<(String, String)> {
    let settings = &manager.settings;
    let autostart = if settings.autostart { "1" } else { "0" };
    vec![
        ("lxc.uts.name".into(), name.into()),
        (
            "lxc.mount.auto".into(),
            "proc:mixed sys:mixed cgroup:mixed".into(),
        ),
        ("lxc.autodev".into(), "1".into()),
        // No ttys: each costs a pty pair and device setup on every start.
        ("lxc.tty.max".into(), "0".into()),
        ("lxc.pty.max".into(), MAX_PTYS.to_string()),
        ("lxc.cap.drop".into(), DROPPED_CAPABILITIES.into()),
        ("lxc.start.auto".into(), autostart.into()),
        (
            "lxc.console.logfile".into(),
            directory.join(CONSOLE_LOG).display().to_string(),
        ),
        (
            "lxc.log.file".into(),
            directory.join(CONTAINER_LOG).display().to_string(),
        ),
        ("lxc.log.level".into(), "INFO".into()),
    ]
}

/// Items of the NIC, and the NoCloud network-config when the machine has a
/// static address.
fn network_items(
    machine: &MachineConfig,
    network: &NetworkConfig,
    problems: &mut Vec<InvalidValue>,
) -> (Vec<(String, String)>, Option<String>) {
    let interface = machine.network_interfaces.first();
    let nic_name = interface.map_or(DEFAULT_NIC_NAME, |interface| interface.name.as_str());
    let kind = match network.kind() {
        NetworkKind::Bridge => "veth",
        NetworkKind::Physical => "phys",
    };
    let mut items: Vec<(String, String)> = vec![
        ("lxc.net.0.type".into(), kind.into()),
        ("lxc.net.0.link".into(), network.device().into()),
        ("lxc.net.0.flags".into(), "up".into()),
        ("lxc.net.0.name".into(), nic_name.into()),
    ];
    if let Some(mtu) = network
        .mtu()
        .or_else(|| interface.and_then(|interface| interface.mtu))
    {
        items.push(("lxc.net.0.mtu".into(), mtu.to_string()));
    }
    let mac = match (
        network.mac(),
        interface.and_then(|interface| interface.mac.as_deref()),
    ) {
        (Some(mac), _) => Some(mac.to_string()),
        (None, Some(text)) => text
            .parse::<berth_core::MacAddress>()
            .ok()
            .map(|mac| mac.to_string()),
        (None, None) => None,
    };
    if let Some(mac) = &mac {
        items.push(("lxc.net.0.hwaddr".into(), mac.clone()));
    }

    let Some(interface) = interface else {
        return (items, None);
    };
    let Some((address, prefix)) = interface.address.split_once('/') else {
        problems.push(InvalidValue::new(
            "network-interfaces[0].address",
            &interface.address,
            "must be ADDRESS/PREFIX",
        ));
        return (items, None);
    };
    let Ok(ip) = address.parse::<IpAddr>() else {
        problems.push(InvalidValue::new(
            "network-interfaces[0].address",
            &interface.address,
            "must be an IP address",
        ));
        return (items, None);
    };
    let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    items.push((
        format!("lxc.net.0.{family}.address"),
        format!("{ip}/{prefix}"),
    ));
    if let Some(gateway) = &interface.gateway {
        match gateway.parse::<IpAddr>() {
            Ok(gateway) if gateway.is_ipv4() == ip.is_ipv4() => {
                items.push((format!("lxc.net.0.{family}.gateway"), gateway.to_string()))
            }
            _ => problems.push(InvalidValue::new(
                "network-interfaces[0].gateway",
                gateway,
                format!("must be an IP address of the same family as {ip}"),
            )),
        }
    }
    let network_config = seed::network_config(interface, mac.as_deref());
    (items, Some(network_config))
}

/// Adds the cgroup limits of the machine's constraints to `items` and
/// returns the hardware the container gets.
fn constraint_items(
    manager: &LxcManager,
    machine: &MachineConfig,
    items: &mut Vec<(String, String)>,
    problems: &mut Vec<InvalidValue>,
) -> HardwareCharacteristics {
    let constraints = &machine.constraints;
    let cgroups = &manager.cgroups;
    let mut hardware = HardwareCharacteristics {
        arch: Some(host_arch().to_owned()),
        mem: host_memory_mib(),
        cpu_cores: Some(online_cpu_count()),
        cpu_power: None,
        root_disk: None,
        virt_type: Some("lxc".into()),
    };
    if let Some(arch) = &constraints.arch
        && arch != host_arch()
    {
        problems.push(InvalidValue::new(
            "constraints.arch",
            arch,
            format!(
                "a container runs on the host's architecture, {}",
                host_arch()
            ),
        ));
    }
    if let Some(mem) = constraints.mem {
        match cgroups.memory_limit(mem) {
            Some(item) if mem > 0 => {
                items.push(item);
                hardware.mem = Some(mem);
            }
            Some(_) => problems.push(InvalidValue::new(
                "constraints.mem",
                "0",
                "must be at least 1 MiB",
            )),
            None => problems.push(InvalidValue::new(
                "constraints.mem",
                mem.to_string(),
                "cannot be applied: the host has no memory cgroup controller",
            )),
        }
    }
    if let Some(cores) = constraints.cpu_cores {
        match (first_online_cpus(cores), cgroups.cpuset.is_some()) {
            (Some(cpus), true) => {
                items.extend(cgroups.cpuset(&cpus));
                hardware.cpu_cores = Some(cores);
            }
            (None, _) => problems.push(InvalidValue::new(
                "constraints.cpu-cores",
                cores.to_string(),
                format!(
                    "must be between 1 and the host's {} online CPUs",
                    online_cpu_count()
                ),
            )),
            (_, false) => problems.push(InvalidValue::new(
                "constraints.cpu-cores",
                cores.to_string(),
                "cannot be applied: the host has no cpuset cgroup controller",
            )),
        }
    }
    if let Some(power) = constraints.cpu_power {
        match cgroups.cpu_quota(power) {
            Some(quota) if power > 0 => {
                items.extend(quota);
                hardware.cpu_power = Some(power);
            }
            Some(_) => problems.push(InvalidValue::new(
                "constraints.cpu-power",
                "0",
                "must be at least 1",
            )),
            None => problems.push(InvalidValue::new(
                "constraints.cpu-power",
                power.to_string(),
                "cannot be applied: the host has no cpu cgroup controller",
            )),
        }
    }
    if let Some(disk) = constraints.root_disk {
        // NOTE: a clone, overlay or btrfs snapshot, shares the lxc path's
        // file system, and berth sets no quota on it (no btrfs qgroup
        // either), so a root-disk constraint is not enforced.
        tracing::warn!(
            root_disk = disk,
            "root-disk constraint is not enforced for LXC containers"
        );
    }
    hardware
}

/// Writes `data` to `path` with `mode`, creating it (never following or
/// replacing an existing file). The file is not synced: it belongs to a
/// container that starts right away, and a crash before that start leaves
/// a create to be destroyed and made again anyway.
pub(crate) fn write_new_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(data)?;
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
}

/// Creates `path` and its missing parents with mode 0755.
pub(crate) fn create_dirs(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
}
