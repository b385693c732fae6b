"""The local Cloud Run's URLs as the deployer reaches them: on the host of its API endpoint
(``http://cloudrun:8123`` from a Dagger checker), unchanged on 127.0.0.1 and on Google's."""

from __future__ import annotations

from google.cloud import run_v2

from flightcheck.cloudrun.client import Connection


def _service() -> run_v2.Service:
    return run_v2.Service(
        uri="http://127.0.0.1:41001", urls=["http://127.0.0.1:41001"],
        traffic_statuses=[run_v2.TrafficTargetStatus(revision="s-1", percent=100),
                          run_v2.TrafficTargetStatus(tag="candidate",
                                                     uri="http://127.0.0.1:41002")])


def test_urls_are_reached_at_the_api_endpoints_host() -> None:
    conn = Connection("http://cloudrun:8123", anonymous=True)
    assert conn.reach("http://127.0.0.1:41002/v1/evaluate?x=1") == \
        "http://cloudrun:41002/v1/evaluate?x=1"
    assert conn.reach("http://localhost:41002") == "http://cloudrun:41002"
    seen = conn.reach_service(original := _service())
    assert (seen.uri, list(seen.urls)) == ("http://cloudrun:41001", ["http://cloudrun:41001"])
    assert [s.uri for s in seen.traffic_statuses] == ["", "http://cloudrun:41002"]
    assert original.uri == "http://127.0.0.1:41001"  # a copy: what the API said stays


def test_urls_stay_as_they_are_on_loopback_elsewhere_and_on_googles_api() -> None:
    for conn in (Connection("http://127.0.0.1:8123", anonymous=True),
                 Connection(None, anonymous=False),
                 Connection("https://run.example.test", anonymous=False)):
        assert conn.reach("http://127.0.0.1:41002") == "http://127.0.0.1:41002"
        assert conn.reach_service(_service()).uri == "http://127.0.0.1:41001"
    remote = Connection("http://cloudrun:8123", anonymous=True)
    assert remote.reach("https://svc-abc.a.run.app") == "https://svc-abc.a.run.app"
    assert remote.reach("http://10.1.2.3:80") == "http://10.1.2.3:80"  # not the emulator's
