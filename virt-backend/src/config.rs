//! The configuration keys of the libvirt backend.
//!
//! A [`VirtConfig`] is read once from a [`ManagerConfig`] and validated
//! there, so the manager never meets a bad value later.

use std::path::{Path, PathBuf};

use berth_core::config::{CONFIG_KEY_LOG_DIR, CONFIG_KEY_NAME, DEFAULT_LOG_DIR};
use berth_core::dirs::{DEFAULT_CONTAINERS_DIR, DEFAULT_REMOVED_CONTAINERS_DIR};
use berth_core::{ContainerDirs, InvalidValue, ManagerConfig, Result, validate_manager_name};

use crate::xml::check_xml_text;

/// Key of the libvirt connection URI.
pub const CONFIG_KEY_URI: &str = "uri";
/// Default of [`CONFIG_KEY_URI`]: the system QEMU driver on this host.
pub const DEFAULT_URI: &str = "qemu:///system";
/// Key of the storage pool that holds base images, root disks and seeds.
pub const CONFIG_KEY_POOL: &str = "pool";
/// Default of [`CONFIG_KEY_POOL`].
pub const DEFAULT_POOL: &str = "berth";
/// Key of the pool's directory on the libvirt host, used when the
/// initialiser defines the pool.
pub const CONFIG_KEY_POOL_DIR: &str = "pool-dir";
/// Default of [`CONFIG_KEY_POOL_DIR`].
pub const DEFAULT_POOL_DIR: &str = "/var/lib/libvirt/images/berth";
/// Key of the root of the per-container directories (cloud-init file and
/// console log).
pub const CONFIG_KEY_CONTAINERS_DIR: &str = "containers-dir";
/// Key of the root that destroyed containers' directories move into.
pub const CONFIG_KEY_REMOVED_DIR: &str = "removed-dir";
/// Key of the directory of lock files that serialise base image imports
/// between processes on this host.
pub const CONFIG_KEY_LOCK_DIR: &str = "lock-dir";
/// Default of [`CONFIG_KEY_LOCK_DIR`].
pub const DEFAULT_LOCK_DIR: &str = "/var/lib/juju/locks";
/// Key of the base image every series uses unless a series has its own
/// `image.<series>` key: an absolute path of a qcow2 or raw file on this
/// host, or an `http://` or `https://` URL.
pub const CONFIG_KEY_IMAGE: &str = "image";
/// Key of the expected SHA-256 of [`CONFIG_KEY_IMAGE`] (64 hex digits);
/// required for URLs, checked for files when given. A series has its own
/// with `image-sha256.<series>`.
pub const CONFIG_KEY_IMAGE_SHA256: &str = "image-sha256";
/// Key of a kernel on the libvirt host for direct kernel boot; without it
/// the guest boots from its root disk.
pub const CONFIG_KEY_KERNEL: &str = "kernel";
/// Key of an initial RAM disk on the libvirt host for direct kernel boot.
pub const CONFIG_KEY_INITRD: &str = "initrd";
/// Key of the kernel command line for direct kernel boot.
pub const CONFIG_KEY_CMDLINE: &str = "cmdline";
/// Key of the hypervisor type. `auto` (default) chooses `kvm` when the
/// host's domain capabilities offer it and a test guest runs on this
/// host's `/dev/kvm`, and `qemu` otherwise (see
/// [`choose_platform`](crate::platform::choose_platform)). `kvm` or `qemu`
/// forces one.
pub const CONFIG_KEY_VIRT_TYPE: &str = "virt-type";
/// Default of [`CONFIG_KEY_VIRT_TYPE`].
pub const DEFAULT_VIRT_TYPE: &str = "auto";

/// The hypervisor type requested in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtTypeChoice {
    /// Decide from the host's capabilities.
    Auto,
    /// Hardware virtualisation through KVM.
    Kvm,
    /// Software emulation (QEMU's TCG).
    Qemu,
}

/// The source of a base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageLocation {
    /// A file on this host.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
}

impl std::fmt::Display for ImageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

/// A base image source and its expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// The location the image is read from.
    pub location: ImageLocation,
    /// Expected SHA-256 of the image bytes.
    pub sha256: Option<[u8; 32]>,
}

/// Direct kernel boot settings; paths are on the libvirt host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelBoot {
    /// Kernel image.
    pub kernel: String,
    /// Initial RAM disk.
    pub initrd: Option<String>,
    /// Kernel command line.
    pub cmdline: Option<String>,
}

/// The validated configuration of a [`crate::VirtManager`] or
/// [`crate::VirtInitialiser`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtConfig {
    /// Manager name, the prefix of every domain name.
    pub name: String,
    /// Host directory for agent logs. VMs share no host directory, so the
    /// libvirt backend only records it.
    pub log_dir: PathBuf,
    /// libvirt connection URI.
    pub uri: String,
    /// Storage pool name.
    pub pool: String,
    /// Storage pool directory on the libvirt host.
    pub pool_dir: String,
    /// Per-container directories.
    pub dirs: ContainerDirs,
    /// Lock directory for image imports.
    pub lock_dir: PathBuf,
    /// Default base image.
    pub image: Option<ImageSource>,
    /// Base images of single series, by series.
    pub series_images: Vec<(String, ImageSource)>,
    /// Direct kernel boot, when configured.
    pub kernel_boot: Option<KernelBoot>,
    /// Requested hypervisor type.
    pub virt_type: VirtTypeChoice,
}

impl VirtConfig {
    /// Reads and validates every key this backend defines, removing each
    /// from `config`, and logs a warning for each key left over.
    pub fn from_manager_config(mut config: ManagerConfig) -> Result<Self> {
        let parsed = Self::take_keys(&mut config)?;
        config.warn_about_unused("libvirt manager");
        Ok(parsed)
    }

    fn take_keys(config: &mut ManagerConfig) -> Result<Self> {
        let name = config.pop_value(CONFIG_KEY_NAME).unwrap_or_default();
        if name.is_empty() {
            return Err(InvalidValue::new("manager config key \"name\"", "", "is required").into());
        }
        validate_manager_name(&name)?;
        let log_dir = PathBuf::from(config.pop_or(CONFIG_KEY_LOG_DIR, DEFAULT_LOG_DIR));
        let uri = config.pop_or(CONFIG_KEY_URI, DEFAULT_URI);
        check_text(CONFIG_KEY_URI, &uri)?;
        let pool = config.pop_or(CONFIG_KEY_POOL, DEFAULT_POOL);
        validate_pool_name(&pool)?;
        let pool_dir = config.pop_or(CONFIG_KEY_POOL_DIR, DEFAULT_POOL_DIR);
        check_absolute(CONFIG_KEY_POOL_DIR, &pool_dir)?;
        let containers = config.pop_or(CONFIG_KEY_CONTAINERS_DIR, DEFAULT_CONTAINERS_DIR);
        check_absolute(CONFIG_KEY_CONTAINERS_DIR, &containers)?;
        let removed = config.pop_or(CONFIG_KEY_REMOVED_DIR, DEFAULT_REMOVED_CONTAINERS_DIR);
        check_absolute(CONFIG_KEY_REMOVED_DIR, &removed)?;
        let lock_dir = config.pop_or(CONFIG_KEY_LOCK_DIR, DEFAULT_LOCK_DIR);
        check_absolute(CONFIG_KEY_LOCK_DIR, &lock_dir)?;

        let image = take_image(
            config,
            CONFIG_KEY_IMAGE.to_owned(),
            CONFIG_KEY_IMAGE_SHA256.to_owned(),
        )?;
        let series_keys: Vec<String> = config
            .unused_keys()
            .into_iter()
            .filter_map(|key| key.strip_prefix("image.").map(str::to_owned))
            .collect();
        let mut series_images = Vec::new();
        for series in series_keys {
            validate_series(&series)?;
            let source = take_image(
                config,
                format!("image.{series}"),
                format!("image-sha256.{series}"),
            )?
            .expect("the key was listed");
            series_images.push((series, source));
        }

        let kernel = config
            .pop_value(CONFIG_KEY_KERNEL)
            .filter(|v| !v.is_empty());
        let initrd = config
            .pop_value(CONFIG_KEY_INITRD)
            .filter(|v| !v.is_empty());
        let cmdline = config
            .pop_value(CONFIG_KEY_CMDLINE)
            .filter(|v| !v.is_empty());
        let kernel_boot = match kernel {
            Some(kernel) => {
                check_absolute(CONFIG_KEY_KERNEL, &kernel)?;
                if let Some(initrd) = &initrd {
                    check_absolute(CONFIG_KEY_INITRD, initrd)?;
                }
                if let Some(cmdline) = &cmdline {
                    check_text(CONFIG_KEY_CMDLINE, cmdline)?;
                }
                Some(KernelBoot {
                    kernel,
                    initrd,
                    cmdline,
                })
            }
            None if initrd.is_some() || cmdline.is_some() => {
                return Err(InvalidValue::new(
                    "manager config key \"kernel\"",
                    "",
                    "is required when \"initrd\" or \"cmdline\" is set",
                )
                .into());
            }
            None => None,
        };

        let virt_type = match config
            .pop_or(CONFIG_KEY_VIRT_TYPE, DEFAULT_VIRT_TYPE)
            .as_str()
        {
            "auto" => VirtTypeChoice::Auto,
            "kvm" => VirtTypeChoice::Kvm,
            "qemu" => VirtTypeChoice::Qemu,
            other => {
                return Err(InvalidValue::new(
                    "manager config key \"virt-type\"",
                    other,
                    "must be auto, kvm or qemu",
                )
                .into());
            }
        };

        Ok(Self {
            name,
            log_dir,
            uri,
            pool,
            pool_dir,
            dirs: ContainerDirs::new(containers, removed),
            lock_dir: PathBuf::from(lock_dir),
            image,
            series_images,
            kernel_boot,
            virt_type,
        })
    }

    /// Returns the base image source of `series`.
    pub fn image_for(&self, series: &str) -> Option<&ImageSource> {
        self.series_images
            .iter()
            .find(|(name, _)| name == series)
            .map(|(_, source)| source)
            .or(self.image.as_ref())
    }
}

fn take_image(
    config: &mut ManagerConfig,
    key: String,
    sha_key: String,
) -> Result<Option<ImageSource>> {
    let value = config.pop_value(&key).filter(|v| !v.is_empty());
    let sha = config.pop_value(&sha_key).filter(|v| !v.is_empty());
    let Some(value) = value else {
        if let Some(sha) = sha {
            return Err(InvalidValue::new(
                format!("manager config key {sha_key:?}"),
                sha,
                format!("needs {key:?} set too"),
            )
            .into());
        }
        return Ok(None);
    };
    let field = format!("manager config key {key:?}");
    check_text(&key, &value)?;
    let location = if value.starts_with("http://") || value.starts_with("https://") {
        ImageLocation::Url(value.clone())
    } else if Path::new(&value).is_absolute() {
        ImageLocation::File(PathBuf::from(&value))
    } else {
        return Err(InvalidValue::new(
            field,
            value,
            "must be an absolute file path or an http:// or https:// URL",
        )
        .into());
    };
    let sha256 = match sha {
        Some(text) => Some(parse_sha256(&sha_key, &text)?),
        None if matches!(location, ImageLocation::Url(_)) => {
            return Err(InvalidValue::new(
                field,
                value,
                format!(
                    "is a URL, so {sha_key:?} must give its SHA-256 to check the download against"
                ),
            )
            .into());
        }
        None => None,
    };
    Ok(Some(ImageSource { location, sha256 }))
}

fn parse_sha256(key: &str, text: &str) -> Result<[u8; 32], InvalidValue> {
    let mut digest = [0u8; 32];
    match hex::decode_to_slice(text, &mut digest) {
        Ok(()) => Ok(digest),
        Err(_) => Err(InvalidValue::new(
            format!("manager config key {key:?}"),
            text,
            "must be 64 hexadecimal digits",
        )),
    }
}

fn check_text(key: &str, value: &str) -> Result<(), InvalidValue> {
    let field = format!("manager config key {key:?}");
    if check_xml_text(value).is_err() {
        return Err(InvalidValue::new(
            field,
            value,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn check_absolute(key: &str, value: &str) -> Result<(), InvalidValue> {
    check_text(key, value)?;
    if !Path::new(value).is_absolute() {
        return Err(InvalidValue::new(
            format!("manager config key {key:?}"),
            value,
            "must be an absolute path",
        ));
    }
    Ok(())
}

/// Checks a storage pool name: 1 to 64 ASCII letters, digits, `-`, `_`
/// or `.`, not starting with `.` or `-`.
pub fn validate_pool_name(name: &str) -> Result<(), InvalidValue> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(InvalidValue::new(
            "storage pool name",
            name,
            "must be 1 to 64 ASCII letters, digits, '-', '_' or '.', not starting with '.' or '-'",
        ))
    }
}

/// Checks an OS series name such as `bookworm` or `noble`: 1 to 32 ASCII
/// lowercase letters, digits, `-` or `.`, starting with a letter or digit.
/// Series names become part of volume names.
pub fn validate_series(series: &str) -> Result<(), InvalidValue> {
    berth_core::names::validate_series(series)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ManagerConfig {
        ManagerConfig::new().with("name", "juju")
    }

    #[test]
    fn defaults_apply() {
        let config = VirtConfig::from_manager_config(base()).unwrap();
        assert_eq!(config.uri, DEFAULT_URI);
        assert_eq!(config.pool, DEFAULT_POOL);
        assert_eq!(config.pool_dir, DEFAULT_POOL_DIR);
        assert_eq!(config.dirs, ContainerDirs::default());
        assert_eq!(config.virt_type, VirtTypeChoice::Auto);
        assert_eq!(config.image, None);
        assert_eq!(config.kernel_boot, None);
    }

    #[test]
    fn name_required_and_checked() {
        let error = VirtConfig::from_manager_config(ManagerConfig::new()).unwrap_err();
        assert!(error.to_string().contains("\"name\""), "{error}");
        for name in ["00340599maas", "juju-", "Best_#1"] {
            let error = VirtConfig::from_manager_config(ManagerConfig::new().with("name", name))
                .unwrap_err();
            assert!(error.to_string().contains("manager name"), "{error}");
        }
    }

    #[test]
    fn url_image_needs_sha256() {
        let error = VirtConfig::from_manager_config(base().with("image", "http://127.0.0.1/x.img"))
            .unwrap_err();
        assert!(error.to_string().contains("image-sha256"), "{error}");
        let sha = "ab".repeat(32);
        let config = VirtConfig::from_manager_config(
            base()
                .with("image", "https://127.0.0.1/x.img")
                .with("image-sha256", sha.as_str()),
        )
        .unwrap();
        let image = config.image.unwrap();
        assert_eq!(
            image.location,
            ImageLocation::Url("https://127.0.0.1/x.img".into())
        );
        assert_eq!(image.sha256, Some([0xab; 32]));
    }

    #[test]
    fn series_images_override_default() {
        let config = VirtConfig::from_manager_config(
            base()
                .with("image", "/images/default.qcow2")
                .with("image.noble", "/images/noble.qcow2"),
        )
        .unwrap();
        assert_eq!(
            config.image_for("noble").unwrap().location,
            ImageLocation::File("/images/noble.qcow2".into())
        );
        assert_eq!(
            config.image_for("bookworm").unwrap().location,
            ImageLocation::File("/images/default.qcow2".into())
        );
    }

    #[test]
    fn bad_values_rejected() {
        let cases = [
            ("image", "relative/path.img", "absolute"),
            ("image-sha256", "xyz", "needs"),
            ("pool", "../etc", "storage pool name"),
            ("pool-dir", "relative", "absolute"),
            ("containers-dir", "here", "absolute"),
            ("cmdline", "console=ttyS0", "\"kernel\""),
            ("virt-type", "xen", "auto, kvm or qemu"),
            ("uri", "qemu:///system\u{1}", "control characters"),
            ("image.Bad_Series", "/x.img", "series"),
        ];
        for (key, value, expected) in cases {
            let error = VirtConfig::from_manager_config(base().with(key, value)).unwrap_err();
            assert!(error.is_invalid_input(), "{key}={value:?}: {error}");
            assert!(
                error.to_string().contains(expected),
                "{key}={value:?}: {error}"
            );
        }
        let error = VirtConfig::from_manager_config(
            base().with("image", "/x.img").with("image-sha256", "12"),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("64 hexadecimal digits"),
            "{error}"
        );
    }

    #[test]
    fn series_names_checked() {
        for series in ["bookworm", "noble", "22.04", "el9"] {
            validate_series(series).unwrap();
        }
        for series in ["", "Noble", "../x", "a b", "-x", &"a".repeat(33)] {
            assert!(validate_series(series).is_err(), "{series:?}");
        }
    }
}
