"""The import structure of voice_server/, pipeline/ and models/: no import circles, the pipeline and the models
below the server, and within the server each module importing only its own layer or the layers below it.

The graph is read from the source with `ast` (nothing is imported), every import counted: module level, inside
functions and under ``TYPE_CHECKING`` alike, since each is a dependency a reader must follow.
"""

from __future__ import annotations

import ast
import functools
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("voice_server", "pipeline", "models")

# The server's layers, lowest first: a module may import its own layer and those below, never one above. A
# module's layer is that of the longest entry it is or sits under (``voice_server`` itself covers only the
# package's __init__); every module must have one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", (
        "voice_server",  # the package itself (its __init__ imports nothing)
        "voice_server.ascii_numbers", "voice_server.background", "voice_server.config", "voice_server.errors",
        "voice_server.http_limits", "voice_server.integrity", "voice_server.logs", "voice_server.metrics",
        "voice_server.migrations",
        "voice_server.security",  # crypto, audit log, sealed fields and files: no feature
        "voice_server.security_headers", "voice_server.stores", "voice_server.tls",
        "voice_server.sip.trunks",  # pure parsing of the sip_trunks setting, which config validates
    )),
    ("features", (
        "voice_server.accounts", "voice_server.avatar", "voice_server.conversations", "voice_server.live_calls",
        "voice_server.live_sessions", "voice_server.user_files",
    )),
    ("resources", ("voice_server.resources",)),  # opens the stores and the features' services for the channels
    ("channels", (
        "voice_server.local_call", "voice_server.realtime", "voice_server.session_factory",
        "voice_server.session_lifetime", "voice_server.sip", "voice_server.webrtc",
    )),
    ("surface", (
        "voice_server.api", "voice_server.app", "voice_server.app_state", "voice_server.cli",
        "voice_server.privacy",  # reads every feature's rows for the export: above them, beside its routes
    )),
)

# Imports of a higher layer that are there on purpose: (importer, imported) → why. The importing line carries
# a comment saying the same. Empty today; an entry that no longer matches an import fails the test.
ALLOWED_CLIMBS: dict[tuple[str, str], str] = {}

# Imports across the package boundaries (pipeline/ and models/ never import the server; models/ does not import
# pipeline/) that are there on purpose: (importer, imported) → why.
ALLOWED_CROSSINGS: dict[tuple[str, str], str] = {
    ("models.llm", "pipeline.frames"): "the LLM reports token usage in the pipeline's own TokenUsage frame",
}


@functools.cache
def _modules() -> dict[str, Path]:
    """Dotted module name → source file, for every module of `PACKAGES`."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _resolve(name: str) -> str | None:
    """The module ``name`` refers to: itself, or the module a ``from module import name`` name lives in."""
    modules = _modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@functools.cache
def _imports() -> dict[str, dict[str, int]]:
    """Importer → {imported module: line of its first import}, over our own modules only.

    ``from package import name`` depends on ``package`` itself too (its ``__init__`` runs first), which is how
    a package and its submodules can form a circle.
    """
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in _modules().items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                imported = _resolve(target)
                if imported is not None and imported != module:
                    graph[module].setdefault(imported, node.lineno)
    return graph


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the matching entry, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            under = module.startswith(prefix + ".") and prefix not in PACKAGES
            if (module == prefix or under) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def _where(importer: str, imported: str) -> str:
    path = _modules()[importer].relative_to(REPO)
    return f"{path}:{_imports()[importer][imported]} imports {imported}"


def test_the_graph_is_read() -> None:
    """The graph builder sees imports of every kind (module level, in a function, relative): a broken builder
    must not make the other tests pass vacuously."""
    graph = _imports()
    assert "voice_server.avatar.memory.store" in graph["voice_server.privacy.export"]
    assert "voice_server.cli.common" in graph["voice_server.cli.imports"]
    assert "voice_server.sip.trunks" in graph["voice_server.config"]  # inside a method
    assert len(_modules()) > 150


def test_no_import_circles() -> None:
    """No module reaches itself through its imports (Tarjan's strongly connected components)."""
    graph = _imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(_modules()):
        if module not in index:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(" ↔ ".join(c) for c in circles)


def test_pipeline_and_models_do_not_import_the_server() -> None:
    """pipeline/ imports nothing of voice_server/; models/ nothing of voice_server/ or pipeline/ (but the
    crossings allowed, with their reason)."""
    crossings = []
    for importer, imported in ((a, b) for a, targets in _imports().items() for b in targets):
        top, target_top = importer.split(".")[0], imported.split(".")[0]
        forbidden = {"pipeline": {"voice_server"}, "models": {"voice_server", "pipeline"}}.get(top, set())
        if target_top in forbidden and (importer, imported) not in ALLOWED_CROSSINGS:
            crossings.append(_where(importer, imported))
    assert not crossings, "imports across the package boundaries:\n" + "\n".join(crossings)
    stale = [pair for pair in ALLOWED_CROSSINGS if pair[1] not in _imports().get(pair[0], {})]
    assert not stale, f"ALLOWED_CROSSINGS entries that match no import any more: {stale}"


def test_every_server_module_has_a_layer() -> None:
    """A new server module must be placed in `LAYERS` (which says what it may import)."""
    missing = [m for m in _modules() if m.split(".")[0] == "voice_server" and _layer(m) is None]
    assert not missing, f"add these modules to LAYERS in {Path(__file__).name}: {missing}"


def test_no_server_module_imports_a_higher_layer() -> None:
    """foundation < features < resources < channels < surface: no module imports a layer above its own (but the
    imports in `ALLOWED_CLIMBS`, each with its reason)."""
    climbs = []
    for importer, targets in _imports().items():
        if importer.split(".")[0] != "voice_server":
            continue
        for imported in targets:
            low, high = _layer(importer), _layer(imported)
            if imported.split(".")[0] != "voice_server" or low is None or high is None:
                continue
            if high > low and (importer, imported) not in ALLOWED_CLIMBS:
                climbs.append(f"{_where(importer, imported)} ({LAYERS[low][0]} → {LAYERS[high][0]})")
    assert not climbs, "imports of a higher layer:\n" + "\n".join(sorted(climbs))
    stale = [pair for pair in ALLOWED_CLIMBS if pair[1] not in _imports().get(pair[0], {})]
    assert not stale, f"ALLOWED_CLIMBS entries that match no import any more: {stale}"
