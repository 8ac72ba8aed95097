"""Draws docs/benchmarks.png from bench/results/compare-latest.json with matplotlib: one panel
per workload, one bar per contender (the median of the runs, with the runs' range as an error
bar), and the limit as a dashed line where there is one.

    python3 bench/compare/chart.py RESULTS.json OUTPUT.png
"""

import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, output: str) -> None:
    with open(source) as f:
        run = json.load(f)
    names = [c["name"] for c in run["contenders"]]
    units, limits = run["units"], run["limits"]
    colors = {name: plt.cm.tab10(i) for i, name in enumerate(names)}
    # The S3 workloads only (run["localUnits"], the local NBD path, is a table of its own).
    cols = 4 if len(units) <= 8 else 5
    rows = -(-len(units) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.75 * rows))
    for ax in axes.flat[len(units):]:
        ax.set_visible(False)
    for ax, (workload, unit) in zip(axes.flat, units.items()):
        samples = run["results"].get(workload, {})
        shown = [n for n in names if samples.get(n)]
        medians = [statistics.median(s["value"] for s in samples[n]) for n in shown]
        lows = [m - min(s["value"] for s in samples[n]) for m, n in zip(medians, shown)]
        highs = [max(s["value"] for s in samples[n]) - m for m, n in zip(medians, shown)]
        ax.bar(shown, medians, yerr=[lows, highs], color=[colors[n] for n in shown], capsize=3)
        limit = limits.get(workload)
        if limit and samples.get(limit):
            value = statistics.median(s["value"] for s in samples[limit])
            ax.axhline(value, color="black", linestyle="--", linewidth=1)
            ax.annotate(f"{limit}: {value:.0f}", xy=(0.01, value), xycoords=("axes fraction", "data"),
                        va="bottom", fontsize=8)
        better = "lower is better" if unit == "s" else "higher is better"
        ax.set_title(f"{workload}\n{unit}, {better}", fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        if unit == "s" and medians and max(medians) / max(min(medians), 1e-9) > 50:
            ax.set_yscale("log")
    fig.suptitle(f"s3nbd and its peers on one MinIO (medians of {run['settings']['repeat']} runs; {run['date'][:10]})")
    fig.tight_layout()
    fig.savefig(output, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
