"""The layout's promises: no import circles, a light CLI, short report functions, registries that resolve."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import hypermeta
from hypermeta.engine.runner import RUNNERS, Runner, get_runner
from hypermeta.meta.method import METHODS, Method, get_method

PACKAGE = Path(hypermeta.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """hypermeta module -> hypermeta modules it imports anywhere (top level or inside functions), except
    under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name and not path.name == "__init__.py"}
    return graph


def test_no_import_circles():
    graph = _import_graph()
    assert len(graph) > 20
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                pytest.fail("import circle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [])


#: The layers, lowest first: a module may import its own layer and those below, never one above.
LAYERS = ("core", "engine", "search", "lab", "reports", "cli")


def _layer(module: str) -> str:
    part = module.split(".")[1] if module.count(".") >= 1 else ""
    return part if part in LAYERS else "core"  # hypermeta's top-level modules, tasks and meta


def test_data_flows_one_way():
    """lab -> search -> engine -> core (the reports render the lab's data; the CLI sits on top)."""
    graph = _import_graph()
    for module, deps in graph.items():
        above = {d for d in deps if LAYERS.index(_layer(d)) > LAYERS.index(_layer(module))}
        assert not above, f"{module} ({_layer(module)}) imports {sorted(above)} from above it"


def test_every_folder_has_a_docstring_saying_what_lives_there():
    import ast as _ast

    for init in PACKAGE.rglob("__init__.py"):
        assert _ast.get_docstring(_ast.parse(init.read_text())), f"{init} has no docstring"


@pytest.mark.parametrize("argv", [["--help"], ["families"], ["space"], ["meta-train", "--help"]])
def test_light_commands_import_neither_torch_nor_sb3(argv):
    code = ("import sys; from hypermeta.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print('\\n' + __import__('json').dumps(sorted(m for m in ('torch', 'stable_baselines3', 'optuna') "
            "if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == []


def test_report_and_cli_functions_are_short():
    for path in [*(PACKAGE / "reports").glob("*.py"), *(PACKAGE / "cli").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path.name}:{node.lineno} {node.name} has {length} lines"


def _docs() -> str:
    """The README and the documentation site's pages, which hold the guides and the command table."""
    root = PACKAGE.parent
    return "\n".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))])


def test_public_api_resolves_and_holds_what_the_readme_documents():
    for name in hypermeta.__all__:
        assert getattr(hypermeta, name) is not None
    readme = _docs()
    for name in ("HyperMetaCallback", "DQNConfig", "MetaModel", "OutOfDistributionWarning", "predict_config",
                 "probe_features", "make_env", "Runner"):
        assert name in hypermeta.__all__ and name in readme
    with pytest.raises(AttributeError, match="no attribute 'PARAMS'"):
        hypermeta.PARAMS  # internals stay internal  # noqa: B018


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_registered_method_resolves_to_its_class(name):
    cls = get_method(name)
    assert issubclass(cls, Method) and cls.name == name


def test_every_registered_runner_resolves():
    from hypermeta.engine import defaults

    assert tuple(RUNNERS) == defaults.RUNNERS  # the CLI's cheap list of names is the registry's
    for name in RUNNERS:
        runner = get_runner(name)
        assert isinstance(runner, Runner) and runner.name == name
    with pytest.raises(ValueError, match="unknown runner 'gpu'"):
        get_runner("gpu")


def test_run_many_stops_its_processes_when_the_caller_stops(tmp_path, monkeypatch):
    """Ctrl-C, SIGTERM or an error while runs are read must not wait for every submitted run (a pool's own exit
    does: hours of test runs whose results are thrown away)."""
    import time

    from conftest import MarkerRunner
    from hypermeta.engine.measurement import Measurement
    from hypermeta.engine.runner import Job
    from hypermeta.space import DQNConfig

    monkeypatch.setenv("HYPERMETA_TEST_MARKERS", str(tmp_path))
    runs = MarkerRunner().run_many([Job("cartpole", "m", DQNConfig(), Measurement(100), s) for s in range(40)], 2)
    next(runs)
    runs.close()  # what the caller's exception does to the generator
    started = len(list(tmp_path.iterdir()))
    time.sleep(1.5)
    assert started == len(list(tmp_path.iterdir())) < 20  # nothing ran after the stop; 40 with the pool's exit


def test_only_hypermeta_parallel_makes_process_pools():
    """A pool made elsewhere would bring back the wait on Ctrl-C that :func:`hypermeta.parallel.pool_results`
    stops (``meta2 cv`` folds had one)."""
    makers = {_module_name(p) for p in PACKAGE.rglob("*.py")
              if any(isinstance(n, ast.Name) and n.id in ("ProcessPoolExecutor", "Pool") or
                     isinstance(n, ast.Attribute) and n.attr in ("ProcessPoolExecutor", "Pool")
                     for n in ast.walk(ast.parse(p.read_text())))}
    assert makers == {"hypermeta.parallel"}


def test_pool_results_stops_its_processes_when_the_caller_stops(tmp_path):
    """What ``meta2 cv`` relies on, outside any runner: closing the generator kills the running calls."""
    import time

    from conftest import touch_and_sleep
    from hypermeta.parallel import pool_results

    results = pool_results(touch_and_sleep, [tmp_path / str(i) for i in range(40)], 2)
    next(results)
    results.close()
    started = len(list(tmp_path.iterdir()))
    time.sleep(1.5)
    assert started == len(list(tmp_path.iterdir())) < 20


def test_every_cli_command_has_a_row_in_the_readme_table():
    import argparse

    from hypermeta.cli import build_parser

    readme = (PACKAGE.parent / "docs" / "cli.md").read_text()  # the command table moved from the README
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name in sub.choices if f"| `hypermeta {name}" not in readme]
    assert not missing, f"docs/cli.md's command table lacks {missing}"
    bench = sub.choices["bench"]
    which = next(a for a in bench._actions if a.dest == "which")
    assert not [w for w in which.choices if f"| `hypermeta bench {w}" not in readme]


def test_every_folder_of_the_package_is_declared_with_its_files():
    """A folder missing from pyproject's `packages` is left out of a wheel (or kept only as undeclared data):
    every folder of the package holding files must be a declared package, its data files matched by its globs."""
    import fnmatch
    import tomllib

    setuptools = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = {p for p in setuptools["packages"] if p.startswith("hypermeta")}
    data = setuptools.get("package-data", {})
    for folder in [PACKAGE, *(p for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__")]:
        files = [f for f in folder.iterdir() if f.is_file() and f.suffix != ".pyc"]
        if not files:
            continue
        name = _module_name(folder / "__init__.py")
        assert name in declared, f"{name} is not in pyproject's [tool.setuptools] packages"
        for f in files:
            if f.suffix != ".py":
                assert any(fnmatch.fnmatch(f.name, g) for g in data.get(name, [])), f"{f} is not package data"


def test_the_readme_fits_on_two_screens_and_its_links_resolve():
    import re

    root = PACKAGE.parent
    readme = (root / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", readme) if not t.startswith("http")]
    missing = [t for t in targets if not (root / t).exists()]
    assert targets and not missing, missing
