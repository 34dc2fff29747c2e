"""OmegaConf resolvers used by the configs in ``conf/``, and the console's library-noise filters."""

from __future__ import annotations

import logging
import os
import warnings

from omegaconf import OmegaConf

from medsweep.results import job_dir_name


def register_resolvers() -> None:
    """Register ``${env_missing:VAR}`` (true when a variable is unset) and ``${job_dir:...}``; idempotent."""
    OmegaConf.register_new_resolver(
        "env_missing", lambda name: not os.environ.get(name), replace=True
    )
    OmegaConf.register_new_resolver("job_dir", job_dir_name, replace=True)


def route_library_logs() -> None:
    """Send Lightning's log records through the application's handlers only (no double lines)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


# what Lightning logs that a run's console does not need (the start of each message)
_QUIET_LOGGER = "lightning.pytorch.utilities.rank_zero"
_QUIET_PREFIXES = (
    "💡 Tip:",  # advertisements for Lightning's cloud products
    # accelerators neither present nor used ("GPU available but not used" still shows)
    "GPU available: False, used: False",
    "TPU available: False",
)
# library warnings that say nothing about the run's config: (category name, message regex)
_QUIET_WARNINGS = (
    # Lightning's pytree helper still uses a name torch deprecates
    ("FutureWarning", r"`isinstance\(treespec, LeafSpec\)` is deprecated"),
    # the module logs per epoch only, so the step interval cannot hide a metric
    (
        "PossibleUserWarning",
        r"The number of training batches \(\d+\) is smaller than the logging interval",
    ),
)


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of ``prefixes``."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


def quiet_library_noise() -> None:
    """Silence library adverts and deprecation notices (not warnings about the config); idempotent."""
    from lightning.fabric.utilities.warnings import PossibleUserWarning

    categories = {"FutureWarning": FutureWarning, "PossibleUserWarning": PossibleUserWarning}
    for category, message in _QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=categories[category])
    logger = logging.getLogger(_QUIET_LOGGER)
    for old in [f for f in logger.filters if isinstance(f, _DropMessages)]:
        logger.removeFilter(old)
    logger.addFilter(_DropMessages(_QUIET_PREFIXES))
