"""The composed run config checked against what the pipeline will build, before it builds it.

Every node the pipeline instantiates is compared with the signature of its ``_target_``: a key the
target does not take, a value that does not fit the target's annotation, or a required argument
nobody gives stops the run with one message per problem, naming the key, its group and where it
came from (a command-line override, a preset or grid file, or the option file). The pipeline's
own plain fields (``data.image_size``, ``scheduler.interval``, ...) are checked against
``PLAIN_FIELDS``.

Two explicit lists say what the pipeline adds to or takes from a node:

- ``PIPELINE_ARGS``: arguments the pipeline passes itself (the model gets ``num_classes`` and
  ``in_chans`` from the data); they need not be in the node, and a node that sets one is an error
  (the pipeline's value would replace it silently).
- ``PIPELINE_KEYS``: keys of a node that the pipeline reads and removes before it instantiates
  the node (``trainer.threads``); the target need not take them.
"""

from __future__ import annotations

import collections.abc as cabc
import difflib
import inspect
import os
import re
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from medsweep.data.options import CACHE_MODES, NORMALIZATIONS

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})

PIPELINE_ARGS: dict[str, frozenset[str]] = {
    "model": frozenset({"num_classes", "in_chans"}),
    "loss": frozenset({"task"}),  # and the balance option's weight / pos_weight, when it asks
    "optimizer": frozenset({"params"}),  # a partial, called with the parameter groups
    "scheduler.scheduler": frozenset({"optimizer"}),  # a partial, called with the optimizer
    "trainer": frozenset({"callbacks", "logger", "default_root_dir"}),
    "augmentation.batch_transform": frozenset({"task", "num_classes"}),
}
PIPELINE_KEYS: dict[str, frozenset[str]] = {
    # torch threads of the run, set before the Trainer is built; the module's memory format and
    # torch.compile
    "trainer": frozenset({"threads", "channels_last", "compile", "keep_freed_memory"}),
    "finetune.policy": frozenset({"freeze_bn"}),  # BatchNorm handling of the policy
}
TASKS = (None, "binary", "multiclass", "multilabel")


def _positive_int(value: object) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    return None if ok else "must be a positive integer"


def _non_negative_int(value: object) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be an integer >= 0"


def _non_negative_number(value: object) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a number >= 0"


def _one_of(*choices: object) -> Callable[[object], str | None]:
    return lambda value: None if value in choices else f"must be one of {list(choices)}"


def _type(*kinds: type) -> Callable[[object], str | None]:
    names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
    return lambda value: (
        None
        if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        else f"must be {names}"
    )


def _ops(value: object) -> str | None:
    return None if value is None or isinstance(value, list) else "must be a list of ops"


# the plain fields of a node, each with its check (None: a node checked on its own)
PLAIN_FIELDS: dict[str, dict[str, Callable[[object], str | None] | None]] = {
    "": {
        "task": _one_of(*TASKS),
        "seed": _type(int),
        "monitor": _type(str),
        "monitor_mode": _one_of("min", "max"),
    },
    "data": {
        "source": None,
        "image_size": _positive_int,
        "channels": _one_of(1, 3),
        "normalization": _one_of(*NORMALIZATIONS),
        "batch_size": _positive_int,
        # the loaders (none of these changes a result)
        "num_workers": lambda v: (
            None if v == "auto" else _non_negative_int(v) and "must be an integer >= 0 or auto"
        ),
        "persistent_workers": _type(bool),
        "pin_memory": lambda v: (
            None if v == "auto" else _type(bool)(v) and "must be true, false or auto"
        ),
        "prefetch_factor": _positive_int,
        "cache": _one_of(*CACHE_MODES),  # the decoded-image cache
        "on_bad": _type(str),  # the sources' handling of unreadable samples
        "classes": _type(list, type(None)),  # the declared class list
    },
    "scheduler": {
        "scheduler": None,
        "interval": _one_of("epoch", "step"),
        "monitor": _type(str, type(None)),
    },
    "finetune": {"policy": None, "backbone_lr_scale": _non_negative_number},
    "augmentation": {"albumentations": _ops, "monai": _ops, "batch_transform": None},
}


# the values of PIPELINE_KEYS (the rest of those nodes is checked against the target's signature)
PIPELINE_KEY_CHECKS: dict[str, Callable[[object], str | None]] = {
    "trainer.threads": lambda v: None if v is None else _positive_int(v),
    "trainer.channels_last": _type(bool),
    "trainer.compile": _type(bool, dict),  # false, true, or torch.compile's keyword arguments
    "trainer.keep_freed_memory": _type(bool),  # glibc's thresholds, see medsweep/allocator.py
}


class ConfigError(ValueError):
    """The composed config does not fit what the pipeline will build from it."""


def check_config(cfg: DictConfig) -> None:
    """Check every node the pipeline will instantiate, and its plain fields; raise ``ConfigError``."""
    _raise(cfg, list(_problems(cfg)))


def check_fields(cfg: DictConfig) -> None:
    """Check the plain fields only (``PLAIN_FIELDS``, ``PIPELINE_KEY_CHECKS``); raise ``ConfigError``.

    Imports no target (no torch): ``train.py`` runs it before it imports the pipeline, so a wrong
    plain value is answered in about a second; ``check_config`` checks the nodes after.
    """
    _raise(cfg, list(_plain_problems(cfg)))


def _raise(cfg: DictConfig, problems: list[tuple[str, str]]) -> None:
    if not problems:
        return
    where = _Provenance(cfg)
    lines = [
        f"  {text if text.startswith(f'{path}=') else f'{path}: {text}'} ({where.describe(path)})"
        for path, text in problems
    ]
    raise ConfigError("the config does not fit what it builds:\n" + "\n".join(lines))


def instantiated_nodes(cfg: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """``(path, node)`` of every node the pipeline instantiates, in the order it builds them."""
    for path in ("data.source", "balance", "fold"):
        yield from _node(cfg, path)
    augmentation = cfg.get("augmentation") or {}
    for kind in ("albumentations", "monai"):
        ops = augmentation.get(kind) if isinstance(augmentation, DictConfig) else None
        if isinstance(ops, ListConfig):
            for i, op in enumerate(ops):
                yield f"augmentation.{kind}[{i}]", op
    for path in ("model", "loss", "optimizer", "scheduler.scheduler"):
        yield from _node(cfg, path)
    yield from _node(cfg, "augmentation.batch_transform")
    for group in ("callbacks", "logger"):
        entries = cfg.get(group)
        if isinstance(entries, DictConfig):
            for key in entries:
                yield from _node(cfg, f"{group}.{key}")
    yield from _node(cfg, "finetune.policy")
    yield from _node(cfg, "trainer")


def _node(cfg: DictConfig, path: str) -> Iterator[tuple[str, DictConfig]]:
    node = OmegaConf.select(cfg, path, default=None, throw_on_missing=False)
    if node is not None:
        yield path, node


def _problems(cfg: DictConfig) -> Iterator[tuple[str, str]]:
    yield from _plain_problems(cfg)
    for path, node in instantiated_nodes(cfg):
        yield from _node_problems(path, node)


def _plain_problems(cfg: DictConfig) -> Iterator[tuple[str, str]]:
    for group, fields in PLAIN_FIELDS.items():
        node = cfg if not group else cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        prefix = f"{group}." if group else ""
        if group:  # the top level also holds the groups and train.yaml's own keys
            for key in node:
                if key not in fields:
                    yield f"{prefix}{key}", _unknown(key, sorted(fields), f"the {group} group")
        for key, check in fields.items():
            if check is None or key not in node:
                continue
            ok, value = _value(node, key)
            if ok and (error := check(value)):
                yield f"{prefix}{key}", f"{prefix}{key}={value!r} {error}"
    for path, check in PIPELINE_KEY_CHECKS.items():
        group, key = path.rsplit(".", 1)
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or key not in node:
            continue
        ok, value = _value(node, key)
        if ok and (error := check(value)):
            yield path, f"{path}={value!r} {error}"


def _node_problems(path: str, node: object) -> Iterator[tuple[str, str]]:
    if not isinstance(node, DictConfig):
        yield path, f"must be a config node with a _target_, not {_plain(node)!r}"
        return
    if "_target_" not in node:
        keys = sorted(str(k) for k in node)
        yield path, f"has no _target_ (keys {keys}): nothing would build it"
        return
    name = node._target_
    try:
        target = get_object(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported with the key
        yield f"{path}._target_", f"{name!r} cannot be imported: {exc}"
        return
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the target itself will check its arguments
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    provided = PIPELINE_ARGS.get(path, frozenset())
    consumed = PIPELINE_KEYS.get(path, frozenset())
    hints = _hints(target)
    keys = [str(k) for k in node if k not in HYDRA_KEYS]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    valid = [k for k, p in params.items() if k not in provided and p.kind not in variadic]
    passed_on = KWARGS_CHECKS.get(f"{target.__module__}.{target.__qualname__}")
    if takes_any and passed_on is not None:
        extra = [k for k in keys if k not in params and k not in consumed and k not in provided]
        for key, receiver in passed_on(node, extra).items():
            yield f"{path}.{key}", _unknown(key, valid, f"{name} (or {receiver})")
    for key in keys:
        if key in provided:
            yield f"{path}.{key}", f"is set by the pipeline for {name}; remove it"
        elif key not in params and key not in consumed and not takes_any:
            yield f"{path}.{key}", _unknown(key, valid, name)
        elif key in params and key in hints:
            ok, value = _value(node, key)
            if ok and _fits(value, hints[key], params[key].default) is False:
                yield (
                    f"{path}.{key}",
                    f"{value!r} ({type(value).__name__}) does not fit {name}'s "
                    f"{key}: {_type_name(hints[key])}",
                )
    if "_args_" in node:
        return
    for key, param in params.items():
        required = param.default is inspect.Parameter.empty and param.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if required and key not in keys and key not in provided:
            yield f"{path}.{key}", f"is required by {name} and not set"


def _timm_kwargs(node: DictConfig, extra: list[str]) -> dict[str, str]:
    """The keys among ``extra`` that the timm architecture ``node.name`` does not take.

    ``timm_classifier`` passes unknown keys on to ``timm.create_model``; the architecture is
    built on the meta device (no memory, no weights) to see which of them its class rejects.
    """
    if not extra:
        return {}
    import timm
    import torch

    ok, name = _value(node, "name")
    if not ok or not isinstance(name, str) or not timm.is_model(name):
        return {}  # timm_classifier names close matches for a wrong name itself
    kwargs = {k: _value(node, k)[1] for k in extra}
    rejected: dict[str, str] = {}
    while kwargs:
        try:
            with torch.device("meta"):
                timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        except TypeError as exc:
            found = re.search(
                r"(\w+(?:\.__init__)?)\(\) got an unexpected keyword argument '(\w+)'", str(exc)
            )
            if not found or found.group(2) not in kwargs:
                break
            rejected[found.group(2)] = f"timm's {name}: {found.group(1)}"
            kwargs.pop(found.group(2))
        except Exception:  # noqa: BLE001 - other failures are the builder's to report
            break
        else:
            break
    return rejected


# targets that take **kwargs and pass them on: which of the extra keys the receiver rejects
KWARGS_CHECKS: dict[str, Callable[[DictConfig, list[str]], dict[str, str]]] = {
    "medsweep.models.factory.timm_classifier": _timm_kwargs,
}


def _unknown(key: str, valid: list[str], owner: str) -> str:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown key: {owner} takes {', '.join(valid) or 'no keys'}{hint}"


def _value(node: DictConfig, key: str) -> tuple[bool, object]:
    """The resolved value of ``node[key]`` as plain Python; (False, None) if it cannot be resolved yet."""
    try:
        value = node[key]
    except Exception:  # noqa: BLE001 - missing (???) or unresolvable here: the builder reports it
        return False, None
    return True, _plain(value)


def _plain(value: object) -> object:
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except Exception:  # noqa: BLE001
            return OmegaConf.to_container(value, resolve=False)
    return value


def _hints(target: Callable) -> dict[str, object]:
    function = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(inspect.unwrap(function))
    except Exception:  # noqa: BLE001 - unresolvable annotations: no type checks for this target
        return {}


_SEQUENCES = (list, tuple, cabc.Sequence, cabc.MutableSequence, cabc.Iterable, cabc.Collection)
_MAPPINGS = (dict, cabc.Mapping, cabc.MutableMapping)


def _fits(value: object, annotation: object, default: object = None) -> bool | None:
    """Whether a config value fits an annotation: True, False, or None when it cannot be told."""
    if annotation is typing.Any or annotation is object:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _fits(value, args[0], default)
    if origin in (typing.Union, types.UnionType):
        results = [_fits(value, a, default) for a in args]
        return True if True in results else (None if None in results else False)
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return True
        # an enum member in the literal may be given by its value: cannot be told here
        return None if any(not isinstance(a, (str, int, float, bool)) for a in args) else False
    if value is None:
        return None if default is None else False  # ``x: int = None`` means optional
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if isinstance(annotation, type) and issubclass(annotation, (PurePath, os.PathLike)):
        return isinstance(value, str)
    if _is_tensor(annotation):  # a config value becomes a tensor from numbers only
        return isinstance(value, (int, float, list)) and not isinstance(value, bool)
    base = origin or annotation
    if base in _MAPPINGS:
        return isinstance(value, dict)
    if base in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False if isinstance(value, (str, int, float, bool, dict)) else None
        if base is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False
            results = [_fits(v, a) for v, a in zip(value, args)]
        else:
            results = [_fits(v, args[0]) for v in value] if args else []
        return False if False in results else (None if None in results else True)
    return None


def _is_tensor(annotation: object) -> bool:
    return getattr(annotation, "__module__", "") == "torch" and getattr(
        annotation, "__name__", ""
    ) in ("Tensor",)


def _type_name(annotation: object) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return re.sub(r"\b(typing|collections\.abc|torch)\.", "", text).replace("NoneType", "None")


class _Provenance:
    """Where a key of the composed config was set: an override, a preset or grid, or an option file."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.overrides, self.choices, self.conf_dir = _context(cfg)

    def describe(self, path: str) -> str:
        """``group <g>, set by <source>`` for a key path such as ``optimizer.lrr``."""
        head = re.split(r"[.\[]", path, maxsplit=1)[0]
        group = head if head != path and (self.conf_dir / head).is_dir() else ""
        where = f"group {group}" if group else "conf/train.yaml's own keys"
        return f"{where}, set by {self.source(path, group)}"

    def source(self, path: str, group: str) -> str:
        """The override, preset/grid file or option file that set ``path``."""
        key = _dotted(path)
        for override in reversed(self.overrides):  # the last one wins
            name = _dotted(override.split("=", 1)[0].lstrip("~+"))
            inside = key.startswith(f"{name}.") and name not in self.choices
            if name == key or inside or name.startswith(f"{key}."):
                return f"the override {override!r}"
        for file in self._preset_files():
            body = OmegaConf.load(file)
            if _has(body, path):
                return str(file.relative_to(self.conf_dir.parent))
        option = self.choices.get(group)
        if group and option:
            relative = path[len(group) + 1 :]
            file = self._option_file(group, option, relative)
            return str(file.relative_to(self.conf_dir.parent))
        return "conf/train.yaml" if not group else f"the {group} group"

    def _preset_files(self) -> list[Path]:
        files: list[Path] = []
        if self.choices.get("sweep"):
            files.append(self.conf_dir / "sweep" / f"{self.choices['sweep']}.yaml")
        pending = [self.choices.get("experiment")]
        while pending and pending[0]:
            name = pending.pop(0)
            file = self.conf_dir / "experiment" / f"{name}.yaml"
            if not file.is_file():
                break
            files.append(file)
            for entry in OmegaConf.load(file).get("defaults") or []:
                if isinstance(entry, str) and entry.startswith("/experiment/"):
                    pending.append(entry.removeprefix("/experiment/"))
        return [f for f in files if f.is_file()]

    def _option_file(self, group: str, option: str, relative: str) -> Path:
        file = self.conf_dir / group / f"{option}.yaml"
        if not file.is_file():
            return file
        body = OmegaConf.load(file)
        if _has(body, relative):
            return file
        for entry in body.get("defaults") or []:
            if isinstance(entry, str) and entry != "_self_" and not entry.startswith("/"):
                parent = self._option_file(group, entry, relative)
                if parent.is_file() and _has(OmegaConf.load(parent), relative):
                    return parent
        return file


def _dotted(path: str) -> str:
    return re.sub(r"\[(\d+)\]", r".\1", path)


def _has(body: DictConfig, path: str) -> bool:
    body = OmegaConf.masked_copy(body, [k for k in body if k not in ("defaults", "hydra")])
    missing = object()
    try:
        return OmegaConf.select(body, path, default=missing, throw_on_missing=False) is not missing
    except Exception:  # noqa: BLE001 - a path that does not exist in this file's shape
        return False


def _context(cfg: DictConfig) -> tuple[list[str], dict[str, str], Path]:
    """The run's overrides, its group choices and the config folder.

    From ``cfg.overrides`` (``pipeline.compose_config``) outside Hydra, whose choices come from
    composing again with the Hydra node, or from ``HydraConfig`` inside a Hydra app.
    """
    from hydra.core.hydra_config import HydraConfig

    default_dir = Path(__file__).resolve().parents[2] / "conf"
    if "overrides" in cfg:
        overrides = [str(o) for o in cfg.overrides or []]
        return overrides, _choices_outside_hydra(overrides, default_dir), default_dir
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        conf_dir = default_dir
        for source in hydra_cfg.runtime.config_sources:
            if source.provider == "main" and source.schema == "file":
                conf_dir = Path(source.path)
        choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if v is not None}
        return list(hydra_cfg.overrides.task), choices, conf_dir
    return [], {}, default_dir


def _choices_outside_hydra(overrides: list[str], conf_dir: Path) -> dict[str, str]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized() or not conf_dir.is_dir():
        return {}
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            composed = compose("train", overrides=overrides, return_hydra_config=True)
        choices = composed.hydra.runtime.choices
        return {str(k): str(v) for k, v in choices.items() if v is not None}
    except Exception:  # noqa: BLE001 - the message then names the group without the option
        return {}
