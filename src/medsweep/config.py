"""OmegaConf resolvers used by the configs in ``conf/``."""

from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """Register ``${env_missing:VAR}`` (true when an environment variable is unset); idempotent."""
    OmegaConf.register_new_resolver(
        "env_missing", lambda name: not os.environ.get(name), replace=True
    )
