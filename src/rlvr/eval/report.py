"""An evaluation's report: summary.json (every number), samples.jsonl (every sample), report.md and report.html."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path

from rlvr.eval.sample import Sample

METRIC_PREFIXES = ("avg@", "pass@", "maj@", "bo@")


def metric_keys(summary: dict) -> list[str]:
    return [key for key in summary if key.startswith(METRIC_PREFIXES)]


def _cell(metric: dict) -> str:
    low, high = metric["ci95"]
    return f"{metric['value']:.1%} [{low:.1%}, {high:.1%}]"


def markdown(summary: dict) -> str:
    """The headline table (overall and per subset), the compute spent, and the budget curve when there is one."""
    keys = metric_keys(summary)
    lines = [
        f"# Evaluation of {summary.get('model', 'a model')} on {summary.get('data', 'held-out data')}",
        "",
        f"{summary['questions']} questions x {summary['samples_per_question']} samples; 95% bootstrap intervals over questions.",
        "",
        "| subset | " + " | ".join(keys) + " |",
        "| --- | " + " | ".join("---" for _ in keys) + " |",
        "| all | " + " | ".join(_cell(summary[k]) for k in keys) + " |",
    ]
    for name, part in summary.get("subsets", {}).items():
        lines.append(f"| {name} | " + " | ".join(_cell(part[k]) if k in part else "" for k in keys) + " |")
    compute = summary["compute"]
    per_sample, per_question = compute["tokens_per_sample"], compute["tokens_per_question"]
    lines += [
        "",
        f"Tokens per sample: mean {per_sample['mean']:.1f}, median {per_sample['median']:.0f}, "
        f"p95 {per_sample['p95']:.0f}; per question: mean {per_question['mean']:.1f}; "
        f"{compute['tokens_per_second']:.0f} tokens/s over {compute['seconds']:.1f} s.",
    ]
    if "tools" in summary:
        tools = summary["tools"]
        rates = ", ".join(
            f"{key.removesuffix('/call_rate')} {value:.0%}" for key, value in tools.items() if key.endswith("/call_rate")
        )
        lines += [
            "",
            f"Tool use: called in {rates or 'no'} of samples; {tools['calls_per_episode']:.2f} calls and "
            f"{tools['turns']:.2f} turns per sample, {tools['error_rate']:.0%} of calls failed, "
            f"{tools['result_tokens']:.1f} tool-result tokens per sample (not counted as model tokens above).",
        ]
    if "hacking" in summary:
        lines += _hacking(summary["hacking"])
    if "judge" in summary:
        lines += _judge(summary["judge"])
    if "reasoning" in summary:
        lines += _reasoning(summary["reasoning"])
    if "difficulty" in summary:
        lines += _difficulty(summary["difficulty"])
    if "calibration" in summary:
        lines += _calibration(summary["calibration"])
    if "budgets" in summary:
        lines += ["", "| thinking budget | avg@n | thinking tokens (mean) | forced |", "| --- | --- | --- | --- |"]
        for row in summary["budgets"]:
            thinking = row["compute"]["thinking_tokens_per_sample"]["mean"]
            lines.append(f"| {row['budget']} | {_cell(row['avg@n'])} | {thinking:.1f} | {row['compute']['forced_rate']:.0%} |")
    if "efforts" in summary:
        lines += ["", "| stated effort | target thinking tokens | thinking tokens (mean) | of target | avg@n |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for row in summary["efforts"]:
            spent = row["reasoning"]["thinking_tokens"]
            share = f"{spent / row['target']:.0%}" if row["target"] else "-"
            lines.append(f"| {row['effort']} | {row['target']} | {spent:.1f} | {share} | {_cell(row['avg@n'])} |")
    for row in summary.get("overthinking", []):
        lines.append(
            f"\nOverthinking at budget {row['budget']}: on the {row['easy_questions']} questions solved at budget "
            f"{row['versus']}, {row['extra_thinking_tokens']:.1f} more thinking tokens per question "
            f"({row['share_of_thinking']:.0%} of the thinking at {row['budget']})."
        )
    return "\n".join(lines) + "\n"


def _difficulty(levels: list[dict]) -> list[str]:
    """Accuracy and tokens against difficulty: where thinking starts to pay, and where answers get cut off."""
    lines = ["", "## By difficulty", ""]
    lines += ["| difficulty | questions | avg@n | thinking tokens | answer tokens | wrong, finished | wrong, cut off |"]
    lines += ["| --- | --- | --- | --- | --- | --- | --- |"]
    for row in levels:
        lines.append(
            f"| {row['difficulty']:g} | {row['questions']} | {_cell(row['avg@n'])} | {row['thinking_tokens']:.1f} | "
            f"{row['answer_tokens']:.1f} | {row['wrong_finished_rate']:.1%} | {row['wrong_truncated_rate']:.1%} |"
        )
    return lines


def _calibration(calibration: dict) -> list[str]:
    """How far the stated confidences can be trusted: ECE, Brier score and the reliability table."""
    lines = ["", "## Calibration (stated confidence)", ""]
    lines.append(f"{calibration['stated_rate']:.1%} of answers stated a confidence ({calibration['answers']}).")
    if "ece" not in calibration:
        return lines
    lines += [
        f"Expected calibration error {calibration['ece']:.3f}, Brier score {calibration['brier']:.3f}; mean confidence "
        f"{calibration['mean_confidence']:.1%} against accuracy {calibration['accuracy']:.1%} on those answers.",
        "",
        "| confidence | answers | mean confidence | accuracy |",
        "| --- | --- | --- | --- |",
    ]
    for row in calibration["bins"]:
        low, high = row["range"]
        lines.append(f"| {low:.1f}-{high:.1f} | {row['answers']} | {row['confidence']:.1%} | {row['accuracy']:.1%} |")
    return lines


def _judge(judge: dict) -> list[str]:
    """The soft verifier's section: what the judge accepted, and its agreement with a hard verifier where one checked."""
    lines = ["", "## Judge (soft verifier)", "", f"The judge accepted {judge['accepted']:.1%} of {judge['judged']} answers."]
    if "checked" in judge:
        rows = [("agreement", "agreement"), ("false_positive_rate", "false positives (accepted, hard-wrong)")]
        rows += [("false_negative_rate", "false negatives (rejected, hard-right)"), ("kappa", "Cohen's kappa")]
        lines += ["", f"Against the hard verifier on {judge['checked']:.0f} answers both scored:", "", "| | |", "|---|---|"]
        lines += [f"| {label} | {judge[key]:.3f} |" for key, label in rows if key in judge]
    return lines


def _reasoning(reasoning: dict) -> list[str]:
    """How the answers reasoned (rlvr.reasoning_diagnostics): one table of rates and token means."""
    rows = [
        ("reflection_rate", "self-checking ('wait', 'let me verify', ...)", "{:.1%}"),
        ("language_mixing_rate", "more than one script", "{:.1%}"),
        ("thinking_tokens", "thinking tokens (mean)", "{:.1f}"),
        ("answer_tokens", "answer tokens (mean)", "{:.1f}"),
        ("wrong_finished_rate", "wrong, finished", "{:.1%}"),
        ("wrong_truncated_rate", "wrong, cut off at the token limit", "{:.1%}"),
    ]
    lines = ["", "## Reasoning", "", "| of the samples | |", "| --- | --- |"]
    return lines + [f"| {label} | {form.format(reasoning[key])} |" for key, label, form in rows if key in reasoning]


def _hacking(hacking: dict) -> list[str]:
    """The reward-hacking probes' section: each probe's flag rate, per subset when there are several, and a few
    flagged samples (the completion's start, on one line, so the markdown stays a list)."""
    subsets = hacking.get("subsets", {})
    lines = [
        "",
        "## Reward-hacking probes",
        "",
        f"Flagged by any probe: {hacking['rate']:.1%} of the samples the probes checked.",
        "",
        "| probe | rate | flagged / checked | " + " | ".join(subsets) + (" |" if subsets else ""),
        "| --- | --- | --- | " + " | ".join("---" for _ in subsets) + (" |" if subsets else ""),
    ]
    for name, probe in hacking["probes"].items():
        per_subset = [f"{part[name]['rate']:.1%}" if name in part else "" for part in subsets.values()]
        cells = [name, f"{probe['rate']:.1%}", f"{probe['flagged']} / {probe['checked']}", *per_subset]
        lines.append("| " + " | ".join(cells) + " |")
    if hacking["examples"]:
        lines += ["", "Flagged samples:", ""]
        for example in hacking["examples"]:
            start = " ".join(example["completion"].split())[:160].replace("`", "'")
            lines.append(f"- **{example['probe']}** ({example['subset']}, {example['id']}): {example['reason']}: `{start}`")
    return lines


def _finish(fig, ax, title: str, xlabel: str, ylabel: str, log2_x: bool = False) -> str:
    """Label the axes, encode the figure as a base64 PNG, free it."""
    import matplotlib.pyplot as plt

    if log2_x:
        ax.set_xscale("log", base=2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _error_bars(values: list[float], metrics: list[dict]) -> list[list[float]]:
    """matplotlib's asymmetric yerr from each metric's 95% interval."""
    return [[v - m["ci95"][0] for v, m in zip(values, metrics)], [m["ci95"][1] - v for v, m in zip(values, metrics)]]


def plots(summary: dict, samples: Sequence[Sample]) -> dict[str, str]:
    """Base64 PNGs: accuracy vs k, accuracy vs thinking budget, token histogram, per-subset bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures: dict[str, str] = {}
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for family in ("pass", "maj", "bo"):
        keys = sorted((int(k.split("@")[1]), k) for k in summary if k.startswith(f"{family}@"))
        if keys:
            values = [summary[key]["value"] for _, key in keys]
            errors = _error_bars(values, [summary[key] for _, key in keys])
            ax.errorbar([k for k, _ in keys], values, yerr=errors, marker="o", capsize=3, label=f"{family}@k")
    ax.axhline(summary["avg@n"]["value"], color="grey", ls="--", label="avg@n")
    figures["accuracy vs k"] = _finish(fig, ax, "accuracy vs k", "k", "accuracy", log2_x=True)

    if "budgets" in summary:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        rows = summary["budgets"]
        values = [row["avg@n"]["value"] for row in rows]
        ax.errorbar(
            [row["budget"] for row in rows],
            values,
            yerr=_error_bars(values, [row["avg@n"] for row in rows]),
            marker="o",
            capsize=3,
        )
        title = "accuracy vs thinking budget"
        figures[title] = _finish(fig, ax, title, "thinking budget (tokens)", "avg@n", log2_x=True)

    if "efforts" in summary:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        rows = summary["efforts"]
        labels, values = [row["effort"] for row in rows], [row["avg@n"]["value"] for row in rows]
        ax.errorbar(labels, values, yerr=_error_bars(values, [row["avg@n"] for row in rows]), marker="o", capsize=3)
        tokens = ax.twinx()
        tokens.plot(labels, [row["reasoning"]["thinking_tokens"] for row in rows], color="C1", marker="s", label="thinking")
        tokens.plot(labels, [row["target"] for row in rows], color="grey", ls="--", marker="_", label="target")
        tokens.set_ylabel("thinking tokens per sample")
        tokens.legend(fontsize="small", loc="upper left")
        title = "accuracy and thinking vs stated effort"
        figures[title] = _finish(fig, ax, title, "effort", "avg@n")

    if "difficulty" in summary:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        rows = summary["difficulty"]
        levels, values = [row["difficulty"] for row in rows], [row["avg@n"]["value"] for row in rows]
        ax.errorbar(levels, values, yerr=_error_bars(values, [row["avg@n"] for row in rows]), marker="o", capsize=3)
        tokens = ax.twinx()  # what the accuracy cost, on its own axis
        tokens.plot(levels, [row["thinking_tokens"] for row in rows], color="C1", marker="s", label="thinking tokens")
        tokens.plot(levels, [row["answer_tokens"] for row in rows], color="C2", marker="^", label="answer tokens")
        tokens.set_ylabel("tokens per sample")
        tokens.legend(fontsize="small", loc="upper right")
        title = "accuracy and tokens vs difficulty"
        figures[title] = _finish(fig, ax, title, "difficulty", "avg@n")

    if summary.get("calibration", {}).get("bins"):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        rows = summary["calibration"]["bins"]
        ax.plot([0, 1], [0, 1], color="grey", ls="--", label="calibrated")
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label="stated confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        figures["reliability"] = _finish(fig, ax, "reliability", "mean stated confidence", "accuracy")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist([s.tokens for s in samples], bins=30, alpha=0.7, label="all tokens")
    if any(s.thinking_tokens for s in samples):
        ax.hist([s.thinking_tokens for s in samples], bins=30, alpha=0.5, label="thinking")
    figures["tokens spent"] = _finish(fig, ax, "tokens spent", "tokens per sample", "samples")

    subsets = summary.get("subsets", {})
    if subsets:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        values = [part["avg@n"]["value"] for part in subsets.values()]
        ax.bar(list(subsets), values, yerr=_error_bars(values, [part["avg@n"] for part in subsets.values()]), capsize=4)
        figures["accuracy per subset"] = _finish(fig, ax, "accuracy per subset", "subset", "avg@n")
    return figures


def html(summary: dict, samples: Sequence[Sample]) -> str:
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(markdown(summary))
    images = "".join(
        f'<figure><img src="data:image/png;base64,{data}" alt="{title}"><figcaption>{title}</figcaption></figure>'
        for title, data in plots(summary, samples).items()
    )
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em}figure{display:inline-block;margin:.5em}"
    )
    head = f"<meta charset='utf-8'><title>rlvr eval</title><style>{style}</style>"
    return f"<!doctype html><html><head>{head}</head><body>{body}{images}</body></html>\n"


def write_report(out: Path, summary: dict, samples: Sequence[Sample]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "samples.jsonl").write_text("".join(json.dumps(s.to_dict()) + "\n" for s in samples))
    (out / "report.md").write_text(markdown(summary))
    (out / "report.html").write_text(html(summary, samples))
