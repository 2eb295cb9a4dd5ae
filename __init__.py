"""Not a package: the root of a pcformer checkout (the package is pcformer/ inside it).

Why this file exists: run Python from the folder that CONTAINS a clone named `pcformer` and
`import pcformer` finds the clone's root before the installed package; without this file it
became an empty namespace package and failed later with "module 'pcformer' has no attribute
'models'". With it, that import stops at once and says why.

Anything else that imports this file is harmless: pytest imports the root of the repository as a
package under the folder's own name (a checkout named `door` becomes module `door`: nothing
happens), or, for a checkout named `pcformer`, finds the real package already imported
(tests/conftest.py imports it first) and never runs this file.
"""
import os as _os

if __name__ == "pcformer":
    _root = _os.path.dirname(_os.path.abspath(__file__))
    raise ImportError(
        f"`import pcformer` found the checkout {_root}, not the package: Python runs from its "
        f"parent folder {_os.path.dirname(_root)} (the current folder, or the script's), which "
        f"contains a clone named 'pcformer'. Run from another folder (or from inside the "
        f"clone), or rename the clone (e.g. pcformer-src); install it with "
        f"`pip install -e {_root}` if you have not.")
