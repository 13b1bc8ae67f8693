//! `berth`: create, list and destroy machine containers from the command
//! line, and demonstrate the whole cycle on the embedded busybox image.

mod cli;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use berth::{Backend, InstanceId, ManagerConfig, NetworkConfig};
use clap::{ArgAction, Parser, Subcommand};

use cli::output::{Created, print_instances, print_json};
use cli::progress::ProgressDisplay;

/// Provisions LXC system containers and libvirt VMs for a machine agent.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about)]
struct Cli {
    /// Backend to use.
    #[arg(long, global = true, default_value = "lxc", value_name = "lxc|virt")]
    backend: Backend,

    /// Manager name: every container is named `<manager name>-machine-<id>`.
    #[arg(long, global = true, default_value = "berth")]
    manager_name: String,

    /// Extra manager config key, such as `lxc-path=/srv/lxc` or
    /// `uri=qemu:///system`; may be repeated.
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    settings: Vec<String>,

    /// Print results as JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,

    /// More log detail: -v for info, -vv for debug, -vvv for trace.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepare this host for the backend: packages, kernel features,
    /// daemons, bridge, storage.
    Init {
        /// Bridge to create for containers.
        #[arg(long, value_name = "NAME", default_value = berth::DEFAULT_BRIDGE)]
        bridge: String,
    },
    /// Create and start a container for a machine.
    Create {
        /// The machine's configuration, YAML or JSON.
        #[arg(long, value_name = "FILE")]
        machine_config: PathBuf,
        /// OS series of the container; defaults to the machine config's.
        #[arg(long)]
        series: Option<String>,
        /// The container's network: `bridge:DEV` or `physical:DEV`, then
        /// optionally `,mtu=N` and `,mac=M`.
        #[arg(long, value_name = "SPEC", default_value = berth::DEFAULT_NETWORK)]
        network: String,
        /// Image: `busybox` (embedded), a rootfs tarball path, or an image
        /// server URL, as the backend accepts.
        #[arg(long)]
        image: Option<String>,
    },
    /// List the containers of this manager.
    List,
    /// Stop and destroy containers; destroying a missing one succeeds.
    Destroy {
        /// Full container names, as `list` prints them.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove containers that a crashed create left half made, and nothing else.
    Gc,
    /// Create three containers on an isolated bridge, show them, destroy
    /// them, and time each step. Unless `--manager-name` is given, the
    /// demo's containers belong to manager `berth-demo`.
    Demo {
        /// Number of containers.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
        count: u32,
        /// Bridge to create for the demo; it gets no uplink and no address.
        #[arg(long, value_name = "NAME", default_value = cli::demo::DEMO_BRIDGE)]
        bridge: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("berth: error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error: warnings by default, then info, debug and trace
/// with each `-v`. `RUST_LOG` overrides the level when set.
fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Builds the manager config from `--manager-name` and every `--set`.
fn manager_config(cli: &Cli) -> anyhow::Result<ManagerConfig> {
    let mut config = ManagerConfig::new().with(berth::config::CONFIG_KEY_NAME, &cli.manager_name);
    for setting in &cli.settings {
        let Some((key, value)) = setting.split_once('=') else {
            bail!("invalid --set {setting:?}: expected KEY=VALUE");
        };
        config.set(key, value);
    }
    Ok(config)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = manager_config(&cli)?;
    match &cli.command {
        Command::Init { bridge } => {
            let initialiser =
                berth::new_initialiser(cli.backend, config.with(berth::CONFIG_KEY_BRIDGE, bridge))?;
            initialiser
                .initialise()
                .context("host preparation failed")?;
            if !cli.json {
                match cli.backend {
                    Backend::Lxc => {
                        println!("host ready for the lxc backend, with bridge {bridge}")
                    }
                    Backend::Virt => println!("host ready for the virt backend"),
                }
            }
            Ok(())
        }
        Command::Create {
            machine_config,
            series,
            network,
            image,
        } => {
            let machine = berth::machine_file::read_machine_config(machine_config)?;
            let network: NetworkConfig = network.parse()?;
            let mut config = config;
            if let Some(image) = image {
                config.set(berth::CONFIG_KEY_IMAGE, image);
            }
            let manager = berth::new_manager(cli.backend, config)?;
            let series = series.clone().unwrap_or_else(|| machine.series.clone());
            let progress = ProgressDisplay::new(cli.json);
            let created =
                manager.create_container_with_progress(&machine, &series, &network, &progress);
            // The bars must be gone before the result is printed below them.
            progress.finish();
            let (instance, hardware) = created.with_context(|| {
                format!(
                    "creating a container for machine {} failed",
                    machine.machine_id
                )
            })?;
            if cli.json {
                print_json(&Created {
                    instance: &instance,
                    hardware: &hardware,
                    hardware_text: hardware.to_string(),
                })
            } else {
                print_instances(std::slice::from_ref(&instance));
                println!("hardware: {hardware}");
                Ok(())
            }
        }
        Command::List => {
            let manager = berth::new_manager(cli.backend, config)?;
            let instances = manager.list_containers()?;
            if cli.json {
                return print_json(&instances);
            }
            print_instances(&instances);
            Ok(())
        }
        Command::Destroy { names } => {
            let ids = names
                .iter()
                .map(|name| InstanceId::new(name.as_str()))
                .collect::<Result<Vec<_>, _>>()?;
            let manager = berth::new_manager(cli.backend, config)?;
            for id in &ids {
                manager
                    .destroy_container(id)
                    .with_context(|| format!("destroying {id} failed"))?;
                if !cli.json {
                    println!("destroyed {id}");
                }
            }
            if cli.json { print_json(&ids) } else { Ok(()) }
        }
        Command::Gc => {
            let removed = berth::new_manager(cli.backend, config)?.collect_garbage()?;
            if cli.json {
                print_json(&removed)
            } else {
                if removed.is_empty() {
                    println!("nothing to remove");
                }
                for name in &removed {
                    println!("removed half-made container {name}");
                }
                Ok(())
            }
        }
        Command::Demo { count, bridge } => cli::demo::run(&cli, config, *count, bridge),
    }
}
