"""One settings system: the server's `Settings` and the client's `Config` declare their options
with `tlytics.options.Option`, and no environment variable means two things."""

from __future__ import annotations

from collections import Counter

import pytest

import tlytics.setting_values as parse
from tlytics.client.config import client_options
from tlytics.ingest.settings import operator_options
from tlytics.options import Option, read_environment

OPTION = Option(
    environment_variable="TLYTICS_CLIENT_THING",
    deprecated_variables=("TLYTICS_THING",),
    parse=parse.count,
    help="a thing",
    default_text="3",
    default=lambda: 3,
)


def test_no_two_options_of_the_server_or_the_client_share_an_environment_variable() -> None:
    """TLYTICS_SPOOL (the server's spool) and TLYTICS_SPOOL_DIR (the client's) were easy to
    swap; now every name, old ones included, belongs to one option, and the client's say so."""
    server = [variable for _, option in operator_options() for variable in option.all_variables]
    client = [variable for _, option in client_options() for variable in option.all_variables]
    shared = {variable: n for variable, n in Counter(server + client).items() if n > 1}
    assert shared == {}
    assert all(option.environment_variable.startswith("TLYTICS_CLIENT_") for _, option in client_options())
    assert not any(variable.startswith("TLYTICS_CLIENT_") for variable in server)


def test_the_server_keeps_its_contract_names() -> None:
    """DESIGN §2 names these; they do not change (nor get a deprecated twin)."""
    by_flag = {option.flag: option for _, option in operator_options()}
    for flag, variable in [
        ("--host", "TLYTICS_HOST"),
        ("--port", "TLYTICS_PORT"),
        ("--db", "TLYTICS_DB"),
        ("--spool", "TLYTICS_SPOOL"),
        ("--spool-sync", "TLYTICS_SPOOL_SYNC"),
        ("--flush", "TLYTICS_FLUSH"),
    ]:
        assert by_flag[flag].environment_variable == variable
    assert all(option.deprecated_variables == () for option in by_flag.values())


def test_an_old_name_is_read_with_a_warning_naming_the_new_one() -> None:
    found = read_environment(OPTION, {"TLYTICS_THING": "5"}, blank_is_unset=True)
    assert found is not None
    assert (found.variable, found.value) == ("TLYTICS_THING", 5)
    assert found.deprecation == "TLYTICS_THING is deprecated: use TLYTICS_CLIENT_THING instead"


def test_the_new_name_wins_and_the_old_one_is_not_even_parsed() -> None:
    found = read_environment(OPTION, {"TLYTICS_THING": "lots", "TLYTICS_CLIENT_THING": "7"}, blank_is_unset=True)
    assert found is not None and found.value == 7
    assert found.deprecation == ("TLYTICS_THING is deprecated and ignored: TLYTICS_CLIENT_THING is also set, and wins")


def test_blank_is_unset_only_where_asked() -> None:
    """The client takes `X=` (a compose file's empty value) as unset; the server, as before,
    checks it like any value."""
    environ = {"TLYTICS_CLIENT_THING": " ", "TLYTICS_THING": "4"}
    found = read_environment(OPTION, environ, blank_is_unset=True)
    assert found is not None and (found.variable, found.value) == ("TLYTICS_THING", 4)
    assert read_environment(OPTION, {"TLYTICS_CLIENT_THING": ""}, blank_is_unset=True) is None
    with pytest.raises(ValueError, match="environment variable TLYTICS_CLIENT_THING=''"):
        read_environment(OPTION, {"TLYTICS_CLIENT_THING": ""}, blank_is_unset=False)
