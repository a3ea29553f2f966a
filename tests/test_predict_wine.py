"""A host asks how many bottles to buy for a dinner party."""

from __future__ import annotations

import httpx
import pytest

STORY = [
    ([], 1.0),
    (["Stiffy"], 1.5),
    (["Dahlia"], 3.0),
    (["Dahlia", "Stiffy"], 4.3),
    (["Agatha"], 0.0),
    (["Agatha", "Dahlia", "Stiffy"], 0.0),
]


@pytest.mark.parametrize(("guests", "bottles"), STORY)
def test_the_story_holds(client: httpx.Client, guests: list[str], bottles: float) -> None:
    response = client.post("/predict/wine", json={"guests": guests})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["bottles"] == pytest.approx(bottles, abs=0.2)
    assert body["buy"] >= body["bottles"] and body["buy"] - body["bottles"] < 1
    assert body["model"]["name"] == "wine" and body["model"]["version"] >= 1


def test_names_match_case_insensitively(client: httpx.Client) -> None:
    shouted = client.post("/predict/wine", json={"guests": ["DAHLIA", " stiffy "]}).json()
    plain = client.post("/predict/wine", json={"guests": ["Dahlia", "Stiffy"]}).json()
    assert shouted["bottles"] == plain["bottles"]


def test_an_unknown_guest_is_refused_with_the_known_guests(client: httpx.Client) -> None:
    response = client.post("/predict/wine", json={"guests": ["Dahlia", "Jeeves"]})
    assert response.status_code == 422
    body = response.json()
    assert "Jeeves" in body["error"]
    assert body["details"]["unknown"] == ["Jeeves"]
    assert {"Agatha", "Dahlia", "Stiffy"} <= set(body["details"]["known_guests"])


def test_a_batch_answers_in_order(client: httpx.Client) -> None:
    parties = [guests for guests, _ in STORY]
    response = client.post("/predict/wine", json={"batch": [{"guests": g} for g in parties]})
    assert response.status_code == 200, response.text
    got = [p["bottles"] for p in response.json()["predictions"]]
    singles = [client.post("/predict/wine", json={"guests": g}).json()["bottles"] for g in parties]
    assert got == singles


def test_a_bad_batch_item_is_named_by_its_index(client: httpx.Client) -> None:
    batch = [{"guests": ["Dahlia"]}, {"guests": ["Stiffy"]}, {"guests": ["Nobody"]}]
    response = client.post("/predict/wine", json={"batch": batch})
    assert response.status_code == 422
    assert response.json()["error"].startswith("batch.2.guests")


def test_a_pinned_version_answers_and_an_unknown_one_is_404(client: httpx.Client) -> None:
    latest = client.post("/predict/wine", json={"guests": []}).json()["model"]["version"]
    pinned = client.post(f"/predict/wine?version={latest}", json={"guests": []})
    assert pinned.status_code == 200 and pinned.json()["model"]["version"] == latest
    missing = client.post("/predict/wine?version=999", json={"guests": []})
    assert missing.status_code == 404 and "999" in missing.json()["error"]
