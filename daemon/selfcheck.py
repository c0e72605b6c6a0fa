"""Start-up self-check: facturd's import names must belong to facturd.

``daemon`` is also python-daemon's import name and ``rules`` django-rules'. Installed side by
side in one environment, one package silently overwrites the other's files. facturd therefore
lives in its own virtual environment; this check says so clearly instead of failing later in
a confusing way.
"""

from __future__ import annotations

from importlib import metadata

OUR_NAMES = ("daemon", "rules", "storage")
OUR_DIST = "facturd"


def foreign_owners() -> dict[str, list[str]]:
    """Import name -> other distributions that also install it (empty when all is well)."""
    owners = metadata.packages_distributions()
    clash: dict[str, list[str]] = {}
    for name in OUR_NAMES:
        others = sorted({d for d in owners.get(name, []) if d.lower() != OUR_DIST})
        if others:
            clash[name] = others
    return clash


def problems() -> list[str]:
    return [
        f"the import name {name!r} is also installed by {', '.join(dists)}; facturd must be "
        "installed in its own virtual environment (python3 -m venv /opt/facturd && "
        "/opt/facturd/bin/pip install facturd)"
        for name, dists in foreign_owners().items()
    ]
