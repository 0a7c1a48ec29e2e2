"""The scorecard out of a run's data: a Markdown table (printed and saved), the JSON, and a PNG grid."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SYMBOL = {"pass": "pass", "safe": "safe", "partial": "PARTIAL", "fail": "FAIL", "n/a": "n/a"}
COLOUR = {"pass": "#2e7d32", "safe": "#64b5f6", "partial": "#ef6c00", "fail": "#c62828", "n/a": "#9e9e9e"}


def rows(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key in the table, scenario title, mode) in scenario order."""
    out = []
    for key, title, modes in data["scenarios"]:
        for stream in modes:
            mode = "stream" if stream else "plain"
            out.append((f"{key}/{mode}", title, mode))
    return out


def summary(data: dict[str, Any], contender: str) -> tuple[int, int, int, int]:
    """(scenarios passed in every mode, scenarios, cells passed, cells)."""
    row = data["table"][contender]
    sc_pass = 0
    for key, _title, modes in data["scenarios"]:
        cells = [row[f"{key}/{'stream' if s else 'plain'}"]["score"] for s in modes]
        sc_pass += all(c == "pass" for c in cells)
    cells = [v["score"] for v in row.values()]
    return sc_pass, len(data["scenarios"]), sum(c == "pass" for c in cells), len(cells)


def markdown(data: dict[str, Any]) -> str:
    names = list(data["table"])
    info = data["info"]
    out = [
        f"Failover scorecard — {info['date']}, Python {info['python']}, {info['cpus']} CPUs, "
        f"load {info['load']:.1f}, whole run {info['seconds']:.0f} s",
        "",
        "| scenario | mode | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for key, title, mode in rows(data):
        cells = [SYMBOL[data["table"][n][key]["score"]] for n in names]
        out.append(f"| {title} | {mode} | " + " | ".join(cells) + " |")
    sums = [summary(data, n) for n in names]
    out.append("| **scenarios passed (every mode)** | | " + " | ".join(f"**{s[0]}/{s[1]}**" for s in sums) + " |")
    out.append("| **cells passed** | | " + " | ".join(f"{s[2]}/{s[3]}" for s in sums) + " |")
    out += [
        "",
        "Versions: "
        + "; ".join(f"{n} {' '.join(f'{d}=={v}' for d, v in vs.items()) or '-'}" for n, vs in data["versions"].items()),
    ]
    if data["unavailable"]:
        out += ["", "Not run: " + "; ".join(f"{n}: {why}" for n, why in data["unavailable"].items())]
    out += ["", "What went wrong, per contender (every cell that is not a pass):", ""]
    for n in names:
        bad = [(k, v) for k, v in data["table"][n].items() if v["score"] != "pass"]
        if not bad:
            out.append(f"* **{n}**: every cell passed")
            continue
        out.append(f"* **{n}**:")
        out += [f"  * {k}: {v['score']} — {v['note']}" for k, v in bad]
    if info.get("fault_server_bugs"):
        out += ["", f"Fault server errors (bugs in the bench itself): {info['fault_server_bugs']}"]
    return "\n".join(out) + "\n"


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = list(data["table"])
    keys = rows(data)
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 4.5, 0.32 * len(keys) + 1.8))
    for y, (key, _title, _mode) in enumerate(keys):
        for x, n in enumerate(names):
            score = data["table"][n][key]["score"]
            ax.add_patch(plt.Rectangle((x, y), 0.95, 0.9, color=COLOUR[score]))
    ax.set_xlim(0, len(names))
    ax.set_ylim(len(keys), 0)
    ax.set_xticks([i + 0.47 for i in range(len(names))])
    sums = [summary(data, n) for n in names]
    ax.set_xticklabels(
        [f"{n}\n{s[0]}/{s[1]}" for n, s in zip(names, sums, strict=True)], rotation=45, ha="right", fontsize=8
    )
    ax.set_yticks([i + 0.45 for i in range(len(keys))])
    ax.set_yticklabels([f"{t} ({m})" for _k, t, m in keys], fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.legend(
        handles=[Patch(color=c, label=s) for s, c in COLOUR.items()],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    ax.set_title(
        f"Failover scorecard, {data['info']['date']} (scenarios passed in every mode under each name)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(data: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(data)
    print(text)
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps(data, indent=1))
    try:
        chart(data, out / "latest.png")
        print(f"chart: {out / 'latest.png'}")
    except ImportError:
        print("chart skipped: matplotlib is not installed")
