"""Run a benchmark script against another checkout's code (e.g. a `git worktree` of HEAD),
for side-by-side runs of before and after in one session:

    git worktree add /tmp/base HEAD
    python benchmarks/run_tree.py /tmp/base /tmp/base/benchmarks/model_routing.py --only-overhead
    python benchmarks/run_tree.py . benchmarks/model_routing.py --only-overhead

The editable install maps ``aivos.shared``/``edge``/``cloud`` to this checkout; here the
``aivos`` package is loaded from TREE instead, so every ``aivos.*`` import resolves there.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path


def main() -> None:
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        return
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    root = str(Path(sys.argv[1]).resolve())
    sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(
        "aivos", f"{root}/aivos/__init__.py", submodule_search_locations=[root, f"{root}/aivos"]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["aivos"] = module
    spec.loader.exec_module(module)
    import aivos.cloud.models.router as router

    assert router.__file__ is not None and router.__file__.startswith(root), router.__file__
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
