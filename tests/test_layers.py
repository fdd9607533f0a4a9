"""The layers of docs/design.md ("Layout"), read off the `ast` of every module: the core
imports nothing of the project, `experiments` nothing of `analysis`, training and data nothing
of the orchestration, `analysis` only the run folders, the config vocabulary and
experiments.readback, and no module imports a command. Inside analysis the report draws
what the verdicts judge of what results.py reads, never the reverse, and no modules import
each other in a circle (the config, for one, imports nothing of the data sets that read it).
Only experiments/orchestration/executors.py names the executors, and only
experiments/runfolder.py joins a run folder's file names onto a path.

Imports inside functions count as much as those at the top.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("perceiver_core", "experiments", "analysis")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES
           for path in sorted((ROOT / package).rglob("*.py"))}


def imports(source: str, module: str, is_package: bool = False) -> set[tuple[str, str | None]]:
    """{(module, name or None)} that `source` imports: `from m import n` is (m.n, None) when
    m.n is a module of the project, else (m, n); relative imports are resolved."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {(alias.name, None) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[:len(module.split(".")) - node.level + is_package]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add((target, None) if target in MODULES else (base, alias.name))
    return found


def project_imports(module: str) -> set[tuple[str, str | None]]:
    path = MODULES[module]
    return {(target, name) for target, name in
            imports(path.read_text(), module, path.name == "__init__.py")
            if target.split(".")[0] in PACKAGES}


def is_command(module: str) -> bool:
    """experiments/commands/NAME.py and analysis/commands/NAME.py (not the packages, which
    hold the interface every command implements)."""
    parts = module.split(".")
    return len(parts) == 3 and parts[1] == "commands"


def cases(package: str) -> list[str]:
    """The modules of `package` ("*": of every package)."""
    return [module for module in MODULES if module.split(".")[0] == package or package == "*"]


# ---------------------------------------------------------------- the import collector itself


def test_the_collector_sees_every_form_of_import():
    source = """
import torch.nn
from perceiver_core import attention, build_model
from experiments.records import read_json as read
def lazy():
    from analysis.results import finished
from . import figures
from .style import ARCH_NAMES
from ..verdicts import stats
"""
    assert imports(source, "analysis.report.tables") == {
        ("torch.nn", None), ("perceiver_core.attention", None), ("perceiver_core", "build_model"),
        ("experiments.records", "read_json"), ("analysis.results", "finished"),
        ("analysis.report.figures", None), ("analysis.report.style", "ARCH_NAMES"),
        ("analysis.verdicts.stats", None)}
    assert ("analysis.commands.figures", None) in imports("from . import figures",
                                                          "analysis.commands", is_package=True)


# ---------------------------------------------------------------- the rules


CORE_THIRD_PARTY = {"torch", "fvcore"}


@pytest.mark.parametrize("module", cases("perceiver_core"))
def test_the_core_imports_only_itself_torch_and_fvcore(module):
    path = MODULES[module]
    roots = {target.split(".")[0] for target, _ in
             imports(path.read_text(), module, path.name == "__init__.py")}
    outside = roots - {"perceiver_core", "__future__"} - CORE_THIRD_PARTY - set(
        sys.stdlib_module_names)
    assert not outside, f"{module} imports {sorted(outside)}"


@pytest.mark.parametrize("module", cases("experiments"))
def test_experiments_imports_nothing_of_analysis(module):
    found = sorted(target for target, _ in project_imports(module)
                   if target.split(".")[0] == "analysis")
    assert not found, f"{module} imports {found}"


# Training and the data it reads sit below the orchestration: a job calls train_run or
# train_pack on run folders and the orchestration reads back what they recorded.
TRAINING = ("experiments.train", "experiments.engine", "experiments.packing",
            "experiments.factory", "experiments.host", "experiments.planning",
            "experiments.config", "experiments.seeding", "experiments.optim",
            "experiments.distributed", "experiments.runfolder", "experiments.tensorboard",
            "experiments.records", "experiments.locks")
DATA = [module for module in MODULES if module.split(".")[:2] == ["experiments", "data"]]


@pytest.mark.parametrize("module", [*TRAINING, *DATA])
def test_training_and_data_import_nothing_of_the_orchestration(module):
    found = sorted(target for target, _ in project_imports(module)
                   if target.startswith("experiments.orchestration"))
    assert not found, f"{module} imports {found}"


# What analysis may read of experiments: the run folders (experiments.runfolder) and the
# atomic writes under them (records), the config vocabulary, how counts are written, the
# seed planner's statistics, the command interface, and experiments.readback (a trained
# model with its test examples, a folder's Optuna study), and the state of every run as
# `status` sees it (tracking, status: a report accounts for every run alike). Analysis
# commands are leaves that may also drive the orchestration (the demo trains its sweep
# first).
ANALYSIS_READS = {"experiments.runfolder", "experiments.records", "experiments.config",
                  "experiments.formatting", "experiments.power", "experiments.sequential",
                  "experiments.readback", "experiments.commands",
                  "experiments.orchestration.tracking", "experiments.orchestration.status"}


def analysis_may_read(module: str, target: str) -> bool:
    return target in ANALYSIS_READS or (
        is_command(module) and target.startswith("experiments.orchestration."))


@pytest.mark.parametrize("module", cases("analysis"))
def test_analysis_reads_only_records_vocabulary_and_readback(module):
    found = sorted(f"{target}.{name}" if name else target
                   for target, name in project_imports(module)
                   if target.split(".")[0] == "experiments"
                   and not analysis_may_read(module, target))
    assert not found, f"{module} imports {found}"


@pytest.mark.parametrize("module", cases("*"))
def test_commands_are_leaves(module):
    found = sorted(target for target, _ in project_imports(module)
                   if is_command(target) and target != module)
    assert not found, f"{module} imports the command module(s) {found}"


# analysis in two rooms over a shared floor: report/ (figures, tables, the index and its
# HTML page, cross-attention maps) draws what verdicts/ (the statistics, the judge, the
# effects and claims) judges of what the floor reads (results.py: run folders -> pandas;
# markup.py, accounting.py: what both write). The notebook API, the demo and the commands
# stand on top. An import may only run down or stay on its floor.
ANALYSIS_FLOORS = {"analysis.verdicts": 1, "analysis.report": 2}
ANALYSIS_TOP = ("analysis", "analysis.demo", "analysis.commands")


def analysis_floor(module: str) -> int:
    if module in ANALYSIS_TOP or module.startswith("analysis.commands."):
        return 3
    return next((floor for room, floor in ANALYSIS_FLOORS.items()
                 if module == room or module.startswith(room + ".")), 0)


@pytest.mark.parametrize("module", cases("analysis"))
def test_analysis_imports_run_down_report_verdicts_results(module):
    floor = analysis_floor(module)
    found = sorted(target for target, _ in project_imports(module)
                   if target.split(".")[0] == "analysis" and analysis_floor(target) > floor)
    assert not found, f"{module} (floor {floor}) imports {found}, on a floor above it"


def import_graph(package: str) -> dict[str, set[str]]:
    """{module: the modules of `package` it imports}."""
    return {m: {t for t, _ in project_imports(m) if t in MODULES and t.split(".")[0] == package}
            for m in cases(package)}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every loop of imports in `graph` (Tarjan's strongly connected components of more than
    one module, or of one that imports itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1 or module in graph[module]:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_circle_finder_sees_every_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"a"}}
    assert circles(graph) == [["a", "b", "c"], ["e"]]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_modules_import_each_other_in_a_circle(package):
    assert circles(import_graph(package)) == []


# A new executor is one class in experiments/orchestration/executors.py (docs/design.md,
# "Where a change goes"): every other module asks an executor object, none compares a value
# with an executor's name or lists the names (argparse's choices come from EXECUTORS).
EXECUTORS_MODULE = "experiments.orchestration.executors"
EXECUTOR_NAMES = {"local", "slurm", "debug"}


def names_executors(node: ast.AST) -> bool:
    """A comparison with an executor's name, or a literal listing two or more of them."""
    def named(nodes) -> list[str]:
        return [n.value for n in nodes
                if isinstance(n, ast.Constant) and n.value in EXECUTOR_NAMES]
    if isinstance(node, ast.Compare):
        return bool(named([node.left, *node.comparators]))
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return len(named(node.elts)) >= 2
    if isinstance(node, ast.Dict):
        return len(named(node.keys)) >= 2
    return False


def test_executor_names_are_only_compared_in_the_executors_module():
    from experiments.orchestration.executors import EXECUTORS

    assert set(EXECUTORS) == EXECUTOR_NAMES  # the rule below knows every executor
    assert names_executors(ast.parse('executor == "slurm"').body[0].value)
    assert names_executors(ast.parse('("local", "debug")').body[0].value)
    assert not names_executors(ast.parse('load_profile("local")').body[0].value)


@pytest.mark.parametrize("module", [m for m in cases("*") if m != EXECUTORS_MODULE])
def test_only_the_executors_module_names_executors(module):
    found = [node.lineno for node in ast.walk(ast.parse(MODULES[module].read_text()))
             if names_executors(node)]
    assert not found, f"{module} compares or lists executor names at line(s) {found}"


# ---------------------------------------------------------------- one owner of a run folder


# A run folder's files, by the names experiments/runfolder.py gives them and as written out.
RUN_FILES = {"CONFIG", "METRICS", "RESULT", "CHECKPOINT", "LOCK", "config.yaml",
             "metrics.jsonl", "result.json", "checkpoint.pt", ".train.lock"}


def joined_run_files(source: str) -> list[int]:
    """The lines of `source` that join a run folder's file name onto a path by hand
    (`run_dir / RESULT`, `run_dir / "result.json"`)."""
    lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            right = node.right
            name = right.id if isinstance(right, ast.Name) else \
                right.value if isinstance(right, ast.Constant) else None
            if name in RUN_FILES:
                lines.add(node.lineno)
    return sorted(lines)


def test_the_collector_sees_a_run_file_joined_by_hand():
    source = "a = d / RESULT\nb = Path(d) / 'checkpoint.pt'\nc = d / EVENTS / 'x'\nf(d, CONFIG)\n"
    assert joined_run_files(source) == [1, 2]


@pytest.mark.parametrize("module", [m for m in cases("*") if m != "experiments.runfolder"])
def test_only_the_run_folder_joins_its_file_names(module):
    found = joined_run_files(MODULES[module].read_text())
    assert not found, (f"{module} joins a run folder's file name by hand at line(s) {found}: "
                       "use experiments.runfolder.RunFolder")
