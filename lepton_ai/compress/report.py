"""An optimisation report on disk: report.json, report.md (a table of every candidate) and report.png."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_report(report: dict[str, Any], out: Path) -> None:
    """Write report.json, report.md and report.png of `report` into the directory `out`, each atomically."""
    _atomic_write(out / "report.json", json.dumps(report, indent=2))
    _atomic_write(out / "report.md", markdown(report))
    plot(report, out / "report.png")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def markdown(r: dict[str, Any]) -> str:
    """Return the report as Markdown: the machine, the winner and a table of every candidate."""
    cpu, metric = r["machine"]["cpu"], r["metric"]
    lines = [
        "# Optimization report\n",
        f"Machine: {cpu['model']} ({cpu['cores']} cores, {' '.join(cpu['flags'])}); "
        f"GPUs: {', '.join(g['name'] for g in r['machine']['gpus']) or 'none'}\n",
        f"Best: **{r['best']['name']}** — speedup ×{r['speedup']:.2f} "
        f"(throughput at batch {r['batch_size']}), "
        f"size ÷{r['size_reduction']:.2f}, {metric} drop {r[f'{metric}_drop']:+.4f}\n",
        sureness(r),
        f"| candidate | {metric} | attribution agreement | throughput/s | speedup, interleaved (IQR) "
        "| p50 ms | p99 ms | size MB | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in r["trials"]:
        verdict = "best" if t["name"] == r["best"]["name"] else ("ok" if t["accepted"] else t["reason"])
        agreement, ratio = t.get("attribution_agreement"), t.get("speedup")
        settled = "" if not ratio else f"×{ratio['median']:.2f} ({ratio['low']:.2f}–{ratio['high']:.2f})"
        lines.append(
            f"| {t['name']} | {t[metric]:.4f} | {'' if agreement is None else f'{agreement:.3f}'} | "
            f"{t['throughput_per_s']:,.1f} | {settled} | {t['latency_ms_p50']:.3f} | "
            f"{t['latency_ms_p99']:.3f} | {t['size_bytes'] / 1e6:,.2f} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def sureness(r: dict[str, Any]) -> str:
    """Return a sentence on how sure the choice is: the rounds behind it, the ties, how often it won."""
    settled, choice = r.get("settled"), r.get("choice") or {}
    if not settled:
        return "Chosen on size (no timing needed).\n"
    low, high = r["speedup_range"]
    others = [n for n in choice["tied"] if n != choice["name"]]
    tied = f"tied with {', '.join(others)} (ranges overlap; the smaller won)" if others else "no tie"
    return (
        f"Measured against the baseline interleaved over {settled['rounds']} rounds on {settled['threads']} "
        f"threads: speedup ×{r['speedup']:.2f}, interquartile range {low:.2f}–{high:.2f}; {tied}; the "
        f"fastest in {choice['fastest_share']:.0%} of the rounds.\n"
    )


def plot(r: dict[str, Any], path: Path) -> None:
    """Write a PNG of quality against throughput for every candidate, the chosen one in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = r["metric"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for t in r["trials"]:
        colour = (
            "tab:green" if t["name"] == r["best"]["name"] else ("tab:blue" if t["accepted"] else "tab:red")
        )
        ratio = t.get("speedup")
        if ratio:
            # the interleaved rounds' interquartile range, in the baseline's examples/s
            base = r["baseline"]["throughput_per_s"]
            ax.plot([base * ratio["low"], base * ratio["high"]], [t[metric]] * 2, color=colour, lw=2)
        ax.scatter(t["throughput_per_s"], t[metric], color=colour)
        ax.annotate(
            t["name"],
            (t["throughput_per_s"], t[metric]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    allowed = r.get("max_accuracy_drop", r.get("max_fidelity_drop"))
    ax.axhline(r["baseline"][metric] - allowed, color="grey", ls="--", lw=1, label="allowed drop")
    ax.set_xscale("log")
    ax.set_xlabel(f"throughput (examples/s, batch {r['batch_size']})")
    ax.set_ylabel(metric)
    ax.set_title("candidates: green = chosen, blue = within the bar, red = rejected")
    ax.legend(loc="lower left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
