"""docs/METHODS.md from the registered methods' own docstrings and options.

    python benchmarks/methods_page.py

Each ``Policy`` class holds what its method does (its docstring), its options with their
defaults and allowed values, and its defaults for the shared options: the page is written from
them, and a test holds the committed page to them.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from dataprune.policies import POLICIES, Option, Policy

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "METHODS.md"


def allowed(option: Option) -> str:
    if option.choices:
        return ", ".join(f"`{c}`" for c in option.choices)
    if isinstance(option.default, bool):
        return "True or False"
    if option.low is None and option.high is None:
        return "any" if option.cli else "a tensor (no flag)"
    return f"[{option.low}, {option.high}]".replace("None", "")


def section(policy: type[Policy]) -> str:
    doc = inspect.cleandoc(policy.__doc__ or "")
    lines = [f"## `{policy.name}`", "", doc, ""]
    defaults = [
        f"alpha {policy.default_alpha:g}",
        f"rescale {'on' if policy.default_rescale else 'off'}",
    ]
    if policy.anneal_fraction:
        defaults.append(f"the last {policy.anneal_fraction:.1%} of epochs on full data")
    lines += [f"Defaults: {', '.join(defaults)}.", ""]
    if policy.options:
        lines += ["| option | flag | default | allowed | what |", "|---|---|---|---|---|"]
        for name, option in policy.options.items():
            flag = f"`--{option.flag or name.replace('_', '-')}`" if option.cli else ""
            lines.append(
                f"| `{name}` | {flag} | `{option.default}` | {allowed(option)} | {option.help} |"
            )
        lines.append("")
    return "\n".join(lines)


def page() -> str:
    head = [
        "# Methods",
        "",
        "Every registered method, written from its `Policy` class by "
        "`python benchmarks/methods_page.py`. `prune` means the same for each: the fraction of "
        "the dataset left out of a pruned epoch. Which to use, measured: the README and "
        "[RESULTS.md](RESULTS.md).",
        "",
    ]
    return "\n".join(head + [section(policy) for policy in POLICIES.values()])


if __name__ == "__main__":
    PAGE.write_text(page())
    print(f"written to {PAGE}")
    sys.exit(0)
