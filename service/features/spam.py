"""An email (raw RFC 822 or just a body) as the spam network's input: a binary bag of words, as a
dense vector over the vocabulary (spam v1, v2) or as the ids of the words present (v3 on); from
spam v4, also the hashed spelling pieces of the words the vocabulary lacks and what its links, phone
numbers and money amounts are (`Subwords`, `Links`)."""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import functools
import html.parser
import re
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np

from service.features.errors import FeatureError

_TOKEN = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*|[$!%\u00a3]")
_FALLBACK_CHARSET = "latin-1"
# A pseudo-token for "this text opened with a header block". A whole message and a pasted body
# differ in more than words (length, quoting, signatures); with this token in its vocabulary a
# model can tell which it was given. The tokenizer never makes it ("<" is not a token character),
# and a vocabulary without it (spam v1's) simply ignores it.
HEADERS_TOKEN = "<headers>"
# Pseudo-tokens for a token's shape (spam v3 on): how long its runs of digits are (a short code to
# text, a premium-rate number, a price) and whether it is a link. The number itself is rarely seen
# twice; its shape is, and text-message spam is full of them. Each comes from one token, so an
# explanation can take a word out with the shapes only it made. Older vocabularies ignore them.
_DIGIT_RUN = re.compile(r"[0-9]+")
_LINK = re.compile(r"www|http|\.(?:com|net|org|info|biz|co\.uk)$")

# A header block as RFC 5322 lays it out: optionally an mbox "From " line, then fields (a name of
# printable ASCII but the colon, a colon, a value) each followed by its folded continuation lines
# (starting with a space or tab), then the blank line that separates header and body. The colon
# must be followed by white space or the end of the line: every real mailer writes one, and it
# keeps "http://..." and "10:30" from passing for fields. Each kind of line starts with its own
# kind of character and every line can be matched one way only (a CR is either inside a value or
# alone before the LF), so the match never backtracks: it is linear, and stops at the first line
# that is not a header.
_LEADING_BLANK_LINES = re.compile(r"(?:[ \t]*\r?\n)*")
_HEADER_BLOCK = re.compile(
    r"(?:From [^\n]*\n)?"
    r"(?:[!-9;-~]+:(?:[ \t][^\n]*|\r)?\n(?:[ \t][^\n]*\n)*)+"
    r"\r?\n"
)
_FIELD_NAME = re.compile(r"^([!-9;-~]+):", re.MULTILINE)
_STANDARD_FIELDS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "date",
        "received",
        "message-id",
        "return-path",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "delivered-to",
        "reply-to",
        "sender",
        "in-reply-to",
        "references",
    }
)
# The kinds of text a spam card may give decision thresholds of their own (BagOfWords.kind).
TextKind = Literal["email", "text"]
_HTML_DOCUMENT = re.compile(r"\s*<(?:!doctype\s+html|html|head|body)[\s>]", re.IGNORECASE)


def header_block_end(text: str) -> int | None:
    """Where the body starts if `text` opens with a real header block, else None.

    A block counts when it has two fields or more, or one standard field (From, Subject, Date,
    Received, Content-Type, any X-...): one line such as "URGENT: claim your prize" or
    "Re: meeting tomorrow" followed by text is a body that starts with a colon, not a header.
    The blank line that ends the block is required (RFC 5322 puts it before every body): without
    it, "Date: Friday\nTime: 3pm" would be read as a message with no text at all, and every word
    the sender typed would be dropped. Leading blank lines are skipped.
    This runs before any parsing, so a text without headers never reaches the email parser.
    """
    start = _LEADING_BLANK_LINES.match(text).end()  # type: ignore[union-attr]  # matches the empty string: never None
    block = _HEADER_BLOCK.match(text, start)
    if block is None:
        return None
    names = [name.lower() for name in _FIELD_NAME.findall(text, start, block.end())]
    if len(names) < 2 and not any(n in _STANDARD_FIELDS or n.startswith("x-") for n in names):
        return None
    return block.end()


class _HTMLText(html.parser.HTMLParser):
    """Collects the text a reader sees in an HTML part, following HTML's own parsing rules.

    Script and style content is never shown; html.parser reads it as raw text up to its end tag,
    so an unclosed <script> or <style> hides the rest of its part (as a browser would), and the
    other parts and the subject are untouched because each part gets its own parser. A <title>
    is not page text, but it holds only text, so any tag inside one means its end tag was left
    out, and ends it. Nothing else is hidden: text in an unclosed <head> shows in a browser, and
    a <body> start tag ends the head.
    """

    _HIDDEN = frozenset({"script", "style", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden = tag in self._HIDDEN

    def handle_endtag(self, tag: str) -> None:
        self._hidden = False

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(data)


def html_to_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    return " ".join(parser.chunks)


def _decode_part(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or _FALLBACK_CHARSET
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode(_FALLBACK_CHARSET, errors="replace")


def body_text(text: str) -> str:
    """A text without headers as the reader sees it: an HTML document's visible text, else itself."""
    return html_to_text(text) if _HTML_DOCUMENT.match(text) else text


class EmailText(NamedTuple):
    """What a reader sees of a message: its subject and body, and whether it came with headers
    (a text without them has no subject)."""

    subject: str
    body: str
    headers: bool


def read_email(raw: str | bytes) -> EmailText:
    """The subject and the text of every text/plain and text/html part, in order.

    Accepts a raw RFC 822 message (with headers) or just a body (see header_block_end). Broken
    charsets and transfer encodings are tolerated rather than refused, because spam is often
    malformed on purpose.
    """
    text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
    start = _LEADING_BLANK_LINES.match(text).end()  # type: ignore[union-attr]  # matches the empty string: never None
    end = header_block_end(text)
    if end is None:
        return EmailText("", body_text(text[start:]), headers=False)
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", errors="surrogatepass")
    message = _single_part(text, data, start, end)
    if message is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Leading blank lines are ASCII, so `start` counts bytes as well as characters.
            message = email.message_from_bytes(data[start:], policy=email.policy.compat32)
    parts = []
    for part in message.walk():
        # "text/plain charset=us-ascii" (no semicolon) is still plain text.
        content_type = part.get_content_type().split()[0]
        if content_type == "text/plain":
            parts.append(_decode_part(part))
        elif content_type == "text/html":
            parts.append(html_to_text(_decode_part(part)))
    return EmailText(_header_text(message.get("Subject", "")), "\n".join(parts), headers=True)


def _single_part(text: str, data: bytes, start: int, end: int) -> email.message.Message | None:
    """The message the email package's parser would build from `data[start:]`, built without
    running that parser, when the result is certain to be the same; else None.

    Most mail is one text part, and the parser (a line-by-line state machine written in Python)
    was most of a 2 KB email's serving cost. Certain means: a header block of ASCII without a
    lone CR (so it splits into the same lines, and its offsets in `text` are byte offsets in
    `data`), and a single part (not multipart/*, not message/*, which the parser would split
    further). The fields go in through the policy's own `header_source_parse`, as the parser
    puts them in, and the body as the parser leaves it (bytes as ASCII with surrogate escapes),
    so decoding the part afterwards runs the same code either way. A test compares the two on
    real mail."""
    block = text[start:end]
    if not block.isascii() or "\r" in block.replace("\r\n", ""):
        return None
    lines = block.split("\n")[:-2]  # the blank line that ends the block, and what follows it
    if lines and lines[0].startswith("From "):
        lines = lines[1:]  # the mbox envelope line: the parser keeps it aside, not as a field
    fields: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            fields[-1].append(line + "\n")
        else:
            fields.append([line + "\n"])
    message = email.message.Message(policy=email.policy.compat32)
    for field in fields:
        message.set_raw(*email.policy.compat32.header_source_parse(field))
    if message.get_content_maintype() in ("multipart", "message"):
        return None
    message.set_payload(data[end:].decode("ascii", errors="surrogateescape"))
    return message


Email = str | bytes | EmailText  # a text as sent, or as read_email already read it


def _read(raw: Email) -> EmailText:
    return raw if isinstance(raw, EmailText) else read_email(raw)


def email_text(raw: Email) -> str:
    """The words a reader sees: the subject and the body, as one text."""
    subject, body, _ = _read(raw)
    return f"{subject}\n{body}" if subject else body


def _header_text(value: object) -> str:
    try:
        parts = email.header.decode_header(str(value))
    except (ValueError, LookupError):
        return str(value)
    text = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                chunk = chunk.decode(charset or _FALLBACK_CHARSET, errors="replace")
            except LookupError:
                chunk = chunk.decode(_FALLBACK_CHARSET, errors="replace")
        text.append(chunk)
    return " ".join(text)


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _digits_shape(length: int) -> str:
    return (
        "<digits:"
        + ("1-2" if length <= 2 else "3-4" if length <= 4 else "5-6" if length <= 6 else "7+")
        + ">"
    )


@functools.lru_cache(maxsize=1 << 16)
def token_shapes(token: str) -> tuple[str, ...]:
    """The shape pseudo-tokens one token makes (see _DIGIT_RUN). Cached: most tokens are common
    words met in every other email, and an explanation asks for each word's shapes again."""
    shapes = [_digits_shape(len(run)) for run in _DIGIT_RUN.findall(token)]
    if _LINK.search(token):
        shapes.append("<link>")
    return tuple(shapes)


def email_tokens(raw: Email) -> set[str]:
    """The distinct tokens of an email (the bag of words is binary, so counts do not matter) and
    their shapes, plus HEADERS_TOKEN when it came with a header block."""
    parsed = _read(raw)
    tokens = set(tokenize(f"{parsed.subject}\n{parsed.body}"))
    tokens.update([shape for token in tokens for shape in token_shapes(token)])
    if parsed.headers:
        tokens.add(HEADERS_TOKEN)
    return tokens


# ----------------------------------------------------------------------------- spam v4's extras


class Subwords(NamedTuple):
    """Spelling pieces (spam v4 on), fastText's way: the character n-grams of "<word>", `shortest`
    to `longest` long, each hashed (CRC-32) into one of `buckets` extra rows of the first layer.
    Only a word the vocabulary lacks gets them: a known word has a row of its own, learnt from many
    texts, while a misspelling, an obfuscation or an unseen brand ("verifcation", "acc0unt") would
    otherwise count for nothing; pieces for every word would also cost a long email ten times the
    rows. Only a word gets them: letters with at most two digits, no full stop (a host's parts
    are read as a link), at most MAX_PIECE_WORD characters; not a number, a code or encoded junk,
    which would only add noise. Each piece weighs `weight` in the bag (a word's dozen pieces
    together about one word's weight, as fastText averages them), so a long email's hundreds of
    unknown names do not drown its words."""

    buckets: int
    shortest: int
    longest: int
    weight: float = 1.0


MAX_PIECE_WORD = 20
_PIECE_WORD = re.compile(r"[a-z0-9']*[a-z][a-z0-9']*")


def has_pieces(token: str) -> bool:
    return (
        len(token) <= MAX_PIECE_WORD
        and bool(_PIECE_WORD.fullmatch(token))
        and sum(c.isdigit() for c in token) <= 2
    )


@functools.lru_cache(maxsize=1 << 16)
def subword_buckets(token: str, pieces: Subwords) -> tuple[int, ...]:
    """The distinct buckets of the token's pieces (see Subwords), ascending; none but for a word."""
    if not has_pieces(token):
        return ()
    marked = f"<{token}>"
    found = {
        zlib.crc32(marked[start : start + n].encode()) % pieces.buckets
        for n in range(pieces.shortest, pieces.longest + 1)
        for start in range(len(marked) - n + 1)
    }
    return tuple(sorted(found))


# What a link, a phone number or a money amount is, as tokens of the bag (spam v4 on). A link,
# number or amount is one unit of the text (an explanation names it and takes it out whole), made
# of the ordinary tokens it holds plus these.
SHORT_LINK = "<shortened link>"
IP_LINK = "<link to an IP address>"
RANDOM_HOST = "<random-looking host>"
BRAND_HOST = "<brand inside another domain>"
PHONE = "<phone number>"
MONEY = "<money amount>"
LINK = "<link>"
LINK_FEATURES = (LINK, SHORT_LINK, IP_LINK, RANDOM_HOST, BRAND_HOST, PHONE, MONEY)

# Top-level domains a bare host ("usps-redelivery.com/track") is recognised by; with a scheme or
# "www." any host is a link. Shortener domains end in some of the rarer ones (is.gd, rb.gy). Those
# that are also English words typed without a space after a full stop ("go.to", "it.is", "join.us")
# are left out: a bare host there would be a typo more often than a link.
_TLDS = (
    "com|net|org|info|biz|edu|gov|mil|int|io|co|uk|ca|au|in|de|fr|eu|ru|cn|jp|br|nl|es|ch|se|"
    "ly|gd|gl|gy|me|cc|tk|ml|ga|cf|gq|pw|ws|su|li|vu|xyz|top|site|online|club|app|"
    "link|live|shop|store|vip|click|icu|buzz|support|help|page|mobi|tv|one|today|services"
)
_URL = (
    r"(?:https?://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]"
    r"|(?<![\w@.-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:" + _TLDS + r")(?![\w-])"
    r"(?:[/?#][^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}])?"
)
_AMOUNT = r"\d(?:[\d,]*\d)?(?:\.\d+)?"
_MONEY = (
    r"[$\u00a3\u20ac]\s?" + _AMOUNT + r"(?:\s?(?:k|m|bn|million|billion)\b)?"
    r"|" + _AMOUNT + r"\s?(?:usd|dollars?|pounds?|gbp|euros?|eur|inr|rs)\b"
    r"|\b(?:rs|inr|usd)\.?\s?" + _AMOUNT
)
_PHONE = r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3,4}\)[ .-]?|\d{3,5}[ .-]?)\d{3,4}[ .-]?\d{3,4}(?!\w)"
_UNITS = {"url": _URL, "money": _MONEY, "phone": _PHONE}
# What every link, amount and number starts with (a scheme or "www.", a host's first label and its
# full stop, a currency sign, a digit, "+" or "(", a currency's name): checked first, so that at an
# ordinary word the regex goes straight to the word, which made reading a text 2-3 times faster.
# It only rules out what the alternatives could not match, so it changes no unit.
_UNIT_START = r"(?=https?://|www\.|[a-z0-9][a-z0-9-]*\.|[$\u00a3\u20ac+(0-9]|rs|inr|usd)"


def _unit_pattern(named: bool) -> re.Pattern[str]:
    """A link, amount or phone number (each a group of its name if `named`), else a token."""
    kinds = (f"(?P<{name}>{pattern})" if named else f"(?:{pattern})" for name, pattern in _UNITS.items())
    return re.compile(_UNIT_START + "(?:" + "|".join(kinds) + ")|" + _TOKEN.pattern)


_UNIT = _unit_pattern(named=True)  # which kind one unit is (its last group)
# The same units without groups, so that findall gives their strings with no match object each:
# a quarter less time a text than finditer.
_UNITS_IN_TEXT = _unit_pattern(named=False)
_IP_HOST = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_HOST = re.compile(r"^(?:https?://)?([^/?#:\s]+)")
_SECOND_LEVEL = frozenset({"co", "com", "gov", "org", "ac", "net", "edu"})
_VOWELS = frozenset("aeiouy")
SHORT_BRAND = 6  # a brand name shorter than this counts only as a whole part of a host ("ups" is in "groups")


def registered_domain(host: str) -> str:
    """The part of a host its owner registered: the last two labels, or three under a country's
    second level (amazon.co.uk)."""
    labels = host.split(".")
    country = len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL
    return ".".join(labels[-3:] if country else labels[-2:])


def _random_label(label: str) -> bool:
    letters = [c for c in label if c.isalpha()]
    digits = sum(c.isdigit() for c in label)
    if len(label) >= 8 and letters and digits >= 2:
        return True
    return len(letters) >= 10 and sum(c in _VOWELS for c in letters) < 0.2 * len(letters)


class Links:
    """Finds the links, phone numbers and money amounts of a text (spam v4 on) and says what they
    are: any link; one through a shortener (`shorteners`: the card's list of their domains); one
    to an IP address; one to a long or random-looking host (30 characters or more, or a label
    of 8+ mixing letters and digits, or of 10+ letters almost without vowels); one whose host
    names a brand (`brands`: name -> the domains it owns) but is not the brand's own
    (irs.gov.direct-capitals.com, usps-redelivery.com)."""

    def __init__(self, shorteners: Iterable[str], brands: Mapping[str, Sequence[str]]) -> None:
        self.shorteners = frozenset(shorteners)
        self.brands = {brand: tuple(domains) for brand, domains in brands.items()}

    def units(self, text: str) -> list[str]:
        """The text's units in reading order: each link, phone number and money amount whole, and
        every other token as `tokenize` finds it."""
        units: list[str] = _UNITS_IN_TEXT.findall(text.lower())
        return units

    def features(self, unit: str) -> tuple[str, ...]:
        match = _UNIT.fullmatch(unit)
        if match is None or match.lastgroup is None:
            return ()
        if match.lastgroup == "phone":
            return (PHONE,)
        if match.lastgroup == "money":
            return (MONEY,)
        return (LINK, *self._host_features(_HOST.match(unit).group(1)))  # type: ignore[union-attr]  # a link has a host

    def _host_features(self, host: str) -> list[str]:
        host = host.removeprefix("www.")
        if _IP_HOST.fullmatch(host):
            return [IP_LINK]
        found = []
        if host in self.shorteners:
            found.append(SHORT_LINK)
        labels = host.split(".")[:-1]
        if len(host) >= 30 or any(_random_label(label) for label in labels):
            found.append(RANDOM_HOST)
        if self._borrowed_brand(host):
            found.append(BRAND_HOST)
        return found

    def _borrowed_brand(self, host: str) -> bool:
        parts = set(re.split(r"[.-]", host))
        owner = registered_domain(host)
        for brand, domains in self.brands.items():
            named = brand in parts or (len(brand) >= SHORT_BRAND and brand in host)
            if named and owner not in domains:
                return True
        return False


class BagOfWords:
    """Binary bag of words over a fixed vocabulary (the model card's), index built once: a dense
    vector with a 1 for each vocabulary word present, the input of spam v1 and v2."""

    def __init__(self, vocabulary: Sequence[str], input_name: str = "bag_of_words") -> None:
        self.vocabulary = list(vocabulary)
        self.input_name = input_name
        self._index = {token: i for i, token in enumerate(self.vocabulary)}

    def tokenize(self, text: str) -> list[str]:
        """The units of the text an explanation takes out one at a time: here its tokens."""
        return tokenize(text)

    def unit_ids(self, unit: str) -> frozenset[int]:
        """The ids one token makes: its vocabulary word's and its shapes'."""
        names = (unit, *token_shapes(unit))
        return frozenset(self._index[name] for name in names if name in self._index)

    def known(self, unit: str) -> bool:
        """Whether an explanation examines the unit: a vocabulary word."""
        return unit in self._index

    def ids(self, raw: Email) -> np.ndarray:
        """The vocabulary indices of the words in `raw`, ascending, each once."""
        return np.array(sorted(self._index[t] for t in email_tokens(raw) if t in self._index), dtype=np.int64)

    def encode(self, raw: Email) -> np.ndarray:
        vector = np.zeros(len(self.vocabulary), dtype=np.float32)
        vector[self.ids(raw)] = 1.0
        return vector

    def present(self, row: np.ndarray) -> list[int]:
        return [int(i) for i in np.flatnonzero(row)]

    def kind(self, row: np.ndarray) -> TextKind:
        """'email' when the row holds HEADERS_TOKEN (the text came with a header block), else
        'text': the kinds a card's per-kind thresholds name, told apart the same way in training
        and in serving. A vocabulary without the token calls every text 'text'."""
        headers = self._index.get(HEADERS_TOKEN)
        return "email" if headers is not None and headers in self.present(row) else "text"

    def feeds(self, rows: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {self.input_name: np.stack(rows)}

    def ablations(self, row: np.ndarray, removed: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """One row per entry of `removed` (at least one): the row with those vocabulary words out."""
        rows = np.repeat(row[np.newaxis], len(removed), axis=0)
        for n, indices in enumerate(removed):
            rows[n, list(indices)] = 0.0
        return {self.input_name: rows}


# A batch's token tensors are padded to the next of these widths (or a multiple of the last), so
# requests of similar length share a shape and the model's runner can batch them together. The
# steps are at most half again the width below (not doubling): onnxruntime's time grows with the
# width, padding included (spam v4 at one thread: 21 us a row at 160 ids, 28 us at 256), and a
# 2 KB email's 140-odd ids (v4's words and pieces) would otherwise pay for 256.
_WIDTHS = (8, 16, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 512)


def padded_width(tokens: int) -> int:
    for width in _WIDTHS:
        if tokens <= width:
            return width
    return -(-tokens // _WIDTHS[-1]) * _WIDTHS[-1]


class TokenIds(BagOfWords):
    """The same binary bag of words in sparse form (spam v3 on): the ids of the vocabulary words
    present and a weight for each (1; 0 pads a row to the batch's width). The network's first
    layer sums the embedding rows of the ids, each times its weight: the dense vector times the
    weight matrix, at a cost that grows with the words in the text rather than the vocabulary.

    `test_patterns` (the card's) name strings that make a text spam whatever its words, such as
    SpamAssassin's GTUBE, which mail administrators send to test a filter end to end.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        input_names: tuple[str, str] = ("token_ids", "weights"),
        test_patterns: dict[str, str] | None = None,
        subwords: Subwords | None = None,
        links: Links | None = None,
    ) -> None:
        super().__init__(vocabulary, input_names[0])
        self.weights_name = input_names[1]
        self.test_patterns = dict(test_patterns or {})
        self.subwords = subwords
        self.links = links
        # Ids past the vocabulary are the spelling pieces' buckets.
        self.size = len(self.vocabulary) + (subwords.buckets if subwords else 0)
        self._unit_ids: dict[str, frozenset[int]] = {}

    def tokenize(self, text: str) -> list[str]:
        """The units of the text this encoder reads and an explanation takes out one at a time:
        the tokens, or with `links` each link, phone number and money amount whole."""
        return self.links.units(text) if self.links else tokenize(text)

    def unit_ids(self, unit: str) -> frozenset[int]:
        """The ids one unit of the text makes: those of the tokens in it (each its vocabulary word or,
        without one, its spelling pieces; and their shapes) and what it is as a link, number or
        amount. Cached, as token_shapes is: most units are common words."""
        ids = self._unit_ids.get(unit)
        if ids is None:
            if len(self._unit_ids) >= 1 << 16:
                self._unit_ids.clear()
            ids = self._unit_ids[unit] = frozenset(self._make_ids(unit))
        return ids

    def _make_ids(self, unit: str) -> set[int]:
        tokens = tokenize(unit) if self.links else [unit]
        names = {*tokens, *(shape for token in tokens for shape in token_shapes(token))}
        if self.links:
            names.update(self.links.features(unit))
        ids = {self._index[name] for name in names if name in self._index}
        if self.subwords:
            offset = len(self.vocabulary)
            for token in tokens:
                if token not in self._index:
                    ids.update(offset + bucket for bucket in subword_buckets(token, self.subwords))
        return ids

    def known(self, unit: str) -> bool:
        """Whether an explanation examines the unit: a vocabulary word, or from spam v4 on any
        unit that makes an id (pieces, a link's features)."""
        if self.subwords or self.links:
            return bool(self.unit_ids(unit))
        return unit in self._index

    def ids(self, raw: Email) -> np.ndarray:
        if not (self.subwords or self.links):
            return super().ids(raw)
        parsed = _read(raw)
        ids: set[int] = set()
        for unit in set(self.tokenize(f"{parsed.subject}\n{parsed.body}")):
            ids.update(self.unit_ids(unit))
        if parsed.headers and HEADERS_TOKEN in self._index:
            ids.add(self._index[HEADERS_TOKEN])
        return np.array(sorted(ids), dtype=np.int64)

    def encode(self, raw: Email) -> np.ndarray:
        return self.ids(raw)

    def present(self, row: np.ndarray) -> list[int]:
        return [int(i) for i in row]

    def test_pattern(self, text: str) -> str | None:
        """The name of the first test pattern found anywhere in `text`, if any."""
        return next((name for name, pattern in self.test_patterns.items() if pattern in text), None)

    def weights(self, ids: np.ndarray) -> np.ndarray:
        """Each id's weight in the bag: 1 for a vocabulary entry, the pieces' weight for a piece."""
        if self.subwords is None:
            return np.ones(len(ids), dtype=np.float32)
        return np.where(ids < len(self.vocabulary), 1.0, self.subwords.weight).astype(np.float32)

    def feeds(self, rows: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        width = padded_width(max(len(row) for row in rows))
        ids = np.zeros((len(rows), width), dtype=np.int64)
        weights = np.zeros((len(rows), width), dtype=np.float32)
        for n, row in enumerate(rows):
            ids[n, : len(row)] = row
            weights[n, : len(row)] = self.weights(row)
        return {self.input_name: ids, self.weights_name: weights}

    def _repeated(self, row: np.ndarray, count: int) -> dict[str, np.ndarray]:
        """feeds([row] * count), built as one row repeated."""
        one = self.feeds([row])
        return {name: np.repeat(tensor, count, axis=0) for name, tensor in one.items()}

    def ablations(self, row: np.ndarray, removed: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Each word is taken out by zeroing its weight, so every row keeps one width."""
        feeds = self._repeated(row, len(removed))
        place = {token: n for n, token in enumerate(row.tolist())}
        weights = feeds[self.weights_name]
        for n, indices in enumerate(removed):
            for i in indices:
                weights[n, place[i]] = 0.0
        return feeds

    def check(self, feeds: dict[str, np.ndarray]) -> None:
        """Tensors a client built itself (the V2 protocol): one shape for both, ids in the vocabulary."""
        ids, weights = feeds[self.input_name], feeds[self.weights_name]
        if ids.shape != weights.shape:
            raise FeatureError(
                f"{self.input_name} {list(ids.shape)} and {self.weights_name} {list(weights.shape)} "
                "must have one shape"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise FeatureError(f"{self.input_name} must be in [0, {self.size - 1}]")
