"""dvc.yaml declares exactly the code each stage runs: every module in the import closure of the stage's script is a
dep (the file or an enclosing folder), and no src/ dep is broader than that closure. Params keys are checked against
what stages really read in the end-to-end test (tests/test_e2e_pipeline.py, via EDGESTYLEGAN_TRACE_PARAMS)."""
import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

from test_architecture import PACKAGE, import_graph, imports_of


def _is_trivial(path: Path) -> bool:
    """A package __init__ with nothing but a docstring runs no code worth a dep."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def closure(root: Path, script: Path, graph: dict) -> set[str]:
    """Files (relative to root) of every edgestylegan module the script imports, directly or not (graph:
    `import_graph(root / "src")`)."""
    src = root / "src"
    files = {name: src / Path(*name.split(".")) for name in graph}
    files = {n: (p / "__init__.py" if p.is_dir() else p.with_suffix(".py")) for n, p in files.items()}
    todo = list(imports_of("__stage__", script, set(graph)))
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]   # Importing a.b.c runs a and a.b.
        todo += graph[name]
    return {str(files[n].relative_to(root)) for n in seen if not _is_trivial(files[n])}


def stage_code_problems(root: Path) -> list[str]:
    problems, graph = [], import_graph(root / "src")
    repo = Repo(str(root))
    try:
        stages = list(repo.index.stages)
    finally:
        repo.close()
    for stage in stages:
        match = re.search(r"python (stages/\S+\.py)", stage.cmd or "")
        if not match:
            continue
        script = match.group(1)
        deps = [str(d.def_path) for d in stage.deps if type(d).__name__ != "ParamsDependency"]
        needed = closure(root, root / script, graph) | {script}
        code_deps = [d for d in deps if d.startswith(("src/", "stages/"))]
        for path in sorted(needed):
            if not any(path == d or path.startswith(d.rstrip("/") + "/") for d in code_deps):
                problems.append(f"{stage.addressing}: imports {path} but dvc.yaml does not list it")
        for dep in code_deps:
            if (root / dep).is_dir():
                inside = {str(p.relative_to(root)) for p in (root / dep).rglob("*.py") if not _is_trivial(p)}
                unused = sorted(inside - needed)
                if unused:
                    problems.append(f"{stage.addressing}: dep {dep} is broader than what it imports "
                                    f"(not imported: {unused})")
            elif dep not in needed:
                problems.append(f"{stage.addressing}: dep {dep} is not imported by {script}")
    return problems


def test_every_stage_lists_exactly_the_code_it_imports(root):
    assert stage_code_problems(root) == []


@pytest.mark.parametrize("stage", ["prune", "quantize", "account"])
def test_removing_a_dep_is_caught(tmp_path, root, stage):
    for item in ("dvc.yaml", "params.yaml"):
        shutil.copy(root / item, tmp_path / item)
    for folder in ("stages", "src", ".dvc"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info",
                                                                                     "tmp", "cache"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    pipeline = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    deps = pipeline["stages"][stage].get("deps") or pipeline["stages"][stage]["do"]["deps"]
    removed = next(d for d in deps if d.startswith("src/") and d.endswith(".py"))
    deps.remove(removed)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    problems = stage_code_problems(tmp_path)
    assert any(removed in p and "does not list it" in p for p in problems), problems
