"""Does the embedded model answer sanely? The runaway evaluation of Local's defaults, before and after.

Run: ``.venv/bin/python bench/eval_local.py [--seeds 3] [--max-tokens 512] [--only after]``

``--only after`` re-runs one setting and keeps the other's answers from the last results file (judged again by the
current checks; the table says so) — the "before" answers depend only on the seeds and cost the most time.

25 everyday prompts (facts, greetings, counting, short writing, arithmetic, translation, a code question) x 3 seeds,
answered by the embedded SmolLM2-135M through ``Client(provider=Local())`` at its default temperature, under two
settings:

* before — what Local did until it had defaults of its own: the chat template's system prompt ("You are a helpful
  AI assistant named SmolLM, trained by Hugging Face"), llama-cpp-python's temperature 0.2 and ``repeat_penalty``
  1.0, reproduced here by sending them explicitly;
* after — Local's defaults, nothing sent but the question.

Each answer is capped at ``--max-tokens`` (512: what the CLI and the chat page send by default). An answer *runs
away* when it hits that cap or loops (some 4 words in a row occur 3 or more times). Reported per setting: runaways,
median and p95 answer tokens and seconds, how many checkable answers are right (a fact, a sum, a count... with an
expected word), and whether the README's question ("What is the capital of France?") got "Paris".

It is a figure, not a test: the machine's load moves the seconds (the load average is printed with them), the
token counts and verdicts do not depend on it. Answers go to ``bench/results/eval_local.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "eval_local.json"
README_QUESTION = "What is the capital of France?"
TEMPLATE_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def has(*words: str) -> Callable[[str], bool]:
    """Right when any of ``words`` appears (case-insensitive, as a word)."""
    patterns = [re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", re.IGNORECASE) for w in words]
    return lambda answer: any(p.search(answer) for p in patterns)


def counts_to(n: int) -> Callable[[str], bool]:
    """Right when the numbers, in the order they first appear, are 1..n ("1. 1\n2. 2" counts too)."""

    def check(answer: str) -> bool:
        numbers = list(dict.fromkeys(int(x) for x in re.findall(r"\d+", answer)))
        return numbers == list(range(1, n + 1))

    return check


def all_of(*words: str) -> Callable[[str], bool]:
    checks = [has(w) for w in words]
    return lambda answer: all(c(answer) for c in checks)


@dataclass(frozen=True)
class Prompt:
    kind: str
    text: str
    check: Callable[[str], bool] | None = None


PROMPTS = [
    Prompt("fact", README_QUESTION, has("Paris")),
    Prompt("fact", "What is the capital of Japan?", has("Tokyo")),
    Prompt("fact", "What is the capital of Italy?", has("Rome")),
    Prompt("fact", "Who wrote Romeo and Juliet?", has("Shakespeare")),
    Prompt("fact", "What is the largest planet in our solar system?", has("Jupiter")),
    Prompt("fact", "How many days are there in a week?", has("7", "seven")),
    Prompt("fact", "What is the boiling point of water in degrees Celsius?", has("100")),
    Prompt("fact", "What does HTML stand for?", has("HyperText Markup Language")),
    Prompt("greeting", "Hi!"),
    Prompt("greeting", "Good morning, how are you?"),
    Prompt("greeting", "Thank you for your help."),
    Prompt("counting", "Count to 5", counts_to(5)),
    Prompt("counting", "Count from 1 to 10.", counts_to(10)),
    Prompt(
        "counting",
        "List the days of the week.",
        all_of("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    ),
    Prompt("writing", "Write a haiku about the sea."),
    Prompt("writing", "Write one sentence about dogs."),
    Prompt("writing", "Give me three tips for sleeping better."),
    Prompt("arithmetic", "What is 2 + 2?", has("4", "four")),
    Prompt("arithmetic", "What is 7 times 8?", has("56")),
    Prompt("arithmetic", "What is 100 minus 37?", has("63")),
    Prompt("arithmetic", "What is half of 50?", has("25")),
    Prompt("translation", 'Translate "thank you" into French.', has("merci")),
    Prompt("translation", 'Translate "good morning" into Spanish.', has("buenos días", "buenos dias")),
    Prompt("translation", "Quelle est la capitale de l'Allemagne ?", has("Berlin")),
    Prompt("code", "How do I reverse a list in Python?", has("reverse", "reversed", "[::-1]")),
]

SETTINGS: dict[str, dict[str, Any]] = {
    "before": {
        "system": TEMPLATE_SYSTEM_PROMPT,
        "sampling": {"temperature": 0.2},
        "extra_body": {"repeat_penalty": 1.0},
    },
    "after": {"system": None, "sampling": {}, "extra_body": {}},
}


def loops(text: str, n: int = 4, times: int = 3) -> bool:
    words = text.split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= times


def run_one(client: Any, setting: dict[str, Any], prompt: Prompt, seed: int, max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt.text}]
    if setting["system"] is not None:
        messages.insert(0, {"role": "system", "content": setting["system"]})
    start = time.perf_counter()
    r = client.chat.completions.create(
        model="",
        messages=messages,
        max_tokens=max_tokens,
        seed=seed,
        extra_body=setting["extra_body"],
        **setting["sampling"],
    )
    seconds = time.perf_counter() - start
    answer = r.choices[0].message.content or ""
    capped = r.choices[0].finish_reason == "length"
    looped = loops(answer)
    return {
        "prompt": prompt.text,
        "kind": prompt.kind,
        "seed": seed,
        "answer": answer,
        "tokens": r.usage.completion_tokens,
        "seconds": seconds,
        "finish_reason": r.choices[0].finish_reason,
        "runaway": capped or looped,
        "looped": looped,
        "correct": prompt.check(answer) if prompt.check is not None else None,
    }


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    tokens = [r["tokens"] for r in runs]
    seconds = [r["seconds"] for r in runs]
    checked = [r for r in runs if r["correct"] is not None]
    readme = [r for r in runs if r["prompt"] == README_QUESTION]
    return {
        "runs": len(runs),
        "runaways": sum(r["runaway"] for r in runs),
        "capped": sum(r["finish_reason"] == "length" for r in runs),
        "looped": sum(r["looped"] for r in runs),
        "tokens_median": statistics.median(tokens),
        "tokens_p95": p95(tokens),
        "seconds_median": statistics.median(seconds),
        "seconds_p95": p95(seconds),
        "correct": sum(bool(r["correct"]) for r in checked),
        "checkable": len(checked),
        "readme_paris": sum(bool(r["correct"]) for r in readme),
        "readme_runs": len(readme),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--only", choices=sorted(SETTINGS), help="run one setting; keep the other's stored answers")
    args = ap.parse_args()
    stored: dict[str, list[dict[str, Any]]] = {}
    if args.only and RESULTS.exists():
        old = json.loads(RESULTS.read_text())
        checks = {p.text: p.check for p in PROMPTS}
        for name, runs in old["runs"].items():
            if name != args.only:
                for r in runs:  # judged again: the checks may have changed since
                    check = checks.get(r["prompt"])
                    r["correct"] = check(r["answer"]) if check is not None else None
                    r["looped"] = loops(r["answer"])
                    r["runaway"] = r["finish_reason"] == "length" or r["looped"]
                stored[name] = runs

    import polychat
    from polychat.providers import Local

    local = Local()
    client = polychat.Client(provider=local, max_retries=0)
    names = [args.only] if args.only else list(SETTINGS)
    client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}], max_tokens=1)  # load
    load_before = os.getloadavg()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    # interleaved, so a change in the machine's load hits both settings alike
    for seed in range(1, args.seeds + 1):
        for prompt in PROMPTS:
            for name in names:
                results[name].append(run_one(client, SETTINGS[name], prompt, seed, args.max_tokens))
    load_after = os.getloadavg()
    results = {name: stored.get(name) or results[name] for name in SETTINGS if name in results or name in stored}

    sums = {name: summary(runs) for name, runs in results.items()}
    print(
        f"\nLocal: {len(PROMPTS)} prompts x {args.seeds} seeds, max_tokens={args.max_tokens}, "
        f"n_threads={local.n_threads}, load average before/after {load_before[0]:.2f} / {load_after[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print("| setting | runaways | median tokens | p95 tokens | median s | p95 s | checkable right | README: Paris |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in sums.items():
        label = name + (" (stored answers)" if name in stored else "")
        print(
            f"| {label} | {s['runaways']} of {s['runs']} ({s['capped']} capped, {s['looped']} looping) "
            f"| {s['tokens_median']:.0f} | {s['tokens_p95']:.0f} | {s['seconds_median']:.2f} | {s['seconds_p95']:.2f} "
            f"| {s['correct']} of {s['checkable']} | {s['readme_paris']} of {s['readme_runs']} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": {"max_tokens": args.max_tokens, "seeds": args.seeds, "n_threads": local.n_threads},
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "summary": sums,
        "runs": results,
    }
    RESULTS.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    print(f"answers: {RESULTS}")


if __name__ == "__main__":
    main()
