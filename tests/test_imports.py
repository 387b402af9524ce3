"""The import graph, read with `ast` (nothing is imported): no circle among
dcjax's modules and experiments/'s scripts, and no test imports a script of
experiments/ (what the tests need lives in the package: `dcjax.study`,
`dcjax.testing`)."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PATH_CALLS = {"spec_from_file_location", "run_path", "import_module", "insert", "append", "exec_module"}


def modules() -> dict[str, Path]:
    """Module name -> file: the package's modules, and each experiment script
    as `experiments.<name>` (the scripts import each other by bare name)."""
    found = {}
    for path in (REPO / "dcjax").rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in (REPO / "experiments").glob("*.py"):
        found[f"experiments.{path.stem}"] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules that `name` imports anywhere in its file (inside
    functions too), except a package `__init__`'s lazy imports inside
    functions (dcjax's `__getattr__` loads the estimators on first use)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if path.name == "__init__.py" else list(ast.walk(tree))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(known)
            targets |= submodules or {base}
    edges = set()
    for target in targets:
        if name.startswith("experiments.") and f"experiments.{target.split('.')[0]}" in known:
            target = f"experiments.{target.split('.')[0]}"
        while target and target not in known:   # dcjax.train.make_train -> dcjax.train
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle():
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    assert "experiments.unseen_reproduce" in graph["experiments.reproduce"]   # read inside functions too
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_test_imports_experiments():
    scripts = {path.stem for path in (REPO / "experiments").glob("*.py")}
    for path in sorted((REPO / "tests").glob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [(node.module or "").split(".")[0]]
            elif isinstance(node, ast.Call):
                func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if func in PATH_CALLS:
                    assert "experiments" not in ast.get_source_segment(source, node), \
                        f"{path.name} line {node.lineno} loads code from experiments/"
                continue
            else:
                continue
            assert not {"experiments", *scripts} & set(names), f"{path.name} line {node.lineno} imports {names}"


def test_the_dcjax_command_starts_without_jax():
    """`dcjax --help` and the dispatch import no dcjax module but the one a
    subcommand needs: `import dcjax.cli` loads neither jax nor flax."""
    code = "import sys, dcjax.cli; print(sorted(m for m in ('jax', 'flax', 'optax', 'dcjax.train') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "[]"
