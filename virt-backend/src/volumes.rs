//! Storage volume calls shared by image imports, creates and destroys.

use virt::error::{ErrorNumber, ErrorNumberEnum};

use crate::handle::{Connection, PoolHandle, StreamHandle, VolumeHandle};
use crate::image::is_unsupported_test_driver;
use crate::xml::storage::StorageVolume;
use crate::xml::{XmlError, to_xml};

/// Why a volume call failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The volume document could not be written.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// libvirt rejected the call.
    #[error(transparent)]
    Libvirt(#[from] virt::error::Error),
}

/// Returns true when `error` is libvirt's code `code`.
pub(crate) fn has_code(error: &virt::error::Error, code: ErrorNumber) -> bool {
    error.code() == ErrorNumberEnum::Known(code)
}

/// Creates a volume in `pool` from `document`.
pub fn create_volume(
    pool: &PoolHandle,
    document: &StorageVolume,
) -> Result<VolumeHandle, VolumeError> {
    let xml = to_xml(document)?;
    Ok(virt::storage_vol::StorageVol::create_xml(pool, &xml, 0).map(VolumeHandle::new)?)
}

/// Looks up volume `name` of `pool`; `Ok(None)` when there is none.
pub fn lookup_volume(
    pool: &PoolHandle,
    name: &str,
) -> Result<Option<VolumeHandle>, virt::error::Error> {
    match pool.lookup_storage_vol_by_name(name) {
        Ok(volume) => Ok(Some(VolumeHandle::new(volume))),
        Err(error) if has_code(&error, ErrorNumber::NoStorageVolume) => Ok(None),
        Err(error) => Err(error),
    }
}

/// Deletes `volume`. A volume that is already gone counts as deleted.
pub fn delete_volume(volume: &VolumeHandle) -> Result<(), virt::error::Error> {
    match volume.delete(0) {
        Ok(()) => Ok(()),
        Err(error) if has_code(&error, ErrorNumber::NoStorageVolume) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Writes `data` into `volume` from offset 0 through an upload stream.
/// Under libvirt's test driver, which keeps no volume contents and has no
/// upload, nothing is sent.
pub fn upload_bytes(
    connection: &Connection,
    volume: &VolumeHandle,
    data: &[u8],
) -> Result<(), virt::error::Error> {
    let stream = StreamHandle::create(connection)?;
    match volume.upload(&stream, 0, data.len() as u64, 0) {
        Ok(()) => {}
        Err(error) if is_unsupported_test_driver(connection, &error) => return Ok(()),
        Err(error) => return Err(error),
    }
    if let Err(error) = stream.send_all(data) {
        if let Err(abort_error) = stream.abort() {
            tracing::warn!(error = %abort_error, "aborting the upload stream failed");
        }
        return Err(error);
    }
    stream.finish()
}
