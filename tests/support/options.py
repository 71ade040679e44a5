"""What a plugin's options refuse, as the user reads it."""

from __future__ import annotations

from typing import Callable

import pytest
from pydantic import ValidationError

from bbvi_kit.plugin import describe_validation_error


def option_errors(build: Callable[[], object], prefix: str) -> list[tuple[str, str]]:
    """Call ``build`` (which must refuse its options) and return the refusal as
    :func:`bbvi_kit.plugin.describe_validation_error` words it: (dotted key, one-line message) pairs."""
    with pytest.raises(ValidationError) as info:
        build()
    return describe_validation_error(info.value, prefix=prefix)
