"""Print the project's requirements, one a line, from pyproject.toml: its dependencies plus those of
the extras named (an extra that names the project itself, like ``all``, is expanded), or with
``--only EXTRA`` that extra's alone (e.g. ``gpu``).

    python docker/requirements.py pyproject.toml [EXTRA ...]
    python docker/requirements.py pyproject.toml --only EXTRA

The images install these before they copy the code, in layers that change only with pyproject.toml.
"""

import re
import sys
import tomllib

with open(sys.argv[1], "rb") as fh:
    project = tomllib.load(fh)["project"]
extras = project.get("optional-dependencies", {})
self_reference = re.compile(re.escape(project["name"]) + r"\[([^\]]*)\]")


def requirements_of(extra: str) -> list[str]:
    out: list[str] = []
    for requirement in extras[extra]:
        named = self_reference.fullmatch(requirement.strip())
        out += [r for e in named.group(1).split(",") for r in requirements_of(e.strip())] if named else [requirement]
    return out


args = sys.argv[2:]
if args[:1] == ["--only"]:
    lines = requirements_of(args[1])
else:
    lines = list(project["dependencies"]) + [r for extra in args for r in requirements_of(extra)]
print("\n".join(dict.fromkeys(lines)))
