"""The integration tests share one process: none may leave global state behind for the next
(tests/global_state.py: an in-process training sets the dtype policy and seeds TensorFlow). Module-scoped
too, so a module's own fixtures are covered."""

from tests.global_state import _module_leaves_no_global_state, _test_leaves_no_global_state

__all__ = ["_module_leaves_no_global_state", "_test_leaves_no_global_state"]  # pytest finds them here
