"""daemon.mailparse / daemon.tnef: invoice candidates out of hostile and ordinary mail.

Every fixture is built here (EmailMessage, reportlab, Pillow, hand-made TNEF bytes); the only
outside files are the optional TNEF samples of /work/shared/corpus, read in place.
"""

from __future__ import annotations

import base64
import hashlib
import io
import random
import struct
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
from PIL import Image
from reportlab.pdfgen import canvas

from daemon import tnef
from daemon.mailparse import (
    Limits,
    MailRejected,
    ParsedMail,
    parse_file,
    parse_mail,
    sanitize_filename,
    sniff_kind,
)
from tests.corpus import CORPUS

CII_NS = "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100"
CII = (f'<?xml version="1.0" encoding="UTF-8"?>\n<rsm:CrossIndustryInvoice xmlns:rsm="{CII_NS}">'
       "<rsm:ExchangedDocument/></rsm:CrossIndustryInvoice>\n").encode()
UBL = (b'<?xml version="1.0"?><Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:'
       b'Invoice-2"><ID>1</ID></Invoice>')


# ---------------------------------------------------------------- fixtures built in the test


def make_pdf(text: str = "Invoice 1") -> bytes:
    buf = io.BytesIO()
    pdf = canvas.Canvas(buf)
    pdf.drawString(72, 720, text)
    pdf.showPage()
    pdf.save()
    return buf.getvalue()


def make_png(size: int = 120, seed: int = 1) -> bytes:
    """Noise does not compress: 120x120 RGB is ~43 KB, 16x16 is well under 10 KB."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def mail(*attachments: tuple[str, str, bytes], sender: str = "billing@vendor.test",
         html: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "in@invoices.test"
    msg["Subject"] = "Invoice"
    msg["Date"] = "Mon, 01 Jun 2026 10:00:00 +0000"
    msg["Message-ID"] = "<m1@vendor.test>"
    msg.set_content("Please find our invoice attached.\n")
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, mime, data in attachments:
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def forward(inner: EmailMessage) -> EmailMessage:
    outer = mail(sender="colleague@company.test")
    outer.add_attachment(inner)  # message/rfc822
    return outer


def tnef_object(level: int, name: int, kind: int, data: bytes) -> bytes:
    head = struct.pack("<BHHI", level, name, kind, len(data))
    return head + data + struct.pack("<H", sum(data) & 0xFFFF)


def make_tnef(files: list[tuple[str, bytes]]) -> bytes:
    """A TNEF stream as Outlook writes it: version, codepage, then per file the rendering data
    (opens an attachment), the 8.3 title, the data and MAPI props with the long file name."""
    out = struct.pack("<IH", 0x223E9F78, 1)
    out += tnef_object(1, 0x9006, 0x0008, struct.pack("<I", 0x10000))
    out += tnef_object(1, 0x9007, 0x0006, struct.pack("<II", 1252, 0))
    for name, data in files:
        render = b"\x01\x00" + b"\xff" * 4 + b"\x01\x00" * 2 + b"\0" * 4
        out += tnef_object(2, 0x9002, 0x0006, render)
        out += tnef_object(2, 0x8010, 0x0001, b"ATTACH~1.DAT\0")
        out += tnef_object(2, 0x800F, 0x0006, data)
        long_name = name.encode("utf-16-le") + b"\0\0"
        long_name += b"\0" * (-len(long_name) % 4)
        prop = struct.pack("<HHII", 0x001F, 0x3707, 1, len(long_name)) + long_name
        out += tnef_object(2, 0x9005, 0x0006, struct.pack("<I", 1) + prop)
    return out


def names(result: ParsedMail) -> list[str]:
    return [f.main.filename for f in result.invoices]


def reasons(result: ParsedMail) -> dict[str, str]:
    return dict(result.skipped)


# ---------------------------------------------------------------- ordinary mail


def test_plain_pdf_attachment() -> None:
    pdf = make_pdf()
    result = parse_mail(mail(("invoice-42.pdf", "application/pdf", pdf)).as_bytes())
    assert result.message_id == "<m1@vendor.test>"
    assert result.subject == "Invoice"
    assert result.from_addresses == ("billing@vendor.test",)
    assert result.from_header_count == 1
    assert result.date == "Mon, 01 Jun 2026 10:00:00 +0000"
    (invoice,) = result.invoices
    assert invoice.companion_xml is None
    main = invoice.main
    assert (main.index, main.filename, main.kind, main.media_type) == (
        0, "invoice-42.pdf", "pdf", "application/pdf")
    assert main.data == pdf and main.sha256 == hashlib.sha256(pdf).hexdigest()
    assert result.skipped == () and result.defects == ()


@pytest.mark.parametrize("hops", [1, 2])
def test_pdf_inside_forwarded_mail(hops: int) -> None:
    """GIVEN a vendor mail forwarded once (or a forward of the forward) as message/rfc822
    THEN the PDF of the innermost mail is found; headers are the outer mail's."""
    msg = mail(("inner.pdf", "application/pdf", make_pdf()))
    for _ in range(hops):
        msg = forward(msg)
    result = parse_mail(msg.as_bytes())
    assert names(result) == ["inner.pdf"]
    assert result.from_addresses == ("colleague@company.test",)


def test_two_pdfs_make_two_invoice_files() -> None:
    msg = mail(("a.pdf", "application/pdf", make_pdf("A")), ("b.pdf", "application/pdf",
                                                                make_pdf("B")))
    result = parse_mail(msg.as_bytes())
    assert names(result) == ["a.pdf", "b.pdf"]
    assert [f.main.index for f in result.invoices] == [0, 1]


def test_pdf_and_cii_with_same_basename_are_one_document() -> None:
    msg = mail(("other.pdf", "application/pdf", make_pdf("other")),
               ("F-2026-7.PDF", "application/pdf", make_pdf("F")),
               ("f-2026-7.xml", "application/xml", CII))
    result = parse_mail(msg.as_bytes())
    assert names(result) == ["other.pdf", "F-2026-7.PDF"]
    paired = result.invoices[1].companion_xml
    assert paired is not None and paired.kind == "cii" and paired.filename == "f-2026-7.xml"
    assert result.invoices[0].companion_xml is None


def test_only_pdf_and_only_xml_pair_whatever_their_names() -> None:
    msg = mail(("invoice.pdf", "application/pdf", make_pdf()),
               ("factur-x.xml", "text/xml", UBL))
    (invoice,) = parse_mail(msg.as_bytes()).invoices
    assert invoice.main.kind == "pdf"
    assert invoice.companion_xml is not None and invoice.companion_xml.kind == "ubl"


def test_xml_alone_and_unpaired_xml_stand_alone() -> None:
    alone = parse_mail(mail(("x.xml", "application/xml", CII)).as_bytes())
    assert [(f.main.kind, f.companion_xml) for f in alone.invoices] == [("cii", None)]
    two_pdfs = mail(("a.pdf", "application/pdf", make_pdf("A")),
                    ("b.pdf", "application/pdf", make_pdf("B")), ("c.xml", "text/xml", CII))
    result = parse_mail(two_pdfs.as_bytes())
    assert [(f.main.filename, f.companion_xml) for f in result.invoices] == [
        ("a.pdf", None), ("b.pdf", None), ("c.xml", None)]


def test_body_only_mail_has_no_invoice() -> None:
    result = parse_mail(mail(html="<p>Total: 120 EUR</p>").as_bytes())
    assert result.invoices == () and result.skipped == ()


def test_same_bytes_twice_is_one_candidate() -> None:
    pdf = make_pdf()
    result = parse_mail(mail(("a.pdf", "application/pdf", pdf),
                             ("copy.pdf", "application/pdf", pdf)).as_bytes())
    assert names(result) == ["a.pdf"]
    assert reasons(result) == {"copy.pdf": "same-bytes"}


def test_two_from_headers_are_both_listed() -> None:
    msg = mail(("a.pdf", "application/pdf", make_pdf()))
    raw = b"From: =?utf-8?q?M=C3=BCller?= <ceo@vendor.test>\r\n" + msg.as_bytes()
    result = parse_mail(raw)
    assert result.from_header_count == 2
    assert set(result.from_addresses) == {"ceo@vendor.test", "billing@vendor.test"}
    assert any("2 From headers" in d for d in result.defects)


# ---------------------------------------------------------------- images


def test_inline_logo_is_skipped_and_scanned_image_kept() -> None:
    msg = mail(html='<p>Hi</p><img src="cid:logo@vendor">')
    html_part = msg.get_body(("html",))
    assert isinstance(html_part, EmailMessage)
    html_part.add_related(make_png(seed=2), maintype="image", subtype="png", cid="<logo@vendor>",
                          filename="logo.png")
    msg.add_attachment(make_png(seed=3), maintype="image", subtype="png", filename="photo.png")
    msg.add_attachment(make_png(16, seed=4), maintype="image", subtype="png",
                       filename="tiny.png")
    msg.add_attachment(make_png(16, seed=5), maintype="image", subtype="png",
                       filename="Scan_0001.png")
    msg.add_attachment(make_png(seed=6), maintype="image", subtype="png", filename="image001.png")
    result = parse_mail(msg.as_bytes())
    assert names(result) == ["photo.png", "Scan_0001.png"]
    assert result.invoices[0].main.media_type == "image/png"
    assert reasons(result) == {"logo.png": "inline-image", "tiny.png": "inline-image",
                               "image001.png": "inline-image"}


def test_image_with_inline_disposition_is_skipped() -> None:
    msg = mail()
    msg.add_attachment(make_png(seed=7), maintype="image", subtype="png", filename="sig.png",
                       disposition="inline")
    assert reasons(parse_mail(msg.as_bytes())) == {"sig.png": "inline-image"}


# ---------------------------------------------------------------- fake types and names


def test_declared_pdf_that_is_html_or_exe_is_not_a_candidate() -> None:
    msg = mail(("invoice.pdf", "application/pdf", b"<html><script>x()</script></html>"),
               ("facture.pdf", "application/pdf", b"MZ\x90\x00" + b"\0" * 200),
               ("zipped.pdf", "application/pdf", b"PK\x03\x04" + b"\0" * 50))
    result = parse_mail(msg.as_bytes())
    assert result.invoices == ()
    assert reasons(result) == {"invoice.pdf": "type-mismatch", "facture.pdf": "type-mismatch",
                               "zipped.pdf": "type-mismatch"}


@pytest.mark.parametrize("data", [b"MZ\x90\x00" + b"\0" * 200, make_pdf()])
def test_pdf_exe_name_is_never_a_candidate(data: bytes) -> None:
    result = parse_mail(mail(("invoice.pdf.exe", "application/pdf", data)).as_bytes())
    assert result.invoices == ()
    assert reasons(result) == {"invoice.pdf.exe": "type-mismatch"}


@pytest.mark.parametrize("disposition", [
    'attachment; filename="../../etc/passwd.pdf"',
    "attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd.pdf",
    'attachment; filename="=?UTF-8?B?Li4vLi4vZXRjL3Bhc3N3ZC5wZGY=?="',
    'attachment; filename="..\\\\..\\\\etc\\\\passwd.pdf"',
])
def test_path_traversal_names_are_sanitised(disposition: str) -> None:
    msg = mail(("placeholder.pdf", "application/pdf", make_pdf()))
    attachment = next(msg.iter_attachments())
    attachment.replace_header("Content-Disposition", disposition)
    (invoice,) = parse_mail(msg.as_bytes()).invoices
    assert invoice.main.filename == "passwd.pdf"


@pytest.mark.parametrize(("raw", "shown"), [
    ("invoice\u202efdp.exe", "invoicefdp.exe"),
    ("CON.pdf", "_CON.pdf"),
    ("x.pdf. ", "x.pdf"),
    ("a\x00b\r\n.pdf", "ab.pdf"),
    ("C:\\Users\\x\\bill.pdf", "bill.pdf"),
    ("..", ""),
    ("re: <bill>?.pdf", "re_ _bill__.pdf"),
])
def test_sanitize_filename(raw: str, shown: str) -> None:
    assert sanitize_filename(raw) == shown


def test_sanitize_filename_caps_length_and_keeps_extension() -> None:
    shown = sanitize_filename("é" * 300 + ".pdf")
    assert len(shown.encode()) <= 200 and shown.endswith("é.pdf")


# ---------------------------------------------------------------- sniffing


@pytest.mark.parametrize(("data", "expected"), [
    (b"%PDF-1.7\n", ("pdf", "application/pdf")),
    (b"\xff\xd8\xff\xe0JFIF", ("image", "image/jpeg")),
    (b"\x89PNG\r\n\x1a\n....", ("image", "image/png")),
    (b"II*\x00....", ("image", "image/tiff")),
    (b"MM\x00*....", ("image", "image/tiff")),
    (CII, ("cii", "application/xml")),
    (b"\xef\xbb\xbf  \n" + CII, ("cii", "application/xml")),
    (UBL, ("ubl", "application/xml")),
    (b'<CreditNote xmlns="urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"/>',
     ("ubl", "application/xml")),
    (b'<rsm:CrossIndustryDocument xmlns:rsm="urn:ferd:CrossIndustryDocument:invoice:1p0"/>',
     ("cii", "application/xml")),
    (b'<Invoice xmlns="urn:example:not-ubl"/>', None),
    (b"<html><body>Invoice</body></html>", None),
    (b"GIF89a....", None),
    (b"", None),
])
def test_sniff_kind_by_bytes_only(data: bytes, expected: tuple[str, str] | None) -> None:
    assert sniff_kind(data, "whatever.pdf", "application/pdf") == expected


def test_sniffing_never_expands_entities_or_fetches() -> None:
    """A DOCTYPE with an external entity and a billion-laughs DTD: the root is reported
    (rejecting DOCTYPE is the XML step's job) and nothing is expanded or loaded."""
    lol = "".join(f'<!ENTITY l{i} "{"&l" + str(i - 1) + ";" * 1 * 10}">' for i in range(1, 10))
    hostile = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY l0 "lol">{lol}'
               '<!ENTITY e SYSTEM "http://127.0.0.1:9/x.dtd">]>'
               f'<rsm:CrossIndustryInvoice xmlns:rsm="{CII_NS}">&l9;&e;</rsm:CrossIndustryInvoice>')
    started = time.monotonic()
    assert sniff_kind(hostile.encode(), "x.xml", "text/xml") == ("cii", "application/xml")
    assert time.monotonic() - started < 1


# ---------------------------------------------------------------- TNEF


def test_winmail_dat_attachments_become_candidates() -> None:
    pdf = make_pdf("in tnef")
    blob = make_tnef([("Rechnung 2026-7.pdf", pdf), ("..\\..\\x.pdf", make_pdf("second")),
                      ("notes.txt", b"hello")])
    msg = mail(("winmail.dat", "application/ms-tnef", blob))
    result = parse_mail(msg.as_bytes())
    assert names(result) == ["Rechnung 2026-7.pdf", "x.pdf"]
    assert result.invoices[0].main.data == pdf
    assert reasons(result) == {"notes.txt": "not-an-invoice-type"}


def test_corrupt_tnef_is_a_defect_not_an_exception() -> None:
    # attachment data before any attachment was opened: tnefparse raises UnboundLocalError
    blob = struct.pack("<IH", 0x223E9F78, 1) + tnef_object(2, 0x800F, 0x0006, make_pdf())
    result = parse_mail(mail(("winmail.dat", "application/vnd.ms-tnef", blob),
                             ("b.pdf", "application/pdf", make_pdf("B"))).as_bytes())
    assert names(result) == ["b.pdf"]
    assert reasons(result)["winmail.dat"] == "tnef-unreadable"
    assert any(d.startswith("tnef: winmail.dat: unreadable") for d in result.defects)


def test_truncated_tnef_is_noted_even_when_tnefparse_accepts_it() -> None:
    """tnefparse only logs bad checksums: a cut-off TNEF yields a cut-off file. Keep what is
    readable (downstream rejects a broken PDF) but record the damage."""
    blob = make_tnef([("a.pdf", make_pdf())])[:120] + b"\xff" * 20
    result = parse_mail(mail(("winmail.dat", "application/ms-tnef", blob)).as_bytes())
    assert any("bad checksum" in d for d in result.defects)


def test_tnef_count_bomb_is_refused_before_tnefparse_loops() -> None:
    """tnefparse 1.4.0 loops range(count) past the data's end: a 0xFFFFFFFF property count in a
    30-byte file would run for hours. The structural check refuses it at once."""
    bomb = struct.pack("<IH", 0x223E9F78, 1)
    bomb += tnef_object(1, 0x9003, 0x0006, struct.pack("<I", 0xFFFFFFFF)) + b"\0" * 20
    started = time.monotonic()
    result = parse_mail(mail(("winmail.dat", "application/ms-tnef", bomb)).as_bytes())
    assert time.monotonic() - started < 2
    assert reasons(result) == {"winmail.dat": "tnef-unreadable"}
    with pytest.raises(tnef.TnefError):
        tnef.check_structure(bomb, max_depth=5)


def test_parse_file_opens_a_winmail_dat_and_a_pdf() -> None:
    result = parse_file(make_tnef([("a.pdf", make_pdf())]), "winmail.dat")
    assert names(result) == ["a.pdf"]
    pdf = parse_file(make_pdf(), "/tmp/../scan.pdf")
    assert names(pdf) == ["scan.pdf"] and pdf.message_id == "" and pdf.from_addresses == ()
    text = parse_file(b"just text", "notes.txt")
    assert text.invoices == () and text.skipped == (("notes.txt", "not-an-invoice-type"),)


def _corpus_tnef(name: str) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not present: {CORPUS} (TNEF samples from MimeKit/tnefparse)")
    return CORPUS / "mimekit/UnitTests/TestData/tnef" / name


@pytest.mark.parametrize("sample", [
    "MAPI_ATTACH_DATA_OBJ", "attachments", "data-before-name", "one-file", "two-files", "panic",
    "unicode-mapi-attr-name", "unicode-mapi-attr", "multi-value-attribute",
])
def test_corpus_tnef_names_match_the_expected_list(sample: str) -> None:
    """MimeKit's .list files name the attachments (plus body.rtf/body.html, MimeKit's own
    rendering of the body, which we do not produce)."""
    path = _corpus_tnef(f"{sample}.tnef")
    expected = [n for n in _corpus_tnef(f"{sample}.list").read_text().splitlines()
                if n and not n.startswith("body.")]
    msg = mail(("winmail.dat", "application/ms-tnef", path.read_bytes()))
    result = parse_mail(msg.as_bytes())
    seen = names(result) + [label for label, _ in result.skipped]
    assert sorted(seen) == sorted(expected)


def test_corpus_tnef_pdf_is_found() -> None:
    blob = _corpus_tnef("MAPI_ATTACH_DATA_OBJ.tnef").read_bytes()
    result = parse_mail(mail(("winmail.dat", "application/ms-tnef", blob)).as_bytes())
    assert names(result) == ["VIA_Nytt_1402.pdf"]
    assert result.invoices[0].main.kind == "pdf"


def test_every_corpus_tnef_parses_without_exception() -> None:
    folder = _corpus_tnef("")
    samples = sorted(folder.glob("*.tnef")) + sorted((CORPUS / "tnefparse/tests/examples")
                                                      .glob("*.tnef"))
    assert samples
    for path in samples:
        parse_mail(mail(("winmail.dat", "application/ms-tnef", path.read_bytes())).as_bytes())


# ---------------------------------------------------------------- limits and bombs


def _nested_multipart(levels: int) -> bytes:
    part = EmailMessage()
    part.set_content("bottom")
    for level in range(levels):
        container = EmailMessage()
        container["Content-Type"] = f'multipart/mixed; boundary="b{level}"'
        container.attach(part)
        part = container
    part["From"] = "a@vendor.test"
    return part.as_bytes()


def test_mime_depth_bomb_is_rejected() -> None:
    with pytest.raises(MailRejected) as caught:
        parse_mail(_nested_multipart(30))
    assert caught.value.reason == "too-deep"
    assert "nested" in str(caught.value)
    parse_mail(_nested_multipart(15))  # within the limit: fine


def test_forward_depth_bomb_is_rejected() -> None:
    msg = mail(("a.pdf", "application/pdf", make_pdf()))
    for _ in range(15):  # each forward adds two levels (the rfc822 part and its mail)
        msg = forward(msg)
    with pytest.raises(MailRejected) as caught:
        parse_mail(msg.as_bytes())
    assert caught.value.reason == "too-deep"


def test_nesting_past_the_interpreter_recursion_limit_is_rejected() -> None:
    levels = 2000
    raw = b"From: a@vendor.test\r\n"
    for i in range(levels):
        raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
    raw += b"Content-Type: text/plain\r\n\r\nbottom\r\n"
    raw += b"".join(b"--b%d--\r\n" % i for i in reversed(range(levels)))
    with pytest.raises(MailRejected) as caught:
        parse_mail(raw)
    assert caught.value.reason == "too-deep"


def test_part_count_bomb_is_rejected() -> None:
    msg = mail()
    for i in range(150):
        msg.add_attachment(b"", maintype="application", subtype="octet-stream",
                           filename=f"{i}.bin")
    with pytest.raises(MailRejected) as caught:
        parse_mail(msg.as_bytes())
    assert caught.value.reason == "too-many-parts"


PAD_HEADERS = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 40) for i in range(3000))  # ~150 KB


def test_oversized_top_header_is_rejected() -> None:
    raw = PAD_HEADERS + mail().as_bytes()
    with pytest.raises(MailRejected) as caught:
        parse_mail(raw)
    assert caught.value.reason == "header-too-large"


def test_oversized_header_of_a_forwarded_mail_is_rejected() -> None:
    inner_raw = PAD_HEADERS + mail(("a.pdf", "application/pdf", make_pdf())).as_bytes()
    inner = BytesParser(policy=policy.default).parsebytes(inner_raw)
    assert isinstance(inner, EmailMessage)
    with pytest.raises(MailRejected) as caught:
        parse_mail(forward(inner).as_bytes())
    assert caught.value.reason == "header-too-large"


def test_decoded_size_bomb_is_rejected() -> None:
    msg = mail(("a.pdf", "application/pdf", b"%PDF-1.7\n" + b"\0" * 3000),
               ("b.pdf", "application/pdf", b"%PDF-1.7\n" + b"\1" * 3000))
    with pytest.raises(MailRejected) as caught:
        parse_mail(msg.as_bytes(), Limits(max_decoded_bytes=5000))
    assert caught.value.reason == "decoded-too-large"
    with pytest.raises(MailRejected):
        parse_file(b"%PDF-" + b"\0" * 6000, "big.pdf", Limits(max_decoded_bytes=5000))


def test_more_candidates_than_the_cap_keeps_the_first() -> None:
    pdfs = [(f"{i}.pdf", "application/pdf", make_pdf(str(i))) for i in range(4)]
    result = parse_mail(mail(*pdfs).as_bytes(), Limits(max_attachments=2))
    assert names(result) == ["0.pdf", "1.pdf"]
    assert reasons(result) == {"2.pdf": "limit:max_attachments", "3.pdf": "limit:max_attachments"}
    assert sum("limit: more than 2" in d for d in result.defects) == 1


def test_xml_over_the_size_cap_is_skipped() -> None:
    result = parse_mail(mail(("big.xml", "text/xml", CII)).as_bytes(), Limits(max_xml_bytes=100))
    assert result.invoices == ()
    assert reasons(result) == {"big.xml": "limit:max_xml_bytes"}


# ---------------------------------------------------------------- malformed MIME


def test_missing_closing_boundary_still_yields_the_pdf() -> None:
    raw = mail(("a.pdf", "application/pdf", make_pdf())).as_bytes()
    boundary = BytesParser(policy=policy.default).parsebytes(raw).get_boundary()
    assert boundary is not None
    raw = raw.replace(f"--{boundary}--".encode(), b"")
    result = parse_mail(raw)
    assert names(result) == ["a.pdf"]
    assert any("CloseBoundaryNotFoundDefect" in d for d in result.defects)


def test_bad_base64_in_part_two_of_three_keeps_parts_one_and_three() -> None:
    msg = mail(("1.pdf", "application/pdf", make_pdf("1")), ("2.pdf", "application/pdf",
                                                             make_pdf("2")),
               ("3.pdf", "application/pdf", make_pdf("3")))
    second = list(msg.iter_attachments())[1]
    encoded = base64.b64encode(make_pdf("2")).decode()
    second.set_payload(encoded[:-3] + "!" + "\n")  # bad padding and a stray character
    result = parse_mail(msg.as_bytes())
    assert {"1.pdf", "3.pdf"} <= set(names(result))
    assert any("Base64" in d for d in result.defects)


def test_hostile_header_values_do_not_crash() -> None:
    """A From with deep comments goes through mail-parser's bounded scanner; a Content-Type with
    deep comments makes the stdlib parser recurse, which becomes a rejection, not a crash."""
    deep = "(" * 20_000 + ")" * 20_000
    msg = mail(("a.pdf", "application/pdf", make_pdf()))
    del msg["From"]
    raw = f"From: a@vendor.test {deep}\r\n".encode() + msg.as_bytes()
    assert names(parse_mail(raw)) == ["a.pdf"]
    attachment_header = b"Content-Type: application/pdf"
    bomb = msg.as_bytes().replace(attachment_header, attachment_header + b"; x=" +
                                  deep.encode())
    with pytest.raises(MailRejected):
        parse_mail(bomb)


def test_out_of_range_dates_are_defects() -> None:
    msg = mail(("a.pdf", "application/pdf", make_pdf()))
    del msg["Date"]
    raw = (b"Received: from x by y; Fri, 31 Dec 99999 23:59:59 +0000\r\nDate: 0\r\n"
           + msg.as_bytes())
    result = parse_mail(raw)
    assert result.date == "0" and names(result) == ["a.pdf"]
    assert any("date" in d.lower() for d in result.defects)


def test_scanner_mail_whose_whole_body_is_the_pdf() -> None:
    msg = EmailMessage()
    msg["From"] = "scanner@office.test"
    msg.set_content(make_pdf(), maintype="application", subtype="pdf", filename="scan.pdf")
    assert names(parse_mail(msg.as_bytes())) == ["scan.pdf"]


def test_unnamed_xml_part_is_sniffed_and_labelled() -> None:
    msg = mail()
    msg.add_attachment(CII, maintype="text", subtype="xml", disposition="inline")
    (invoice,) = parse_mail(msg.as_bytes()).invoices
    assert invoice.main.kind == "cii" and invoice.main.filename == "part 2 (text/xml)"


def test_photo_marked_inline_is_skipped_as_documented() -> None:
    """Known limit: phone apps mark photos inline; the skip is visible, not silent."""
    msg = mail()
    msg.add_attachment(make_png(seed=8), maintype="image", subtype="png", filename="IMG_0001.png",
                       disposition="inline")
    assert reasons(parse_mail(msg.as_bytes())) == {"IMG_0001.png": "inline-image"}


def test_forwarded_whole_mail_with_broken_multipart_does_not_crash() -> None:
    """mail-parser 4.8.0 raises TypeError on this shape (top-level message/rfc822, inner
    multipart without its start boundary); we only hand it the header section."""
    raw = (b"From: a@vendor.test\r\nContent-Type: message/rfc822\r\n\r\n"
           b"From: x@vendor.test\r\nContent-Type: multipart/mixed; boundary=zz\r\n\r\n"
           b"no boundary here\r\n")
    result = parse_mail(raw)
    assert result.invoices == ()
    assert any("StartBoundaryNotFoundDefect" in d for d in result.defects)
