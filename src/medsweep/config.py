"""OmegaConf resolvers used by the configs in ``conf/``."""

from __future__ import annotations

import logging
import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Register ``${env_missing:VAR}`` (true when an environment variable is unset); idempotent."""
    OmegaConf.register_new_resolver(
        "env_missing", lambda name: not os.environ.get(name), replace=True
    )


def route_library_logs() -> None:
    """Send Lightning's log records through the application's handlers only (no double lines)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True
