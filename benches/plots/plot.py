#!/usr/bin/python3
"""Plot create latency and list time against the number of containers.

Reads benches/results/scale.json (written by `cargo bench --bench scale`)
and writes benches/plots/scale.png. Needs Debian's python3-matplotlib:
run it with /usr/bin/python3.
"""

import json
import pathlib
import statistics

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

BENCHES = pathlib.Path(__file__).resolve().parent.parent
RESULTS = BENCHES / "results" / "scale.json"
OUTPUT = BENCHES / "plots" / "scale.png"
WINDOW = 25  # containers per rolling-median window of the create latency


def rolling_median(values, window):
    """Return the median of each run of `window` values ending at each index."""
    return [statistics.median(values[max(0, i - window + 1): i + 1]) for i in range(len(values))]


def main():
    data = json.loads(RESULTS.read_text())
    density = data["density"]
    creates = density["create_ms"]
    running_before = list(range(len(creates)))

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))

    left.scatter(running_before, creates, s=4, alpha=0.35, label="each create+start")
    left.plot(running_before, rolling_median(creates, WINDOW), color="black",
              label=f"rolling median of {WINDOW}")
    left.set_xlabel("containers already running")
    left.set_ylabel("create+start latency (ms)")
    left.set_title("berth LXC create+start (busybox, veth on a bridge)")
    left.set_ylim(bottom=0)
    left.legend()

    def plot_list(points, key, label, marker):
        counts = [point[key] for point in points]
        medians = [point["list"]["median_ms"] for point in points]
        low = [m - point["list"]["p10_ms"] for m, point in zip(medians, points)]
        high = [point["list"]["p90_ms"] - m for m, point in zip(medians, points)]
        right.errorbar(counts, medians, yerr=[low, high], marker=marker, capsize=3, label=label)

    plot_list(density["checkpoints"], "running", "running containers", "o")
    plot_list(data["list_defined"], "defined", "defined (stopped) containers", "s")
    right.axhline(20, color="grey", linestyle="--", linewidth=1, label="target for 1,000: 20 ms")
    right.set_xlabel("containers of the manager")
    right.set_ylabel("list_containers time (ms), median, p10 to p90")
    right.set_title("berth LXC list")
    right.set_ylim(bottom=0)
    right.legend()

    host = data["host"]
    figure.suptitle(
        f"{host['nproc']} CPUs, {host['memory_mib'] // 1024} GiB, kernel {host['kernel']}, "
        f"liblxc {host['liblxc']}, 1-minute load average {host.get('loadavg', '?').split()[0]} when the run started",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(OUTPUT, dpi=110)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
