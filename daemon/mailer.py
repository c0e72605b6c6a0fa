"""Outgoing mail: render templates, compose RFC 5322 messages, DKIM-sign them.

Job: turn a template name, a language and a context into a subject, a text body and an HTML
body (CSS inlined), then into the exact bytes the send role will hand to a relay. Pure: no
network, no database, no clock except ``Date`` when none is given.

May touch: the template folders it is given (read only). Nothing else.

Safety (RELIABILITY.md 6.5, B-OUT-01..04):
  * HTML is autoescaped with ``autoescape=True`` (never suffix-based ``select_autoescape``);
    text bodies and subjects come from an overlay of the same environment without escaping.
  * ``StrictUndefined``: a missing variable is an error, not an empty string.
  * Templates are loaded only from the given folders, never built from data.
  * Every address must re-serialize identically and contain no control characters; message
    ids are single printable tokens; the subject is folded to one line; attachment names are
    reduced to a safe base name; the serialized header block is parsed back and must have
    exactly the headers we set (defence against email-library serialization bugs such as
    CVE-2024-6923 on unpatched Pythons).

Known limits: ASCII addresses only (no SMTPUTF8); no S/MIME; a CSS ``@media`` rule is
dropped by the inliner (layouts are single-column and need none).
"""

from __future__ import annotations

import functools
import re
import secrets
import sys
import unicodedata
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, parseaddr
from pathlib import Path

import css_inline
import dkim as dkimpy
import jinja2
from babel.dates import format_date as babel_format_date
from babel.dates import format_time as babel_format_time
from babel.numbers import format_currency, format_decimal

_SOURCE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# A source checkout or editable install has templates/ beside daemon/; a wheel installs them
# as data files under <prefix>/share/facturd/templates.
PACKAGED_TEMPLATES = (_SOURCE_TEMPLATES if _SOURCE_TEMPLATES.is_dir()
                      else Path(sys.prefix) / "share" / "facturd" / "templates")
FALLBACK_LANGUAGES = ("en", "fr")
AUTO_SUBMITTED = ("no", "auto-generated", "auto-replied", "auto-notified")

# Rejection reasons offered on the approval page and quoted in decision notices (the codes
# of the French e-invoicing lifecycle "refusée" status).
REASON_CODES: dict[str, dict[str, str]] = {
    "DOUBLON": {"fr": "Facture en doublon", "en": "Duplicate invoice"},
    "MONTANTTOTAL_ERR": {"fr": "Montant total erroné", "en": "Wrong total amount"},
    "CALCUL_ERR": {"fr": "Erreur de calcul", "en": "Calculation error"},
    "CMD_ERR": {"fr": "Référence de commande erronée", "en": "Wrong purchase order reference"},
    "NON_CONFORME": {"fr": "Facture non conforme", "en": "Non-compliant invoice"},
    "AUTRE": {"fr": "Autre motif", "en": "Other reason"},
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = re.compile(rf"^{_ATEXT}(?:\.{_ATEXT})*$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")
_MSGID = re.compile(r"^<[!-;=?-~]+@[!-;=?-~]+>$")
_CID = re.compile(r"^[A-Za-z0-9._-]{1,64}@[A-Za-z0-9.-]{1,190}$")
_MIME = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_LANG = re.compile(r"^[a-z]{2,3}$")
_UNSAFE_FILENAME = re.compile(r'[<>:"/\\|?*;\s]+')


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class DkimSigner:
    """A DKIM key: ``private_key`` is PEM (RSA, PKCS#1 or PKCS#8) or a raw ed25519 key."""

    domain: str
    selector: str
    private_key: bytes = field(repr=False)
    algorithm: str = "rsa-sha256"  # or "ed25519-sha256"

    def sign(self, raw: bytes) -> bytes:
        """``raw`` with a DKIM-Signature header (relaxed/relaxed) prepended."""
        header: bytes = dkimpy.sign(raw, self.selector.encode(), self.domain.encode(),
                                    self.private_key, canonicalize=(b"relaxed", b"relaxed"),
                                    signature_algorithm=self.algorithm.encode())
        return header + raw


# ---- templates ---------------------------------------------------------------------------

# The unescaped twin of each HTML environment, for subjects and text bodies.
_TEXT_TWINS: weakref.WeakKeyDictionary[jinja2.Environment, jinja2.Environment] = (
    weakref.WeakKeyDictionary())


def _text_env(env: jinja2.Environment) -> jinja2.Environment:
    twin = _TEXT_TWINS.get(env)
    if twin is None:
        twin = env.overlay(autoescape=False)
        _TEXT_TWINS[env] = twin
    return twin


def template_dirs(override: str | Path | None = None) -> tuple[Path, ...]:
    """The installation's override folder (if any) first, then the packaged templates."""
    return ((Path(override),) if override else ()) + (PACKAGED_TEMPLATES,)


def make_environment(template_dirs: Sequence[Path]) -> jinja2.Environment:
    """Jinja2 environment over ``template_dirs`` only (first match wins)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs]),
        autoescape=True,  # explicit: select_autoescape would skip 'x.html.j2'
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    env.filters["format_date"] = format_date
    env.filters["format_datetime"] = format_when
    env.filters["format_money"] = format_money
    return env


@functools.lru_cache(maxsize=8)
def shared_environment(template_dirs: tuple[Path, ...]) -> jinja2.Environment:
    """One environment per template folder list for the whole process (its compiled
    templates are reused): for settings objects that render on every request."""
    return make_environment(template_dirs)


def _locale(lang: str) -> str:
    return lang if _LANG.match(lang) else "en"


def format_date(value: date | datetime | str | None, lang: str, fmt: str = "long") -> str:
    """A date (or ISO text) in the reader's language; '—' when unknown."""
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        try:
            day = date.fromisoformat(value[:10])
        except ValueError:
            return value
    else:
        day = value.date() if isinstance(value, datetime) else value
    return str(babel_format_date(day, format=fmt, locale=_locale(lang)))


def format_when(value: datetime | None, lang: str) -> str:
    """A naive-UTC timestamp in the reader's language, to the minute, marked UTC."""
    if value is None:
        return "—"
    day = babel_format_date(value.date(), format="long", locale=_locale(lang))
    return f"{day}, {babel_format_time(value.time(), format='short', locale=_locale(lang))} UTC"


def format_money(amount: Decimal | int | float | str | None, currency: str | None,
                 lang: str) -> str:
    """``1 234,56 €`` (fr) / ``€1,234.56`` (en); '—' when unknown; odd text shown as is."""
    if amount is None or amount == "":
        return "—"
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return str(amount)
    if not currency:
        return str(format_decimal(value, format="#,##0.00", locale=_locale(lang)))
    return str(format_currency(value, currency, locale=_locale(lang)))


def reason_choices(lang: str) -> list[tuple[str, str]]:
    """(code, label) pairs for the reject form, labels in ``lang`` (English fallback)."""
    return [(code, labels.get(lang, labels["en"])) for code, labels in REASON_CODES.items()]


def reason_label(code: str, lang: str) -> str:
    labels = REASON_CODES.get(code)
    return labels.get(lang, labels["en"]) if labels else code


def _candidates(lang: str) -> list[str]:
    primary = lang.strip().lower().replace("-", "_").split("_")[0]
    out = [primary] if _LANG.match(primary) else []
    return out + [fb for fb in FALLBACK_LANGUAGES if fb not in out]


def _pick(env: jinja2.Environment, pattern: str, lang: str) -> tuple[str, jinja2.Template]:
    for cand in _candidates(lang):
        try:
            return cand, env.get_template(pattern.format(lang=cand))
        except jinja2.TemplateNotFound:
            continue
    raise jinja2.TemplateNotFound(pattern.format(lang=lang))


def render(env: jinja2.Environment, name: str, lang: str,
           context: Mapping[str, object]) -> Rendered:
    """Render ``<name>/<lang>/{subject.txt,body.txt,body.html}`` (fallback en, then fr).

    ``lang`` in the context is set to the language actually used, for the Babel filters.
    Raises jinja2.UndefinedError on a missing variable, TemplateNotFound on an unknown name.
    """
    if not _NAME.match(name):
        raise ValueError(f"invalid template name {name!r}")
    text_env = _text_env(env)
    used, body_txt = _pick(text_env, f"{name}/{{lang}}/body.txt", lang)
    ctx = {**context, "lang": used}
    subject = text_env.get_template(f"{name}/{used}/subject.txt").render(ctx)
    text = body_txt.render(ctx)
    html = env.get_template(f"{name}/{used}/body.html").render(ctx)
    return Rendered(subject=one_line(subject), text=_text(text), html=inline_css(html))


def render_page(env: jinja2.Environment, name: str, lang: str,
                context: Mapping[str, object]) -> str:
    """Render the web page ``web/<lang>/<name>.html`` (autoescaped; fallback en, then fr)."""
    if not _NAME.match(name):
        raise ValueError(f"invalid page name {name!r}")
    used, page = _pick(env, f"web/{{lang}}/{name}.html", lang)
    return page.render({**context, "lang": used})


_INLINER = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=False,
                                 keep_link_tags=False)


def inline_css(html: str) -> str:
    """Move <style> rules into style= attributes (mail clients drop <style>); no fetching."""
    return str(_INLINER.inline(html))


def one_line(text: str, limit: int = 250) -> str:
    """A header-safe single line: every line break and control character becomes a space."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(body: str) -> str:
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n{3,}", "\n\n", body).rstrip() + "\n"


# ---- composing ---------------------------------------------------------------------------

def check_address(value: str) -> Address:
    """Parse ``Name <a@b.example>`` or ``a@b.example``; ValueError unless it is one clean
    ASCII address that re-serializes exactly as given."""
    if not isinstance(value, str) or _CONTROL.search(value):
        raise ValueError(f"invalid address {value!r}: control characters")
    name, spec = parseaddr(value)
    local, at, domain = spec.rpartition("@")
    if not at or len(spec) > 254 or not _LOCAL.match(local) or not _DOMAIN.match(domain):
        raise ValueError(f"invalid address {value!r}")
    address = Address(display_name=name, addr_spec=spec)
    if str(address) != value:
        raise ValueError(f"invalid address {value!r}: does not re-serialize identically")
    return address


def addr_spec(value: str) -> str:
    """The bare ``local@domain`` of a checked address (for the SMTP envelope)."""
    return check_address(value).addr_spec


def check_message_id(value: str) -> str:
    if not isinstance(value, str) or len(value) > 500 or not _MSGID.match(value):
        raise ValueError(f"invalid message id {value!r}")
    return value


def thread_ids(*values: str) -> list[str]:
    """The values that are valid Message-IDs, in order: the References of a mail that answers
    them (its In-Reply-To is the last). A missing or damaged stored id only loses threading."""
    out = []
    for value in values:
        try:
            out.append(check_message_id(value))
        except ValueError:
            continue
    return out


def make_message_id(domain: str) -> str:
    """A fresh ``<random@domain>``; store it with the message so retries keep it."""
    if not _DOMAIN.match(domain):
        raise ValueError(f"invalid domain {domain!r}")
    return f"<{secrets.token_hex(16)}@{domain.lower()}>"


def safe_filename(name: str) -> str:
    """A base name with no path, control or shell-special characters, at most ~120 chars."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE_FILENAME.sub("_", name).strip("._ ")
    stem, dot, ext = name.rpartition(".")
    name = f"{stem[:100]}.{ext}" if dot and 0 < len(ext) <= 10 else name[:110]
    return name or "attachment"


def compose(rendered: Rendered, *, sender: str, to: Sequence[str], reply_to: str | None = None,
            message_id: str, in_reply_to: str | None = None, references: Sequence[str] = (),
            attachments: Sequence[tuple[str, str, bytes]] = (),
            auto_submitted: str = "auto-generated", dkim: DkimSigner | None = None,
            date: datetime | None = None,
            inline_images: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """The message bytes (CRLF). ``attachments`` are (filename, media type, bytes);
    ``inline_images`` are (Content-ID without brackets, PNG bytes) that the HTML part shows
    as ``cid:`` images (multipart/related: mail clients block remote and data: images).

    ValueError on any unsafe value (bad address, message id, Auto-Submitted value, or a
    header block that does not parse back to the headers we set). ``dkim``: sign now — only
    for mail that bypasses the send role, which signs outbox mail itself when configured.
    """
    if not to:
        raise ValueError("no recipient")
    if auto_submitted not in AUTO_SUBMITTED:
        raise ValueError(f"invalid Auto-Submitted value {auto_submitted!r}")
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = str(check_address(sender))
    msg["To"] = ", ".join(str(check_address(a)) for a in to)
    if reply_to:
        msg["Reply-To"] = str(check_address(reply_to))
    msg["Subject"] = one_line(rendered.subject)
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = check_message_id(message_id)
    if in_reply_to:
        msg["In-Reply-To"] = check_message_id(in_reply_to)
    refs = [check_message_id(r) for r in references]
    if refs:
        msg["References"] = " ".join(refs)
    msg["Auto-Submitted"] = auto_submitted
    if auto_submitted != "no":
        msg["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    if inline_images:
        html_part = msg.get_body(("html",))
        assert html_part is not None
        for cid, png in inline_images:
            if not _CID.match(cid):
                raise ValueError(f"invalid Content-ID {cid!r}")
            html_part.add_related(png, maintype="image", subtype="png", cid=f"<{cid}>",
                                  disposition="inline")
    for filename, media_type, data in attachments:
        media_type = media_type.lower()
        maintype, _, subtype = (media_type if _MIME.match(media_type)
                                else "application/octet-stream").partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype,
                           filename=safe_filename(filename))
    raw = msg.as_bytes()
    _check_headers(msg, raw)
    return dkim.sign(raw) if dkim is not None else raw


def _check_headers(msg: EmailMessage, raw: bytes) -> None:
    parsed = BytesParser(policy=policy.SMTP).parsebytes(raw, headersonly=True)
    want = [k.lower() for k in msg]
    got = [k.lower() for k in parsed]
    if got != want:
        raise ValueError(f"serialized headers differ from the composed ones: {got} != {want}")
