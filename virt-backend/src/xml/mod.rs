//! Typed models of the libvirt XML documents berth writes and reads.
//!
//! Every document is a serde struct that quick-xml serialises, so text and
//! attribute values are escaped by construction: a `<`, `&`, quote or `]]>`
//! in a value reaches libvirt as that character, never as markup. The
//! models carry only the elements berth writes or needs to read; libvirt's
//! other elements are skipped when a document is parsed.
//!
//! XML 1.0 cannot carry most control characters at all, escaped or not,
//! so [`to_xml`] rejects a document that contains one instead of sending
//! libvirt something it cannot parse.

pub mod capabilities;
pub mod domain;
pub mod storage;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Error writing or reading a document.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// A value contains a character that XML 1.0 cannot represent.
    #[error("text {context:?} contains {character:?}, which XML 1.0 cannot represent")]
    Unrepresentable {
        /// The text around the character.
        context: String,
        /// The character.
        character: char,
    },
    /// quick-xml failed to serialise the document.
    #[error("serialise {document} XML")]
    Serialise {
        /// Root element of the document, such as `domain`.
        document: &'static str,
        /// quick-xml's error.
        #[source]
        source: quick_xml::SeError,
    },
    /// quick-xml failed to parse the document.
    #[error("parse {document} XML")]
    Parse {
        /// Root element of the document, such as `domain`.
        document: &'static str,
        /// quick-xml's error.
        #[source]
        source: quick_xml::DeError,
    },
}

/// A document with a known root element.
pub trait Document: Serialize + DeserializeOwned {
    /// Name of the root element, such as `domain`.
    const ROOT: &'static str;
}

/// Returns true for characters that XML 1.0 allows in a document.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Checks that `value` can be written into an XML 1.0 document. The
/// error quotes up to 40 characters on each side of the first bad one.
pub fn check_xml_text(value: &str) -> Result<(), XmlError> {
    let Some((index, character)) = value.char_indices().find(|(_, c)| !is_xml_char(*c)) else {
        return Ok(());
    };
    let before: String = value[..index]
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let after: String = value[index..].chars().take(41).collect();
    Err(XmlError::Unrepresentable {
        context: before + &after,
        character,
    })
}

/// Serialises `document` to XML, rejecting characters XML cannot carry.
pub fn to_xml<D: Document>(document: &D) -> Result<String, XmlError> {
    let text = quick_xml::se::to_string(document).map_err(|source| XmlError::Serialise {
        document: D::ROOT,
        source,
    })?;
    // Escaping leaves every character as it is, so a forbidden one in any
    // value shows up in the output.
    check_xml_text(&text)?;
    Ok(text)
}

/// Parses `text` (as libvirt's XMLDesc calls return it) into a document.
pub fn from_xml<D: Document>(text: &str) -> Result<D, XmlError> {
    quick_xml::de::from_str(text).map_err(|source| XmlError::Parse {
        document: D::ROOT,
        source,
    })
}

/// An element with no attributes and no content, such as `<acpi/>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::domain::*;
    use super::storage::*;
    use super::*;

    const HOSTILE: &str = "a<b>&c\"d'e]]>f&amp;";

    fn sample_domain(text: &str) -> Domain {
        Domain {
            virt_type: "qemu".into(),
            id: None,
            name: format!("vm{text}"),
            uuid: None,
            memory: Memory::from_mib(512),
            vcpu: Vcpu { count: 2 },
            os: Os {
                os_type: OsType {
                    arch: Some("x86_64".into()),
                    machine: None,
                    kind: "hvm".into(),
                },
                kernel: Some(format!("/boot/{text}")),
                initrd: None,
                cmdline: Some(format!("console=ttyS0 x={text}")),
                boot: Vec::new(),
            },
            features: Features {
                acpi: Some(Empty {}),
                apic: None,
            },
            on_poweroff: Some("destroy".into()),
            on_reboot: None,
            on_crash: None,
            devices: Devices {
                disks: vec![Disk {
                    disk_type: DiskType::Volume,
                    device: "disk".into(),
                    driver: Some(DiskDriver {
                        name: "qemu".into(),
                        format: "qcow2".into(),
                    }),
                    source: DiskSource {
                        pool: Some(format!("pool{text}")),
                        volume: Some(format!("vol{text}")),
                        file: None,
                    },
                    target: DiskTarget {
                        dev: "vda".into(),
                        bus: Some("virtio".into()),
                    },
                    readonly: Some(Empty {}),
                }],
                interfaces: vec![Interface {
                    interface_type: InterfaceType::Bridge,
                    mac: Some(MacElement {
                        address: "02:00:00:00:00:01".into(),
                    }),
                    source: InterfaceSource {
                        bridge: Some(format!("br{text}")),
                        ..Default::default()
                    },
                    target: None,
                    model: Some(Model {
                        model_type: "virtio".into(),
                    }),
                    mtu: Some(Mtu { size: 9000 }),
                }],
                serials: vec![Serial {
                    serial_type: "pty".into(),
                    source: None,
                    log: Some(CharLog {
                        file: format!("/logs/{text}"),
                        append: Some("off".into()),
                    }),
                    target: Some(CharTarget {
                        target_type: None,
                        port: Some(0),
                    }),
                }],
                consoles: Vec::new(),
            },
        }
    }

    #[test]
    fn domain_round_trips() {
        let domain = sample_domain("");
        let text = to_xml(&domain).unwrap();
        assert!(text.starts_with("<domain type=\"qemu\">"), "{text}");
        assert_eq!(from_xml::<Domain>(&text).unwrap(), domain);
    }

    #[test]
    fn hostile_values_escaped() {
        let domain = sample_domain(HOSTILE);
        let text = to_xml(&domain).unwrap();
        assert!(!text.contains("<b>"), "{text}");
        assert!(
            !text.contains("]]>"),
            "]]> may not appear raw in XML character data: {text}"
        );
        assert_eq!(from_xml::<Domain>(&text).unwrap(), domain);

        let volume = StorageVolume {
            volume_type: None,
            name: HOSTILE.into(),
            key: None,
            capacity: Capacity::bytes(1),
            allocation: None,
            target: None,
            backing_store: Some(BackingStore {
                path: HOSTILE.into(),
                format: None,
            }),
        };
        let text = to_xml(&volume).unwrap();
        assert_eq!(from_xml::<StorageVolume>(&text).unwrap(), volume);
        let pool = StoragePool {
            pool_type: "dir".into(),
            name: HOSTILE.into(),
            uuid: None,
            target: PoolTarget {
                path: HOSTILE.into(),
            },
        };
        assert_eq!(
            from_xml::<StoragePool>(&to_xml(&pool).unwrap()).unwrap(),
            pool
        );
    }

    #[test]
    fn control_characters_rejected() {
        for bad in ["\u{1}", "\u{0}", "\u{1b}[31m", "\u{fffe}"] {
            let error = to_xml(&sample_domain(bad)).unwrap_err();
            assert!(
                matches!(error, XmlError::Unrepresentable { .. }),
                "{bad:?}: {error}"
            );
        }
        to_xml(&sample_domain("tab\there, newline\nthere, ünïcödé")).unwrap();
    }

    #[test]
    fn interleaved_devices_collected() {
        let text = r#"<domain type='kvm' id='3'>
          <name>vm</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
          <memory unit='KiB'>524288</memory><currentMemory unit='KiB'>524288</currentMemory>
          <vcpu placement='static'>1</vcpu>
          <os><type arch='x86_64' machine='pc-i440fx-10.0'>hvm</type><boot dev='hd'/></os>
          <features><acpi/><apic/></features>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='volume' device='disk'><driver name='qemu' type='qcow2'/><source pool='p' volume='a'/><target dev='vda' bus='virtio'/><alias name='virtio-disk0'/></disk>
            <controller type='usb' index='0'/>
            <interface type='bridge'><mac address='02:00:00:00:00:01'/><source bridge='br0'/><target dev='vnet0'/><model type='virtio'/></interface>
            <disk type='volume' device='disk'><source pool='p' volume='b'/><target dev='vdb' bus='virtio'/><readonly/></disk>
            <serial type='pty'><source path='/dev/pts/3'/><log file='/x/console.log' append='off'/><target type='isa-serial' port='0'><model name='isa-serial'/></target></serial>
            <console type='pty' tty='/dev/pts/3'><target type='serial' port='0'/></console>
          </devices>
        </domain>"#;
        let domain: Domain = from_xml(text).unwrap();
        assert_eq!(domain.id, Some(3));
        assert_eq!(
            domain.volumes(),
            vec![
                ("p".to_string(), "a".to_string()),
                ("p".to_string(), "b".to_string())
            ]
        );
        assert_eq!(
            domain.devices.interfaces[0].target.as_ref().unwrap().dev,
            "vnet0"
        );
        assert!(domain.devices.disks[1].readonly.is_some());
        assert_eq!(
            domain.devices.serials[0].source.as_ref().unwrap().path,
            "/dev/pts/3"
        );
        let normalised = domain.without_libvirt_defaults();
        assert_eq!(normalised.uuid, None);
        assert!(normalised.os.boot.is_empty());
        assert_eq!(normalised.devices.serials[0].source, None);
    }

    #[test]
    fn memory_units_converted() {
        let cases = [
            ("KiB", 1024),
            ("MiB", 1 << 20),
            ("GiB", 1 << 30),
            ("KB", 1000),
            ("bytes", 1),
        ];
        for (unit, factor) in cases {
            assert_eq!(
                Memory {
                    unit: unit.into(),
                    value: 3
                }
                .bytes(),
                Some(3 * factor),
                "{unit}"
            );
        }
        assert_eq!(
            Memory {
                unit: "parsecs".into(),
                value: 1
            }
            .bytes(),
            None
        );
    }
}
