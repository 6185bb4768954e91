"""A task's arguments checked against its function's signature when a job is enqueued.

The function receives its job's payload as keyword arguments, decoded from JSON. So the
payload is checked as JSON, with pydantic in strict mode: what passes is what the function
will be called with (``"5"`` is no ``int``, ``123`` no ``str``; a list passes for a tuple
and an ISO string for a datetime, as JSON carries them). Parameters without an annotation,
or whose annotation cannot be resolved or has no pydantic schema, accept any value.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NotRequired

import orjson
import pydantic
from typing_extensions import TypedDict

from .errors import InvalidJobError


class ArgumentsCheck:
    """The check of one task's payloads; built on first use (then reused for every job)."""

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = name
        self._adapter = _adapter_for(name, func)
        # The JobContext's parameter: a payload key of that name would clash with it.
        self._context = next(iter(_signature(func).parameters), None)

    def check(self, payload: dict[str, Any]) -> None:
        """InvalidJobError, naming every argument that does not fit, unless ``payload``
        is what the function can be called with."""
        if self._context is not None and self._context in payload:
            raise InvalidJobError(
                f"{self.name}: {self._context!r} is the job's context, not an argument"
            )
        try:
            encoded = orjson.dumps(payload)
        except TypeError as exc:
            raise InvalidJobError(
                f"{self.name}: arguments are not JSON-serializable: {exc}"
            ) from None
        try:
            self._adapter.validate_json(encoded)
        except pydantic.ValidationError as exc:
            raise InvalidJobError(f"{self.name}: {describe(exc)}") from None


def describe(exc: pydantic.ValidationError) -> str:
    """One line naming each argument that does not fit and why."""
    unexpected, missing, wrong = [], [], []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            unexpected.append(repr(where))
        elif error["type"] == "missing":
            missing.append(repr(where))
        else:
            wrong.append(f"{where}: {error['msg'].lower()}, got {error['input']!r}")
    parts = []
    if unexpected:
        parts.append(f"unexpected argument{'s' * (len(unexpected) > 1)} {', '.join(unexpected)}")
    if len(missing) == 1:  # worded as Python words it, for a call
        parts.append(f"missing a required argument: {missing[0]}")
    elif missing:
        parts.append(f"missing required arguments: {', '.join(missing)}")
    return "; ".join(parts + wrong)


def _signature(func: Callable[..., Any]) -> inspect.Signature:
    try:
        return inspect.signature(func, eval_str=True)
    except Exception:  # a name only imported under TYPE_CHECKING, say: those go unchecked
        return inspect.signature(func)


def _checkable(annotation: Any) -> Any:
    """``annotation`` if pydantic can validate it, else Any."""
    if annotation is inspect.Parameter.empty or isinstance(annotation, str):
        return Any
    try:
        pydantic.TypeAdapter(annotation)
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError):
        return Any
    return annotation


def _adapter_for(name: str, func: Callable[..., Any]) -> pydantic.TypeAdapter[Any]:
    """A TypedDict of the parameters after the first (the JobContext): required where the
    function has no default; other keys refused unless it takes ``**kwargs``."""
    parameters = list(_signature(func).parameters.values())[1:]
    typed: dict[str, Any] = {}
    names_only: dict[str, Any] = {}
    open_ended = False
    for param in parameters:
        if param.kind is param.VAR_KEYWORD:
            open_ended = True
        elif param.kind is not param.VAR_POSITIONAL:  # *args: refused by Task.payload_of
            required = param.default is param.empty
            annotation = _checkable(param.annotation)
            typed[param.name] = annotation if required else NotRequired[annotation]
            names_only[param.name] = Any if required else NotRequired[Any]
    config = pydantic.ConfigDict(strict=True, extra="allow" if open_ended else "forbid")
    try:
        return _adapter(name, typed, config)
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError):
        return _adapter(name, names_only, config)  # types that do not go together: names only


def _adapter(
    name: str, fields: dict[str, Any], config: pydantic.ConfigDict
) -> pydantic.TypeAdapter[Any]:
    arguments = TypedDict(f"{name}_arguments", fields)  # type: ignore[misc]
    return pydantic.TypeAdapter(pydantic.with_config(config)(arguments))
