"""/metrics is rendered by one thread at a time; scrapes meanwhile get the previous page."""

from __future__ import annotations

import itertools
import threading

from safehold.api.metrics import Rendering


def test_scrapes_get_the_previous_page_while_one_renders_the_next() -> None:
    pages = (f"page {i}".encode() for i in itertools.count(1))
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def render() -> bytes:
        calls.append(1)
        if len(calls) == 2:  # the background rendering: held until released
            started.set()
            assert release.wait(30)
        return next(pages)

    r = Rendering(render, ttl=0.0, cpu_share=1e9)  # always stale: every scrape may refresh
    assert r.get() == b"page 1"  # the first scrape renders and waits for it
    assert r.get() == b"page 1"  # stale: served at once, the next rendered behind it
    assert started.wait(30)
    for _ in range(5):  # while it renders, nobody starts another
        assert r.get() == b"page 1"
    assert len(calls) == 2
    release.set()
    for _ in range(1000):  # the new page replaces the old once rendered
        if r.get() != b"page 1":
            break
        threading.Event().wait(0.01)
    assert r.get() != b"page 1"


def test_a_fresh_page_is_not_rendered_again() -> None:
    calls: list[int] = []

    def render() -> bytes:
        calls.append(1)
        return b"page"

    r = Rendering(render, ttl=3600.0)
    assert [r.get() for _ in range(10)] == [b"page"] * 10
    assert len(calls) == 1
