"""The package's import graph: nothing imports the command line, and no
module imports itself back through others."""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mipae_jax"


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
  """module -> the mipae_jax modules it imports (anywhere in its body)."""
  modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        # `from X import Y`: the module X.Y where Y is one, else X itself.
        targets = [
          f"{node.module}.{a.name}"
          if f"{node.module}.{a.name}" in modules
          else node.module
          for a in node.names
        ]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    graph[name] = edges
  return graph


def test_no_module_imports_the_command_line():
  graph = _import_graph()
  assert "mipae_jax.main" in graph
  importers = sorted(name for name, edges in graph.items() if "mipae_jax.main" in edges)
  assert importers == []


def test_the_import_graph_has_no_cycle():
  graph = _import_graph()
  state: dict[str, int] = {}
  cycles = []

  def visit(name: str, stack: list[str]) -> None:
    state[name] = 1
    for other in sorted(graph[name]):
      if state.get(other) == 1:
        cycles.append(stack[stack.index(other) :] + [other])
      elif other not in state:
        visit(other, [*stack, other])
    state[name] = 2

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])
  assert cycles == []


def test_the_registry_lists_every_dataset_mig_renders_static_frames_of():
  from mipae_jax import config_validation, registry
  from mipae_jax.evaluation import mig_frames, mig_sources

  assert set(mig_sources.DATASETS) == set(registry.DATASETS)
  assert mig_frames.PROTOCOLS == config_validation.STATIC_MIG_PROTOCOLS
