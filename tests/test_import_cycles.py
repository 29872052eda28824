"""No import cycle anywhere in Keel: not between modules, and not between the sub-packages of pipelines/.

import-linter's contracts (setup.cfg, tests/test_import_layers.py) hold the layers; a cycle inside a
layer (two modules of one package, or two packages beside each other) is what this test catches.
Lazy imports inside functions count too: they hide a cycle, they do not remove it.
"""

from __future__ import annotations

import grimp
import pytest

ROOTS = ("keel.pipelines", "keel.components")


@pytest.fixture(scope="module")
def graph():
    # An import under TYPE_CHECKING (an annotation) never runs, so it cannot close a cycle at run time.
    return grimp.build_graph(*ROOTS, include_external_packages=False, exclude_type_checking_imports=True)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _edges(graph, name=lambda module: module) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        if ".tests." in module or module.endswith(".tests"):
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            a, b = name(module), name(imported)
            edges.setdefault(a, set())
            edges.setdefault(b, set())
            if a != b:
                edges[a].add(b)
    return edges


def _explain(graph, cycles: list[list[str]]) -> str:
    lines = []
    for members in cycles:
        lines.append(" <-> ".join(members))
    return "import cycles:\n  " + "\n  ".join(lines)


def test_no_module_imports_itself_back(graph):
    cycles = _cycles(_edges(graph))
    assert not cycles, _explain(graph, cycles)


def test_the_sub_packages_of_pipelines_and_components_form_no_cycle(graph):
    def package(module: str) -> str:  # keel.pipelines.local.runner -> keel.pipelines.local
        return ".".join(module.split(".")[:3])

    cycles = _cycles(_edges(graph, package))
    assert not cycles, _explain(graph, cycles)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
