//! The configuration keys of the LXC manager and their parsing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::config::{CONFIG_KEY_LOG_DIR, CONFIG_KEY_NAME, DEFAULT_LOG_DIR};
use berth_core::dirs::{DEFAULT_CONTAINERS_DIR, DEFAULT_REMOVED_CONTAINERS_DIR};
use berth_core::{
    ContainerDirs, Error, InvalidValue, ManagerConfig, Result, validate_manager_name,
};

use crate::image::ImageSource;

/// Manager name, which prefixes every container name (required).
pub const KEY_NAME: &str = CONFIG_KEY_NAME;
/// Host directory bind-mounted into every container at the machine's log
/// directory. Default [`DEFAULT_LOG_DIR`].
pub const KEY_LOG_DIR: &str = CONFIG_KEY_LOG_DIR;
/// liblxc's lxc path, where containers and templates live. Default:
/// liblxc's own default (`lxc.lxcpath`, usually `/var/lib/lxc`).
pub const KEY_LXC_PATH: &str = "lxc-path";
/// Root of the per-container directories. Default [`DEFAULT_CONTAINERS_DIR`].
pub const KEY_CONTAINERS_DIR: &str = "containers-dir";
/// Root that destroyed containers' directories are moved into. Default
/// [`DEFAULT_REMOVED_CONTAINERS_DIR`].
pub const KEY_REMOVED_DIR: &str = "removed-dir";
/// Image of new containers: `busybox` (the default, built from the host's
/// static busybox), the absolute path of a root file system tarball
/// (`.tar`, `.tar.xz`, `.tar.gz` or `.tar.zst`), or the `http://` or
/// `https://` base URL of a simplestreams image server.
pub const KEY_IMAGE: &str = "image";
/// Directory of downloaded image files. Default: `.berth-images` in the lxc
/// path.
pub const KEY_IMAGE_CACHE_DIR: &str = "image-cache-dir";
/// Operating system of simplestreams products (such as `debian` or
/// `ubuntu`). Default: any product whose release is the series.
pub const KEY_IMAGE_OS: &str = "image-os";
/// Variant of simplestreams products. Default [`DEFAULT_IMAGE_VARIANT`].
pub const KEY_IMAGE_VARIANT: &str = "image-variant";
/// Backing store of clones. `auto` (the default) is `btrfs` when the lxc
/// path is on btrfs, else `overlay`. `overlay` is an overlay snapshot of
/// the template, `btrfs` a btrfs snapshot of the template's subvolume (only
/// when the lxc path is on btrfs), and `copy` a full copy.
///
/// NOTE: zfs and LVM snapshots are not supported: they have not been built
/// or tested, because the test hosts have no zfs module and no LVM volume
/// group.
pub const KEY_BACKING_STORE: &str = "backing-store";
/// Seconds a destroy waits for a clean shutdown before it kills the
/// container. Default [`DEFAULT_SHUTDOWN_TIMEOUT`]; 0 kills at once.
pub const KEY_SHUTDOWN_TIMEOUT: &str = "shutdown-timeout";
/// Seconds a create waits for the container to be running. Default
/// [`DEFAULT_START_TIMEOUT`].
pub const KEY_START_TIMEOUT: &str = "start-timeout";
/// `true` or `false`: whether containers start when the host boots
/// (`lxc.start.auto`). Default `true`.
pub const KEY_AUTOSTART: &str = "autostart";
/// Extra liblxc configuration items for every new container, as
/// `lxc.key=value` entries separated by newlines or `;`, applied after
/// berth's own items.
pub const KEY_EXTRA_CONFIG: &str = "extra-config";

/// Value of [`KEY_IMAGE`] that selects the embedded busybox image.
pub const IMAGE_BUSYBOX: &str = "busybox";
/// Default of [`KEY_IMAGE_VARIANT`]: the image variant that ships
/// cloud-init.
pub const DEFAULT_IMAGE_VARIANT: &str = "cloud";
/// Default of [`KEY_SHUTDOWN_TIMEOUT`].
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`KEY_START_TIMEOUT`].
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Name of the image cache directory inside the lxc path.
pub const IMAGE_CACHE_DIR_NAME: &str = ".berth-images";

/// Backing store of a clone's root file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingStore {
    /// [`BackingStore::Btrfs`] when the lxc path is on btrfs, else
    /// [`BackingStore::Overlay`], decided at each create.
    Auto,
    /// An overlay snapshot of the template's root file system.
    Overlay,
    /// A btrfs snapshot of the template's root file system, which is a
    /// subvolume.
    Btrfs,
    /// A full copy of the template's root file system.
    Copy,
}

/// The manager's configuration, parsed and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Manager name.
    pub name: String,
    /// Host log directory bind-mounted into containers.
    pub log_dir: PathBuf,
    /// liblxc's lxc path.
    pub lxc_path: PathBuf,
    /// Per-container directories.
    pub dirs: ContainerDirs,
    /// Source of images.
    pub image: ImageSource,
    /// Directory of downloaded image files.
    pub image_cache_dir: PathBuf,
    /// Operating system filter of simplestreams products.
    pub image_os: Option<String>,
    /// Variant of simplestreams products.
    pub image_variant: String,
    /// Backing store of clones.
    pub backing_store: BackingStore,
    /// Time a destroy waits for a clean shutdown.
    pub shutdown_timeout: Duration,
    /// Time a create waits for the container to be running.
    pub start_timeout: Duration,
    /// Whether containers start with the host.
    pub autostart: bool,
    /// Extra liblxc configuration items, in order.
    pub extra_config: Vec<(String, String)>,
}

/// Rejects a path that is relative, or that contains whitespace or control
/// characters, which would break a liblxc mount entry.
fn check_path(field: &str, value: &str) -> std::result::Result<PathBuf, InvalidValue> {
    if !value.starts_with('/') {
        return Err(InvalidValue::new(field, value, "must be an absolute path"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidValue::new(
            field,
            value,
            "must not contain whitespace or control characters",
        ));
    }
    if Path::new(value)
        .components()
        .any(|part| part == std::path::Component::ParentDir)
    {
        return Err(InvalidValue::new(field, value, "must not contain '..'"));
    }
    Ok(PathBuf::from(value))
}

fn parse_seconds(
    field: &str,
    value: Option<String>,
    default: Duration,
) -> std::result::Result<Duration, InvalidValue> {
    match value {
        None => Ok(default),
        Some(text) if text.is_empty() => Ok(default),
        Some(text) => text
            .parse::<u32>()
            .map(|seconds| Duration::from_secs(seconds.into()))
            .map_err(|_| InvalidValue::new(field, text, "must be a whole number of seconds")),
    }
}

/// Parses [`KEY_EXTRA_CONFIG`] into `(key, value)` pairs.
pub fn parse_extra_config(text: &str) -> std::result::Result<Vec<(String, String)>, InvalidValue> {
    let mut items = Vec::new();
    for entry in text
        .split(['\n', ';'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(InvalidValue::new(
                KEY_EXTRA_CONFIG,
                entry,
                "each entry must be lxc.key=value",
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if !key.starts_with("lxc.") || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidValue::new(
                KEY_EXTRA_CONFIG,
                entry,
                "keys must start with 'lxc.' and hold no spaces",
            ));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(InvalidValue::new(
                KEY_EXTRA_CONFIG,
                entry,
                "values must not contain control characters",
            ));
        }
        items.push((key.to_owned(), value.to_owned()));
    }
    Ok(items)
}

impl Settings {
    /// Takes the LXC manager's keys out of `config`, checks them, and warns
    /// about any key left.
    pub fn from_config(mut config: ManagerConfig) -> Result<Self> {
        let mut problems = Vec::new();
        let mut note = |result: std::result::Result<(), InvalidValue>| {
            if let Err(problem) = result {
                problems.push(problem);
            }
        };

        let name = config.pop_value(KEY_NAME).unwrap_or_default();
        if name.is_empty() {
            note(Err(InvalidValue::new(
                KEY_NAME,
                "",
                "is required: the manager name prefixes every container name",
            )));
        } else {
            note(validate_manager_name(&name));
        }

        let mut path_of = |key: &str, default: Option<String>| -> Option<PathBuf> {
            let value = config
                .pop_value(key)
                .filter(|value| !value.is_empty())
                .or(default)?;
            match check_path(key, &value) {
                Ok(path) => Some(path),
                Err(problem) => {
                    note(Err(problem));
                    None
                }
            }
        };
        let log_dir = path_of(KEY_LOG_DIR, Some(DEFAULT_LOG_DIR.to_owned()));
        let lxc_path = path_of(KEY_LXC_PATH, crate::container::default_lxc_path());
        let containers = path_of(KEY_CONTAINERS_DIR, Some(DEFAULT_CONTAINERS_DIR.to_owned()));
        let removed = path_of(
            KEY_REMOVED_DIR,
            Some(DEFAULT_REMOVED_CONTAINERS_DIR.to_owned()),
        );
        let cache = path_of(KEY_IMAGE_CACHE_DIR, None);
        if let Some(path) = &lxc_path
            && path.to_string_lossy().contains(':')
        {
            // liblxc separates the layers of an overlay root file system
            // with ':' in lxc.rootfs.path.
            note(Err(InvalidValue::new(
                KEY_LXC_PATH,
                path.display().to_string(),
                "must not contain ':'",
            )));
        }

        let image = match ImageSource::parse(&config.pop_or(KEY_IMAGE, IMAGE_BUSYBOX)) {
            Ok(image) => Some(image),
            Err(problem) => {
                note(Err(problem));
                None
            }
        };
        let image_os = config.pop_value(KEY_IMAGE_OS).filter(|os| !os.is_empty());
        let image_variant = config.pop_or(KEY_IMAGE_VARIANT, DEFAULT_IMAGE_VARIANT);

        let backing_store = match config.pop_or(KEY_BACKING_STORE, "auto").as_str() {
            "auto" => BackingStore::Auto,
            "overlay" => BackingStore::Overlay,
            "btrfs" => BackingStore::Btrfs,
            "copy" => BackingStore::Copy,
            other => {
                note(Err(InvalidValue::new(
                    KEY_BACKING_STORE,
                    other,
                    "must be 'auto', 'overlay', 'btrfs' or 'copy'",
                )));
                BackingStore::Auto
            }
        };
        let shutdown_timeout = parse_seconds(
            KEY_SHUTDOWN_TIMEOUT,
            config.pop_value(KEY_SHUTDOWN_TIMEOUT),
            DEFAULT_SHUTDOWN_TIMEOUT,
        )
        .unwrap_or_else(|problem| {
            note(Err(problem));
            DEFAULT_SHUTDOWN_TIMEOUT
        });
        let start_timeout = parse_seconds(
            KEY_START_TIMEOUT,
            config.pop_value(KEY_START_TIMEOUT),
            DEFAULT_START_TIMEOUT,
        )
        .unwrap_or_else(|problem| {
            note(Err(problem));
            DEFAULT_START_TIMEOUT
        });
        let autostart = match config.pop_or(KEY_AUTOSTART, "true").as_str() {
            "true" => true,
            "false" => false,
            other => {
                note(Err(InvalidValue::new(
                    KEY_AUTOSTART,
                    other,
                    "must be 'true' or 'false'",
                )));
                true
            }
        };
        let extra_config =
            parse_extra_config(&config.pop_value(KEY_EXTRA_CONFIG).unwrap_or_default())
                .unwrap_or_else(|problem| {
                    note(Err(problem));
                    Vec::new()
                });

        if lxc_path.is_none() && problems.is_empty() {
            problems.push(InvalidValue::new(
                KEY_LXC_PATH,
                "",
                "is not set and liblxc reports no default lxc path",
            ));
        }
        match problems.len() {
            0 => {}
            1 => return Err(Error::Invalid(problems.remove(0))),
            _ => return Err(Error::InvalidMany(problems)),
        }
        config.warn_about_unused("lxc manager");

        let lxc_path = lxc_path.expect("checked above");
        let image_cache_dir = cache.unwrap_or_else(|| lxc_path.join(IMAGE_CACHE_DIR_NAME));
        Ok(Self {
            name,
            log_dir: log_dir.expect("checked above"),
            lxc_path,
            dirs: ContainerDirs::new(
                containers.expect("checked above"),
                removed.expect("checked above"),
            ),
            image: image.expect("checked above"),
            image_cache_dir,
            image_os,
            image_variant,
            backing_store,
            shutdown_timeout,
            start_timeout,
            autostart,
            extra_config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ManagerConfig {
        ManagerConfig::new()
            .with(KEY_NAME, "juju")
            .with(KEY_LXC_PATH, "/tmp/berth-lxc")
    }

    #[test]
    fn defaults_applied() {
        let settings = Settings::from_config(base()).unwrap();
        assert_eq!(settings.name, "juju");
        assert_eq!(settings.log_dir, Path::new(DEFAULT_LOG_DIR));
        assert_eq!(settings.dirs, ContainerDirs::default());
        assert_eq!(settings.image, ImageSource::Busybox);
        assert_eq!(
            settings.image_cache_dir,
            Path::new("/tmp/berth-lxc/.berth-images")
        );
        assert_eq!(settings.backing_store, BackingStore::Auto);
        assert_eq!(settings.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
        assert!(settings.autostart);
        assert!(settings.extra_config.is_empty());
    }

    #[test]
    fn name_required() {
        let error =
            Settings::from_config(ManagerConfig::new().with(KEY_LXC_PATH, "/tmp/x")).unwrap_err();
        assert!(error.to_string().contains("is required"), "{error}");
    }

    #[test]
    fn bad_values_listed_together() {
        let config = base()
            .with(KEY_NAME, "29-test")
            .with(KEY_LOG_DIR, "relative/logs")
            .with(KEY_BACKING_STORE, "zfs")
            .with(KEY_SHUTDOWN_TIMEOUT, "soon")
            .with(KEY_AUTOSTART, "yes");
        let Error::InvalidMany(problems) = Settings::from_config(config).unwrap_err() else {
            panic!("expected several problems");
        };
        let fields: Vec<&str> = problems
            .iter()
            .map(|problem| problem.field.as_str())
            .collect();
        assert_eq!(
            fields,
            [
                "manager name",
                KEY_LOG_DIR,
                KEY_BACKING_STORE,
                KEY_SHUTDOWN_TIMEOUT,
                KEY_AUTOSTART
            ]
        );
    }

    #[test]
    fn path_with_space_rejected() {
        let error =
            Settings::from_config(base().with(KEY_LOG_DIR, "/var/log/my logs")).unwrap_err();
        assert!(error.to_string().contains("whitespace"), "{error}");
    }

    #[test]
    fn extra_config_parsed() {
        let items =
            parse_extra_config("lxc.hook.pre-start = /bin/false; lxc.environment=A=1\n").unwrap();
        assert_eq!(
            items,
            [
                ("lxc.hook.pre-start".into(), "/bin/false".into()),
                ("lxc.environment".into(), "A=1".into())
            ]
        );
        assert!(parse_extra_config("hostname=x").is_err());
        assert!(parse_extra_config("lxc.x").is_err());
    }
}
