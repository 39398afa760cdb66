"""The package's layers (README "Layout"): stages never import each other, libraries never
import a stage, a layer imports only the layers above it, and there is no import cycle."""

from __future__ import annotations

from pathlib import Path

from trtflow.core import codehash

ROOT = Path(codehash.__file__).resolve().parents[1]
#: Top to bottom: a module may import its own layer and the layers above it.
LAYERS = ["core", "images", "tf", "onnx", "quant", "trt", "reporting", "stages"]


def _modules() -> list[str]:
    return sorted(
        ".".join(("trtflow", *p.relative_to(ROOT).with_suffix("").parts)).replace(".__init__", "")
        for p in ROOT.rglob("*.py")
    )


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_stages_import_libraries_only_and_libraries_never_a_stage():
    wrong = []
    for module in _modules():
        if module in ("trtflow.cli", "trtflow.__main__"):
            continue  # the CLI calls the stages
        for imported in codehash._imports(module):
            if _layer(imported) == "stages" and imported != "trtflow.stages":
                wrong.append((module, imported))
    assert not wrong, wrong


def test_each_layer_imports_only_the_layers_above_it():
    wrong = []
    for module in _modules():
        layer = _layer(module)
        if layer is None:
            continue
        for imported in codehash._imports(module):
            other = _layer(imported)
            if other is not None and LAYERS.index(other) > LAYERS.index(layer):
                wrong.append((module, imported))
    assert not wrong, wrong


def test_no_import_cycle():
    graph = {m: set(codehash._imports(m)) for m in _modules()}
    state: dict[str, int] = {}  # 1 on the path, 2 done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for nxt in sorted(graph.get(module, ())):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles
