"""The values of the data group's plain fields, importable without torch (the config check)."""

CACHE_MODES = ("auto", "memory", "disk", "none")  # data.cache
NORMALIZATIONS = ("auto", "model", "imagenet", "dataset", "half")  # data.normalization
