"""Contact profiles over HTTP and the CLI's --json output (seed 004): schemas and profiles."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SchemaOut(BaseModel):
    """A profile schema: its fields as they were posted, and the uuid that names it."""

    version: str
    uuid: str
    fields: list[dict[str, Any]] = Field(
        description="name, display, type (DATETIME, BOOLEAN, STRING, FLOAT, INTEGER, ENUM, "
        'LOCATION), default, is_private, "null" and an ENUM\'s enum options'
    )


class SchemaListItem(SchemaOut):
    created_at: datetime


class ProfileOut(BaseModel):
    """A person's profile under one schema (the newest unless ``?schema=`` names one)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    version: str | None = Field(description="the schema's version (null: no schema yet)")
    schema_uuid: str | None = Field(
        alias="schema", description="the uuid of the schema the fields are read under"
    )
    generation: int = Field(description="every change of the profile adds 1")
    fields: dict[str, Any] = Field(
        description="every field of the schema, the reserved ones included (private ones too: "
        "this API is the only place they are shown)"
    )
