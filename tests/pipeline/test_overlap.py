"""Read-ahead, background writes and the device lock (faket_dask.pipeline.overlap)."""

from __future__ import annotations

import threading
import time

import pytest

from faket_dask.pipeline.overlap import Background, device_lock, read_ahead

pytestmark = pytest.mark.timeout(60)


def test_read_ahead_keeps_order_and_runs_ahead():
    produced: list[int] = []

    def items():
        for i in range(6):
            produced.append(i)
            yield i

    seen = []
    for item in read_ahead(items(), depth=1):
        if item == 0:
            deadline = time.monotonic() + 5
            while len(produced) < 2 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert len(produced) >= 2  # item 1 was computed while the consumer held item 0
        seen.append(item)
    assert seen == list(range(6))


def test_read_ahead_runs_on_another_thread_and_zero_depth_does_not():
    main = threading.get_ident()

    def items():
        yield threading.get_ident()

    assert next(iter(read_ahead(items(), depth=0))) == main
    (other,) = list(read_ahead(items(), depth=1))
    assert other != main


def test_read_ahead_reraises_the_producers_error_at_its_item():
    def items():
        yield 1
        raise ValueError("slab 2 failed")

    got = []
    with pytest.raises(ValueError, match="slab 2 failed"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [1]


def test_read_ahead_stops_the_producer_when_the_consumer_stops():
    produced: list[int] = []

    def items():
        for i in range(1000):
            produced.append(i)
            yield i

    for item in read_ahead(items(), depth=2):
        if item == 3:
            break
    time.sleep(0.2)
    assert len(produced) <= 3 + 1 + 2 + 1  # the consumed, the queue and the one in hand


def test_background_runs_in_order_on_one_thread_and_bounds_the_queue():
    order: list[int] = []
    threads: set[int] = set()
    running = {"now": 0, "most": 0}
    gate = threading.Lock()

    def job(i: int) -> int:
        with gate:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        threads.add(threading.get_ident())
        time.sleep(0.01)
        order.append(i)
        with gate:
            running["now"] -= 1
        return i * i

    with Background(max_pending=2) as bg:
        futures = [bg.submit(job, i) for i in range(8)]
        assert len(bg._pending) <= 2
    assert order == list(range(8))
    assert [f.result() for f in futures] == [i * i for i in range(8)]
    assert len(threads) == 1 and threading.get_ident() not in threads
    assert running["most"] == 1
    assert bg.busy_s >= 8 * 0.01


def test_background_reraises_on_exit_and_skips_later_calls():
    done: list[int] = []

    def job(i: int) -> None:
        if i == 1:
            raise OSError("disk full")
        time.sleep(0.05)
        done.append(i)

    with pytest.raises(OSError, match="disk full"):
        with Background(max_pending=8) as bg:
            for i in range(6):
                bg.submit(job, i)
    assert 0 in done and len(done) < 5  # queued calls after the error were cancelled


def test_background_submit_surfaces_an_earlier_error():
    def bad() -> None:
        raise RuntimeError("write failed")

    bg = Background(max_pending=1)
    bg.submit(bad)
    with pytest.raises(RuntimeError, match="write failed"):
        bg.submit(lambda: None)  # waits for the first, which raised
    bg.close(cancel=True)


def test_background_drops_queued_calls_when_the_caller_fails():
    done: list[int] = []
    with pytest.raises(KeyError):
        with Background(max_pending=4) as bg:
            bg.submit(time.sleep, 0.1)
            bg.submit(done.append, 1)
            raise KeyError("caller")
    assert done == []


def test_background_rejects_an_empty_queue():
    with pytest.raises(ValueError):
        Background(max_pending=0)


def test_device_lock_is_one_lock_per_device_and_excludes_threads():
    assert device_lock("cuda:0") is device_lock("cuda:0")
    assert device_lock("cpu") is not device_lock("cuda:0")
    inside = {"now": 0, "most": 0}

    def stage() -> None:
        for _ in range(20):
            with device_lock("test-device"):
                inside["now"] += 1
                inside["most"] = max(inside["most"], inside["now"])
                time.sleep(0.001)
                inside["now"] -= 1

    workers = [threading.Thread(target=stage) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert inside["most"] == 1
