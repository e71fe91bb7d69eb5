"""Reading the YAML document: `${VAR}` interpolation and errors that name the place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from replicator.config.model import Config

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """A problem in the configuration file, located by document path (and line when known)."""

    def __init__(self, file: str, problems: list[tuple[str, int | str | None, str]]) -> None:
        self.file = file
        self.problems = problems
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"invalid configuration in {self.file}:"]
        for path, line, message in self.problems:
            # A line in another file (a base the config `extends`) comes as "file:line".
            where = line if isinstance(line, str) else f"{self.file}:{line}" if line else self.file
            lines.append(f"  {path or '<document>'} ({where}): {message}")
        return "\n".join(lines)


def _interpolate(value: Any, path: str, env: Mapping[str, str], missing: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((path, name))
            return ""

        return _VAR.sub(replace, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{path}.{i}", env, missing) for i, v in enumerate(value)]
    return value


def _line_index(node: yaml.Node, path: tuple[str, ...] = (), out: dict[tuple[str, ...], int] | None = None) -> dict:
    """Document path -> 1-based line, so an error can point into the file."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, child in node.value:
            _line_index(child, (*path, str(key.value)), out)
            out[(*path, str(key.value))] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            _line_index(child, (*path, str(i)), out)
    return out


Lines = dict[tuple[str, ...], int | str]


def _read_document(text: str, file: str) -> tuple[dict[str, Any], Lines]:
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(file, [("", mark.line + 1 if mark else None, f"not valid YAML: {exc}")]) from None
    if not isinstance(raw, dict):
        raise ConfigError(file, [("", None, "expected a mapping with erp, crm and mappings sections")])
    return raw, dict(_line_index(node)) if node is not None else {}


def _with_base(raw: dict[str, Any], lines: Lines, file: str, seen: tuple[str, ...]) -> tuple[dict[str, Any], Lines]:
    """`extends: base.yaml` (relative to this file): the base's top-level sections, each one
    replaced whole by a section of the same name here. Lets one mapping serve several sources."""
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw, lines
    if not isinstance(base_name, str):
        raise ConfigError(file, [("extends", lines.get(("extends",)), "must be a file name, e.g. replicator.yaml")])
    base_path = (Path(file).parent / base_name).resolve()
    if str(base_path) in seen:
        raise ConfigError(file, [("extends", lines.get(("extends",)), f"{base_name} extends itself (a cycle)")])
    try:
        text = base_path.read_text()
    except OSError as exc:
        raise ConfigError(
            file, [("extends", lines.get(("extends",)), f"cannot read {base_path}: {exc.strerror}")]
        ) from None
    base_raw, base_lines = _read_document(text, str(base_path))
    base_raw, base_lines = _with_base(base_raw, base_lines, str(base_path), (*seen, str(base_path)))
    merged_lines: Lines = {}
    for path, line in base_lines.items():
        if path and path[0] not in raw:
            merged_lines[path] = line if isinstance(line, str) else f"{base_path}:{line}"
    merged_lines.update({k: v for k, v in lines.items() if k})
    return {**base_raw, **raw}, merged_lines


def parse_config(text: str, file: str = "<config>", env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    raw, lines = _read_document(text, file)
    raw, lines = _with_base(raw, lines, file, (str(Path(file).resolve()),))
    missing: list[tuple[str, str]] = []
    data = _interpolate(raw, "", env, missing)
    if missing:
        raise ConfigError(
            file,
            [
                (path, lines.get(tuple(path.split("."))), f"environment variable {name} is not set; export it")
                for path, name in missing
            ],
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"] if not _is_union_tag(p))
            # A message from a model validator already carries its own path.
            message = err["msg"].removeprefix("Value error, ")
            path = ".".join(loc)
            if not path and ":" in message:
                path, _, message = message.partition(": ")
                loc = tuple(path.split("."))
            problems.append((path, _nearest_line(lines, loc), _explain(err["type"], message)))
        raise ConfigError(file, problems) from None


def _is_union_tag(part: Any) -> bool:
    return part in ("bottlecrm", "hubspot", "salesforce", "discard", "pg_slot", "kafka", "mysql_binlog")


def _nearest_line(lines: Lines, loc: tuple[str, ...]) -> int | str | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _explain(kind: str, message: str) -> str:
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see examples/erp/replicator.yaml)"
    return message


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [("", None, f"cannot read: {exc.strerror}")]) from None
    return parse_config(text, str(path), env)
