"""The integration tests share one process: none may leave global state behind for the next
(tests/helpers.restored_globals, and restored_seeds: an in-process training seeds TensorFlow). Module-scoped
too, so a module's own fixtures are covered."""

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
