"""serving.one_prediction_at_a_time: the event loop uvicorn runs MLflow's scoring server in, where each
request's `asyncio.to_thread` (parse + model.predict) runs alone."""

import asyncio
import threading
import time

from mnist_pipeline import serving


def _overlap(loop: asyncio.AbstractEventLoop, calls: int = 6) -> tuple[int, list[int]]:
    """Start `calls` to_thread calls at once, as MLflow does for concurrent requests: (the most that ran at the
    same time, the order they ran in)."""
    lock, state, order = threading.Lock(), {"now": 0, "most": 0}, []

    def predict(i: int) -> None:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            order.append(i)
        time.sleep(0.05)
        with lock:
            state["now"] -= 1

    async def requests():
        await asyncio.gather(*(asyncio.to_thread(predict, i) for i in range(calls)))

    try:
        loop.run_until_complete(requests())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    return state["most"], order


def test_concurrent_to_thread_calls_run_one_at_a_time_in_order():
    most, order = _overlap(serving.one_prediction_at_a_time())
    assert most == 1
    assert order == list(range(6))


def test_the_default_loop_overlaps_them():
    """The control: what MLflow's server does without it (several predictions in several threads at once)."""
    most, order = _overlap(asyncio.new_event_loop())
    assert most > 1
    assert sorted(order) == list(range(6))


def test_the_environment_names_the_factory_uvicorn_imports():
    from uvicorn.importer import import_from_string

    assert serving.ENV == {"UVICORN_LOOP": "mnist_pipeline.serving:one_prediction_at_a_time"}
    assert import_from_string(serving.ENV["UVICORN_LOOP"]) is serving.one_prediction_at_a_time
