"""Turns one benchmark run (the dict ``run.py`` builds) into the markdown table, the raw-samples JSON and the chart.

Every ratio is to a baseline measured in the same run: raw httpx for requests (and the fastest raw transport,
when that is clearly faster), ``import httpx`` for imports, the upstream asked directly for gateways.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

KINDS = [
    ("sync-nonstream", "sync non-stream"),
    ("sync-stream", "sync 50-chunk stream"),
    ("async-nonstream", "async non-stream"),
    ("async-stream", "async 50-chunk stream"),
]
LABELS = {
    "raw-httpx": "raw httpx",
    "raw-aiohttp": "raw aiohttp",
    "polychat": "**polychat**",
    "openai": "openai SDK",
    "litellm": "LiteLLM `completion`/`acompletion`",
    "litellm-router": "LiteLLM Router",
    "g4f": "g4f client",
}
#: A raw transport counts as "clearly faster" than httpx when its median is below this share of httpx's.
CLEARLY = 0.85


def med(v: list[float]) -> float:
    return statistics.median(v) if v else math.nan


def p99(v: list[float]) -> float:
    if not v:
        return math.nan
    s = sorted(v)
    return s[min(len(s) - 1, round(0.99 * (len(s) - 1)))]


def ms(x: float) -> str:
    if math.isnan(x):
        return "–"
    return f"{x * 1000:.3f}" if x < 0.01 else f"{x * 1000:.2f}" if x < 0.1 else f"{x * 1000:.1f}"


def ratio(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b) or not b:
        return "–"
    return f"{a / b:.2f}×"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**not met**")


class Report:
    def __init__(self, data: dict[str, Any]) -> None:
        self.d = data
        self.lines: list[str] = []
        self.targets: list[tuple[str, str, str, bool | None]] = []  # what, measured, limit, ok
        self.notes: list[str] = []

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    # -- sections ------------------------------------------------------------------------------------------------

    def header(self) -> None:
        d, m = self.d, self.d["machine"]
        la, lb = m.get("load_before", [0, 0, 0]), m.get("load_after", [0, 0, 0])
        self.add(
            f"# polychat benchmark — {d['date'][:10]}",
            "",
            f"Measured {d['date']} on {m['cpu']} ({m['cores']} cores, {m['memory']}), {m['os']}, Python "
            f"{m['python']}; polychat `{d['polychat_commit']}`; load average {la[0]:.2f} before, {lb[0]:.2f} "
            f"after; {'quick run' if d.get('quick') else 'full run'} in {d.get('seconds', 0):.0f} s. "
            "Loopback only; the upstream is `bench/upstream.py` "
            f"({d.get('upstream', {}).get('loop', '?')} loop, fixed answers, 50 chunks). "
            "Medians (p50) and p99 in milliseconds; ratios are to the baseline of this same run.",
            "",
        )
        versions = self.d.get("versions") or {}
        flat: dict[str, str] = {}
        for v in versions.values():
            flat.update(v)
        if flat:
            self.add("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(flat.items())) + ".", "")

    def imports(self) -> None:
        imp = self.d.get("imports")
        if not imp:
            return
        s = imp["samples"]
        base_t = med([x["s"] for x in s.get("import httpx", [])])
        base_m = med([x["mib"] for x in s.get("import httpx", [])])
        self.add(
            "## Import (fresh interpreter each time)",
            "",
            "| import | time p50 (ms) | × httpx | memory added (MiB) | × httpx |",
            "|---|---:|---:|---:|---:|",
        )
        for label, runs in s.items():
            if label in imp["errors"]:
                self.add(f"| `{label}` | failed: {imp['errors'][label]} | | | |")
                continue
            t, m_ = med([x["s"] for x in runs]), med([x["mib"] for x in runs])
            self.add(f"| `{label}` | {ms(t)} | {ratio(t, base_t)} | {m_:.1f} | {ratio(m_, base_m)} |")
        self.add("")
        usable = s.get("from polychat import Client (usable)", [])
        if usable:
            t, m_ = med([x["s"] for x in usable]), med([x["mib"] for x in usable])
            self.targets.append(
                ("import time (Client + OpenaiChat) vs `import httpx`", ratio(t, base_t), "≤ 1.20×", t <= 1.2 * base_t)
            )
            self.targets.append(
                (
                    "import memory (Client + OpenaiChat) vs `import httpx`",
                    ratio(m_, base_m),
                    "≤ 1.30×",
                    m_ <= 1.3 * base_m,
                )
            )

    def requests(self) -> None:
        lat = self.d.get("latency")
        tput = self.d.get("throughput")
        if not lat and not tput:
            return
        samples = lat["samples"] if lat else {}
        errors = lat["errors"] if lat else {}
        req = tput["req_per_s"] if tput else {}
        terr = tput["errors"] if tput else {}

        def p50(name: str, key: str) -> float:
            return med(samples.get(name, {}).get(key, []))

        def rps(name: str) -> float:
            return med(req.get(name, []))

        # The baseline per kind: raw httpx, or a raw transport that is clearly faster.
        base: dict[str, tuple[str, float]] = {}
        for key, _ in KINDS:
            best = ("raw-httpx", p50("raw-httpx", key))
            other = p50("raw-aiohttp", key)
            if not math.isnan(other) and not math.isnan(best[1]) and other < CLEARLY * best[1]:
                best = ("raw-aiohttp", other)
            base[key] = best
        tbase = ("raw-httpx", rps("raw-httpx"))
        if rps("raw-aiohttp") > tbase[1] / CLEARLY:
            tbase = ("raw-aiohttp", rps("raw-aiohttp"))

        self.add(
            "## One request, and async throughput",
            "",
            "Each cell: p50 / p99 (ms), then p50 ÷ raw httpx's p50. Throughput: async non-stream requests per "
            "second with 100 in flight (median of rounds), ÷ raw httpx's.",
            "",
            "| client | " + " | ".join(label for _, label in KINDS) + " | async req/s, concurrency 100 |",
            "|---|" + "---:|" * (len(KINDS) + 1),
        )
        names = [n for n in LABELS if n in samples or n in req or n in (self.d.get("setup_errors") or {})]
        for name in names:
            if name in (self.d.get("setup_errors") or {}):
                self.add(f"| {LABELS[name]} | could not run: {self.d['setup_errors'][name]} |" + " |" * len(KINDS))
                continue
            cells = []
            for key, _ in KINDS:
                v = samples.get(name, {}).get(key, [])
                if key in errors.get(name, {}):
                    cells.append(f"failed: {errors[name][key][:120]}")
                elif not v:
                    cells.append("n/a (async only)" if key.startswith("sync") and name == "raw-aiohttp" else "–")
                else:
                    cells.append(f"{ms(med(v))} / {ms(p99(v))} ({ratio(med(v), p50('raw-httpx', key))})")
            if name in terr:
                cells.append(f"failed: {terr[name][:120]}")
            elif req.get(name):
                cells.append(f"{rps(name):.0f} ({ratio(rps(name), rps('raw-httpx'))})")
            else:
                cells.append("–")
            self.add(f"| {LABELS[name]} | " + " | ".join(cells) + " |")
        self.add("")
        faster = [(k, b) for k, b in base.items() if b[0] != "raw-httpx"]
        if faster or tbase[0] != "raw-httpx":
            parts = [
                f"{lbl} ({ratio(base[k][1], p50('raw-httpx', k))} of httpx's p50)"
                for k, lbl in KINDS
                if base[k][0] != "raw-httpx"
            ]
            if tbase[0] != "raw-httpx":
                parts.append(f"async throughput ({ratio(tbase[1], rps('raw-httpx'))} httpx's req/s)")
            self.notes.append(
                "Raw aiohttp is clearly faster than raw httpx here for "
                + ", ".join(parts)
                + "; the request targets are checked against it too (second line of each target)."
            )

        def target(key: str, label: str, limit: float) -> None:
            pc = p50("polychat", key)
            hx = p50("raw-httpx", key)
            if math.isnan(pc) or math.isnan(hx):
                return
            self.targets.append((f"{label} p50 vs raw httpx", ratio(pc, hx), f"≤ {limit:.2f}×", pc <= limit * hx))
            bname, bval = base[key]
            if bname != "raw-httpx":
                self.targets.append(
                    (
                        f"{label} p50 vs {LABELS[bname]} (faster baseline)",
                        ratio(pc, bval),
                        f"≤ {limit:.2f}×",
                        pc <= limit * bval,
                    )
                )

        target("sync-nonstream", "sync non-stream", 1.15)
        target("async-nonstream", "async non-stream", 1.15)
        target("sync-stream", "sync 50-chunk stream", 1.5)
        target("async-stream", "async 50-chunk stream", 1.5)
        pc, hx = rps("polychat"), rps("raw-httpx")
        if not math.isnan(pc) and not math.isnan(hx):
            self.targets.append(
                ("async throughput, concurrency 100, vs raw httpx", ratio(pc, hx), "≥ 0.90×", pc >= 0.9 * hx)
            )
            if tbase[0] != "raw-httpx":
                self.targets.append(
                    (
                        f"async throughput vs {LABELS[tbase[0]]} (faster baseline)",
                        ratio(pc, tbase[1]),
                        "≥ 0.90×",
                        pc >= 0.9 * tbase[1],
                    )
                )

    def section(self, key: str, title: str) -> dict[str, Any] | None:
        """The results of one part of the run, under its heading; None (after saying why) if it has none."""
        part: dict[str, Any] | None = self.d.get(key)
        if not part:
            return None
        self.add(title, "")
        if "error" in part:
            self.add(f"Could not run: {part['error']}", "")
            return None
        return part

    def failover(self) -> None:
        fo = self.section("failover", "## Failover (polychat)")
        if fo is None:
            return
        self.add(
            "Non-stream calls; the variants alternate call by call in one process. *Added* = variant p50 − direct p50.",
            "",
            "| situation | sync p50 / p99 (ms) | sync added | async p50 / p99 (ms) | async added | target |",
            "|---|---:|---:|---:|---:|---|",
        )
        rows = [
            ("direct", "the live provider alone (baseline)", None),
            ("dead-first", "dead first provider (connection refused), then the live one", 0.003),
            ("open-breaker", "first provider behind an open breaker, then the live one", 0.0001),
        ]
        for key, label, limit in rows:
            cells = []
            added_all = []
            for mode in ("sync", "async"):
                v = fo[f"{mode}-pairs"][key]
                d0 = med(fo[f"{mode}-pairs"]["direct"])
                added = med(v) - d0
                added_all.append(added)
                cells += [f"{ms(med(v))} / {ms(p99(v))}", "–" if key == "direct" else f"{added * 1000:+.3f} ms"]
            lim = "" if limit is None else f"added ≤ {limit * 1000:g} ms"
            self.add(f"| {label} | " + " | ".join(cells) + f" | {lim} |")
            if limit is not None:
                worst = max(added_all)
                self.targets.append(
                    (
                        f"{label}: added p50 (worse of sync/async)",
                        f"{worst * 1000:.3f} ms",
                        f"≤ {limit * 1000:g} ms",
                        worst <= limit,
                    )
                )
        hs, ha = fo.get("sync-hedge", []), fo.get("async-hedge", [])
        self.add(
            "",
            "Hedging: first provider's first token after 2 s, second's after 50 ms, `hedge_after=0.2`; time to the "
            f"first content chunk: sync median {ms(med(hs))} ms (max {ms(max(hs) if hs else math.nan)}), async "
            f"median {ms(med(ha))} ms (max {ms(max(ha) if ha else math.nan)}); {len(hs)} + {len(ha)} runs.",
            "",
        )
        worst = max(hs + ha) if hs + ha else math.nan
        self.targets.append(
            (
                "hedging: first token (slowest run)",
                f"{worst:.3f} s",
                "≤ 0.35 s",
                None if math.isnan(worst) else worst <= 0.35,
            )
        )

    def gateway(self) -> None:
        gw = self.d.get("gateway")
        if not gw:
            return
        self.add(
            "## Gateway (non-stream requests through it, vs the upstream asked directly)",
            "",
            "Load from one aiohttp client process (the fastest client here). *Added* = p50 through the gateway − p50 "
            "of the upstream asked directly, in alternating rounds. At concurrency 64 a gateway's single process is "
            "saturated, so its latency there is mostly queueing: read the req/s column.",
            "",
            "| gateway | concurrency 1: p50 / p99 (ms) | added p50 | concurrency 64: p50 / p99 (ms) | added p50 | "
            f"req/s at 64 | × direct | memory after {self.d['scale']['mem_small']:,} → {self.d['scale']['mem_big']:,} "
            "streamed |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        )
        d = gw.get("gateways") or {}
        first = next(iter(d.values()), None)
        if first and first.get("direct_c1"):
            dc1 = [x for r in d.values() for x in r.get("direct_c1", [])]
            dc64 = [x for r in d.values() for x in r.get("direct_c64", [])]
            dt = [x for r in d.values() for x in r.get("direct_tput", [])]
            self.add(
                f"| upstream directly (reference) | {ms(med(dc1))} / {ms(p99(dc1))} | – | {ms(med(dc64))} / "
                f"{ms(p99(dc64))} | – | {med(dt):.0f} | 1.00× | – |"
            )
        tputs: dict[str, float] = {}
        for label in ("polychat serve", "LiteLLM proxy", "g4f API"):
            if label in gw["errors"] and not gw["gateways"].get(label, {}).get("c1"):
                self.add(f"| {label} | could not run: {gw['errors'][label]} | | | | | | |")
                continue
            r = gw["gateways"].get(label)
            if not r:
                continue
            d1, d64 = med(r["direct_c1"]), med(r["direct_c64"])
            a1 = (med(r["c1"]) - d1,)
            a64 = (med(r["c64"]) - d64,)
            t, td = med(r["tput"]), med(r["direct_tput"])
            tputs[label] = t
            mem = r.get("memory")
            mem_s = "–"
            if mem:
                small, big = mem[str(self.d["scale"]["mem_small"])], mem[str(self.d["scale"]["mem_big"])]
                growth = big / small - 1
                mem_s = f"{small:.0f} → {big:.0f} MiB ({growth:+.1%})"
                sm, bg = self.d["scale"]["mem_small"], self.d["scale"]["mem_big"]
                self.targets.append(
                    (
                        f"gateway memory growth, {sm:,} → {bg:,} streamed requests",
                        f"{growth:+.1%}",
                        "≤ +10 %",
                        growth <= 0.10,
                    )
                )
            self.add(
                f"| {label} | {ms(med(r['c1']))} / {ms(p99(r['c1']))} | {ms(a1[0])} | {ms(med(r['c64']))} / "
                f"{ms(p99(r['c64']))} | {ms(a64[0])} | {t:.0f} | {ratio(t, td)} | {mem_s} |"
            )
            if label == "polychat serve":
                self.targets.append(
                    ("gateway added p50, concurrency 1", f"{a1[0] * 1000:.3f} ms", "≤ 1.5 ms", a1[0] <= 0.0015)
                )
            if label in gw["errors"]:
                self.notes.append(f"{label}: {gw['errors'][label]}")
        if "polychat serve" in tputs and "LiteLLM proxy" in tputs:
            p, ll = tputs["polychat serve"], tputs["LiteLLM proxy"]
            self.targets.append(("gateway throughput vs LiteLLM proxy", ratio(p, ll), "≥ 3×", p >= 3 * ll))
        self.add("")

    def local(self) -> None:
        loc = self.section("local", "## Local provider vs raw llama_cpp (from `bench/bench_local.py`)")
        if loc is None:
            return
        s = loc.get("settings", {})
        self.add(
            f"Same GGUF, same prompt, greedy, max_tokens={s.get('max_tokens')}, n_threads={s.get('n_threads')}; "
            f"{s.get('rounds')} interleaved rounds; identical answers: "
            f"{'yes' if loc.get('identical_answers') else 'no'}.",
            "",
            "| metric | polychat Local | raw llama_cpp | Local ÷ raw |",
            "|---|---:|---:|---:|",
        )
        for label, m in loc.get("medians", {}).items():
            self.add(f"| {label} | {m['local']:.1f} {m['unit']} | {m['raw']:.1f} {m['unit']} | {m['ratio']:.3f} |")
            if not 0.5 <= m["ratio"] <= 2:
                self.notes.append(
                    f"Local vs raw llama_cpp, {label}: a ratio of {m['ratio']:.2f} is far from 1; the raw side runs in "
                    "its own process and is sensitive to other llama.cpp processes on the machine (load "
                    f"{self.d['machine'].get('load_after', [0])[0]:.1f} at the end of this run): rerun "
                    "`bench/bench_local.py` on an idle machine before quoting it."
                )
        self.add("")

    def finish(self) -> str:
        body = self.lines
        self.lines = []
        if self.targets:
            self.add("## Targets", "", "| target | measured | limit | |", "|---|---:|---:|---|")
            for what, got, limit, ok in self.targets:
                self.add(f"| {what} | {got} | {limit} | {verdict(ok)} |")
            self.add("")
        head = self.lines
        notes = []
        if self.notes:
            notes = ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        return "\n".join(head_first(body) + head + body_rest(body) + notes)


def head_first(body: list[str]) -> list[str]:
    """The title block (up to the first section) comes before the targets."""
    for i, line in enumerate(body):
        if line.startswith("## "):
            return body[:i]
    return body


def body_rest(body: list[str]) -> list[str]:
    for i, line in enumerate(body):
        if line.startswith("## "):
            return body[i:]
    return []


def chart(data: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    lat = (data.get("latency") or {}).get("samples") or {}
    req = (data.get("throughput") or {}).get("req_per_s") or {}
    names = [n for n in LABELS if n in lat]
    if not names:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 1.3]})
    ax = axes[0]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [med(lat[name].get(k, [])) * 1000 for k, _ in KINDS]
        xs = [j + i * width for j in range(len(KINDS))]
        ax.bar(xs, [0 if math.isnan(v) else v for v in vals], width, label=LABELS[name].replace("`", "").strip("*"))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(KINDS))])
    ax.set_xticklabels([lbl for _, lbl in KINDS], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("p50 latency, ms (log)")
    ax.set_title("one request (lower is better)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    tn = [n for n in LABELS if req.get(n)]
    ax.barh([LABELS[n].replace("`", "").strip("*") for n in tn], [med(req[n]) for n in tn], color="tab:green")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("req/s")
    ax.set_title("async req/s, 100 in flight (higher: better)", fontsize=9)
    fig.suptitle(f"polychat bench {data['date'][:10]} — {data['machine']['cores']} cores, loopback", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def write_reports(data: dict[str, Any], out: Path) -> str:
    r = Report(data)
    r.header()
    r.imports()
    r.requests()
    r.failover()
    r.gateway()
    r.local()
    for name, err in (data.get("setup_errors") or {}).items():
        r.notes.append(f"{LABELS.get(name, name)} could not run: {err}")
    if data.get("imports", {}).get("errors"):
        for label, err in data["imports"]["errors"].items():
            r.notes.append(f"`{label}` failed: {err}")
    png = out.with_suffix(".png")
    if chart(data, png):
        r.notes.append(f"Chart: `{png.name}`; raw samples: `{out.with_suffix('.json').name}`.")
    md = r.finish()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md + "\n")
    slim = {k: v for k, v in data.items() if k != "local"} | {
        "local": {k: v for k, v in (data.get("local") or {}).items() if k != "stdout"}
    }
    out.with_suffix(".json").write_text(json.dumps(slim, indent=1) + "\n")
    return md


def main() -> None:
    """Re-render the table and chart from a saved run: ``python bench/report.py bench/results/latest.json``."""
    import sys

    src = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "results" / "latest.json")
    print(write_reports(json.loads(src.read_text()), src.with_suffix("")))


if __name__ == "__main__":
    main()
