"""Mail parsing: find the invoice documents in the stored bytes of one received mail.

Job: from the raw bytes of a spooled mail (or one imported file) return the header facts the
rules need (Message-ID, Subject, every From address, Date) and the invoice candidates — PDFs,
CII/UBL XML, scanned images — grouped into future documents (a PDF and the XML sent next to it
are one). What is not kept is listed in ``skipped`` with a reason, oddities in ``defects``.

May touch: only the bytes given. No filesystem (attachment names are sanitised display text,
never paths), no network, no database, no logging of content.

How: mail-parser reads the top-level header section only (decoding, From recovery, address/
date/Received defects). The MIME tree is walked with the stdlib (``policy.default``) because
mail-parser decodes every attachment while parsing: here parts, depth and header sizes are
checked on the whole tree before any payload is decoded, then parts are decoded one at a time
against a byte budget. Limits over parts/depth/headers/bytes raise ``MailRejected`` (permanent);
candidates over ``max_attachments`` and XML over ``max_xml_bytes`` are skipped and noted.
Types come from magic bytes and the XML root element, never from declared types or names.

Known limits: base64-encoded ``message/rfc822`` parts and archives (zip, 7z) are not opened;
the XML root must be in the first 64 KB; XML is only sniffed (no DOCTYPE check: the XML step's
job). Images count as logos ("inline-image") when an HTML part uses their Content-ID, when
marked ``inline``, when named like Outlook's ``image001.png``, or when under 10 KB unless
attached under a scan-like name ("scan", "invoice", "facture", "rechnung", "receipt" …): a
phone app that marks a photographed invoice ``inline`` loses it (visible in ``skipped``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Any
from urllib.parse import unquote

import mailparser
from lxml import etree
from mailparser.utils import decode_header_part, get_addresses

from daemon import tnef


@dataclass(frozen=True)
class Limits:
    max_parts: int = 100  # MIME parts in total (TNEF files count as parts)
    max_depth: int = 20  # nesting depth (multipart + message/rfc822)
    max_header_bytes: int = 100_000  # header section size of any (sub)message
    max_decoded_bytes: int = 50 * 1024 * 1024  # sum of decoded attachment bytes
    max_attachments: int = 20  # invoice candidates kept
    max_xml_bytes: int = 5 * 1024 * 1024


@dataclass(frozen=True)
class Candidate:
    index: int  # 0-based order of appearance among the candidates kept
    filename: str  # display only, sanitised; never used as a path
    media_type: str  # from the magic bytes, not from the mail
    kind: str  # "pdf" | "cii" | "ubl" | "image"
    data: bytes
    sha256: str


@dataclass(frozen=True)
class InvoiceFile:
    """One future document: a PDF or image, possibly with the CII/UBL XML sent next to it, or an
    XML alone."""

    main: Candidate
    companion_xml: Candidate | None


@dataclass(frozen=True)
class ParsedMail:
    message_id: str
    subject: str
    from_addresses: tuple[str, ...]
    from_header_count: int
    date: str
    invoices: tuple[InvoiceFile, ...]
    skipped: tuple[tuple[str, str], ...]
    defects: tuple[str, ...]


class MailRejected(Exception):
    """Permanent: the mail cannot be processed safely (limit exceeded). ``.reason`` is a short
    code ('too-many-parts', 'too-deep', 'header-too-large', 'decoded-too-large'); ``str(exc)``
    is a readable sentence."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Found:  # a decoded leaf (or TNEF file) on its way to becoming a candidate
    raw_name: str
    label: str  # sanitised name, or a part description when there is no name
    declared_type: str
    disposition: str  # "attachment" | "inline" | ""
    content_id: str
    data: bytes
    depth: int


_XML_ROOTS = {
    ("urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100", "CrossIndustryInvoice"): "cii",
    ("urn:ferd:CrossIndustryDocument:invoice:1p0", "CrossIndustryDocument"): "cii",
    ("urn:oasis:names:specification:ubl:schema:xsd:Invoice-2", "Invoice"): "ubl",
    ("urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2", "CreditNote"): "ubl",
}
_MAGIC = ((b"%PDF-", "pdf", "application/pdf"), (b"\xff\xd8\xff", "image", "image/jpeg"),
          (b"\x89PNG\r\n\x1a\n", "image", "image/png"), (b"II*\x00", "image", "image/tiff"),
          (b"MM\x00*", "image", "image/tiff"))
_EXECUTABLE = {"exe", "scr", "com", "bat", "cmd", "pif", "cpl", "dll", "msi", "msp", "js", "jse",
               "vbs", "vbe", "wsf", "wsh", "hta", "ps1", "lnk", "jar", "reg"}
_CLAIMED_TYPES = {"application/pdf", "application/x-pdf", "application/xml", "text/xml",
                  "image/jpeg", "image/png", "image/tiff"}
_CLAIMED_EXTENSIONS = {"pdf", "xml", "jpg", "jpeg", "png", "tif", "tiff"}
_TNEF_TYPES = {"application/ms-tnef", "application/vnd.ms-tnef"}
_SCAN_NAME = re.compile(r"scan|invoice|facture|rechnung|factura|fattura|receipt|beleg|quittung",
                        re.IGNORECASE)
_OUTLOOK_INLINE = re.compile(r"^image\d{3}\.(jpe?g|png|gif)$", re.IGNORECASE)
_CID_REF = re.compile(rb"cid:([^\"'\s>)]+)", re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_UNSAFE_CHARS = re.compile(r'[<>:"|?*]')
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
             *(f"lpt{i}" for i in range(10))}
_DROPPED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_SMALL_IMAGE = 10 * 1024
_XML_SNIFF_BYTES = 64 * 1024
_NAME_BYTES = 200


def sniff_kind(data: bytes, filename: str, declared_type: str) -> tuple[str, str] | None:
    """(kind, media_type) decided by the bytes; ``declared_type`` is never trusted and a name
    ending in an executable extension disqualifies the file whatever its bytes."""
    del declared_type  # accepted for the callers' convenience: the bytes decide
    if _extension(filename) in _EXECUTABLE:
        return None
    for magic, kind, media_type in _MAGIC:
        if data.startswith(magic):
            return kind, media_type
    xml_kind = _sniff_xml(data)
    return (xml_kind, "application/xml") if xml_kind else None


def _sniff_xml(data: bytes) -> str | None:
    head = data[:_XML_SNIFF_BYTES]
    if head[:2] not in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 goes to lxml as is
        head = head.removeprefix(b"\xef\xbb\xbf").lstrip()  # tolerate blanks before <?xml
        if not head.startswith(b"<"):
            return None
    parser = etree.XMLPullParser(events=("start",), resolve_entities=False, no_network=True,
                                 load_dtd=False, huge_tree=False)
    try:
        parser.feed(head)
        for _event, element in parser.read_events():
            if not isinstance(element, etree._Element):
                continue
            qname = etree.QName(element)
            return _XML_ROOTS.get((qname.namespace or "", qname.localname))
    except etree.LxmlError:
        return None
    return None


def sanitize_filename(name: str) -> str:
    """Display form of an untrusted name: last path segment, no control/bidi/format characters,
    no Windows-reserved names or trailing dots/spaces, at most 200 UTF-8 bytes."""
    name = unicodedata.normalize("NFC", name)
    name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_CHARS.sub("_", " ".join(name.split())).strip().rstrip(". ")
    if name.split(".", 1)[0].lower() in _RESERVED:
        name = "_" + name
    if len(name.encode()) > _NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and 0 < len(ext) <= 16 else ""
        stem = name[: len(name) - len(ext)]
        budget = _NAME_BYTES - len(ext.encode())
        name = stem.encode()[:budget].decode("utf-8", "ignore").rstrip(". ") + ext
    return name


def parse_mail(raw: bytes, limits: Limits = Limits()) -> ParsedMail:
    """Header facts and invoice documents of one raw mail; MailRejected when over a limit."""
    defects: list[str] = []
    header = _read_headers(_split_header(raw, limits), defects)
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except RecursionError as exc:
        raise MailRejected("too-deep", "The mail's MIME structure or a MIME header is nested "
                                       "too deeply to be parsed safely.") from exc
    leaves = _walk(message, limits, defects)
    budget = _Budget(limits.max_decoded_bytes)
    found, skipped, cids = _decode_leaves(leaves, budget, defects)
    found = _expand_tnef(found, limits, len(leaves), budget, skipped, defects)
    candidates = _select(found, cids, limits, skipped, defects)
    return ParsedMail(*header, _pair(candidates), tuple(skipped), tuple(defects))


def parse_file(data: bytes, filename: str, limits: Limits = Limits()) -> ParsedMail:
    """A file imported directly (no mail): one candidate if it is an invoice type (a TNEF file
    is opened like a winmail.dat), else no invoice and ``skipped`` says why."""
    budget = _Budget(limits.max_decoded_bytes)
    budget.spend(len(data))
    defects: list[str] = []
    skipped: list[tuple[str, str]] = []
    item = _Found(filename, sanitize_filename(filename) or "imported file", "", "attachment", "",
                  data, 0)
    found = _expand_tnef([item], limits, 1, budget, skipped, defects)
    candidates = _select(found, set(), limits, skipped, defects)
    return ParsedMail("", "", (), 0, "", _pair(candidates), tuple(skipped), tuple(defects))


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def spend(self, size: int) -> None:
        self.used += size
        if self.used > self.limit:
            raise MailRejected("decoded-too-large", f"The mail's attachments decode to more than "
                                                    f"{self.limit} bytes.")


def _split_header(raw: bytes, limits: Limits) -> bytes:
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    end = _HEADER_END.search(raw, 0, limits.max_header_bytes + 4)
    size = end.start() if end else len(raw)
    if size > limits.max_header_bytes:
        raise MailRejected("header-too-large", f"The mail's header section is larger than "
                                               f"{limits.max_header_bytes} bytes.")
    return raw[:size]


def _read_headers(header_bytes: bytes, defects: list[str]
                  ) -> tuple[str, str, tuple[str, ...], int, str]:
    """Message-ID, Subject, From addresses, From count, Date, through mail-parser (decoding,
    address recovery, address/date/Received defects)."""
    # compat32 as mail-parser wants; headers only: MIME structure defects are _walk's to report
    view = BytesParser().parsebytes(header_bytes + b"\r\n\r\n", headersonly=True)
    del view["Content-Type"]
    try:
        parsed = mailparser.MailParser(view)
        for group in parsed.defects:
            for category, found in group.items():
                defects.extend(f"header: {note}" for note in found or [category])
    except Exception as exc:  # hostile headers must not crash the worker
        defects.append(f"header: mail-parser could not read the headers ({type(exc).__name__})")
    from_values = view.get_all("From") or []
    addresses: list[str] = []
    for value in from_values:
        notes: list[dict[str, Any]] = []
        try:
            addresses.extend(a for _, a in get_addresses(value, defects=notes, decode_names=True)
                             if a)
        except Exception as exc:
            defects.append(f"header: From unreadable ({type(exc).__name__})")
        defects.extend(f"header: From: {note.get('reason', note)}" for note in notes)
    if len(from_values) > 1:
        defects.append(f"header: {len(from_values)} From headers")
    return (_first_decoded(view, "Message-ID"), _first_decoded(view, "Subject"),
            tuple(addresses), len(from_values), str(view.get("Date", "")).strip())


def _first_decoded(view: Message, name: str) -> str:
    values = view.get_all(name) or []  # decode_header_part falls back to the raw text itself
    return str(decode_header_part(str(values[0]))) if values else ""


def _walk(message: Message, limits: Limits, defects: list[str]) -> list[tuple[Message, int]]:
    """Leaves in order of appearance with their depth; counts every node before any decoding."""
    leaves: list[tuple[Message, int]] = []
    stack: list[tuple[Message, int]] = [(message, 0)]
    count = 0
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > limits.max_parts:
            raise MailRejected("too-many-parts", f"The mail has more than {limits.max_parts} "
                                                 "MIME parts.")
        if depth > limits.max_depth:
            raise MailRejected("too-deep", f"The mail's MIME parts are nested more than "
                                           f"{limits.max_depth} levels deep.")
        header_size = sum(len(k) + len(str(v)) + 4 for k, v in part.raw_items())
        if header_size > limits.max_header_bytes:
            raise MailRejected("header-too-large", f"A part's header section is larger than "
                                                   f"{limits.max_header_bytes} bytes.")
        ctype = _safe(part.get_content_type, "application/octet-stream")
        defects.extend(f"mime: part {count} ({ctype}): {type(d).__name__}" for d in part.defects)
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in reversed(payload)
                         if isinstance(child, Message))
        else:
            leaves.append((part, depth))
    return leaves


def _decode_leaves(leaves: list[tuple[Message, int]], budget: _Budget, defects: list[str]
                   ) -> tuple[list[_Found], list[tuple[str, str]], set[str]]:
    """Decode non-body leaves one at a time against the budget; collect cid: refs from HTML."""
    found: list[_Found] = []
    skipped: list[tuple[str, str]] = []
    cids: set[str] = set()
    for number, (part, depth) in enumerate(leaves, 1):
        ctype = _safe(part.get_content_type, "application/octet-stream")
        raw_name = str(_safe(part.get_filename, None) or "")
        disposition = str(_safe(part.get_content_disposition, None) or "")
        label = sanitize_filename(raw_name) or f"part {number} ({ctype})"
        is_body = ctype in ("text/plain", "text/html") and not raw_name
        if is_body and disposition != "attachment":
            if ctype == "text/html":
                html = _decode(part, budget, defects, label)
                cids.update(_normalize_cid(m.decode("ascii", "replace"))
                            for m in _CID_REF.findall(html))
            continue
        if ctype.startswith("multipart/"):
            skipped.append((label, "unreadable-multipart"))
            continue
        content_id = _normalize_cid(str(_safe(lambda p=part: p.get("Content-ID", ""), "")))
        data = _decode(part, budget, defects, label)
        found.append(_Found(raw_name, label, ctype, disposition, content_id, data, depth))
    return found, skipped, cids


def _decode(part: Message, budget: _Budget, defects: list[str], label: str) -> bytes:
    before = len(part.defects)
    try:
        data = part.get_payload(decode=True)
    except Exception as exc:
        defects.append(f"mime: {label}: payload not decodable ({type(exc).__name__})")
        data = b""
    data = data if isinstance(data, bytes) else b""
    defects.extend(f"mime: {label}: {type(d).__name__}" for d in part.defects[before:])
    budget.spend(len(data))
    return data


def _expand_tnef(found: list[_Found], limits: Limits, parts: int, budget: _Budget,
                 skipped: list[tuple[str, str]], defects: list[str]) -> list[_Found]:
    """Replace each TNEF blob by the files inside it (counted as parts, bytes and depth)."""
    out: list[_Found] = []
    for item in found:
        is_tnef = item.data.startswith(tnef.SIGNATURE) or item.declared_type in _TNEF_TYPES
        if not is_tnef:
            out.append(item)
            continue
        try:
            files, notes = tnef.extract_files(item.data, max(0, limits.max_depth - item.depth),
                                              limits.max_parts)
        except tnef.TnefError as exc:
            defects.append(f"tnef: {item.label}: {exc}")
            skipped.append((item.label, "tnef-unreadable"))
            continue
        defects.extend(f"tnef: {item.label}: {note}" for note in notes)
        parts += len(files)
        if parts > limits.max_parts:
            raise MailRejected("too-many-parts", f"The mail has more than {limits.max_parts} "
                                                 "parts (counting files inside winmail.dat).")
        for number, inner in enumerate(files, 1):
            budget.spend(len(inner.data))
            label = sanitize_filename(inner.name) or f"{item.label} file {number}"
            out.append(_Found(inner.name, label, "", "attachment", "", inner.data,
                              item.depth + 1))
    return out


def _select(found: list[_Found], cids: set[str], limits: Limits,
            skipped: list[tuple[str, str]], defects: list[str]) -> list[Candidate]:
    candidates: list[Candidate] = []
    seen: set[str] = set()
    for item in found:
        sniffed = sniff_kind(item.data, item.raw_name, item.declared_type)  # reads 64 KB at most
        if sniffed is None:
            skipped.append((item.label, _reason_not_candidate(item)))
            continue
        kind, media_type = sniffed
        if kind in ("cii", "ubl") and len(item.data) > limits.max_xml_bytes:
            skipped.append((item.label, "limit:max_xml_bytes"))
            defects.append(f"limit: {item.label}: XML larger than {limits.max_xml_bytes} bytes")
            continue
        if kind == "image" and _is_inline_image(item, cids):
            skipped.append((item.label, "inline-image"))
            continue
        digest = hashlib.sha256(item.data).hexdigest()
        if digest in seen:
            skipped.append((item.label, "same-bytes"))
            continue
        seen.add(digest)
        if len(candidates) >= limits.max_attachments:
            skipped.append((item.label, "limit:max_attachments"))
            continue
        candidates.append(Candidate(len(candidates), item.label, media_type, kind, item.data,
                                    digest))
    if any(reason == "limit:max_attachments" for _, reason in skipped):
        defects.append(f"limit: more than {limits.max_attachments} invoice candidates; the "
                       "first ones were kept")
    return candidates


def _reason_not_candidate(item: _Found) -> str:
    claimed = (item.declared_type in _CLAIMED_TYPES
               or _extension(item.raw_name) in _CLAIMED_EXTENSIONS
               or ".pdf." in item.raw_name.lower())
    return "type-mismatch" if claimed and item.data else "not-an-invoice-type"


def _is_inline_image(item: _Found, cids: set[str]) -> bool:
    if (item.content_id and item.content_id in cids) or item.disposition == "inline":
        return True
    if _OUTLOOK_INLINE.match(item.label):
        return True
    named_scan = item.disposition == "attachment" and bool(_SCAN_NAME.search(item.label))
    return len(item.data) < _SMALL_IMAGE and not named_scan


def _pair(candidates: list[Candidate]) -> tuple[InvoiceFile, ...]:
    """PDF/image + XML of the same basename; else the only PDF with the only XML."""
    mains = [c for c in candidates if c.kind in ("pdf", "image")]
    xmls = [c for c in candidates if c.kind in ("cii", "ubl")]
    companion: dict[int, Candidate] = {}
    used: set[int] = set()
    for main in mains:
        for xml in xmls:
            if xml.index not in used and _stem(xml.filename) and (
                    _stem(xml.filename) == _stem(main.filename)):
                companion[main.index] = xml
                used.add(xml.index)
                break
    pdfs = [c for c in mains if c.kind == "pdf"]
    if (len(pdfs) == 1 and len(xmls) == 1 and pdfs[0].index not in companion
            and xmls[0].index not in used):
        companion[pdfs[0].index] = xmls[0]
        used.add(xmls[0].index)
    return tuple(InvoiceFile(c, companion.get(c.index)) for c in candidates
                 if c.kind in ("pdf", "image") or c.index not in used)


def _stem(filename: str) -> str:
    stem, dot, _ext = filename.rpartition(".")
    return (stem if dot else filename).lower()


def _extension(filename: str) -> str:
    _, dot, ext = filename.strip().rstrip(". ").rpartition(".")
    return ext.lower() if dot else ""


def _normalize_cid(value: str) -> str:
    return unquote(value).strip().strip("<>").lower()


def _safe(read: Any, default: Any) -> Any:
    """Call a header accessor; hostile header values (deep comments) must not escape."""
    try:
        return read()
    except (RecursionError, ValueError, TypeError, IndexError, LookupError):
        return default
