"""A Lightning callback that records how the network ran (dtype, memory format, compiled)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lightning.pytorch import Callback


class NetworkProbe(Callback):
    """Writes ``path`` at the end of fit: the network's output dtypes and its inputs' memory
    formats in training, whether its conv weights are channels-last, and whether it is compiled."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.outputs: set[str] = set()
        self.inputs_nhwc: set[bool] = set()
        self.handle = None

    def on_train_start(self, trainer, pl_module) -> None:
        def hook(module, args, output) -> None:
            self.outputs.add(str(output.dtype))
            self.inputs_nhwc.add(args[0].is_contiguous(memory_format=torch.channels_last))

        self.handle = pl_module.model.register_forward_hook(hook)

    def on_train_end(self, trainer, pl_module) -> None:
        self.handle.remove()
        convs = [m.weight for m in pl_module.model.modules() if isinstance(m, torch.nn.Conv2d)]
        self.path.write_text(
            json.dumps(
                {
                    "outputs": sorted(self.outputs),
                    "inputs_nhwc": sorted(self.inputs_nhwc),
                    "weights_nhwc": [
                        w.is_contiguous(memory_format=torch.channels_last) for w in convs
                    ],
                    "param_dtypes": sorted({str(p.dtype) for p in pl_module.parameters()}),
                    "compiled": getattr(pl_module.model, "_compiled_call_impl", None) is not None,
                }
            )
        )
