//! Shared fixtures of the berth-virt integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_core::machine::{AgentTools, ControllerInfo, MachineJob, ProxySettings};
use berth_core::{Constraints, MachineConfig, ManagerConfig};
use berth_virt::VirtManager;
use berth_virt::handle::{Connection, PoolHandle};
use berth_virt::xml::domain::Domain;
use berth_virt::xml::from_xml;

pub mod private_daemon;
pub mod real_host;

/// Name of the storage pool the tests use.
pub const TEST_POOL: &str = "berth-test";

/// A PEM certificate shape; its base64 body is not checked.
pub const CA_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGUgZm9yIHRlc3Rz\n-----END CERTIFICATE-----\n";

/// Sends logs to the test output once per process.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Returns a valid configuration of machine `id`.
pub fn machine(id: &str) -> MachineConfig {
    let tag = berth_core::machine_tag(id).unwrap();
    MachineConfig {
        machine_id: id.into(),
        machine_nonce: "machine-0:f1e2d3c4-aaaa-bbbb-cccc-0123456789ab".into(),
        series: "bookworm".into(),
        data_dir: PathBuf::from("/var/lib/juju"),
        log_dir: PathBuf::from("/var/log/juju"),
        jobs: vec![MachineJob::JobHostUnits],
        tools: AgentTools {
            version: "3.5.1-ubuntu-amd64".into(),
            url: "https://controller.example:17070/tools/3.5.1-ubuntu-amd64".into(),
            sha256: "a".repeat(64),
            size: 1234,
        },
        api_info: ControllerInfo {
            addrs: vec!["10.0.0.1:17070".into()],
            ca_cert: CA_CERT.into(),
            tag,
            password: "s3cret".into(),
            model_tag: None,
        },
        state_info: None,
        authorized_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBerthTestKey user@host".into()],
        proxy: ProxySettings::default(),
        apt_proxy: ProxySettings::default(),
        disable_package_commands: true,
        agent_environment: BTreeMap::new(),
        constraints: Constraints::default(),
        network_interfaces: Vec::new(),
        cloud_init_output_log: PathBuf::from("/var/log/cloud-init-output.log"),
    }
}

/// Writes a raw image of `size` bytes with a recognisable pattern.
pub fn write_raw_image(path: &Path, size: usize) {
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8 + 1).collect();
    std::fs::write(path, data).unwrap();
}

/// Writes the 512-byte header of a qcow2 version 3 image of `size` bytes.
/// libvirt's test driver reads no volume contents, so the header is all
/// an import under it needs.
pub fn write_qcow2_header(path: &Path, size: u64) {
    let mut header = vec![0u8; 512];
    header[..4].copy_from_slice(b"QFI\xfb");
    header[4..8].copy_from_slice(&3u32.to_be_bytes());
    header[24..32].copy_from_slice(&size.to_be_bytes());
    std::fs::write(path, header).unwrap();
}

/// Returns the SHA-256 of `data` in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A libvirt test driver instance with its own state: a `test:///` URI of a
/// node file in a temporary directory, and directories for the manager.
pub struct TestDriver {
    pub dir: tempfile::TempDir,
    pub uri: String,
}

impl TestDriver {
    pub fn new() -> Self {
        init_logging();
        let dir = tempfile::Builder::new()
            .prefix("berth-test-virt-")
            .tempdir()
            .unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(&node, "<node/>\n").unwrap();
        let uri = format!("test://{}", node.display());
        write_raw_image(&dir.path().join("base.img"), 1 << 20);
        Self { dir, uri }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Returns a manager configuration named `name` whose directories are
    /// all inside the temporary directory.
    pub fn config(&self, name: &str) -> ManagerConfig {
        ManagerConfig::new()
            .with("name", name)
            .with("uri", self.uri.as_str())
            .with("pool", TEST_POOL)
            .with("pool-dir", self.path("pool").to_str().unwrap())
            .with("containers-dir", self.path("containers").to_str().unwrap())
            .with("removed-dir", self.path("removed").to_str().unwrap())
            .with("lock-dir", self.path("locks").to_str().unwrap())
            .with("image", self.path("base.img").to_str().unwrap())
    }

    /// Opens a connection and prepares the pool on it.
    pub fn connection(&self, config: &ManagerConfig) -> Connection {
        let connection = Connection::open(&self.uri).unwrap();
        berth_virt::VirtInitialiser::new(config.clone())
            .unwrap()
            .initialise_with(&connection)
            .unwrap();
        connection
    }

    /// Returns a manager on a prepared connection.
    pub fn manager_with(&self, config: ManagerConfig) -> VirtManager {
        let connection = self.connection(&config);
        VirtManager::with_connection(config, connection).unwrap()
    }

    pub fn manager(&self, name: &str) -> VirtManager {
        self.manager_with(self.config(name))
    }
}

/// Returns the names of the volumes of the test pool, sorted.
pub fn volume_names(connection: &Connection) -> Vec<String> {
    let pool = PoolHandle::new(connection.lookup_storage_pool_by_name(TEST_POOL).unwrap());
    pool.refresh(0).unwrap();
    let mut names = pool.list_volumes().unwrap();
    names.sort();
    names
}

/// Returns the names of every domain, defined or running, sorted.
pub fn domain_names(connection: &Connection) -> Vec<String> {
    let mut names: Vec<String> = connection
        .list_all_domains(0)
        .unwrap()
        .into_iter()
        .map(berth_virt::handle::DomainHandle::new)
        .map(|domain| domain.name().unwrap())
        .collect();
    names.sort();
    names
}

/// Reads and parses the XML of domain `name`.
pub fn domain_xml(connection: &Connection, name: &str) -> Domain {
    let domain =
        berth_virt::handle::DomainHandle::new(connection.lookup_domain_by_name(name).unwrap());
    from_xml(&domain.xml_desc(0).unwrap()).unwrap()
}

/// An HTTP server on 127.0.0.1 that serves one body for any GET, counting
/// requests. It handles a bounded number of connections and then stops.
pub struct ImageServer {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
}

impl ImageServer {
    pub fn start(body: Vec<u8>, max_connections: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/images/base.img", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(max_connections) {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // Read the request line and headers up to the blank line.
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        Self { url, requests }
    }
}
