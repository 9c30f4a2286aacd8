"""What a loaded model costs in memory: the bytes its weights take as held at run time, and, for a shipped
bundle, the peak resident memory and load time of a fresh process that loads it and labels one input.

Held bytes are counted, not sampled: a torch artifact's rebuilt module (a weight-only int4 artifact that
dequantizes at load holds fp32; ``dynamic_int8`` holds its packed int8 weights), an ONNX artifact's
initializers as stored (int8 and 4-bit weights stay packed in ONNX Runtime, which repacks them for its
kernels at about the same size). A process's peak RSS is measured (Linux: ``VmHWM``), interpreter included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import onnx
import torch

import runtime
from quantization.registry import Artifact, Runner

RUNTIME_ROOT = Path(runtime.__file__).resolve().parents[1]  # the folder that holds the runtime package


def held_bytes(runner: Runner, artifact: Artifact) -> int:
    """Bytes of the weights ``runner`` (loaded from ``artifact``) holds: its module's tensors, or the ONNX
    graph's initializers."""
    module = getattr(runner, "module", None)
    if isinstance(module, torch.nn.Module):
        return sum(t.numel() * t.element_size() for t in _tensors(module.state_dict().values()))
    if artifact.suffix == ".onnx":
        return onnx_held_bytes(artifact.data)
    return artifact.size_bytes


def onnx_held_bytes(data: bytes) -> int:
    """The initializers' bytes of an ONNX model (packed sub-byte tensors at their packed size)."""
    graph = onnx.load_from_string(data).graph
    return sum(len(onnx.numpy_helper.to_array(init).tobytes()) for init in graph.initializer)


def _tensors(values) -> Iterator[torch.Tensor]:
    """Every tensor in a state dict's values; quantized Linear layers keep theirs in tuples."""
    for value in values:
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (tuple, list)):
            yield from _tensors(value)


_FRESH_PROCESS = """
import time
start = time.perf_counter()
{load}
loaded = time.perf_counter()
{predict}
done = time.perf_counter()
import json, sys
try:  # this process's own high-water mark (getrusage's ru_maxrss also counts the parent it was forked from)
    status = open("/proc/self/status").read()
    peak = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) * 1024
except (OSError, StopIteration):
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "lightning", "sklearn", "pytorch_lightning"}})
print(json.dumps({{"import_load_s": loaded - start, "first_predict_s": done - loaded, "peak_rss_bytes": peak,
                   "heavy_modules": heavy}}))
"""


def fresh_process(load: str, predict: str, path: list[str] | None = None, timeout_s: float = 120) -> dict[str, Any]:
    """Run ``load`` then ``predict`` (Python statements) in a fresh interpreter; return ``import_load_s``
    (the imports and loading, interpreter start-up excluded), ``first_predict_s``, ``peak_rss_bytes`` (the
    whole process) and ``heavy_modules`` (which of torch, Lightning, scikit-learn it imported).

    Args:
        load: Statements that import and load the model (timed as "import + load").
        predict: Statements that label one input with it.
        path: Folders put first on the child's ``sys.path`` (e.g. the folder that holds ``runtime/``).
        timeout_s: The child's time limit.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(path or []), env.get("PYTHONPATH", "")]).strip(os.pathsep)
    code = _FRESH_PROCESS.format(load=textwrap.dedent(load).strip(), predict=textwrap.dedent(predict).strip())
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise RuntimeError(f"The fresh process failed (exit {done.returncode}): {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bundle_footprint(folder: str | os.PathLike, example: Any, num_threads: int = 1) -> dict[str, Any]:
    """Peak RSS and import + load time of a fresh process that loads the bundle and labels ``example`` (one raw
    text, or one ``(H, W)`` uint8 image): with the ``runtime`` package (numpy and ONNX Runtime only), or, for a
    torch artifact, with ``quantization.ship.bundle`` (torch); ``loader`` names which."""
    if isinstance(example, str):
        one = f"[{example!r}]"
    else:
        image = torch.as_tensor(example).to(torch.uint8)
        one = f"numpy.array({image.tolist()!r}, dtype=numpy.uint8)[None]"
    _, manifest = runtime.read_manifest(folder)
    loader = "runtime" if Path(manifest["artifact"]).suffix == ".onnx" else "quantization.ship.bundle"
    load = f"import numpy\nfrom {loader} import load_bundle\nbundle = load_bundle({str(folder)!r}, {num_threads})"
    return fresh_process(load, f"bundle.predict({one})", [str(RUNTIME_ROOT)]) | {"loader": loader}
