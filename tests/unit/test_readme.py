"""README.md's configuration table is true to ``Settings``: every field listed under its
environment name with its default, and nothing listed that is not a field."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from campaigns.runtime.config import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = "| variable | default | meaning |"


def config_table() -> dict[str, str]:
    """Variable -> default cell (backticks dropped) of the README's configuration table."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER)
    rows: dict[str, str] = {}
    for line in lines[start + 2 :]:  # the header, then the --- row
        if not line.startswith("|"):
            break
        cells = [c.strip().strip("`") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 3, line
        variable, default, _ = cells
        assert variable not in rows, f"{variable} is listed twice"
        rows[variable] = default
    return rows


def default_of(name: str) -> Any:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return field.default_factory
    assert field.default is not PydanticUndefined, f"{name} has no default"
    return field.default


def test_the_table_lists_every_field_and_nothing_else() -> None:
    listed = set(config_table())
    fields = {name.upper() for name in Settings.model_fields}
    assert listed - fields == set(), "listed in README.md but not a Settings field"
    assert fields - listed == set(), "Settings fields missing from README.md's table"


def test_fields_are_read_from_their_upper_case_names() -> None:
    # No prefix and no alias: the env name of a field is its name in upper case.
    assert Settings.model_config.get("env_prefix", "") == ""
    assert all(
        f.alias is None and f.validation_alias is None for f in Settings.model_fields.values()
    )


@pytest.mark.parametrize("variable", sorted(config_table()))
def test_the_documented_default_is_the_code_default(variable: str) -> None:
    written = config_table()[variable]
    name = variable.lower()
    default = default_of(name)
    if written == "embedded":  # unset: the embedded service (campaigns.runtime.stores)
        assert default is None
    elif written == "none":
        assert default in (None, "") or default == SecretStr("")
    elif written == "CPU count":
        assert callable(default) and default() == (os.cpu_count() or 1)
    elif written == "DATA_DIR/uploads":
        assert default is None
        assert Settings(upload_dir=None, data_dir=Path("d")).spool_dir == Path("d/uploads")
    elif isinstance(default, bool):
        assert written == str(default).lower()
    elif isinstance(default, int | float):
        assert float(written) == default
    else:
        assert written == str(default)
