//! Base images: one volume per series and source in the storage pool,
//! imported once.
//!
//! An import runs under an exclusive `flock` on a lock file of this host,
//! so concurrent creates (threads or processes) import an image once and
//! the others wait and reuse it. The kernel drops the lock if the process
//! dies. The bytes go into a `<name>.partial` volume through the storage
//! volume upload stream (so a remote libvirt host gets them through its own
//! protocol), are checked against the expected SHA-256, and are then cloned
//! into the final volume by libvirt. libvirt cannot rename a volume, so the
//! clone is what makes the final name appear only when the image is whole.
//! It costs one copy of the image on the libvirt host, once per series.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_core::{Progress, ProgressEvent};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::config::{ImageLocation, ImageSource};
use crate::handle::{Connection, PoolHandle, StreamHandle, VolumeHandle};
use crate::volumes::{create_volume, delete_volume, lookup_volume};
use crate::xml::storage::{Capacity, Format, StorageVolume, VolumeTarget};
use crate::xml::{from_xml, to_xml};

/// First bytes of a qcow2 image.
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
/// Bytes read to recognise the format.
const HEADER_LEN: usize = 512;
/// Bytes between two progress reports.
const PROGRESS_INTERVAL: u64 = 1 << 20;
const CHUNK: usize = 256 * 1024;
/// Time allowed to open a connection to an image server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// QEMU copy-on-write version 2 or 3.
    Qcow2,
    /// Plain bytes.
    Raw,
}

impl ImageFormat {
    /// Returns libvirt's name of the format.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }

    /// Parses libvirt's name of the format.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "qcow2" => Some(Self::Qcow2),
            "raw" => Some(Self::Raw),
            _ => None,
        }
    }
}

/// A base image volume ready to back overlays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// Volume name in the pool.
    pub volume: String,
    /// Path of the volume on the libvirt host.
    pub path: String,
    /// Image format.
    pub format: ImageFormat,
    /// Size of the disk the image holds, in bytes.
    pub virtual_size: u64,
}

/// A failed image import.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Opening or reading the source failed.
    #[error("read image {location}")]
    Read {
        /// The source.
        location: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The HTTP request failed.
    #[error("download image {location}")]
    Download {
        /// The URL.
        location: String,
        /// The cause.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The image is not what its configuration promises.
    #[error("image {location}: {problem}")]
    Invalid {
        /// The source.
        location: String,
        /// The problem.
        problem: String,
    },
    /// The bytes do not match the configured SHA-256.
    #[error(
        "image {location} has SHA-256 {actual}, but {expected} was expected; the download was discarded"
    )]
    DigestMismatch {
        /// The source.
        location: String,
        /// Configured digest.
        expected: String,
        /// Digest of the bytes read.
        actual: String,
    },
    /// The lock file could not be opened or locked.
    #[error("lock {path}", path = .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A libvirt call failed.
    #[error("{action}")]
    Libvirt {
        /// The action that failed.
        action: String,
        /// libvirt's error.
        #[source]
        source: virt::error::Error,
    },
    /// A volume document could not be written or read.
    #[error("volume XML")]
    Xml(#[from] crate::xml::XmlError),
    /// A test's fault hook failed the import.
    #[cfg(feature = "fault-injection")]
    #[error("{0}")]
    Injected(String),
}

fn libvirt(action: impl Into<String>) -> impl FnOnce(virt::error::Error) -> ImageError {
    let action = action.into();
    move |source| ImageError::Libvirt { action, source }
}

/// Returns the volume name of the base image of `series` from `source`:
/// `base-<series>-<12 hex digits>`, the digits taken from the SHA-256 of
/// the location and the expected digest, so a changed source never reuses
/// an old volume.
pub fn base_volume_name(series: &str, source: &ImageSource) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.location.to_string().as_bytes());
    hasher.update([0]);
    if let Some(digest) = &source.sha256 {
        hasher.update(digest);
    }
    let identity = hex::encode(hasher.finalize());
    format!("base-{series}-{}", &identity[..12])
}

/// The parts of a manager that an import uses.
pub struct ImportContext<'a> {
    /// The connection.
    pub connection: &'a Connection,
    /// The storage pool.
    pub pool: &'a PoolHandle,
    /// Directory of lock files on this host.
    pub lock_dir: &'a Path,
    /// Receives byte counts.
    pub progress: &'a dyn Progress,
    /// Called when the upload is complete and checked, before the image is
    /// published under its final name. An error fails the import there.
    #[cfg(feature = "fault-injection")]
    pub before_publish: &'a dyn Fn() -> Result<(), String>,
}

/// Returns the base image of `series` from `source`, importing it first
/// when the pool does not have it yet.
pub fn ensure_base_image(
    context: &ImportContext<'_>,
    series: &str,
    source: &ImageSource,
) -> Result<BaseImage, ImageError> {
    let volume = base_volume_name(series, source);
    let pool_name = context
        .pool
        .name()
        .map_err(libvirt("read the storage pool name"))?;
    let _lock = lock(context.lock_dir, &lock_name(&pool_name, &volume))?;
    if let Some(existing) =
        lookup_volume(context.pool, &volume).map_err(libvirt(format!("look up volume {volume}")))?
    {
        debug!(volume = volume.as_str(), "base image already imported");
        return describe(&existing, &volume);
    }
    info!(volume = volume.as_str(), source = %source.location, "importing base image");
    let partial_name = format!("{volume}{PARTIAL_SUFFIX}");
    if let Some(leftover) = lookup_volume(context.pool, &partial_name)
        .map_err(libvirt(format!("look up volume {partial_name}")))?
    {
        warn!(
            volume = partial_name.as_str(),
            "deleting the partial import of an earlier run"
        );
        leftover
            .delete(0)
            .map_err(libvirt(format!("delete volume {partial_name}")))?;
    }

    let mut reader = open_source(&source.location)?;
    let header = read_header(&mut reader.stream, &source.location)?;
    let (format, virtual_size) = recognise(&header, reader.length, &source.location)?;
    let template = StorageVolume {
        volume_type: None,
        name: partial_name.clone(),
        key: None,
        capacity: Capacity::bytes(virtual_size),
        allocation: Some(Capacity::bytes(0)),
        target: Some(VolumeTarget {
            path: None,
            format: Some(Format::new(format.as_str())),
        }),
        backing_store: None,
    };
    let partial = create_volume(context.pool, &template).map_err(|error| match error {
        crate::volumes::VolumeError::Xml(error) => ImageError::Xml(error),
        crate::volumes::VolumeError::Libvirt(source) => ImageError::Libvirt {
            action: format!("create volume {partial_name}"),
            source,
        },
    })?;

    let result = upload(context, &partial, &mut reader, &header, source).and_then(|()| {
        #[cfg(feature = "fault-injection")]
        (context.before_publish)().map_err(ImageError::Injected)?;
        let mut final_template = template.clone();
        final_template.name = volume.clone();
        final_template.allocation = None;
        let xml = to_xml(&final_template)?;
        virt::storage_vol::StorageVol::create_xml_from(context.pool, &xml, &partial, 0)
            .map(VolumeHandle::new)
            .map_err(libvirt(format!(
                "clone volume {partial_name} into {volume}"
            )))
    });
    if let Err(error) = delete_volume(&partial) {
        warn!(volume = partial_name.as_str(), error = %error, "deleting the partial import failed");
    }
    let finished = result?;
    info!(
        volume = volume.as_str(),
        format = format.as_str(),
        virtual_size,
        "base image imported"
    );
    describe(&finished, &volume)
}

fn describe(volume: &VolumeHandle, name: &str) -> Result<BaseImage, ImageError> {
    let text = volume
        .xml_desc(0)
        .map_err(libvirt(format!("read volume {name}")))?;
    let document: StorageVolume = from_xml(&text)?;
    let format = document
        .format()
        .and_then(ImageFormat::from_name)
        .unwrap_or(ImageFormat::Raw);
    let path = volume
        .path()
        .map_err(libvirt(format!("read the path of volume {name}")))?;
    Ok(BaseImage {
        volume: name.to_owned(),
        path,
        format,
        virtual_size: document.capacity.value,
    })
}

/// Suffix of the volume an import uploads into before it is published.
const PARTIAL_SUFFIX: &str = ".partial";

/// Returns the name of the lock file of importing volume `volume` into the
/// pool `pool_name`.
fn lock_name(pool_name: &str, volume: &str) -> String {
    format!("image-{pool_name}-{volume}.lock")
}

/// Deletes the `.partial` volumes of base image imports whose process died
/// half way: those whose import lock on this host no process holds. Returns the
/// names of the deleted volumes.
///
/// NOTE: the import lock is a file on this host. A `.partial` volume that
/// another host is uploading into the same pool (a remote URI shared by
/// several hosts) looks dead from here and is deleted, which fails that
/// import; the import on this host deletes such volumes too.
pub fn remove_dead_imports(pool: &PoolHandle, lock_dir: &Path) -> Result<Vec<String>, ImageError> {
    let pool_name = pool.name().map_err(libvirt("read the storage pool name"))?;
    pool.refresh(0)
        .map_err(libvirt(format!("refresh storage pool {pool_name}")))?;
    let mut names = pool
        .list_volumes()
        .map_err(libvirt(format!("list the volumes of pool {pool_name}")))?;
    names.sort();
    let mut removed = Vec::new();
    for name in names {
        let Some(volume) = name
            .strip_suffix(PARTIAL_SUFFIX)
            .filter(|volume| volume.starts_with("base-"))
        else {
            continue;
        };
        let Some(_lock) = try_lock(lock_dir, &lock_name(&pool_name, volume))? else {
            debug!(
                volume = name.as_str(),
                "an import on this host is still running"
            );
            continue;
        };
        let Some(handle) =
            lookup_volume(pool, &name).map_err(libvirt(format!("look up volume {name}")))?
        else {
            continue;
        };
        warn!(
            volume = name.as_str(),
            "deleting the partial import of a process that died"
        );
        delete_volume(&handle).map_err(libvirt(format!("delete volume {name}")))?;
        removed.push(name);
    }
    Ok(removed)
}

/// Takes the lock file `name` in `dir` without waiting. Returns `Ok(None)`
/// when another process or thread holds it.
fn try_lock(dir: &Path, name: &str) -> Result<Option<Flock<File>>, ImageError> {
    let path = dir.join(name);
    let fail = |source| ImageError::Lock {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(fail(errno.into())),
    }
}

fn lock(dir: &Path, name: &str) -> Result<Flock<File>, ImageError> {
    let path = dir.join(name);
    let fail = |source| ImageError::Lock {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| fail(errno.into()))
}

struct SourceReader {
    stream: Box<dyn Read>,
    length: Option<u64>,
}

fn open_source(location: &ImageLocation) -> Result<SourceReader, ImageError> {
    match location {
        ImageLocation::File(path) => {
            let read_error = |source| ImageError::Read {
                location: location.to_string(),
                source,
            };
            let file = File::open(path).map_err(read_error)?;
            let length = file.metadata().map_err(read_error)?.len();
            Ok(SourceReader {
                stream: Box::new(file),
                length: Some(length),
            })
        }
        ImageLocation::Url(url) => {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .build()
                .into();
            let response = agent
                .get(url)
                .call()
                .map_err(|source| ImageError::Download {
                    location: url.clone(),
                    source: Box::new(source),
                })?;
            let length = response.body().content_length();
            Ok(SourceReader {
                stream: Box::new(response.into_body().into_reader()),
                length,
            })
        }
    }
}

fn read_header(stream: &mut dyn Read, location: &ImageLocation) -> Result<Vec<u8>, ImageError> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    stream
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(|source| ImageError::Read {
            location: location.to_string(),
            source,
        })?;
    Ok(header)
}

/// Recognises qcow2 by its magic number and treats anything else as raw.
/// Returns the format and the size of the disk the image holds.
fn recognise(
    header: &[u8],
    length: Option<u64>,
    location: &ImageLocation,
) -> Result<(ImageFormat, u64), ImageError> {
    let invalid = |problem: String| ImageError::Invalid {
        location: location.to_string(),
        problem,
    };
    if header.len() >= 32 && header[..4] == QCOW2_MAGIC {
        let version = u32::from_be_bytes(header[4..8].try_into().expect("4 bytes"));
        if !(2..=3).contains(&version) {
            return Err(invalid(format!(
                "qcow2 version {version} is not supported (2 or 3 is)"
            )));
        }
        let size = u64::from_be_bytes(header[24..32].try_into().expect("8 bytes"));
        if size == 0 {
            return Err(invalid("qcow2 header gives a disk size of 0".into()));
        }
        return Ok((ImageFormat::Qcow2, size));
    }
    match length {
        Some(0) => Err(invalid("is empty".into())),
        Some(length) => Ok((ImageFormat::Raw, length)),
        None => Err(invalid("is not qcow2 and its length is unknown (no Content-Length), so it cannot be imported as raw".into())),
    }
}

/// Sends the header and the rest of the source into `volume`, hashing
/// every byte, and checks the digest.
fn upload(
    context: &ImportContext<'_>,
    volume: &VolumeHandle,
    reader: &mut SourceReader,
    header: &[u8],
    source: &ImageSource,
) -> Result<(), ImageError> {
    let location = source.location.to_string();
    let stream =
        StreamHandle::create(context.connection).map_err(libvirt("create an upload stream"))?;
    let sink = match volume.upload(&stream, 0, reader.length.unwrap_or(0), 0) {
        Ok(()) => Some(&stream),
        Err(error) if is_unsupported_test_driver(context.connection, &error) => {
            // libvirt's test driver keeps volumes in memory without
            // contents and has no upload; the bytes are still read and
            // checked.
            debug!(
                "the test driver stores no volume contents; reading the image without uploading it"
            );
            None
        }
        Err(error) => {
            return Err(ImageError::Libvirt {
                action: "start the volume upload".into(),
                source: error,
            });
        }
    };
    let result = copy_and_hash(
        context,
        sink,
        &mut *reader.stream,
        header,
        reader.length,
        &location,
    );
    let digest = match result {
        Ok(digest) => digest,
        Err(error) => {
            if let Some(stream) = sink
                && let Err(abort_error) = stream.abort()
            {
                warn!(error = %abort_error, "aborting the upload stream failed");
            }
            return Err(error);
        }
    };
    if let Some(stream) = sink {
        stream
            .finish()
            .map_err(libvirt("finish the volume upload"))?;
    }
    if let Some(expected) = &source.sha256
        && digest != *expected
    {
        return Err(ImageError::DigestMismatch {
            location,
            expected: hex::encode(expected),
            actual: hex::encode(digest),
        });
    }
    Ok(())
}

fn copy_and_hash(
    context: &ImportContext<'_>,
    sink: Option<&StreamHandle>,
    reader: &mut dyn Read,
    header: &[u8],
    total: Option<u64>,
    location: &str,
) -> Result<[u8; 32], ImageError> {
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut reported = 0u64;
    let mut buffer = vec![0u8; CHUNK];
    let mut send = |chunk: &[u8]| -> Result<(), ImageError> {
        hasher.update(chunk);
        if let Some(stream) = sink {
            stream.send_all(chunk).map_err(libvirt("send image data"))?;
        }
        done += chunk.len() as u64;
        if done - reported >= PROGRESS_INTERVAL {
            context.progress.report(&ProgressEvent::Bytes {
                what: location,
                done,
                total,
            });
            reported = done;
        }
        Ok(())
    };
    send(header)?;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ImageError::Read {
                    location: location.to_owned(),
                    source,
                });
            }
        };
        send(&buffer[..read])?;
    }
    context.progress.report(&ProgressEvent::Bytes {
        what: location,
        done,
        total,
    });
    if let Some(total) = total
        && done != total
    {
        return Err(ImageError::Invalid {
            location: location.to_owned(),
            problem: format!("ended after {done} of {total} bytes"),
        });
    }
    Ok(hasher.finalize().into())
}

/// Returns true when `error` reports the call as unsupported and the
/// connection is libvirt's test driver.
pub(crate) fn is_unsupported_test_driver(
    connection: &Connection,
    error: &virt::error::Error,
) -> bool {
    let unsupported =
        error.code() == virt::error::ErrorNumberEnum::Known(virt::error::ErrorNumber::NoSupport);
    unsupported
        && connection
            .driver_type()
            .is_ok_and(|kind| kind.eq_ignore_ascii_case("test"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ImageLocation {
        ImageLocation::File("/x.img".into())
    }

    #[test]
    fn qcow2_header_recognised() {
        let mut header = vec![0u8; 512];
        header[..4].copy_from_slice(&QCOW2_MAGIC);
        header[4..8].copy_from_slice(&3u32.to_be_bytes());
        header[24..32].copy_from_slice(&(64u64 << 20).to_be_bytes());
        assert_eq!(
            recognise(&header, Some(196_616), &file()).unwrap(),
            (ImageFormat::Qcow2, 64 << 20)
        );
        header[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert!(
            recognise(&header, None, &file())
                .unwrap_err()
                .to_string()
                .contains("version 1")
        );
    }

    #[test]
    fn raw_needs_known_length() {
        let header = vec![0u8; 512];
        assert_eq!(
            recognise(&header, Some(1 << 20), &file()).unwrap(),
            (ImageFormat::Raw, 1 << 20)
        );
        assert!(
            recognise(&header, None, &file())
                .unwrap_err()
                .to_string()
                .contains("Content-Length")
        );
        assert!(
            recognise(&[], Some(0), &file())
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn volume_name_follows_source() {
        let a = ImageSource {
            location: file(),
            sha256: None,
        };
        let b = ImageSource {
            location: file(),
            sha256: Some([1; 32]),
        };
        let name = base_volume_name("bookworm", &a);
        assert!(name.starts_with("base-bookworm-"), "{name}");
        assert_eq!(name.len(), "base-bookworm-".len() + 12);
        assert_ne!(name, base_volume_name("bookworm", &b));
        assert_ne!(name, base_volume_name("noble", &a));
    }
}
