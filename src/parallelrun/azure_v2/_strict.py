"""The base of every Azure ML v2 YAML model: unknown keys are refused, naming the closest known one.

Azure's YAML is case sensitive and a misspelt key is silently ignored by many tools; here it is an
error that says what was meant.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Strict(BaseModel):
    """A model that refuses unknown keys; subclasses may word the message (``unknown_field_message``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @classmethod
    def unknown_field_message(cls, key: str, hint: str) -> str:
        return f"unknown field '{key}'.{hint}"

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = [f.alias or n for n, f in cls.model_fields.items()]
            for key in data:
                if str(key) not in known:
                    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
                    hint = f" Did you mean '{close[0]}'?" if close else f" Valid fields: {', '.join(known)}."
                    raise ValueError(cls.unknown_field_message(str(key), hint))
        return data
