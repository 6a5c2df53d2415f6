"""Autouse fixtures that put back whatever a test or a module changes of the process's global state
(tests/helpers.restored_globals and restored_seeds). The unit and integration conftests import them; the
fuzz tests, which change none, go without (hypothesis runs each input inside one test call)."""

from __future__ import annotations

import pytest

from tests.helpers import restored_globals, restored_seeds


@pytest.fixture(scope="module", autouse=True)
def _module_leaves_no_global_state():
    with restored_globals(), restored_seeds():
        yield


@pytest.fixture(autouse=True)
def _test_leaves_no_global_state():
    with restored_globals(), restored_seeds():
        yield
