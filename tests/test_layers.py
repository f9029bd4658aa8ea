"""The package's layers and the one direction of their imports (see trine/__init__.py).

Every module of the installed package is parsed (imports inside functions count too): a
module may import only from its own layer and the layers below it, and the contract and the
host never import the heavy tools. The rule is checked on the source, so an import that breaks
it fails here before anyone runs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import trine

#: Layer of each subpackage, and the trine layers it may import from (besides itself).
LAYERS = {
    "trine.contract": set(),
    "trine.hw": {"trine.contract"},
    "trine.flow": {"trine.contract", "trine.hw"},
    # the netlist and bitstream levels simulate what a board build (trine.flow) made
    "trine.sim": {"trine.contract", "trine.hw", "trine.flow"},
    "trine.host": {"trine.contract"},
    "trine.cli": {"trine.contract", "trine.hw", "trine.flow", "trine.sim", "trine.host"},
    "trine.demo": {"trine.contract", "trine.hw", "trine.flow", "trine.sim", "trine.host"},
}
#: Third-party packages a layer must never import, not even lazily.
FORBIDDEN = {
    "trine.contract": {"amaranth", "cocotb", "cocotb_tools", "serial", "sklearn", "onnx"},
    "trine.hw": {"cocotb", "cocotb_tools", "serial"},
    "trine.host": {"amaranth", "amaranth_boards", "cocotb", "cocotb_tools"},
}


def _package_files(package: str) -> dict[str, Path]:
    """Module name -> source file, for every module of ``package`` (a subpackage of trine)."""
    import importlib

    mod = importlib.import_module(package)
    root = Path(mod.__file__)
    if root.name != "__init__.py":
        return {package: root}
    return {
        package + "".join(f".{p}" for p in path.relative_to(root.parent).with_suffix("").parts)
        .removesuffix(".__init__"): path
        for path in sorted(root.parent.rglob("*.py"))
    }


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module
            found.append((node.lineno, name))
            # `from trine import hw` imports the subpackage trine.hw
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names
                      if name == "trine"]
    return found


def _layer(module: str) -> str | None:
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def violations(files: dict[str, Path]) -> list[str]:
    """Every import that runs against the direction of the layers, as readable lines."""
    bad = []
    for module, path in files.items():
        layer = _layer(module)
        if layer is None:
            continue
        allowed = LAYERS[layer] | {layer}
        for line, name in _imports(path, module):
            root = Path(trine.__file__).parent.parent
            shown = path.relative_to(root) if path.is_relative_to(root) else path.name
            where = f"{shown}:{line}"
            target = _layer(name)
            if name.split(".")[0] == "trine" and target is None and name not in (
                    "trine", "trine.contract.errors"):
                target = name
            if target is not None and target not in allowed:
                bad.append(f"{where}: {layer} imports {name}")
            top = name.split(".")[0]
            if top in FORBIDDEN.get(layer, ()):
                bad.append(f"{where}: {layer} imports {top}")
    return bad


def all_files() -> dict[str, Path]:
    files = {}
    for layer in LAYERS:
        files.update(_package_files(layer))
    return files


def test_every_module_belongs_to_a_layer():
    root = Path(trine.__file__).parent
    top = {p.stem if p.suffix else p.name for p in root.iterdir()
           if p.name != "__pycache__" and p.name != "__init__.py"}
    # hw/, sim/ and host/ live at the top of the repository and are mapped into the package
    assert top | {"hw", "sim", "host"} == {name.removeprefix("trine.") for name in LAYERS}


def test_imports_follow_the_layers():
    assert violations(all_files()) == []


def test_the_check_catches_an_import_against_the_direction(tmp_path):
    # A gateware module that imports the host, a contract module that imports Amaranth and a
    # host module that imports the simulation: each is reported.
    files = {}
    for module, text in {
        "trine.hw.bad": "from trine.host.program import Program\n",
        "trine.contract.bad": "def f():\n    import amaranth\n",
        "trine.host.bad": "from ..sim import serve\n",
        "trine.hw.good": "from trine.contract.spec import ACT_MAX\nfrom . import mac_array\n",
    }.items():
        path = tmp_path / f"{module}.py"
        path.write_text(text)
        files[module] = path
    found = [line.split(": ", 1)[1] for line in violations(files)]
    assert found == ["trine.hw imports trine.host.program", "trine.contract imports amaranth",
                     "trine.host imports trine.sim"]


@pytest.mark.parametrize("modules", ["trine.host.client, trine.host.program",
                                     "trine.host.qat, trine.host.evaluate, trine.host.onnx_import"])
def test_the_host_runs_without_amaranth_or_cocotb(modules):
    code = (f"import sys; import {modules}; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('amaranth', 'cocotb', 'cocotb_tools', 'amaranth_boards')); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_wheel_holds_the_trine_package_only(tmp_path):
    root = Path(trine.__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
                    str(root)], check=True, capture_output=True, timeout=600)
    import zipfile

    (wheel,) = tmp_path.glob("trine-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"trine", wheel.name.split("-py3")[0] + ".dist-info"}
    for layer in LAYERS:  # every layer is in it, hw/ sim/ host/ under trine/
        assert f"{layer.replace('.', '/')}{'.py' if layer == 'trine.demo' else '/__init__.py'}" \
            in names
