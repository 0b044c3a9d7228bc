"""Without mypy: the stubs parse, and every public name of the module is in them, each class
with its public methods and properties (and nothing the module lacks)."""
import ast
import os
import sys

import shmstream

stub_path = os.path.join(os.path.dirname(shmstream.__file__), "__init__.pyi")
tree = ast.parse(open(stub_path).read(), stub_path)
stub = {}
for node in tree.body:
    if isinstance(node, ast.ClassDef):
        stub[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    elif isinstance(node, ast.AnnAssign):
        stub[node.target.id] = set()
problems = []
for name in shmstream.__all__:
    if name not in stub:
        problems.append(f"{name} is not in the stubs")
        continue
    thing = getattr(shmstream, name)
    if isinstance(thing, type) and not issubclass(thing, BaseException):
        public = {m for m in dir(thing) if not m.startswith("_")} | {"__enter__", "__exit__"}
        public &= set(dir(thing))
        for member in public - stub[name]:
            problems.append(f"{name}.{member} is not in the stubs")
        for member in stub[name] - set(dir(thing)):
            problems.append(f"{name}.{member} is in the stubs, not in the module")
if problems:
    sys.exit("\n".join(problems))
print(f"stubs cover the {len(shmstream.__all__)} public names of {shmstream.__file__}")
