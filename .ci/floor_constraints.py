"""Print a pip constraints file that pins every dependency of pyproject.toml (dev extra included) to the lowest
version it declares (`name>=X` → `name==X`): the floor that CI's second leg installs and tests."""

import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]:
    floor = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)", requirement)
    if floor:
        print(f"{floor[1]}=={floor[2]}")
