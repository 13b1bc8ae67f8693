//! Images: where the root file system of a template comes from.
//!
//! Three sources exist: the embedded busybox image built from the host's
//! static busybox, a root file system tarball on the host, and a
//! simplestreams image server such as the one images.linuxcontainers.org
//! runs. Each resolves to a [`ResolvedImage`]: a short name that identifies
//! its content (and so its template) and a way to fill a root file system
//! directory.

pub mod busybox;
pub mod simplestreams;
pub mod tarball;

use std::path::{Path, PathBuf};

use berth_core::InvalidValue;
use berth_core::error::BoxError;
use berth_core::progress::Progress;
use sha2::{Digest, Sha256};

use crate::config::{IMAGE_BUSYBOX, KEY_IMAGE};

/// Configured source of the images of new containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// The embedded busybox image.
    Busybox,
    /// A root file system tarball on the host.
    Tarball(PathBuf),
    /// A simplestreams image server, by base URL (without a trailing `/`).
    Simplestreams(String),
}

impl ImageSource {
    /// Parses the value of the `image` key.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        if value == IMAGE_BUSYBOX {
            return Ok(Self::Busybox);
        }
        if value.starts_with("http://") || value.starts_with("https://") {
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(InvalidValue::new(
                    KEY_IMAGE,
                    value,
                    "a URL must not contain whitespace",
                ));
            }
            return Ok(Self::Simplestreams(value.trim_end_matches('/').to_owned()));
        }
        if value.starts_with('/') {
            if value.chars().any(char::is_control) {
                return Err(InvalidValue::new(
                    KEY_IMAGE,
                    value,
                    "a tarball path must not contain control characters such as a line break or NUL",
                ));
            }
            if tarball::Compression::from_name(Path::new(value)).is_none() {
                return Err(InvalidValue::new(
                    KEY_IMAGE,
                    value,
                    "a root file system tarball must end in .tar, .tar.xz, .txz, .tar.gz, .tgz, .tar.zst or .tzst",
                ));
            }
            return Ok(Self::Tarball(PathBuf::from(value)));
        }
        Err(InvalidValue::new(
            KEY_IMAGE,
            value,
            "must be 'busybox', the absolute path of a root file system tarball, or the http(s) URL of a simplestreams server",
        ))
    }
}

/// Content of a template's root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsContent {
    /// The busybox image, from this static busybox binary.
    Busybox(PathBuf),
    /// The content of this tarball.
    Tarball(PathBuf),
    /// The content of a tarball from a simplestreams server, downloaded
    /// into the cache directory when it is not there.
    Remote {
        /// Base URL of the server.
        base_url: String,
        /// The tarball chosen from the server's catalogue.
        image: simplestreams::RemoteImage,
        /// Directory of downloaded images.
        cache_dir: PathBuf,
    },
}

/// An image resolved to its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Short name identifying the content, used in the template's name:
    /// ASCII letters, digits, `-` and `.` only.
    pub slug: String,
    /// How to fill a root file system with it.
    pub content: RootfsContent,
}

impl ResolvedImage {
    /// Fills the empty directory `rootfs` with the image, downloading it
    /// first when it comes from a server and is not cached.
    pub fn unpack(&self, rootfs: &Path, progress: &dyn Progress) -> Result<(), BoxError> {
        let unpack_error = |archive: &Path| {
            let archive = archive.to_owned();
            move |source| -> BoxError {
                Box::new(berth_core::Error::io("unpack image", archive, source))
            }
        };
        match &self.content {
            RootfsContent::Busybox(binary) => {
                busybox::build_rootfs(binary, rootfs).map_err(unpack_error(binary))
            }
            RootfsContent::Tarball(archive) => {
                tarball::unpack(archive, rootfs, progress).map_err(unpack_error(archive))
            }
            RootfsContent::Remote {
                base_url,
                image,
                cache_dir,
            } => {
                let archive =
                    simplestreams::Client::new(base_url).fetch(image, cache_dir, progress)?;
                tarball::unpack(&archive, rootfs, progress).map_err(unpack_error(&archive))
            }
        }
    }
}

/// Turns `text` into a slug part: lowercase ASCII letters, digits and `-`.
pub(crate) fn slug_part(text: &str) -> String {
    let mut slug: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    slug.truncate(40);
    slug.trim_matches('-').to_owned()
}

/// Returns the first 12 hex digits of the SHA-256 of `parts`.
pub(crate) fn short_hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parsed() {
        assert_eq!(ImageSource::parse("busybox").unwrap(), ImageSource::Busybox);
        assert_eq!(
            ImageSource::parse("http://127.0.0.1:8080/images/").unwrap(),
            ImageSource::Simplestreams("http://127.0.0.1:8080/images".into())
        );
        assert_eq!(
            ImageSource::parse("/srv/rootfs.tar.xz").unwrap(),
            ImageSource::Tarball(PathBuf::from("/srv/rootfs.tar.xz"))
        );
        for bad in [
            "ubuntu",
            "rootfs.tar.xz",
            "/srv/rootfs.zip",
            "ftp://x",
            "http://a b",
        ] {
            assert!(ImageSource::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn slug_part_sanitised() {
        assert_eq!(slug_part("Debian:bookworm/amd64"), "debian-bookworm-amd64");
        assert_eq!(slug_part("../x"), "x");
    }
}
