"""How a setting is declared, for the server's `Settings` and the client's `Config` alike: one
`Option` on the dataclass field (its flag, if the `tlytics` command has one; its environment
variable and any older names it replaces; parser; default as an operator would write it;
help), and one way to read it from the environment.

A neutral module: it imports neither the server nor the client, so both can use it (the
client must not load aiohttp or `tlytics.ingest`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_OPTION = "tlytics_option"


@dataclass(frozen=True, kw_only=True)
class Option:
    """How one setting is given: on the command line (`flag`, None when there is none) and in
    the environment (`environment_variable`, or one of its `deprecated_variables`)."""

    environment_variable: str
    parse: Callable[[str], Any]
    help: str
    # The default as an operator would write it ("10MiB"), or what no value means ("keep all").
    default_text: str
    # What the field holds when nothing sets it (default_text parsed, None, () or computed
    # when asked, like the client's spool directory under the user's cache directory).
    default: Callable[[], Any]
    flag: str | None = None
    # Older names of the variable: still read, with a deprecation warning naming the new one;
    # when both are set, the new one wins.
    deprecated_variables: tuple[str, ...] = ()
    # A repeatable flag; its environment variable is a comma-separated list.
    repeatable: bool = False
    # An error message never shows the value (an API key, a URL with a password), nor does
    # the repr of the object holding it.
    secret: bool = False

    @property
    def all_variables(self) -> tuple[str, ...]:
        """Every environment variable this option reads, the current name first."""
        return (self.environment_variable, *self.deprecated_variables)

    def parse_text(self, text: str) -> Any:
        """The value `text` gives: a tuple for a repeatable option (comma-separated)."""
        if self.repeatable:
            return tuple(self.parse(item.strip()) for item in text.split(",") if item.strip())
        return self.parse(text)


def option_field(option: Option, *, default: Any) -> Any:
    """A dataclass field declared by `option`, worth `default` when nothing sets it; a secret
    one is left out of the repr."""
    return dataclasses.field(default=default, metadata={_OPTION: option}, repr=not option.secret)


def declared_options(cls: type) -> list[tuple[str, Option]]:
    """(field name, option) of every field of the dataclass `cls` declared by an Option, in
    declaration order."""
    return [(field.name, field.metadata[_OPTION]) for field in dataclasses.fields(cls) if _OPTION in field.metadata]


@dataclass(frozen=True)
class FromEnvironment:
    """A value read from the environment: which variable gave it, and, when that is a
    deprecated name (or one was set beside the new one), the warning to give."""

    variable: str
    value: Any
    deprecation: str | None = None


def read_environment(option: Option, environ: Mapping[str, str], *, blank_is_unset: bool) -> FromEnvironment | None:
    """The value of `option` in `environ`, or None when none of its variables is set (or, with
    `blank_is_unset`, set to nothing but spaces). A malformed value raises ValueError naming the
    variable (the value itself only when it is not secret)."""

    def given(variable: str) -> str | None:
        text = environ.get(variable)
        if text is None or (blank_is_unset and not text.strip()):
            return None
        return text.strip() if blank_is_unset else text

    old_set = [variable for variable in option.deprecated_variables if given(variable) is not None]
    new_text = given(option.environment_variable)
    if new_text is not None:
        variable, text = option.environment_variable, new_text
        deprecation = (
            f"{', '.join(old_set)} {'is' if len(old_set) == 1 else 'are'} deprecated and ignored:"
            f" {variable} is also set, and wins"
            if old_set
            else None
        )
    elif old_set:
        variable, text = old_set[0], given(old_set[0]) or ""
        deprecation = f"{variable} is deprecated: use {option.environment_variable} instead"
    else:
        return None
    try:
        value = option.parse_text(text)
    except ValueError as exc:
        shown = "…" if option.secret else repr(environ[variable])
        also = "" if deprecation is None else f" ({deprecation})"
        raise ValueError(f"environment variable {variable}={shown}: {exc}{also}") from None
    return FromEnvironment(variable, value, deprecation)
