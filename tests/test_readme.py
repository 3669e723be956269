"""The README's Python example runs as written (so the documented API cannot drift)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch


def test_readme_python_example_runs() -> None:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {"print": lambda *args: None}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    # the toy flow moved samples towards the data mean, and the SO(3) flow converged onto its target
    assert torch.allclose(namespace["result"].final.mean(0), torch.tensor([2.0, 0.0]), atol=0.5)
    final_dist = namespace["so3"].dist(namespace["flow"].final, namespace["target"])
    assert final_dist.max() < math.pi * math.exp(-5) + 1e-3
