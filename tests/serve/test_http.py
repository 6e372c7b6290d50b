"""The HTTP pieces under the app: answers serialised once, and a response's writes sent together."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json

import numpy as np
import pydantic
import pytest
import torch
from pydantic import BaseModel

from lepton_ai.serve.answers import json_response
from lepton_ai.serve.http import _Coalescing


class Point(BaseModel):
    x: float


@pydantic.dataclasses.dataclass
class Aliased:
    a: int = pydantic.Field(serialization_alias="A")


@dataclasses.dataclass
class Plain:
    a: int
    _b: int


@pytest.mark.parametrize(
    "content, expected",
    [
        # float32 kept short
        ({"outputs": np.array([[0.1, -2.5e-7]], dtype=np.float32)}, {"outputs": [[0.1, -2.5e-7]]}),
        # not contiguous
        ({"outputs": np.arange(6, dtype=np.int64).reshape(3, 2)[:, 0]}, {"outputs": [0, 2, 4]}),
        ({"outputs": torch.tensor([1.5, float("nan")])}, {"outputs": [1.5, None]}),
        ({"outputs": [float("inf"), 1]}, {"outputs": [None, 1]}),
        # what only pydantic-core writes
        ({"p": Point(x=1.0), "n": 2**70}, {"p": {"x": 1.0}, "n": 2**70}),
        # written by pydantic-core as before orjson: aliases, underscored fields, UTC as Z
        (
            [Aliased(a=1), Plain(1, 2), datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)],
            [{"A": 1}, {"a": 1, "_b": 2}, "2026-01-02T00:00:00Z"],
        ),
    ],
)
def test_json_response_writes_arrays_tensors_and_models(content, expected) -> None:
    body = json_response(content).body
    assert json.loads(body) == expected
    assert b"NaN" not in body and b"Infinity" not in body
    if (
        isinstance(content, dict)
        and isinstance(content.get("outputs"), np.ndarray)
        and content["outputs"].dtype == np.float32
    ):
        # the float32's shortest form, not 0.10000000149011612
        assert b"0.1," in body


class Recorder:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_turn_leave_in_one_send() -> None:
    async def main() -> list[list[bytes]]:
        raw = Recorder()
        t = _Coalescing(raw)  # type: ignore[arg-type]
        seen = []
        t.write(b"head")
        # the second write of the turn sends both at once
        t.write(b"body")
        seen.append(list(raw.sent))
        # a lone write (a HEAD answer) leaves at the end of the turn
        t.write(b"alone")
        seen.append(list(raw.sent))
        await asyncio.sleep(0)
        seen.append(list(raw.sent))
        t.write(b"last")
        # what is held goes out before the close
        t.close()
        seen.append(list(raw.sent) + [b"closed" if raw.closed else b"open"])
        # everything else is the transport's
        seen.append([t.get_extra_info("peername").encode()])
        return seen

    assert asyncio.run(main()) == [
        [b"headbody"],
        [b"headbody"],
        [b"headbody", b"alone"],
        [b"headbody", b"alone", b"last", b"closed"],
        [b"info:peername"],
    ]
