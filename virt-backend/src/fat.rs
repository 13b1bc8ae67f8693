//! A writer of small FAT12 file system images.
//!
//! It builds a complete image in memory from a list of files in the root
//! directory, with long (VFAT) file names and a volume label, which is all
//! a NoCloud seed disk needs. The layout is fixed and the timestamps are
//! constant, so the same input always gives the same bytes.
//!
//! Limits: files go into the root directory only, at most
//! [`MAX_ROOT_ENTRIES`] directory entries in all, and the whole image has
//! at most 4084 clusters of up to 32 KiB (FAT12), about 127 MiB of data.

use std::collections::BTreeSet;

const SECTOR: usize = 512;
/// Directory entries in the root directory (32 bytes each).
pub const MAX_ROOT_ENTRIES: usize = 64;
/// Maximum cluster count of FAT12. A volume with more clusters is FAT16.
const MAX_FAT12_CLUSTERS: usize = 4084;
const MIN_CLUSTERS: usize = 64;
const RESERVED_SECTORS: usize = 1;
const FAT_COUNT: usize = 2;
const MEDIA_DESCRIPTOR: u8 = 0xF8;
/// 2000-01-01 in FAT date format: years since 1980, month, day.
const FIXED_DATE: u16 = (20 << 9) | (1 << 5) | 1;
const ATTR_VOLUME_LABEL: u8 = 0x08;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LONG_NAME: u8 = 0x0F;
const LFN_CHARS_PER_ENTRY: usize = 13;
const MAX_LONG_NAME: usize = 255;

/// Error building a FAT image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FatError {
    /// A file name is empty, too long, or contains a character FAT names
    /// cannot contain.
    #[error("invalid file name {name:?}: {rule}")]
    InvalidName {
        /// The name.
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// Two files have the same name (FAT names ignore case).
    #[error("duplicate file name {0:?}")]
    DuplicateName(String),
    /// The volume label is too long or holds characters a label cannot.
    #[error("invalid volume label {0:?}: must be 1 to 11 ASCII letters, digits, '-' or '_'")]
    InvalidLabel(String),
    /// The files need more room than a FAT12 image or its root directory
    /// offers.
    #[error("files too large for a FAT12 image: {0}")]
    TooLarge(String),
}

/// One file of the root directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFile {
    /// Long file name, such as `user-data`.
    pub name: String,
    /// Contents.
    pub data: Vec<u8>,
}

/// Builds a FAT12 image labelled `label` holding `files` in its root
/// directory, and returns its bytes (a whole number of 512-byte sectors).
pub fn build_image(label: &str, files: &[FatFile]) -> Result<Vec<u8>, FatError> {
    let label_bytes = encode_label(label)?;
    let mut seen = BTreeSet::new();
    for file in files {
        validate_long_name(&file.name)?;
        if !seen.insert(file.name.to_ascii_uppercase()) {
            return Err(FatError::DuplicateName(file.name.clone()));
        }
    }

    let entries: usize = 1 + files
        .iter()
        .map(|f| 1 + lfn_entry_count(&f.name))
        .sum::<usize>();
    if entries > MAX_ROOT_ENTRIES {
        return Err(FatError::TooLarge(format!(
            "{entries} root directory entries needed, at most {MAX_ROOT_ENTRIES}"
        )));
    }
    let geometry = Geometry::for_files(files)?;
    let mut image = vec![0u8; geometry.total_sectors * SECTOR];
    write_boot_sector(&mut image, &geometry, &label_bytes);

    let mut fat = Fat12::new(geometry.clusters);
    let mut directory = Vec::with_capacity(MAX_ROOT_ENTRIES * 32);
    directory.extend_from_slice(&label_entry(&label_bytes));

    let mut short_names = BTreeSet::new();
    let mut next_cluster = 2usize;
    for file in files {
        let short = short_name(&file.name, &mut short_names);
        let clusters = file.data.len().div_ceil(geometry.cluster_bytes);
        let first = if clusters == 0 { 0 } else { next_cluster };
        for index in 0..clusters {
            let cluster = next_cluster + index;
            let next = if index + 1 == clusters {
                0xFFF
            } else {
                cluster + 1
            };
            fat.set(cluster, next as u16);
            let offset = geometry.cluster_offset(cluster);
            let start = index * geometry.cluster_bytes;
            let end = (start + geometry.cluster_bytes).min(file.data.len());
            image[offset..offset + end - start].copy_from_slice(&file.data[start..end]);
        }
        next_cluster += clusters;
        directory.extend_from_slice(&lfn_entries(&file.name, &short));
        directory.extend_from_slice(&short_entry(&short, first, file.data.len()));
    }

    for copy in 0..FAT_COUNT {
        let offset = (RESERVED_SECTORS + copy * geometry.fat_sectors) * SECTOR;
        image[offset..offset + fat.bytes.len()].copy_from_slice(&fat.bytes);
    }
    let root = geometry.root_offset();
    image[root..root + directory.len()].copy_from_slice(&directory);
    Ok(image)
}

/// Sizes of the image's regions.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    sectors_per_cluster: usize,
    cluster_bytes: usize,
    clusters: usize,
    fat_sectors: usize,
    root_sectors: usize,
    total_sectors: usize,
}

impl Geometry {
    /// Chooses the smallest cluster size that keeps the cluster count
    /// within FAT12, leaving some clusters free.
    fn for_files(files: &[FatFile]) -> Result<Self, FatError> {
        let mut sectors_per_cluster = 1;
        loop {
            let cluster_bytes = sectors_per_cluster * SECTOR;
            let needed: usize = files
                .iter()
                .map(|f| f.data.len().div_ceil(cluster_bytes))
                .sum();
            let clusters = (needed + needed / 8 + 8).max(MIN_CLUSTERS);
            if clusters <= MAX_FAT12_CLUSTERS {
                let fat_bytes = (clusters + 2) * 3 / 2 + 1;
                let fat_sectors = fat_bytes.div_ceil(SECTOR);
                let root_sectors = MAX_ROOT_ENTRIES * 32 / SECTOR;
                let total_sectors = RESERVED_SECTORS
                    + FAT_COUNT * fat_sectors
                    + root_sectors
                    + clusters * sectors_per_cluster;
                return Ok(Self {
                    sectors_per_cluster,
                    cluster_bytes,
                    clusters,
                    fat_sectors,
                    root_sectors,
                    total_sectors,
                });
            }
            if sectors_per_cluster == 64 {
                let total: usize = files.iter().map(|f| f.data.len()).sum();
                return Err(FatError::TooLarge(format!("{total} bytes of file data")));
            }
            sectors_per_cluster *= 2;
        }
    }

    fn root_offset(&self) -> usize {
        (RESERVED_SECTORS + FAT_COUNT * self.fat_sectors) * SECTOR
    }

    fn cluster_offset(&self, cluster: usize) -> usize {
        self.root_offset() + self.root_sectors * SECTOR + (cluster - 2) * self.cluster_bytes
    }
}

fn write_boot_sector(image: &mut [u8], geometry: &Geometry, label: &[u8; 11]) {
    let boot = &mut image[..SECTOR];
    boot[0..3].copy_from_slice(&[0xEB, 0x3C, 0x90]);
    boot[3..11].copy_from_slice(b"BERTH   ");
    boot[11..13].copy_from_slice(&(SECTOR as u16).to_le_bytes());
    boot[13] = geometry.sectors_per_cluster as u8;
    boot[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    boot[16] = FAT_COUNT as u8;
    boot[17..19].copy_from_slice(&(MAX_ROOT_ENTRIES as u16).to_le_bytes());
    match u16::try_from(geometry.total_sectors) {
        Ok(small) => boot[19..21].copy_from_slice(&small.to_le_bytes()),
        Err(_) => boot[32..36].copy_from_slice(&(geometry.total_sectors as u32).to_le_bytes()),
    }
    boot[21] = MEDIA_DESCRIPTOR;
    boot[22..24].copy_from_slice(&(geometry.fat_sectors as u16).to_le_bytes());
    boot[24..26].copy_from_slice(&32u16.to_le_bytes()); // sectors per track
    boot[26..28].copy_from_slice(&64u16.to_le_bytes()); // heads
    boot[36] = 0x80; // drive number
    boot[38] = 0x29; // extended boot signature: serial, label and type follow
    // The serial number is derived from the label so that images are
    // reproducible.
    let serial = label
        .iter()
        .fold(0x6265_7274u32, |acc, b| acc.rotate_left(5) ^ u32::from(*b));
    boot[39..43].copy_from_slice(&serial.to_le_bytes());
    boot[43..54].copy_from_slice(label);
    boot[54..62].copy_from_slice(b"FAT12   ");
    boot[510] = 0x55;
    boot[511] = 0xAA;
}

/// The file allocation table, 12 bits per cluster.
struct Fat12 {
    bytes: Vec<u8>,
}

impl Fat12 {
    fn new(clusters: usize) -> Self {
        let mut fat = Self {
            bytes: vec![0; (clusters + 2) * 3 / 2 + 1],
        };
        fat.set(0, 0xF00 | u16::from(MEDIA_DESCRIPTOR));
        fat.set(1, 0xFFF);
        fat
    }

    fn set(&mut self, cluster: usize, value: u16) {
        let offset = cluster * 3 / 2;
        if cluster.is_multiple_of(2) {
            self.bytes[offset] = (value & 0xFF) as u8;
            self.bytes[offset + 1] = (self.bytes[offset + 1] & 0xF0) | ((value >> 8) & 0x0F) as u8;
        } else {
            self.bytes[offset] = (self.bytes[offset] & 0x0F) | ((value & 0x0F) << 4) as u8;
            self.bytes[offset + 1] = ((value >> 4) & 0xFF) as u8;
        }
    }
}

fn encode_label(label: &str) -> Result<[u8; 11], FatError> {
    let valid = !label.is_empty()
        && label.len() <= 11
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(FatError::InvalidLabel(label.to_owned()));
    }
    let mut bytes = [b' '; 11];
    bytes[..label.len()].copy_from_slice(label.as_bytes());
    Ok(bytes)
}

fn validate_long_name(name: &str) -> Result<(), FatError> {
    let reject = |rule| {
        Err(FatError::InvalidName {
            name: name.to_owned(),
            rule,
        })
    };
    if name.is_empty() || name == "." || name == ".." {
        return reject("must not be empty, '.' or '..'");
    }
    if name.encode_utf16().count() > MAX_LONG_NAME {
        return reject("must be at most 255 UTF-16 code units");
    }
    if name
        .chars()
        .any(|c| c < ' ' || "\"*/:<>?\\|\u{7f}".contains(c))
    {
        return reject("must not contain control characters or any of \" * / : < > ? \\ |");
    }
    Ok(())
}

fn lfn_entry_count(name: &str) -> usize {
    name.encode_utf16().count().div_ceil(LFN_CHARS_PER_ENTRY)
}

/// Returns a unique 8.3 alias such as `USER-D~1` for a long name.
fn short_name(long: &str, taken: &mut BTreeSet<[u8; 11]>) -> [u8; 11] {
    let clean = |part: &str, max: usize| -> Vec<u8> {
        part.chars()
            .filter(|c| *c != ' ' && *c != '.')
            .map(|c| {
                let c = c.to_ascii_uppercase();
                if c.is_ascii_alphanumeric() || "!#$%&'()-@^_`{}~".contains(c) {
                    c as u8
                } else {
                    b'_'
                }
            })
            .take(max)
            .collect()
    };
    let (base, extension) = match long.rfind('.') {
        Some(dot) if dot > 0 => (&long[..dot], &long[dot + 1..]),
        _ => (long, ""),
    };
    let base = clean(base, 8);
    let extension = clean(extension, 3);
    for number in 1u32.. {
        let suffix = format!("~{number}");
        let keep = (8 - suffix.len()).min(base.len());
        let mut name = [b' '; 11];
        name[..keep].copy_from_slice(&base[..keep]);
        name[keep..keep + suffix.len()].copy_from_slice(suffix.as_bytes());
        name[8..8 + extension.len()].copy_from_slice(&extension);
        if taken.insert(name) {
            return name;
        }
    }
    unreachable!("the alias counter is unbounded")
}

fn short_name_checksum(name: &[u8; 11]) -> u8 {
    name.iter()
        .fold(0u8, |sum, b| (sum >> 1 | (sum & 1) << 7).wrapping_add(*b))
}

/// Returns the long-name entries of `long`, in the order they are stored
/// (last part first).
fn lfn_entries(long: &str, short: &[u8; 11]) -> Vec<u8> {
    let checksum = short_name_checksum(short);
    let mut units: Vec<u16> = long.encode_utf16().collect();
    let count = units.len().div_ceil(LFN_CHARS_PER_ENTRY);
    if !units.len().is_multiple_of(LFN_CHARS_PER_ENTRY) {
        units.push(0);
    }
    units.resize(count * LFN_CHARS_PER_ENTRY, 0xFFFF);
    let mut bytes = Vec::with_capacity(count * 32);
    for sequence in (1..=count).rev() {
        let mut entry = [0u8; 32];
        entry[0] = sequence as u8 | if sequence == count { 0x40 } else { 0 };
        entry[11] = ATTR_LONG_NAME;
        entry[13] = checksum;
        let chunk = &units[(sequence - 1) * LFN_CHARS_PER_ENTRY..sequence * LFN_CHARS_PER_ENTRY];
        let offsets = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
        for (unit, offset) in chunk.iter().zip(offsets) {
            entry[offset..offset + 2].copy_from_slice(&unit.to_le_bytes());
        }
        bytes.extend_from_slice(&entry);
    }
    bytes
}

fn short_entry(short: &[u8; 11], first_cluster: usize, size: usize) -> [u8; 32] {
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(short);
    entry[11] = ATTR_ARCHIVE;
    for offset in [16, 18, 24] {
        entry[offset..offset + 2].copy_from_slice(&FIXED_DATE.to_le_bytes());
    }
    entry[26..28].copy_from_slice(&(first_cluster as u16).to_le_bytes());
    entry[28..32].copy_from_slice(&(size as u32).to_le_bytes());
    entry
}

fn label_entry(label: &[u8; 11]) -> [u8; 32] {
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(label);
    entry[11] = ATTR_VOLUME_LABEL;
    entry[24..26].copy_from_slice(&FIXED_DATE.to_le_bytes());
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back the root directory of an image this module wrote:
    /// returns (long name, contents) per file, following the FAT chains.
    fn read_image(image: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
        let u16_at = |o: usize| u16::from_le_bytes([image[o], image[o + 1]]) as usize;
        let spc = image[13] as usize;
        let reserved = u16_at(14);
        let fats = image[16] as usize;
        let root_entries = u16_at(17);
        let fat_sectors = u16_at(22);
        let fat = &image[reserved * SECTOR..];
        let root = (reserved + fats * fat_sectors) * SECTOR;
        let data = root + root_entries * 32;
        let next = |cluster: usize| {
            let o = cluster * 3 / 2;
            let v = u16::from_le_bytes([fat[o], fat[o + 1]]);
            (if cluster.is_multiple_of(2) {
                v & 0xFFF
            } else {
                v >> 4
            }) as usize
        };
        let mut label = String::new();
        let mut files = Vec::new();
        let mut long_parts: Vec<(u8, Vec<u16>)> = Vec::new();
        for index in 0..root_entries {
            let entry = &image[root + index * 32..root + index * 32 + 32];
            if entry[0] == 0 {
                break;
            }
            match entry[11] {
                ATTR_VOLUME_LABEL => {
                    label = String::from_utf8_lossy(&entry[..11]).trim_end().to_owned()
                }
                ATTR_LONG_NAME => {
                    let units = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
                        .iter()
                        .map(|o| u16::from_le_bytes([entry[*o], entry[*o + 1]]))
                        .take_while(|u| *u != 0 && *u != 0xFFFF)
                        .collect();
                    assert_eq!(
                        entry[13],
                        short_name_checksum(
                            image[root + (index + 1 + (entry[0] as usize & 0x1F) - 1) * 32..][..11]
                                .try_into()
                                .unwrap()
                        )
                    );
                    long_parts.push((entry[0] & 0x1F, units));
                }
                _ => {
                    long_parts.sort_by_key(|(sequence, _)| *sequence);
                    let name = String::from_utf16(
                        &long_parts
                            .iter()
                            .flat_map(|(_, u)| u.clone())
                            .collect::<Vec<_>>(),
                    )
                    .unwrap();
                    long_parts.clear();
                    let size = u32::from_le_bytes(entry[28..32].try_into().unwrap()) as usize;
                    let mut cluster = u16::from_le_bytes([entry[26], entry[27]]) as usize;
                    let mut contents = Vec::new();
                    while (2..0xFF8).contains(&cluster) {
                        let offset = data + (cluster - 2) * spc * SECTOR;
                        contents.extend_from_slice(&image[offset..offset + spc * SECTOR]);
                        cluster = next(cluster);
                    }
                    contents.truncate(size);
                    files.push((name, contents));
                }
            }
        }
        (label, files)
    }

    fn file(name: &str, data: &[u8]) -> FatFile {
        FatFile {
            name: name.into(),
            data: data.to_vec(),
        }
    }

    #[test]
    fn image_reads_back() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let files = [
            file("user-data", b"#cloud-config\n"),
            file("meta-data", b"instance-id: x\n"),
            file("network-config", &big),
            file("empty", b""),
            file("exactly-13-ch", b"13"),
        ];
        let image = build_image("cidata", &files).unwrap();
        assert_eq!(image.len() % SECTOR, 0);
        assert_eq!(&image[510..512], &[0x55, 0xAA]);
        assert_eq!(&image[43..54], b"cidata     ");
        let (label, read) = read_image(&image);
        assert_eq!(label, "cidata");
        let expected: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|f| (f.name.clone(), f.data.clone()))
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn image_is_reproducible() {
        let files = [file("meta-data", b"instance-id: a\n")];
        assert_eq!(
            build_image("cidata", &files).unwrap(),
            build_image("cidata", &files).unwrap()
        );
    }

    #[test]
    fn cluster_count_stays_fat12() {
        let files = [file("big", &vec![7u8; 3 << 20])];
        let image = build_image("cidata", &files).unwrap();
        let spc = image[13] as usize;
        let clusters = (image.len() / SECTOR) / spc;
        assert!(spc > 1, "3 MiB needs clusters larger than one sector");
        assert!(clusters < 4085, "{clusters} clusters");
        let (_, read) = read_image(&image);
        assert_eq!(read[0].1.len(), 3 << 20);
    }

    #[test]
    fn short_aliases_are_unique() {
        let mut taken = BTreeSet::new();
        assert_eq!(&short_name("user-data", &mut taken), b"USER-D~1   ");
        assert_eq!(&short_name("user-data2", &mut taken), b"USER-D~2   ");
        assert_eq!(&short_name("network.config", &mut taken), b"NETWOR~1CON");
    }

    #[test]
    fn bad_input_rejected() {
        assert!(matches!(
            build_image("", &[]),
            Err(FatError::InvalidLabel(_))
        ));
        assert!(matches!(
            build_image("much-too-long", &[]),
            Err(FatError::InvalidLabel(_))
        ));
        assert!(matches!(
            build_image("cidata", &[file("a/b", b"")]),
            Err(FatError::InvalidName { .. })
        ));
        assert!(matches!(
            build_image("cidata", &[file("a\nb", b"")]),
            Err(FatError::InvalidName { .. })
        ));
        assert_eq!(
            build_image("cidata", &[file("Meta", b""), file("meta", b"")]),
            Err(FatError::DuplicateName("meta".into()))
        );
        let many: Vec<FatFile> = (0..40).map(|i| file(&format!("file-{i}"), b"")).collect();
        assert!(matches!(
            build_image("cidata", &many),
            Err(FatError::TooLarge(_))
        ));
    }

    #[test]
    fn blkid_reads_label_and_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed.img");
        std::fs::write(
            &path,
            build_image("cidata", &[file("meta-data", b"instance-id: a\n")]).unwrap(),
        )
        .unwrap();
        let output = match std::process::Command::new("blkid")
            .args(["-o", "export", "-p"])
            .arg(&path)
            .output()
        {
            Ok(output) => output,
            Err(error) => panic!("blkid (util-linux) is needed for this test: {error}"),
        };
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.lines().any(|l| l == "LABEL=cidata"), "{text}");
        assert!(text.lines().any(|l| l == "TYPE=vfat"), "{text}");
        assert!(text.lines().any(|l| l == "VERSION=FAT12"), "{text}");
    }
}
