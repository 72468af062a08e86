"""Architecture: a lower layer never imports a higher one (DESIGN.md, 'Layers')."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mrtdose"

LAYER = {
    "quantities": 0, "errors": 0, "uncertainty": 0,
    "physics": 1,
    "kinetics": 2, "imaging": 2,
    "dose": 3,
    "clinical": 4,
    "workflow": 5,
    "records": 6,
    "reports": 7, "cli": 7, "api": 7, "web": 7, "batch": 7,
}


def _layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "mrtdose" or len(parts) < 2:
        return None
    return LAYER.get(parts[1])


def test_no_upward_imports():
    bad = []
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC).with_suffix("")
        own = LAYER.get(rel.parts[0])
        if own is None:
            continue
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods = [node.module]
            for m in mods:
                lv = _layer_of(m)
                if lv is not None and lv > own:
                    bad.append(f"{rel}: imports {m} (layer {lv} > {own})")
    assert not bad, "\n".join(bad)
