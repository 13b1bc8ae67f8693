//! Images from tarballs and from a simplestreams server on loopback.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::progress::Step;
use berth_core::{Error, InstanceId, Manager, NetworkConfig};
use berth_lxc::LxcManager;
use berth_lxc::config::{KEY_IMAGE, KEY_IMAGE_CACHE_DIR, KEY_IMAGE_OS, KEY_LXC_PATH};
use berth_lxc::container::ContainerState;
use berth_lxc::template::TEMPLATE_PREFIX;
use common::{Recorder, TestEnv, attach, entries, machine, state};
use sha2::{Digest, Sha256};

/// Returns the busybox image as an uncompressed tarball.
fn busybox_tar(directory: &Path) -> Vec<u8> {
    let rootfs = directory.join("busybox-rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    berth_lxc::image::busybox::build_rootfs(Path::new("/bin/busybox"), &rootfs).unwrap();
    std::fs::write(rootfs.join("etc/image-marker"), "from a tarball\n").unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", &rootfs).unwrap();
    builder.into_inner().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    xz2::read::XzEncoder::new(data, 1)
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[test]
fn gzip_and_zstd_tarballs_run() {
    let env = TestEnv::new("tarball", None);
    let plain = busybox_tar(&env.base);
    let mut gzip = Vec::new();
    flate2::read::GzEncoder::new(&plain[..], flate2::Compression::fast())
        .read_to_end(&mut gzip)
        .unwrap();
    let zstd = zstd::encode_all(&plain[..], 3).unwrap();
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    for (index, (file, bytes)) in [("rootfs.tar.gz", gzip), ("rootfs.tar.zst", zstd)]
        .into_iter()
        .enumerate()
    {
        let archive = env.base.join(file);
        std::fs::write(&archive, bytes).unwrap();
        let manager = LxcManager::new(
            env.config("juju")
                .with(KEY_IMAGE, archive.to_str().unwrap()),
        )
        .unwrap();
        manager
            .create_container(&machine(&index.to_string()), "", &network)
            .unwrap();
        let name = format!("juju-machine-{index}");
        assert_eq!(
            attach(&env.lxc_path(), &name, &["cat", "/etc/image-marker"]),
            "from a tarball\n",
            "{file}"
        );
        manager
            .destroy_container(&InstanceId::new(name).unwrap())
            .unwrap();
    }
    let templates = entries(&env.lxc_path())
        .into_iter()
        .filter(|name| name.starts_with(TEMPLATE_PREFIX))
        .count();
    assert_eq!(templates, 2, "one template per image");
}

/// A tiny HTTP/1.1 file server on 127.0.0.1 that counts requests per path.
/// It stops by itself after `SERVER_LIFETIME` or `MAX_REQUESTS` requests.
struct Server {
    url: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

const SERVER_LIFETIME: Duration = Duration::from_secs(120);
const MAX_REQUESTS: usize = 200;

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (served_files, counted) = (files.clone(), hits.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + SERVER_LIFETIME;
            let mut served = 0;
            while Instant::now() < deadline && served < MAX_REQUESTS {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                served += 1;
                stream.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).unwrap();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                *counted.lock().unwrap().entry(path.clone()).or_default() += 1;
                let mut stream = stream;
                let body = served_files.lock().unwrap().get(&path).cloned();
                let head = match (&body, path.starts_with("/redirect")) {
                    (_, true) => "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                    (Some(body), false) => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()),
                    (None, false) => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
                };
                let _ = stream.write_all(head.as_bytes());
                if let (Some(body), false) = (body, path.starts_with("/redirect")) {
                    let _ = stream.write_all(&body);
                }
            }
        });
        Self { url, files, hits }
    }

    fn put(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.to_owned(), body);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Publishes a catalogue with one product whose rootfs is at `path`
    /// with the given SHA-256 and size.
    fn publish(&self, path: &str, sha256: &str, size: usize) {
        let index = serde_json::json!({
            "format": "index:1.0",
            "index": {"images": {"datatype": "image-downloads", "format": "products:1.0", "path": "streams/v1/images.json",
                                 "products": ["debian:bookworm:amd64:cloud"]}}
        });
        let arch = berth_core::hardware::host_arch();
        let catalogue = serde_json::json!({
            "content_id": "images", "datatype": "image-downloads", "format": "products:1.0",
            "products": {
                format!("debian:bookworm:{arch}:cloud"): {
                    "os": "Debian", "release": "bookworm", "arch": arch, "variant": "cloud",
                    "versions": {"20260101_05:24": {"items": {
                        "lxd.tar.xz": {"ftype": "lxd.tar.xz", "sha256": "0".repeat(64), "size": 1, "path": "images/lxd.tar.xz"},
                        "root.tar.xz": {"ftype": "root.tar.xz", "sha256": sha256, "size": size, "path": path.trim_start_matches('/')}
                    }}}
                },
                format!("debian:trixie:{arch}:cloud"): {"os": "Debian", "release": "trixie", "arch": arch, "variant": "cloud", "versions": {}}
            }
        });
        self.put(
            "/streams/v1/index.json",
            serde_json::to_vec(&index).unwrap(),
        );
        self.put(
            "/streams/v1/images.json",
            serde_json::to_vec(&catalogue).unwrap(),
        );
    }
}

fn image_config(
    env: &TestEnv,
    server: &Server,
    lxc_path: &Path,
    cache: &Path,
) -> berth_core::ManagerConfig {
    env.config("juju")
        .with(KEY_IMAGE, format!("{}/", server.url))
        .with(KEY_IMAGE_OS, "debian")
        .with(KEY_IMAGE_CACHE_DIR, cache.to_str().unwrap())
        .with(KEY_LXC_PATH, lxc_path.to_str().unwrap())
}

#[test]
fn simplestreams_download_checked_and_cached() {
    let env = TestEnv::new("sstream", None);
    let server = Server::start();
    let rootfs = xz(&busybox_tar(&env.base));
    let sha = hex::encode(Sha256::digest(&rootfs));
    let rootfs_path = "/images/debian/bookworm/rootfs.tar.xz";
    server.put(rootfs_path, rootfs.clone());
    server.publish(rootfs_path, &sha, rootfs.len());
    let cache: PathBuf = env.base.join("cache");
    let network = NetworkConfig::bridge(&env.bridge).unwrap();

    let manager = LxcManager::new(image_config(&env, &server, &env.lxc_path(), &cache)).unwrap();
    let recorder = Recorder::default();
    manager
        .create_container_with_progress(&machine("0"), "bookworm", &network, &recorder)
        .unwrap();
    assert_eq!(
        state(&env.lxc_path(), "juju-machine-0"),
        ContainerState::Running
    );
    assert_eq!(
        attach(
            &env.lxc_path(),
            "juju-machine-0",
            &["cat", "/etc/image-marker"]
        ),
        "from a tarball\n"
    );
    assert_eq!(server.hits(rootfs_path), 1);
    assert!(
        cache.join(format!("{sha}.tar.xz")).is_file(),
        "download not cached"
    );
    let url = format!("{}{rootfs_path}", server.url);
    let downloads: Vec<_> = recorder
        .bytes
        .lock()
        .unwrap()
        .iter()
        .filter(|(what, ..)| *what == url)
        .cloned()
        .collect();
    assert!(downloads.len() >= 2, "download progress {downloads:?}");
    assert_eq!(downloads.last().unwrap().1, rootfs.len() as u64);
    assert_eq!(downloads.last().unwrap().2, Some(rootfs.len() as u64));

    // Another lxc path with the same cache builds its template from the
    // cached file without downloading it again.
    let second_path = env.base.join("lxc2");
    let second = LxcManager::new(image_config(&env, &server, &second_path, &cache)).unwrap();
    second
        .create_container(&machine("1"), "bookworm", &network)
        .unwrap();
    assert_eq!(
        server.hits(rootfs_path),
        1,
        "the cached image was downloaded again"
    );
    second
        .destroy_container(&InstanceId::new("juju-machine-1").unwrap())
        .unwrap();
    manager
        .destroy_container(&InstanceId::new("juju-machine-0").unwrap())
        .unwrap();

    // A release the server does not have is named in the error.
    let error = manager
        .create_container(&machine("2"), "trixie", &network)
        .unwrap_err();
    let text = berth_core::error::error_chain(&error);
    assert!(
        text.contains("no image for os debian release trixie"),
        "{text}"
    );
    assert!(!env.dirs().containers_root().join("juju-machine-2").exists());
}

#[test]
fn simplestreams_bad_checksum_and_redirect_rejected() {
    let env = TestEnv::new("sscheck", None);
    let server = Server::start();
    let rootfs = xz(&busybox_tar(&env.base));
    let network = NetworkConfig::bridge(&env.bridge).unwrap();
    let cache = env.base.join("cache");

    let rootfs_path = "/images/rootfs.tar.xz";
    server.put(rootfs_path, rootfs.clone());
    server.publish(rootfs_path, &"ab".repeat(32), rootfs.len());
    let manager = LxcManager::new(image_config(&env, &server, &env.lxc_path(), &cache)).unwrap();
    let error = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap_err();
    let Error::Step { step, .. } = &error else {
        panic!("expected a step error, got {error:?}")
    };
    assert_eq!(*step, Step::Template);
    let text = berth_core::error::error_chain(&error);
    assert!(text.contains("SHA-256"), "{text}");
    assert!(
        entries(&cache).is_empty(),
        "a corrupt download entered the cache: {:?}",
        entries(&cache)
    );
    let left: Vec<String> = entries(&env.lxc_path())
        .into_iter()
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "lxc path holds {left:?}");
    assert!(!env.dirs().containers_root().join("juju-machine-0").exists());

    // A redirect, even to loopback, is not followed.
    let sha = hex::encode(Sha256::digest(&rootfs));
    server.publish("/redirect/rootfs.tar.xz", &sha, rootfs.len());
    let manager = LxcManager::new(image_config(&env, &server, &env.lxc_path(), &cache)).unwrap();
    let error = manager
        .create_container(&machine("0"), "bookworm", &network)
        .unwrap_err();
    let text = berth_core::error::error_chain(&error);
    assert!(text.contains("redirect/rootfs.tar.xz"), "{text}");
    assert_eq!(server.hits("/elsewhere"), 0);
    assert!(!env.dirs().containers_root().join("juju-machine-0").exists());
}
