"""An operator tries a new model version on live traffic before promoting it: as a canary that
answers a share of the requests (the same share for the same client, on any replica), or as a
shadow that sees every request without answering any, its agreement with the serving version
counted. Set at start (NNSERVE_TRAFFIC, NNSERVE_SHADOW) or while serving (the admin API); a
setting the repository cannot follow is refused."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from dropin_models import CHURN_FEATURES, churn_graph, save, v2_request
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from samples import samples, versions

from service.app import create_app
from service.config import Settings
from service.config.traffic import parse_shadow, parse_traffic
from service.models.traffic import key_bucket

from support.inprocess import MakeClient, in_process_client
from support.server import MODELS_DIR, Server, StartServer

KEY = "traffic-admin-key-5d2"
ADMIN = {"Authorization": f"Bearer {KEY}"}
SHORT = {"text": "Lunch tomorrow at noon?"}
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


Labels = tuple[tuple[str, str], ...]


def _labels(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def _metric(server: Server | httpx.Client, name: str) -> dict[Labels, float]:
    """Every sample of one metric from /metrics, keyed by its labels."""
    if isinstance(server, Server):
        with server.client() as http:
            text = http.get("/metrics").text
    else:
        text = server.get("/metrics").text
    return {
        _labels(**sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def _wait_for(what: Callable[[], float], target: float, timeout: float = 15) -> float:
    """`what()` once it reaches `target` (shadow comparisons finish after their responses)."""
    deadline = time.monotonic() + timeout
    while (value := what()) < target and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def _versions_served(server: Server, model: str) -> dict[str, float]:
    return {
        dict(labels)["version"]: value
        for labels, value in _metric(server, "nnserve_model_inferences_total").items()
        if dict(labels)["model"] == model
    }


@pytest.mark.slow
def test_the_split_follows_the_weights_over_2000_requests(start_server: StartServer) -> None:
    server = start_server(NNSERVE_TRAFFIC="spam=2:90,1:10", NNSERVE_LOG_LEVEL="warning")
    answered: Counter[int] = Counter()
    with server.client() as http:
        for _ in range(2000):
            answer = http.post("/predict/spam", json=SHORT)
            assert answer.status_code == 200
            answered[answer.json()["model"]["version"]] += 1
        pinned = http.post("/predict/spam?version=1", json=SHORT).json()["model"]["version"]
    # v1 is Binomial(2000, 0.1): mean 200, standard deviation 13.4; the bounds are 4.5 of them.
    print(f"\n2,000 requests at 90/10: {dict(answered)}")
    assert set(answered) == {1, 2} and 140 <= answered[1] <= 260
    assert pinned == 1
    assert _versions_served(server, "spam") == {"1": answered[1] + 1, "2": answered[2]}


@pytest.mark.slow
def test_a_client_key_always_meets_the_same_version_on_any_replica(start_server: StartServer) -> None:
    setting = {"NNSERVE_TRAFFIC": "spam=2:50,1:50", "NNSERVE_LOG_LEVEL": "warning"}
    first, second = start_server(**setting), start_server(**setting)
    keys = [f"user-{n}" for n in range(200)]
    with first.client() as one, second.client() as other:

        def version(http: httpx.Client, key: str, query: str = "") -> int:
            answer = http.post(f"/predict/spam{query}", json=SHORT, headers={"X-Traffic-Key": key})
            return int(answer.json()["model"]["version"])

        met = {key: {version(one, key) for _ in range(3)} | {version(other, key)} for key in keys}
        v2_key = next(key for key, versions in met.items() if versions == {2})
        assert version(one, v2_key, "?version=1") == 1  # a pinned version wins over the key
        zeros = np.zeros((1, 10000), np.float32)
        infer = one.post(
            "/v2/models/spam/infer", json=v2_request("bag_of_words", zeros), headers={"X-Traffic-Key": v2_key}
        )
        assert infer.json()["model_version"] == "2"
    assert all(len(versions) == 1 for versions in met.values()), "a key met two versions"
    on_v1 = sum(versions == {1} for versions in met.values())
    print(f"\n200 keys at 50/50: {on_v1} on v1")
    assert 65 <= on_v1 <= 135  # Binomial(200, 0.5): mean 100, standard deviation 7.1


# Client keys and the bucket of 100 each lands in, as deployed: another hash, key encoding or
# modulus would move these users (and every other) to another version on the next deploy.
PINNED_BUCKETS = {
    **{"user-0": 73, "user-1": 68, "user-2": 64, "user-3": 33, "user-4": 65, "user-5": 85, "user-6": 36},
    **{"user-7": 49, "user-8": 8, "user-9": 22, "user-10": 6, "user-11": 24, "user-12": 86, "user-13": 24},
    **{"user-14": 56, "user-15": 65, "": 76, "Zoë": 22},
}


def test_a_client_keys_bucket_is_pinned() -> None:
    assert {key: key_bucket(key) for key in PINNED_BUCKETS} == PINNED_BUCKETS


def test_a_client_key_meets_its_buckets_version_on_any_replica(make_client: MakeClient) -> None:
    """Two replicas with the same weights: each key meets the version its pinned bucket says
    (under 50: the first named) on both, every time, unless the request pins a version."""
    replicas = [make_client(traffic="digit=2:50,1:50") for _ in range(2)]
    body = samples("digit")[0].input

    def version(http: httpx.Client, key: str, query: str = "") -> int:
        answer = http.post(
            f"/predict/digit{query}", json=body, headers={b"X-Traffic-Key": key.encode("latin-1")}
        )
        return int(answer.json()["model"]["version"])

    met = {key: {version(http, key) for http in replicas for _ in range(2)} for key in PINNED_BUCKETS}
    assert met == {key: {2 if bucket < 50 else 1} for key, bucket in PINNED_BUCKETS.items()}
    assert version(replicas[0], "user-8", "?version=1") == 1  # a pinned version wins over the key


def test_shadow_counts_equal_a_direct_comparison_of_the_two_versions(start_server: StartServer) -> None:
    """spam v1 shadows the serving version: its verdicts on the same emails, asked for directly,
    must disagree exactly as often as the shadow metrics say, and by as much."""
    server = start_server(
        NNSERVE_SHADOW="spam:1", NNSERVE_LOG_LEVEL="warning", NNSERVE_SHADOW_LOG_PER_MINUTE="5"
    )
    texts = [{"text": sample.input["text"]} for sample in samples("spam")[:120]]
    with server.client() as http:
        served = [http.post("/predict/spam", json=text).json() for text in texts]
        direct = http.post("/predict/spam?version=1", json={"batch": texts}).json()["predictions"]
    serving = str(served[0]["model"]["version"])
    assert serving != "1" and {str(s["model"]["version"]) for s in served} == {serving}
    flips = sum(s["spam"] != d["spam"] for s, d in zip(served, direct, strict=True))
    gap = sum(abs(s["probability"] - d["probability"]) for s, d in zip(served, direct, strict=True))
    labels = _labels(model="spam", shadow="1", version=serving)

    def rows(outcome: str) -> float:
        return _metric(server, "nnserve_shadow_rows_total").get(
            _labels(model="spam", shadow="1", version=serving, outcome=outcome), 0
        )

    compared = _wait_for(lambda: rows("agree") + rows("disagree"), len(texts))
    print(
        f"\nshadow v1 beside v{serving}, {len(texts)} emails: {rows('disagree'):.0f} flips (direct: {flips})"
    )
    assert compared == len(texts)
    assert rows("disagree") == flips and flips > 0
    difference = _metric(server, "nnserve_shadow_difference_sum")[labels]
    assert difference == pytest.approx(gap, abs=1e-4 * len(texts))
    assert _metric(server, "nnserve_shadow_difference_count")[labels] == len(texts)
    logged = server.wait_for_log("shadow disagrees", count=min(flips, 5))
    assert logged.count("shadow disagrees") == min(flips, 5)


def test_the_shadows_failures_never_reach_the_client(start_server: StartServer, tmp_path: Path) -> None:
    """churn v2, the shadow, fails on every input with a value over 0.5 (and only at run time:
    it loaded and warmed up): every client still gets v1's answer, and the failures are counted."""
    models = tmp_path / "models"
    save(churn_graph(), models / "churn" / "1")
    save(churn_graph(fail_above=0.5), models / "churn" / "2")
    server = start_server(NNSERVE_MODELS_DIR=str(models), NNSERVE_SHADOW="churn:2")
    inputs = [np.full((1, CHURN_FEATURES), 0.1 if n % 2 else 0.9, np.float32) for n in range(50)]
    with server.client() as http:
        answers = [http.post("/v2/models/churn/infer", json=v2_request("customer", x)) for x in inputs]
        pinned = http.post("/v2/models/churn/versions/2/infer", json=v2_request("customer", inputs[0]))
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["model_version"] for a in answers} == {"1"}
    for answer, other in zip(answers[:2], answers[2:4], strict=True):  # same input, same answer
        assert answer.json()["outputs"] == other.json()["outputs"]
    # Asked for directly, it fails: what onnxruntime cannot do with these inputs is the client's answer.
    assert pinned.status_code == 422 and pinned.json()["code"] == "inference_failed"
    labels = {"model": "churn", "shadow": "2", "version": "1"}

    def failed() -> float:
        return _metric(server, "nnserve_shadow_failures_total").get(_labels(**labels, reason="failed"), 0)

    def compared() -> float:
        return _metric(server, "nnserve_shadow_rows_total").get(_labels(**labels, outcome="unlabelled"), 0)

    assert _wait_for(lambda: compared() + failed(), len(inputs)) == len(inputs)
    assert failed() >= 25 and compared() > 0
    assert "shadow churn v2 failed" in server.wait_for_log("shadow churn v2 failed")


@pytest.fixture(scope="module")
def admin(make_client: MakeClient) -> httpx.Client:
    return make_client(admin_keys=[KEY])


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"weights": {"2": 80, "1": 10}}, 422, "spam: the weights add up to 90, not 100"),
        ({"weights": {"2": 90, "7": 10}}, 422, "spam: no version 7 (there are [1, 2"),
        ({"weights": {"two": 100}}, 422, "'two' is not a version number"),
        ({"weights": {"2": 100}, "shadow": 2}, 422, "spam v2 cannot be the shadow and take traffic too"),
        ({"shadow": 9}, 422, "spam: no version 9"),
        ({"weight": {"2": 100}}, 422, "weight"),
        ({"weights": {"2": True, "1": 99}}, 422, "weights.2: Input should be a valid integer"),
        ({"weights": {"2": "50", "1": 50}}, 422, "weights.2: Input should be a valid integer"),
        ({"weights": {"2": 50.0, "1": 50}}, 422, "weights.2: Input should be a valid integer"),
        ({"shadow": True}, 422, "shadow: Input should be a valid integer"),
    ],
)
def test_a_policy_the_repository_cannot_follow_is_refused(
    admin: httpx.Client, body: dict[str, object], status: int, message: str
) -> None:
    url = "/v2/repository/models/spam/traffic"
    old = {"weights": {"2": 30, "1": 70}, "shadow": None}
    assert admin.post(url, json=old, headers=ADMIN).status_code == 200
    try:
        refused = admin.post(url, json=body, headers=ADMIN)
        assert refused.status_code == status and message in refused.text
        assert admin.get("/models/spam").json()["traffic"] == old  # the old policy stays
    finally:
        admin.post(url, json={}, headers=ADMIN)


def test_the_policy_changes_through_the_admin_api_and_shows_in_models(admin: httpx.Client) -> None:
    url = "/v2/repository/models/spam/traffic"
    assert admin.post(url, json={}).status_code == 401  # the admin key, as for load and unload
    assert admin.post("/v2/repository/models/cat/traffic", json={}, headers=ADMIN).status_code == 404
    changed = admin.post(url, json={"weights": {"2": 0, "1": 100}}, headers=ADMIN)
    assert changed.json() == {"name": "spam", "weights": {"2": 0, "1": 100}, "shadow": None}
    assert admin.post("/predict/spam", json=SHORT).json()["model"]["version"] == 1
    assert admin.get("/models/spam").json()["traffic"] == {"weights": {"2": 0, "1": 100}, "shadow": None}
    # A shadow is never the default answer: the highest version, shadowed, is not promoted.
    *_, below, highest = versions("spam")
    admin.post(url, json={"shadow": highest}, headers=ADMIN)
    spam = admin.get("/models/spam").json()
    assert spam["latest_ready_version"] == below and spam["traffic"] == {"weights": None, "shadow": highest}
    assert admin.post("/predict/spam", json=SHORT).json()["model"]["version"] == below
    assert admin.post(f"/predict/spam?version={highest}", json=SHORT).json()["model"]["version"] == highest
    cleared = admin.post(url, json={}, headers=ADMIN).json()
    assert cleared == {"name": "spam", "weights": None, "shadow": None}
    assert admin.get("/models/spam").json()["traffic"] is None


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("spam=2:90,1:10;digit=2:50,1:50", None),
        ("spam=2:80,1:10", "spam: the weights add up to 90, not 100"),
        ("spam=2:90,2:10", "a version is named twice"),
        ("spam=2:100;spam=1:100", "spam is named twice"),
        ("spam=2-90", "'2-90' is not <version>:<percent>"),
        ("spam:2", "is not <model>=<version>:<percent>"),
        ("spam=x:100", "'x' is not a version number"),
    ],
)
def test_the_traffic_setting_is_checked_when_read(setting: str, error: str | None) -> None:
    if error is None:
        assert parse_traffic(setting) == {"spam": ((2, 90), (1, 10)), "digit": ((2, 50), (1, 50))}
        return
    with pytest.raises(ValidationError, match=error.replace("[", r"\[")):
        Settings(traffic=setting)


def test_the_shadow_setting_is_checked_when_read() -> None:
    assert parse_shadow("spam:3, digit:2") == {"spam": 3, "digit": 2}
    with pytest.raises(ValidationError, match="NNSERVE_SHADOW: 'spam' is not <model>:<version>"):
        Settings(shadow="spam")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"NNSERVE_TRAFFIC": "spam=2:90,9:10"}, "spam: no version 9 (there are [1, 2"),
        ({"NNSERVE_TRAFFIC": "spam=2:80,1:10"}, "spam: the weights add up to 90, not 100"),
        ({"NNSERVE_SHADOW": "digit:1", "NNSERVE_TRAFFIC": "digit=1:100"}, "digit v1 cannot be the shadow"),
    ],
    ids=["unknown version", "weights", "shadow taking traffic"],
)
def test_a_bad_setting_is_refused_at_start(
    start_server: StartServer, setting: dict[str, str], message: str
) -> None:
    with pytest.raises(RuntimeError, match="exited with") as refused:
        start_server(**setting)
    assert message in str(refused.value)


def test_a_shadow_whose_queue_is_full_drops_and_counts(make_client: MakeClient) -> None:
    """The queue holds NNSERVE_SHADOW_QUEUE_BYTES of requests; v2's bag of 10,000 words (40 KB)
    is over 1 KB alone, so every comparison is dropped, counted, and unseen by the client."""
    http = make_client(traffic="spam=2:100", shadow="spam:1", shadow_queue_bytes=1024)
    answers = [http.post("/predict/spam", json=SHORT) for _ in range(10)]
    assert {a.status_code for a in answers} == {200}
    (served,) = {a.json()["model"]["version"] for a in answers}
    assert served != 1
    metrics = http.get("/metrics").text
    labels = f'model="spam",reason="dropped",shadow="1",version="{served}"'
    assert f"nnserve_shadow_failures_total{{{labels}}} 10.0" in metrics
    assert "nnserve_shadow_rows_total{" not in metrics


def test_tensors_prepared_for_another_vocabulary_are_not_compared(make_client: MakeClient) -> None:
    """A V2 client sends spam's bag of words over the serving version's vocabulary (v2's); v1
    counts other words, so the same tensor would mean another email to it: not compared, and
    counted."""
    http = make_client(traffic="spam=2:100", shadow="spam:1")
    zeros = v2_request("bag_of_words", np.zeros((1, 10000), np.float32))
    served = http.post("/v2/models/spam/infer", json=zeros).json()["model_version"]
    labels = f'model="spam",reason="incomparable",shadow="1",version="{served}"'
    line = f"nnserve_shadow_failures_total{{{labels}}} 1.0"
    deadline = time.monotonic() + 10
    while line not in (metrics := http.get("/metrics").text) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert line in metrics and "nnserve_shadow_rows_total{" not in metrics


def test_a_shadow_with_other_input_tensors_is_compared_on_predictions(make_client: MakeClient) -> None:
    """The issue's own example: spam v3 (token ids) shadowing v2 (a bag of words). /predict/spam
    prepares the email for each version with its own card, so every request is compared."""
    http = make_client(traffic="spam=2:100", shadow="spam:3")
    for _ in range(5):
        answer = http.post("/predict/spam", json=SHORT)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == 2
    ours = _labels(model="spam", shadow="3", version="2")

    def compared() -> float:
        rows = _metric(http, "nnserve_shadow_rows_total")
        return sum(value for key, value in rows.items() if set(ours) <= set(key))

    deadline = time.monotonic() + 10
    while compared() < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert compared() == 5


# Which of spam v3 and v2 the keys user-0 .. user-39 met at 50/50 before traffic keys were bytes:
# users must not move.
ASCII_PICKS = "2223223333332322323322322333333333323232"
NON_ASCII_KEYS = [
    "café",
    "naïve",
    "Ünïcödé",
    "日本",
    "ключ",
    "ελληνικά",
    "emoji-🙂",
    "ß-7",
    "ø",
    "à-la",
    "Ω",
    "ñ",
]


def test_a_traffic_key_picks_by_its_bytes_over_rest_as_over_grpc() -> None:
    """The same X-Traffic-Key bytes meet the same version whichever protocol carries them: REST
    hands the data plane the header's bytes; gRPC hands it the metadata value as grpc decoded it
    (UTF-8), as service/grpc/servicer.py does. Plain ASCII keys meet what they always met."""
    app = create_app(Settings(models_dir=MODELS_DIR, traffic="spam=3:50,2:50", log_level="warning"))
    with in_process_client(app) as http:

        def over_rest(key: bytes) -> int:
            answer = http.post("/predict/spam", json=SHORT, headers=[(b"X-Traffic-Key", key)])
            return int(answer.json()["model"]["version"])

        over_grpc = {key: app.dataplane.model("spam", None, key).version for key in NON_ASCII_KEYS}
        assert {key: over_rest(key.encode()) for key in NON_ASCII_KEYS} == over_grpc
        assert set(over_grpc.values()) == {2, 3}, "both versions were picked"
        assert "".join(str(over_rest(f"user-{n}".encode())) for n in range(40)) == ASCII_PICKS


def test_the_shadow_judges_what_the_client_got(make_client: MakeClient) -> None:
    """The client's verdicts follow the operator's threshold (here 0: everything is spam) and a
    test pattern's answer: the shadow is judged alike, so the two never disagree, and the rows
    the pattern answered, which no network ran, are not compared."""
    oldest = versions("spam")[0]
    http = make_client(shadow=f"spam:{oldest}", spam_threshold=0.0)
    emails = [{"text": sample.input["text"]} for sample in samples("spam")[:120]]
    answers = http.post("/predict/spam", json={"batch": [*emails, {"text": GTUBE}]}).json()
    assert {a["spam"] for a in answers["predictions"]} == {True}
    serving = str(answers["model"]["version"])

    def compared(outcome: str) -> float:
        labels = _labels(model="spam", shadow=str(oldest), version=serving, outcome=outcome)
        return _metric(http, "nnserve_shadow_rows_total").get(labels, 0)

    assert _wait_for(lambda: compared("agree") + compared("disagree"), len(emails)) == len(emails)
    assert compared("disagree") == 0
