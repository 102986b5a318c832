"""Helpers shared by the benchmarks: machine facts and the JSON result convention."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import mujoco
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "mujoco": mujoco.__version__, "processor": platform.processor()}


def emit(name: str, result: dict, quick: bool) -> None:
    """Print the result as the last line of stdout; a full run is also written to bench/results/<name>.json."""
    result = {"benchmark": name, "quick": quick, "machine": machine(), **result}
    if not quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
