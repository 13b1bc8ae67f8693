//! Undo of a failed create, with a failure injected after each step,
//! against libvirt's test driver.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_core::machine::{AgentTools, ControllerInfo, MachineJob, ProxySettings};
use berth_core::{Constraints, Error, MachineConfig, Manager, ManagerConfig, NetworkConfig, Step};

use super::VirtManager;
use crate::handle::{Connection, DomainHandle, PoolHandle};
use crate::initialiser::VirtInitialiser;

fn machine() -> MachineConfig {
    MachineConfig {
        machine_id: "2".into(),
        machine_nonce: "nonce".into(),
        series: "bookworm".into(),
        data_dir: PathBuf::from("/var/lib/juju"),
        log_dir: PathBuf::from("/var/log/juju"),
        jobs: vec![MachineJob::JobHostUnits],
        tools: AgentTools {
            version: "3.5.1-ubuntu-amd64".into(),
            url: "https://controller.example:17070/tools".into(),
            sha256: "b".repeat(64),
            size: 1,
        },
        api_info: ControllerInfo {
            addrs: vec!["10.0.0.1:17070".into()],
            ca_cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            tag: "machine-2".into(),
            password: "pw".into(),
            model_tag: None,
        },
        state_info: None,
        authorized_keys: Vec::new(),
        proxy: ProxySettings::default(),
        apt_proxy: ProxySettings::default(),
        disable_package_commands: true,
        agent_environment: BTreeMap::new(),
        constraints: Constraints::default(),
        network_interfaces: Vec::new(),
        cloud_init_output_log: PathBuf::from("/var/log/cloud-init-output.log"),
    }
}

fn own_volumes(connection: &Connection) -> Vec<String> {
    let pool = PoolHandle::new(
        connection
            .lookup_storage_pool_by_name("berth-test")
            .unwrap(),
    );
    let mut names: Vec<String> = pool
        .list_volumes()
        .unwrap()
        .into_iter()
        .filter(|name| name.starts_with("juju-machine-2"))
        .collect();
    names.sort();
    names
}

#[test]
fn failure_after_each_step_undone() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.xml");
    std::fs::write(&node, "<node/>").unwrap();
    std::fs::write(dir.path().join("base.img"), vec![1u8; 4096]).unwrap();
    let uri = format!("test://{}", node.display());
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let config = ManagerConfig::new()
        .with("name", "juju")
        .with("uri", uri.as_str())
        .with("pool", "berth-test")
        .with("pool-dir", path("pool"))
        .with("containers-dir", path("containers"))
        .with("removed-dir", path("removed"))
        .with("lock-dir", path("locks"))
        .with("image", path("base.img"));
    let connection = Connection::open(&uri).unwrap();
    VirtInitialiser::new(config.clone())
        .unwrap()
        .initialise_with(&connection)
        .unwrap();
    let manager = VirtManager::with_connection(config, connection).unwrap();
    let network = NetworkConfig::bridge("br-test0").unwrap();
    let container_dir = dir.path().join("containers").join("juju-machine-2");

    let steps = [
        Step::Directory,
        Step::UserData,
        Step::Image,
        Step::Clone,
        Step::Seed,
        Step::Define,
        Step::Configure,
        Step::Start,
        Step::Wait,
    ];
    for step in steps {
        manager.set_fault_hook(Some(std::sync::Arc::new(move |_name: &str, point| {
            if point == crate::fault::FaultPoint::After(step) {
                Err("test failure".into())
            } else {
                Ok(())
            }
        })));
        let error = manager
            .create_container(&machine(), "bookworm", &network)
            .unwrap_err();
        assert!(
            matches!(&error, Error::Step { step: failed, .. } if *failed == step),
            "{step}: {error}"
        );
        assert!(
            manager
                .connection()
                .lookup_domain_by_name("juju-machine-2")
                .is_err(),
            "{step}: domain left"
        );
        assert_eq!(
            own_volumes(manager.connection()),
            Vec::<String>::new(),
            "{step}: volumes left"
        );
        assert!(!container_dir.exists(), "{step}: directory left");
    }

    manager.set_fault_hook(None);
    let (instance, _) = manager
        .create_container(&machine(), "bookworm", &network)
        .unwrap();
    let domain = DomainHandle::new(
        manager
            .connection()
            .lookup_domain_by_name(instance.id.as_str())
            .unwrap(),
    );
    assert!(domain.is_active().unwrap());
    assert!(domain.autostart().unwrap());
    assert_eq!(
        own_volumes(manager.connection()),
        ["juju-machine-2-root.qcow2", "juju-machine-2-seed.img"]
    );
}
