"""The Gateway sends a request again when the API answers that it was not processed and says when to come back
(Retry-After), as client-go does; anything else fails at once, with the API's own message."""

from __future__ import annotations

from pathlib import Path

import pytest

from dittoctl.api.kinds import CONFIGMAPS
from dittoctl.kube import gateway
from dittoctl.kube.gateway import RETRY_AFTER_MAX_SECONDS, ApiError, Gateway, retry_after
from tests.support.scripted_api import response, scripted_api

INITIALISING = response("429 Too Many Requests", b'{"message": "storage is (re)initializing"}', "Retry-After: 0\r\n")
UNAVAILABLE = response("503 Service Unavailable", b'{"message": "try later"}', "Retry-After: 0\r\n")
CONFIG_MAP = response("200 OK", b'{"metadata": {"name": "demo"}}')


def test_only_an_answer_that_says_when_to_come_back_is_retried_and_writes_only_when_refused_outright() -> None:
    assert retry_after(429, "PATCH", "1") == 1.0  # refused before it was handled (priority and fairness)
    assert retry_after(429, "POST", "0") == 0.0
    assert retry_after(503, "GET", "2") == 2.0
    assert retry_after(503, "PATCH", "2") is None  # a write's 5xx may have been applied: the pass decides
    assert retry_after(429, "GET", None) is None  # no Retry-After: the caller's backoff
    assert retry_after(500, "GET", None) is None
    assert retry_after(404, "GET", "1") is None
    assert retry_after(429, "GET", "3600") == RETRY_AFTER_MAX_SECONDS
    assert retry_after(429, "GET", "-5") == 0.0
    assert retry_after(429, "GET", "Wed, 21 Oct 2026 07:28:00 GMT") == 1.0


@pytest.mark.asyncio
async def test_a_request_refused_with_retry_after_is_sent_again_then_answered(tmp_path: Path) -> None:
    answers = [INITIALISING, UNAVAILABLE, CONFIG_MAP]
    async with scripted_api(tmp_path, answers.__getitem__) as api:
        got = await Gateway(api.client).get(CONFIGMAPS, "demo", "ns")
        assert got == {"metadata": {"name": "demo"}}
        assert api.served == [b"/api/v1/namespaces/ns/configmaps/demo"] * 3


@pytest.mark.asyncio
async def test_retries_end_and_the_apis_message_is_the_error(tmp_path: Path) -> None:
    async with scripted_api(tmp_path, lambda _: INITIALISING) as api:
        with pytest.raises(ApiError, match="storage is \\(re\\)initializing") as raised:
            await Gateway(api.client).get(CONFIGMAPS, "demo", "ns")
        assert raised.value.status == 429 and len(api.served) == 1 + gateway.RETRY_AFTER_ATTEMPTS
    async with scripted_api(tmp_path, lambda _: UNAVAILABLE) as api:
        with pytest.raises(ApiError, match="try later"):
            await Gateway(api.client).apply({"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": "demo", "namespace": "ns"}})
        assert len(api.served) == 1  # a write's 5xx is not sent again
