"""Python run from the folder that contains a clone named `pcformer`: `import pcformer` finds the
clone's root; its __init__.py stops there and says why (not "module 'pcformer' has no attribute
'models'" later), and is harmless under any other name (pytest imports the root that way)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_from_the_parent_of_a_clone_named_pcformer_says_why(tmp_path):
    (tmp_path / "pcformer").symlink_to(ROOT, target_is_directory=True)   # a clone, as seen from its parent
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", "import pcformer; pcformer.models"], cwd=tmp_path,
                         capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError") and "contains a clone named 'pcformer'" in last, last
    assert "no attribute" not in res.stderr
    # from anywhere else the package imports as usual
    ok = subprocess.run([sys.executable, "-c", "import pcformer, pcformer.models"],
                        cwd=tmp_path.parent, capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr


def test_the_root_under_another_name_is_harmless():
    spec = importlib.util.spec_from_file_location("some_checkout", ROOT / "__init__.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)            # what pytest does with the root package: no error
    assert mod.__doc__.startswith("Not a package")
