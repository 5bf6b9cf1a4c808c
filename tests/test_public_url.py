"""The public URL (token audiences, sign-in links) follows the address ihub listens on unless it is set."""

from __future__ import annotations

from ihub.config import Settings


def test_unset_public_url_is_the_listening_address() -> None:
    assert Settings(_env_file=None).public_url == "http://127.0.0.1:8080"
    assert Settings(_env_file=None, port=9100).public_url == "http://127.0.0.1:9100"
    assert Settings(_env_file=None, host="0.0.0.0", port=9100).public_url == "http://127.0.0.1:9100"
    assert Settings(_env_file=None, host="::1", port=9100).public_url == "http://[::1]:9100"


def test_serve_port_moves_a_derived_public_url_but_never_a_set_one() -> None:
    assert Settings(_env_file=None).listening_on(None, 9200).public_url == "http://127.0.0.1:9200"
    explicit = Settings(_env_file=None, public_url="https://hub.example/")
    assert explicit.public_url == "https://hub.example"
    assert explicit.listening_on("0.0.0.0", 9200).public_url == "https://hub.example"
    assert explicit.listening_on("0.0.0.0", 9200).port == 9200
