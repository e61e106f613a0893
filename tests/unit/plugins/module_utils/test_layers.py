# Copyright: drkit.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The engine's layers (plugins/module_utils), checked from its imports the way
pgBackRest's test/define.yaml orders its modules:

    core <- {storage, container} <- repo <- {pg, redis} <- drill <- {cli, _ansible}      demo on top

A module may import its own package and the packages below it, never one
above or beside it (pg and redis know nothing of each other, nor storage and
container: running tools inside a database's container; drill: rehearsals
that use both databases), nothing imports
demo, only _ansible imports Ansible, and there is no import circle, lazy
imports included. Engine imports are relative only, so the same files work as
ansible_collections.drkit.backup.plugins.module_utils (the modules) and as the
installed runtime package.
"""

import ast
import os
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parents[4] / "plugins" / "module_utils"

RANK = {"core": 0, "storage": 1, "container": 1, "repo": 2, "pg": 3, "redis": 3, "drill": 4, "cli": 5, "_ansible": 5,
        "demo": 6}
ENGINE_NAMES = ("ansible_collections", "drkit_engine")


def module_name(root, path):
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def engine_imports(root):
    """{module: {imported module: [line, ...]}} for every relative import, and
    a list of problems found on the way (absolute engine or Ansible imports)."""
    modules = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    edges, problems = {}, []
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        out = edges.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                targets = [node.module]
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1]
                if node.module:
                    base = base + node.module.split(".")
                    names = [".".join(base)]
                    # `from .pkg import module` imports a module, not a name
                    names += [".".join(base + [a.name]) for a in node.names if ".".join(base + [a.name]) in modules]
                else:
                    names = [".".join(base + [a.name]) for a in node.names]
                for target in names:
                    if target in modules and target != name:
                        out.setdefault(target, []).append(node.lineno)
                continue
            else:
                continue
            for target in targets:
                top = target.split(".")[0]
                if top in ENGINE_NAMES:
                    problems.append("%s:%d imports %s absolutely; engine imports must be relative" % (
                        path.name, node.lineno, target))
                if top == "ansible" and name != "_ansible":
                    problems.append("%s:%d imports Ansible (%s); only _ansible.py may" % (
                        path.name, node.lineno, target))
    return modules, edges, problems


def layer_problems(root):
    modules, edges, problems = engine_imports(root)
    for name, targets in sorted(edges.items()):
        top = name.split(".")[0] if name else ""
        for target, lines in sorted(targets.items()):
            ttop = target.split(".")[0]
            if not name or not target or top == ttop:
                continue  # the package root, or inside one package
            if top not in RANK or ttop not in RANK:
                problems.append("%s -> %s: module outside the known layers %s" % (name, target, sorted(RANK)))
            elif ttop == "demo":
                problems.append("%s -> %s (line %s): nothing may import demo" % (name, target, lines[0]))
            elif RANK[ttop] >= RANK[top]:
                problems.append("%s -> %s (line %s): %s may not import %s" % (name, target, lines[0], top, ttop))
    # circles (Tarjan's strongly connected components)
    index, low, stack, on, counter, circles = {}, {}, [], set(), [0], []

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    problems.extend("import circle: %s" % " <-> ".join(c) for c in circles)
    return problems


def test_engine_layers_import_downward_only():
    assert layer_problems(ENGINE) == []


def test_every_engine_package_has_an_init():
    # Ansible's module_utils finder and the runtime wheel both need them.
    for d in ENGINE.rglob("*"):
        if d.is_dir() and d.name != "__pycache__":
            assert (d / "__init__.py").is_file(), d


def _tree(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [tmp_path] + [p for p in tmp_path.rglob("*") if p.is_dir()]:
        (d / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    ({"core/a.py": "from ..repo.b import x\n", "repo/b.py": "x = 1\n"}, "core may not import repo"),
    ({"pg/a.py": "from ..redis.b import x\n", "redis/b.py": "x = 1\n"}, "pg may not import redis"),
    ({"repo/a.py": "def f():\n    from ..demo import b\n", "demo/b.py": ""}, "nothing may import demo"),
    ({"core/a.py": "from .b import x\n", "core/b.py": "from .a import y\n"}, "import circle: core.a <-> core.b"),
    ({"core/a.py": "def f():\n    from .b import x\n", "core/b.py": "from . import a\n"},
     "import circle: core.a <-> core.b"),
    ({"pg/a.py": "from ansible_collections.drkit.backup.plugins.module_utils.core import b\n", "core/b.py": ""},
     "imports ansible_collections.drkit.backup.plugins.module_utils.core absolutely"),
    ({"repo/a.py": "from ansible.module_utils.basic import AnsibleModule\n"}, "only _ansible.py may"),
])
def test_the_layer_check_catches(tmp_path, files, expected):
    problems = layer_problems(_tree(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_the_layer_check_passes_downward_imports(tmp_path):
    root = _tree(tmp_path, {"core/a.py": "import os\n", "storage/b.py": "from ..core.a import x\n",
                            "pg/c.py": "from ..repo import d\nfrom .e import y\n", "repo/d.py": "",
                            "pg/e.py": "", "cli.py": "def f():\n    from .pg.c import z\n",
                            "_ansible.py": "from ansible.module_utils.basic import env_fallback\n",
                            "demo/f.py": "from ..pg import c\n"})
    assert layer_problems(root) == []
    assert os.path.isdir(str(root / "pg"))
