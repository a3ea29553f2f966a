"""A text is read as an RFC 822 message only when it opens with a real header block; otherwise
every word of it is body. HTML parts lose nothing a browser would show."""

from __future__ import annotations

import email
import email.message
from typing import Any

import pytest
from samples import samples

from service.features import email_text, email_tokens, spam
from service.features.spam import HEADERS_TOKEN, header_block_end, read_email


@pytest.mark.parametrize(
    "text",
    [
        "URGENT: claim your FREE prize now!!! click here",
        "Re: meeting tomorrow\nCan we move it to 3pm? The room is booked.",
        "ATTENTION: your account\nwill be closed unless you reply today",
        "P.S.: don't forget the tickets\nsee you at the station",
        "From the desk of Mr John Smith\nI have a business proposal for you",
        "From the desk of Mr John Smith\n\nI have a business proposal for you",
    ],
    ids=[
        "urgent-one-line",
        "re-first-line",
        "attention-first-line",
        "ps-first-line",
        "from-the-desk",
        "from-the-desk-blank-line",
    ],
)
def test_a_body_that_starts_with_a_colon_or_from_keeps_every_word(text: str) -> None:
    assert header_block_end(text) is None
    assert email_text(text) == text
    assert HEADERS_TOKEN not in email_tokens(text)


def test_urgent_claim_your_prize_is_read_as_its_words() -> None:
    tokens = email_tokens("URGENT: claim your FREE prize now!!! click here")
    assert tokens == {"urgent", "claim", "your", "free", "prize", "now", "!", "click", "here"}


def test_header_looking_lines_without_the_blank_line_stay_body() -> None:
    """The blank line that ends a header block is required, so nothing typed is dropped."""
    text = "Date: Friday\nTime: 3pm\nPlace: the usual cafe"
    assert header_block_end(text) is None
    assert {"date", "friday", "time", "3pm", "place", "cafe"} <= email_tokens(text)


def test_one_unknown_field_before_a_blank_line_is_body_but_two_fields_are_headers() -> None:
    assert header_block_end("Note: bring snacks\n\nsee you there") is None
    assert email_tokens("Note: bring snacks\nTime: 3pm\n\nsee you there") == {
        "see",
        "you",
        "there",
        HEADERS_TOKEN,
    }


@pytest.mark.parametrize(
    ("text", "first_word"),
    [
        ("http://example.com/offer\nX-Fake: 1\n\ncheap pills", "http"),
        ("10:30 works\nSubject: x\n\nok", "works"),
    ],
    ids=["url", "time"],
)
def test_a_url_or_a_time_at_the_start_is_not_a_field(text: str, first_word: str) -> None:
    """A field's colon is followed by white space, as every mailer writes it."""
    assert header_block_end(text) is None
    assert first_word in email_tokens(text)


def test_leading_blank_lines_do_not_hide_the_headers() -> None:
    message = "\nSubject: hi\nFrom: a@b\n\nbody"
    parsed = read_email(message)
    assert parsed.headers and parsed.subject == "hi" and parsed.body.strip() == "body"
    assert email_tokens(message) == {"hi", "body", HEADERS_TOKEN}


def test_a_real_email_is_read_as_headers_and_body() -> None:
    message = (
        "Return-Path: <alice@example.com>\r\n"
        "Received: from mail.example.com (mail.example.com [192.0.2.1])\r\n"
        "\tby mx.example.org; Mon, 1 Jul 2002 10:00:00 +0000\r\n"
        "From: Alice <alice@example.com>\r\n"
        "To: bob@example.org\r\n"
        "Subject: Minutes of the meeting\r\n"
        "Date: Mon, 1 Jul 2002 10:00:00 +0000\r\n"
        "Message-ID: <1234@example.com>\r\n"
        "\r\n"
        "Attached are the minutes.\r\n"
    )
    assert header_block_end(message) == message.index("Attached")
    assert email_tokens(message) == {"minutes", "of", "the", "meeting", "attached", "are", HEADERS_TOKEN}


def test_folded_headers_stay_headers() -> None:
    message = "Subject: a subject that is\n  folded over two lines\nX-Mailer: something\n\nthe body\n"
    parsed = read_email(message)
    assert parsed.headers and "folded" in parsed.subject
    assert email_tokens(message) == {
        "a",
        "subject",
        "that",
        "is",
        "folded",
        "over",
        "two",
        "lines",
        "the",
        "body",
        HEADERS_TOKEN,
    }


def test_an_mbox_from_line_followed_by_headers_stays_an_email() -> None:
    message = (
        "From alice@example.com Mon Jul  1 10:00:00 2002\n"
        "From: alice@example.com\n"
        "Subject: quarterly report\n"
        "\n"
        "The report is attached.\n"
    )
    parsed = read_email(message)
    assert parsed.headers and parsed.subject == "quarterly report"
    assert "alice" not in email_tokens(message) and "report" in email_tokens(message)


def test_one_standard_field_is_enough() -> None:
    assert read_email("Subject: lunch?\n\nnoon at the usual place").subject == "lunch?"
    assert read_email("X-Spam-Flag: YES\n\nbuy now").headers


def test_html_with_an_unclosed_head_gives_its_text() -> None:
    markup = "<html><head><title>Hi</title><body><p>Buy cheap meds now</p>"
    assert email_tokens(markup) == {"buy", "cheap", "meds", "now"}
    message = "Subject: x\nContent-Type: text/html\n\n" + markup
    assert {"buy", "cheap", "meds", "now"} <= email_tokens(message)


def test_html_with_an_unclosed_title_gives_the_text_after_it() -> None:
    message = "Subject: x\nContent-Type: text/html\n\n<html><head><title>Hi<body><p>Buy cheap meds"
    assert {"buy", "cheap", "meds"} <= email_tokens(message)


@pytest.mark.parametrize("element", ["script", "style"])
def test_an_unclosed_script_or_style_ends_with_its_part(element: str) -> None:
    """As in a browser, the rest of the HTML part is script; the other parts and the subject
    are untouched."""
    message = (
        "Subject: cheap watches\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="XX"\n'
        "\n"
        "--XX\n"
        "Content-Type: text/html\n"
        "\n"
        f"<html><body><p>limited offer</p><{element}>var hidden = 1; <p>secret</p>\n"
        "--XX\n"
        "Content-Type: text/plain\n"
        "\n"
        "replica watches for sale\n"
        "--XX--\n"
    )
    tokens = email_tokens(message)
    assert {"cheap", "watches", "limited", "offer", "replica", "sale"} <= tokens
    assert not tokens & {"var", "hidden", "secret"}


def test_a_text_without_headers_never_reaches_the_email_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path: a cheap check on the first lines decides, before any parsing."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the email parser was called for a text without headers")

    monkeypatch.setattr(email, "message_from_bytes", refuse)
    assert email_text("Can you review my pull request when you get a chance?").startswith("Can")


_SINGLE_PART = {
    "crlf-folded-subject": "From: a@b.c\r\nSubject: cheap\r\n\twatches today\r\n\r\nBuy now\r\nor never\r\n",
    "encoded-word-subject": "From: a@b.c\nSubject: =?utf-8?b?R3LDvMOfZQ==?= and more\n\nhello",
    "quoted-charset": 'From: a@b.c\nContent-Type: text/plain; charset="UTF-8"\n\nna\u00efve \u2014 ok',
    "no-charset-non-ascii-body": "From: a@b.c\nSubject: x\n\nna\u00efve caf\u00e9",
    "unknown-charset": "From: a@b.c\nContent-Type: text/plain; charset=x-nonsense\n\nstill read",
    "base64": "From: a@b.c\nContent-Transfer-Encoding: base64\n\nQnV5IGNoZWFwIHdhdGNoZXM=\n",
    "quoted-printable-html": (
        "From: a@b.c\nContent-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n"
        "<html><body><p>Cheap =3D good</p></body></html>"
    ),
    "mbox-from-line": "From someone Tue Sep 24 2002\nFrom: a@b.c\nSubject: hi\n\nbody text",
    "duplicate-content-type": "From: a@b.c\nContent-Type: text/html\nContent-Type: text/plain\n\n<b>bold</b>",
    "not-text": "From: a@b.c\nContent-Type: application/octet-stream\n\nno words here",
    "lone-cr-in-body": "From: a@b.c\nSubject: s\n\nline one\rline two\n",
}
_PARSER_ONLY = {
    "multipart": (
        "From: a@b.c\nContent-Type: multipart/alternative; boundary=XX\n\n"
        "--XX\nContent-Type: text/plain\n\nplain words\n--XX--\n"
    ),
    "lone-cr-in-headers": "From: a@b.c\rSubject: s\nTo: d@e.f\n\nbody",
    "non-ascii-header": "From: a@b.c\nSubject: caf\u00e9\n\nbody",
    "attached-message": "From: a@b.c\nContent-Type: message/rfc822\n\nSubject: inner\n\ninner body",
}


def _with_the_parser_only(monkeypatch: pytest.MonkeyPatch, raw: str | bytes) -> object:
    monkeypatch.setattr(spam, "_single_part", lambda *_: None)
    read = read_email(raw)
    monkeypatch.undo()
    return read


def _takes_the_fast_path(monkeypatch: pytest.MonkeyPatch, raw: str | bytes) -> bool:
    """Whether reading `raw` got by without the email package's parser."""
    calls: list[object] = []
    parse = email.message_from_bytes

    def counted(*args: Any, **kwargs: Any) -> email.message.Message:
        calls.append(args)
        return parse(*args, **kwargs)

    monkeypatch.setattr(email, "message_from_bytes", counted)
    read_email(raw)
    monkeypatch.undo()
    return not calls


@pytest.mark.parametrize("name", [*_SINGLE_PART, *_PARSER_ONLY])
def test_a_single_part_email_reads_the_same_without_the_email_parser(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {**_SINGLE_PART, **_PARSER_ONLY}[name]
    assert _takes_the_fast_path(monkeypatch, raw) == (name in _SINGLE_PART)
    for form in (raw, raw.encode("utf-8")):
        assert read_email(form) == _with_the_parser_only(monkeypatch, form)


def test_every_held_out_email_reads_the_same_without_the_email_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The served models' held-out emails (real SpamAssassin mail): the fast path gives exactly
    what the email package gives, so training (which reads every email through read_email too)
    and serving agree whichever path an email takes."""
    emails = [s.input["text"] for version in (1, 2) for s in samples("spam", version)]
    fast = [raw for raw in emails if header_block_end(raw) and _takes_the_fast_path(monkeypatch, raw)]
    assert len(fast) > len(emails) // 2, "the fast path should cover most real mail"
    for raw in emails:
        assert read_email(raw) == _with_the_parser_only(monkeypatch, raw), raw[:300]
