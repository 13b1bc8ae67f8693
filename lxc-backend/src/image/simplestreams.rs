//! Images from a simplestreams server, in the format that
//! images.linuxcontainers.org serves. `streams/v1/index.json` names the
//! product catalogue (`streams/v1/images.json`). Its products are keyed by
//! os, release, architecture and variant, and contain dated versions. Each
//! version lists its files with a SHA-256 and a size.
//!
//! The client only ever fetches URLs under the configured base URL: it
//! follows no redirects, uses no proxy from the environment, and rejects
//! catalogue paths that are absolute, carry a scheme or climb with `..`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::progress::{Progress, ProgressEvent};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Path of the index below the base URL.
pub const INDEX_PATH: &str = "streams/v1/index.json";
/// Largest catalogue accepted, in bytes.
pub const MAX_CATALOGUE_BYTES: u64 = 256 << 20;
/// File type of a root file system tarball in the catalogue.
pub const ROOTFS_FILE_TYPE: &str = "root.tar.xz";

/// Failure to find or fetch an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An HTTP request failed.
    #[error("download of {url} failed")]
    Http {
        /// The URL requested.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// Reading or writing a file failed.
    #[error("{action} {path}", path = .path.display())]
    Io {
        /// Action that failed.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The server's index or catalogue could not be used.
    #[error("invalid simplestreams data at {url}: {message}")]
    Format {
        /// The document's URL.
        url: String,
        /// Problem with the document.
        message: String,
    },
    /// No product matches the request.
    #[error("no image for {wanted} at {url}; available: {available}")]
    NotFound {
        /// The catalogue's URL.
        url: String,
        /// The requested os, release, architecture and variant.
        wanted: String,
        /// Products the catalogue offers for this architecture.
        available: String,
    },
    /// A download did not match its catalogue entry.
    #[error(
        "download of {url} is corrupt: expected SHA-256 {expected} and {expected_size} bytes, got {actual} and {actual_size} bytes"
    )]
    Checksum {
        /// The file's URL.
        url: String,
        /// SHA-256 from the catalogue.
        expected: String,
        /// SHA-256 of the bytes received.
        actual: String,
        /// Size from the catalogue.
        expected_size: u64,
        /// Bytes received.
        actual_size: u64,
    },
}

#[derive(Debug, Deserialize)]
struct Index {
    index: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Deserialize)]
struct IndexEntry {
    #[serde(default)]
    datatype: String,
    path: String,
}

#[derive(Debug, Deserialize)]
struct Catalogue {
    products: BTreeMap<String, Product>,
}

#[derive(Debug, Deserialize)]
struct Product {
    #[serde(default)]
    os: String,
    #[serde(default)]
    release: String,
    #[serde(default)]
    arch: String,
    #[serde(default)]
    variant: String,
    #[serde(default)]
    versions: BTreeMap<String, Version>,
}

#[derive(Debug, Deserialize)]
struct Version {
    #[serde(default)]
    items: BTreeMap<String, Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    ftype: String,
    sha256: String,
    size: u64,
    path: String,
}

/// Request for a product in a catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageQuery {
    /// Operating system (compared without case), or any.
    pub os: Option<String>,
    /// Release, the series of the machine (such as `bookworm`).
    pub release: String,
    /// Architecture in the catalogue's spelling (`amd64`, `arm64`, ...).
    pub arch: String,
    /// Variant (such as `cloud` or `default`).
    pub variant: String,
}

/// A root file system tarball chosen from a catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    /// Product key, such as `debian:bookworm:amd64:cloud`.
    pub product: String,
    /// Version key, such as `20240101_05:24`.
    pub version: String,
    /// Full URL of the tarball.
    pub url: String,
    /// Hex SHA-256 of the tarball.
    pub sha256: String,
    /// Size of the tarball in bytes.
    pub size: u64,
}

/// An HTTP client bound to one simplestreams base URL.
pub struct Client {
    base_url: String,
    agent: ureq::Agent,
}

impl Client {
    /// Creates a client for the server at `base_url` (no trailing `/`).
    pub fn new(base_url: &str) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .max_redirects(0)
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    /// Returns the URL of `path` below the base URL, rejecting paths that
    /// could leave it.
    fn url_of(&self, path: &str) -> Result<String, ImageError> {
        let unsafe_path = path.is_empty()
            || path.starts_with('/')
            || path.contains("://")
            || path.contains('\\')
            || path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
            || path.split('/').any(|part| part == ".." || part == ".");
        if unsafe_path {
            return Err(ImageError::Format {
                url: self.base_url.clone(),
                message: format!("path {path:?} is not a plain relative path below the base URL"),
            });
        }
        Ok(format!("{}/{path}", self.base_url))
    }

    fn fetch_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, ImageError> {
        let http = |source: ureq::Error| ImageError::Http {
            url: url.to_owned(),
            source: Box::new(source),
        };
        let mut response = self.agent.get(url).call().map_err(http)?;
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_CATALOGUE_BYTES)
            .read_to_vec()
            .map_err(http)?;
        serde_json::from_slice(&bytes).map_err(|error| ImageError::Format {
            url: url.to_owned(),
            message: error.to_string(),
        })
    }

    /// Finds the newest root file system tarball matching `query`.
    pub fn find(&self, query: &ImageQuery) -> Result<RemoteImage, ImageError> {
        let index_url = self.url_of(INDEX_PATH)?;
        let index: Index = self.fetch_json(&index_url)?;
        let entry = index
            .index
            .values()
            .find(|entry| entry.datatype == "image-downloads")
            .ok_or_else(|| ImageError::Format {
                url: index_url.clone(),
                message: "no image-downloads entry".into(),
            })?;
        let catalogue_url = self.url_of(&entry.path)?;
        let catalogue: Catalogue = self.fetch_json(&catalogue_url)?;
        self.choose(&catalogue, query, &catalogue_url)
    }

    fn choose(
        &self,
        catalogue: &Catalogue,
        query: &ImageQuery,
        url: &str,
    ) -> Result<RemoteImage, ImageError> {
        let matches: Vec<(&String, &Product)> = catalogue
            .products
            .iter()
            .filter(|(_, product)| {
                product.release == query.release
                    && product.arch == query.arch
                    && product.variant == query.variant
                    && query
                        .os
                        .as_ref()
                        .is_none_or(|os| product.os.eq_ignore_ascii_case(os))
            })
            .collect();
        let wanted = format!(
            "os {} release {} arch {} variant {}",
            query.os.as_deref().unwrap_or("(any)"),
            query.release,
            query.arch,
            query.variant
        );
        let (key, product) = match matches.as_slice() {
            [one] => *one,
            [] => {
                let available: Vec<&str> = catalogue
                    .products
                    .iter()
                    .filter(|(_, product)| product.arch == query.arch)
                    .map(|(key, _)| key.as_str())
                    .collect();
                return Err(ImageError::NotFound {
                    url: url.to_owned(),
                    wanted,
                    available: if available.is_empty() {
                        "nothing".into()
                    } else {
                        available.join(", ")
                    },
                });
            }
            several => {
                let keys: Vec<&str> = several.iter().map(|(key, _)| key.as_str()).collect();
                return Err(ImageError::Format {
                    url: url.to_owned(),
                    message: format!(
                        "{wanted} matches several products ({}); set image-os",
                        keys.join(", ")
                    ),
                });
            }
        };
        // Version keys are dates (such as 20240101_05:24), so the largest
        // key is the newest build.
        for (version, build) in product.versions.iter().rev() {
            let item = build.items.values().find(|item| {
                item.ftype == ROOTFS_FILE_TYPE || item.path.ends_with("/rootfs.tar.xz")
            });
            if let Some(item) = item {
                if item.sha256.len() != 64 || !item.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ImageError::Format {
                        url: url.to_owned(),
                        message: format!(
                            "{key} {version}: SHA-256 {:?} is not 64 hex digits",
                            item.sha256
                        ),
                    });
                }
                return Ok(RemoteImage {
                    product: key.clone(),
                    version: version.clone(),
                    url: self.url_of(&item.path)?,
                    sha256: item.sha256.to_ascii_lowercase(),
                    size: item.size,
                });
            }
        }
        Err(ImageError::NotFound {
            url: url.to_owned(),
            wanted: format!("{wanted} with a {ROOTFS_FILE_TYPE} file"),
            available: key.clone(),
        })
    }

    /// Returns the cached tarball of `image` in `cache_dir`, downloading it
    /// first when it is missing. The download is checked against the
    /// catalogue's SHA-256 and size before it enters the cache, and its
    /// bytes are reported to `progress` as they arrive.
    pub fn fetch(
        &self,
        image: &RemoteImage,
        cache_dir: &Path,
        progress: &dyn Progress,
    ) -> Result<PathBuf, ImageError> {
        let target = cache_dir.join(format!("{}.tar.xz", image.sha256));
        if fs::metadata(&target).is_ok_and(|meta| meta.len() == image.size) {
            tracing::debug!(url = image.url.as_str(), path = %target.display(), "image found in cache");
            return Ok(target);
        }
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source: io::Error| ImageError::Io {
                action,
                path,
                source,
            }
        };
        fs::create_dir_all(cache_dir).map_err(io("create image cache", cache_dir))?;

        let temp = cache_dir.join(format!(
            ".{}.{}.{:?}.part",
            image.sha256,
            std::process::id(),
            std::thread::current().id()
        ));
        let result = self.download(image, &temp, progress);
        if let Err(error) = result {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        fs::rename(&temp, &target).map_err(io("move download into cache", &target))?;
        tracing::info!(url = image.url.as_str(), path = %target.display(), bytes = image.size, "downloaded image");
        Ok(target)
    }

    fn download(
        &self,
        image: &RemoteImage,
        temp: &Path,
        progress: &dyn Progress,
    ) -> Result<(), ImageError> {
        let http = |source: ureq::Error| ImageError::Http {
            url: image.url.clone(),
            source: Box::new(source),
        };
        let write_error = |source: io::Error| ImageError::Io {
            action: "write download",
            path: temp.to_owned(),
            source,
        };
        let mut response = self.agent.get(&image.url).call().map_err(http)?;
        let total = response.body().content_length().or(Some(image.size));
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut file = File::create(temp).map_err(write_error)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 256 * 1024];
        let (mut done, mut reported) = (0u64, 0u64);
        progress.report(&ProgressEvent::Bytes {
            what: &image.url,
            done,
            total,
        });
        loop {
            let count = reader.read(&mut buffer).map_err(|source| ImageError::Io {
                action: "read download of",
                path: PathBuf::from(&image.url),
                source,
            })?;
            if count == 0 {
                break;
            }
            hasher.update(&buffer[..count]);
            file.write_all(&buffer[..count]).map_err(write_error)?;
            done += count as u64;
            if done - reported >= 1 << 20 {
                reported = done;
                progress.report(&ProgressEvent::Bytes {
                    what: &image.url,
                    done,
                    total,
                });
            }
        }
        progress.report(&ProgressEvent::Bytes {
            what: &image.url,
            done,
            total,
        });
        file.sync_all().map_err(write_error)?;
        let actual = hex::encode(hasher.finalize());
        if actual != image.sha256 || done != image.size {
            return Err(ImageError::Checksum {
                url: image.url.clone(),
                expected: image.sha256.clone(),
                actual,
                expected_size: image.size,
                actual_size: done,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue(json: &str) -> Catalogue {
        serde_json::from_str(json).unwrap()
    }

    const CATALOGUE: &str = r#"{"products": {
        "debian:bookworm:amd64:cloud": {"os": "Debian", "release": "bookworm", "arch": "amd64", "variant": "cloud",
            "versions": {
                "20240101_05:24": {"items": {"root.tar.xz": {"ftype": "root.tar.xz", "sha256": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "size": 10, "path": "images/d/old/rootfs.tar.xz"}}},
                "20240102_05:24": {"items": {"root.tar.xz": {"ftype": "root.tar.xz", "sha256": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "size": 11, "path": "images/d/new/rootfs.tar.xz"}}}
            }},
        "debian:bookworm:amd64:default": {"os": "Debian", "release": "bookworm", "arch": "amd64", "variant": "default", "versions": {}},
        "evil:bookworm:amd64:cloud": {"os": "Evil", "release": "bookworm", "arch": "amd64", "variant": "cloud",
            "versions": {"1": {"items": {"root.tar.xz": {"ftype": "root.tar.xz", "sha256": "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc", "size": 1, "path": "../../etc/passwd"}}}}}
    }}"#;

    fn query(os: Option<&str>) -> ImageQuery {
        ImageQuery {
            os: os.map(str::to_owned),
            release: "bookworm".into(),
            arch: "amd64".into(),
            variant: "cloud".into(),
        }
    }

    #[test]
    fn newest_version_chosen() {
        let client = Client::new("http://127.0.0.1:1/base/");
        let image = client
            .choose(&catalogue(CATALOGUE), &query(Some("debian")), "u")
            .unwrap();
        assert_eq!(image.version, "20240102_05:24");
        assert_eq!(
            image.url,
            "http://127.0.0.1:1/base/images/d/new/rootfs.tar.xz"
        );
        assert_eq!(image.size, 11);
    }

    #[test]
    fn ambiguous_release_needs_os() {
        let client = Client::new("http://127.0.0.1:1");
        let error = client
            .choose(&catalogue(CATALOGUE), &query(None), "u")
            .unwrap_err();
        assert!(error.to_string().contains("set image-os"), "{error}");
    }

    #[test]
    fn escaping_path_rejected() {
        let client = Client::new("http://127.0.0.1:1");
        let error = client
            .choose(&catalogue(CATALOGUE), &query(Some("evil")), "u")
            .unwrap_err();
        assert!(
            error.to_string().contains("not a plain relative path"),
            "{error}"
        );
        for path in [
            "/etc/passwd",
            "http://elsewhere/x",
            "a/../b",
            "a b",
            "a?b",
            "",
        ] {
            assert!(client.url_of(path).is_err(), "{path:?} accepted");
        }
    }

    #[test]
    fn missing_product_lists_available() {
        let client = Client::new("http://127.0.0.1:1");
        let mut wanted = query(Some("debian"));
        wanted.release = "trixie".into();
        let error = client
            .choose(&catalogue(CATALOGUE), &wanted, "u")
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("release trixie"), "{text}");
        assert!(text.contains("debian:bookworm:amd64:cloud"), "{text}");
    }
}
