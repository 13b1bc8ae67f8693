//! Root file system tarballs: plain, xz, gzip or zstd.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use berth_core::progress::{Progress, ProgressEvent};

/// Compression of a tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// xz (LZMA2).
    Xz,
    /// gzip.
    Gzip,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// Returns the compression a file name promises, or `None` when the name
    /// is not a tarball's.
    pub fn from_name(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        [
            (".tar", Self::None),
            (".tar.xz", Self::Xz),
            (".txz", Self::Xz),
            (".tar.gz", Self::Gzip),
            (".tgz", Self::Gzip),
            (".tar.zst", Self::Zstd),
            (".tzst", Self::Zstd),
        ]
        .into_iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|(_, compression)| compression)
    }

    /// Returns the compression that the first bytes of a file show.
    pub fn from_magic(head: &[u8]) -> Self {
        if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Self::Xz
        } else if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// Counts the bytes read through it and reports them about once a MiB.
struct CountingReader<'a, R> {
    inner: R,
    what: &'a str,
    done: u64,
    reported: u64,
    total: Option<u64>,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let count = self.inner.read(buffer)?;
        self.done += count as u64;
        // The final report, with done equal to the total, is sent once the
        // whole archive is unpacked, so it is not sent from here.
        if self.done - self.reported >= 1 << 20 && Some(self.done) != self.total {
            self.reported = self.done;
            self.progress.report(&ProgressEvent::Bytes {
                what: self.what,
                done: self.done,
                total: self.total,
            });
        }
        Ok(count)
    }
}

/// Unpacks tarball `archive` into the directory `rootfs`, keeping
/// permissions, owners and extended attributes, and reporting the bytes of
/// the archive read to `progress`, ending with one report whose `done` is
/// the archive's size once everything is unpacked. Compression is detected from the first
/// bytes of the file. Entries that would land outside `rootfs` are skipped
/// by the tar reader.
pub fn unpack(archive: &Path, rootfs: &Path, progress: &dyn Progress) -> io::Result<()> {
    let mut file = File::open(archive)?;
    let total = file.metadata()?.len();
    let mut head = [0u8; 6];
    let read = file.read(&mut head)?;
    let compression = Compression::from_magic(&head[..read]);
    let file = File::open(archive)?;
    let what = archive.display().to_string();
    let counted = BufReader::new(CountingReader {
        inner: file,
        what: &what,
        done: 0,
        reported: 0,
        total: Some(total),
        progress,
    });
    let reader: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(counted),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(counted)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(counted)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(counted)?),
    };
    let mut tar = tar::Archive::new(reader);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_unpack_xattrs(true);
    tar.set_preserve_mtime(true);
    tar.set_overwrite(true);
    tar.unpack(rootfs)?;
    progress.report(&ProgressEvent::Bytes {
        what: &what,
        done: total,
        total: Some(total),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::NoProgress;

    #[test]
    fn names_map_to_compression() {
        assert_eq!(
            Compression::from_name(Path::new("/a/rootfs.tar.xz")),
            Some(Compression::Xz)
        );
        assert_eq!(
            Compression::from_name(Path::new("r.tgz")),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_name(Path::new("r.tar.zst")),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_name(Path::new("r.tar")),
            Some(Compression::None)
        );
        assert_eq!(Compression::from_name(Path::new("r.zip")), None);
    }

    fn sample_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o640);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, "etc/motd", &b"hello"[..])
            .unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn each_compression_unpacks() {
        let plain = sample_tar();
        let mut xz = Vec::new();
        xz2::read::XzEncoder::new(&plain[..], 6)
            .read_to_end(&mut xz)
            .unwrap();
        let mut gzip = Vec::new();
        flate2::read::GzEncoder::new(&plain[..], flate2::Compression::fast())
            .read_to_end(&mut gzip)
            .unwrap();
        let zstd = zstd::encode_all(&plain[..], 3).unwrap();
        for (name, bytes) in [
            ("r.tar", plain.clone()),
            ("r.tar.xz", xz),
            ("r.tar.gz", gzip),
            ("r.tar.zst", zstd),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let archive = dir.path().join(name);
            std::fs::write(&archive, &bytes).unwrap();
            let rootfs = dir.path().join("rootfs");
            std::fs::create_dir(&rootfs).unwrap();
            unpack(&archive, &rootfs, &NoProgress).unwrap();
            assert_eq!(
                std::fs::read(rootfs.join("etc/motd")).unwrap(),
                b"hello",
                "{name}"
            );
        }
    }
}
