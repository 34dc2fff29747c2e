"""Configuration keys: split them, label them, name their files, and resolve a baseline."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from medsweep.report.errors import ReportError

DEFAULT_LABEL = "(default)"
COMMON_LABEL = "(common overrides only)"
# Splits "a=1,b=[1,2],c=x" on the commas that start a new "key=" pair, not those inside values.
_PAIR_SPLIT = re.compile(r",(?=[^,=\[\]{}()]+=)")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def is_fold_index_key(key: str) -> bool:
    """Return True for the override key that picks the fold index."""
    return key.lstrip("+~") == "fold.index"


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


def config_labels(config_keys: Sequence[str]) -> dict[str, str]:
    """Short labels: only the overrides that differ between configurations.

    A sweep's keys repeat the overrides every job shares (``model=... data.image_size=...``);
    those are shown once (see ``common_overrides``) and left out of each label.
    """
    keys = list(dict.fromkeys(config_keys))
    pairs = {key: split_config_key(key) for key in keys}
    names = list(dict.fromkeys(name for p in pairs.values() for name in p))
    varying = {
        name for name in names if len({p.get(name) for p in pairs.values()}) > 1 or len(keys) == 1
    }
    labels = {}
    for key in keys:
        shown = [f"{k}={v}" for k, v in pairs[key].items() if k in varying]
        labels[key] = ",".join(shown) if shown else display_name(key) if not key else COMMON_LABEL
    return labels


def common_overrides(config_keys: Sequence[str]) -> str:
    """The overrides every configuration shares (left out of the short labels)."""
    keys = list(dict.fromkeys(config_keys))
    if len(keys) < 2:
        return ""
    pairs = [split_config_key(key) for key in keys]
    first = pairs[0]
    return ",".join(f"{k}={v}" for k, v in first.items() if all(p.get(k) == v for p in pairs))


def label_of(config_key: str, labels: Mapping[str, str] | None) -> str:
    """The short label of a configuration, or its display name without labels."""
    return (labels or {}).get(config_key) or display_name(config_key)


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
