"""medsweep's Hydra launchers: ``local_gpus`` (a GPU pool on one machine) and ``ray`` (a thin
wrapper that names the missing extra). Hydra finds them in the ``hydra_plugins`` namespace."""
