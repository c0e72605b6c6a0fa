"""How a customer pays a sales invoice: the Pay link and the EPC ("SEPA QR") code.

Job: ``check_pay_link_template`` validates a folder's ``pay_link_template`` (an https URL whose
only placeholders are {number}, {amount}, {currency} and {reference}, none in the host);
``pay_link`` fills it with facturd's own values, URL-quoted, the reference being
``pay_reference``: the document id and an HMAC under an installation secret, so a payment
notice naming it can be tied to the invoice and not forged. Nothing from the invoice's XML
ever goes into the link (B-OUT-05). ``epc_qr_png`` draws the EPC069-12 code banking apps scan
to pre-fill a euro credit transfer (segno), for IBANs of the SEPA zone (schwifty).

May touch: nothing (pure functions; the secret is given by the caller).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
from decimal import Decimal
from urllib.parse import quote, urlsplit

import segno.helpers
from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from daemon import mailer

REFERENCE_SECRET = "sales_reference_secret"  # noqa: S105 (a Setting key, not a secret)
PLACEHOLDERS = ("number", "amount", "currency", "reference")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f-\x9f\"'<>\\`]")


def check_pay_link_template(text: str) -> str:
    """The template, stripped ("" = no pay button); ValueError unless it is an https URL whose
    only placeholders are {number}, {amount}, {currency} and {reference}, none in the host."""
    text = text.strip()
    if not text:
        return ""
    if _UNSAFE_URL.search(text) or len(text) > 1000:
        raise ValueError("pay_link_template: spaces, quotes, <, > and control characters are "
                         "not allowed (write them %-encoded)")
    names = _PLACEHOLDER.findall(text)
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        raise ValueError(f"pay_link_template: unknown placeholder {{{unknown[0]}}}; use "
                         "{number}, {amount}, {currency}, {reference}")
    if "{" in _PLACEHOLDER.sub("", text) or "}" in _PLACEHOLDER.sub("", text):
        raise ValueError("pay_link_template: unbalanced { or }")
    parts = urlsplit(_PLACEHOLDER.sub("x", text))
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"pay_link_template: expected an https:// URL, got {text!r}")
    if "{" in urlsplit(text).netloc or parts.username is not None:
        raise ValueError("pay_link_template: the host must be fixed (no placeholder, no "
                         "user name)")
    return text


def pay_reference(secret: bytes, document_id: int) -> str:
    """``<document id>-<16 hex>``: an HMAC-SHA256 of the id under the installation secret,
    so a payment notice naming it can be tied to the invoice and not forged."""
    mac = hmac.new(secret, f"facturd-sales-invoice:{document_id}".encode(), hashlib.sha256)
    return f"{document_id}-{mac.hexdigest()[:16]}"


def pay_link(template: str, *, number: str, amount: Decimal, currency: str,
             reference: str) -> str:
    """The template with each placeholder replaced by our URL-quoted value."""
    values = {"number": number, "amount": str(amount.quantize(Decimal("0.01"))),
              "currency": currency, "reference": reference}
    return _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe=""),
                            check_pay_link_template(template))


def format_iban(iban: str) -> str:
    compact = re.sub(r"\s+", "", iban).upper()
    return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))


EPC_MAX = Decimal("999999999.99")


def epc_qr_png(name: str, iban: str, amount: Decimal, currency: str,
               reference: str) -> bytes | None:
    """The EPC069-12 ("SEPA QR", "GiroCode") image that banking apps scan to pre-fill a
    credit transfer: beneficiary, IBAN, amount and the invoice number as the remittance
    text. None when it does not apply: not euros, an amount out of range, or an IBAN that is
    invalid or outside the SEPA zone (checked with schwifty)."""
    if currency.upper() != "EUR" or not Decimal("0.01") <= amount <= EPC_MAX:
        return None
    try:
        account = IBAN(iban)
    except SchwiftyException:
        return None
    if not account.in_sepa_zone:
        return None
    try:
        code = segno.helpers.make_epc_qr(name=mailer.one_line(name, 70) or "?",
                                         iban=account.compact, amount=amount,
                                         text=mailer.one_line(reference, 140) or None)
    except ValueError:  # a name or text the EPC character set cannot carry
        return None
    out = io.BytesIO()
    code.save(out, kind="png", scale=4, border=4)
    return out.getvalue()
