"""Every answer shape Zoho documents, folded into one Effect."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from datetime import UTC, datetime
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey
from hypothesis import given
from hypothesis import strategies as st

from watcher.auth import Refusal, read_token_answer
from watcher.classify import TOO_LARGE, UNRECOGNISED, classify, failure_kind, parse_retry_after
from watcher.zoho_api import MASS_UPDATE, Effect

NOW = 1_700_000_000.0


def answer(status: int, body: object, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return classify(MASS_UPDATE, status, headers or {}, raw, NOW)


def error(code: str, **details: object) -> dict[str, object]:
    return {"code": code, "details": details, "message": "m", "status": "error"}


def test_status_row_is_observed_with_counts() -> None:
    row = {
        "Status": "RUNNING",
        "Failed_Count": 1,
        "Updated_Count": 40,
        "Not_Updated_Count": 2,
        "Total_Count": 100,
    }
    result = answer(200, {"data": [row]})
    assert result.effect is Effect.OBSERVED
    assert result.observation is not None
    assert result.observation.status == "RUNNING"
    assert result.observation.counts == {
        "failed_count": 1,
        "updated_count": 40,
        "not_updated_count": 2,
        "total_count": 100,
    }


def test_counts_that_are_not_ints_are_unknown_not_guessed() -> None:
    result = answer(
        200, {"data": [{"Status": "COMPLETED", "Failed_Count": "3", "Total_Count": True}]}
    )
    assert result.observation is not None
    assert result.observation.counts["failed_count"] is None
    assert result.observation.counts["total_count"] is None


def test_counts_beyond_64_bits_are_unknown() -> None:
    """No real job has them, and the event stream could not write them as numbers."""
    huge = b'{"data": [{"Status": "RUNNING", "Total_Count": 99999999999999999999999}]}'
    result = answer(200, huge)
    assert result.observation is not None
    assert result.observation.counts["total_count"] is None


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (204, b""),
        (404, error("NOT_FOUND")),
        (400, error("INVALID_DATA", param_name="job_id")),
        (400, error("INVALID_DATA", api_name="job_id")),
        (400, error("INVALID_DATA")),  # details {}: as Zoho's schema has them
        (400, {"code": "INVALID_DATA", "message": "invalid data", "status": "error"}),
    ],
)
def test_not_found_shapes(status: int, body: object) -> None:
    assert answer(status, body).effect is Effect.NOT_FOUND


@pytest.mark.parametrize("named", [{"param_name": "module"}, {"api_name": "Status"}])
def test_invalid_data_about_another_parameter_is_not_not_found(named: dict[str, str]) -> None:
    assert answer(400, error("INVALID_DATA", **named)).effect is Effect.TRANSIENT


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("MANDATORY_NOT_FOUND", 400),
        ("INVALID_URL_PATTERN", 404),
        ("OAUTH_SCOPE_MISMATCH", 401),
        ("NO_PERMISSION", 403),
        ("AUTHORIZATION_FAILED", 400),
        ("INVALID_MODULE", 400),
        ("INVALID_REQUEST_METHOD", 400),
        ("NOT_SUPPORTED", 400),
    ],
)
def test_documented_refusals_reject(code: str, status: int) -> None:
    result = answer(status, error(code))
    assert (result.effect, result.code, result.http_status) == (Effect.REJECTED, code, status)


@pytest.mark.parametrize("code", ["INVALID_TOKEN", "AUTHENTICATION_FAILURE", "INVALID_OAUTHTOKEN"])
def test_token_refusals_are_auth(code: str) -> None:
    assert answer(401, error(code)).effect is Effect.AUTH
    # Known by name, not only by its 401: inside an HTTP 200's data[] too.
    assert answer(200, {"data": [error(code)]}).effect is Effect.AUTH


@pytest.mark.parametrize(
    "shape",
    [
        lambda e: (200, {"data": [e]}),
        lambda e: (200, e),
        lambda e: (400, e),
        lambda e: (400, {"data": [e]}),
    ],
)
def test_error_object_in_every_shape(shape) -> None:  # type: ignore[no-untyped-def]
    status, body = shape(error("INVALID_MODULE"))
    assert answer(status, body).effect is Effect.REJECTED


def test_429_is_rate_limited_with_retry_after() -> None:
    result = answer(429, error("TOO_MANY_REQUESTS"), {"Retry-After": "7"})
    assert (result.effect, result.retry_after) == (Effect.RATE_LIMITED, 7.0)


def test_429_without_a_body_is_still_rate_limited() -> None:
    assert answer(429, b"slow down").effect is Effect.RATE_LIMITED


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (500, error("INTERNAL_ERROR"), "INTERNAL_ERROR"),
        (503, b"<html>unavailable</html>", "http_503"),
        (200, b'{"data": [{"Status": "RUN', "malformed_response"),
        (200, b"", "malformed_response"),
        (200, {"data": [{"Status": "EXPLODED"}]}, "unknown_status"),
        (200, {"data": []}, "malformed_response"),
        (200, [1, 2], "malformed_response"),
        (404, b"not json", "http_404"),
        (400, error("SOMETHING_NEW"), "SOMETHING_NEW"),
    ],
)
def test_transient_answers(status: int, body: object, code: str) -> None:
    result = answer(status, body)
    assert (result.effect, result.code) == (Effect.TRANSIENT, code)


def test_retry_after_as_http_date() -> None:
    date = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(30.0)


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
def test_an_http_date_without_a_zone_is_gmt_whatever_the_local_zone(
    zone: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The asctime form and "-0000" carry no zone; HTTP dates are GMT all the same (RFC 9110)."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        moment = datetime.fromtimestamp(NOW + 30, UTC)
        for date in (moment.strftime("%a %b %d %H:%M:%S %Y"), format_datetime(moment)):
            assert parse_retry_after(date, NOW) == pytest.approx(30.0), date
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("value", ["²", "-5", "1" * 19, "12a"])
def test_a_credits_header_that_is_no_plain_number_is_ignored_and_the_row_kept(
    value: str,
) -> None:
    result = answer(200, {"data": [{"Status": "COMPLETED"}]}, {"X-API-CREDITS-REMAINING": value})
    assert (result.effect, result.credits_remaining) == (Effect.OBSERVED, None)


@pytest.mark.parametrize(
    ("status", "code", "effect"),
    [
        (500, "INVALID_MODULE", Effect.TRANSIENT),
        (503, "NOT_FOUND", Effect.TRANSIENT),
        (502, "INVALID_TOKEN", Effect.TRANSIENT),
        (429, "INTERNAL_ERROR", Effect.RATE_LIMITED),
        (503, "INVALID_DATA", Effect.TRANSIENT),
        (429, "INVALID_DATA", Effect.RATE_LIMITED),
    ],
)
def test_server_trouble_and_the_rate_limit_win_over_the_code_in_the_body(
    status: int, code: str, effect: Effect
) -> None:
    """A 5xx says the server failed, a 429 that the org is over its limit, whatever the body
    names: neither may end a job or the watcher, and a 429 must still pause everybody."""
    assert answer(status, error(code, param_name="job_id")).effect is effect


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "nan", "inf"])
def test_unusable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


@given(
    status=st.integers(100, 599),
    body=st.binary(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(["data", "code", "status", "Status", "details"]), inner
            )
        ),
        max_leaves=10,
    ).map(lambda doc: json.dumps(doc).encode()),
    retry_after=st.none() | st.text(max_size=30),
    credits=st.none() | st.text(max_size=20),
)
def test_any_answer_classifies_without_raising(
    status: int, body: bytes, retry_after: str | None, credits: str | None
) -> None:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    if credits is not None:
        headers["X-API-CREDITS-REMAINING"] = credits
    result = classify(MASS_UPDATE, status, headers, body, NOW)
    assert isinstance(result.effect, Effect)
    assert (result.observation is not None) == (result.effect is Effect.OBSERVED)


def test_failures_that_waiting_cannot_heal_are_named_apart_from_a_refused_connection() -> None:
    key = ConnectionKey("zohoapis.com", 443, True, True, None, None, None)
    certificate = ssl.SSLCertVerificationError("self-signed certificate in certificate chain")
    unresolved = OSError(socket.EAI_NONAME, "Name or service not known")
    refused = ConnectionRefusedError(111, "Connection refused")
    assert failure_kind(aiohttp.ClientConnectorCertificateError(key, certificate)) == "tls_error"
    assert failure_kind(aiohttp.ClientConnectorDNSError(key, unresolved)) == "dns_error"
    assert failure_kind(aiohttp.ClientConnectorError(key, refused)) == "connection_error"


def test_a_count_of_zero_is_zero_not_unknown() -> None:
    """Most jobs fail no records: a Failed_Count of 0 read as unknown would leave every such job
    without progress or an eta, which count the records done, failed ones included."""
    result = answer(200, {"data": [{"Status": "RUNNING", "Failed_Count": 0, "Total_Count": 10}]})
    assert result.observation is not None
    assert result.observation.counts["failed_count"] == 0


def test_an_error_without_a_status_field_keeps_zohos_code() -> None:
    """Zoho's own code decides what an error means; a body that names it without "status" must
    still reject the job, not be retried forever as a bare HTTP 404."""
    result = answer(404, {"code": "INVALID_URL_PATTERN", "details": {}, "message": "m"})
    assert (result.effect, result.code) == (Effect.REJECTED, "INVALID_URL_PATTERN")


def test_a_300_is_no_success_even_with_a_status_row() -> None:
    """Only a 2xx answer says the job's status; anything else is retried, whatever its body."""
    row = {"Status": "COMPLETED", "Failed_Count": 0, "Updated_Count": 10, "Total_Count": 10}
    result = answer(300, {"data": [row]})
    assert (result.effect, result.code) == (Effect.TRANSIENT, "http_300")


@pytest.mark.parametrize(
    "value", ["0", format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)]
)
def test_a_retry_after_of_zero_or_in_the_past_means_at_once(value: str) -> None:
    """Both are valid headers asking for no wait: neither is ignored as unusable, nor read as a
    negative wait."""
    assert parse_retry_after(value, NOW) == 0.0


SECRET = "1000.2fbe376f6414ff670bf35baedec07214.692c88260d42da9f485b567980a1b2c3d4"


@pytest.mark.parametrize(
    "echoed",
    [
        f"BAD_Zoho-oauthtoken {SECRET}",  # the header it was sent
        SECRET[:64],  # a part: the scrubbing of every line finds whole secrets only
        SECRET.upper()[:40],
        base64.b64encode(SECRET[5:37].encode()).decode(),
        f"rejected refresh_token={SECRET}",
    ],
)
def test_a_code_echoing_a_secret_shows_none_of_it(echoed: str) -> None:
    """A proxy or gateway that echoes what it was sent: only codes written as Zoho writes them
    are shown, and every credential of Zoho's holds digits."""
    body = json.dumps({"code": echoed, "status": "error"}).encode()
    assert classify(MASS_UPDATE, 500, {}, body, 0.0).code == UNRECOGNISED
    token_answer = json.dumps({"error": echoed}).encode()
    assert read_token_answer(200, token_answer) == Refusal(UNRECOGNISED, False)


@pytest.mark.parametrize("code", ["INVALID_TOKEN", "invalid_client", "Access Denied", "X" * 64])
def test_codes_written_as_zoho_writes_them_are_shown(code: str) -> None:
    body = json.dumps({"code": code, "status": "error"}).encode()
    assert classify(MASS_UPDATE, 500, {}, body, 0.0).code == code


def test_an_answer_too_large_to_read_still_means_what_its_status_says() -> None:
    """Its body unread, a 429 still pauses every job for as long as it asks, and a 200 is a
    failure to retry; a token answer too large is one too."""
    limited = classify(MASS_UPDATE, 429, {"Retry-After": "30"}, None, NOW)
    assert (limited.effect, limited.code, limited.retry_after) == (
        Effect.RATE_LIMITED,
        TOO_LARGE,
        30.0,
    )
    assert classify(MASS_UPDATE, 200, {}, None, NOW)[:4] == (Effect.TRANSIENT, 200, None, TOO_LARGE)
    assert read_token_answer(200, None) == Refusal(TOO_LARGE, False)
