"""The package's layers, read from the source: no upward import, no circular import, no path tricks.

errors / files / images / offline / config / metrics / cards -> data / models -> features / predict / explain / detect / paintings
-> export / synth / training -> cli / space -> trainers, scripts, spaces (entry points, outside the package).
A new module gets a line in LAYERS, in the lowest layer whose modules it needs.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "artlens"
LAYERS = {
    "errors": 0, "files": 0, "images": 0, "offline": 0, "config": 0, "metrics": 0, "cards": 0,
    "data": 1, "models": 1,
    "features": 2, "predict": 2, "explain": 2, "detect": 2, "paintings": 2,
    "export": 3, "synth": 3, "training": 3,
    "cli": 4, "space": 4,
}


def _module(path: Path) -> str:
    """``artlens/explain/cam.py`` -> ``explain`` (a subpackage is one module of its layer)."""
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def _imports(path: Path, text: str | None = None) -> set[str]:
    """The artlens modules a file imports, at the top or inside functions (``text``: instead of the file's)."""
    out = set()
    tree = ast.parse(path.read_text() if text is None else text, str(path))
    inside = path.parent != PKG  # a file of a subpackage: `from .x` is a sibling, `from ..x` the package
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.split(".")[0] == "artlens":
                parts = node.module.split(".")[1:]
            elif node.level == 1 and not inside or node.level == 2 and inside:
                parts = (node.module or "").split(".") if node.module else []
            else:
                continue
            names = parts[:1] if parts else [a.name for a in node.names]
            out.update(names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("artlens."))
    return out - {""}


def _graph() -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        if f.name == "__init__.py" and f.parent == PKG:
            continue
        m = _module(f)
        g.setdefault(m, set()).update(i for i in _imports(f) if i != m)
    return g


def test_every_module_has_a_layer():
    assert sorted(set(_graph()) - set(LAYERS)) == []


def test_no_upward_import():
    bad = [f"{m} (layer {LAYERS[m]}) imports {i} (layer {LAYERS.get(i)})"
           for m, deps in _graph().items() for i in deps if i in LAYERS and LAYERS[i] > LAYERS[m]]
    assert bad == []


def test_no_circular_import():
    g = _graph()
    cycles = []

    def visit(m, path):
        for i in g.get(m, ()):
            if i in path:
                cycles.append(" -> ".join(path[path.index(i):] + [i]))
            elif i in g:
                visit(i, path + [i])

    for m in g:
        visit(m, [m])
    assert cycles == []


def test_the_package_never_imports_an_entry_point_or_edits_sys_path():
    bad = []
    for f in PKG.rglob("*.py"):
        text = f.read_text()
        for needle in ("sys.path.insert", "sys.path.append", "spec_from_file_location", "import trainers", "from trainers",
                       "from scripts", "import scripts"):
            if needle in text:
                bad.append(f"{f.relative_to(ROOT)}: {needle}")
    for d in ("trainers", "scripts", "spaces"):
        for f in (ROOT / d).rglob("*.py"):
            for needle in ("sys.path.insert", "sys.path.append", "spec_from_file_location"):
                if needle in f.read_text():
                    bad.append(f"{f.relative_to(ROOT)}: {needle}")
    assert bad == []


def test_the_layer_reader_sees_upward_imports():
    """The reader itself: function-level and absolute imports, and a subpackage's ``..`` imports, are found."""
    f = PKG / "images.py"
    assert "cli" not in _imports(f)
    assert "cli" in _imports(f, f.read_text() + "\n\ndef _x():\n    from .cli import main\n")
    assert "space" in _imports(f, "import artlens.space\n")
    assert _imports(PKG / "explain" / "cam.py", "from ..models import load_model\nfrom .render import x\n") == {"models"}


def test_every_error_class_derives_from_artlens_error():
    """One error base: each ``class ...Error`` of the package derives from ArtlensError, so an entry point
    catches it once."""
    import importlib
    import pkgutil

    import artlens
    from artlens.errors import ArtlensError

    found = {}
    for info in pkgutil.walk_packages(artlens.__path__, "artlens."):
        if info.name.startswith("artlens.space"):  # gradio; its handlers raise gr.Error for the UI
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == mod.__name__:
                found[f"{info.name}.{name}"] = issubclass(obj, ArtlensError)
    assert len(found) >= 7 and [k for k, ok in found.items() if not ok] == []


def test_in_package_imports_sit_at_the_top_of_the_file():
    """Lazy imports are for heavy optional third-party packages only; artlens modules are imported at the
    top (or under ``if TYPE_CHECKING:``), so the layer a file depends on is visible where it starts."""
    bad = []
    for f in PKG.rglob("*.py"):
        tree = ast.parse(f.read_text(), str(f))
        top = {id(n) for n in tree.body}
        top |= {id(n) for node in tree.body if isinstance(node, ast.If) for n in node.body}  # TYPE_CHECKING
        for node in ast.walk(tree):
            relative = isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("artlens"))
            if relative and id(node) not in top:
                bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
    assert bad == []
