"""Pre-flight check of a source before training: unusable files, labels, classes, duplicates, leaks.

Every sample is decoded once (results cached per file by path + size + mtime) and checked for:
a missing file, a file no format recognises, a truncated or otherwise unreadable file, a blank
image; the reader's rejected rows (no label, a label outside ``data.classes``, a repeated or
contradicting row) are added. Pixel-identical images form clusters: clusters with different
labels are mislabelled, clusters across predefined parts leak, and the others are merged into
the source's groups so that group-aware folds keep each cluster in one part. Classes left
empty, or with too few samples for the fold scheme, stop the run.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from medsweep.data.filecache import FileCache, cache_file, file_key
from medsweep.data.images import ImageReadError, content_hash, decode
from medsweep.data.sources import PARTS, ImageSource, close_names

log = logging.getLogger(__name__)

CACHE_KIND = "image-facts-v1"
LISTED = 100  # offending items kept in the summary (all are in the error message)


class DataCheckError(ValueError):
    """The data failed its pre-flight check; the message lists every offending item."""


def _facts_of_file(path: str) -> dict:
    try:
        return decode(path)[1]
    except ImageReadError as exc:
        return {"error": exc.reason, "detail": exc.detail}


def inspect_files(paths: list[str], cache: FileCache | None, workers: int = 0) -> list[dict]:
    """Facts of each file (size, mode, bits, pixel hash) or its error, using and filling ``cache``."""
    keys = {p: file_key(p) for p in dict.fromkeys(paths)}
    present = {p: k for p, k in keys.items() if k is not None}
    known = cache.get(CACHE_KIND, present) if cache else {}
    todo = [p for p in present if p not in known]
    if todo:
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                fresh = dict(zip(todo, pool.map(_facts_of_file, todo, chunksize=64)))
        else:
            fresh = {p: _facts_of_file(p) for p in todo}
        if cache:
            cache.put(CACHE_KIND, ((p, present[p], fresh[p]) for p in todo))
        known.update(fresh)
    missing = {"error": "missing file", "detail": "no such file"}
    return [known.get(p, missing) for p in paths]


def inspect_arrays(images: np.ndarray) -> list[dict]:
    """Facts of in-memory uint8 images (size, mode, pixel hash, blank)."""
    facts = []
    for image in images:
        facts.append(
            {
                "height": int(image.shape[0]),
                "width": int(image.shape[1]),
                "mode": "L" if image.ndim == 2 or image.shape[-1] == 1 else "RGB",
                "bits": 8,
                "hash": content_hash(image),
                "blank": bool(image.min() == image.max()),
            }
        )
    return facts


def min_per_class(splitter, source: ImageSource) -> int:
    """Fewest samples a class needs so that the fold scheme can place it in every part.

    A stratified hold-out needs 2 per class; a grouped one is cut as one fold of
    ``round(1 / fraction)`` and needs that many; k folds need k (plus the test hold-out's).
    """
    predefined = set() if source.predefined is None else set(np.unique(source.predefined))
    grouped = source.groups is not None

    def hold_out(fraction: float) -> int:
        if not fraction or fraction <= 0:
            return 1
        return max(2, round(1 / fraction)) if grouped else 2

    test_fraction = float(getattr(splitter, "test_fraction", 0.15) or 0)
    n_folds = int(getattr(splitter, "n_folds", 1) or 1)
    if n_folds > 1:
        if "test" in predefined:
            return n_folds
        return max(n_folds + 1, hold_out(test_fraction))
    val_fraction = float(getattr(splitter, "val_fraction", 0.15) or 0)
    if predefined:
        return 1 if "val" in predefined else hold_out(val_fraction)
    if not grouped:
        return 3
    return max(hold_out(test_fraction), hold_out(val_fraction / (1 - test_fraction)))


def _class_counts(source: ImageSource) -> np.ndarray:
    if source.labels.ndim == 2:
        return source.labels.sum(0).astype(np.int64)
    return np.bincount(source.labels, minlength=len(source.classes))


def _merge_groups(source: ImageSource, clusters: list[list[int]]) -> np.ndarray:
    """Source groups with every duplicate cluster joined into one group (union-find)."""
    base = (
        np.asarray(source.groups, dtype=str)
        if source.groups is not None
        else np.asarray([f"sample{i}" for i in range(len(source))])
    )
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            parent[g] = parent.get(parent[g], parent[g])
            g = parent[g]
        return g

    for members in clusters:
        roots = sorted({find(base[m]) for m in members})
        for r in roots[1:]:
            parent[r] = roots[0]
    return np.asarray([find(g) for g in base])


def _summary_of_images(facts: list[dict]) -> dict:
    good = [f for f in facts if "error" not in f]
    sizes = Counter(f"{f['width']}x{f['height']}" for f in good)
    return {
        "modes": dict(Counter(f["mode"] for f in good).most_common()),
        "bits": {str(k): v for k, v in Counter(f["bits"] for f in good).most_common()},
        "sizes": dict(sizes.most_common(10)),
        "n_sizes": len(sizes),
    }


def _format_problems(name: str, problems: list[dict], empty: list[str], policy: str) -> str:
    by_reason: dict[str, list[dict]] = defaultdict(list)
    for p in problems:
        by_reason[p["reason"]].append(p)
    lines = [f"data check of {name} failed (data.on_bad={policy}):"]
    for reason, items in by_reason.items():
        lines.append(f"  {reason} ({len(items)}):")
        lines += [f"    {p['item']}" + (f": {p['detail']}" if p["detail"] else "") for p in items]
    if empty:
        lines.append(f"  empty classes ({len(empty)}): {empty} have no usable sample")
    if problems:
        lines.append("Fix or remove these files, or set data.on_bad=skip to leave them out.")
    return "\n".join(lines)


def _suspect_labels(source: ImageSource, counts: np.ndarray) -> dict[int, str]:
    """Rare classes whose name is a near-copy of a far larger class's (label typos)."""
    suspects = {}
    for c, name in enumerate(source.classes):
        if not 0 < counts[c] < 20:
            continue
        larger = [o for i, o in enumerate(source.classes) if counts[i] >= 5 * counts[c]]
        hint = close_names(name, larger)
        if hint:
            suspects[c] = f"class {name!r} has only {counts[c]} sample(s){hint}"
    return suspects


def check_source(
    source: ImageSource,
    splitter=None,
    workers: int = 0,
    cache: FileCache | None = None,
) -> tuple[ImageSource, dict]:
    """Check ``source``; return the usable source (groups merged by duplicates) and a summary.

    With ``source.on_bad == "error"`` any problem raises :class:`DataCheckError` listing them
    all; with ``"skip"`` offending samples (and emptied classes) are dropped and counted. Too
    few samples per class for ``splitter`` always raises. Unless the class list was declared
    (``data.classes``), a rare class named like a far larger one is taken for a label typo.
    """
    start = time.perf_counter()
    policy = source.on_bad
    if source.paths is not None:
        if cache is None:
            cache = FileCache(cache_file(source.root))
        facts = inspect_files(source.paths, cache, workers)
    else:
        facts = inspect_arrays(source.images)
    bad: dict[int, tuple[str, str]] = {}
    for i, f in enumerate(facts):
        if "error" in f:
            bad[i] = (f["error"], f["detail"])
        elif f["blank"]:
            bad[i] = ("blank image", "every pixel has the same value")

    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        if i not in bad:
            by_hash[f["hash"]].append(i)
    clusters = [m for m in by_hash.values() if len(m) > 1]
    conflicting = cross_part = 0
    order = {p: k for k, p in enumerate(PARTS)}
    for members in clusters:
        names = [source.sample_name(m) for m in members]
        rows = source.labels[members]
        if len({r.tobytes() for r in np.asarray(rows)}) > 1:
            conflicting += len(members)
            labels = [_label_text(source, m) for m in members]
            for k, m in enumerate(members):
                others = [f"{n} ({lab})" for j, (n, lab) in enumerate(zip(names, labels)) if j != k]
                bad[m] = (
                    "conflicting labels",
                    f"labelled {labels[k]}, same pixels as {', '.join(others)}",
                )
        elif source.predefined is not None and len(set(source.predefined[members])) > 1:
            parts = source.predefined[members]
            first = min(parts, key=order.__getitem__)
            keeper = members[list(parts).index(first)]
            for m, part in zip(members, parts):
                if part != first:
                    cross_part += 1
                    bad[m] = (
                        "cross-part duplicate",
                        f"in {part}, same pixels as {source.sample_name(keeper)} in {first}",
                    )

    keep = np.asarray([i for i in range(len(source)) if i not in bad], dtype=np.int64)
    kept = source.subset(keep)
    counts = _class_counts(kept)
    if not source.declared and kept.labels.ndim == 1:
        for c, detail in _suspect_labels(kept, counts).items():
            for i in keep[kept.labels == c]:
                bad[int(i)] = ("suspect label", detail + "; declare data.classes to accept it")
        keep = np.asarray([i for i in range(len(source)) if i not in bad], dtype=np.int64)
        kept = source.subset(keep)
        counts = _class_counts(kept)
    empty = [c for c, n in zip(kept.classes, counts) if n == 0]
    problems = list(source.rejected) + [
        {"item": source.sample_name(i), "reason": r, "detail": d}
        for i, (r, d) in sorted(bad.items())
    ]
    if policy == "error" and (problems or empty):
        raise DataCheckError(_format_problems(source.name, problems, empty, policy))
    if empty:
        log.warning("%s: dropping empty classes %s (data.on_bad=skip)", source.name, empty)
        kept = kept.subset(np.arange(len(kept)), [c for c, n in zip(kept.classes, counts) if n > 0])
        counts = _class_counts(kept)
    if len(kept.classes) < 2:
        raise DataCheckError(
            f"{source.name}: {len(kept.classes)} usable class(es) {kept.classes}; a classifier needs 2"
        )

    kept_clusters = []
    position = {int(i): k for k, i in enumerate(keep)}
    for members in clusters:
        inside = [position[m] for m in members if m in position]
        if len(inside) > 1:
            kept_clusters.append(inside)
    if kept_clusters:
        kept.groups = _merge_groups(kept, kept_clusters)

    needed = min_per_class(splitter, kept)
    few = {c: int(n) for c, n in zip(kept.classes, counts) if n < needed}
    if few and kept.labels.ndim == 1:
        hints = "".join(
            f"\n  {c!r}: {n} sample(s)"
            + close_names(c, [o for o in kept.classes if o != c and o not in few])
            for c, n in few.items()
        )
        raise DataCheckError(
            f"{source.name}: the fold scheme ({type(splitter).__name__}, "
            f"n_folds={getattr(splitter, 'n_folds', 1)}) needs at least {needed} samples per "
            f"class; too few in:{hints}\nDeclare data.classes to reject stray labels, or "
            "fix the labels."
        )
    if few:
        log.warning("%s: labels with fewer than %d positives: %s", source.name, needed, few)

    dropped = Counter(p["reason"] for p in problems)
    if problems:
        log.warning(
            "%s: left out %d sample(s) (data.on_bad=skip): %s",
            source.name,
            len(problems),
            ", ".join(f"{n} {r}" for r, n in dropped.items()),
        )
        for p in problems:
            log.info("  left out %s: %s (%s)", p["item"], p["reason"], p["detail"])
    in_clusters = sum(len(m) for m in kept_clusters)
    summary = {
        "source": source.name,
        "policy": policy,
        "n_listed": len(source) + len(source.rejected),
        "n_kept": len(kept),
        "n_dropped": len(problems),
        "dropped": dict(dropped),
        "dropped_items": problems[:LISTED],
        "classes": {c: int(n) for c, n in zip(kept.classes, counts)},
        "empty_classes_dropped": empty,
        "min_per_class": needed,
        "duplicates": {
            "clusters": len(kept_clusters),
            "images": in_clusters,
            "cross_part": cross_part,
            "conflicting": conflicting,
        },
        "groups": None if kept.groups is None else int(len(np.unique(kept.groups))),
        "images": _summary_of_images([facts[i] for i in keep]),
        "cache": None
        if cache is None
        else {"file": str(cache.location), "hits": cache.hits, "misses": cache.misses},
        "seconds": round(time.perf_counter() - start, 3),
    }
    log.info(
        "data check %s: %d kept of %d, %d dropped, %d duplicate cluster(s) (%d images) "
        "kept together, classes %s (%.2f s)",
        source.name,
        summary["n_kept"],
        summary["n_listed"],
        summary["n_dropped"],
        len(kept_clusters),
        in_clusters,
        summary["classes"],
        summary["seconds"],
    )
    return kept, summary


def _label_text(source: ImageSource, index: int) -> str:
    label = source.labels[index]
    if np.ndim(label):
        return "{" + ", ".join(c for c, v in zip(source.classes, label) if v) + "}"
    return repr(source.classes[int(label)])
