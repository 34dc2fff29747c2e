"""Configuration keys: derive them from overrides, name them, and resolve a baseline."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from medsweep.report.errors import ReportError

DEFAULT_LABEL = "(default)"
# Splits "a=1,b=[1,2],c=x" on the commas that start a new "key=" pair, not those inside values.
_PAIR_SPLIT = re.compile(r",(?=[^,=\[\]{}()]+=)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_run_identity_key(key: str) -> bool:
    """Return True for override keys that name a fold or seed rather than a configuration."""
    return key.lstrip("+~") == "seed" or is_fold_index_key(key)


def is_fold_index_key(key: str) -> bool:
    """Return True for override keys that pick a fold index (``fold.index``, ``fold.idx`` ...)."""
    key = key.lstrip("+~")
    return key.startswith("fold.") and key.rsplit(".", 1)[-1] in {"index", "idx"}


def config_key_from_overrides(overrides: Mapping[str, Any]) -> str:
    """Build the configuration key: overrides minus fold index and seed, sorted, joined by ','."""
    pairs = [
        f"{key.lstrip('+~')}={format_override_value(value)}"
        for key, value in overrides.items()
        if not is_run_identity_key(key)
    ]
    return ",".join(sorted(pairs))


def format_override_value(value: Any) -> str:
    """Render an override value the way Hydra writes it on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def parse_overrides(lines: Iterable[str]) -> dict[str, str]:
    """Parse Hydra override strings (``key=value``) into a dict, dropping ``+``/``~`` prefixes."""
    parsed: dict[str, str] = {}
    for line in lines:
        key, sep, value = str(line).partition("=")
        if sep:
            parsed[key.strip().lstrip("+~")] = value.strip()
    return parsed


def split_config_key(key: str) -> dict[str, str]:
    """Split a configuration key (or a baseline spec) into its ``key=value`` pairs."""
    key = key.strip()
    if not key:
        return {}
    pairs: dict[str, str] = {}
    for part in _PAIR_SPLIT.split(key):
        name, sep, value = part.partition("=")
        pairs[name.strip().lstrip("+~")] = value.strip() if sep else ""
    return pairs


def display_name(config_key: str) -> str:
    """Return the label shown for a configuration (``(default)`` for the empty key)."""
    return config_key if config_key else DEFAULT_LABEL


def safe_names(config_keys: Sequence[str], max_len: int = 80) -> dict[str, str]:
    """Map each configuration key to a unique file-system-safe name."""
    names: dict[str, str] = {}
    used: set[str] = set()
    for key in config_keys:
        base = "default" if not key else _UNSAFE.sub("_", key.replace("=", "-").replace(",", "__"))
        base = base.strip("._") or "config"
        if len(base) > max_len:
            base = base[:max_len].rstrip("._-")
        name = base
        if name.lower() in used:
            name = f"{base}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
        used.add(name.lower())
        names[key] = name
    return names


def resolve_baseline(config_keys: Sequence[str], spec: str | None) -> str | None:
    """Return the baseline configuration key named by ``spec`` (a key or a unique override subset).

    Without ``spec`` the default configuration ``""`` is chosen when present, else the first one.
    """
    keys = list(dict.fromkeys(config_keys))
    if not keys:
        return None
    if spec is None:
        return "" if "" in keys else keys[0]
    spec = spec.strip()
    if spec in keys:
        return spec
    if spec.lower() in {DEFAULT_LABEL, "default"} and "" in keys:
        return ""
    wanted = split_config_key(spec)
    matches = [
        key
        for key in keys
        if wanted and all(split_config_key(key).get(k) == v for k, v in wanted.items())
    ]
    if len(matches) == 1:
        return matches[0]
    valid = ", ".join(repr(display_name(k)) if not k else repr(k) for k in keys)
    if not matches:
        raise ReportError(f"unknown baseline {spec!r}; configuration keys are: {valid}")
    found = ", ".join(repr(k) for k in matches)
    raise ReportError(
        f"baseline {spec!r} matches {len(matches)} configurations ({found}); "
        "give more overrides to pick one"
    )
