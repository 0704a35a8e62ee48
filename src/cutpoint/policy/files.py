"""Policies as YAML or JSON files (``cutpoint policy create --file``, ``cutpoint policy show --yaml``).

YAML is read with a loader that does not turn ``12:30`` into the sexagesimal integer 750 (YAML 1.1 would), so a
time of day may be written unquoted; everything else is PyYAML's safe loader. The format is chosen by extension:
``.json`` is JSON, anything else YAML (which also reads JSON).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import NotFoundError, UsageError
from .model import Policy


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style numbers: no sexagesimal ints or floats."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?(0|[1-9][0-9_]*)$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?([0-9][0-9_]*)?\.[0-9_]+([eE][-+]?[0-9]+)?$"),
                              list("-+0123456789."))


def parse_text(text: str, source: str, name: str | None = None) -> Policy:
    """Parse and validate a policy document; ``source`` names it in errors."""
    try:
        data: Any = json.loads(text) if source.endswith(".json") else yaml.load(text, Loader=_Loader)
    except (ValueError, yaml.YAMLError) as exc:
        raise UsageError(f"{source} is not valid {'JSON' if source.endswith('.json') else 'YAML'}: "
                         f"{' '.join(str(exc).split())}") from exc
    return Policy.from_dict(data, name)


def load(path: Path, name: str | None = None) -> Policy:
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise NotFoundError(f"policy file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read policy file {path}: {exc}") from exc
    return parse_text(text, str(path), name)


def dumps(policy: Policy, fmt: str = "yaml") -> str:
    data = policy.to_dict()
    if fmt == "json":
        return json.dumps(data, indent=1) + "\n"
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
