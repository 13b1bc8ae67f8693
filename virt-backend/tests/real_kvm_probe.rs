//! Real tier: the KVM probe on this host's `/dev/kvm`, and the `auto`
//! hypervisor choice through the system libvirtd at `qemu:///system`.
//!
//! Needs root and a running libvirtd (`mkdir -p /var/log/libvirt
//! /var/run/libvirt; virtlogd -d; libvirtd -d`); the tests fail, never
//! skip, without them.
//!
//! The expected outcome follows from the KVM module the host kernel
//! loaded. `kvm_intel` and `kvm_amd` use hardware virtualisation, so the
//! probe must pass. `kvm_pvm` on a CPU without the `vmx` or `svm` flag
//! passes guest kernel code through KVM's instruction emulator, which has
//! no `cmpxchg16b`. There the probe must stop at its first instruction,
//! `lock cmpxchg16b`, with the emulation error, as a Debian cloud kernel
//! does in its slab allocator.

use std::path::Path;
use std::sync::Mutex;

use berth_virt::config::VirtTypeChoice;
use berth_virt::handle::Connection;
use berth_virt::platform::choose_platform;
use berth_virt::platform::kvm_probe::{KvmProbeError, run_probe};

/// The fd count check must not see descriptors other tests open.
static SERIAL: Mutex<()> = Mutex::new(());

/// Address and bytes of the probe's first instruction,
/// `lock cmpxchg16b [rdi]`.
const FIRST_INSTRUCTION_ADDRESS: u64 = 0x4000;
const LOCK_CMPXCHG16B: [u8; 5] = [0xf0, 0x48, 0x0f, 0xc7, 0x0f];

#[derive(Debug, PartialEq)]
enum Expected {
    Pass,
    EmulationFailure,
}

fn require_root() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "debug".into()),
        )
        .with_test_writer()
        .try_init();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the KVM probe tests need root to open /dev/kvm and qemu:///system"
    );
}

fn cpu_flags() -> Vec<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let line = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))
        .expect("/proc/cpuinfo has no flags line");
    line.split_once(':')
        .unwrap()
        .1
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Derives the probe's expected outcome from the loaded KVM module and the
/// CPU flags.
fn expected_outcome() -> Expected {
    let flags = cpu_flags();
    let hardware = flags.iter().any(|flag| flag == "vmx" || flag == "svm");
    let module = |name: &str| Path::new("/sys/module").join(name).exists();
    if hardware && (module("kvm_intel") || module("kvm_amd")) {
        return Expected::Pass;
    }
    if !hardware && module("kvm_pvm") {
        return Expected::EmulationFailure;
    }
    panic!(
        "no known KVM set-up: vmx or svm flag {hardware}, kvm_intel {}, kvm_amd {}, kvm_pvm {}",
        module("kvm_intel"),
        module("kvm_amd"),
        module("kvm_pvm")
    );
}

fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn probe_outcome_matches_kvm_module() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    require_root();
    let expected = expected_outcome();

    let result = run_probe();
    eprintln!("expected {expected:?}, probe returned {result:?}");
    match expected {
        Expected::Pass => assert_eq!(result, Ok(())),
        Expected::EmulationFailure => {
            let Err(KvmProbeError::Emulation { rip, instruction }) = result else {
                panic!("expected an emulation failure, got {result:?}");
            };
            assert_eq!(rip, FIRST_INSTRUCTION_ADDRESS);
            assert!(
                instruction.starts_with(&LOCK_CMPXCHG16B),
                "failed instruction {instruction:02x?} is not lock cmpxchg16b"
            );
        }
    }
}

#[test]
fn probe_closes_its_descriptors() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    require_root();
    let first = run_probe();
    let before = open_fd_count();
    for _ in 0..20 {
        assert_eq!(
            run_probe(),
            first,
            "the probe's outcome changed between runs"
        );
    }
    assert_eq!(open_fd_count(), before);
}

#[test]
fn auto_choice_follows_probe() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    require_root();
    let expected = expected_outcome();
    let connection = Connection::open("qemu:///system").unwrap_or_else(|error| {
        panic!(
            "libvirtd does not answer at qemu:///system ({error}); start it with: \
             mkdir -p /var/log/libvirt /var/run/libvirt; virtlogd -d; libvirtd -d"
        )
    });

    let platform = choose_platform(&connection, VirtTypeChoice::Auto).unwrap();
    eprintln!(
        "auto chose {} because {}",
        platform.virt_type, platform.reason
    );
    match expected {
        Expected::Pass => {
            assert_eq!(platform.virt_type, "kvm");
            assert!(
                platform.reason.contains("a test guest ran on KVM"),
                "{}",
                platform.reason
            );
        }
        Expected::EmulationFailure => {
            assert_eq!(platform.virt_type, "qemu");
            assert!(
                platform.reason.contains("the KVM probe failed"),
                "{}",
                platform.reason
            );
            assert!(
                platform.reason.contains("KVM_INTERNAL_ERROR_EMULATION"),
                "{}",
                platform.reason
            );
        }
    }
}

#[test]
fn explicit_choice_skips_probe() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    require_root();
    let connection = Connection::open("qemu:///system")
        .unwrap_or_else(|error| panic!("libvirtd does not answer at qemu:///system ({error})"));

    for (choice, virt_type) in [(VirtTypeChoice::Kvm, "kvm"), (VirtTypeChoice::Qemu, "qemu")] {
        let platform = choose_platform(&connection, choice).unwrap();
        assert_eq!(platform.virt_type, virt_type);
        assert_eq!(platform.reason, "set by the virt-type configuration key");
    }
}
